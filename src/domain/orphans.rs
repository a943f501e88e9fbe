//! The orphan rules: given the facts of one moment, which units, config files and processes
//! are orphans; and since when the warden has seen each one.
//!
//! Every rule errs towards "not an orphan", since orphans may be cleaned up: a unit is without
//! its config only when the config's path is known ([`ConfigRef::Known`]) and the file is
//! missing; a core process is a stray only when it runs a config inside the config dir and is in
//! no systemd unit at all; a config file is without unit only while no unit and no running core
//! names it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ActiveState, ConfigRef, Orphan, OrphanKind, ProcessKey, TunnelId};

/// One tunnel unit as the orphan rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitFacts {
    pub id: TunnelId,
    /// The config its ExecStart runs ([`ConfigRef::parse`]).
    pub config: ConfigRef,
    /// Whether the known config file exists; not consulted for an unknown config. A stat that
    /// fails otherwise than "not found" proves nothing and counts as existing.
    pub config_exists: bool,
    pub active_state: ActiveState,
    /// `StateChangeTimestamp`, µs since the epoch; 0 when systemd has none.
    pub state_change_usec: u64,
}

/// A `xray-{id}.json` found in the config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub id: TunnelId,
    pub path: PathBuf,
}

/// A running core process (comm `xray`/`v2ray`, or exe `tunnels.core_binary`), not a zombie
/// and not one of the warden's own config tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreProcess {
    pub key: ProcessKey,
    pub comm: String,
    /// Its command line, program first.
    pub argv: Vec<String>,
    /// Whether its cgroup lies in any systemd unit ([`in_systemd_unit`]); true when the cgroup
    /// could not be read, since that proves nothing.
    pub in_unit: bool,
}

/// Everything the rules look at.
#[derive(Debug, Clone)]
pub struct Facts {
    pub now: SystemTime,
    pub units: Vec<UnitFacts>,
    pub config_files: Vec<ConfigFile>,
    /// The inventory's ids; `None` when there is none or it could not be read, which reports
    /// no inventory orphans at all.
    pub inventory: Option<HashSet<String>>,
    pub cores: Vec<CoreProcess>,
    /// `tunnels.config_dir`.
    pub config_dir: PathBuf,
    pub failed_threshold: Duration,
}

/// What identifies one orphan across passes: a recycled PID is a new process, hence a new
/// orphan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrphanKey {
    Tunnel(OrphanKind, TunnelId),
    /// A stray core process and the tunnel whose config it runs.
    Stray(TunnelId, ProcessKey),
}

/// An orphan found in one pass, before it gets its `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: OrphanKey,
    pub detail: String,
}

/// Applies every rule to `facts`.
pub fn find(facts: &Facts) -> Vec<Found> {
    let mut found = Vec::new();
    let tunnel = |kind, id: &TunnelId, detail| Found {
        key: OrphanKey::Tunnel(kind, id.clone()),
        detail,
    };
    for u in &facts.units {
        if let ConfigRef::Known(path) = &u.config
            && !u.config_exists
        {
            let detail = format!("config {} is missing", path.display());
            found.push(tunnel(OrphanKind::UnitWithoutConfig, &u.id, detail));
        }
        if let Some(inventory) = &facts.inventory
            && !inventory.contains(u.id.as_str())
        {
            let detail = "absent from the inventory".to_owned();
            found.push(tunnel(OrphanKind::NotInInventory, &u.id, detail));
        }
        if let Some(failed_for) = failed_for(u, facts.now)
            && failed_for > facts.failed_threshold
        {
            let secs = Duration::from_secs(failed_for.as_secs());
            let detail = format!("failed for {}", humantime::format_duration(secs));
            found.push(tunnel(OrphanKind::FailedTooLong, &u.id, detail));
        }
    }
    // Built only when there are config files to look up (a pass runs this over every unit).
    if !facts.config_files.is_empty() {
        let units: HashSet<&TunnelId> = facts.units.iter().map(|u| &u.id).collect();
        let cores = core_configs(facts);
        let in_use = configs_in_use(facts, &cores);
        for c in &facts.config_files {
            // A config a unit or a running core names is in use, whatever its file name says.
            if !units.contains(&c.id) && !in_use.contains(c.path.as_path()) {
                let detail = format!("{} has no unit {}", c.path.display(), c.id.unit_name());
                found.push(tunnel(OrphanKind::ConfigWithoutUnit, &c.id, detail));
            }
        }
    }
    for core in &facts.cores {
        let Some((id, config)) = stray_tunnel(core, &facts.config_dir, &facts.units) else {
            continue;
        };
        let detail = format!(
            "pid {} ({}) runs {} outside every systemd unit: {}",
            core.key.pid,
            core.comm,
            config.display(),
            render_argv(&core.argv)
        );
        found.push(Found {
            key: OrphanKey::Stray(id, core.key),
            detail,
        });
    }
    found
}

/// The configs the running cores name.
fn core_configs(facts: &Facts) -> Vec<PathBuf> {
    let cores = facts.cores.iter().filter_map(|c| {
        ConfigRef::parse(&c.argv, &facts.config_dir)
            .known()
            .map(Path::to_owned)
    });
    cores.collect()
}

/// The configs in use: named by a unit or by a running core (`cores`, [`core_configs`]).
fn configs_in_use<'a>(facts: &'a Facts, cores: &'a [PathBuf]) -> HashSet<&'a Path> {
    let units = facts.units.iter().filter_map(|u| u.config.known());
    units.chain(cores.iter().map(PathBuf::as_path)).collect()
}

/// The tunnel a core process is a stray of, and the config it runs; `None` when it is no
/// stray: in a systemd unit (any unit: a tunnel's, `xray.service`, a panel's, a login
/// session's scope), testing a config (`-test`), or running a config that is unknown or not a
/// tunnel's (the unit that runs the same path, else `xray-{id}.json` directly in the dir).
pub fn stray_tunnel(
    core: &CoreProcess,
    config_dir: &Path,
    units: &[UnitFacts],
) -> Option<(TunnelId, PathBuf)> {
    if core.in_unit
        || core
            .argv
            .iter()
            .skip(1)
            .any(|a| a == "-test" || a == "--test")
    {
        return None;
    }
    let ConfigRef::Known(path) = ConfigRef::parse(&core.argv, config_dir) else {
        return None;
    };
    let by_unit = units
        .iter()
        .find(|u| u.config.known() == Some(path.as_path()));
    let id = match by_unit {
        Some(u) => u.id.clone(),
        None if path.parent() == Some(config_dir) => {
            TunnelId::from_config_file_name(path.file_name()?.to_str()?)?
        }
        None => return None,
    };
    Some((id, path))
}

/// Whether a /proc/PID/cgroup text puts the process in a systemd unit: a path component ending
/// in `.service` or `.scope`, in any hierarchy line. An empty text proves nothing: true.
pub fn in_systemd_unit(cgroup: &str) -> bool {
    let mut paths = cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .peekable();
    if paths.peek().is_none() {
        return true;
    }
    paths
        .flat_map(|path| path.split('/'))
        .any(|part| part.ends_with(".service") || part.ends_with(".scope"))
}

/// The `comm` of the cores the warden supervises.
pub const CORE_NAMES: [&str; 2] = ["xray", "v2ray"];

/// Whether a process is a core: its comm is `xray` or `v2ray`, or its executable is
/// `core_binary` (also when that file was replaced since it started: `... (deleted)`).
pub fn is_core(comm: &str, exe: Option<&Path>, core_binary: &Path) -> bool {
    if CORE_NAMES.contains(&comm) {
        return true;
    }
    let Some(exe) = exe.and_then(Path::to_str) else {
        return false;
    };
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    Path::new(exe) == core_binary
}

/// A command line, space-separated and cut to a readable length.
pub fn render_argv(argv: &[String]) -> String {
    let joined = argv.join(" ");
    match joined.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

/// How long a failed unit has been failed; `None` for a unit that is not failed or whose
/// state change time is unknown.
fn failed_for(u: &UnitFacts, now: SystemTime) -> Option<Duration> {
    if u.active_state != ActiveState::Failed || u.state_change_usec == 0 {
        return None;
    }
    let changed = UNIX_EPOCH + Duration::from_micros(u.state_change_usec);
    Some(now.duration_since(changed).unwrap_or_default())
}

/// When each current orphan was first seen.
pub type Book = HashMap<OrphanKey, SystemTime>;

/// Gives every found orphan its `since` from `book` (`now` for a new one) and forgets the
/// orphans that are no longer found. The result is sorted by kind, then tunnel, then PID.
pub fn stamp(book: &mut Book, found: Vec<Found>, now: SystemTime) -> Vec<Orphan> {
    let current: HashSet<&OrphanKey> = found.iter().map(|f| &f.key).collect();
    book.retain(|key, _| current.contains(key));
    let mut orphans: Vec<Orphan> = found
        .into_iter()
        .map(|f| {
            let since = *book.entry(f.key.clone()).or_insert(now);
            let (tunnel, kind, pid) = match f.key {
                OrphanKey::Tunnel(kind, id) => (id, kind, None),
                OrphanKey::Stray(id, p) => (id, OrphanKind::StrayProcess, Some(p.pid)),
            };
            Orphan {
                tunnel: tunnel.as_str().to_owned(),
                kind,
                since,
                detail: f.detail,
                pid,
            }
        })
        .collect();
    orphans.sort_by(|a, b| (a.kind, &a.tunnel, a.pid).cmp(&(b.kind, &b.tunnel, b.pid)));
    orphans
}

#[cfg(test)]
#[path = "orphans_tests.rs"]
mod tests;
