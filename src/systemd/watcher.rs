//! The watcher: one long-lived bus connection, a full listing, then systemd's signals.
//!
//! State machine: connect -> subscribe to signals -> list everything -> apply signals until the
//! connection is lost or systemd changes its bus owner -> back off (jittered, capped) -> connect.
//! The match rules are installed before the listing, so nothing that changes during the listing
//! is missed. Signals are coalesced for [`DEBOUNCE`] so that a burst (one `systemctl restart`
//! sends several) costs one read per unit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Client, Event, SystemdError};
use crate::config::SystemdConfig;
use crate::domain::resync::{self, Files, KnownState, Recheck};
use crate::domain::{ActiveState, TunnelId, UnitStatus};
use crate::state::{COLLECTOR_SYSTEMD, CollectorRun, SharedState, Tunnel};

/// How long signals are gathered before the changed units are read.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// Publishes the live client (or `None` while disconnected) to the resource sampler.
pub type ClientSender = watch::Sender<Option<Client>>;

/// Runs until `shutdown` is cancelled.
pub async fn run(
    config: SystemdConfig,
    state: SharedState,
    client_tx: ClientSender,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    let mut sessions = 0u64;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = session(&config, &state, &client_tx, &mut backoff, sessions) => outcome,
        };
        sessions += 1;
        client_tx.send_replace(None);
        state.update(|s| s.systemd_up = false);
        let delay = match outcome {
            Ok(()) => {
                info!("systemd changed its bus owner (reexec?); reconnecting");
                backoff.reset();
                backoff.next()
            }
            Err(err) => {
                let delay = backoff.next();
                warn!(error = %err, retry_in = ?delay, "systemd session failed; reconnecting");
                delay
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection's lifetime. `Ok` means systemd restarted on the bus; `Err` that the bus broke.
async fn session(
    config: &SystemdConfig,
    state: &SharedState,
    client_tx: &ClientSender,
    backoff: &mut Backoff,
    sessions: u64,
) -> Result<(), SystemdError> {
    let client = Client::connect(config).await?;
    let mut events = client.events().await?;
    client.subscribe().await?;
    let mut reader = Reader {
        client: &client,
        state,
        concurrency: config.concurrency,
        files_stamp: None,
    };
    reader.relist().await?;
    state.update(|s| {
        s.systemd_up = true;
        s.listed = true;
        if sessions > 0 {
            s.troubles.reconnects += 1;
        }
    });
    client_tx.send_replace(Some(client.clone()));
    backoff.reset();
    info!(
        tunnels = state.read().tunnels.len(),
        "listed tunnel units; watching signals"
    );

    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    resync.tick().await;
    let mut rounds: u32 = 0;
    let mut pending = Pending::default();
    loop {
        let deadline = pending.since.map(|t| t + DEBOUNCE);
        tokio::select! {
            event = events.next() => match event.unwrap_or(Event::Lost) {
                Event::UnitChanged(unit) => {
                    pending.touch().changed.insert(unit);
                }
                Event::UnitRemoved(unit) => {
                    pending.touch().removed.insert(unit);
                }
                Event::Relist => pending.touch().relist = true,
                Event::SystemdRestarted => return Ok(()),
                Event::Lost => return Err(SystemdError::Disconnected),
            },
            // The safety net: the units' states in one call, every unit read every
            // `FULL_EVERY` rounds (domain::resync).
            _ = resync.tick() => {
                rounds = rounds.wrapping_add(1);
                let pending = pending.touch();
                pending.recheck = true;
                pending.every |= rounds.is_multiple_of(resync::FULL_EVERY);
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                reader.apply(std::mem::take(&mut pending)).await?;
            }
        };
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Changes gathered during one debounce window.
#[derive(Debug, Default)]
struct Pending {
    since: Option<Instant>,
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
    relist: bool,
    /// A safety-net round: read the units whose listed states moved.
    recheck: bool,
    /// The round reads every loaded unit, moved or not.
    every: bool,
}

impl Pending {
    fn touch(&mut self) -> &mut Self {
        self.since.get_or_insert_with(Instant::now);
        self
    }
}

/// Reads units from systemd and writes them into the snapshot.
struct Reader<'a> {
    client: &'a Client,
    state: &'a SharedState,
    concurrency: usize,
    /// systemd's `UnitsLoadTimestampMonotonic` when the unit files were last listed (`None`:
    /// not known, or a systemd without it).
    files_stamp: Option<u64>,
}

impl Reader<'_> {
    async fn apply(&mut self, mut pending: Pending) -> Result<(), SystemdError> {
        if pending.relist {
            return self.relist().await;
        }
        let started = Instant::now();
        if pending.recheck {
            match self.recheck(pending.every).await? {
                Recheck::Full => {
                    debug!("safety net: listing everything");
                    return self.relist().await;
                }
                Recheck::Read(units) => {
                    debug!(
                        every = pending.every,
                        read = units.len(),
                        "safety net: units whose states moved"
                    );
                    pending.changed.extend(units);
                }
            }
            if pending.changed.is_empty() && pending.removed.is_empty() {
                self.state.update_runs(|s| record_run(s, true, started));
                return Ok(());
            }
        }
        let read = self.read_units(pending.changed.iter().cloned()).await;
        let mut success = read.failures == 0;
        let mut gone = Vec::new();
        for unit in pending.removed {
            // systemd unloads idle units; only a missing unit file means the tunnel is gone.
            match self.client.unit_file_state(&unit).await {
                Ok(Some(_)) => {}
                Ok(None) => gone.push(unit),
                Err(err) => {
                    warn!(%unit, error = %err, "cannot check the unit file of an unloaded unit");
                    success = false;
                }
            }
        }
        self.state.update(|s| {
            for (id, unit, status) in read.statuses {
                apply_status(&mut s.tunnels, id, unit, status);
            }
            for unit in gone {
                if let Ok(id) = TunnelId::from_unit_name(&unit) {
                    info!(tunnel = %id, "tunnel unit removed");
                    s.tunnels.remove(&id);
                }
            }
            s.troubles.unit_read_errors += read.failures;
            record_run(s, success, started);
        });
        Ok(())
    }

    /// Which units the safety net must read, from one listing of the units' states. The unit
    /// files are listed again only on a systemd that cannot say when it last reloaded.
    async fn recheck(&self, every: bool) -> Result<Recheck, SystemdError> {
        let stamp = self.client.units_load_stamp().await?;
        if stamp.is_some() && stamp != self.files_stamp {
            debug!("safety net: systemd reloaded since the unit files were listed");
            return Ok(Recheck::Full);
        }
        let listed = self.client.list_loaded_unit_states().await?;
        let listed_files = match stamp {
            Some(_) => None,
            None => {
                debug!("safety net: listing the unit files (systemd has no load stamp)");
                Some(self.client.list_unit_files().await?)
            }
        };
        let files = listed_files
            .as_deref()
            .map_or(Files::Unchanged, Files::Listed);
        let snapshot = self.state.read();
        let known = snapshot
            .tunnels
            .iter()
            .map(|(id, t)| {
                let state = KnownState {
                    unit: &t.unit,
                    load_state: &t.status.load_state,
                    active_state: t.status.active_state().as_str(),
                    sub_state: &t.status.sub_state,
                };
                (id.clone(), state)
            })
            .collect();
        let recheck = resync::recheck(&listed, files, &known, every, tunnel_id);
        if recheck == Recheck::Full {
            debug!("safety net: the set of tunnels changed");
        }
        Ok(recheck)
    }

    /// Lists every tunnel unit (loaded ones and those that only have a unit file) and replaces
    /// the snapshot's tunnel set with what it finds.
    async fn relist(&mut self) -> Result<(), SystemdError> {
        let started = Instant::now();
        // Read before both listings: a reload during them moves the stamp, and the next
        // safety-net round lists everything again.
        let stamp = self.client.units_load_stamp().await?;
        let loaded = self.client.list_loaded_units().await?;
        let files = self.client.list_unit_files().await?;
        let read = self.read_units(loaded.into_iter()).await;
        let unloaded: Vec<(TunnelId, String)> = files
            .into_iter()
            .filter_map(|unit| Some((tunnel_id(&unit)?, unit)))
            .collect();
        self.state.update(|s| {
            let mut next = BTreeMap::new();
            for (id, unit, status) in read.statuses {
                if let Some(old) = s.tunnels.remove(&id) {
                    next.insert(id.clone(), old);
                }
                apply_status(&mut next, id, unit, status);
            }
            for (id, unit) in unloaded {
                if next.contains_key(&id) {
                    continue;
                }
                // Not loaded: systemd has no state for it beyond its file, so it is inactive.
                let status = UnitStatus {
                    load_state: "not-loaded".into(),
                    active_state: Some(ActiveState::Inactive),
                    ..UnitStatus::default()
                };
                let tunnel = s
                    .tunnels
                    .remove(&id)
                    .unwrap_or_else(|| Tunnel::new(unit, status));
                next.insert(id, tunnel);
            }
            s.tunnels = next;
            s.troubles.unit_read_errors += read.failures;
            record_run(s, read.failures == 0, started);
        });
        self.files_stamp = stamp;
        Ok(())
    }

    /// Reads the status of `units` (non-tunnel names are skipped), `concurrency` at a time.
    async fn read_units(&self, units: impl Iterator<Item = String>) -> ReadResult {
        let reads = units
            .filter_map(|unit| Some((tunnel_id(&unit)?, unit)))
            .map(|(id, unit)| async move {
                let status = self.client.unit_status(&unit).await;
                (id, unit, status)
            });
        let mut results = stream::iter(reads).buffer_unordered(self.concurrency);
        let mut out = ReadResult::default();
        while let Some((id, unit, status)) = results.next().await {
            match status {
                Ok(status) => out.statuses.push((id, unit, status)),
                Err(err) => {
                    // The unit may have vanished between the signal and the read.
                    warn!(%unit, error = %err, "cannot read unit; keeping its last known state");
                    out.failures += 1;
                }
            }
        }
        out
    }
}

#[derive(Default)]
struct ReadResult {
    statuses: Vec<(TunnelId, String, UnitStatus)>,
    failures: u64,
}

fn tunnel_id(unit: &str) -> Option<TunnelId> {
    TunnelId::from_unit_name(unit)
        .map_err(|err| debug!(%unit, error = %err, "ignoring unit that is not a tunnel"))
        .ok()
}

fn record_run(s: &mut crate::state::Snapshot, success: bool, started: Instant) {
    let run = CollectorRun {
        success,
        duration: started.elapsed(),
    };
    s.collectors.insert(COLLECTOR_SYSTEMD, run);
}

/// Stores a freshly read status, counting restarts against the previous one.
///
/// A unit systemd reports as `not-found` (its file is gone) is dropped once it has no processes
/// left; while it still runs, it stays visible so that nobody loses sight of a live process.
fn apply_status(
    tunnels: &mut BTreeMap<TunnelId, Tunnel>,
    id: TunnelId,
    unit: String,
    status: UnitStatus,
) {
    if status.load_state == "not-found" && !status.active_state().may_have_processes() {
        if tunnels.remove(&id).is_some() {
            info!(tunnel = %id, "tunnel unit file removed");
        }
        return;
    }
    match tunnels.get_mut(&id) {
        Some(tunnel) => {
            tunnel.restarts.observe(&tunnel.status, &status);
            if tunnel.status.active_state() != status.active_state() {
                info!(tunnel = %id, from = %tunnel.status.active_state(), to = %status.active_state(), "tunnel state changed");
            }
            // Kept as it is when nothing changed: whoever shares it sees at once that it did not.
            if *tunnel.status != status {
                tunnel.status = Arc::new(status);
            }
        }
        None => {
            info!(tunnel = %id, state = %status.active_state(), "tunnel discovered");
            let tunnel = Tunnel::new(unit, status);
            tunnels.insert(id, tunnel);
        }
    }
}

/// Capped exponential backoff with full jitter: each delay is uniform in [min, current].
///
/// Hand-written (15 lines) because the crates that offer it wrap a retried future, while this
/// loop must also wait on shutdown between attempts.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next(&mut self) -> Duration {
        let upper = self.current;
        self.current = (self.current * 2).min(self.max);
        let span = upper.saturating_sub(self.min).as_secs_f64();
        self.min + Duration::from_secs_f64(span * rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ActiveState, load: &str, n_restarts: u32, start: u64) -> UnitStatus {
        UnitStatus {
            active_state: Some(state),
            load_state: load.into(),
            n_restarts,
            exec_main_start_usec: start,
            ..UnitStatus::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        for _ in 0..10 {
            let d = b.next();
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(400));
        }
        assert_eq!(b.current, Duration::from_millis(400));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }

    #[test]
    fn applying_statuses_counts_restarts_and_drops_removed_units() {
        let mut tunnels = BTreeMap::new();
        let id = TunnelId::new("a").unwrap();
        let unit = id.unit_name();
        apply_status(
            &mut tunnels,
            id.clone(),
            unit.clone(),
            status(ActiveState::Active, "loaded", 0, 10),
        );
        apply_status(
            &mut tunnels,
            id.clone(),
            unit.clone(),
            status(ActiveState::Active, "loaded", 2, 30),
        );
        assert_eq!(tunnels[&id].restarts.auto, 2);
        // File deleted but the process still runs: keep it visible.
        apply_status(
            &mut tunnels,
            id.clone(),
            unit.clone(),
            status(ActiveState::Active, "not-found", 2, 30),
        );
        assert!(tunnels.contains_key(&id));
        apply_status(
            &mut tunnels,
            id.clone(),
            unit,
            status(ActiveState::Inactive, "not-found", 2, 30),
        );
        assert!(tunnels.is_empty());
    }
}
