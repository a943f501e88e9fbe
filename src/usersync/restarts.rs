//! A growing wait before the watch tick tries again a tunnel whose sync failed, so a tunnel
//! without an API or a config is not read (and warned about) every second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::engine::Target;
use crate::domain::TunnelId;

/// The first wait after a failed sync: the watch period, as before waits existed.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a tunnel whose sync keeps failing (the round every
/// `users.interval` tries every tunnel as well).
pub const LAST_RETRY: Duration = Duration::from_secs(64);

#[derive(Debug, Clone, Copy)]
struct Retry {
    /// The core process the failure was for.
    start: u64,
    wait: Duration,
    at: Instant,
}

/// Tunnels whose last sync failed, and when each may be tried again.
#[derive(Debug, Default)]
pub struct Retries {
    retries: HashMap<TunnelId, Retry>,
}

impl Retries {
    pub fn succeeded(&mut self, id: &TunnelId) {
        self.retries.remove(id);
    }

    /// Waits [`FIRST_RETRY`] after a first failure with this core process, twice as long after
    /// each further one, up to [`LAST_RETRY`].
    pub fn failed(&mut self, id: &TunnelId, start: u64, now: Instant) {
        let wait = match self.retries.get(id) {
            Some(r) if r.start == start => (r.wait * 2).min(LAST_RETRY),
            _ => FIRST_RETRY,
        };
        let at = now + wait;
        self.retries.insert(id.clone(), Retry { start, wait, at });
    }

    /// Whether `target` may be tried now: never failed with this core process, or its wait is
    /// over.
    pub fn ready(&self, target: &Target, now: Instant) -> bool {
        self.retries
            .get(&target.id)
            .is_none_or(|r| r.start != target.core_start_usec || r.at <= now)
    }

    /// Tunnels whose wait is over.
    pub fn due(&self, now: Instant) -> Vec<TunnelId> {
        (self.retries.iter())
            .filter(|(_, r)| r.at <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets tunnels that no longer run the core process they failed with.
    pub fn retain(&mut self, targets: &[Target]) {
        let running: HashMap<&TunnelId, u64> = (targets.iter())
            .map(|t| (&t.id, t.core_start_usec))
            .collect();
        self.retries
            .retain(|id, r| running.get(id) == Some(&r.start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tunnel_waits_longer_each_time_and_a_restart_resets_it() {
        let id = TunnelId::new("a").unwrap();
        let target = |start| Target {
            id: id.clone(),
            config_path: "/nowhere".into(),
            core_start_usec: start,
        };
        let t0 = Instant::now();
        let mut retries = Retries::default();
        assert!(retries.ready(&target(1), t0));
        retries.failed(&id, 1, t0);
        assert!(!retries.ready(&target(1), t0));
        assert!(retries.ready(&target(2), t0), "another core process");
        assert!(retries.due(t0).is_empty());
        assert_eq!(retries.due(t0 + FIRST_RETRY), std::slice::from_ref(&id));

        let mut now = t0;
        for _ in 0..10 {
            retries.failed(&id, 1, now);
            now += Duration::from_millis(1);
        }
        assert!(!retries.ready(&target(1), now + LAST_RETRY / 2));
        assert!(retries.ready(&target(1), now + LAST_RETRY), "capped");

        retries.failed(&id, 2, now);
        assert!(retries.ready(&target(2), now + FIRST_RETRY), "reset");
        retries.retain(&[target(3)]);
        assert!(retries.due(now + LAST_RETRY).is_empty(), "stale: forgotten");
        retries.failed(&id, 3, now);
        retries.succeeded(&id);
        assert!(retries.due(now + LAST_RETRY).is_empty());
    }
}
