//! Commands that talk to a running daemon over its HTTP API.

mod tables;

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

/// One call to the daemon's `/api` with the configured token; the JSON answer or why not.
pub async fn call(
    config: &Config,
    secrets: &Secrets,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<serde_json::Value, RemoteError> {
    let token = secrets.api_token.as_ref().ok_or(RemoteError::NoToken)?;
    let url = format!("http://{}{path}", config.listen);
    let http_error = |source| RemoteError::Http {
        url: url.clone(),
        source,
    };
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let response = request.send().await.map_err(http_error)?;
    let status = response.status();
    let text = response.text().await.map_err(http_error)?;
    if !status.is_success() {
        return Err(RemoteError::Status {
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|_| RemoteError::Status {
        status: status.as_u16(),
        body: text,
    })
}

/// What a management command asks of the daemon, and how its answer is printed.
pub struct Request {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub table: fn(&serde_json::Value) -> String,
}

impl Request {
    pub fn get(path: impl Into<String>, table: fn(&serde_json::Value) -> String) -> Self {
        Self {
            method: reqwest::Method::GET,
            path: path.into(),
            body: None,
            table,
        }
    }

    pub fn send(method: reqwest::Method, path: impl Into<String>, body: Option<Vec<u8>>) -> Self {
        Self {
            method,
            path: path.into(),
            body,
            table: tables::results,
        }
    }
}

/// Runs a management command; returns what to print (JSON or a table).
pub fn command(
    config: &Config,
    secrets: &Secrets,
    request: Request,
    json: bool,
) -> Result<String, RemoteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a current-thread tokio runtime");
    let answer = runtime.block_on(call(
        config,
        secrets,
        request.method,
        &request.path,
        request.body,
    ))?;
    Ok(if json {
        format!("{answer:#}\n")
    } else {
        (request.table)(&answer)
    })
}

/// The request of `xray-warden sync [--force]`.
pub fn sync_request(force: bool) -> Request {
    let body = serde_json::json!({ "force": force })
        .to_string()
        .into_bytes();
    Request {
        method: reqwest::Method::POST,
        path: "/api/v1/sync".into(),
        body: Some(body),
        table: sync_table,
    }
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

/// The request a `xray-warden tunnels ...` command makes. Reads the config file of `create`.
pub fn tunnels_request(action: &crate::cli::TunnelsAction) -> std::io::Result<Request> {
    use crate::cli::TunnelsAction as A;
    use reqwest::Method;
    let at = |id: &str, rest: &str| format!("/api/v1/tunnels/{}{rest}", encode(id));
    Ok(match action {
        A::List => Request::get("/api/v1/tunnels", tables::tunnels),
        A::Show { id } => Request::get(at(id, ""), tables::tunnel),
        A::Create { id, file } => {
            Request::send(Method::PUT, at(id, ""), Some(std::fs::read(file)?))
        }
        A::Start { id } => Request::send(Method::POST, at(id, "/start"), None),
        A::Stop { id } => Request::send(Method::POST, at(id, "/stop"), None),
        A::Restart { id } => Request::send(Method::POST, at(id, "/restart"), None),
        A::Delete { id } => Request::send(Method::DELETE, at(id, ""), None),
        A::Logs { id, lines } => {
            Request::get(at(id, &format!("/logs?lines={lines}")), tables::logs)
        }
    })
}

/// The request of `xray-warden orphans ...`.
pub fn orphans_request(action: &crate::cli::OrphansAction) -> Request {
    match action {
        crate::cli::OrphansAction::List => Request::get("/api/v1/orphans", tables::orphans),
        crate::cli::OrphansAction::Cleanup { dry_run } => {
            let body = serde_json::json!({ "dry_run": dry_run }).to_string();
            Request::send(
                reqwest::Method::POST,
                "/api/v1/orphans/cleanup",
                Some(body.into_bytes()),
            )
        }
    }
}

/// The request of `xray-warden health`.
pub fn health_request() -> Request {
    Request::get("/api/v1/health", tables::health)
}

/// Percent-encodes a path segment, so that an invalid id reaches the daemon (and its 400) as
/// it was typed instead of changing the path.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
