//! Commands that talk to a running daemon over its HTTP API.

use std::fmt::Write;

use crate::config::{Config, Secrets};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the API is off: set api.token_file in the configuration")]
    NoToken,
    #[error("cannot reach the daemon at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the daemon answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// `POST /api/v1/sync` on the daemon `config` describes; returns its JSON answer.
pub async fn sync(
    config: &Config,
    secrets: &Secrets,
    force: bool,
) -> Result<serde_json::Value, RemoteError> {
    let token = secrets.api_token.as_ref().ok_or(RemoteError::NoToken)?;
    let url = format!("http://{}/api/v1/sync", config.listen);
    let http_error = |source| RemoteError::Http {
        url: url.clone(),
        source,
    };
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "force": force }).to_string())
        .send()
        .await
        .map_err(http_error)?;
    let status = response.status();
    let body = response.text().await.map_err(http_error)?;
    if !status.is_success() {
        return Err(RemoteError::Status {
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|_| RemoteError::Status {
        status: status.as_u16(),
        body,
    })
}

/// `xray-warden sync`: asks the daemon for a round and returns what to print (JSON or a table).
pub fn sync_command(
    config: &Config,
    secrets: &Secrets,
    force: bool,
    json: bool,
) -> Result<String, RemoteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a current-thread tokio runtime");
    let summary = runtime.block_on(sync(config, secrets, force))?;
    Ok(if json {
        format!("{summary:#}\n")
    } else {
        sync_table(&summary)
    })
}

/// A table of a sync summary, for people.
pub fn sync_table(summary: &serde_json::Value) -> String {
    let mut out = String::new();
    let source = summary["source_up"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "source: {}",
        if source {
            "up"
        } else {
            "DOWN (last good set kept, no removals)"
        }
    );
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>8} {:>8} {:>7} {:>6}  note",
        "tunnel", "added", "removed", "changed", "failed", "total"
    );
    for t in summary["tunnels"].as_array().into_iter().flatten() {
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        let note = match (t["error"].as_str(), t["guard_tripped"].as_bool()) {
            (Some(err), _) => format!("error: {err}"),
            (None, Some(true)) => "removal guard tripped (use --force)".into(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>8} {:>8} {:>7} {:>6}  {note}",
            t["tunnel"].as_str().unwrap_or("?"),
            n("added"),
            n("removed"),
            n("changed"),
            n("failed"),
            n("total")
        );
    }
    out
}
