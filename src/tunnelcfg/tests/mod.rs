//! Tests of reading and persisting tunnel configs, on the fixtures in tests/fixtures/tunnelcfg.

mod parse;
mod persist;
mod replace;
mod xray_shapes;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::domain::{Credential, Flavour, User};
use crate::tunnelcfg::persist_clients;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tunnelcfg")
        .join(name)
}

fn id_user(email: &str, id: &str, flow: &str, level: u32) -> User {
    let credential = Credential::Id(id.into());
    User {
        email: email.into(),
        credential,
        flow: flow.into(),
        level,
    }
}

fn pw_user(email: &str, password: &str) -> User {
    let credential = Credential::Password(password.into());
    User {
        email: email.into(),
        credential,
        flow: String::new(),
        level: 0,
    }
}

/// A fresh directory under target/ for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch/tunnelcfg")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Copies a fixture into the directory.
    fn copy(&self, fixture_name: &str) -> PathBuf {
        let path = self.0.join(fixture_name);
        fs::copy(fixture(fixture_name), &path).unwrap();
        path
    }

    /// The names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Every object key path in document order (`/inbounds/1/settings/...`).
fn key_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{at}/{k}");
                    out.push(here.clone());
                    walk(child, &here, out);
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// The document with every `settings.clients` replaced by null (in place, keeping key order).
fn without_clients(mut v: Value) -> Value {
    for inbound in v["inbounds"].as_array_mut().into_iter().flatten() {
        if let Some(clients) = inbound.pointer_mut("/settings/clients") {
            *clients = Value::Null;
        }
    }
    v
}

const ALICE_ID: &str = "5f2b0c3e-8a1d-4c6b-9e7f-0a1b2c3d4e5f";
const NINA_ID: &str = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f";

pub(super) fn wanted(entries: &[(&str, Vec<User>)]) -> BTreeMap<String, Vec<User>> {
    entries
        .iter()
        .map(|(tag, users)| (tag.to_string(), users.clone()))
        .collect()
}

/// The v2ray fixture's change set: alice's level changes, bob goes, nina arrives; Erin is
/// renamed to lower case; the trojan inbound loses its only readable client.
fn change_set() -> BTreeMap<String, Vec<User>> {
    wanted(&[
        (
            "vless-in",
            vec![
                id_user("alice@example.com", ALICE_ID, "", 2),
                id_user("nina@example.com", NINA_ID, "xtls-rprx-vision", 0),
            ],
        ),
        (
            "vmess-in",
            vec![id_user(
                "erin@example.com",
                "9d6f4072-2e51-4a0f-b234-4e5f60718293",
                "",
                0,
            )],
        ),
        ("trojan-in", vec![]),
    ])
}

/// Asserts that `persist_clients` fails with an error containing `expected` and leaves the file
/// byte-identical, alone in its directory.
fn refused(
    dir: &Scratch,
    path: &Path,
    set: &BTreeMap<String, Vec<User>>,
    flavour: Flavour,
    expected: &str,
) {
    let bytes = fs::read(path).unwrap();
    let err = persist_clients(path, set, flavour).unwrap_err();
    assert!(err.to_string().contains(expected), "{err}");
    assert_eq!(fs::read(path).unwrap(), bytes);
    assert_eq!(dir.names().len(), 1, "{:?}", dir.names());
}
