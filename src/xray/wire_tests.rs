//! Encoding tests. Field numbers are checked with a hand-written wire reader, not with the
//! generated types, so a wrong number in proto/*.proto cannot pass by round-tripping.

use super::*;

/// A protobuf field as it appears on the wire: (number, varint or length-delimited bytes).
#[derive(Debug, PartialEq)]
pub(super) enum Raw {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn varint(bytes: &mut &[u8]) -> u64 {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = bytes.split_first().expect("truncated varint");
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

pub(super) fn fields(mut bytes: &[u8]) -> Vec<(u64, Raw)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let raw = match key & 7 {
            0 => Raw::Varint(varint(&mut bytes)),
            2 => {
                let len = usize::try_from(varint(&mut bytes)).unwrap();
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Raw::Bytes(value.to_vec())
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, raw));
    }
    out
}

pub(super) fn bytes(raw: &Raw) -> &[u8] {
    match raw {
        Raw::Bytes(b) => b,
        Raw::Varint(v) => panic!("expected bytes, got varint {v}"),
    }
}

pub(super) fn text(raw: &Raw) -> &str {
    std::str::from_utf8(bytes(raw)).unwrap()
}

/// Splits a TypedMessage (facts §3.1: type=1, value=2) into its type string and value.
pub(super) fn typed_parts(raw: &Raw) -> (String, Vec<u8>) {
    let f = fields(bytes(raw));
    assert_eq!((f[0].0, f[1].0), (1, 2), "{f:?}");
    (text(&f[0].1).to_owned(), bytes(&f[1].1).to_vec())
}

pub(super) const UUID: &str = "a1b2c3d4-0000-4000-8000-00000000000f";

pub(super) fn user(email: &str, credential: Credential) -> User {
    User {
        email: email.into(),
        credential,
        flow: String::new(),
        level: 0,
    }
}

pub(super) type Fields = Vec<(u64, Raw)>;

/// The proxy the inbound check would find for `protocol` (a 16-byte-key SS-2022 inbound).
pub(super) fn served(protocol: &Protocol) -> Served {
    match protocol {
        Protocol::Vless => Served::Vless,
        Protocol::Vmess => Served::Vmess,
        Protocol::Trojan => Served::Trojan,
        _ => Served::Shadowsocks2022 { key_bytes: 16 },
    }
}

/// What the client would send to an inbound of `protocol`: the checks made before anything is
/// sent, then the request for the proxy the inbound check would find.
pub(super) fn try_add(
    flavour: Flavour,
    protocol: &Protocol,
    user: &User,
) -> Result<proto::AlterInboundRequest, ApiError> {
    check_user(flavour, protocol, user)?;
    add_user(flavour, "in-1", served(protocol), user)
}

/// Adds `user` and returns (operation type, user fields, account type, account fields).
pub(super) fn add(
    flavour: Flavour,
    protocol: Protocol,
    user: &User,
) -> (String, Fields, String, Fields) {
    let request = try_add(flavour, &protocol, user).unwrap().encode_to_vec();
    let f = fields(&request);
    assert_eq!(
        f[0],
        (1, Raw::Bytes(b"in-1".to_vec())),
        "AlterInboundRequest.tag = 1"
    );
    assert_eq!(f[1].0, 2, "AlterInboundRequest.operation = 2");
    let (op_type, op) = typed_parts(&f[1].1);
    let op = fields(&op);
    assert_eq!(op.len(), 1);
    assert_eq!(op[0].0, 1, "AddUserOperation.user = 1");
    let user = fields(bytes(&op[0].1));
    let account = &user
        .iter()
        .find(|(n, _)| *n == 3)
        .expect("User.account = 3")
        .1;
    let (account_type, account) = typed_parts(account);
    (op_type, user, account_type, fields(&account))
}

#[test]
fn vless_on_v2ray_has_v2ray_type_strings_and_field_numbers() {
    let mut alice = user("alice@x", Credential::Id(UUID.to_uppercase()));
    alice.flow = "xtls-rprx-direct".into();
    alice.level = 1;
    let (op_type, user, account_type, account) = add(Flavour::V2ray, Protocol::Vless, &alice);
    assert_eq!(op_type, "v2ray.core.app.proxyman.command.AddUserOperation");
    assert_eq!(user[0], (1, Raw::Varint(1)), "User.level = 1");
    assert_eq!(
        user[1],
        (2, Raw::Bytes(b"alice@x".to_vec())),
        "User.email = 2"
    );
    assert_eq!(account_type, "v2ray.core.proxy.vless.Account");
    // The id goes out canonical (lower-case); flow is field 2.
    assert_eq!(
        account,
        [
            (1, Raw::Bytes(UUID.into())),
            (2, Raw::Bytes(b"xtls-rprx-direct".to_vec()))
        ]
    );
}

#[test]
fn xray_uses_xray_type_strings() {
    let (op_type, _, account_type, _) = add(
        Flavour::Xray,
        Protocol::Vless,
        &user("a@x", Credential::Id(UUID.into())),
    );
    assert_eq!(op_type, "xray.app.proxyman.command.AddUserOperation");
    assert_eq!(account_type, "xray.proxy.vless.Account");
    let (_, _, vmess, _) = add(
        Flavour::Xray,
        Protocol::Vmess,
        &user("a@x", Credential::Id(UUID.into())),
    );
    assert_eq!(vmess, "xray.proxy.vmess.Account");
    let (_, _, trojan, _) = add(
        Flavour::Xray,
        Protocol::Trojan,
        &user("a@x", Credential::Password("pw".into())),
    );
    assert_eq!(trojan, "xray.proxy.trojan.Account");
}

#[test]
fn vmess_sends_only_the_id_and_trojan_only_the_password() {
    let (_, _, vmess_type, vmess) = add(
        Flavour::V2ray,
        Protocol::Vmess,
        &user("v@x", Credential::Id(UUID.into())),
    );
    assert_eq!(vmess_type, "v2ray.core.proxy.vmess.Account");
    assert_eq!(
        vmess,
        [(1, Raw::Bytes(UUID.into()))],
        "alter_id 0 and no security_settings"
    );
    let (_, _, trojan_type, trojan) = add(
        Flavour::V2ray,
        Protocol::Trojan,
        &user("t@x", Credential::Password("pw".into())),
    );
    assert_eq!(trojan_type, "v2ray.core.proxy.trojan.Account");
    assert_eq!(trojan, [(1, Raw::Bytes(b"pw".to_vec()))]);
}

#[test]
fn remove_carries_the_email_in_field_1() {
    for (flavour, expected) in [
        (
            Flavour::V2ray,
            "v2ray.core.app.proxyman.command.RemoveUserOperation",
        ),
        (
            Flavour::Xray,
            "xray.app.proxyman.command.RemoveUserOperation",
        ),
    ] {
        let request = remove_user(flavour, "in-1", "Bob@x")
            .unwrap()
            .encode_to_vec();
        let f = fields(&request);
        let (op_type, op) = typed_parts(&f[1].1);
        assert_eq!(op_type, expected);
        assert_eq!(fields(&op), [(1, Raw::Bytes(b"Bob@x".to_vec()))]);
    }
    assert!(matches!(
        remove_user(Flavour::V2ray, "in-1", ""),
        Err(ApiError::Refused(_))
    ));
}

#[test]
fn requests_that_could_crash_or_mislead_the_core_are_refused() {
    let id = Credential::Id(UUID.into());
    let pw = Credential::Password("pw".into());
    let cases = [
        (
            Flavour::V2ray,
            Protocol::Vless,
            user("a@x", pw.clone()),
            "does not fit",
        ),
        (
            Flavour::Xray,
            Protocol::Trojan,
            user("a@x", id.clone()),
            "does not fit",
        ),
        (
            Flavour::V2ray,
            Protocol::Shadowsocks,
            user("a@x", pw.clone()),
            "single-user",
        ),
        (
            Flavour::Xray,
            Protocol::Shadowsocks,
            user("a@x", pw.clone()),
            "not standard base64",
        ),
        (
            Flavour::Xray,
            Protocol::parse("dokodemo-door"),
            user("a@x", id.clone()),
            "no users",
        ),
        (
            Flavour::V2ray,
            Protocol::Vless,
            user("", id.clone()),
            "empty email",
        ),
        (
            Flavour::V2ray,
            Protocol::Vless,
            user("a@x", Credential::Id("hello".into())),
            "not a UUID",
        ),
        (
            Flavour::Xray,
            Protocol::Vmess,
            user("a@x", Credential::Id(String::new())),
            "not a UUID",
        ),
        (
            Flavour::V2ray,
            Protocol::Trojan,
            user("a@x", Credential::Password(String::new())),
            "empty password",
        ),
    ];
    for (flavour, protocol, user, why) in cases {
        match try_add(flavour, &protocol, &user) {
            Err(ApiError::Refused(text)) => assert!(text.contains(why), "{protocol}: {text}"),
            other => panic!("{flavour} {protocol} {user:?}: {other:?}"),
        }
    }
}

#[test]
fn method_paths_follow_the_flavour() {
    assert_eq!(
        Method::AlterInbound.path(Flavour::V2ray).as_str(),
        "/v2ray.core.app.proxyman.command.HandlerService/AlterInbound"
    );
    assert_eq!(
        Method::AlterInbound.path(Flavour::Xray).as_str(),
        "/xray.app.proxyman.command.HandlerService/AlterInbound"
    );
    assert_eq!(
        Method::GetInboundUsers.path(Flavour::Xray).as_str(),
        "/xray.app.proxyman.command.HandlerService/GetInboundUsers"
    );
    assert_eq!(
        Method::QueryStats.path(Flavour::V2ray).as_str(),
        "/v2ray.core.app.stats.command.StatsService/QueryStats"
    );
}

pub(super) fn listed(r#type: &str, value: Vec<u8>) -> proto::User {
    let account = proto::TypedMessage {
        r#type: r#type.into(),
        value,
    };
    proto::User {
        level: 2,
        email: "e@x".into(),
        account: Some(account),
    }
}

#[test]
fn listed_users_decode_back_into_domain_users() {
    let vless = proto::VlessAccount {
        id: UUID.to_uppercase(),
        flow: "xtls-rprx-vision".into(),
    };
    let ss = proto::ShadowsocksAccount {
        password: "sp".into(),
        cipher_type: 6,
        iv_check: false,
    };
    let ss22 = proto::Shadowsocks2022Account { key: "k".into() };
    let trojan = proto::TrojanAccount {
        password: "tp".into(),
    };
    let users = vec![
        listed("xray.proxy.vless.Account", vless.encode_to_vec()),
        listed("xray.proxy.trojan.Account", trojan.encode_to_vec()),
        listed("xray.proxy.shadowsocks.Account", ss.encode_to_vec()),
        listed("xray.proxy.shadowsocks_2022.Account", ss22.encode_to_vec()),
    ];
    let decoded = users_from(Flavour::Xray, proto::GetInboundUserResponse { users }).unwrap();
    let expected = |credential, flow: &str| User {
        email: "e@x".into(),
        credential,
        flow: flow.into(),
        level: 2,
    };
    assert_eq!(
        decoded,
        [
            expected(Credential::Id(UUID.into()), "xtls-rprx-vision"),
            expected(Credential::Password("tp".into()), ""),
            expected(Credential::Password("sp".into()), ""),
            expected(Credential::Password("k".into()), ""),
        ]
    );
}

#[test]
fn unreadable_listed_users_are_errors_not_guesses() {
    for user in [
        listed("xray.proxy.hysteria.Account", Vec::new()),
        listed("v2ray.core.proxy.vless.Account", Vec::new()),
        listed("xray.proxy.vless.Account", vec![0x0a, 0x05]),
        proto::User {
            level: 0,
            email: "e@x".into(),
            account: None,
        },
    ] {
        let result = users_from(
            Flavour::Xray,
            proto::GetInboundUserResponse { users: vec![user] },
        );
        assert!(
            matches!(result, Err(ApiError::Core(ref m)) if m.contains("e@x")),
            "{result:?}"
        );
    }
}

#[test]
fn the_inbound_probe_removes_the_empty_email_and_changes_nothing() {
    let request = inbound_probe(Flavour::V2ray, "in-1").encode_to_vec();
    let f = fields(&request);
    assert_eq!(f[0], (1, Raw::Bytes(b"in-1".to_vec())));
    // An empty operation leaves TypedMessage.value (2) off the wire; the core reads it as an
    // empty RemoveUserOperation (live on 4.34: "Email must not be empty.").
    let operation = fields(bytes(&f[1].1));
    let expected = b"v2ray.core.app.proxyman.command.RemoveUserOperation".to_vec();
    assert_eq!(operation, [(1, Raw::Bytes(expected))]);
    let takes = |proxy, protocol| probe_verdict(proxy, &protocol);
    assert_eq!(
        takes("vless", Protocol::Vless),
        ProbeVerdict::Served(Served::Vless)
    );
    assert_eq!(
        takes("vmess", Protocol::Vmess),
        ProbeVerdict::Served(Served::Vmess)
    );
    assert_eq!(
        takes("trojan", Protocol::Trojan),
        ProbeVerdict::Served(Served::Trojan)
    );
    assert_eq!(
        takes("shadowsocks_2022", Protocol::Shadowsocks),
        ProbeVerdict::NeedsMethod
    );
    for (proxy, protocol, why) in [
        ("vless", Protocol::Vmess, "served by \"vless\", not vmess"),
        ("shadowsocks_2022", Protocol::Trojan, "crash"),
        ("shadowsocks", Protocol::Shadowsocks, "AEAD"),
        ("shadowsocks", Protocol::Trojan, "served by \"shadowsocks\""),
    ] {
        match takes(proxy, protocol) {
            ProbeVerdict::Refused(text) => assert!(text.contains(why), "{proxy}: {text}"),
            other => panic!("{proxy}: {other:?}"),
        }
    }
}
