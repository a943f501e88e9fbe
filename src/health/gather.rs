//! The facts of one pass that are read from files and procfs, on the blocking pool: each
//! tunnel's config, who holds its ports, the core processes, the config directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::ports::{self, Listener, Owner};
use super::scan::ProcScan;
use crate::domain::TunnelId;
use crate::domain::orphans::{ConfigFile, CoreProcess};
use crate::procfs::ProcfsReader;
use crate::tunnelcfg::{self, TunnelConfig};

/// The facts read on the blocking pool, per target in target order where per target.
#[derive(Clone)]
pub struct Gathered {
    /// Each tunnel's config; `None` where its path is unknown.
    pub configs: Vec<Option<Result<TunnelConfig, String>>>,
    pub ports: Vec<Vec<(u16, ports::PortHolders)>>,
    pub listeners_ok: bool,
    pub cores: Vec<CoreProcess>,
    pub config_files: Option<Vec<ConfigFile>>,
}

/// One unit to read for: its known config path, if any, and its control group.
pub type UnitPaths = (Option<PathBuf>, String);

/// Reads everything for `units`, in their order. The core processes are read from
/// `core_pids` (the census's) when known, else from every process.
pub fn gather_blocking(
    scan: &ProcScan,
    cgroups: &ProcfsReader,
    units: &[UnitPaths],
    config_dir: &Path,
    core_binary: &Path,
    core_pids: Option<&[u32]>,
) -> Gathered {
    let configs: Vec<Option<Result<TunnelConfig, String>>> = units
        .iter()
        .map(|(path, _)| {
            let path = path.as_ref()?;
            Some(tunnelcfg::read(path).map_err(|e| e.to_string()))
        })
        .collect();
    let wanted: Vec<Vec<u16>> = configs
        .iter()
        .map(|c| {
            c.iter()
                .flatten()
                .flat_map(|c| &c.inbounds)
                .filter_map(|i| i.port)
                .collect()
        })
        .collect();
    let listeners = scan.listeners();
    let listeners_ok = listeners.is_ok();
    let listeners: Vec<Listener> = listeners
        .map_err(|e| warn!(error = %e, "cannot read the listening sockets"))
        .unwrap_or_default();
    let mut fds_read = 0;
    let inodes: Vec<HashSet<u64>> = units
        .iter()
        .zip(&wanted)
        .map(|((_, cgroup), ports)| {
            // No cgroup (the unit is not running): no process of its holds anything.
            if cgroup.is_empty() {
                return HashSet::new();
            }
            let by_cgroup = || cgroups.cgroup_id(cgroup);
            ports::own_by_cgroup(ports, &listeners, by_cgroup).unwrap_or_else(|| {
                fds_read += 1;
                unit_inodes(scan, cgroups, cgroup)
            })
        })
        .collect();
    debug!(
        units = units.len(),
        fds_read, "health: full read; the units whose fds were read for their sockets"
    );
    let foreign: HashSet<u64> = wanted
        .iter()
        .zip(&inodes)
        .flat_map(|(ports, own)| ports::foreign_inodes(ports, &listeners, own))
        .collect();
    let owners: HashMap<u64, Owner> = scan.owners_of(&foreign);
    let ports = wanted
        .iter()
        .zip(&inodes)
        .map(|(ports, own)| ports::holders(ports, &listeners, own, &owners))
        .collect();
    Gathered {
        configs,
        ports,
        listeners_ok,
        cores: match core_pids {
            Some(pids) => {
                let parent = std::process::id();
                let core = |pid: &u32| scan.core(*pid, parent, core_binary);
                pids.iter().filter_map(core).collect()
            }
            None => scan.cores(std::process::id(), core_binary),
        },
        config_files: list_configs(config_dir),
    }
}

/// Socket inodes of every process of a unit's cgroup.
fn unit_inodes(scan: &ProcScan, cgroups: &ProcfsReader, control_group: &str) -> HashSet<u64> {
    let pids = cgroups.cgroup_pids(control_group).unwrap_or_default();
    pids.into_iter()
        .flat_map(|pid| scan.socket_inodes(pid))
        .collect()
}

/// The `xray-{id}.json` files of the config directory; `None` when it cannot be read (a
/// missing directory holds no configs).
fn list_configs(dir: &Path) -> Option<Vec<ConfigFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Vec::new()),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot list the config directory");
            return None;
        }
    };
    let files = entries.flatten().filter_map(|e| {
        let id = TunnelId::from_config_file_name(e.file_name().to_str()?)?;
        Some(ConfigFile { id, path: e.path() })
    });
    Some(files.collect())
}
