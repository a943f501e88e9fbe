//! The policy a tunnel config must pass before the warden tests or installs it: no inbound or
//! outbound may send traffic to the host itself, a link-local address or a cloud metadata
//! service (see [`Target::closed`]) unless the operator allowed that target, and the core's
//! own API may only be reachable from this host.
//!
//! Whatever a tunnel forwards to is published to everyone who can reach the tunnel: a
//! dokodemo-door to 127.0.0.1:9550 publishes the warden's API, one to 169.254.169.254 the
//! cloud's credentials. Only *targets* are judged; where a tunnel *listens* is free, except for
//! the inbound that carries the core's API.
//!
//! The walk reads a config the way the cores' Go loaders do: object keys match without regard
//! to case (`"Address"` is `address`; every spelling is checked), protocol names are lower-cased,
//! and the legacy `inbound`/`inboundDetour`/`outbound`/`outboundDetour` keys count too.
//! Targets given as host names are not resolved (no I/O here); only the names in
//! [`policy_target`](super::policy_target) are known to be closed.

use std::fmt;

use serde_json::Value;

pub use super::policy_target::{AllowedTarget, Closed, Target};
use super::policy_target::{classify, split_host_port};

/// Targets the operator opened (`[tunnels.policy] allow_targets`). The default opens none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow: Vec<AllowedTarget>,
}

/// One thing in a config the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where in the config, e.g. `inbounds[1] "fwd" settings.address`.
    pub at: String,
    pub problem: Problem,
}

/// What is wrong at that place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Traffic goes to a closed target that no `allow_targets` entry opens.
    ClosedTarget { target: Target, why: Closed },
    /// The core's API would be reachable from outside this host (`listen` as written, or
    /// empty for every interface).
    PublicApi { listen: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::ClosedTarget { target, why } => write!(
                f,
                "{}: sends traffic to {target}, {why}, which needs an entry in \
                 [tunnels.policy] allow_targets",
                self.at
            ),
            Problem::PublicApi { listen } => {
                let listen = if listen.is_empty() {
                    "every interface"
                } else {
                    listen
                };
                write!(
                    f,
                    "{}: the core's API would listen on {listen}; it must listen on a \
                     loopback address or a Unix socket",
                    self.at
                )
            }
        }
    }
}

/// Checks `config` (the whole JSON document) against `policy`; every refusal found, in file
/// order, when there is any.
pub fn check(config: &Value, policy: &TargetPolicy) -> Result<(), Vec<Refusal>> {
    let mut walk = Walk {
        policy,
        refusals: Vec::new(),
    };
    let api = Api::of(config);
    for (at, inbound) in handlers(config, "inbound") {
        walk.inbound(&at, inbound, &api);
    }
    for (at, outbound) in handlers(config, "outbound") {
        walk.outbound(&at, outbound);
    }
    for listen in fields(config, "api").flat_map(|a| strings(a, "listen")) {
        if !listen.is_empty() && !is_local_listen(api_listen_host(listen)) {
            walk.refuse("api.listen".into(), public(listen));
        }
    }
    if walk.refusals.is_empty() {
        Ok(())
    } else {
        Err(walk.refusals)
    }
}

struct Walk<'p> {
    policy: &'p TargetPolicy,
    refusals: Vec<Refusal>,
}

impl Walk<'_> {
    fn refuse(&mut self, at: String, problem: Problem) {
        self.refusals.push(Refusal { at, problem });
    }

    fn target(&mut self, at: String, target: Target) {
        let Some(why) = target.closed() else { return };
        if self.policy.allow.iter().any(|a| a.allows(&target)) {
            return;
        }
        self.refuse(at, Problem::ClosedTarget { target, why });
    }

    fn inbound(&mut self, at: &str, inbound: &Value, api: &Api<'_>) {
        let tag = strings(inbound, "tag").next();
        let listen = strings(inbound, "listen").next().unwrap_or("");
        if api.reached_from(tag) && !is_local_listen(listen) {
            self.refuse(format!("{at} listen"), public(listen));
        }
        let protocol = protocol(inbound);
        for settings in fields(inbound, "settings") {
            match protocol.as_str() {
                "dokodemo-door" | "tunnel" if !api.carries_all_of(tag) => {
                    let own_port = fields(inbound, "port").find_map(port);
                    for (place, target) in forwards(settings, own_port) {
                        self.target(format!("{at} settings.{place}"), target);
                    }
                }
                "vless" | "trojan" => {
                    for dest in fields(settings, "fallbacks")
                        .flat_map(items)
                        .flat_map(|f| fields(f, "dest"))
                    {
                        if let Some(target) = dest_target(dest) {
                            self.target(format!("{at} settings.fallbacks dest"), target);
                        }
                    }
                }
                _ => {}
            }
        }
        let reality = fields(inbound, "streamsettings").flat_map(|s| fields(s, "realitysettings"));
        for reality in reality {
            for key in ["dest", "target"] {
                for dest in fields(reality, key) {
                    if let Some(target) = dest_target(dest) {
                        let place = format!("{at} streamSettings.realitySettings.{key}");
                        self.target(place, target);
                    }
                }
            }
        }
    }

    fn outbound(&mut self, at: &str, outbound: &Value) {
        let protocol = protocol(outbound);
        for settings in fields(outbound, "settings") {
            for redirect in strings(settings, "redirect") {
                if let Some(target) = redirect_target(redirect) {
                    self.target(format!("{at} settings.redirect"), target);
                }
            }
            for list in ["vnext", "servers"] {
                for server in fields(settings, list).flat_map(items) {
                    for target in address_port(server) {
                        self.target(format!("{at} settings.{list} address"), target);
                    }
                }
            }
            // WireGuard's `address` is the local interface address, not a target.
            if protocol != "wireguard" {
                for target in address_port(settings) {
                    self.target(format!("{at} settings.address"), target);
                }
            }
            for peer in fields(settings, "peers").flat_map(items) {
                for endpoint in strings(peer, "endpoint") {
                    if let Some(target) = redirect_target(endpoint) {
                        self.target(format!("{at} settings.peers endpoint"), target);
                    }
                }
            }
        }
    }
}

/// Where a dokodemo-door (Xray: `tunnel`) inbound forwards: `address` (Xray also reads
/// `rewriteAddress`; absent means "localhost", unless the inbound follows iptables redirects)
/// at `port` (absent or 0: the listening port), and each `portMap` value.
fn forwards(settings: &Value, own_port: Option<u16>) -> Vec<(&'static str, Target)> {
    let mut addresses: Vec<&str> = ["address", "rewriteaddress"]
        .iter()
        .flat_map(|key| strings(settings, key))
        .collect();
    let follows = fields(settings, "followredirect").any(|v| v.as_bool() == Some(true));
    if addresses.is_empty() && !follows {
        addresses.push("localhost");
    }
    let ports: Vec<u16> = ["port", "rewriteport"]
        .iter()
        .flat_map(|key| fields(settings, key))
        .filter_map(port)
        .filter(|p| *p != 0)
        .collect();
    let port = match ports.as_slice() {
        [] => own_port,
        [first, rest @ ..] if rest.iter().all(|p| p == first) => Some(*first),
        _ => None,
    };
    let mut out: Vec<(&'static str, Target)> = addresses
        .iter()
        .map(|a| ("address", Target::host(a, port)))
        .collect();
    for mapped in fields(settings, "portmap").flat_map(|m| m.as_object().into_iter().flatten()) {
        let Some(text) = mapped.1.as_str() else {
            continue;
        };
        let (host, mapped_port) = split_host_port(text).unwrap_or((text, ""));
        let mapped_port = mapped_port.parse().ok().filter(|p| *p != 0);
        let hosts = if host.is_empty() {
            addresses.clone()
        } else {
            vec![host]
        };
        let key_port = mapped.0.parse().ok();
        for host in hosts {
            out.push(("portMap", Target::host(host, mapped_port.or(key_port))));
        }
    }
    out
}

/// A fallback's or REALITY's `dest`: a port (on 127.0.0.1), `"addr:port"` (an empty addr is
/// 127.0.0.1) or a Unix socket.
fn dest_target(dest: &Value) -> Option<Target> {
    if let Some(n) = dest.as_u64() {
        return Some(Target::host("127.0.0.1", u16::try_from(n).ok()));
    }
    let text = dest.as_str()?.trim();
    if text.starts_with('/') || text.starts_with('@') {
        return Some(Target::Unix(text.to_owned()));
    }
    if let Ok(port) = text.parse::<u16>() {
        return Some(Target::host("127.0.0.1", Some(port)));
    }
    Some(match split_host_port(text) {
        Some(("", port)) => Target::host("127.0.0.1", port.parse().ok()),
        Some((host, port)) => Target::host(host, port.parse().ok()),
        None => Target::host(text, None),
    })
}

/// Freedom's `redirect` or a WireGuard `endpoint`: `"host:port"`; an empty host keeps the
/// client's address (no fixed target), port 0 keeps the client's port.
fn redirect_target(text: &str) -> Option<Target> {
    let (host, port) = split_host_port(text).unwrap_or((text, ""));
    if host.is_empty() {
        return None;
    }
    Some(Target::host(host, port.parse().ok().filter(|p| *p != 0)))
}

/// Every `address` of a server object, with its `port`.
fn address_port(server: &Value) -> Vec<Target> {
    let port = fields(server, "port").find_map(port).filter(|p| *p != 0);
    strings(server, "address")
        .map(|address| Target::host(address, port))
        .collect()
}

/// The core's API as the routing sees it: `api.tag`, when no outbound takes that tag too.
struct Api<'a> {
    tag: Option<&'a str>,
    rules: Vec<&'a Value>,
}

impl<'a> Api<'a> {
    fn of(config: &'a Value) -> Self {
        let tag = fields(config, "api").flat_map(|a| strings(a, "tag")).next();
        let shadowed = handlers(config, "outbound")
            .any(|(_, o)| tag.is_some() && strings(o, "tag").next() == tag);
        // V2Ray appends `routing.rules` to the older `routing.settings.rules`.
        let routing: Vec<&Value> = fields(config, "routing").collect();
        let older = routing
            .iter()
            .flat_map(|r| fields(r, "settings"))
            .flat_map(|s| fields(s, "rules"));
        let newer = routing.iter().flat_map(|r| fields(r, "rules"));
        let rules = older.chain(newer).flat_map(items).collect();
        Api {
            tag: tag.filter(|_| !shadowed),
            rules,
        }
    }

    /// Whether any rule may send traffic of the inbound `tag` to the API.
    fn reached_from(&self, tag: Option<&str>) -> bool {
        let Some(api) = self.tag else { return false };
        self.rules
            .iter()
            .any(|rule| applies(rule, tag) && outbound_tag(rule) == Some(api))
    }

    /// Whether every connection of the inbound `tag` goes to the API: the first rule that
    /// may apply to it sends it there without any other condition.
    fn carries_all_of(&self, tag: Option<&str>) -> bool {
        let Some(api) = self.tag else { return false };
        let Some(rule) = self.rules.iter().find(|rule| applies(rule, tag)) else {
            return false;
        };
        let unconditional = rule.as_object().is_some_and(|rule| {
            rule.keys().all(|key| {
                matches!(
                    fold(key).as_str(),
                    "type" | "inboundtag" | "outboundtag" | "ruletag"
                )
            })
        });
        unconditional && outbound_tag(rule) == Some(api)
    }
}

/// Whether `rule` may apply to traffic from the inbound `tag`: it names no inbound, or names it.
fn applies(rule: &Value, tag: Option<&str>) -> bool {
    let named: Vec<&str> = fields(rule, "inboundtag")
        .flat_map(|v| match v {
            Value::String(s) => vec![s.as_str()],
            other => items(other).filter_map(Value::as_str).collect(),
        })
        .collect();
    let has_key = fields(rule, "inboundtag").next().is_some();
    !has_key || tag.is_some_and(|tag| named.contains(&tag))
}

fn outbound_tag(rule: &Value) -> Option<&str> {
    strings(rule, "outboundtag").next()
}

/// The inbounds or outbounds (`kind` is "inbound" or "outbound"), each with a name for
/// messages: `inbounds[0] "api"`.
fn handlers<'a>(config: &'a Value, kind: &str) -> impl Iterator<Item = (String, &'a Value)> {
    let plural = format!("{kind}s");
    let detour = format!("{kind}detour");
    let lists: Vec<(String, &'a Value)> = [plural, detour]
        .into_iter()
        .flat_map(|key| {
            let values: Vec<&'a Value> = fields(config, &key).collect();
            values
                .into_iter()
                .flat_map(items)
                .enumerate()
                .map(move |(i, v)| (format!("{key}[{i}]"), v))
                .collect::<Vec<_>>()
        })
        .chain(fields(config, kind).map(|v| (kind.to_owned(), v)))
        .collect();
    lists.into_iter().map(|(at, v)| {
        let name = match strings(v, "tag").next() {
            Some(tag) => format!("{at} {tag:?}"),
            None => at,
        };
        (name, v)
    })
}

/// Whether a `listen` value only takes connections from this host.
fn is_local_listen(listen: &str) -> bool {
    let listen = listen.trim();
    listen.starts_with('/') || listen.starts_with('@') || {
        !listen.is_empty() && classify(listen) == Some(Closed::Loopback)
    }
}

/// The host part of Xray's `api.listen` (`host:port`, or a socket path).
fn api_listen_host(listen: &str) -> &str {
    if listen.starts_with('/') || listen.starts_with('@') {
        return listen;
    }
    split_host_port(listen).map_or(listen, |(host, _)| host)
}

fn public(listen: &str) -> Problem {
    Problem::PublicApi {
        listen: listen.to_owned(),
    }
}

fn protocol(handler: &Value) -> String {
    strings(handler, "protocol")
        .next()
        .unwrap_or("")
        .to_lowercase()
}

/// A port as the cores read it: a number, or a string of digits.
fn port(value: &Value) -> Option<u16> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Every value of `object` whose key matches `key` (given folded) the way Go's encoding/json
/// matches struct fields: without regard to case, with Unicode's simple folding.
fn fields<'a>(object: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    let key = key.to_owned();
    object
        .as_object()
        .into_iter()
        .flatten()
        .filter(move |(k, _)| fold(k) == key)
        .map(|(_, v)| v)
}

fn strings<'a>(object: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    fields(object, key).filter_map(Value::as_str)
}

/// The elements of an array; nothing for any other value.
fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Go's case folding for ASCII keys: the two non-ASCII letters that fold to ASCII ones (long
/// s and the Kelvin sign) become them, the rest is lower-cased.
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
#[path = "config_policy_tests.rs"]
mod tests;
