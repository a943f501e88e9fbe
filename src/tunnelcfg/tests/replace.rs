//! The atomic replace under `persist_clients` and `write_atomic`: mode, owner, symlinks,
//! failures at every step, stale temp files.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};

use super::{Scratch, change_set, fixture, refused};
use crate::domain::Flavour;
use crate::tunnelcfg::atomic::{FAIL_AT, is_temp_name};
use crate::tunnelcfg::{TunnelConfigError, persist_clients, read, write_atomic};

/// A config the tunnel user owned (and could write) comes back root's, group kept, mode without
/// group or other write: the user can no longer edit what the warden checked.
#[test]
fn the_new_file_is_taken_back_from_its_user_keeps_its_group_and_symlinks_stay() {
    let dir = Scratch::new("owner");
    let path = dir.copy("v2ray-434.json");
    chown(&path, Some(65534), Some(65533)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
    let link = dir.0.join("current.json");
    symlink("v2ray-434.json", &link).unwrap();
    let ino = fs::metadata(&path).unwrap().ino();

    persist_clients(&link, &change_set(), Flavour::V2ray).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_ne!(meta.ino(), ino, "replaced by rename");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (rustix::process::geteuid().as_raw(), 65533, 0o640)
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        read(&link).unwrap().inbounds[1].clients,
        change_set()["vless-in"]
    );
}

/// The file a config name holds is read only if it is a regular file: a FIFO planted there (in
/// a directory someone else could once write) is refused at once instead of hanging the sync.
#[test]
fn a_fifo_at_the_config_name_is_refused_at_once() {
    let dir = Scratch::new("fifo");
    let path = dir.0.join("xray-f.json");
    crate::readfile::mkfifo(&path);
    let started = std::time::Instant::now();
    let persisted = persist_clients(&path, &change_set(), Flavour::V2ray);
    let read_back = read(&path);
    crate::readfile::release_fifo(&path);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let persisted = persisted.unwrap_err().to_string();
    assert!(persisted.contains("FIFO"), "{persisted}");
    let read_back = read_back.unwrap_err().to_string();
    assert!(read_back.contains("not a regular file"), "{read_back}");
}

#[test]
fn a_failure_at_any_step_leaves_the_old_file_and_no_temp_file() {
    let dir = Scratch::new("faults");
    let path = dir.copy("v2ray-434.json");
    let steps = [
        "create the temp file",
        "write the temp file",
        "set the owner",
        "set the mode",
        "fsync the temp file",
        "rename over the old file",
    ];
    for step in steps {
        FAIL_AT.set(Some(step));
        refused(
            &dir,
            &path,
            &change_set(),
            Flavour::V2ray,
            &format!(": {step}"),
        );
    }
    FAIL_AT.set(Some("fsync the directory"));
    let err = persist_clients(&path, &change_set(), Flavour::V2ray).unwrap_err();
    FAIL_AT.set(None);
    assert!(
        matches!(
            err,
            TunnelConfigError::Write {
                step: "fsync the directory",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        read(&path).unwrap().inbounds[1].clients,
        change_set()["vless-in"],
        "renamed before the fsync"
    );
}

#[test]
fn a_real_write_failure_leaves_the_old_file() {
    // Root ignores directory permissions, but not NAME_MAX: the temp name is longer than 255.
    let dir = Scratch::new("long-name");
    let path = dir.0.join(format!("{}.json", "x".repeat(240)));
    fs::copy(fixture("v2ray-434.json"), &path).unwrap();
    refused(
        &dir,
        &path,
        &change_set(),
        Flavour::V2ray,
        "create the temp file: File name too long",
    );

    let missing = dir.0.join("no-dir/xray-1.json");
    let err = persist_clients(&missing, &change_set(), Flavour::V2ray).unwrap_err();
    assert!(matches!(err, TunnelConfigError::Read { .. }), "{err}");
    assert!(!dir.0.join("no-dir").exists());
}

#[test]
fn stale_temp_files_of_this_file_are_removed_and_nothing_else() {
    let dir = Scratch::new("stale");
    let path = dir.copy("v2ray-434.json");
    for name in [
        ".v2ray-434.json.warden-4242-7.tmp",
        ".other.json.warden-1-1.tmp",
        "notes.txt",
    ] {
        fs::write(dir.0.join(name), "x").unwrap();
    }
    persist_clients(&path, &change_set(), Flavour::V2ray).unwrap();
    assert_eq!(
        dir.names(),
        [".other.json.warden-1-1.tmp", "notes.txt", "v2ray-434.json"]
    );
    assert!(is_temp_name(".a.json.warden-1-2.tmp", "a.json"));
    for (name, of) in [
        (".a.json.warden-1-2.tmp", "b.json"),
        ("a.json", "a.json"),
        (".a.json.warden-x-2.tmp", "a.json"),
        (".a.warden-5.warden-1-2.tmp", "a"), // the temp file of "a.warden-5", not of "a"
    ] {
        assert!(!is_temp_name(name, of), "{name} of {of}");
    }
}

#[test]
fn write_atomic_creates_new_files_private_and_keeps_an_old_files_mode() {
    let dir = Scratch::new("write-atomic");
    let path = dir.0.join("state.json");
    write_atomic(&path, b"one").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (fs::read(&path).unwrap(), meta.mode() & 0o7777),
        (b"one".to_vec(), 0o600)
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic(&path, b"two").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (fs::read(&path).unwrap(), meta.mode() & 0o7777),
        (b"two".to_vec(), 0o644)
    );
    let err = write_atomic(&dir.0.join("none/state.json"), b"x").unwrap_err();
    assert!(err.to_string().starts_with("resolve the path: "), "{err}");
    assert_eq!(dir.names(), ["state.json"]);
}
