//! The HTTP API's path and query parsing, driven through the real router in-process
//! (`tower::ServiceExt::oneshot`): arbitrary URIs, methods, tokens and bodies, aimed at the
//! routes that parse a tunnel id from the path or `lines`, `tunnelId`, `action` and `confirm`
//! from the query. systemd is "down" (no bus), so no request can act on the host: whatever
//! gets through the parsing stops at "systemd is unavailable".
//!
//! Beyond "no panic": without the right bearer token no /api request succeeds; no request
//! answers 500; a JSON answer is valid JSON.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use xray_warden::alertmanager::Alert;
use xray_warden::config::Config;
use xray_warden::http::api::ApiState;
use xray_warden::http::{AppState, router};
use xray_warden::metrics::Metrics;
use xray_warden::ops::remediate::Worker;
use xray_warden::ops::{Audit, OpLock, Operations, Parts};
use xray_warden::state::SharedState;

const TOKEN: &str = "fuzz-token-0123456789";

#[derive(Debug, Arbitrary)]
struct Input {
    token: Token,
    method: u8,
    prefix: u8,
    rest: String,
    body: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Token {
    Right,
    None,
    Other(String),
}

const PREFIXES: [&str; 12] = [
    "",
    "/api/v1/tunnels/",
    "/api/v1/tunnels/t1/logs?lines=",
    "/api/v1/tunnels/t1/",
    "/api/services?action=logs&tunnelId=",
    "/api/services?action=logs&tunnelId=t1&lines=",
    "/api/services?",
    "/api/v1/",
    "/api/v1/tunnels?",
    "/api/v1/orphans/cleanup?",
    "/live?",
    "/metrics?",
];

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

struct Harness {
    rt: Runtime,
    router: Router,
    /// The remediation worker's queue, drained after each request instead of acted on.
    alerts: Mutex<mpsc::Receiver<Vec<Alert>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (router, queue) = rt.block_on(async { build() });
        Harness {
            rt,
            router,
            alerts: Mutex::new(queue),
        }
    })
}

/// The daemon's router with the API on and no systemd connection. Every host path points into
/// a directory of this crate's target dir that is never created.
fn build() -> (Router, mpsc::Receiver<Vec<Alert>>) {
    let mut config = Config::default();
    let scratch = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/api-scratch");
    config.tunnels.config_dir = scratch.join("etc");
    config.tunnels.unit_dir = scratch.join("units");
    config.tunnels.log_dir = scratch.join("log");
    config.users.state_dir = scratch.join("state");
    let state = SharedState::default();
    let metrics = Metrics::new(state.clone());
    let ops = Operations::new(Parts {
        client: watch::channel(None).1,
        tunnels: config.tunnels.clone(),
        health: xray_warden::health::Settings::from_config(&config),
        ledger: Default::default(),
        state: state.clone(),
        sync: None,
        audit: Audit::new(None, metrics.registry()),
        lock: OpLock::default(),
        tracker: TaskTracker::new(),
    });
    let (_worker, alerts, queue) = Worker::new(
        ops.clone(),
        &config.remediation,
        &config.users,
        metrics.registry(),
    );
    let app = AppState {
        metrics,
        state: state.clone(),
        shutdown: CancellationToken::new(),
        api: Some(ApiState {
            token: Arc::new(TOKEN.into()),
            state,
            ops,
            alerts,
        }),
    };
    (router(app), queue)
}

fuzz_target!(|input: Input| {
    let h = harness();
    let prefix = PREFIXES[usize::from(input.prefix) % PREFIXES.len()];
    let uri = format!("{prefix}{}", input.rest);
    let method = METHODS[usize::from(input.method) % METHODS.len()].clone();
    let mut request = Request::builder().method(method).uri(&uri);
    let right = format!("Bearer {TOKEN}");
    let authorization = match &input.token {
        Token::Right => Some(right.as_str()),
        Token::None => None,
        Token::Other(t) => Some(t.as_str()),
    };
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let authed = authorization == Some(right.as_str());
    let Ok(request) = request.body(Body::from(input.body)) else {
        return; // not a URI or header value http accepts: hyper would have refused it
    };
    let path = request.uri().path().to_owned();
    let (status, json, body) = h.rt.block_on(async {
        let response = h.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body in memory");
        (status, json, body)
    });
    while h.alerts.lock().unwrap().try_recv().is_ok() {}
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{uri:?}: {body:?}"
    );
    if path.starts_with("/api") && !authed {
        assert!(
            !status.is_success(),
            "{uri:?} answered {status} without the token"
        );
    }
    if json && !body.is_empty() {
        serde_json::from_slice::<serde_json::Value>(&body).expect("a JSON answer is JSON");
    }
});
