//! Rewriting the clients of some inbounds inside a parsed config document, leaving every other
//! value, and the order of every object's keys, as it was.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::Inbound;
use super::clients::{self, classify_all, email_of};
use super::model::{ShapeError, clients_key, config_from_value, raw_clients};
use crate::domain::{Credential, Flavour, Protocol, User, canonical_uuid, check_login};

/// Why the clients could not be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MergeError {
    Shape(ShapeError),
    Clients { tag: String, problem: String },
}

/// Replaces the clients of each inbound named in `wanted` (tag -> users), see
/// [`super::persist_clients`]. Checks everything before changing anything, so an error leaves
/// `root` as it was.
pub(super) fn merge(
    root: &mut Value,
    wanted: &BTreeMap<String, Vec<User>>,
    flavour: Flavour,
) -> Result<(), MergeError> {
    let config = config_from_value(root).map_err(MergeError::Shape)?;
    let mut rebuilt = Vec::new();
    for (tag, users) in wanted {
        let fail = |problem| MergeError::Clients {
            tag: tag.clone(),
            problem,
        };
        let inbound = config.inbounds.iter().find(|ib| &ib.tag == tag);
        let inbound = inbound.ok_or_else(|| fail("no inbound has this tag".into()))?;
        if let Some(list) = new_list(root, inbound, users, flavour).map_err(fail)? {
            rebuilt.push((tag, list));
        }
    }
    for (tag, list) in rebuilt {
        let obj = inbound_object_mut(root, tag);
        let settings = obj.entry("settings").or_insert(Value::Null);
        if settings.is_null() {
            *settings = Value::Object(Map::new());
        }
        let settings = settings
            .as_object_mut()
            .expect("checked by config_from_value");
        settings.insert(clients_key(settings).into(), Value::Array(list));
    }
    Ok(())
}

/// The new `settings.clients` of one inbound, or `None` when it is left as it is.
fn new_list(
    root: &Value,
    inbound: &Inbound,
    users: &[User],
    flavour: Flavour,
) -> Result<Option<Vec<Value>>, String> {
    let (tag, protocol) = (inbound.tag.as_str(), &inbound.protocol);
    if let Some(why) = protocol.user_management_refusal(flavour) {
        if users.is_empty() {
            return Ok(None); // nothing to write, and nothing there to remove
        }
        return Err(format!(
            "a {protocol} inbound on {flavour} cannot take users: {why}"
        ));
    }
    check_users(protocol, flavour, users)?;
    let obj = inbound_object(root, tag);
    let old = raw_clients(obj).expect("checked by config_from_value");
    if old.is_empty() && users.is_empty() {
        return Ok(None); // keeps an absent `settings` or `clients` absent
    }
    let method = match protocol {
        Protocol::Shadowsocks if !users.is_empty() => {
            let empty = Map::new();
            let settings = obj.get("settings").and_then(Value::as_object);
            clients::shadowsocks_method(settings.unwrap_or(&empty), old)?
        }
        _ => None,
    };
    let flow = inbound.default_flow.as_str();
    rebuild(protocol, flow, old, users, method.as_deref()).map(Some)
}

/// The inbound object with this tag; the caller has seen it in `config_from_value`.
fn inbound_object<'a>(root: &'a Value, tag: &str) -> &'a Map<String, Value> {
    root["inbounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .find(|ib| ib.get("tag").and_then(Value::as_str) == Some(tag))
        .expect("the inbound was found by config_from_value")
}

fn inbound_object_mut<'a>(root: &'a mut Value, tag: &str) -> &'a mut Map<String, Value> {
    root["inbounds"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
        .find(|ib| ib.get("tag").and_then(Value::as_str) == Some(tag))
        .expect("the inbound was found by config_from_value")
}

/// Refuses users the inbound could not run: writing them would stop the core from starting.
fn check_users(protocol: &Protocol, flavour: Flavour, users: &[User]) -> Result<(), String> {
    let mut emails = HashSet::new();
    for user in users {
        if user.email.is_empty() {
            return Err("a user has an empty email".into());
        }
        if !emails.insert(user.email.to_lowercase()) {
            return Err(format!("user {:?} is given twice", user.email));
        }
        // A client the reader cannot read back would lock the user out of every later sync.
        match &user.credential {
            Credential::Password(pw) if pw.is_empty() => {
                return Err(format!("user {:?} has an empty password", user.email));
            }
            Credential::Id(id) if canonical_uuid(id).as_ref() != Some(id) => {
                return Err(format!(
                    "user {:?} has id {id:?}, not a canonical UUID",
                    user.email
                ));
            }
            _ => {}
        }
        // A flow or level the loader refuses stops the core at its next start (semantics §4, §5).
        check_login(protocol, flavour, user).map_err(|e| format!("user {:?}: {e}", user.email))?;
        if !protocol.accepts(&user.credential) {
            let has = match user.credential {
                Credential::Id(_) => "an id",
                Credential::Password(_) => "a password",
            };
            return Err(format!(
                "user {:?} has {has}, which a {protocol} inbound does not take",
                user.email
            ));
        }
    }
    Ok(())
}

/// The new client list: the old clients in their order (readable ones updated when wanted and
/// dropped when not, unreadable ones kept as they are), then the users that had no client.
fn rebuild(
    protocol: &Protocol,
    default_flow: &str,
    old: &[Value],
    users: &[User],
    ss_method: Option<&str>,
) -> Result<Vec<Value>, String> {
    let classes = classify_all(protocol, default_flow, old);
    let mut kept_emails = HashMap::new();
    for (client, class) in old.iter().zip(&classes) {
        if let (Err(why), Some(email)) = (class, email_of(client)) {
            kept_emails.insert(email.to_lowercase(), why.clone());
        }
    }
    if let Some((user, why)) = users
        .iter()
        .find_map(|u| Some((u, kept_emails.get(&u.email.to_lowercase())?)))
    {
        return Err(format!(
            "user {:?} is wanted, but the file holds a client with that email which the warden \
             cannot read ({why}); fix or remove that client by hand",
            user.email
        ));
    }
    let by_email: HashMap<String, &User> =
        users.iter().map(|u| (u.email.to_lowercase(), u)).collect();
    let mut placed = HashSet::new();
    let mut list = Vec::with_capacity(users.len() + old.len());
    for (client, class) in old.iter().zip(classes) {
        let Ok(found) = class else {
            list.push(client.clone());
            continue;
        };
        let key = found.email.to_lowercase();
        if let Some(user) = by_email.get(&key) {
            let mut obj = client
                .as_object()
                .expect("a readable client is an object")
                .clone();
            clients::update(&mut obj, protocol, default_flow, user);
            list.push(Value::Object(obj));
            placed.insert(key);
        }
    }
    let new = users
        .iter()
        .filter(|u| !placed.contains(&u.email.to_lowercase()));
    list.extend(new.map(|u| clients::new_client(protocol, default_flow, u, ss_method)));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(email: &str, credential: Credential) -> User {
        User {
            email: email.into(),
            credential,
            flow: String::new(),
            level: 0,
        }
    }

    /// The reproducer of fuzz/regressions/tunnel_merge/ (docs/fuzzing.md): an empty password
    /// was written, read back as an unreadable client, and from then on every merge wanting
    /// that user was refused ("fix or remove that client by hand").
    #[test]
    fn users_whose_client_would_not_read_back_are_refused() {
        let doc = json!({"inbounds": [
            {"tag": "ss", "protocol": "shadowsocks", "settings": {"method": "aes-128-gcm"}},
            {"tag": "vl", "protocol": "vless"}]});
        for (tag, bad) in [
            ("ss", user("a@x", Credential::Password(String::new()))),
            (
                "vl",
                user(
                    "b@x",
                    Credential::Id("5F2B0C3E-8A1D-4C6B-9E7F-0A1B2C3D4E5F".into()),
                ),
            ),
            ("vl", user("c@x", Credential::Id("not-a-uuid".into()))),
        ] {
            let mut root = doc.clone();
            let wanted = BTreeMap::from([(tag.to_owned(), vec![bad.clone()])]);
            let err = merge(&mut root, &wanted, Flavour::Xray).unwrap_err();
            assert!(
                matches!(&err, MergeError::Clients { problem, .. }
                if problem.contains(&format!("{:?}", bad.email))),
                "{err:?}"
            );
            assert_eq!(root, doc, "a refused merge changes nothing");
        }
        let mut root = doc.clone();
        let good = user("a@x", Credential::Password("pw".into()));
        let wanted = BTreeMap::from([("ss".to_owned(), vec![good.clone()])]);
        merge(&mut root, &wanted, Flavour::Xray).unwrap();
        let read = config_from_value(&root).unwrap();
        assert_eq!(read.inbounds[0].clients, vec![good]);
    }
}
