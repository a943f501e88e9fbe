//! A tunnel's files: where they live, writing them with their mode and owner, keeping the old
//! content to put back, and finding every tunnel's files. Everything here blocks.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::TunnelsConfig;
use crate::domain::TunnelId;
use crate::tunnelcfg::write_atomic;

const CONFIG_DIR_MODE: u32 = 0o750;
const CONFIG_MODE: u32 = 0o640;
const UNIT_MODE: u32 = 0o644;

/// Where one tunnel's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `{unit_dir}/xray-tunnel-{id}.service`.
    pub unit: PathBuf,
    /// `{config_dir}/xray-{id}.json`.
    pub config: PathBuf,
    /// `{log_dir}/xray-{id}.log`.
    pub log: PathBuf,
}

impl Paths {
    /// The paths of tunnel `id` under `tunnels`' dirs.
    pub fn of(tunnels: &TunnelsConfig, id: &TunnelId) -> Self {
        Self {
            unit: tunnels.unit_dir.join(id.unit_name()),
            config: tunnels.config_dir.join(id.config_file_name()),
            log: tunnels.log_dir.join(id.log_file_name()),
        }
    }
}

/// Gives the config dir mode 0750 and group `gid` (the tunnel group may enter it, nobody else)
/// and creates the dirs if they are missing.
pub fn prepare_dirs(tunnels: &TunnelsConfig, gid: u32) -> io::Result<()> {
    let dir = &tunnels.config_dir;
    fs::create_dir_all(dir)?;
    chown(dir, None, Some(gid))?;
    fs::set_permissions(dir, Permissions::from_mode(CONFIG_DIR_MODE))?;
    fs::create_dir_all(&tunnels.log_dir)
}

/// A hidden file in the config dir (created if missing) for the core's config test, removed on
/// drop. Its name ends in `.json` and does not match `xray-*.json`.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn write(config_dir: &Path, id: &TunnelId, bytes: &[u8]) -> io::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(".xray-{id}.test-{}-{n}.json", std::process::id());
        fs::create_dir_all(config_dir)?;
        let scratch = Self(config_dir.join(name));
        write_atomic(&scratch.0, bytes)?;
        Ok(scratch)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Writes a tunnel config atomically, then makes it mode 0640, owned by `uid`:`gid`.
pub fn install_config(path: &Path, bytes: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    write_atomic(path, bytes)?;
    // Owner before mode: chown clears set-id bits.
    chown(path, Some(uid), Some(gid))?;
    fs::set_permissions(path, Permissions::from_mode(CONFIG_MODE))
}

/// Writes a unit file atomically, mode 0644.
pub fn install_unit(path: &Path, text: &str) -> io::Result<()> {
    write_atomic(path, text.as_bytes())?;
    fs::set_permissions(path, Permissions::from_mode(UNIT_MODE))
}

/// A file as it was before a change: its content, mode and owner, or its absence.
#[derive(Debug)]
pub struct Saved {
    path: PathBuf,
    old: Option<(Vec<u8>, fs::Metadata)>,
}

impl Saved {
    pub fn take(path: &Path) -> io::Result<Self> {
        let old = match fs::read(path) {
            Ok(bytes) => Some((bytes, fs::metadata(path)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let path = path.to_owned();
        Ok(Self { path, old })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn existed(&self) -> bool {
        self.old.is_some()
    }

    /// Puts the old file back (content, mode, owner), or removes the file if there was none.
    pub fn restore(&self) -> io::Result<()> {
        let Some((bytes, meta)) = &self.old else {
            return remove(&self.path).map(drop);
        };
        write_atomic(&self.path, bytes)?;
        chown(&self.path, Some(meta.uid()), Some(meta.gid()))?;
        fs::set_permissions(&self.path, Permissions::from_mode(meta.mode() & 0o7777))
    }
}

/// Removes a file; `Ok(false)` when it was not there.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Ids of the `xray-tunnel-{id}.service` files in the unit dir and of the `xray-{id}.json` files
/// in the config dir, sorted, without duplicates. Names with invalid ids are ignored.
pub fn all_tunnels(tunnels: &TunnelsConfig) -> io::Result<Vec<TunnelId>> {
    let mut ids = ids_in(&tunnels.unit_dir, |name| {
        TunnelId::from_unit_name(name).ok()
    })?;
    ids.extend(ids_in(
        &tunnels.config_dir,
        TunnelId::from_config_file_name,
    )?);
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn ids_in(dir: &Path, parse: impl Fn(&str) -> Option<TunnelId>) -> io::Result<Vec<TunnelId>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        ids.extend(name.to_str().and_then(&parse));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tunnels_by_file_name_only() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/lifecycle-ids");
        let _ = fs::remove_dir_all(&dir);
        let (units, configs) = (dir.join("units"), dir.join("configs"));
        fs::create_dir_all(&units).unwrap();
        fs::create_dir_all(&configs).unwrap();
        for name in [
            "xray-tunnel-a.service",
            "xray-tunnel-b.service",
            "xray-tunnel-.service",
        ] {
            fs::write(units.join(name), "").unwrap();
        }
        for name in [
            "xray-tunnel-x.socket",
            "other.service",
            "xray-tunnel-a.b.service",
        ] {
            fs::write(units.join(name), "").unwrap();
        }
        for name in [
            "xray-b.json",
            "xray-c.json",
            ".xray-d.test-1-0.json",
            "xray-e.toml",
        ] {
            fs::write(configs.join(name), "").unwrap();
        }
        let mut tunnels = crate::config::Config::default().tunnels;
        tunnels.unit_dir = units;
        tunnels.config_dir = configs;
        let ids: Vec<String> = all_tunnels(&tunnels)
            .unwrap()
            .iter()
            .map(|id| id.to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        tunnels.config_dir = dir.join("missing");
        assert_eq!(all_tunnels(&tunnels).unwrap().len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
