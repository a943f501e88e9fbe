//! Tests of the desired-users document, on the fixtures in tests/fixtures/users.

use std::path::{Path, PathBuf};

use super::*;
use crate::domain::{Credential, Flavour, Protocol, TunnelId};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/users")
        .join(name)
}

fn user(email: &str, credential: Credential, flow: &str, level: u32) -> User {
    User {
        email: email.into(),
        credential,
        flow: flow.into(),
        level,
    }
}

fn id(text: &str) -> Credential {
    Credential::Id(text.into())
}

fn pw(text: &str) -> Credential {
    Credential::Password(text.into())
}

fn tunnels(ids: &[&str]) -> Option<Vec<TunnelId>> {
    Some(ids.iter().map(|t| TunnelId::new(t).unwrap()).collect())
}

#[test]
fn a_valid_document_is_read_with_defaults_and_unknown_keys_ignored() {
    let doc = read_file(&fixture("valid.json")).unwrap();
    assert_eq!(doc.rejected, []);
    let alice = &doc.users[0];
    let alice_id = id("5f2b0c3e-8a1d-4c6b-9e7f-0a1b2c3d4e5f");
    assert_eq!(
        alice.user,
        user("alice@example.com", alice_id, "xtls-rprx-vision", 1),
        "id canonical"
    );
    assert_eq!((&alice.tunnels, &alice.inbounds), (&None, &None));
    let bob = &doc.users[1];
    assert_eq!(bob.user, user("bob@example.com", pw("bob-secret"), "", 0));
    assert_eq!(bob.tunnels, tunnels(&["7", "eu-west_2"]));
    let carol = &doc.users[2];
    assert_eq!(
        (&carol.tunnels, carol.user.level),
        (&None, 0),
        "null is absent"
    );
    assert_eq!(carol.inbounds, Some(vec!["vless-in".to_owned()]));
    let zoe = &doc.users[3];
    assert_eq!(zoe.user, user("Zoë@例子.测试", pw("ünïcödé"), "", 0));
    assert_eq!(
        (zoe.tunnels.as_deref(), zoe.inbounds.as_deref()),
        (Some(&[][..]), Some(&[][..]))
    );
    assert_eq!(
        parse_document(br#"{"users": []}"#).unwrap(),
        Document::default()
    );
}

#[test]
fn every_bad_entry_is_rejected_with_its_reason_and_the_rest_kept() {
    let doc = read_file(&fixture("mixed.json")).unwrap();
    let accepted: Vec<&str> = doc.users.iter().map(|d| d.user.email.as_str()).collect();
    assert_eq!(
        accepted,
        [
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ]
    );
    let expected: &[(usize, &str)] = &[
        (1, "the entry is a string, not an object"),
        (2, "no email"),
        (3, "empty email"),
        (4, "has both id and password; give exactly one"),
        (5, "has neither id nor password"),
        (6, r#"id "hello" is not a UUID"#),
        (7, "empty password"),
        (
            8,
            r#"duplicate email: entry 0 already has "ALICE@example.com" (emails are case-insensitive to the cores); only the first entry is used"#,
        ),
        (9, r#"id already used by entry 0 ("alice@example.com")"#),
        (
            10,
            r#"tunnels[1] "../etc": tunnel id must start with a letter or digit"#,
        ),
        (11, "level -1 is not a whole number from 0 to 4294967295"),
        (12, r#"level "3" is not a whole number"#),
        (13, "flow is a number, not a string"),
        (
            15,
            "duplicate email: entry 0 already has \"Alice@Example.com\"",
        ),
        (
            16,
            r#"id already used by entry 0 ("alice@example.com") (Xray's VLESS ignores the third group"#,
        ),
        (17, r#"email "user>>>evil" contains ">>>""#),
        (
            18,
            r#"password already used by entry 14 ("bob@example.com")"#,
        ),
        (19, "tunnels is a string, not a list of strings"),
        (20, "inbounds[0] is a number, not a string"),
        (21, "email is a number, not a string"),
        (22, "level 1.5 is not a whole number"),
        (23, "level 4294967296 is not a whole number"),
        (
            25,
            r#"email "space@example.com " has leading or trailing whitespace"#,
        ),
        (27, "inbounds[0] is an empty tag"),
    ];
    let got: Vec<(usize, &str)> = doc
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((index, reason), (want_index, want)) in got.iter().zip(expected) {
        assert_eq!(index, want_index);
        assert!(
            reason.starts_with(want),
            "entry {index}: {reason:?} should start with {want:?}"
        );
    }
    assert_eq!(doc.rejected[0].email, None);
    assert_eq!(doc.rejected[7].email.as_deref(), Some("ALICE@example.com"));
}

#[test]
fn the_first_acceptable_entry_for_an_email_wins() {
    // Entry 6 (dave, bad id) is rejected for its id; entry 26 (dave, good id) is then the first.
    let doc = read_file(&fixture("mixed.json")).unwrap();
    let dave = doc
        .users
        .iter()
        .find(|d| d.user.email == "dave@example.com")
        .unwrap();
    assert_eq!(
        dave.user.credential,
        id("aaaaaaaa-0000-4000-8000-000000000001")
    );
    let alice = &doc.users[0].user;
    assert_eq!(
        (alice.level, alice.flow.as_str()),
        (2, "xtls-rprx-vision"),
        "entry 0, not 8 or 15"
    );
}

#[test]
fn unusable_documents_are_errors() {
    let err = |name: &str| read_file(&fixture(name)).unwrap_err();
    assert!(
        matches!(err("not-json.json"), DocumentError::NotJson { line: 3, .. }),
        "{}",
        err("not-json.json")
    );
    assert_eq!(
        err("no-users.json").to_string(),
        "the document has no \"users\" array"
    );
    assert_eq!(
        err("users-not-array.json").to_string(),
        "\"users\" is an object, not an array"
    );
    assert_eq!(
        err("array-root.json").to_string(),
        "the document is an array, not an object with a \"users\" array"
    );
    let missing = err("no-such-file.json");
    assert!(
        missing.to_string().starts_with("cannot read /")
            && matches!(missing, DocumentError::Read { .. })
    );
    assert!(parse_document(b"").is_err() && parse_document(b"null").is_err());
}

fn emails(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.email.as_str()).collect()
}

#[test]
fn desired_for_picks_by_tunnel_inbound_and_credential() {
    let doc = parse_document(
        br#"{"users": [
            {"email": "all-id@x", "id": "5f2b0c3e-8a1d-4c6b-9e7f-0a1b2c3d4e5f", "flow": "xtls-rprx-vision"},
            {"email": "t1-pw@x", "password": "p1", "tunnels": ["t1"]},
            {"email": "b-id@x", "id": "6a3c1d4f-9b2e-4d7c-8f01-1b2c3d4e5f60", "inbounds": ["vless-b"]},
            {"email": "nowhere@x", "password": "p2", "tunnels": []},
            {"email": "all-pw@x", "password": "p3"}
        ]}"#,
    )
    .unwrap();
    let (t1, t2) = (TunnelId::new("t1").unwrap(), TunnelId::new("t2").unwrap());
    let pick = |tunnel: &TunnelId, tag: &str, protocol: Protocol, flavour: Flavour| {
        desired_for(&doc.users, tunnel, tag, &protocol, flavour)
    };
    assert_eq!(
        emails(&pick(&t1, "vless-a", Protocol::Vless, Flavour::V2ray)),
        ["all-id@x"]
    );
    assert_eq!(
        emails(&pick(&t1, "vless-b", Protocol::Vless, Flavour::V2ray)),
        ["all-id@x", "b-id@x"]
    );
    assert_eq!(
        emails(&pick(&t1, "trojan", Protocol::Trojan, Flavour::V2ray)),
        ["t1-pw@x", "all-pw@x"]
    );
    assert_eq!(
        emails(&pick(&t2, "trojan", Protocol::Trojan, Flavour::V2ray)),
        ["all-pw@x"]
    );
    assert_eq!(
        emails(&pick(&t1, "ss", Protocol::Shadowsocks, Flavour::Xray)),
        ["t1-pw@x", "all-pw@x"]
    );
    assert_eq!(
        pick(&t1, "ss", Protocol::Shadowsocks, Flavour::V2ray),
        [],
        "single-user on V2Ray"
    );
    assert_eq!(
        pick(&t1, "socks", Protocol::parse("socks"), Flavour::Xray),
        []
    );

    let vless = pick(&t1, "vless-a", Protocol::Vless, Flavour::Xray);
    assert_eq!(vless[0].flow, "xtls-rprx-vision");
    let vmess = pick(&t1, "vmess", Protocol::Vmess, Flavour::Xray);
    assert_eq!(
        (emails(&vmess), vmess[0].flow.as_str()),
        (vec!["all-id@x"], ""),
        "flow is VLESS-only"
    );
}

#[test]
fn emails_with_control_characters_or_too_long_are_rejected_and_held() {
    let long = format!("{}@example.com", "a".repeat(300));
    let text = serde_json::json!({"users": [
        {"email": "alice@example.com\nINFO forged: user sync complete", "password": "p1"},
        {"email": "bob\u{202e}moc.elpmaxe@", "password": "p2"},
        {"email": long, "password": "p3"},
        {"email": "carol@example.com", "password": "p4"}
    ]})
    .to_string();
    let doc = parse_document(text.as_bytes()).unwrap();
    assert_eq!(
        emails(&doc.users.iter().map(|d| d.user.clone()).collect::<Vec<_>>()),
        ["carol@example.com"]
    );
    assert_eq!(doc.rejected.len(), 3);
    for r in &doc.rejected {
        // Reasons reach the logs: no raw control character, and a bounded length.
        assert!(!r.reason.chars().any(char::is_control), "{:?}", r.reason);
        assert!(r.reason.len() < 600, "{}", r.reason.len());
    }
    assert!(
        doc.rejected[0].reason.contains(r"\n"),
        "{}",
        doc.rejected[0].reason
    );
    assert!(
        doc.rejected[2].reason.contains("more than 254"),
        "{}",
        doc.rejected[2].reason
    );
    // Those users are left as they are, wherever they already exist.
    assert_eq!(doc.held_emails().len(), 3);
}

/// semantics §4, §5, §10: a flow Xray does not load, a password user's level above a byte, and
/// an email holding the error chain separator are refused with their reason; the rest stays.
#[test]
fn flows_levels_and_emails_the_core_cannot_take_are_rejected() {
    let doc = parse_document(
        br#"{"users": [
        {"email": "ok@x", "id": "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f", "flow": "xtls-rprx-vision", "level": 70000},
        {"email": "direct@x", "id": "1f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f", "flow": "xtls-rprx-direct"},
        {"email": "trojan@x", "password": "t", "level": 255},
        {"email": "high@x", "password": "h", "level": 256},
        {"email": "a > b@x", "password": "c"}
    ]}"#,
    )
    .unwrap();
    assert_eq!(
        emails(&doc.users.iter().map(|d| d.user.clone()).collect::<Vec<_>>()),
        ["ok@x", "trojan@x"]
    );
    let reasons: Vec<(usize, &str)> = doc
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, 1);
    assert!(
        reasons[0]
            .1
            .starts_with(r#"flow "xtls-rprx-direct" is not one Xray loads"#),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, 3);
    assert!(
        reasons[1].1.starts_with("level 256 is above 255"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2].0, 4);
    assert!(reasons[2].1.contains(r#"contains " > ""#), "{reasons:?}");
    // Rejected, and so held: left as they are wherever they already are.
    assert!(doc.held_emails().contains("high@x"));
}
