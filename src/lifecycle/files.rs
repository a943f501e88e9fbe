//! A tunnel's files: where they live, writing them with their mode and owner, keeping the old
//! content to put back, and finding every tunnel's files. Everything here blocks.
//!
//! The config and log dirs must be owned by root and not writable by group or others: they are
//! created so when missing, and an existing one that is not is refused (never repaired: whoever
//! could write in it may have planted files already; the operator decides). Files are written
//! through [`crate::tunnelcfg::install`]: never through a symlink, owner and mode set on the open
//! file. Old files are read with `O_NOFOLLOW` and must be regular files.

use std::fs::{self, DirBuilder};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Gid, Mode, OFlags};

use crate::config::TunnelsConfig;
use crate::domain::TunnelId;
use crate::tunnelcfg::{Owner, install, open_safe_dir};

const CONFIG_DIR_MODE: u32 = 0o750;
const LOG_DIR_MODE: u32 = 0o750;
/// Root's, readable by the tunnel group: the tunnel reads its config and cannot change it.
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

/// Creates the config dir (root, group `gid`, 0750: the tunnel group may enter it, nobody else)
/// and the log dir (root, 0750) when they are missing. An existing dir must be owned by root
/// and not writable by group or others, else this fails and changes nothing; the config dir
/// then gets group `gid` and mode 0750.
pub fn prepare_dirs(tunnels: &TunnelsConfig, gid: u32) -> io::Result<()> {
    let config_dir = safe_dir(&tunnels.config_dir, CONFIG_DIR_MODE)?;
    safe_dir(&tunnels.log_dir, LOG_DIR_MODE)?;
    rustix::fs::fchown(&config_dir, None, Some(Gid::from_raw(gid)))?;
    rustix::fs::fchmod(&config_dir, Mode::from_raw_mode(CONFIG_DIR_MODE))?;
    Ok(())
}

/// Opens `dir` after checking it ([`open_safe_dir`]), creating it (and its parents) first when
/// it is missing; a new leaf gets `mode`.
fn safe_dir(dir: &Path, mode: u32) -> io::Result<std::os::fd::OwnedFd> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)?;
            }
            match DirBuilder::new().mode(mode).create(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    open_safe_dir(dir)
}

/// A hidden file in the config dir for the core's config test, root's and readable by the
/// tunnel group (like the config it stands for), removed on drop. Its name ends in `.json` and
/// does not match `xray-*.json`.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Writes the scratch file; call [`prepare_dirs`] first.
    pub fn write(config_dir: &Path, id: &TunnelId, bytes: &[u8], gid: u32) -> io::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(".xray-{id}.test-{}-{n}.json", std::process::id());
        let path = config_dir.join(name);
        install(&path, bytes, config_owner(gid))?;
        Ok(Self(path))
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

fn config_owner(gid: u32) -> Owner {
    Owner {
        uid: 0,
        gid,
        mode: CONFIG_MODE,
    }
}

/// Writes a tunnel config atomically, owned by root and group `gid`, mode 0640. A symlink or
/// other non-regular file at `path` is refused, not written through. A config the tunnel user
/// owned before becomes root's here.
pub fn install_config(path: &Path, bytes: &[u8], gid: u32) -> io::Result<()> {
    install(path, bytes, config_owner(gid))
}

/// Writes a unit file atomically, root's, mode 0644; a symlink at `path` is refused.
pub fn install_unit(path: &Path, text: &str) -> io::Result<()> {
    let owner = Owner {
        uid: 0,
        gid: 0,
        mode: UNIT_MODE,
    };
    install(path, text.as_bytes(), owner)
}

/// A file as it was before a change: its content, mode and owner, or its absence.
#[derive(Debug)]
pub struct Saved {
    path: PathBuf,
    old: Option<(Vec<u8>, Owner)>,
}

impl Saved {
    /// Reads the file without following a symlink; anything but a regular file is an error.
    pub fn take(path: &Path) -> io::Result<Self> {
        let old = match open_regular(path) {
            Ok(mut file) => {
                let stat = rustix::fs::fstat(&file)?;
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                let owner = Owner {
                    uid: stat.st_uid,
                    gid: stat.st_gid,
                    mode: stat.st_mode & 0o7777,
                };
                Some((bytes, owner))
            }
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
        let Some((bytes, owner)) = &self.old else {
            return remove(&self.path).map(drop);
        };
        install(&self.path, bytes, *owner)
    }
}

/// Opens `path` for reading without following a symlink and without blocking on a FIFO, and
/// checks (fstat on the open file) that it is a regular file. A symlink answers
/// [`io::ErrorKind::InvalidInput`], like any other file that is not regular.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(not_regular(path, "a symlink")),
        Err(e) => return Err(e.into()),
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    match kind {
        FileType::RegularFile => Ok(fs::File::from(fd)),
        FileType::Fifo => Err(not_regular(path, "a FIFO")),
        FileType::Directory => Err(not_regular(path, "a directory")),
        _ => Err(not_regular(path, "not a regular file")),
    }
}

fn not_regular(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}: refusing to use it", path.display()),
    )
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn owner_mode(path: &Path) -> (u32, u32, u32) {
        let meta = fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    }

    #[test]
    fn dirs_are_created_root_owned_and_closed() {
        let root = scratch("files-dirs");
        let mut tunnels = crate::config::Config::default().tunnels;
        tunnels.config_dir = root.join("etc/tunnels");
        tunnels.log_dir = root.join("log/tunnels");
        prepare_dirs(&tunnels, 65534).unwrap();
        assert_eq!(owner_mode(&tunnels.config_dir), (0, 65534, 0o750));
        assert_eq!(owner_mode(&tunnels.log_dir), (0, 0, 0o750));
        // A root-owned dir keeps being fixed up; idempotent.
        prepare_dirs(&tunnels, 65534).unwrap();
    }

    #[test]
    fn a_dir_the_tunnel_user_owns_or_others_can_write_is_refused() {
        let root = scratch("files-unsafe-dirs");
        let mut tunnels = crate::config::Config::default().tunnels;
        tunnels.config_dir = root.join("etc");
        tunnels.log_dir = root.join("log");
        fs::create_dir_all(&tunnels.config_dir).unwrap();
        chown(&tunnels.config_dir, Some(65534), Some(65534)).unwrap();
        let err = prepare_dirs(&tunnels, 65534).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert_eq!(owner_mode(&tunnels.config_dir).0, 65534, "not repaired");
        assert!(!tunnels.log_dir.exists(), "nothing else done");

        chown(&tunnels.config_dir, Some(0), Some(0)).unwrap();
        fs::set_permissions(&tunnels.config_dir, fs::Permissions::from_mode(0o770)).unwrap();
        let err = prepare_dirs(&tunnels, 65534).unwrap_err();
        assert!(err.to_string().contains("writable by group"), "{err}");
        let path = tunnels.config_dir.join("xray-a.json");
        assert!(install_config(&path, b"{}", 65534).is_err());
        assert!(!path.exists());
    }

    /// A planted `xray-a.json -> <unit of b>`: not written through, not chowned, refused.
    #[test]
    fn a_planted_symlink_is_neither_written_through_nor_chowned() {
        let root = scratch("files-symlink");
        let victim = root.join("xray-tunnel-b.service");
        fs::write(&victim, "[Service]\nExecStart=/bin/true\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        let config = root.join("xray-a.json");
        symlink(&victim, &config).unwrap();

        let err = install_config(&config, b"{\"pwned\": 1}", 65534).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            "[Service]\nExecStart=/bin/true\n"
        );
        assert_eq!(owner_mode(&victim), (0, 0, 0o644));
        assert!(fs::symlink_metadata(&config).unwrap().is_symlink());
        let err = Saved::take(&config).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert!(install_unit(&config, "x").is_err());
    }

    #[test]
    fn configs_become_root_owned_and_group_readable() {
        let root = scratch("files-owner");
        let config = root.join("xray-a.json");
        fs::write(&config, "{}").unwrap();
        chown(&config, Some(65534), Some(65534)).unwrap();
        install_config(&config, b"{\"a\": 1}", 65534).unwrap();
        assert_eq!(owner_mode(&config), (0, 65534, 0o640));
        let saved = Saved::take(&config).unwrap();
        install_config(&config, b"{}", 65534).unwrap();
        saved.restore().unwrap();
        assert_eq!(fs::read(&config).unwrap(), b"{\"a\": 1}");
        assert_eq!(owner_mode(&config), (0, 65534, 0o640));
        let scratch = Scratch::write(&root, &TunnelId::new("a").unwrap(), b"{}", 65534).unwrap();
        assert_eq!(owner_mode(scratch.path()), (0, 65534, 0o640));
    }

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
