//! The tunnels to sync, as the watcher sees them: built from the snapshot only when a tunnel
//! started, stopped, appeared or vanished, so an idle tick (the watch every second, traffic
//! every `users.traffic_interval`) compares the statuses in place and builds nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::{ConfigRef, TunnelId, UnitStatus, UnknownReason};
use crate::state::{SharedState, Tunnel};

/// One tunnel to sync, as the watcher sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: TunnelId,
    pub config_path: PathBuf,
    /// `ExecMainStartTimestamp` of the running core: a new value means the core restarted and
    /// holds exactly the users of its config file again.
    pub core_start_usec: u64,
}

/// Each tunnel's id and, while it runs, its core's start time (0 when it does not run): all
/// the watch tick's targets depend on between two restarts.
#[derive(Debug, Default)]
pub struct Seen {
    units: Vec<(TunnelId, u64)>,
}

fn running_start(tunnel: &Tunnel) -> u64 {
    match tunnel.status.active_state().is_up() {
        true => tunnel.status.exec_main_start_usec,
        false => 0,
    }
}

impl Seen {
    /// Whether `tunnels` differ from the last call's (true the first time). Allocates nothing
    /// when they do not.
    pub fn changed(&mut self, tunnels: &BTreeMap<TunnelId, Tunnel>) -> bool {
        let same = self.units.len() == tunnels.len()
            && (self.units.iter().zip(tunnels))
                .all(|((id, start), (now_id, now))| id == now_id && *start == running_start(now));
        if !same {
            self.units = (tunnels.iter())
                .map(|(id, t)| (id.clone(), running_start(t)))
                .collect();
        }
        !same
    }
}

/// The running tunnels to sync and every tunnel that exists, as of the last change.
#[derive(Debug, Default)]
pub struct Targets {
    seen: Seen,
    /// Moves on every change, so more than one reader can tell what it has not seen yet.
    generation: u64,
    /// Running tunnels to sync (one `-config`, a start time known).
    pub running: Arc<[Target]>,
    /// Every tunnel that exists.
    pub alive: Arc<[TunnelId]>,
}

impl Targets {
    /// Builds the lists again when the tunnels changed since the last call; returns the
    /// generation the lists are of.
    pub fn refresh(&mut self, state: &SharedState, config_dir: &Path) -> u64 {
        let snapshot = state.read();
        if self.seen.changed(&snapshot.tunnels) {
            self.generation += 1;
            self.alive = snapshot.tunnels.keys().cloned().collect();
            self.running = (snapshot.tunnels.iter())
                .filter(|(_, t)| {
                    t.status.active_state().is_up() && t.status.exec_main_start_usec != 0
                })
                .filter(|(_, t)| merged_configs(&t.status, config_dir).is_none())
                .map(|(id, t)| Target {
                    id: id.clone(),
                    config_path: (t.status.config_arg())
                        .map(PathBuf::from)
                        .unwrap_or_else(|| config_dir.join(id.config_file_name())),
                    core_start_usec: t.status.exec_main_start_usec,
                })
                .collect();
        }
        self.generation
    }
}

/// Why the unit's core runs more than one config file, if it does.
pub fn merged_configs(status: &UnitStatus, config_dir: &Path) -> Option<UnknownReason> {
    match status.config_ref(config_dir) {
        ConfigRef::Unknown(reason @ (UnknownReason::ConfigDir | UnknownReason::Several)) => {
            Some(reason)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActiveState;

    fn tunnels(units: &[(&str, u64, bool)]) -> BTreeMap<TunnelId, Tunnel> {
        (units.iter())
            .map(|(id, start, up)| {
                let status = UnitStatus {
                    active_state: Some(if *up {
                        ActiveState::Active
                    } else {
                        ActiveState::Failed
                    }),
                    exec_main_start_usec: *start,
                    ..UnitStatus::default()
                };
                (
                    TunnelId::new(id).unwrap(),
                    Tunnel::new(String::new(), status),
                )
            })
            .collect()
    }

    #[test]
    fn only_a_start_a_stop_or_a_tunnel_added_or_removed_is_a_change() {
        let mut seen = Seen::default();
        let idle = tunnels(&[("a", 5, true), ("b", 6, true)]);
        assert!(seen.changed(&idle), "the first look");
        assert!(!seen.changed(&idle));
        let mut other = idle.clone();
        for tunnel in other.values_mut() {
            Arc::make_mut(&mut tunnel.status).main_pid = 42;
            tunnel.restarts.manual = 3;
        }
        assert!(!seen.changed(&other), "what the sync does not depend on");
        assert!(seen.changed(&tunnels(&[("a", 5, true), ("b", 7, true)])));
        assert!(seen.changed(&tunnels(&[("a", 5, true), ("b", 7, false)])));
        assert!(seen.changed(&tunnels(&[("a", 5, true)])));
        assert!(seen.changed(&tunnels(&[("c", 5, true)])));
        assert!(!seen.changed(&tunnels(&[("c", 5, true)])));
    }

    #[test]
    fn targets_are_built_again_only_after_a_change() {
        let state = SharedState::default();
        state.update(|s| s.tunnels = tunnels(&[("a", 5, true), ("b", 6, false)]));
        let dir = Path::new("/etc/raptor-tunnel");
        let mut targets = Targets::default();
        let first = targets.refresh(&state, dir);
        assert_eq!(targets.alive.len(), 2);
        assert_eq!(targets.running.len(), 1, "only the running one");
        assert_eq!(targets.running[0].config_path, dir.join("xray-a.json"));
        let built = Arc::clone(&targets.running);
        assert_eq!(targets.refresh(&state, dir), first);
        assert!(Arc::ptr_eq(&built, &targets.running), "not built again");
        state.update(|s| s.tunnels = tunnels(&[("a", 5, true), ("b", 7, true)]));
        assert_ne!(targets.refresh(&state, dir), first);
        assert_eq!(targets.running.len(), 2);
    }
}
