//! The resource sampler: every `sampler.interval`, CPU, memory, tasks and fds of each tunnel.
//!
//! The cgroup's accounting (what systemd publishes as `CPUUsageNSec`, `MemoryCurrent`,
//! `TasksCurrent`) is read from the cgroup's own files ([`ProcfsReader::accounting`]) and used
//! where the kernel keeps it; systemd is asked over D-Bus only for a unit whose cgroup is not
//! found below the cgroup root. procfs over every process of the unit's cgroup fills in the
//! rest, and always provides RSS and open fds, which systemd does not track. Scrapes read the
//! last pass from the snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::SamplerConfig;
use crate::domain::{Accounting, CpuAccount, Resources, TunnelId};
use crate::procfs::{CgroupSample, ProcfsReader};
use crate::state::{COLLECTOR_SAMPLER, CollectorRun, SharedState};
use crate::systemd::Client;

mod units;

use units::{Reading, Target, Units};

/// How many units are asked for their accounting at once.
const ACCOUNTING_CONCURRENCY: usize = 16;

/// Runs until `shutdown` is cancelled.
pub async fn run(
    config: SamplerConfig,
    state: SharedState,
    client: watch::Receiver<Option<Client>>,
    shutdown: CancellationToken,
) {
    let mut sampler = Sampler {
        reader: ProcfsReader::new(&config.proc_root, &config.cgroup_root),
        units: Some(Units::new(config.process_interval)),
        refresh: config.process_interval,
        state,
        client,
    };
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => sampler.pass().await,
            // A new bus session has just listed every unit: sample them now rather than up to
            // one interval later.
            Ok(()) = sampler.client.changed() => {
                if sampler.client.borrow_and_update().is_some() {
                    sampler.pass().await;
                }
            }
        }
    }
}

struct Sampler {
    reader: ProcfsReader,
    /// What is kept per unit between passes; moved to the blocking pool for each pass.
    units: Option<Units>,
    /// `sampler.process_interval`.
    refresh: std::time::Duration,
    state: SharedState,
    client: watch::Receiver<Option<Client>>,
}

impl Sampler {
    async fn pass(&mut self) {
        let started = Instant::now();
        let targets = self.targets();
        let reader = self.reader.clone();
        let Some(mut units) = self.units.take() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let readings = units.read_all(&reader, &targets);
            (units, targets, readings)
        })
        .await;
        let Ok((units, targets, readings)) = read else {
            warn!("procfs sampling task failed");
            // Kept state is rebuilt from scratch: the next pass opens every file again.
            self.units = Some(Units::new(self.refresh));
            return;
        };
        self.units = Some(units);
        // Only where the cgroup is not found below the cgroup root (another mount namespace, a
        // unit that just stopped) is systemd asked: three `Get`s per unit cost far more than
        // the files.
        let unseen: Vec<&Target> = targets
            .iter()
            .zip(&readings)
            .filter(|(_, (r, _))| matches!(r, Reading::NotFound))
            .map(|(t, _)| t)
            .collect();
        let mut asked = self.accounting(&unseen).await;

        let units = self.units.as_mut().expect("put back above");
        // In the targets' order, which is the snapshot's: ascending ids.
        let mut resources = Vec::with_capacity(targets.len());
        let (mut vanished, mut failures) = (0, 0);
        for (target, (reading, gone)) in targets.into_iter().zip(readings) {
            vanished += gone;
            let sampled = match reading {
                Reading::Sampled(resources) => resources,
                // The unit stopped between the listing and this read: nothing runs, all is well.
                Reading::NotFound => {
                    let account = &mut units.by_id.entry(target.id.clone()).or_default().account;
                    let accounting = asked.remove(&target.id).unwrap_or_default();
                    combine(&CgroupSample::default(), accounting, account)
                }
                Reading::Failed(err) => {
                    warn!(tunnel = %target.id, error = %err, "cannot sample the tunnel's processes");
                    failures += 1;
                    Resources::default()
                }
            };
            resources.push((target.id, sampled));
        }
        self.publish(resources, vanished, failures, started);
    }

    fn targets(&self) -> Vec<Target> {
        let snapshot = self.state.read();
        snapshot
            .tunnels
            .iter()
            .filter(|(_, t)| {
                t.status.active_state().may_have_processes() && !t.status.control_group.is_empty()
            })
            .map(|(id, t)| Target {
                id: id.clone(),
                status: Arc::clone(&t.status),
            })
            .collect()
    }

    /// systemd's own accounting per target; empty while the bus is down.
    async fn accounting(&self, targets: &[&Target]) -> HashMap<TunnelId, Accounting> {
        if targets.is_empty() {
            return HashMap::new();
        }
        let Some(client) = self.client.borrow().clone() else {
            return HashMap::new();
        };
        // Collected first: a lazy `map` over borrowed targets trips rustc's Send inference.
        let reads: Vec<_> = {
            let snapshot = self.state.read();
            let units = targets.iter().filter_map(|t| {
                let unit = snapshot.tunnels.get(&t.id)?.unit.clone();
                Some((t.id.clone(), unit))
            });
            units
                .map(|(id, unit)| {
                    let client = client.clone();
                    async move { (id, client.accounting(&unit).await) }
                })
                .collect()
        };
        let results: Vec<_> = stream::iter(reads)
            .buffer_unordered(ACCOUNTING_CONCURRENCY)
            .collect()
            .await;
        results
            .into_iter()
            .filter_map(|(id, result)| match result {
                Ok(acct) => Some((id, acct)),
                Err(err) => {
                    debug!(tunnel = %id, error = %err, "no systemd accounting");
                    None
                }
            })
            .collect()
    }

    /// Publishes the pass: `sampled` is in ascending id order, like the snapshot's tunnels, so
    /// the two are merged in one walk rather than looked up one by one.
    fn publish(
        &mut self,
        sampled: Vec<(TunnelId, Resources)>,
        vanished: u64,
        failures: u64,
        started: Instant,
    ) {
        let units = self.units.as_mut().expect("put back by the pass");
        self.state.update_samples(|s| {
            units.retain(|id| s.tunnels.contains_key(id));
            let mut sampled = sampled.into_iter().peekable();
            for (id, tunnel) in &mut s.tunnels {
                // A tunnel dropped from the snapshot since the targets were taken.
                while sampled.next_if(|(next, _)| next < id).is_some() {}
                let resources = match sampled.next_if(|(next, _)| next == id) {
                    Some((_, resources)) => resources,
                    None => Resources {
                        // Stopped: nothing runs, but the CPU counter keeps its value.
                        cpu_seconds: units.by_id.get(id).map_or(0.0, |u| u.account.total()),
                        ..Resources::default()
                    },
                };
                tunnel.resources = Some(resources);
            }
            s.troubles.vanished_processes += vanished;
            s.troubles.cgroup_read_errors += failures;
            s.held_files = units.files();
            let run = CollectorRun {
                success: failures == 0,
                duration: started.elapsed(),
            };
            s.collectors.insert(COLLECTOR_SAMPLER, run);
        });
    }
}

/// Merges the cgroup's accounting with a procfs sample, preferring the cgroup where it has a
/// value.
fn combine(sample: &CgroupSample, systemd: Accounting, account: &mut CpuAccount) -> Resources {
    let (cpu_seconds, cpu_from_cgroup) = match systemd.cpu_usage_nsec {
        Some(nsec) => (nsec as f64 / 1e9, true),
        // The processes' sum is kept (exited ones included) only where no cgroup counts it.
        None => {
            let processes = sample.processes.iter().map(|p| (p.key, p.cpu_seconds));
            (account.update(processes), false)
        }
    };
    Resources {
        cpu_seconds,
        cpu_from_cgroup,
        rss_bytes: sample.rss_bytes(),
        memory_current_bytes: systemd.memory_current,
        tasks: systemd.tasks_current.unwrap_or_else(|| sample.threads()),
        processes: sample.processes.len() as u64,
        open_fds: sample.open_fds(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProcessKey;
    use crate::procfs::ProcessSample;

    fn process(pid: u32, cpu: f64) -> ProcessSample {
        ProcessSample {
            key: ProcessKey {
                pid,
                start_ticks: 1,
            },
            cpu_seconds: cpu,
            rss_bytes: 1000,
            threads: 3,
            open_fds: 5,
        }
    }

    /// The readings are merged with the snapshot by id: a tunnel dropped since the targets were
    /// taken is skipped, one added since (or not read) gets empty resources with its kept CPU.
    #[test]
    fn publish_merges_the_readings_with_the_snapshot_by_id() {
        let id = |s: &str| TunnelId::new(s).unwrap();
        let state = SharedState::default();
        state.update(|s| {
            for name in ["a", "c", "d"] {
                let unit = format!("xray-tunnel-{name}.service");
                let tunnel = crate::state::Tunnel::new(unit, Default::default());
                s.tunnels.insert(id(name), tunnel);
            }
        });
        let (_tx, client) = watch::channel(None);
        let mut units = Units::new(std::time::Duration::from_secs(300));
        let key = ProcessKey {
            pid: 7,
            start_ticks: 1,
        };
        let account = &mut units.by_id.entry(id("d")).or_default().account;
        account.update([(key, 4.0)]);
        let mut sampler = Sampler {
            reader: ProcfsReader::new("/nonexistent/proc", "/nonexistent/cgroup"),
            units: Some(units),
            refresh: std::time::Duration::from_secs(300),
            state: state.clone(),
            client,
        };
        let read = |cpu: f64| Resources {
            cpu_seconds: cpu,
            processes: 1,
            ..Resources::default()
        };
        let sampled = vec![
            (id("a"), read(1.0)),
            (id("b"), read(2.0)),
            (id("c"), read(3.0)),
        ];
        sampler.publish(sampled, 0, 0, Instant::now());
        let snapshot = state.read();
        let cpu = |name: &str| {
            let r = snapshot.tunnels[&id(name)].resources.unwrap();
            (r.cpu_seconds, r.processes)
        };
        assert_eq!(cpu("a"), (1.0, 1));
        assert_eq!(cpu("c"), (3.0, 1));
        assert_eq!(cpu("d"), (4.0, 0), "not read: empty, its CPU kept");
        assert!(!snapshot.tunnels.contains_key(&id("b")));
    }

    #[test]
    fn systemd_accounting_wins_where_set() {
        let sample = CgroupSample {
            processes: vec![process(1, 2.0), process(2, 1.0)],
            vanished: 0,
        };
        let systemd = Accounting {
            cpu_usage_nsec: Some(7_500_000_000),
            memory_current: Some(4096),
            tasks_current: Some(9),
        };
        let r = combine(&sample, systemd, &mut CpuAccount::default());
        assert_eq!(r.cpu_seconds, 7.5);
        assert!(r.cpu_from_cgroup);
        assert_eq!(r.memory_current_bytes, Some(4096));
        assert_eq!(r.tasks, 9);
        assert_eq!((r.rss_bytes, r.open_fds, r.processes), (2000, 10, 2));
    }

    #[test]
    fn procfs_fills_what_systemd_leaves_unset() {
        let mut account = CpuAccount::default();
        let sample = CgroupSample {
            processes: vec![process(1, 2.0), process(2, 1.0)],
            vanished: 1,
        };
        let r = combine(&sample, Accounting::default(), &mut account);
        assert_eq!(r.cpu_seconds, 3.0);
        assert!(!r.cpu_from_cgroup);
        assert_eq!(r.tasks, 6);
        assert_eq!(r.memory_current_bytes, None);
        // The child exits: CPU keeps counting from what it had used.
        let sample = CgroupSample {
            processes: vec![process(1, 2.5)],
            vanished: 0,
        };
        let r = combine(&sample, Accounting::default(), &mut account);
        assert_eq!(r.cpu_seconds, 3.5);
    }
}
