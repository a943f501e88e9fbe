//! One inbound's `settings.clients` (or `settings.users`): reading each client into a [`User`]
//! and writing users back as client objects, in the JSON field names the cores' configs use.
//!
//! A VLESS client without a flow has its inbound's `settings.flow` (`default_flow` here, `""`
//! when there is none), as Xray loads it and lists it (semantics §3): read that way, and written
//! without a flow when it has the default, so that the file keeps inheriting it.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::domain::{Credential, Protocol, User, canonical_uuid};

/// Each client of an inbound read as a user, or why it cannot be (the sync never touches those).
/// An email that appears more than once makes every one of its clients unreadable: the core
/// refuses such a file, and keeping one of them would be a guess.
pub(super) fn classify_all(
    protocol: &Protocol,
    default_flow: &str,
    clients: &[Value],
) -> Vec<Result<User, String>> {
    let mut classes: Vec<Result<User, String>> = clients
        .iter()
        .map(|c| classify(protocol, default_flow, c))
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for user in classes.iter().flatten() {
        *counts.entry(user.email.to_lowercase()).or_default() += 1;
    }
    for class in &mut classes {
        if let Ok(user) = class {
            let n = counts[&user.email.to_lowercase()];
            if n > 1 {
                *class = Err(format!(
                    "email {:?} appears {n} times in this inbound (emails are case-insensitive)",
                    user.email
                ));
            }
        }
    }
    classes
}

/// The email of a client object, if it has a non-empty string one.
pub(super) fn email_of(client: &Value) -> Option<&str> {
    client.get("email")?.as_str().filter(|e| !e.is_empty())
}

fn classify(protocol: &Protocol, default_flow: &str, client: &Value) -> Result<User, String> {
    let obj = client.as_object().ok_or("not an object")?;
    let email = match obj.get("email") {
        None | Some(Value::Null) => return Err("no email".into()),
        Some(Value::String(e)) if e.is_empty() => return Err("empty email".into()),
        Some(Value::String(e)) => e.clone(),
        Some(_) => return Err("email is not a string".into()),
    };
    let credential = match protocol {
        Protocol::Vless | Protocol::Vmess => {
            let id = string_field(obj, "id")?.ok_or("no id")?;
            Credential::Id(canonical_uuid(id).ok_or_else(|| format!("id {id:?} is not a UUID"))?)
        }
        _ => match string_field(obj, "password")? {
            None | Some("") => return Err("no password".into()),
            Some(pw) => Credential::Password(pw.to_owned()),
        },
    };
    let flow = match protocol {
        // Xray: a missing or empty flow takes the inbound's (infra/conf/vless.go).
        Protocol::Vless => match string_field(obj, "flow")?.unwrap_or_default() {
            "" => default_flow.to_owned(),
            flow => flow.to_owned(),
        },
        _ => String::new(),
    };
    let level = match obj.get("level") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("level {v} is not a whole number from 0 to {}", u32::MAX))?,
    };
    Ok(User {
        email,
        credential,
        flow,
        level,
    })
}

fn string_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key} is not a string")),
    }
}

/// A key's value, `null` counting as absent (as it does when reading).
fn present<'a>(client: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    client.get(key).filter(|v| !v.is_null())
}

/// Brings an existing client object in line with `user`, touching only the fields that differ
/// so that an unchanged user leaves the object (and the file) as it was. Unknown keys stay.
pub(super) fn update(
    client: &mut Map<String, Value>,
    protocol: &Protocol,
    default_flow: &str,
    user: &User,
) {
    if client.get("email").and_then(Value::as_str) != Some(user.email.as_str()) {
        client.insert("email".into(), user.email.clone().into());
    }
    match &user.credential {
        Credential::Id(id) => {
            let current = client
                .get("id")
                .and_then(Value::as_str)
                .and_then(canonical_uuid);
            if current.as_ref() != Some(id) {
                client.insert("id".into(), id.clone().into());
            }
        }
        Credential::Password(pw) => {
            if client.get("password").and_then(Value::as_str) != Some(pw.as_str()) {
                client.insert("password".into(), pw.clone().into());
            }
        }
    }
    if *protocol == Protocol::Vless {
        let named = present(client, "flow").map(|f| f.as_str().unwrap_or_default());
        let current = named.filter(|f| !f.is_empty()).unwrap_or(default_flow);
        if current != user.flow {
            client.insert("flow".into(), user.flow.clone().into());
        }
    }
    let current = present(client, "level").map(Value::as_u64);
    if current.is_some_and(|l| l != Some(user.level.into()))
        || (current.is_none() && user.level != 0)
    {
        client.insert("level".into(), user.level.into());
    }
}

/// A new client object for `user`: `email`, the credential, then `method` (Shadowsocks AEAD:
/// every client names its cipher), `flow` (VLESS) and `level` when they are not the defaults.
pub(super) fn new_client(
    protocol: &Protocol,
    default_flow: &str,
    user: &User,
    ss_method: Option<&str>,
) -> Value {
    let mut client = Map::new();
    client.insert("email".into(), user.email.clone().into());
    match &user.credential {
        Credential::Id(id) => client.insert("id".into(), id.clone().into()),
        Credential::Password(pw) => client.insert("password".into(), pw.clone().into()),
    };
    if let (Protocol::Shadowsocks, Some(method)) = (protocol, ss_method) {
        client.insert("method".into(), method.into());
    }
    if *protocol == Protocol::Vless && user.flow != default_flow {
        client.insert("flow".into(), user.flow.clone().into());
    }
    if user.level != 0 {
        client.insert("level".into(), user.level.into());
    }
    Value::Object(client)
}

/// The cipher a new client of a Shadowsocks inbound must name, `Ok(None)` when it must name
/// none. Xray's AEAD multi-user inbound wants a `method` on every client; its Shadowsocks-2022
/// multi-user inbound takes the method from `settings.method` and refuses one on a client
/// (Xray:infra/conf/shadowsocks.go).
pub(super) fn shadowsocks_method(
    settings: &Map<String, Value>,
    clients: &[Value],
) -> Result<Option<String>, String> {
    let inbound = settings.get("method").and_then(Value::as_str);
    if inbound.is_some_and(|m| m.starts_with("2022-")) {
        return Ok(None);
    }
    let from_client = clients.iter().find_map(|c| c.get("method")?.as_str());
    from_client
        .or(inbound)
        .map(|m| Some(m.to_owned()))
        .ok_or_else(|| {
            "cannot tell which cipher a new client should use: no client and no settings.method \
         names one"
                .to_owned()
        })
}
