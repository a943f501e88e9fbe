//! The orphan rules: given the facts of one moment, which units, config files and processes
//! are orphans; and since when the warden has seen each one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::{ActiveState, Orphan, OrphanKind, ProcessKey, TunnelId};

/// One tunnel unit as the orphan rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitFacts {
    pub id: TunnelId,
    /// The config the unit runs: its `-config` argument, else `{config_dir}/xray-{id}.json`.
    pub config_path: PathBuf,
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

/// An xray/v2ray process whose cgroup is no `xray-tunnel-*.service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayProcess {
    pub key: ProcessKey,
    pub comm: String,
    pub cmdline: String,
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
    pub strays: Vec<StrayProcess>,
    pub failed_threshold: Duration,
}

/// What identifies one orphan across passes: a recycled PID is a new process, hence a new
/// orphan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrphanKey {
    Tunnel(OrphanKind, TunnelId),
    Process(ProcessKey),
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
        if !u.config_exists {
            let detail = format!("config {} is missing", u.config_path.display());
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
    let units: HashSet<&TunnelId> = facts.units.iter().map(|u| &u.id).collect();
    let used: HashSet<&PathBuf> = facts.units.iter().map(|u| &u.config_path).collect();
    for c in &facts.config_files {
        // A config another unit names with -config is in use, whatever its file name says.
        if !units.contains(&c.id) && !used.contains(&c.path) {
            let detail = format!("{} has no unit {}", c.path.display(), c.id.unit_name());
            found.push(tunnel(OrphanKind::ConfigWithoutUnit, &c.id, detail));
        }
    }
    for p in &facts.strays {
        let detail = format!(
            "pid {} ({}) runs outside every tunnel unit: {}",
            p.key.pid, p.comm, p.cmdline
        );
        found.push(Found {
            key: OrphanKey::Process(p.key),
            detail,
        });
    }
    found
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
/// orphans that are no longer found. The result is sorted by kind, then tunnel.
pub fn stamp(book: &mut Book, found: Vec<Found>, now: SystemTime) -> Vec<Orphan> {
    let current: HashSet<&OrphanKey> = found.iter().map(|f| &f.key).collect();
    book.retain(|key, _| current.contains(key));
    let mut orphans: Vec<Orphan> = found
        .into_iter()
        .map(|f| {
            let since = *book.entry(f.key.clone()).or_insert(now);
            let (tunnel, kind, pid) = match f.key {
                OrphanKey::Tunnel(kind, id) => (id.as_str().to_owned(), kind, None),
                OrphanKey::Process(p) => (stray_name(p.pid), OrphanKind::StrayProcess, Some(p.pid)),
            };
            Orphan {
                tunnel,
                kind,
                since,
                detail: f.detail,
                pid,
            }
        })
        .collect();
    orphans.sort_by(|a, b| (a.kind, &a.tunnel).cmp(&(b.kind, &b.tunnel)));
    orphans
}

/// The `tunnel` label of a stray process.
pub fn stray_name(pid: u32) -> String {
    format!("pid-{pid}")
}

#[cfg(test)]
#[path = "orphans_tests.rs"]
mod tests;
