//! Reading who is online on a core (Xray's online API) for the metrics.

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::domain::{Online, UserIps, online_users_capped};
use crate::xray::{ApiClient, ApiError};

/// Online IP lists asked for at once: one call per online user, bounded like the sync's calls.
const IN_FLIGHT: usize = 8;

/// What to read beside the number of online users.
#[derive(Debug, Clone, Copy)]
pub struct OnlineOptions {
    /// Also count each online user's addresses (one call per user, up to `cap`).
    pub per_user: bool,
    /// At most this many per-user series per tunnel.
    pub cap: usize,
}

/// The core's online users; `Ok(None)` when it has no online API (V2Ray: no series, not 0).
/// Every user the core reports counts, including users removed while still connected (a
/// remove does not cut open connections, semantics "API the warden does not use yet"): those
/// are online. Per-user counts cover the first `cap` users by email.
pub async fn read(client: &ApiClient, options: OnlineOptions) -> Result<Option<Online>, ApiError> {
    let Some(names) = client.online_users().await? else {
        return Ok(None);
    };
    let mut online = Online {
        users: names.len(),
        ..Online::default()
    };
    if !options.per_user {
        return Ok(Some(online));
    }
    let (emails, dropped) = online_users_capped(&names, options.cap);
    online.users_dropped = dropped;
    // Owned emails and a client per call: futures borrowing from here are not `Send` for every
    // lifetime, which the loop's spawned task needs.
    let emails: Vec<String> = emails.into_iter().map(str::to_owned).collect();
    let counts: Vec<Option<UserIps>> = stream::iter(emails)
        .map(|email| {
            let client = client.clone();
            async move {
                let ips = client.online_ips(&email).await?;
                Ok::<_, ApiError>(ips.map(|ips| UserIps {
                    user: email,
                    ips: ips.len(),
                }))
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    // An Xray with GetAllOnlineUsers has GetStatsOnlineIpList too (facts §4.1); should one
    // lack it, its users are left out rather than shown as offline.
    online.user_ips = counts.into_iter().flatten().collect();
    Ok(Some(online))
}
