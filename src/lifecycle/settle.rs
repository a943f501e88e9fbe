//! After a create or replace starts a unit: does the core keep running?
//!
//! Units are `Type=exec`, so the start job is done as soon as the core is exec'd; a core that
//! then fails to bind its port exits a moment later and systemd restarts it over and over.
//! So the unit is watched for `tunnels.start_settle`: it must stay `active` on the same main
//! process with no automatic restart. Then, when the config has a gRPC API, that API must
//! answer within [`API_WAIT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{Lifecycle, LifecycleError, blocking, logs};
use crate::domain::{ActiveState, TunnelId, UnitStatus};

/// How often the unit is read while it settles.
const POLL: Duration = Duration::from_millis(100);
/// How long the core's API may take to answer once the unit has settled.
pub const API_WAIT: Duration = Duration::from_secs(10);
/// Deadline of one attempt to reach the API.
const API_ATTEMPT: Duration = Duration::from_secs(1);
/// Lines of the log read for the core's complaint.
const LOG_LINES: usize = 60;

impl Lifecycle {
    /// `Ok` once unit `id`, just started by `job`, has stayed up for the settle time and, when
    /// `config` has an API address, that API answers; else [`LifecycleError::StartFailed`] with
    /// the core's last words from its log.
    pub(super) async fn settle(
        &self,
        id: &TunnelId,
        job: &'static str,
        config: &[u8],
    ) -> Result<(), LifecycleError> {
        let unit = id.unit_name();
        let first = self.client.unit_status(&unit).await?;
        let deadline = Instant::now() + self.tunnels.start_settle;
        let mut now = first.clone();
        loop {
            if let Some(problem) = left_running(&first, &now) {
                return Err(self.start_failed(id, job, problem).await);
            }
            if Instant::now() >= deadline {
                break;
            }
            sleep(POLL).await;
            now = self.client.unit_status(&unit).await?;
        }
        let Some(api) = api_address(config) else {
            tracing::debug!(tunnel = %id, "no API in the config; not waiting for one");
            return Ok(());
        };
        let deadline = Instant::now() + API_WAIT;
        loop {
            // An API that answers without serving a known service still answered.
            let answered = matches!(
                crate::xray::ApiClient::detect(api, API_ATTEMPT).await,
                Ok(_) | Err(crate::xray::ApiError::NoServices(_))
            );
            let now = self.client.unit_status(&unit).await?;
            if let Some(problem) = left_running(&first, &now) {
                return Err(self.start_failed(id, job, problem).await);
            }
            if answered {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let problem = format!("its API at {api} did not answer within {API_WAIT:?}");
                return Err(self.start_failed(id, job, problem).await);
            }
            sleep(POLL * 2).await;
        }
    }

    /// The error for a core that did not keep running, with its complaint when the log has one.
    async fn start_failed(
        &self,
        id: &TunnelId,
        job: &'static str,
        problem: String,
    ) -> LifecycleError {
        let log = self.paths(id).log;
        let lines = blocking(move || Ok(logs::tail(&log, LOG_LINES).unwrap_or_default())).await;
        let reason = match lines.ok().as_deref().and_then(complaint) {
            Some(said) => format!("{problem}; it said: {said}"),
            None => problem,
        };
        LifecycleError::StartFailed {
            unit: id.unit_name(),
            job,
            reason,
        }
    }
}

/// The API address of `config`, when it has one the warden can dial.
fn api_address(config: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(config).ok()?;
    crate::tunnelcfg::parse(text).ok()?.api
}

/// Why the unit no longer runs the process it ran in `first`, or `None` while it does.
fn left_running(first: &UnitStatus, now: &UnitStatus) -> Option<String> {
    let active = now.active_state.as_ref() == Some(&ActiveState::Active);
    let same = now.main_pid != 0 && now.main_pid == first.main_pid;
    if active && same && now.n_restarts == first.n_restarts {
        return None;
    }
    let state = match &now.active_state {
        Some(state) => format!("{state}/{}", now.sub_state),
        None => "gone".to_owned(),
    };
    let exit = match now.exec_main_code {
        1 => format!("the core exited with status {}", now.exec_main_status),
        2 | 3 => format!("the core was killed by signal {}", now.exec_main_status),
        _ if now.main_pid != first.main_pid => "the core was replaced".to_owned(),
        _ => "the core stopped".to_owned(),
    };
    Some(format!("{exit} (the unit is {state})"))
}

/// The core's own words about its last start: the last lines of the last start's output in
/// `lines` (a log tail), from after the last version banner; "Failed to start" lines win.
fn complaint(lines: &[String]) -> Option<String> {
    let blocks: Vec<&[String]> = lines.split(|l| is_banner(l)).collect();
    let said: Vec<&str> = blocks
        .iter()
        .rev()
        .map(|block| {
            block
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty() && *l != "A unified platform for anti-censorship.")
                .collect::<Vec<_>>()
        })
        .find(|block| !block.is_empty())?;
    let failed: Vec<&str> = said
        .iter()
        .copied()
        .filter(|l| l.starts_with("Failed to start"))
        .collect();
    let chosen = if failed.is_empty() {
        &said[said.len().saturating_sub(3)..]
    } else {
        &failed[failed.len() - 1..]
    };
    let text = chosen.join(" | ");
    // A log line is the core's, but its length is not: keep the answer bounded.
    Some(match text.char_indices().nth(2000) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    })
}

/// The first line a core prints: `V2Ray 4.34.0 (...)`, `Xray 26.3.27 (...)`.
fn is_banner(line: &str) -> bool {
    ["V2Ray ", "Xray "].iter().any(|name| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_last_starts_failure_is_the_complaint() {
        let log = lines(
            "V2Ray 4.34.0 (user) 20230518 (go1.19.8 linux/amd64)\n\
             A unified platform for anti-censorship.\n\
             2026/01/01 [Warning] old core ran fine\n\
             V2Ray 4.34.0 (user) 20230518 (go1.19.8 linux/amd64)\n\
             A unified platform for anti-censorship.\n\
             2026/01/01 [Info] Reading config: x.json\n\
             Failed to start v2ray.com/core/app/proxyman/inbound: failed to listen TCP on 1 > \
             listen tcp 127.0.0.1:1: bind: address already in use\n",
        );
        let said = complaint(&log).unwrap();
        assert!(said.starts_with("Failed to start"), "{said}");
        assert!(said.ends_with("address already in use"), "{said}");
    }

    #[test]
    fn a_start_cut_short_falls_back_to_the_one_before() {
        let log = lines(
            "Xray 26.3.27 (Xray, Penetrates Everything.)\nsomething broke\nworse\n\
             Xray 26.3.27 (Xray, Penetrates Everything.)\nA unified platform for anti-censorship.\n",
        );
        assert_eq!(complaint(&log).unwrap(), "something broke | worse");
        assert_eq!(
            complaint(&lines("no banner at all")).unwrap(),
            "no banner at all"
        );
        assert_eq!(complaint(&[]), None);
        let long = vec!["x".repeat(5000)];
        assert_eq!(complaint(&long).unwrap().len(), 2003);
    }

    fn status(state: &str, pid: u32, restarts: u32) -> UnitStatus {
        UnitStatus {
            active_state: Some(ActiveState::parse(state)),
            sub_state: "running".into(),
            main_pid: pid,
            n_restarts: restarts,
            ..UnitStatus::default()
        }
    }

    #[test]
    fn a_unit_left_running_is_told_apart() {
        let first = status("active", 10, 0);
        assert_eq!(left_running(&first, &first), None);
        let mut exited = status("activating", 0, 0);
        exited.sub_state = "auto-restart".into();
        exited.exec_main_code = 1;
        exited.exec_main_status = 255;
        assert_eq!(
            left_running(&first, &exited).unwrap(),
            "the core exited with status 255 (the unit is activating/auto-restart)"
        );
        let restarted = status("active", 11, 1);
        assert!(
            left_running(&first, &restarted)
                .unwrap()
                .contains("replaced")
        );
        let same_pid_new_count = status("active", 10, 1);
        assert!(left_running(&first, &same_pid_new_count).is_some());
        let mut killed = status("failed", 0, 0);
        killed.exec_main_code = 2;
        killed.exec_main_status = 9;
        assert!(left_running(&first, &killed).unwrap().contains("signal 9"));
        // A unit that was never up fails at once.
        let never = status("activating", 0, 0);
        assert!(left_running(&never, &never).is_some());
    }
}
