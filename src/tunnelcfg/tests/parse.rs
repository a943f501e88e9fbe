//! Reading configs: inbounds, clients, the API address, and the errors.

use std::net::SocketAddr;

use super::{fixture, id_user, pw_user};
use crate::domain::Protocol;
use crate::tunnelcfg::{Inbound, TunnelConfigError, parse, read};

fn inbound<'a>(inbounds: &'a [Inbound], tag: &str) -> &'a Inbound {
    inbounds.iter().find(|ib| ib.tag == tag).unwrap()
}

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn v2ray_434_config_reads_inbounds_clients_and_classic_api() {
    let config = read(&fixture("v2ray-434.json")).unwrap();
    assert_eq!(config.api, addr("127.0.0.1:10085"));
    let tags: Vec<&str> = config.inbounds.iter().map(|ib| ib.tag.as_str()).collect();
    assert_eq!(
        tags,
        [
            "api",
            "vless-in",
            "vmess-in",
            "trojan-in",
            "ss-in",
            "socks-in"
        ],
        "untagged left out"
    );

    let vless = inbound(&config.inbounds, "vless-in");
    assert_eq!((&vless.protocol, vless.port), (&Protocol::Vless, Some(443)));
    assert_eq!(
        vless.clients,
        [
            id_user(
                "alice@example.com",
                "5f2b0c3e-8a1d-4c6b-9e7f-0a1b2c3d4e5f",
                "",
                0
            ),
            id_user(
                "bob@example.com",
                "6a3c1d4f-9b2e-4d7c-8f01-1b2c3d4e5f60",
                "xtls-rprx-direct",
                1
            ),
        ]
    );
    assert_eq!(
        vless.invalid_clients,
        [
            "clients[2]: no email",
            r#"clients[3] ("carol@example.com"): id "hello" is not a UUID"#
        ]
    );

    let vmess = inbound(&config.inbounds, "vmess-in");
    assert_eq!(vmess.port, Some(8443), "a port given as a string");
    assert_eq!(
        vmess.clients,
        [
            id_user(
                "dave@example.com",
                "8c5e3f61-1d40-4f9e-a123-3d4e5f607182",
                "",
                0
            ),
            id_user(
                "Erin@Example.com",
                "9d6f4072-2e51-4a0f-b234-4e5f60718293",
                "",
                0
            ),
        ]
    );

    let trojan = inbound(&config.inbounds, "trojan-in");
    assert_eq!(
        trojan.clients,
        [pw_user("frank@example.com", "frank-secret")]
    );
    assert_eq!(
        trojan.invalid_clients,
        [
            r#"clients[1] ("grace@example.com"): no password"#,
            r#"clients[2] ("heidi@example.com"): level -1 is not a whole number from 0 to 4294967295"#
        ]
    );

    let ss = inbound(&config.inbounds, "ss-in");
    assert!(
        ss.clients.is_empty() && ss.invalid_clients.is_empty(),
        "single-user shadowsocks"
    );
    let socks = inbound(&config.inbounds, "socks-in");
    assert_eq!(
        (&socks.protocol, socks.port),
        (&Protocol::parse("socks"), None),
        "a port range"
    );
    assert_eq!(
        inbound(&config.inbounds, "api").protocol,
        Protocol::parse("dokodemo-door")
    );
}

#[test]
fn xray_config_reads_api_listen_and_multi_user_shadowsocks() {
    let config = read(&fixture("xray-api-listen.json")).unwrap();
    assert_eq!(config.api, addr("127.0.0.1:10086"));
    let reality = inbound(&config.inbounds, "reality");
    let ivan = id_user(
        "ivan@example.com",
        "0f0e0d0c-0b0a-4909-8807-060504030201",
        "xtls-rprx-vision",
        0,
    );
    assert_eq!(reality.clients[0], ivan);

    let aead = inbound(&config.inbounds, "ss-aead");
    assert!(
        aead.clients.is_empty(),
        "one email twice (case-insensitive): neither is used"
    );
    assert_eq!(aead.invalid_clients.len(), 2);
    assert!(
        aead.invalid_clients[1].contains("appears 2 times"),
        "{:?}",
        aead.invalid_clients
    );

    let ss2022 = inbound(&config.inbounds, "ss-2022");
    assert_eq!(
        ss2022.clients,
        [pw_user("mallory@example.com", "ZJ2d8GQ1cBzRjZkcA1F8Yw==")]
    );
    assert!(inbound(&config.inbounds, "trojan-empty").clients.is_empty());
    assert!(
        inbound(&config.inbounds, "vmess-nosettings")
            .clients
            .is_empty()
    );
}

#[test]
fn comments_are_read_like_the_cores_read_them() {
    let config = read(&fixture("with-comments.json")).unwrap();
    assert_eq!(
        config.api,
        addr("127.0.0.1:10087"),
        "`tunnel` alias, no listen, inboundTag as a string"
    );
    assert_eq!(
        inbound(&config.inbounds, "vless-in").clients[0].email,
        "http://not-a-comment#x"
    );
}

fn api_of(api: &str, inbound: &str, routing: &str) -> Option<SocketAddr> {
    let text = format!(r#"{{"api": {api}, "inbounds": [{inbound}], "routing": {routing}}}"#);
    parse(&text).unwrap().api
}

#[test]
fn api_listen_is_dialled_on_loopback_and_unix_sockets_are_no_tcp_api() {
    let with = |listen: &str| {
        api_of(
            &format!(r#"{{"tag": "api", "listen": "{listen}"}}"#),
            "",
            "{}",
        )
    };
    assert_eq!(with("/run/xray/api.sock"), None);
    assert_eq!(with("@xray-api"), None);
    assert_eq!(with("0.0.0.0:1"), addr("127.0.0.1:1"));
    assert_eq!(with("[::]:2"), addr("127.0.0.1:2"));
    assert_eq!(with("[::1]:3"), addr("[::1]:3"));
    assert_eq!(with("localhost:4"), addr("127.0.0.1:4"));
    assert_eq!(with(":5"), addr("127.0.0.1:5"));
    assert_eq!(with("10.0.0.7:6"), addr("10.0.0.7:6"));
    let err = parse(r#"{"api": {"tag": "api", "listen": "nope"}}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"config text: api.listen: "nope" is not host:port"#
    );
    let err = parse(r#"{"api": {"tag": "api", "listen": "api.internal:10085"}}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("names the host \"api.internal\"; the warden does not resolve host names"),
        "{err}"
    );
}

#[test]
fn classic_api_needs_a_rule_to_a_dokodemo_inbound() {
    let api = r#"{"tag": "api"}"#;
    let rule = r#"{"rules": [{"inboundTag": ["x", "api-in"], "outboundTag": "api"}]}"#;
    let door = |extra: &str| {
        format!(r#"{{"tag": "api-in", "protocol": "dokodemo-door", "port": 7{extra}}}"#)
    };
    assert_eq!(
        api_of(api, &door(""), rule),
        addr("127.0.0.1:7"),
        "no listen: every interface"
    );
    assert_eq!(
        api_of(api, &door(r#", "listen": "::""#), rule),
        addr("127.0.0.1:7")
    );
    assert_eq!(
        api_of(api, &door(r#", "listen": "10.1.2.3""#), rule),
        addr("10.1.2.3:7")
    );
    assert_eq!(
        api_of(api, &door(r#", "listen": "/run/x.sock""#), rule),
        None
    );
    let old_layout =
        r#"{"settings": {"rules": [{"inboundTag": ["api-in"], "outboundTag": "api"}]}}"#;
    assert_eq!(api_of(api, &door(""), old_layout), addr("127.0.0.1:7"));
    assert_eq!(api_of(api, &door(""), "{}"), None, "no rule");
    let other_rule = r#"{"rules": [{"inboundTag": ["api-in"], "outboundTag": "direct"}]}"#;
    assert_eq!(api_of(api, &door(""), other_rule), None);
    let socks = r#"{"tag": "api-in", "protocol": "socks", "port": 7}"#;
    assert_eq!(api_of(api, socks, rule), None, "not a dokodemo-door");
    let range = r#"{"tag": "api-in", "protocol": "dokodemo-door", "port": "7-9"}"#;
    assert_eq!(api_of(api, range, rule), None);
    let both = r#"{"tag": "api", "listen": "127.0.0.1:99"}"#;
    assert_eq!(
        api_of(both, &door(""), rule),
        addr("127.0.0.1:99"),
        "api.listen wins"
    );
    assert_eq!(parse("{}").unwrap().api, None);
}

fn read_err(name: &str) -> TunnelConfigError {
    read(&fixture(name)).unwrap_err()
}

#[test]
fn malformed_configs_are_errors_that_say_where() {
    let path = fixture("bad-json.json");
    match read_err("bad-json.json") {
        TunnelConfigError::Json {
            line,
            column,
            message,
            ..
        } => {
            assert_eq!((line, column), (4, 5));
            assert_eq!(message, "expected `,` or `]`");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        read_err("bad-json.json")
            .to_string()
            .starts_with(&format!("{}: not valid JSON at line 4", path.display()))
    );
    let shape = |name: &str| match read_err(name) {
        TunnelConfigError::Shape { at, problem, .. } => format!("{at}: {problem}"),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        shape("inbounds-not-array.json"),
        "inbounds: is an object, not an array"
    );
    assert_eq!(
        shape("clients-not-array.json"),
        "inbounds[0].settings: .clients is an object, not an array"
    );
    assert_eq!(
        shape("duplicate-tag.json"),
        r#"inbounds[1]: tag "a" is used by an earlier inbound too"#
    );
    assert_eq!(
        shape("not-an-object.json"),
        "the document: is an array, not an object"
    );
    let missing = read_err("no-such-file.json");
    assert!(matches!(missing, TunnelConfigError::Read { .. }));
    assert!(
        missing.to_string().starts_with("cannot read /"),
        "{missing}"
    );
    let no_protocol = parse(r#"{"inbounds": [{"tag": "a"}]}"#).unwrap_err();
    assert_eq!(
        no_protocol.to_string(),
        "config text: inbounds[0].protocol: missing or not a string"
    );
}
