use serde_json::{Value, json};

use super::*;
use crate::domain::policy_target::classify;

fn allow(entries: &[&str]) -> TargetPolicy {
    TargetPolicy {
        allow: entries
            .iter()
            .map(|e| AllowedTarget::parse(e).unwrap())
            .collect(),
    }
}

fn refusals(config: &Value, policy: &TargetPolicy) -> Vec<String> {
    match check(config, policy) {
        Ok(()) => Vec::new(),
        Err(found) => found.iter().map(ToString::to_string).collect(),
    }
}

/// The one refusal of `config` under the default policy; panics on none or several.
fn refused(config: Value) -> String {
    let found = refusals(&config, &TargetPolicy::default());
    assert_eq!(found.len(), 1, "{config}: {found:?}");
    found.into_iter().next().unwrap()
}

fn passes(config: Value) {
    let found = refusals(&config, &TargetPolicy::default());
    assert!(found.is_empty(), "{config}: {found:?}");
}

fn dokodemo(settings: Value) -> Value {
    json!({"inbounds": [{"tag": "fwd", "port": 8080, "protocol": "dokodemo-door", "settings": settings}],
           "outbounds": [{"protocol": "freedom"}]})
}

/// The layout of the project's tests and demo (tests/support/v2ray.rs, scripts/demo.sh): the
/// API behind a loopback dokodemo-door routed to the api tag.
fn standard(api_listen: Value) -> Value {
    json!({
        "api": {"tag": "api", "services": ["HandlerService", "StatsService"]},
        "inbounds": [
            {"tag": "api", "listen": api_listen, "port": 10085, "protocol": "dokodemo-door",
             "settings": {"address": "127.0.0.1"}},
            {"tag": "vless-in", "port": 443, "protocol": "vless",
             "settings": {"clients": [], "decryption": "none"}}
        ],
        "outbounds": [{"protocol": "freedom", "tag": "direct"}],
        "routing": {"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}
    })
}

#[test]
fn closed_addresses_are_classified() {
    let cases = [
        ("127.0.0.1", Some(Closed::Loopback)),
        ("127.8.9.10", Some(Closed::Loopback)),
        ("::1", Some(Closed::Loopback)),
        ("[::1]", Some(Closed::Loopback)),
        ("0:0:0:0:0:0:0:1", Some(Closed::Loopback)),
        ("::ffff:127.0.0.1", Some(Closed::Loopback)),
        ("localhost", Some(Closed::Loopback)),
        ("LocalHost.", Some(Closed::Loopback)),
        ("api.localhost", Some(Closed::Loopback)),
        ("", Some(Closed::Loopback)),
        ("127.1", Some(Closed::Loopback)),
        ("2130706433", Some(Closed::Loopback)),
        ("0x7f.0.0.1", Some(Closed::Loopback)),
        ("0177.0.0.1", Some(Closed::Loopback)),
        ("169.254.169.254", Some(Closed::Metadata)),
        ("::ffff:169.254.169.254", Some(Closed::Metadata)),
        ("0xa9fea9fe", Some(Closed::Metadata)),
        ("fd00:ec2::254", Some(Closed::Metadata)),
        ("metadata.google.internal", Some(Closed::Metadata)),
        ("Metadata.Google.Internal.", Some(Closed::Metadata)),
        ("100.100.100.200", Some(Closed::Metadata)),
        ("169.254.1.2", Some(Closed::LinkLocal)),
        ("fe80::1", Some(Closed::LinkLocal)),
        ("fe80::1%eth0", Some(Closed::LinkLocal)),
        ("febf::1", Some(Closed::LinkLocal)),
        ("0.0.0.0", Some(Closed::Unspecified)),
        ("0", Some(Closed::Unspecified)),
        ("::", Some(Closed::Unspecified)),
        ("1.1.1.1", None),
        ("10.0.0.1", None),
        ("192.168.1.1", None),
        ("fd00::1", None),
        ("fec0::1", None),
        ("2001:db8::1", None),
        ("example.com", None),
        ("localhost.example.com", None),
        ("128.0.0.1", None),
    ];
    for (host, expected) in cases {
        assert_eq!(classify(host), expected, "{host}");
    }
}

#[test]
fn the_standard_api_layout_passes() {
    passes(standard(json!("127.0.0.1")));
    passes(standard(json!("::1")));
    passes(standard(json!("localhost")));
    // The older rules location of V2Ray 4.
    let mut older = standard(json!("127.0.0.1"));
    older["routing"] = json!({"settings": {"rules": [{"type": "field", "inboundTag": "api", "outboundTag": "api"}]}});
    passes(older);
    // Xray's own API listener on loopback or a socket.
    passes(json!({"api": {"tag": "api", "listen": "127.0.0.1:10086"}, "inbounds": []}));
    passes(json!({"api": {"tag": "api", "listen": "/run/xray/api.sock"}}));
}

#[test]
fn an_api_reachable_from_outside_is_refused() {
    let open = refused(standard(json!("0.0.0.0")));
    assert!(open.contains("inbounds[0] \"api\" listen"), "{open}");
    assert!(open.contains("API would listen on 0.0.0.0"), "{open}");
    let mut absent = standard(json!(null));
    absent["inbounds"][0]
        .as_object_mut()
        .unwrap()
        .remove("listen");
    assert!(refused(absent).contains("every interface"));
    assert!(
        refused(json!({"api": {"tag": "api", "listen": "0.0.0.0:10086"}})).contains("api.listen")
    );
    assert!(refused(json!({"api": {"tag": "api", "listen": ":10086"}})).contains("api.listen"));
    // A public socks inbound that a rule sends to the API publishes it as well.
    let mut socks = standard(json!("127.0.0.1"));
    socks["inbounds"][1] = json!({"tag": "s", "port": 1080, "protocol": "socks"});
    socks["routing"]["rules"][0]["inboundTag"] = json!(["api", "s"]);
    assert!(refused(socks).contains("inbounds[1] \"s\" listen"));
}

#[test]
fn an_api_inbound_that_is_not_wholly_routed_to_the_api_forwards() {
    // No `api` section: the rule names an outbound nobody has; the door forwards to loopback.
    let mut no_api = standard(json!("127.0.0.1"));
    no_api.as_object_mut().unwrap().remove("api");
    assert!(refused(no_api).contains("127.0.0.1:10085"));
    // An earlier rule takes some of its traffic elsewhere.
    let mut earlier = standard(json!("127.0.0.1"));
    earlier["routing"]["rules"] = json!([
        {"type": "field", "ip": ["geoip:private"], "outboundTag": "direct"},
        {"type": "field", "inboundTag": ["api"], "outboundTag": "api"}
    ]);
    assert!(refused(earlier).contains("settings.address"));
    // The api rule itself has a condition: the rest falls through to freedom.
    let mut partial = standard(json!("127.0.0.1"));
    partial["routing"]["rules"][0]["port"] = json!("10085");
    assert!(refused(partial).contains("127.0.0.1"));
    // An outbound tagged like the API takes its place.
    let mut shadowed = standard(json!("127.0.0.1"));
    shadowed["outbounds"][0]["tag"] = json!("api");
    assert!(refused(shadowed).contains("loopback"));
}

#[test]
fn dokodemo_targets_are_refused() {
    let warden = refused(dokodemo(json!({"address": "127.0.0.1", "port": 9550})));
    assert_eq!(
        warden,
        "inbounds[0] \"fwd\" settings.address: sends traffic to 127.0.0.1:9550, a loopback \
         address (this host), which needs an entry in [tunnels.policy] allow_targets"
    );
    assert!(
        refused(dokodemo(json!({"address": "169.254.169.254", "port": 80})))
            .contains("169.254.169.254:80, a cloud metadata service")
    );
    assert!(
        refused(dokodemo(
            json!({"address": "metadata.google.internal", "port": 80})
        ))
        .contains("metadata")
    );
    assert!(
        refused(dokodemo(json!({"address": "fd00:ec2::254", "port": 80})))
            .contains("[fd00:ec2::254]:80")
    );
    // No address: Xray forwards to "localhost", at the listening port without a port.
    assert!(refused(dokodemo(json!({"port": 9550}))).contains("localhost:9550"));
    assert!(refused(dokodemo(json!({}))).contains("localhost:8080"));
    // Xray's newer names, the protocol's new name and any case, keys in any case.
    assert!(
        refused(dokodemo(
            json!({"rewriteAddress": "::1", "rewritePort": 9550})
        ))
        .contains("[::1]:9550")
    );
    let mut tunnel = dokodemo(json!({"Address": "0.0.0.0", "PORT": 9550}));
    tunnel["inbounds"][0]["protocol"] = json!("Tunnel");
    assert!(refused(tunnel).contains("unspecified"));
    let mut folded = dokodemo(json!({"addre\u{17f}\u{17f}": "127.0.0.1", "port": 9550}));
    folded["inbounds"][0]["protocol"] = json!("DOKODEMO-DOOR");
    assert!(refused(folded).contains("127.0.0.1:9550"));
    // Two spellings of one key: each is checked.
    let both = dokodemo(json!({"address": "1.1.1.1", "Address": "127.0.0.1", "port": 53}));
    assert!(refused(both).contains("127.0.0.1:53"));
    // portMap entries, including one that changes only the port.
    let map = dokodemo(json!({"address": "1.1.1.1", "port": 53,
        "portMap": {"5555": "169.254.169.254:80", "5556": ":8888"}}));
    assert_eq!(refusals(&map, &TargetPolicy::default()).len(), 1);
    let map = dokodemo(json!({"portMap": {"5556": ":9550"}, "address": "127.0.0.1", "port": 1}));
    assert_eq!(refusals(&map, &TargetPolicy::default()).len(), 2);
    // Legacy single and detour inbounds count too.
    let legacy = json!({"inbound": {"protocol": "dokodemo-door", "port": 1, "settings": {"address": "127.0.0.1", "port": 9550}},
        "inboundDetour": [{"protocol": "dokodemo-door", "port": 2, "settings": {"address": "169.254.169.254", "port": 80}}]});
    assert_eq!(refusals(&legacy, &TargetPolicy::default()).len(), 2);
}

#[test]
fn public_and_private_targets_pass() {
    passes(dokodemo(json!({"address": "1.1.1.1", "port": 53})));
    passes(dokodemo(json!({"address": "10.0.0.5", "port": 5432})));
    passes(dokodemo(
        json!({"address": "mc.example.net", "port": 25565}),
    ));
    // A transparent proxy takes each connection's original destination.
    passes(dokodemo(json!({"network": "tcp", "followRedirect": true})));
    passes(json!({"outbounds": [
        {"protocol": "freedom", "settings": {"redirect": ":443"}},
        {"protocol": "freedom", "settings": {"redirect": "1.1.1.1:53"}},
        {"protocol": "vless", "settings": {"vnext": [{"address": "example.com", "port": 443, "users": []}]}},
        {"protocol": "wireguard", "settings": {"address": ["10.0.0.2/32"], "peers": [{"endpoint": "203.0.113.9:51820"}]}},
        {"protocol": "blackhole"}
    ]}));
    passes(
        json!({"inbounds": [{"protocol": "socks", "listen": "0.0.0.0", "port": 1080,
        "settings": {"ip": "127.0.0.1", "udp": true}}]}),
    );
}

#[test]
fn fallbacks_and_reality_destinations_are_refused() {
    let vless = |fallbacks: Value| {
        json!({"inbounds": [{"tag": "v", "port": 443, "protocol": "vless",
            "settings": {"clients": [], "decryption": "none", "fallbacks": fallbacks}}]})
    };
    assert!(refused(vless(json!([{"dest": 9550}]))).contains("127.0.0.1:9550"));
    assert!(refused(vless(json!([{"dest": "9550"}]))).contains("127.0.0.1:9550"));
    assert!(refused(vless(json!([{"dest": "localhost:9550"}]))).contains("localhost:9550"));
    assert!(refused(vless(json!([{"dest": ":9550"}]))).contains("127.0.0.1:9550"));
    assert!(refused(vless(json!([{"dest": "[::1]:80"}]))).contains("[::1]:80"));
    assert!(
        refused(vless(json!([{"dest": "/dev/shm/h1.sock"}]))).contains("unix:/dev/shm/h1.sock")
    );
    assert!(refused(vless(json!([{"dest": "@nginx"}]))).contains("a local Unix socket"));
    passes(vless(json!([{"dest": "www.example.org:443"}])));
    let trojan = json!({"inbounds": [{"protocol": "trojan", "port": 443,
        "settings": {"clients": [], "fallbacks": [{"path": "/x", "dest": "169.254.169.254:80"}]}}]});
    assert!(refused(trojan).contains("inbounds[0] settings.fallbacks dest"));
    let reality = |key: &str, dest: &str| {
        json!({"inbounds": [{"protocol": "vless", "port": 443, "settings": {"clients": []},
            "streamSettings": {"security": "reality", "realitySettings": {key: dest}}}]})
    };
    assert!(refused(reality("dest", "127.0.0.1:9550")).contains("realitySettings.dest"));
    assert!(refused(reality("target", "localhost:9550")).contains("realitySettings.target"));
    passes(reality("dest", "www.example.org:443"));
}

#[test]
fn outbound_targets_are_refused() {
    let out = |outbound: Value| json!({"outbounds": [outbound]});
    let redirect = refused(out(
        json!({"protocol": "freedom", "tag": "direct", "settings": {"redirect": "127.0.0.1:9550"}}),
    ));
    assert!(
        redirect.starts_with(
            "outbounds[0] \"direct\" settings.redirect: sends traffic to 127.0.0.1:9550"
        ),
        "{redirect}"
    );
    // Port 0 keeps each connection's own port: every port of the metadata host.
    assert!(
        refused(out(
            json!({"protocol": "freedom", "settings": {"redirect": "169.254.169.254:0"}})
        ))
        .contains("169.254.169.254 (any port)")
    );
    assert!(refused(out(json!({"protocol": "vmess", "settings": {"vnext": [{"address": "127.0.0.1", "port": 9550, "users": []}]}})))
        .contains("settings.vnext address"));
    assert!(refused(out(json!({"protocol": "trojan", "settings": {"servers": [{"address": "localhost", "port": 9550}]}})))
        .contains("settings.servers address"));
    assert!(refused(out(json!({"protocol": "socks", "settings": {"servers": [{"address": "fe80::1", "port": 1}]}})))
        .contains("link-local"));
    assert!(
        refused(out(
            json!({"protocol": "dns", "settings": {"address": "127.0.0.53", "port": 53}})
        ))
        .contains("settings.address")
    );
    assert!(
        refused(out(
            json!({"protocol": "vless", "settings": {"address": "::1", "port": 9550, "id": "x"}})
        ))
        .contains("[::1]:9550")
    );
    assert!(refused(out(json!({"protocol": "wireguard", "settings": {"peers": [{"endpoint": "127.0.0.1:51820"}]}})))
        .contains("peers endpoint"));
    let legacy = json!({"outbound": {"protocol": "freedom", "settings": {"redirect": "127.0.0.1:1"}},
        "outboundDetour": [{"protocol": "freedom", "settings": {"redirect": "127.0.0.1:2"}}]});
    assert_eq!(refusals(&legacy, &TargetPolicy::default()).len(), 2);
}

#[test]
fn every_refusal_is_reported() {
    let config = json!({
        "inbounds": [{"protocol": "dokodemo-door", "port": 1, "settings": {"address": "127.0.0.1", "port": 9550}}],
        "outbounds": [{"protocol": "freedom", "settings": {"redirect": "169.254.169.254:80"}}],
        "api": {"tag": "api", "listen": "0.0.0.0:1"}
    });
    let found = refusals(&config, &TargetPolicy::default());
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("inbounds[0]"));
    assert!(found[1].starts_with("outbounds[0]"));
    assert!(found[2].starts_with("api.listen"));
}

#[test]
fn the_allow_list_opens_exactly_what_it_names() {
    let fwd = |address: &str, port: u16| dokodemo(json!({"address": address, "port": port}));
    let policy = allow(&[
        "127.0.0.1:8080",
        "[::1]:53",
        "169.254.169.254",
        "/dev/shm/h1.sock",
    ]);
    for open in [
        fwd("127.0.0.1", 8080),
        fwd("::1", 53),
        fwd("0:0::1", 53),
        fwd("::ffff:127.0.0.1", 8080),
    ] {
        assert!(refusals(&open, &policy).is_empty(), "{open}");
    }
    assert!(refusals(&fwd("169.254.169.254", 1234), &policy).is_empty());
    for closed in [
        fwd("127.0.0.1", 9550),
        fwd("localhost", 8080),
        fwd("::1", 9550),
        fwd("127.0.0.2", 8080),
    ] {
        assert_eq!(refusals(&closed, &policy).len(), 1, "{closed}");
    }
    // An entry with a port does not open a target whose port is chosen at run time.
    let any_port =
        json!({"outbounds": [{"protocol": "freedom", "settings": {"redirect": "127.0.0.1:0"}}]});
    assert_eq!(refusals(&any_port, &policy).len(), 1);
    assert!(refusals(&any_port, &allow(&["127.0.0.1"])).is_empty());
    let socket = json!({"inbounds": [{"protocol": "vless", "settings": {"fallbacks": [{"dest": "/dev/shm/h1.sock"}, {"dest": "/run/other.sock"}]}}]});
    assert_eq!(refusals(&socket, &policy).len(), 1);
    assert!(refusals(&fwd("LOCALHOST.", 80), &allow(&["localhost:80"])).is_empty());
    // The API's listen address is not a target: no entry makes a public API acceptable.
    let open_api = standard(json!("0.0.0.0"));
    assert_eq!(
        refusals(&open_api, &allow(&["0.0.0.0", "127.0.0.1"])).len(),
        1
    );
}

#[test]
fn allow_entries_are_parsed_strictly() {
    for good in [
        "127.0.0.1:8080",
        "127.0.0.1",
        "[::1]:53",
        "[::1]",
        "::1",
        "localhost:80",
        "/run/x.sock",
        "@abstract",
    ] {
        assert!(AllowedTarget::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        " ",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "127.0.0.1:http",
        ":80",
        "[::1]:x",
        "a b:80",
    ] {
        assert!(AllowedTarget::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        AllowedTarget::parse("[::1]:53").unwrap().to_string(),
        "[::1]:53"
    );
    assert_eq!(
        AllowedTarget::parse("127.0.0.1").unwrap().to_string(),
        "127.0.0.1 (any port)"
    );
}
