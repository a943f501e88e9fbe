//! Shadowsocks-2022 on the wire: the account sent, the key checks, the method read from
//! ListInbounds, and the users without an email of their own that listing leaves out.

use super::tests::{Raw, add, listed, try_add, user};
use super::*;
use crate::xray::ss2022::inbound_key_bytes as ss2022_inbound_key_bytes;

const KEY_16: &str = "AAECAwQFBgcICQoLDA0ODw==";
const KEY_32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn a_shadowsocks_2022_user_carries_its_key_in_field_1() {
    let alice = user("s@x", Credential::Password(KEY_16.into()));
    let (_, _, account_type, account) = add(Flavour::Xray, Protocol::Shadowsocks, &alice);
    assert_eq!(account_type, "xray.proxy.shadowsocks_2022.Account");
    assert_eq!(account, [(1, Raw::Bytes(KEY_16.as_bytes().to_vec()))]);
}

#[test]
fn keys_the_core_would_choke_on_are_refused() {
    // A key that is not base64 or shorter than the method's leaves Xray's user table stale
    // for every later add and remove; a longer one works on the server but not in clients.
    let aes_256 = Served::Shadowsocks2022 { key_bytes: 32 };
    for (key, served, why) in [
        (
            "not base64!",
            Served::Shadowsocks2022 { key_bytes: 16 },
            "base64",
        ),
        (
            "AAECAwQFBgcICQoLDA0ODw",
            Served::Shadowsocks2022 { key_bytes: 16 },
            "base64",
        ),
        (KEY_16, aes_256, "16 bytes, the inbound's method takes 32"),
        (
            KEY_32,
            Served::Shadowsocks2022 { key_bytes: 16 },
            "32 bytes",
        ),
    ] {
        let keyed = user("s@x", Credential::Password(key.into()));
        match add_user(Flavour::Xray, "in-1", served, &keyed) {
            Err(ApiError::Refused(text)) => assert!(text.contains(why), "{key}: {text}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    let long = user("s@x", Credential::Password(KEY_32.into()));
    assert!(add_user(Flavour::Xray, "in-1", aes_256, &long).is_ok());
    // An id never goes to a Shadowsocks-2022 inbound, nor a key to a VLESS one.
    let id = user(
        "s@x",
        Credential::Id("a1b2c3d4-0000-4000-8000-00000000000f".into()),
    );
    assert!(matches!(
        add_user(
            Flavour::Xray,
            "in-1",
            Served::Shadowsocks2022 { key_bytes: 16 },
            &id
        ),
        Err(ApiError::Refused(_))
    ));
    let key = user("s@x", Credential::Password(KEY_16.into()));
    assert!(matches!(
        add_user(Flavour::Xray, "in-1", Served::Vless, &key),
        Err(ApiError::Refused(_))
    ));
    // V2Ray's shadowsocks is refused before the inbound is even asked.
    assert!(matches!(
        try_add(Flavour::V2ray, &Protocol::Shadowsocks, &key),
        Err(ApiError::Refused(ref t)) if t.contains("single-user")
    ));
}

fn inbound(tag: &str, r#type: &str, value: Vec<u8>) -> proto::InboundHandlerConfig {
    proto::InboundHandlerConfig {
        tag: tag.into(),
        receiver_settings: None,
        proxy_settings: Some(proto::TypedMessage {
            r#type: r#type.into(),
            value,
        }),
    }
}

fn multi(method: &str) -> Vec<u8> {
    proto::Shadowsocks2022MultiUserServerConfig {
        method: method.into(),
        key: KEY_16.into(),
    }
    .encode_to_vec()
}

#[test]
fn the_key_length_comes_from_the_inbounds_method() {
    const MULTI: &str = "xray.proxy.shadowsocks_2022.MultiUserServerConfig";
    let answer = |inbounds| proto::ListInboundsResponse { inbounds };
    let found = ss2022_inbound_key_bytes(
        Flavour::Xray,
        "ss",
        answer(vec![
            inbound("other", MULTI, multi("2022-blake3-aes-256-gcm")),
            inbound("ss", MULTI, multi("2022-blake3-aes-128-gcm")),
        ]),
    );
    assert_eq!(found, Ok(16));
    let found = ss2022_inbound_key_bytes(
        Flavour::Xray,
        "ss",
        answer(vec![inbound("ss", MULTI, multi("2022-blake3-aes-256-gcm"))]),
    );
    assert_eq!(found, Ok(32));
    for (inbounds, why) in [
        (vec![], "does not list"),
        (
            vec![inbound(
                "ss",
                "xray.proxy.shadowsocks_2022.ServerConfig",
                vec![],
            )],
            "not multi-user",
        ),
        (
            vec![inbound("ss", MULTI, multi("2022-blake3-chacha20-poly1305"))],
            "takes no users",
        ),
        (vec![inbound("ss", MULTI, vec![0x0a, 0x09])], "unreadable"),
    ] {
        match ss2022_inbound_key_bytes(Flavour::Xray, "ss", answer(inbounds)) {
            Err(ApiError::Refused(text)) => assert!(text.contains(why), "{text}"),
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn users_without_an_email_of_their_own_are_left_out_of_the_listing() {
    let ss = "xray.proxy.shadowsocks_2022.Account";
    let key = proto::Shadowsocks2022Account { key: KEY_16.into() }.encode_to_vec();
    let named = |email: &str, r#type: &str| proto::User {
        email: email.into(),
        ..listed(r#type, key.clone())
    };
    let generated = "unnamed-user-1-1268568c-4084-4afa-a7f8-b1210e52ac24";
    let vmess = proto::VmessAccount {
        id: "a1b2c3d4-0000-4000-8000-00000000000f".into(),
        alter_id: 0,
    };
    let users = vec![
        named("s@x", ss),
        named(generated, ss),
        named("unnamed-user-12-1268568c-4084-4afa-a7f8-b1210e52ac24", ss),
        // Not the generated shape, or not on a Shadowsocks-2022 inbound: real users.
        named("unnamed-user-x-1268568c-4084-4afa-a7f8-b1210e52ac24", ss),
        named("unnamed-user-1-not-a-uuid", ss),
        named("unnamed-user-1-1268568C-4084-4AFA-A7F8-B1210E52AC24", ss),
        proto::User {
            email: String::new(),
            ..listed("xray.proxy.vmess.Account", vmess.encode_to_vec())
        },
        proto::User {
            email: generated.into(),
            ..listed("xray.proxy.trojan.Account", Vec::new())
        },
    ];
    let listed = users_from(Flavour::Xray, proto::GetInboundUserResponse { users }).unwrap();
    let emails: Vec<&str> = listed.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(
        emails,
        [
            "s@x",
            "unnamed-user-x-1268568c-4084-4afa-a7f8-b1210e52ac24",
            "unnamed-user-1-not-a-uuid",
            "unnamed-user-1-1268568C-4084-4AFA-A7F8-B1210E52AC24",
            generated,
        ]
    );
    assert_eq!(listed[0].credential, Credential::Password(KEY_16.into()));
}
