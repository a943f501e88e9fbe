//! Commands that talk to a running daemon over its HTTP API, reading its answers as the
//! [`crate::contract`] types.

mod tables;

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::config::{Config, Secrets};
use crate::contract::{
    CleanupResults, ErrorBody, HealthReport, LogsView, OrphanList, OutcomeView, SyncSummary,
    TunnelList, TunnelView,
};
use tables::{Table, render};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the API is off: set api.token_file in the configuration")]
    NoToken,
    #[error("cannot reach the daemon at {url}: {source}")]
    Http { url: Url, source: reqwest::Error },
    #[error("the daemon at {url} did not answer within {}", humantime::format_duration(*.after))]
    Timeout { url: Url, after: Duration },
    #[error("the daemon answered {status} {}: {}", .error.error, .error.message)]
    Refused { status: u16, error: ErrorBody },
    #[error("the daemon answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the daemon's answer is not what this version reads ({0}); --json shows it as sent")]
    Unexpected(serde_json::Error),
    /// `.` and `..` are resolved away by every URL, so they cannot reach the daemon as typed.
    #[error("{0:?} is not a tunnel id (a URL cannot carry it as a path segment)")]
    DotSegment(String),
}

/// How an answer becomes a table: read as its contract type, then printed.
type Render = fn(serde_json::Value) -> Result<String, serde_json::Error>;

/// What a management command asks of the daemon, and how its answer is printed.
pub struct Request {
    pub method: reqwest::Method,
    /// The path's segments, each sent as typed: percent-encoded, never split or resolved.
    pub path: Vec<String>,
    pub query: Option<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    pub table: Render,
}

impl Request {
    /// A request to `/api/v1/{path}`, answered with a `T`.
    fn new<T: Table>(method: reqwest::Method, path: &[&str], body: Option<Vec<u8>>) -> Self {
        let path = ["api", "v1"].iter().chain(path);
        Self {
            method,
            path: path.map(|s| (*s).to_owned()).collect(),
            query: None,
            body,
            table: render::<T>,
        }
    }

    fn get<T: Table>(path: &[&str]) -> Self {
        Self::new::<T>(reqwest::Method::GET, path, None)
    }

    /// The URL of this request on the daemon listening on `listen`.
    pub fn url(&self, listen: SocketAddr) -> Result<Url, RemoteError> {
        if let Some(dot) = self.path.iter().find(|s| matches!(s.as_str(), "." | "..")) {
            return Err(RemoteError::DotSegment(dot.clone()));
        }
        let mut url = Url::parse(&format!("http://{listen}/")).expect("a socket address is a host");
        url.path_segments_mut()
            .expect("an http URL has a path")
            .extend(&self.path);
        if let Some((key, value)) = &self.query {
            url.query_pairs_mut().append_pair(key, value);
        }
        Ok(url)
    }
}

/// How long the CLI waits for the daemon to accept its connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The CLI's HTTP client: straight to the daemon, never through a proxy (`http_proxy` and
/// friends would carry the bearer token to whoever runs the proxy), within `timeout` overall.
fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
}

/// One call to the daemon's API with the configured token, answered within `timeout`; the
/// JSON answer or why not.
pub async fn call(
    config: &Config,
    secrets: &Secrets,
    request: Request,
    timeout: Duration,
) -> Result<serde_json::Value, RemoteError> {
    let token = secrets.api_token.as_ref().ok_or(RemoteError::NoToken)?;
    let url = request.url(config.listen)?;
    let http_error = |source: reqwest::Error| match source.is_timeout() {
        true => RemoteError::Timeout {
            url: url.clone(),
            after: timeout,
        },
        false => RemoteError::Http {
            url: url.clone(),
            source,
        },
    };
    let mut call = client(timeout)
        .map_err(http_error)?
        .request(request.method, url.clone())
        .bearer_auth(token);
    if let Some(body) = request.body {
        call = call
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let response = call.send().await.map_err(http_error)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(http_error)?;
    let answer: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    match answer {
        Some(answer) if (200..300).contains(&status) => Ok(answer),
        _ => Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(error) => RemoteError::Refused { status, error },
            Err(_) => RemoteError::Status { status, body: text },
        }),
    }
}

/// Runs a management command within `timeout`; returns what to print (JSON or a table).
pub fn command(
    config: &Config,
    secrets: &Secrets,
    request: Request,
    json: bool,
    timeout: Duration,
) -> Result<String, RemoteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a current-thread tokio runtime");
    let table = request.table;
    let answer = runtime.block_on(call(config, secrets, request, timeout))?;
    if json {
        return Ok(format!("{answer:#}\n"));
    }
    table(answer).map_err(RemoteError::Unexpected)
}

/// The request of `xray-warden sync [--force]`.
pub fn sync_request(force: bool) -> Request {
    let body = serde_json::json!({ "force": force }).to_string();
    Request::new::<SyncSummary>(reqwest::Method::POST, &["sync"], Some(body.into_bytes()))
}

/// The request a `xray-warden tunnels ...` command makes. Reads the config file of `create`.
pub fn tunnels_request(action: &crate::cli::TunnelsAction) -> std::io::Result<Request> {
    use crate::cli::TunnelsAction as A;
    use reqwest::Method;
    let act = |method, path: &[&str]| Request::new::<OutcomeView>(method, path, None);
    Ok(match action {
        A::List => Request::get::<TunnelList>(&["tunnels"]),
        A::Show { id } => Request::get::<TunnelView>(&["tunnels", id]),
        A::Create { id, file } => {
            let config = std::fs::read(file)?;
            Request::new::<OutcomeView>(Method::PUT, &["tunnels", id], Some(config))
        }
        A::Start { id } => act(Method::POST, &["tunnels", id, "start"]),
        A::Stop { id } => act(Method::POST, &["tunnels", id, "stop"]),
        A::Restart { id } => act(Method::POST, &["tunnels", id, "restart"]),
        A::Delete { id } => act(Method::DELETE, &["tunnels", id]),
        A::Logs { id, lines } => Request {
            query: Some(("lines", lines.to_string())),
            ..Request::get::<LogsView>(&["tunnels", id, "logs"])
        },
    })
}

/// The request of `xray-warden orphans ...`.
pub fn orphans_request(action: &crate::cli::OrphansAction) -> Request {
    match action {
        crate::cli::OrphansAction::List => Request::get::<OrphanList>(&["orphans"]),
        crate::cli::OrphansAction::Cleanup { dry_run } => {
            let body = serde_json::json!({ "dry_run": dry_run }).to_string();
            let path = ["orphans", "cleanup"];
            Request::new::<CleanupResults>(reqwest::Method::POST, &path, Some(body.into_bytes()))
        }
    }
}

/// The request of `xray-warden health`.
pub fn health_request() -> Request {
    Request::get::<HealthReport>(&["health"])
}

#[cfg(test)]
mod tests;
