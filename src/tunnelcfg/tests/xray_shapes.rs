//! Config shapes Xray reads that V2Ray does not (semantics §3, §6, §7): the `settings.users`
//! alias, the VLESS inbound-level flow, protocol names in any case; and the flows and levels a
//! written config must never hold (semantics §4, §5).

use std::fs;

use serde_json::json;

use super::{ALICE_ID, NINA_ID, Scratch, id_user, pw_user, refused, wanted};
use crate::domain::{Flavour, Protocol};
use crate::tunnelcfg::{parse, persist_clients, read};

const VISION: &str = "xtls-rprx-vision";

#[test]
fn users_is_read_as_an_alias_of_clients_and_clients_wins() {
    let config = parse(&format!(
        r#"{{"inbounds": [
        {{"tag": "a", "protocol": "trojan", "settings": {{"users": [{{"email": "t@x", "password": "p"}}]}}}},
        {{"tag": "b", "protocol": "vless", "settings": {{
            "clients": [{{"email": "c@x", "id": "{ALICE_ID}"}}],
            "users": [{{"email": "u@x", "id": "{NINA_ID}"}}]}}}},
        {{"tag": "c", "protocol": "vmess", "settings": {{"clients": null, "users": [{{"email": "v@x", "id": "{NINA_ID}"}}]}}}}
    ]}}"#
    ))
    .unwrap();
    assert_eq!(config.inbounds[0].clients, vec![pw_user("t@x", "p")]);
    assert_eq!(
        config.inbounds[1].clients,
        vec![id_user("c@x", ALICE_ID, "", 0)]
    );
    assert_eq!(
        config.inbounds[2].clients,
        vec![id_user("v@x", NINA_ID, "", 0)]
    );
}

#[test]
fn a_write_goes_back_to_the_users_array_it_read() {
    let dir = Scratch::new("users-alias");
    let path = dir.0.join("xray-alias.json");
    let doc = json!({"inbounds": [
        {"tag": "tr", "protocol": "trojan", "settings": {"users": [{"email": "t@x", "password": "p"}]}},
        {"tag": "vl", "protocol": "vless", "settings": {"decryption": "none"}}]});
    fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let set = wanted(&[
        ("tr", vec![pw_user("t@x", "p"), pw_user("n@x", "q")]),
        ("vl", vec![id_user("a@x", ALICE_ID, "", 0)]),
    ]);
    persist_clients(&path, &set, Flavour::Xray).unwrap();
    let after: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let trojan = after["inbounds"][0]["settings"].as_object().unwrap();
    assert!(
        !trojan.contains_key("clients"),
        "no shadowing clients: {trojan:?}"
    );
    assert_eq!(trojan["users"].as_array().unwrap().len(), 2);
    // Neither key: the canonical `clients`.
    assert!(after["inbounds"][1]["settings"]["clients"].is_array());
    let read_back = read(&path).unwrap();
    assert_eq!(read_back.inbounds[0].clients, set["tr"]);
}

#[test]
fn vless_clients_without_a_flow_have_the_inbound_flow() {
    let text = format!(
        r#"{{"inbounds": [{{"tag": "vl", "protocol": "vless", "settings": {{"flow": "{VISION}", "clients": [
        {{"email": "a@x", "id": "{ALICE_ID}"}},
        {{"email": "b@x", "id": "{NINA_ID}", "flow": ""}}]}}}}]}}"#
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.inbounds[0].default_flow, VISION);
    assert!(config.inbounds[0].clients.iter().all(|u| u.flow == VISION));
    // The same users written back leave the file alone: no flow is spelled out.
    let dir = Scratch::new("inbound-flow");
    let path = dir.0.join("xray-flow.json");
    fs::write(&path, &text).unwrap();
    let set = wanted(&[("vl", config.inbounds[0].clients.clone())]);
    persist_clients(&path, &set, Flavour::Xray).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    // A new user with the inbound's flow gets no flow key of its own.
    let mut users = config.inbounds[0].clients.clone();
    users.push(id_user(
        "c@x",
        "1f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f",
        VISION,
        0,
    ));
    persist_clients(&path, &wanted(&[("vl", users.clone())]), Flavour::Xray).unwrap();
    let after: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert!(
        after["inbounds"][0]["settings"]["clients"][2]
            .get("flow")
            .is_none()
    );
    assert_eq!(read(&path).unwrap().inbounds[0].clients, users);
    // A flow Xray refuses at inbound level: no core runs that file (V2Ray ignores the key).
    let odd = r#"{"inbounds": [{"tag": "vl", "protocol": "vless", "settings": {"flow": "xtls-rprx-direct"}}]}"#;
    assert_eq!(parse(odd).unwrap().inbounds[0].default_flow, "");
}

#[test]
fn protocol_names_in_any_case_are_read() {
    let config = parse(&format!(
        r#"{{"api": {{"tag": "api"}},
        "routing": {{"rules": [{{"inboundTag": ["api"], "outboundTag": "api"}}]}},
        "inbounds": [
        {{"tag": "api", "listen": "127.0.0.1", "port": 10085, "protocol": "Dokodemo-Door"}},
        {{"tag": "vl", "protocol": "VLESS", "settings": {{"clients": [{{"email": "a@x", "id": "{ALICE_ID}"}}]}}}}
    ]}}"#
    ))
    .unwrap();
    assert_eq!(config.api.map(|a| a.port()), Some(10085));
    assert_eq!(config.inbounds[1].protocol, Protocol::Vless);
    assert_eq!(config.inbounds[1].clients.len(), 1);
}

#[test]
fn flows_and_levels_the_loader_refuses_are_never_written() {
    let dir = Scratch::new("login-limits");
    let path = dir.0.join("xray-limits.json");
    let doc = json!({"inbounds": [
        {"tag": "vl", "protocol": "vless", "settings": {"clients": []}},
        {"tag": "tr", "protocol": "trojan", "settings": {"clients": []}}]});
    fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let direct = wanted(&[("vl", vec![id_user("a@x", ALICE_ID, "xtls-rprx-direct", 0)])]);
    refused(
        &dir,
        &path,
        &direct,
        Flavour::Xray,
        "flow \"xtls-rprx-direct\"",
    );
    let mut high = pw_user("t@x", "p");
    high.level = 256;
    refused(
        &dir,
        &path,
        &wanted(&[("tr", vec![high])]),
        Flavour::Xray,
        "level 256",
    );
    let mut fine = pw_user("t@x", "p");
    fine.level = 255;
    persist_clients(&path, &wanted(&[("tr", vec![fine])]), Flavour::Xray).unwrap();
}
