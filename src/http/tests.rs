//! The server in-process, on port 0: readiness, and what bounds a client (headers, idle
//! keep-alive, the connection cap, the body and handler timeouts). The 2,000-connection case
//! against the real binary is tests/http_limits_proof.rs.

use std::time::Instant;

use axum::body::Bytes;
use axum::routing::post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn app() -> AppState {
    let state = SharedState::default();
    AppState {
        metrics: Metrics::new(state.clone()),
        state,
        shutdown: CancellationToken::new(),
        api: None,
    }
}

async fn start() -> (String, AppState) {
    start_with(limits()).await
}

async fn start_with(limits: Limits) -> (String, AppState) {
    let app = app();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, app.clone(), limits));
    (base, app)
}

/// Serves `router` (plus the limits) on port 0; its address and stop token.
async fn start_router(router: Router, limits: Limits) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve_router(listener, router, stop.clone(), limits));
    (addr, stop)
}

/// A minimal HTTP/1.0 GET, to keep test dependencies down.
async fn fetch(base: &str, path: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// Reads until the server closes `stream`; false if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut buf))
        .await
        .is_ok()
}

#[tokio::test]
async fn ready_follows_listing_and_shutdown() {
    let (base, app) = start().await;
    assert_eq!(fetch(&base, "/live").await.0, 200);
    assert_eq!(fetch(&base, "/ready").await.0, 503);
    app.state.update(|s| s.listed = true);
    assert_eq!(fetch(&base, "/ready").await.0, 200);
    let (status, body) = fetch(&base, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("xray_warden_systemd_up 0"), "{body}");
    assert_eq!(fetch(&base, "/nope").await.0, 404);
}

#[tokio::test]
async fn not_ready_once_shutdown_starts() {
    let (_base, app) = start().await;
    app.state.update(|s| s.listed = true);
    app.shutdown.cancel();
    let (status, _) = ready(State(app)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

fn quick_headers() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(200),
        ..limits()
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_do_not_hold_shutdown() {
    let (base, app) = start_with(quick_headers()).await;
    let addr = base.trim_start_matches("http://");
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(3)).await,
        "the server kept a header-less connection open"
    );
    app.shutdown.cancel();
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (base, app) = start_with(quick_headers()).await;
    let addr = base.trim_start_matches("http://");
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Kept alive after its answer, then silent: closed like a client slow to send headers.
    assert!(
        closed_within(&mut kept, Duration::from_secs(3)).await,
        "an idle kept-alive connection stayed open"
    );
    app.shutdown.cancel();
}

#[tokio::test]
async fn idle_connections_at_the_cap_make_room_for_live() {
    let cap = 16;
    let (base, app) = start_with(Limits {
        max_connections: cap,
        ..limits()
    })
    .await;
    let addr = base.trim_start_matches("http://");
    // Three times the cap of silent clients (the header timeout is 5 s: they would hold every
    // slot for that long), then /live.
    let mut idle = Vec::new();
    for _ in 0..3 * cap {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let live = tokio::time::timeout(Duration::from_secs(1), fetch(&base, "/live")).await;
    assert_eq!(live.expect("/live did not answer within 1 s").0, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The oldest were closed to make room; the newest stay.
    assert!(closed_within(&mut idle[0], Duration::from_millis(500)).await);
    assert!(!closed_within(&mut idle[3 * cap - 1], Duration::from_millis(200)).await);
    app.shutdown.cancel();
}

#[tokio::test]
async fn a_request_in_progress_is_never_evicted() {
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }),
    );
    let limits = Limits {
        max_connections: 1,
        ..limits()
    };
    let (addr, stop) = start_router(router, limits).await;
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { fetch(&addr, "/slow").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The only slot is busy: the newcomer is closed, the request in progress is answered.
    let mut newcomer = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut newcomer, Duration::from_secs(1)).await);
    assert_eq!(slow.await.unwrap(), (200, "done".to_owned()));
    stop.cancel();
}

fn echo() -> Router {
    Router::new().route("/echo", post(|body: Bytes| async move { body }))
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_at_its_deadline() {
    let limits = Limits {
        body_timeout: Duration::from_millis(500),
        ..limits()
    };
    let (addr, stop) = start_router(echo(), limits).await;
    let mut client = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    // One byte every 100 ms: each arrives well within any per-read timeout.
    let started = Instant::now();
    let trickle = async {
        for _ in 0..100 {
            if client.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), trickle).await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    stop.cancel();
}

#[tokio::test]
async fn a_body_in_time_is_served() {
    let (addr, stop) = start_router(echo(), limits()).await;
    let mut client = TcpStream::connect(&addr).await.unwrap();
    let request = "POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    stop.cancel();
}

#[tokio::test]
async fn a_stuck_handler_is_answered_503() {
    let router = Router::new().route("/stuck", get(std::future::pending::<()>));
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..limits()
    };
    let (addr, stop) = start_router(router, limits).await;
    let answer = tokio::time::timeout(Duration::from_secs(3), fetch(&addr, "/stuck")).await;
    let (status, body) = answer.expect("no answer at all");
    assert_eq!(status, 503);
    assert!(body.contains("request_timeout"), "{body}");
    stop.cancel();
}
