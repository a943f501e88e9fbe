//! systemd's readiness protocol (sd_notify(3)) for the `Type=notify` unit in deploy/:
//! `READY=1` once the first listing of units is done (the moment `/ready` turns 200), a
//! `STATUS=` line kept current, `WATCHDOG=1` at half of `WatchdogSec=` while the snapshot can
//! still be read (a daemon wedged on its state lock stops pinging and systemd restarts it), and
//! `STOPPING=1` when shutdown begins.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd as a notify service) the task is not run. The `sd-notify` crate does the socket work (its safe `notify`, which
//! keeps the variable in the environment; systemd only accepts messages from the main PID
//! under the default `NotifyAccess=main`, so children inheriting it cannot speak for it).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::domain::ActiveState;
use crate::state::{SharedState, Snapshot};

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_PERIOD: Duration = Duration::from_secs(15);
/// How often the first listing is looked for before `READY=1`.
const READY_POLL: Duration = Duration::from_millis(50);

/// Whether systemd listens: started as a `Type=notify` service (`NOTIFY_SOCKET` set).
pub fn wanted() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Runs until `shutdown` is cancelled; only worth spawning when [`wanted`].
pub async fn run(state: SharedState, shutdown: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    // Start-up is bounded by the unit's TimeoutStartSec=, and the watchdog only runs once the
    // service is up: until READY=1 nothing needs sending.
    let mut poll = tokio::time::interval(READY_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return stopping(),
            _ = poll.tick() => {}
        }
        if state.read().listed {
            break;
        }
    }
    let status = status_line(&state.read());
    info!(status, "telling systemd the daemon is ready");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let period = watchdog.map_or(STATUS_PERIOD, |d| (d / 2).min(STATUS_PERIOD));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return stopping(),
            _ = ticks.tick() => {}
        }
        let status = status_line(&state.read());
        let mut message = vec![NotifyState::Status(&status)];
        if watchdog.is_some() {
            message.push(NotifyState::Watchdog);
        }
        send(&message);
    }
}

fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        warn!(error = %err, "cannot notify systemd");
    } else {
        debug!(?states, "notified systemd");
    }
}

/// The one-line `STATUS=` that `systemctl status xray-warden` shows.
pub fn status_line(snapshot: &Snapshot) -> String {
    if !snapshot.listed {
        return "waiting for the first listing of units".to_owned();
    }
    let count = |state: ActiveState| {
        snapshot
            .tunnels
            .values()
            .filter(|t| t.status.active_state.as_ref() == Some(&state))
            .count()
    };
    let mut line = format!(
        "{} tunnels: {} active, {} failed",
        snapshot.tunnels.len(),
        count(ActiveState::Active),
        count(ActiveState::Failed),
    );
    if !snapshot.orphans.is_empty() {
        line.push_str(&format!(", {} orphaned", snapshot.orphans.len()));
    }
    if !snapshot.systemd_up {
        line.push_str("; systemd bus lost, reconnecting");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TunnelId, UnitStatus};
    use crate::state::Tunnel;

    fn tunnel(state: ActiveState) -> Tunnel {
        Tunnel::new(
            "xray-tunnel-x.service".to_owned(),
            UnitStatus {
                active_state: Some(state),
                ..UnitStatus::default()
            },
        )
    }

    #[test]
    fn the_status_line_counts_tunnels_by_state() {
        let mut snapshot = Snapshot::default();
        assert_eq!(
            status_line(&snapshot),
            "waiting for the first listing of units"
        );
        snapshot.listed = true;
        snapshot.systemd_up = true;
        for (id, state) in [
            ("a", ActiveState::Active),
            ("b", ActiveState::Active),
            ("c", ActiveState::Failed),
            ("d", ActiveState::Inactive),
        ] {
            let id = TunnelId::new(id).unwrap();
            snapshot.tunnels.insert(id, tunnel(state));
        }
        assert_eq!(status_line(&snapshot), "4 tunnels: 2 active, 1 failed");
        snapshot.systemd_up = false;
        assert_eq!(
            status_line(&snapshot),
            "4 tunnels: 2 active, 1 failed; systemd bus lost, reconnecting"
        );
    }
}
