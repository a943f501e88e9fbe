use std::path::Path;
use std::time::Duration;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/unit-scratch/usersync-configs")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn target(dir: &Path, id: &str) -> Target {
    let id = TunnelId::new(id).unwrap();
    Target {
        config_path: dir.join(id.config_file_name()),
        id,
        core_start_usec: 1,
    }
}

/// A config with one VLESS inbound holding `emails`, and an API on `api` when given.
fn config(api: Option<u16>, emails: &[&str]) -> String {
    let clients: Vec<String> = (emails.iter().enumerate())
        .map(|(n, e)| format!(r#"{{"id": "00000000-0000-4000-8000-{n:012}", "email": "{e}"}}"#))
        .collect();
    let api = api.map_or(String::new(), |port| {
        format!(r#""api": {{"tag": "api", "listen": "127.0.0.1:{port}", "services": ["StatsService"]}},"#)
    });
    format!(
        r#"{{{api} "inbounds": [{{"tag": "in", "protocol": "vless", "port": 1,
            "settings": {{"decryption": "none", "clients": [{}]}}}}]}}"#,
        clients.join(",")
    )
}

/// Replaces the file as an atomic writer does (another inode).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn api_of(cache: &ConfigCache, t: &Target) -> Option<SocketAddr> {
    cache.with_api(&t.id).and_then(|f| f.api)
}

#[test]
fn an_unchanged_config_is_not_read_again_and_a_changed_one_is() {
    let dir = scratch("changed");
    let t = target(&dir, "a");
    std::fs::write(&t.config_path, config(None, &["Alice@x"])).unwrap();
    let rt = runtime();
    let mut cache = ConfigCache::new(true);
    for _ in 0..3 {
        rt.block_on(cache.refresh(vec![t.clone()].into()));
    }
    assert_eq!(cache.parses(), 1, "read once while unchanged");
    assert_eq!(api_of(&cache, &t), None, "no API: nothing for traffic");

    // An API added: seen on the next tick.
    replace(&t.config_path, &config(Some(10085), &["Alice@x"]));
    rt.block_on(cache.refresh(vec![t.clone()].into()));
    assert_eq!(cache.parses(), 2);
    assert_eq!(api_of(&cache, &t), Some("127.0.0.1:10085".parse().unwrap()));
    let emails = &cache.with_api(&t.id).unwrap().emails;
    assert_eq!(**emails, HashSet::from(["alice@x".to_owned()]));

    // Users changed by an in-place write (same inode): mtime and size move.
    std::thread::sleep(Duration::from_millis(5));
    std::fs::write(&t.config_path, config(Some(10085), &["alice@x", "bob@x"])).unwrap();
    rt.block_on(cache.refresh(vec![t.clone()].into()));
    assert_eq!(cache.parses(), 3);
    assert_eq!(cache.with_api(&t.id).unwrap().emails.len(), 2);
    rt.block_on(cache.refresh(vec![t.clone()].into()));
    assert_eq!(cache.parses(), 3, "unchanged again");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_or_broken_config_has_no_api_and_is_not_read_every_tick() {
    let dir = scratch("missing");
    let (missing, broken) = (target(&dir, "gone"), target(&dir, "bad"));
    std::fs::write(&broken.config_path, "{ not json").unwrap();
    let rt = runtime();
    let mut cache = ConfigCache::new(false);
    for _ in 0..3 {
        rt.block_on(cache.refresh(vec![missing.clone(), broken.clone()].into()));
    }
    assert_eq!(cache.parses(), 1, "only the broken one, once");
    assert_eq!(api_of(&cache, &missing), None);
    assert_eq!(api_of(&cache, &broken), None);

    // The missing config appears: read on the next tick.
    std::fs::write(&missing.config_path, config(Some(10086), &["a@x"])).unwrap();
    rt.block_on(cache.refresh(vec![missing.clone(), broken.clone()].into()));
    assert_eq!(
        api_of(&cache, &missing),
        Some("127.0.0.1:10086".parse().unwrap())
    );
    let facts = cache.with_api(&missing.id).unwrap();
    assert!(facts.emails.is_empty(), "emails are only kept when asked");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tunnels_no_longer_running_are_forgotten_and_a_new_path_is_read() {
    let dir = scratch("forget");
    let t = target(&dir, "a");
    std::fs::write(&t.config_path, config(Some(10087), &[])).unwrap();
    let rt = runtime();
    let mut cache = ConfigCache::new(false);
    rt.block_on(cache.refresh(vec![t.clone()].into()));
    assert!(cache.with_api(&t.id).is_some());
    rt.block_on(cache.refresh(Vec::new().into()));
    assert!(cache.with_api(&t.id).is_none(), "forgotten");

    // The same tunnel now runs another file with the same stamp's worth of content.
    let other = dir.join("other.json");
    std::fs::write(&other, config(Some(10088), &[])).unwrap();
    let moved = Target {
        config_path: other,
        ..t.clone()
    };
    rt.block_on(cache.refresh(vec![t.clone()].into()));
    rt.block_on(cache.refresh(vec![moved.clone()].into()));
    assert_eq!(
        api_of(&cache, &moved),
        Some("127.0.0.1:10088".parse().unwrap())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
