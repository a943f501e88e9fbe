//! Persisting clients: what changes in the file and what must not.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::Value;

use super::{
    ALICE_ID, NINA_ID, Scratch, change_set, id_user, json, key_paths, pw_user, refused, wanted,
    without_clients,
};
use crate::domain::Flavour;
use crate::tunnelcfg::{persist_clients, read};

#[test]
fn persist_changes_only_the_clients_and_keeps_key_order() {
    let dir = Scratch::new("round-trip");
    let path = dir.copy("v2ray-434.json");
    let before = json(&path);
    let old_config = read(&path).unwrap();
    persist_clients(&path, &change_set(), Flavour::V2ray).unwrap();

    let after = json(&path);
    assert_eq!(
        without_clients(after.clone()),
        without_clients(before.clone())
    );
    assert_eq!(
        key_paths(&without_clients(after.clone())),
        key_paths(&without_clients(before.clone()))
    );

    let config = read(&path).unwrap();
    let vless = &config.inbounds[1];
    assert_eq!(vless.clients, change_set()["vless-in"]);
    assert_eq!(
        vless.invalid_clients.len(),
        old_config.inbounds[1].invalid_clients.len()
    );
    let clients = |doc: &Value, n: usize| {
        doc["inbounds"][n]["settings"]["clients"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(
        clients(&after, 1)[1..3],
        clients(&before, 1)[2..4],
        "unreadable clients stay, in order, as they were"
    );
    let alice = &after["inbounds"][1]["settings"]["clients"][0];
    let alice_keys: Vec<&String> = alice.as_object().unwrap().keys().collect();
    assert_eq!(
        alice_keys,
        ["id", "email", "level", "comment"],
        "existing object, keys in place"
    );
    assert_eq!(alice["comment"], "Zürich — 東京 🚀");
    assert_eq!(
        alice["id"], "5F2B0C3E-8A1D-4C6B-9E7F-0A1B2C3D4E5F",
        "same id in another case: untouched"
    );
    let nina = &after["inbounds"][1]["settings"]["clients"][3];
    let nina_keys: Vec<&String> = nina.as_object().unwrap().keys().collect();
    assert_eq!(nina_keys, ["email", "id", "flow"], "a new client, appended");

    let erin = &after["inbounds"][2]["settings"]["clients"][0];
    assert_eq!(
        (erin["email"].as_str(), erin["alterId"].as_u64()),
        (Some("erin@example.com"), Some(64))
    );
    assert_eq!(config.inbounds[3].clients, []);
    assert_eq!(clients(&after, 3)[..], clients(&before, 3)[1..]);
    assert_eq!(
        clients(&after, 6),
        clients(&before, 6),
        "an inbound not named is untouched"
    );

    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\"port\": 443,") && text.contains("\"port\": \"8443\","),
        "numbers stay numbers"
    );
    assert!(text.contains("東京 🚀") && text.ends_with("}\n"));
    assert_eq!(dir.names(), ["v2ray-434.json"], "no temp file left");
}

#[test]
fn persisting_the_same_users_does_not_rewrite_the_file() {
    let dir = Scratch::new("unchanged");
    let path = dir.copy("v2ray-434.json");
    let (bytes, ino) = (fs::read(&path).unwrap(), fs::metadata(&path).unwrap().ino());
    let current = read(&path).unwrap();
    let same: BTreeMap<_, _> = current
        .inbounds
        .iter()
        .map(|ib| (ib.tag.clone(), ib.clients.clone()))
        .collect();
    persist_clients(&path, &same, Flavour::V2ray).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the fixture is not pretty-printed: a rewrite would show"
    );
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
}

#[test]
fn users_the_file_cannot_hold_are_refused_before_writing() {
    let dir = Scratch::new("refused");
    let path = dir.copy("v2ray-434.json");
    let alice = id_user("alice@example.com", ALICE_ID, "", 0);
    let frank = pw_user("frank@example.com", "pw");
    let cases = [
        (
            wanted(&[("nope", vec![])]),
            Flavour::V2ray,
            "inbound \"nope\": no inbound has this tag",
        ),
        (
            wanted(&[("ss-in", vec![frank.clone()])]),
            Flavour::V2ray,
            "V2Ray's shadowsocks inbound is single-user",
        ),
        (
            wanted(&[("socks-in", vec![frank.clone()])]),
            Flavour::Xray,
            "this protocol has no users",
        ),
        (
            wanted(&[("vless-in", vec![frank])]),
            Flavour::V2ray,
            "has a password, which a vless inbound does not take",
        ),
        (
            wanted(&[("vless-in", vec![alice.clone(), alice])]),
            Flavour::V2ray,
            "is given twice",
        ),
        (
            wanted(&[(
                "vless-in",
                vec![id_user("carol@example.com", NINA_ID, "", 0)],
            )]),
            Flavour::V2ray,
            "a client with that email which the warden cannot read (id \"hello\" is not a UUID)",
        ),
    ];
    for (set, flavour, expected) in cases {
        refused(&dir, &path, &set, flavour, expected);
    }
    // No users for an inbound that cannot have any is not a change.
    persist_clients(
        &path,
        &wanted(&[("socks-in", vec![]), ("ss-in", vec![])]),
        Flavour::V2ray,
    )
    .unwrap();
}

#[test]
fn a_file_with_comments_is_read_but_not_rewritten() {
    let dir = Scratch::new("comments");
    let path = dir.copy("with-comments.json");
    let current = read(&path).unwrap().inbounds[1].clients.clone();
    persist_clients(&path, &wanted(&[("vless-in", current)]), Flavour::Xray).unwrap();
    let set = wanted(&[("vless-in", vec![])]);
    refused(
        &dir,
        &path,
        &set,
        Flavour::Xray,
        "the file has comments, which a rewrite would lose",
    );
}

#[test]
fn shadowsocks_clients_get_the_cipher_their_inbound_needs() {
    let dir = Scratch::new("ss");
    let path = dir.copy("xray-api-listen.json");
    let nora = pw_user("nora@example.com", "nora-pw");
    let set = wanted(&[
        ("ss-aead", vec![nora.clone()]),
        ("ss-2022", vec![nora.clone()]),
        (
            "vmess-nosettings",
            vec![id_user("oscar@example.com", NINA_ID, "", 3)],
        ),
    ]);
    persist_clients(&path, &set, Flavour::Xray).unwrap();
    let after = json(&path);
    let aead = after["inbounds"][1]["settings"]["clients"]
        .as_array()
        .unwrap();
    assert_eq!(aead.len(), 3, "the two unreadable kate clients stay");
    assert_eq!(
        aead[2],
        serde_json::json!({"email": "nora@example.com", "password": "nora-pw", "method": "chacha20-ietf-poly1305"})
    );
    let ss2022 = &after["inbounds"][2]["settings"]["clients"];
    assert_eq!(
        ss2022,
        &serde_json::json!([{"email": "nora@example.com", "password": "nora-pw"}])
    );
    let vmess = &after["inbounds"][4]["settings"];
    assert_eq!(
        vmess,
        &serde_json::json!({"clients": [{"email": "oscar@example.com", "id": NINA_ID, "level": 3}]})
    );

    let bare = dir.0.join("bare.json");
    fs::write(
        &bare,
        r#"{"inbounds": [{"tag": "ss", "protocol": "shadowsocks", "settings": {"clients": []}}]}"#,
    )
    .unwrap();
    let err = persist_clients(&bare, &wanted(&[("ss", vec![nora])]), Flavour::Xray).unwrap_err();
    assert!(
        err.to_string().contains("cannot tell which cipher"),
        "{err}"
    );
}
