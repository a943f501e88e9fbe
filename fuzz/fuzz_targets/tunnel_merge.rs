//! The client merge behind `persist_clients`: the sync's users written into the operator's
//! config, which holds clients the warden cannot read and keys it does not know. Structured
//! input (`arbitrary`) builds configs that mostly parse, so the merge itself gets exercised.
//!
//! Beyond "no panic": a refused merge changes nothing; an accepted one reads back with exactly
//! the wanted users, keeps the unreadable clients and every other inbound and key as they were,
//! and is a fixed point (merging again changes nothing, so the file is not rewritten each pass).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use xray_warden::domain::{Credential, Flavour, Protocol, User};
use xray_warden::tunnelcfg::{self, fuzzing::merge_clients};

#[derive(Debug, Arbitrary)]
struct Input {
    inbounds: Vec<InboundSpec>,
    wanted: Vec<(Name, Vec<UserSpec>)>,
    v2ray: bool,
    /// Anything else at the top level, which must come through untouched.
    extra: Option<Json>,
}

#[derive(Debug, Arbitrary)]
struct InboundSpec {
    tag: Option<Name>,
    protocol: Name,
    /// `None`: no `settings`; `Some(None)`: settings without `clients`.
    settings: Option<Option<Vec<ClientSpec>>>,
    method: Option<Name>,
    extra: Option<Json>,
}

/// Names from a small set, so that tags, protocols and emails collide; or anything.
#[derive(Debug, Arbitrary)]
enum Name {
    Small(u8),
    Any(String),
}

impl Name {
    fn text(&self) -> String {
        const SMALL: [&str; 16] = [
            "a",
            "b",
            "vless",
            "vmess",
            "trojan",
            "shadowsocks",
            "dokodemo-door",
            "A",
            "a@x",
            "A@X",
            "b@x",
            "",
            "xtls-rprx-vision",
            "aes-128-gcm",
            "2022-blake3-aes-128-gcm",
            "none",
        ];
        match self {
            Self::Small(n) => SMALL[usize::from(*n) % SMALL.len()].to_owned(),
            Self::Any(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum ClientSpec {
    Client(Box<ClientFields>),
    Raw(Json),
}

/// Shaped like a client, each field possibly missing or of the wrong type.
#[derive(Debug, Arbitrary)]
struct ClientFields {
    email: Field,
    id: Field,
    password: Field,
    flow: Field,
    level: Field,
    method: Field,
    extra: Option<Json>,
}

#[derive(Debug, Arbitrary)]
enum Field {
    Absent,
    Name(Name),
    Uuid(u128, bool),
    Level(u64),
    Raw(Json),
}

impl Field {
    fn value(&self) -> Option<Value> {
        Some(match self {
            Self::Absent => return None,
            Self::Name(n) => n.text().into(),
            Self::Uuid(n, upper) => uuid(*n, *upper).into(),
            Self::Level(n) => (*n).into(),
            Self::Raw(j) => j.value(),
        })
    }
}

/// A small JSON value of any type.
#[derive(Debug)]
struct Json(Value);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        json_value(u, 3).map(Json)
    }
}

impl Json {
    fn value(&self) -> Value {
        self.0.clone()
    }
}

fn json_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.arbitrary::<Option<i64>>()? {
            Some(n) => n.into(),
            None => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        },
        3 => Name::arbitrary(u)?.text().into(),
        4 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array(
                (0..n)
                    .map(|_| json_value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=3)? {
                map.insert(Name::arbitrary(u)?.text(), json_value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

#[derive(Debug, Arbitrary)]
struct UserSpec {
    email: Name,
    password: Option<Name>,
    id: u128,
    flow: Name,
    level: u32,
}

impl UserSpec {
    fn user(&self) -> User {
        User {
            email: self.email.text(),
            credential: match &self.password {
                Some(pw) => Credential::Password(pw.text()),
                None => Credential::Id(uuid(self.id, false)),
            },
            flow: self.flow.text(),
            level: self.level,
        }
    }
}

fn uuid(n: u128, upper: bool) -> String {
    let h = format!("{n:032x}");
    let text = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    if upper { text.to_uppercase() } else { text }
}

impl InboundSpec {
    fn value(&self) -> Value {
        let mut obj = Map::new();
        if let Some(Json(Value::Object(extra))) = &self.extra {
            obj.extend(extra.clone());
        }
        if let Some(tag) = &self.tag {
            obj.insert("tag".into(), tag.text().into());
        }
        obj.insert("protocol".into(), self.protocol.text().into());
        if let Some(clients) = &self.settings {
            let mut settings = Map::new();
            if let Some(method) = &self.method {
                settings.insert("method".into(), method.text().into());
            }
            if let Some(clients) = clients {
                let list = clients.iter().map(ClientSpec::value).collect();
                settings.insert("clients".into(), Value::Array(list));
            }
            obj.insert("settings".into(), Value::Object(settings));
        }
        Value::Object(obj)
    }
}

impl ClientSpec {
    fn value(&self) -> Value {
        match self {
            Self::Raw(j) => j.value(),
            Self::Client(c) => {
                let ClientFields {
                    email,
                    id,
                    password,
                    flow,
                    level,
                    method,
                    extra,
                } = &**c;
                let mut obj = Map::new();
                if let Some(Json(Value::Object(extra))) = extra {
                    obj.extend(extra.clone());
                }
                let fields = [
                    ("email", email),
                    ("id", id),
                    ("password", password),
                    ("flow", flow),
                    ("level", level),
                    ("method", method),
                ];
                for (key, field) in fields {
                    if let Some(v) = field.value() {
                        obj.insert(key.into(), v);
                    }
                }
                Value::Object(obj)
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut root = json!({"log": {"loglevel": "warning"}});
    if let Some(extra) = &input.extra {
        root["x-extra"] = extra.value();
    }
    root["inbounds"] = Value::Array(input.inbounds.iter().map(InboundSpec::value).collect());
    let Ok(before) = tunnelcfg::parse(&root.to_string()) else {
        return; // the sync never merges into a config it cannot read
    };
    let wanted: BTreeMap<String, Vec<User>> = input
        .wanted
        .iter()
        .map(|(tag, users)| (tag.text(), users.iter().map(UserSpec::user).collect()))
        .collect();
    let flavour = if input.v2ray {
        Flavour::V2ray
    } else {
        Flavour::Xray
    };
    let original = root.clone();
    if merge_clients(&mut root, &wanted, flavour).is_err() {
        assert_eq!(root, original, "a refused merge changes nothing");
        return;
    }
    let text = serde_json::to_string_pretty(&root).unwrap();
    let after = tunnelcfg::parse(&text).expect("a merged config reads back");
    assert_eq!(after.api, before.api);
    assert_eq!(after.inbounds.len(), before.inbounds.len());
    for (old, new) in before.inbounds.iter().zip(&after.inbounds) {
        assert_eq!(
            (&old.tag, &old.protocol, old.port),
            (&new.tag, &new.protocol, new.port)
        );
        match wanted.get(&old.tag) {
            Some(users) if old.protocol.user_management_refusal(flavour).is_none() => {
                assert_eq!(new.clients, expected(&old.clients, users, &old.protocol));
                // Their position (`clients[n]`) may move; what they are and why may not.
                let why = |list: &[String]| -> Vec<String> {
                    list.iter()
                        .map(|s| s.split_once(']').map_or(s.clone(), |p| p.1.into()))
                        .collect()
                };
                assert_eq!(
                    why(&new.invalid_clients),
                    why(&old.invalid_clients),
                    "unreadable clients stay"
                );
            }
            _ => assert_eq!(new, old, "an inbound not asked about is untouched"),
        }
    }
    let (Value::Object(old), Value::Object(new)) = (&original, &root) else {
        unreachable!()
    };
    for (key, value) in old {
        if key != "inbounds" {
            assert_eq!(new.get(key), Some(value), "top-level {key:?} is untouched");
        }
    }
    let settled = root.clone();
    merge_clients(&mut root, &wanted, flavour).expect("the same merge succeeds again");
    assert_eq!(root, settled, "merging again changes nothing");
});

/// The clients an inbound reads after the merge: the wanted users whose email a readable
/// client held, in the clients' order, then the others in the order given. Flow exists on
/// VLESS only.
fn expected(old: &[User], users: &[User], protocol: &Protocol) -> Vec<User> {
    let key = |u: &User| u.email.to_lowercase();
    let norm = |u: &User| {
        let mut u = u.clone();
        if *protocol != Protocol::Vless {
            u.flow.clear();
        }
        u
    };
    let mut list: Vec<User> = old
        .iter()
        .filter_map(|o| users.iter().find(|u| key(u) == key(o)))
        .map(norm)
        .collect();
    let placed: Vec<String> = list.iter().map(key).collect();
    list.extend(users.iter().filter(|u| !placed.contains(&key(u))).map(norm));
    list
}
