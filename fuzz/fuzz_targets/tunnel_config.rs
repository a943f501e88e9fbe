//! A tunnel's Xray/V2Ray config file, which the tunnel user owns: comments blanked (`//`,
//! `/* */`, `#` outside strings), then the inbounds, clients and API address read from it.
//!
//! Beyond "no panic": blanking keeps every byte offset and line (errors point into the real
//! file), touches nothing but comments and is idempotent; what is read has unique tags and
//! canonical ids; and the config reads the same after the warden pretty-prints it.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xray_warden::domain::{Credential, canonical_uuid};
use xray_warden::tunnelcfg::{self, TunnelConfig, fuzzing::blank_comments};

fuzz_target!(|text: &str| {
    let blanked = blank_comments(text);
    check_blanked(text, &blanked);
    let Ok(config) = tunnelcfg::parse(text) else {
        return;
    };
    check_config(&config);
    // persist_clients writes the document back pretty-printed; the next read must see the same.
    let value: Value = serde_json::from_str(&blanked).expect("parse read it");
    let rewritten = serde_json::to_string_pretty(&value).unwrap();
    assert_eq!(
        tunnelcfg::parse(&rewritten).expect("rewritten config reads"),
        config
    );
});

fn check_blanked(text: &str, blanked: &str) {
    assert_eq!(blanked.len(), text.len());
    for (before, after) in text.bytes().zip(blanked.bytes()) {
        assert!(
            before == after || after == b' ',
            "only comment bytes change, to spaces"
        );
        assert!(
            (before == b'\n') == (after == b'\n'),
            "lines stay where they were"
        );
    }
    assert_eq!(blank_comments(blanked), blanked, "blanking is idempotent");
}

fn check_config(config: &TunnelConfig) {
    let mut tags = HashSet::new();
    for inbound in &config.inbounds {
        assert!(!inbound.tag.is_empty());
        assert!(
            tags.insert(&inbound.tag),
            "tag {:?} read twice",
            inbound.tag
        );
        let mut emails = HashSet::new();
        for user in &inbound.clients {
            assert!(!user.email.is_empty());
            assert!(
                emails.insert(user.email.to_lowercase()),
                "{:?} read twice",
                user.email
            );
            match &user.credential {
                Credential::Id(id) => assert_eq!(canonical_uuid(id).as_ref(), Some(id)),
                Credential::Password(pw) => assert!(!pw.is_empty()),
            }
        }
    }
}
