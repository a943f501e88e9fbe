//! The desired-users document (`users.source`: a file or an https body), parsed and validated
//! entry by entry, then what one inbound gets of it and how those users land in a tunnel config.
//!
//! Beyond "no panic": every entry is either accepted or rejected, once; accepted users are
//! unique by email (case-insensitively) and carry canonical ids; and every user the document
//! accepts for an inbound is one the tunnel config can hold and read back unchanged.
#![no_main]

use std::collections::{BTreeMap, HashSet};

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use xray_warden::domain::{Credential, Flavour, Protocol, TunnelId, canonical_uuid};
use xray_warden::tunnelcfg::{self, fuzzing::merge_clients};
use xray_warden::users::{self, Document};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = users::parse_document(data) else {
        return;
    };
    let root: Value = serde_json::from_slice(data).expect("parse_document read it as JSON");
    let entries = root["users"]
        .as_array()
        .expect("a usable document has a users array");
    assert_eq!(doc.users.len() + doc.rejected.len(), entries.len());
    check_document(&doc);
    let tunnel = TunnelId::new("t1").unwrap();
    for (protocol, settings) in [
        ("vless", json!({})),
        ("vmess", json!({})),
        ("trojan", json!({})),
        ("shadowsocks", json!({"method": "aes-128-gcm"})),
    ] {
        for tag in ["in", "vless-in"] {
            let protocol = Protocol::parse(protocol);
            let wanted = users::desired_for(&doc.users, &tunnel, tag, &protocol, Flavour::Xray);
            round_trip(tag, &protocol, settings.clone(), wanted);
        }
    }
});

fn check_document(doc: &Document) {
    let mut emails = HashSet::new();
    for desired in &doc.users {
        let user = &desired.user;
        assert!(!user.email.is_empty() && user.email.trim() == user.email);
        assert!(
            emails.insert(user.email.to_lowercase()),
            "{:?} accepted twice",
            user.email
        );
        match &user.credential {
            Credential::Id(id) => assert_eq!(canonical_uuid(id).as_ref(), Some(id)),
            Credential::Password(pw) => assert!(!pw.is_empty()),
        }
    }
    let mut seen = HashSet::new();
    for rejection in &doc.rejected {
        assert!(
            seen.insert(rejection.index),
            "entry {} rejected twice",
            rejection.index
        );
        assert!(!rejection.reason.is_empty());
    }
}

/// Writes `wanted` into a config with one inbound, as the sync persists them, and reads the
/// config back: it must hold exactly those users.
fn round_trip(
    tag: &str,
    protocol: &Protocol,
    settings: Value,
    wanted: Vec<xray_warden::domain::User>,
) {
    let mut root = json!({"inbounds": [{"tag": tag, "protocol": protocol.as_str(), "port": 443,
                                        "settings": settings}]});
    let clients = BTreeMap::from([(tag.to_owned(), wanted.clone())]);
    if let Err(err) = merge_clients(&mut root, &clients, Flavour::Xray) {
        panic!("users the document accepts for a {protocol} inbound were refused: {err}");
    }
    let text = serde_json::to_string_pretty(&root).unwrap();
    let config = tunnelcfg::parse(&text).expect("a merged config reads back");
    let inbound = &config.inbounds[0];
    assert!(
        inbound.invalid_clients.is_empty(),
        "{:?}",
        inbound.invalid_clients
    );
    assert_eq!(inbound.clients, wanted);
}
