//! Reading a parsed config document into a [`TunnelConfig`]: the inbounds with their clients and
//! the address of the gRPC API.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{Map, Value};

use super::{Inbound, TunnelConfig, clients};
use crate::domain::Protocol;

/// Where in the document something is wrong, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShapeError {
    pub at: String,
    pub problem: String,
}

fn shape(at: impl Into<String>, problem: impl Into<String>) -> ShapeError {
    ShapeError {
        at: at.into(),
        problem: problem.into(),
    }
}

/// A short name of a JSON value's type, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn config_from_value(root: &Value) -> Result<TunnelConfig, ShapeError> {
    let root = root
        .as_object()
        .ok_or_else(|| shape("the document", format!("is {}, not an object", kind(root))))?;
    let raw = raw_inbounds(root)?;
    let mut tags = HashSet::new();
    let mut inbounds = Vec::new();
    for (i, inbound) in raw.iter().enumerate() {
        if let Some(inbound) = read_inbound(i, inbound)? {
            if !tags.insert(inbound.tag.clone()) {
                let problem = format!("tag {:?} is used by an earlier inbound too", inbound.tag);
                return Err(shape(format!("inbounds[{i}]"), problem));
            }
            inbounds.push(inbound);
        }
    }
    let api = api_address(root, raw)?;
    Ok(TunnelConfig { api, inbounds })
}

/// `inbounds`, which may be absent (a config without inbounds has nothing to sync).
pub(super) fn raw_inbounds(root: &Map<String, Value>) -> Result<&[Value], ShapeError> {
    match root.get("inbounds") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(list)) => Ok(list),
        Some(other) => Err(shape(
            "inbounds",
            format!("is {}, not an array", kind(other)),
        )),
    }
}

/// One inbound, or `None` for an untagged one: the API addresses inbounds by tag, so an
/// untagged inbound can be neither synced nor persisted.
fn read_inbound(i: usize, v: &Value) -> Result<Option<Inbound>, ShapeError> {
    let at = |field: &str| format!("inbounds[{i}]{field}");
    let obj = v
        .as_object()
        .ok_or_else(|| shape(at(""), format!("is {}, not an object", kind(v))))?;
    let tag = match obj.get("tag") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(t)) if t.is_empty() => return Ok(None),
        Some(Value::String(t)) => t.clone(),
        Some(other) => {
            return Err(shape(
                at(".tag"),
                format!("is {}, not a string", kind(other)),
            ));
        }
    };
    let protocol = match obj.get("protocol") {
        Some(Value::String(p)) => Protocol::parse(p),
        _ => return Err(shape(at(".protocol"), "missing or not a string")),
    };
    let mut inbound = Inbound {
        tag,
        port: obj.get("port").and_then(port),
        clients: Vec::new(),
        default_flow: String::new(),
        invalid_clients: Vec::new(),
        protocol,
    };
    if matches!(inbound.protocol, Protocol::Other(_)) {
        return Ok(Some(inbound));
    }
    let list = raw_clients(obj).map_err(|problem| shape(at(".settings"), problem))?;
    if inbound.protocol == Protocol::Vless {
        inbound.default_flow = default_flow(obj);
    }
    let classes = clients::classify_all(&inbound.protocol, &inbound.default_flow, list);
    for (n, class) in classes.into_iter().enumerate() {
        match class {
            Ok(user) => inbound.clients.push(user),
            Err(why) => {
                let who = clients::email_of(&list[n]).map(|e| format!(" ({e:?})"));
                let why = format!("clients[{n}]{}: {why}", who.unwrap_or_default());
                inbound.invalid_clients.push(why);
            }
        }
    }
    Ok(Some(inbound))
}

/// `settings.clients` of an inbound object, or its alias `settings.users` when `clients` is
/// absent (Xray reads either, `clients` winning, semantics §6); absent settings or clients mean
/// no clients.
pub(super) fn raw_clients(inbound: &Map<String, Value>) -> Result<&[Value], String> {
    let Some(settings) = settings(inbound)? else {
        return Ok(&[]);
    };
    let key = clients_key(settings);
    match settings.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(list)) => Ok(list),
        Some(other) => Err(format!(".{key} is {}, not an array", kind(other))),
    }
}

fn settings(inbound: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, String> {
    match inbound.get("settings") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(s)) => Ok(Some(s)),
        Some(other) => Err(format!("is {}, not an object", kind(other))),
    }
}

/// The key an inbound's clients are read from and written back to: `clients`, unless only
/// `users` is there. A write must go to the array that was read: a new `clients` beside a
/// `users` array would silently shadow it.
pub(super) fn clients_key(settings: &Map<String, Value>) -> &'static str {
    let present = |key| settings.get(key).is_some_and(|v| !v.is_null());
    if !present("clients") && present("users") {
        "users"
    } else {
        "clients"
    }
}

/// VLESS `settings.flow` when it is one Xray loads (`xtls-rprx-vision`), else `""`: V2Ray
/// ignores the key, and Xray does not start from a config with another value, so no running
/// core has one.
fn default_flow(inbound: &Map<String, Value>) -> String {
    let flow = inbound
        .get("settings")
        .and_then(|s| s.get("flow"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match crate::domain::check_flow(flow) {
        Ok(()) => flow.to_owned(),
        Err(_) => String::new(),
    }
}

/// A single port; a range (`"1000-2000"`) or an environment reference is `None`.
fn port(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The address to dial for the gRPC API, facts §9: `api.listen` (Xray ≥ 1.8.12), else the
/// classic form, a routing rule sending a `dokodemo-door` (alias `tunnel`) inbound to the
/// `api.tag` outbound. Unix sockets and port ranges are `None`: there is no TCP address.
fn api_address(
    root: &Map<String, Value>,
    inbounds: &[Value],
) -> Result<Option<SocketAddr>, ShapeError> {
    let api = match root.get("api") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(api)) => api,
        Some(other) => return Err(shape("api", format!("is {}, not an object", kind(other)))),
    };
    match api.get("listen") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => return api_listen(s).map_err(|p| shape("api.listen", p)),
        Some(other) => {
            return Err(shape(
                "api.listen",
                format!("is {}, not a string", kind(other)),
            ));
        }
    }
    let Some(tag) = api.get("tag").and_then(Value::as_str) else {
        return Ok(None);
    };
    for inbound_tag in api_inbound_tags(root, tag) {
        let found = inbounds.iter().enumerate().find(|(_, ib)| {
            ib.get("tag").and_then(Value::as_str) == Some(inbound_tag)
                && ib
                    .get("protocol")
                    .and_then(Value::as_str)
                    .map(Protocol::parse)
                    .is_some_and(|p| matches!(p.as_str(), "dokodemo-door" | "tunnel"))
        });
        if let Some((i, inbound)) = found {
            return dokodemo_address(inbound)
                .map_err(|p| shape(format!("inbounds[{i}].listen"), p));
        }
    }
    Ok(None)
}

/// `host:port` of `api.listen`; `/path` and `@name` are Unix sockets (Xray ≥ 26.5.3).
fn api_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.starts_with('/') || text.starts_with('@') {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not host:port");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(SocketAddr::new(dialable(addr.ip()), addr.port())));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    match host {
        "" | "localhost" => Ok(Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))),
        // Xray resolves a host name here (semantics §9); the warden dials addresses only, so
        // that what it dials cannot change under it with DNS.
        _ if !host.contains(':') && !host.is_empty() => Err(format!(
            "{text:?} names the host {host:?}; the warden does not resolve host names \
             (write an IP address, or localhost)"
        )),
        _ => Err(bad()),
    }
}

/// The inbound tags of every routing rule whose `outboundTag` is the API's tag, in rule order.
/// Rules live in `routing.rules`, or `routing.settings.rules` in V2Ray's older layout;
/// `inboundTag` may be a list or a single string.
fn api_inbound_tags<'a>(root: &'a Map<String, Value>, api_tag: &str) -> Vec<&'a str> {
    let routing = root.get("routing");
    let rules = routing
        .and_then(|r| r.get("rules"))
        .or_else(|| routing?.get("settings")?.get("rules"))
        .and_then(Value::as_array);
    let to_api = rules
        .into_iter()
        .flatten()
        .filter(|rule| rule.get("outboundTag").and_then(Value::as_str) == Some(api_tag));
    to_api
        .flat_map(|rule| match rule.get("inboundTag") {
            Some(Value::String(tag)) => vec![tag.as_str()],
            Some(Value::Array(tags)) => tags.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Where to dial a dokodemo-door API inbound: its `listen` (absent means every interface) and
/// its `port`; a Unix-socket listen or a port range has no single TCP address.
fn dokodemo_address(inbound: &Value) -> Result<Option<SocketAddr>, String> {
    let Some(port) = inbound.get("port").and_then(port) else {
        return Ok(None);
    };
    let ip = match inbound.get("listen") {
        None | Some(Value::Null) => Ipv4Addr::UNSPECIFIED.into(),
        Some(Value::String(s)) if s.is_empty() => Ipv4Addr::UNSPECIFIED.into(),
        Some(Value::String(s)) if s.starts_with('/') || s.starts_with('@') => return Ok(None),
        Some(Value::String(s)) if s == "localhost" => Ipv4Addr::LOCALHOST.into(),
        Some(Value::String(s)) => s
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?} is not an IP address"))?,
        Some(other) => return Err(format!("is {}, not a string", kind(other))),
    };
    Ok(Some(SocketAddr::new(dialable(ip), port)))
}

/// A wildcard listen (`0.0.0.0`, `::`) is dialled on IPv4 loopback.
fn dialable(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        ip
    }
}
