//! Reading a core's traffic counters (StatsService `QueryStats`) for the metrics.

use std::collections::HashSet;

use super::engine::{Engine, SyncError, Target, blocking};
use crate::domain::{StatName, Traffic, TrafficCounter, check_email, parse_stat_name};
use crate::tunnelcfg;

impl Engine {
    /// Reads the core's traffic counters: every inbound's and, when `per_user`, those of the
    /// tunnel's current users (counters of removed users live on in the core; they are left
    /// out), at most `cap` of them.
    pub async fn traffic(
        &mut self,
        target: &Target,
        per_user: bool,
        cap: usize,
    ) -> Result<Traffic, SyncError> {
        let path = target.config_path.clone();
        let config = blocking(move || Ok(tunnelcfg::read(&path)?)).await?;
        let addr = config.api.ok_or(SyncError::NoApi)?;
        let (client, _) = self.connection(target, addr).await?;
        let mut traffic = Traffic::default();
        for (name, value) in client.query_stats("inbound>>>", false).await? {
            if let Some(StatName::Inbound { tag, direction }) = parse_stat_name(&name) {
                traffic.inbounds.push(counter(tag, direction, value));
            }
        }
        traffic
            .inbounds
            .sort_by(|a, b| (&a.name, a.direction).cmp(&(&b.name, b.direction)));
        if per_user {
            let current: HashSet<String> = config
                .inbounds
                .iter()
                .flat_map(|i| &i.clients)
                .map(|u| u.email.to_lowercase())
                .collect();
            let mut users: Vec<TrafficCounter> = client
                .query_stats("user>>>", false)
                .await?
                .into_iter()
                .filter_map(|(name, value)| match parse_stat_name(&name) {
                    // The config's clients were never validated: a name the document
                    // would refuse (control characters, unbounded length) is no label.
                    Some(StatName::User { email, direction })
                        if current.contains(&email.to_lowercase())
                            && check_email(email).is_ok() =>
                    {
                        Some(counter(email, direction, value))
                    }
                    _ => None,
                })
                .collect();
            users.sort_by(|a, b| (&a.name, a.direction).cmp(&(&b.name, b.direction)));
            traffic.users_dropped = users.len().saturating_sub(cap);
            users.truncate(cap);
            traffic.users = users;
        }
        Ok(traffic)
    }
}

fn counter(name: &str, direction: &'static str, value: i64) -> TrafficCounter {
    TrafficCounter {
        name: name.to_owned(),
        direction,
        bytes: u64::try_from(value).unwrap_or(0),
    }
}
