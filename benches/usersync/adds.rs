//! One way of adding the users, measured, and how many of them the core holds afterwards.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use xray_warden::domain::{Protocol, User};
use xray_warden::xray::{ApiClient, ApiError};

use crate::cores::Core;
use crate::live::{Cpu, LiveCore};
use crate::{CALL_TIMEOUT, CONCURRENCY, TAG};

/// One way of adding the users, measured.
#[derive(Default)]
pub struct Adds {
    /// Users attempted and added (C: of the measured part only).
    pub tried: usize,
    pub ok: usize,
    /// Of the users tried, those the core holds afterwards (see [`held`]).
    pub held: usize,
    pub first_error: Option<String>,
    pub took: Duration,
    pub cpu: Cpu,
    pub core_rss_idle: u64,
    pub core_rss_after: u64,
    /// C only: the measured part was this many of `total` users.
    pub total: usize,
    pub skipped: Option<String>,
}

impl Adds {
    pub fn skipped(why: String) -> Adds {
        Adds {
            skipped: Some(why),
            ..Adds::default()
        }
    }

    /// Wall time for every user: measured, or extrapolated for C.
    pub fn took_all(&self) -> f64 {
        self.took.as_secs_f64() * self.total as f64 / self.tried.max(1) as f64
    }

    /// `text` when the figures are of a measured part only (C), else nothing.
    pub fn mark(&self, text: &'static str) -> &'static str {
        if self.tried < self.total { text } else { "" }
    }
}

/// How many of `list` the core holds. Xray lists its users (GetInboundUsers), so it is asked,
/// and only users of `list` count. V2Ray cannot list them: re-adding a held user answers
/// "already exists"; any user it did not hold is added by this, so it comes last.
pub async fn held(core: &LiveCore, list: &[User]) -> usize {
    let client = ApiClient::new(core.api, core.kind.flavour(), CALL_TIMEOUT);
    if core.kind == Core::Xray {
        let live = match client.inbound_users(TAG).await {
            Ok(Some(users)) => users,
            Ok(None) => panic!("this Xray cannot list users (GetInboundUsers is unknown)"),
            Err(e) => panic!("GetInboundUsers on {TAG}: {e}"),
        };
        let live: HashSet<String> = live.into_iter().map(|u| u.email).collect();
        return list.iter().filter(|u| live.contains(&u.email)).count();
    }
    let calls = list
        .iter()
        .map(|u| client.add_user(TAG, &Protocol::Vless, u));
    let answers: Vec<_> = stream::iter(calls)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let exists = |r: &&Result<(), ApiError>| matches!(r, Err(ApiError::AlreadyExists));
    answers.iter().filter(exists).count()
}
