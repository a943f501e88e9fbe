//! One health pass: read the facts (the snapshot, procfs, the config files, the core's test,
//! the API, the inventory), apply the rules, publish the checks, the orphans, the tunnels whose
//! config is unknown and the orphan guard's verdict.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::census::ProcCensus;
use super::checks::{self, ApiVerdict, ConfigVerdict};
use super::crash::{CrashVerdict, RestartHistory};
use super::gather::{Gathered, UnitPaths, gather_blocking};
use super::memo::{CheckFacts, CheckMemo, Judged};
use super::probe;
use super::scan::ProcScan;
use super::trigger::{self, Stamps, Trigger, UnitInput};
use super::verdicts::VerdictCache;
use super::{Ledger, Settings, inventory};
use crate::domain::health_trigger::HealthInputs;
use crate::domain::orphans::{self, Facts, UnitFacts};
use crate::domain::{Check, ConfigRef, GuardTrip, Orphan, TunnelId, UnitStatus, UnknownConfig};
use crate::procfs::ProcfsReader;
use crate::state::{COLLECTOR_HEALTH, CollectorRun, SharedState};
use crate::tunnelcfg::TunnelConfig;

/// The health task's state across passes.
pub struct HealthTask {
    settings: Settings,
    state: SharedState,
    ledger: Ledger,
    scan: ProcScan,
    cgroups: ProcfsReader,
    histories: HashMap<TunnelId, RestartHistory>,
    verdicts: VerdictCache,
    /// The last full read of procfs and the config files, reused while nothing it depends on
    /// changed.
    trigger: Trigger,
    /// Which processes are cores, kept up to date by reading only new PIDs.
    census: ProcCensus,
    /// The checks last published, to log changes rather than every pass.
    shown: HashMap<TunnelId, Arc<[Check]>>,
    /// Each tunnel's checks and config, built again only when what they come from changed.
    memo: CheckMemo,
    /// The inventory's last read error, to log it once.
    inventory_error: Option<String>,
    /// The guard's last verdict, to log when it trips and clears.
    guard_tripped: bool,
}

/// What one pass published.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub checks: BTreeMap<TunnelId, Arc<[Check]>>,
    pub orphans: Vec<Orphan>,
    /// Tunnels whose config path cannot be trusted, in id order.
    pub config_unknown: Vec<UnknownConfig>,
    /// `Some` when the orphan cleanup would act on none ([`crate::domain::GuardLimits`]).
    pub guard: Option<GuardTrip>,
    /// Whether every input could be read (`xray_warden_collector_success{collector="health"}`).
    pub success: bool,
}

/// A tunnel as the pass sees it.
struct Target {
    id: TunnelId,
    status: Arc<UnitStatus>,
    auto_restarts: u64,
    config: ConfigRef,
}

impl HealthTask {
    pub fn new(settings: Settings, state: SharedState, ledger: Ledger) -> Self {
        Self {
            scan: ProcScan::new(&settings.proc_root),
            cgroups: ProcfsReader::new(&settings.proc_root, &settings.cgroup_root),
            settings,
            state,
            ledger,
            histories: HashMap::new(),
            verdicts: VerdictCache::default(),
            trigger: Trigger::default(),
            census: ProcCensus::default(),
            shown: HashMap::new(),
            memo: CheckMemo::default(),
            inventory_error: None,
            guard_tripped: false,
        }
    }

    /// Runs one pass and publishes it; `None` (and nothing published) until the watcher has
    /// listed the units once, since before that every config would look unit-less.
    pub async fn pass(&mut self) -> Option<PassReport> {
        let started = Instant::now();
        let targets = self.targets()?;
        let (gathered, stamps) = self.gather(&targets).await;
        let verdicts = self.verdicts(&targets, stamps).await;
        let apis = self.probe(&targets, &gathered.configs).await;
        let inventory = self.inventory().await;
        let mut report = PassReport {
            success: gathered.listeners_ok && gathered.config_files.is_some() && inventory.is_ok(),
            ..PassReport::default()
        };
        let now = Instant::now();
        for (i, t) in targets.iter().enumerate() {
            if let Err(reason) = &verdicts[i] {
                report.config_unknown.push(UnknownConfig {
                    tunnel: t.id.clone(),
                    reason: *reason,
                });
            }
            let facts = CheckFacts {
                status: t.status.clone(),
                crash: self.crash_verdict(now, t),
                judged: verdicts[i].clone(),
                gathered: Arc::clone(&gathered),
                index: i,
                api: apis[i].clone(),
            };
            let window = self.settings.health.crash_window;
            let list = self.memo.checks(&t.id, facts, |f| build_checks(f, window));
            report.checks.insert(t.id.clone(), list);
        }
        let facts = Facts {
            now: SystemTime::now(),
            units: unit_facts(&targets, &verdicts),
            config_files: gathered.config_files.clone().unwrap_or_default(),
            inventory: inventory.unwrap_or(None),
            cores: gathered.cores.clone(),
            config_dir: self.settings.config_dir.clone(),
            failed_threshold: self.settings.health.failed_threshold,
        };
        report.orphans = self.ledger.stamp(orphans::find(&facts), facts.now);
        for o in report.orphans.iter().filter(|o| o.since == facts.now) {
            warn!(tunnel = %o.tunnel, kind = o.kind.as_str(), detail = %o.detail, "orphan found");
        }
        let units: Vec<&TunnelId> = targets.iter().map(|t| &t.id).collect();
        report.guard = self.judge_guard(&report.orphans, &units);
        self.publish(&report, started);
        self.forget_the_gone(&targets);
        Some(report)
    }

    /// The core's verdict on each known config, or why the config is unknown, in target order;
    /// `stamps` are the known configs' `stat`s this pass's inputs made.
    async fn verdicts(&mut self, targets: &[Target], stamps: Stamps) -> Vec<Judged> {
        let known: Vec<PathBuf> = targets
            .iter()
            .filter_map(|t| t.config.known().map(Path::to_owned))
            .collect();
        let tester = &self.settings.config_test;
        let mut tested = known
            .iter()
            .cloned()
            .zip(self.verdicts.verdicts_stamped(tester, &known, stamps).await);
        targets
            .iter()
            .map(|t| match &t.config {
                ConfigRef::Known(_) => Ok(tested.next().expect("one verdict per known config")),
                ConfigRef::Unknown(reason) => Err(*reason),
            })
            .collect()
    }

    /// The orphan guard over this pass's orphans; logs when it trips and when it clears.
    fn judge_guard(&mut self, orphans: &[Orphan], units: &[&TunnelId]) -> Option<GuardTrip> {
        let trip = self
            .settings
            .guard
            .check_orphans(orphans, units.iter().copied())
            .err();
        match (&trip, self.guard_tripped) {
            (Some(trip), false) => warn!(%trip, "orphan guard tripped: no orphan cleanup"),
            (None, true) => info!("orphan guard cleared: orphan cleanup may act again"),
            _ => {}
        }
        self.guard_tripped = trip.is_some();
        trip
    }

    /// What the crash-loop rule says now, recording this pass's restart counter in the
    /// tunnel's history.
    fn crash_verdict(&mut self, now: Instant, t: &Target) -> CrashVerdict {
        let (window, threshold) = (
            self.settings.health.crash_window,
            self.settings.health.crash_threshold,
        );
        let history = self.histories.entry(t.id.clone()).or_default();
        history.record(now, t.auto_restarts, window, threshold)
    }

    /// The inventory's ids: `Ok(None)` when none is configured, `Err` when it cannot be read
    /// (logged once per distinct problem, not every pass).
    async fn inventory(&mut self) -> Result<Option<HashSet<String>>, ()> {
        let Some(path) = &self.settings.health.inventory else {
            return Ok(None);
        };
        match inventory::read(path).await {
            Ok(ids) => {
                self.inventory_error = None;
                Ok(Some(ids))
            }
            Err(err) => {
                let err = err.to_string();
                if self.inventory_error.as_ref() != Some(&err) {
                    warn!(error = %err, "no inventory orphans until the inventory reads again");
                }
                self.inventory_error = Some(err);
                Err(())
            }
        }
    }

    fn targets(&mut self) -> Option<Vec<Target>> {
        let snapshot = self.state.read();
        if !snapshot.listed {
            return None;
        }
        let config_dir = &self.settings.config_dir;
        let memo = &mut self.memo;
        let targets = snapshot.tunnels.iter().map(|(id, t)| Target {
            id: id.clone(),
            config: memo.config(id, &t.status, |s| s.config_ref(config_dir)),
            status: t.status.clone(),
            auto_restarts: t.restarts.auto,
        });
        Some(targets.collect())
    }

    /// The facts of the last full read while none of their inputs changed (and the safety net
    /// is not due), else a full read ([`crate::domain::health_trigger`]); with the known
    /// configs' stamps.
    async fn gather(&mut self, targets: &[Target]) -> (Arc<Gathered>, Stamps) {
        let interval = self.settings.health.interval;
        if self.trigger.safety_net_due(interval) {
            self.census.forget();
        }
        let scan = self.scan.clone();
        let (core_binary, config_dir) = (
            self.settings.core_binary.clone(),
            self.settings.config_dir.clone(),
        );
        let mut census = std::mem::take(&mut self.census);
        let units: Vec<UnitInput> = targets
            .iter()
            .map(|t| {
                let path = t.config.known().map(Path::to_owned);
                (t.id.clone(), t.status.clone(), path)
            })
            .collect();
        let read = move || {
            let inputs = trigger::read_inputs(&scan, &mut census, &core_binary, &config_dir, units);
            (inputs, census)
        };
        let ((inputs, stamps), census) = match tokio::task::spawn_blocking(read).await {
            Ok(read) => read,
            Err(_) => {
                let failed = || Err(std::io::Error::other("reading the inputs failed"));
                let known = targets.iter().filter(|t| t.config.known().is_some());
                let stamps = known.map(|_| failed()).collect();
                ((HealthInputs::default(), stamps), ProcCensus::default())
            }
        };
        self.census = census;
        match self.trigger.reusable(&inputs, interval) {
            Ok(gathered) => {
                debug!("health: no input changed, the last full read stands");
                return (gathered, stamps);
            }
            Err(why) => debug!(reason = why.as_str(), "health: full read"),
        }
        let gathered = Arc::new(self.read_all(targets, inputs.cores.clone()).await);
        self.trigger.remember(inputs, &gathered);
        (gathered, stamps)
    }

    /// Reads the configs, the listening sockets and who holds them, the core processes and
    /// the config directory, on the blocking pool. `cores` are the census's core PIDs (`None`:
    /// every process is read for cores).
    async fn read_all(&self, targets: &[Target], cores: Option<Vec<u32>>) -> Gathered {
        let (scan, cgroups) = (self.scan.clone(), self.cgroups.clone());
        let config_dir = self.settings.config_dir.clone();
        let core_binary = self.settings.core_binary.clone();
        let units: Vec<UnitPaths> = targets
            .iter()
            .map(|t| {
                let path = t.config.known().map(Path::to_owned);
                (path, t.status.control_group.clone())
            })
            .collect();
        let work = move || {
            let core_pids = cores.as_deref();
            gather_blocking(
                &scan,
                &cgroups,
                &units,
                &config_dir,
                &core_binary,
                core_pids,
            )
        };
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|_| Gathered {
                configs: targets
                    .iter()
                    .map(|t| t.config.known().map(|_| Err("reading failed".into())))
                    .collect(),
                ports: targets.iter().map(|_| Vec::new()).collect(),
                listeners_ok: false,
                cores: Vec::new(),
                config_files: None,
            })
    }

    /// Probes the API of every active tunnel whose config names one; `None` where the config
    /// is unknown.
    async fn probe(
        &self,
        targets: &[Target],
        configs: &[Option<Result<TunnelConfig, String>>],
    ) -> Vec<Option<ApiVerdict>> {
        let apis = targets.iter().zip(configs).map(|(t, config)| {
            let api = config
                .as_ref()
                .map(|c| c.as_ref().map(|c| c.api).map_err(Clone::clone));
            (t.status.active_state().is_up(), api)
        });
        probe::probe_all(self.settings.api_timeout, apis.collect()).await
    }

    /// Forgets what is kept of tunnels that are gone. After [`publish`](Self::publish), each
    /// per-tunnel map holds every target (this pass put each there), so a map no larger than
    /// the targets holds nothing else and is left alone: on a steady node, no id is hashed.
    fn forget_the_gone(&mut self, targets: &[Target]) {
        let n = targets.len();
        if self.histories.len() > n || self.shown.len() > n || self.memo.len() > n {
            let alive: HashSet<&TunnelId> = targets.iter().map(|t| &t.id).collect();
            self.histories.retain(|id, _| alive.contains(id));
            self.shown.retain(|id, _| alive.contains(id));
            self.memo.retain(|id| alive.contains(id));
        }
        let paths: Vec<&Path> = targets.iter().filter_map(|t| t.config.known()).collect();
        self.verdicts.retain(&paths);
    }

    fn publish(&mut self, report: &PassReport, started: Instant) {
        // What was shown is what the snapshot holds (only this pass writes checks there), so a
        // pass whose checks all equal the shown ones changes no tunnel's checks.
        let mut checks_changed = false;
        for (id, list) in &report.checks {
            match self.shown.get_mut(id) {
                Some(shown) if Arc::ptr_eq(shown, list) || shown == list => {}
                Some(shown) => {
                    log_changes(id, Some(shown), list);
                    *shown = Arc::clone(list);
                    checks_changed = true;
                }
                None => {
                    log_changes(id, None, list);
                    self.shown.insert(id.clone(), Arc::clone(list));
                    checks_changed = true;
                }
            }
        }
        {
            let s = self.state.read();
            // Both lists are in id order.
            let known = |u: &UnknownConfig| {
                s.config_unknown
                    .binary_search_by(|k| k.tunnel.cmp(&u.tunnel))
                    .is_ok_and(|i| s.config_unknown[i] == *u)
            };
            if s.config_unknown != report.config_unknown {
                for u in report.config_unknown.iter().filter(|u| !known(u)) {
                    let reason = u.reason.as_str();
                    info!(tunnel = %u.tunnel, reason, "the tunnel's config is unknown: never taken as missing");
                }
            }
        }
        let run = CollectorRun {
            success: report.success,
            duration: started.elapsed(),
        };
        // A pass that found what the last one found leaves the version alone: the rendering of
        // the per-tunnel series made since still holds.
        let unchanged = !checks_changed && {
            let s = self.state.read();
            // A tunnel the watcher dropped and found again since starts with no checks. Both
            // maps are in id order: one walk, no lookups.
            let mut tunnels = s.tunnels.iter().peekable();
            let none_reset = report.checks.iter().all(|(id, list)| {
                while tunnels.next_if(|(t, _)| *t < id).is_some() {}
                tunnels
                    .next_if(|(t, _)| *t == id)
                    .is_none_or(|(_, t)| t.health.len() == list.len())
            });
            none_reset
                && s.orphans == report.orphans
                && s.config_unknown == report.config_unknown
                && s.orphan_guard == report.guard
                && s.collectors.contains_key(COLLECTOR_HEALTH)
        };
        if unchanged {
            self.state
                .update_runs(|s| s.collectors.insert(COLLECTOR_HEALTH, run));
            return;
        }
        self.state.update(|s| {
            for (id, tunnel) in &mut s.tunnels {
                if let Some(list) = report.checks.get(id) {
                    tunnel.health = list.to_vec();
                }
            }
            s.orphans = report.orphans.clone();
            s.config_unknown = report.config_unknown.clone();
            s.orphan_guard = report.guard.clone();
            s.collectors.insert(COLLECTOR_HEALTH, run);
        });
    }
}

/// A tunnel's checks, in their published order.
fn build_checks(f: &CheckFacts, crash_window: Duration) -> Vec<Check> {
    let st = &f.status;
    let active = st.active_state().is_up();
    let config = match &f.judged {
        Ok((path, verdict)) => checks::config(path, verdict),
        Err(reason) => checks::config_unknown(*reason),
    };
    vec![
        checks::active(st.active_state(), &st.sub_state, &st.result),
        checks::crash(f.crash, crash_window),
        config,
        checks::ports(
            active,
            f.gathered.configs[f.index].as_ref(),
            &f.gathered.ports[f.index],
        ),
        checks::api_of(active, f.api.as_ref()),
    ]
}

fn unit_facts(targets: &[Target], verdicts: &[Judged]) -> Vec<UnitFacts> {
    targets
        .iter()
        .zip(verdicts)
        .map(|(t, verdict)| UnitFacts {
            id: t.id.clone(),
            config: t.config.clone(),
            config_exists: !matches!(verdict, Ok((_, ConfigVerdict::Missing))),
            active_state: t.status.active_state().clone(),
            state_change_usec: t.status.state_change_usec,
        })
        .collect()
}

fn log_changes(id: &TunnelId, before: Option<&[Check]>, now: &[Check]) {
    for check in now {
        let was = before.and_then(|b| b.iter().find(|c| c.name == check.name));
        // Logged when it flips, and when first seen failing; a first pass is silent otherwise.
        if was.map_or(check.ok, |c| c.ok == check.ok) {
            continue;
        }
        let (name, detail) = (check.name, &check.detail);
        if check.ok {
            info!(tunnel = %id, check = name, %detail, "health check passes");
        } else {
            warn!(tunnel = %id, check = name, %detail, "health check fails");
        }
    }
}
