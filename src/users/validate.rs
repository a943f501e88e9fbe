//! Validation of the entries of a desired-users document, one by one and then against each
//! other (emails and credentials must be unique).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{DesiredUser, Document, Rejection, kind};
use crate::domain::{
    Credential, TunnelId, User, canonical_uuid, check_email, check_flow, check_level,
};

/// Validates every entry. The first acceptable entry for an email or a credential wins; later
/// entries repeating it are rejected.
pub(super) fn document(entries: &[Value]) -> Document {
    let mut doc = Document::default();
    let mut emails: HashMap<String, usize> = HashMap::new();
    let mut credentials: HashMap<String, (usize, String)> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let checked = entry_user(entry).and_then(|desired| {
            let user = &desired.user;
            if let Some(first) = emails.get(&user.email.to_lowercase()) {
                return Err(format!(
                    "duplicate email: entry {first} already has {:?} (emails are \
                     case-insensitive to the cores); only the first entry is used",
                    user.email
                ));
            }
            if let Some((first, email)) = credentials.get(&credential_key(&user.credential)) {
                return Err(shared_credential(&user.credential, *first, email));
            }
            Ok(desired)
        });
        match checked {
            Ok(desired) => {
                emails.insert(desired.user.email.to_lowercase(), index);
                let key = credential_key(&desired.user.credential);
                credentials.insert(key, (index, desired.user.email.clone()));
                doc.users.push(desired);
            }
            Err(reason) => {
                let email = entry
                    .get("email")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                doc.rejected.push(Rejection {
                    index,
                    email,
                    reason,
                });
            }
        }
    }
    doc
}

/// What makes two credentials the same to a core. VLESS/VMess/Trojan look users up by
/// credential, so two emails sharing one lock each other out when either is removed (facts P3).
/// Since Xray 25.8.29 VLESS also ignores UUID bytes 6-7 (the third group), so the key blanks it.
fn credential_key(credential: &Credential) -> String {
    match credential {
        Credential::Id(id) => format!("id:{}{}", &id[..14], &id[18..]),
        Credential::Password(pw) => format!("password:{pw}"),
    }
}

fn shared_credential(credential: &Credential, first: usize, email: &str) -> String {
    match credential {
        Credential::Password(_) => format!("password already used by entry {first} ({email:?})"),
        Credential::Id(_) => format!(
            "id already used by entry {first} ({email:?}) (Xray's VLESS ignores the third \
             group of a UUID, so ids differing only there are the same)"
        ),
    }
}

fn entry_user(entry: &Value) -> Result<DesiredUser, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("the entry is {}, not an object", kind(entry)))?;
    let email = email(obj)?;
    let credential = credential(obj)?;
    let flow = match field(obj, "flow") {
        None => String::new(),
        Some(Value::String(flow)) => flow.clone(),
        Some(other) => return Err(format!("flow is {}, not a string", kind(other))),
    };
    check_flow(&flow).map_err(|e| e.to_string())?;
    let level = match field(obj, "level") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("level {v} is not a whole number from 0 to {}", u32::MAX))?,
    };
    check_level(&credential, level).map_err(|e| e.to_string())?;
    let tunnels = match strings(obj, "tunnels")? {
        None => None,
        Some(ids) => Some(
            ids.iter()
                .enumerate()
                .map(tunnel_id)
                .collect::<Result<_, _>>()?,
        ),
    };
    let inbounds = strings(obj, "inbounds")?;
    if let Some(n) = inbounds.iter().flatten().position(String::is_empty) {
        return Err(format!("inbounds[{n}] is an empty tag"));
    }
    let user = User {
        email,
        credential,
        flow,
        level,
    };
    Ok(DesiredUser {
        user,
        tunnels,
        inbounds,
    })
}

/// A field; `null` counts as absent.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn email(obj: &Map<String, Value>) -> Result<String, String> {
    match field(obj, "email") {
        None => Err("no email".into()),
        Some(Value::String(email)) => match check_email(email) {
            Ok(()) => Ok(email.clone()),
            Err(err) => Err(err.to_string()),
        },
        Some(other) => Err(format!("email is {}, not a string", kind(other))),
    }
}

fn credential(obj: &Map<String, Value>) -> Result<Credential, String> {
    match (field(obj, "id"), field(obj, "password")) {
        (Some(_), Some(_)) => Err("has both id and password; give exactly one".into()),
        (None, None) => Err("has neither id nor password".into()),
        (Some(Value::String(id)), None) => canonical_uuid(id)
            .map(Credential::Id)
            .ok_or_else(|| format!("id {id:?} is not a UUID")),
        (Some(other), None) => Err(format!("id is {}, not a string", kind(other))),
        (None, Some(Value::String(pw))) if pw.is_empty() => Err("empty password".into()),
        (None, Some(Value::String(pw))) => Ok(Credential::Password(pw.clone())),
        (None, Some(other)) => Err(format!("password is {}, not a string", kind(other))),
    }
}

/// An optional list of strings.
fn strings(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    let list = match field(obj, key) {
        None => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("{key} is {}, not a list of strings", kind(other))),
    };
    let item = |(n, v): (usize, &Value)| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{key}[{n}] is {}, not a string", kind(other))),
    };
    list.iter()
        .enumerate()
        .map(item)
        .collect::<Result<_, _>>()
        .map(Some)
}

fn tunnel_id((n, id): (usize, &String)) -> Result<TunnelId, String> {
    TunnelId::new(id).map_err(|e| format!("tunnels[{n}] {id:?}: {e}"))
}
