//! Where a sync reads a core's start time (`ExecMainStartTimestamp`) once it has applied its
//! changes: a new value means the core restarted meanwhile, from its config file, and what the
//! sync sent to the old process is gone.

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::domain::TunnelId;
use crate::state::SharedState;
use crate::systemd::Client;

/// A core's current start time in µs since the epoch; 0 when it is not running, `None` when
/// it cannot be told.
pub trait CoreClock: Send + Sync {
    fn start_usec<'a>(&'a self, id: &'a TunnelId) -> BoxFuture<'a, Option<u64>>;
}

/// Any `Fn(&TunnelId) -> Option<u64>` is a clock (tests, benches, a core started by hand).
impl<F> CoreClock for F
where
    F: Fn(&TunnelId) -> Option<u64> + Send + Sync,
{
    fn start_usec<'a>(&'a self, id: &'a TunnelId) -> BoxFuture<'a, Option<u64>> {
        let start = self(id);
        Box::pin(async move { start })
    }
}

/// Asks systemd itself (the unit's properties, read now), and falls back to the watcher's
/// snapshot while the bus is down. The snapshot alone can lag a restart by the watcher's
/// debounce and a signal's trip; systemd sets the timestamp when it forks the new process,
/// before that process reads its config.
pub struct SystemdClock {
    pub client: watch::Receiver<Option<Client>>,
    pub state: SharedState,
}

impl CoreClock for SystemdClock {
    fn start_usec<'a>(&'a self, id: &'a TunnelId) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let client = self.client.borrow().clone();
            if let Some(client) = client {
                match client.unit_status(&id.unit_name()).await {
                    Ok(status) => return Some(status.exec_main_start_usec),
                    Err(err) => {
                        tracing::debug!(tunnel = %id, error = %err, "core start time from the snapshot")
                    }
                }
            }
            let snapshot = self.state.read();
            let tunnel = snapshot.tunnels.get(id)?;
            Some(tunnel.status.exec_main_start_usec)
        })
    }
}
