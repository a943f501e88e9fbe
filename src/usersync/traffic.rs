//! Reading a core's traffic counters (StatsService `QueryStats`) and, on Xray, who is online,
//! for the metrics.

use tracing::warn;

use super::configs::Facts;
use super::engine::{Engine, SyncError, Target};
use super::online::{self, OnlineOptions};
use crate::domain::{StatName, Traffic, TrafficCounter, check_email, parse_stat_name};
use crate::xray::ApiClient;

/// What the traffic tick reads beside every inbound's and outbound's counters.
#[derive(Debug, Clone, Copy)]
pub struct TrafficOptions {
    /// Per-user byte counters (`users.per_user_traffic`).
    pub per_user: bool,
    /// Per-user online address counts (`users.per_user_online_ips`).
    pub per_user_online: bool,
    /// At most this many series per tunnel in each per-user family (`users.max_user_series`).
    pub cap: usize,
}

impl Engine {
    /// Reads the core's traffic counters through the API its config names (`config`): every
    /// inbound's and outbound's and, when `options.per_user`, those of the config's current
    /// users (counters of removed users live on in the core; they are left out), at most
    /// `options.cap` of them. Then who is online,
    /// where the core can tell (Xray); that part failing only leaves it out, with a warning.
    pub async fn traffic(
        &mut self,
        target: &Target,
        config: &Facts,
        options: TrafficOptions,
    ) -> Result<Traffic, SyncError> {
        let addr = config.api.ok_or(SyncError::NoApi)?;
        let (client, _) = self.connection(target, addr).await?;
        let mut traffic = Traffic {
            inbounds: handler_counters(&client, Handlers::Inbound).await?,
            outbounds: handler_counters(&client, Handlers::Outbound).await?,
            ..Traffic::default()
        };
        if options.per_user {
            let current = &config.emails;
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
            sort(&mut users);
            traffic.users_dropped = users.len().saturating_sub(options.cap);
            users.truncate(options.cap);
            traffic.users = users;
        }
        let online_options = OnlineOptions {
            per_user: options.per_user_online,
            cap: options.cap,
        };
        traffic.online = online::read(&client, online_options)
            .await
            .map_err(|err| warn!(tunnel = %target.id, error = %err, "no online users"))
            .ok()
            .flatten();
        Ok(traffic)
    }
}

/// Which counters of a tunnel's handlers to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handlers {
    Inbound,
    Outbound,
}

/// Every inbound's or outbound's counters, by tag and direction. The pattern is a substring
/// (facts P9), so names are parsed and only the asked kind is kept.
async fn handler_counters(
    client: &ApiClient,
    kind: Handlers,
) -> Result<Vec<TrafficCounter>, SyncError> {
    let pattern = match kind {
        Handlers::Inbound => "inbound>>>",
        Handlers::Outbound => "outbound>>>",
    };
    let mut counters: Vec<TrafficCounter> = client
        .query_stats(pattern, false)
        .await?
        .into_iter()
        .filter_map(|(name, value)| match (kind, parse_stat_name(&name)?) {
            (Handlers::Inbound, StatName::Inbound { tag, direction })
            | (Handlers::Outbound, StatName::Outbound { tag, direction }) => {
                Some(counter(tag, direction, value))
            }
            _ => None,
        })
        .collect();
    sort(&mut counters);
    Ok(counters)
}

fn sort(counters: &mut [TrafficCounter]) {
    counters.sort_by(|a, b| (&a.name, a.direction).cmp(&(&b.name, b.direction)));
}

fn counter(name: &str, direction: &'static str, value: i64) -> TrafficCounter {
    TrafficCounter {
        name: name.to_owned(),
        direction,
        bytes: u64::try_from(value).unwrap_or(0),
    }
}
