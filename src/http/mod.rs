//! The HTTP server: `/metrics`, `/live`, `/ready`, and the authenticated `/api/v1` ([`api`]).
//!
//! [`serve`] takes a bound listener and a shutdown token, so tests run it on port 0. Once the
//! token is cancelled, `/ready` answers 503 (load balancers stop sending) while in-flight
//! requests finish.

pub mod api;
mod conns;
mod limits;
mod parts;

pub use limits::Limits;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::state::SharedState;
use conns::{Conn, Conns, Slot, Tracked};

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Metrics,
    pub state: SharedState,
    pub shutdown: CancellationToken,
    /// `None` when no API token is configured: `/api` is then not served.
    pub api: Option<api::ApiState>,
}

pub fn router(app: AppState) -> Router {
    let api = app.api.clone();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(app);
    match api {
        Some(api_state) => router.merge(api::router(api_state)),
        None => router,
    }
}

/// Open files kept for everything but HTTP connections (the bus, cores' gRPC channels, procfs
/// reads, config and log files, pipes of the core's config test).
const FD_RESERVE: u64 = 128;

/// Connections the kernel queues for the accept loop (capped by net.core.somaxconn): room for a
/// burst while the loop makes space by closing idle connections.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a listen backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As TcpListener::bind does: a restart does not wait for the old socket's TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` is cancelled and in-flight requests are done, within `limits`.
///
/// A hand-rolled accept loop over hyper rather than `axum::serve`: only hyper's own connection
/// builder offers a header-read timeout, and the connection cap needs to close a chosen
/// connection.
pub async fn serve(listener: TcpListener, app: AppState, limits: Limits) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    serve_router(listener, router(app), shutdown, limits).await
}

/// [`serve`] for any router.
async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let router = limits::apply(router, limits);
    let max = fit_to_fd_limit(limits.max_connections);
    let conns = Conns::new(max);
    let tasks = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of fds and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = conns.admit().await else {
            debug!(%peer, max, "every connection is busy: closing a new one");
            continue;
        };
        let service = ConnService::new(&router, peer, &slot);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tasks.spawn(drive(conn, slot, shutdown.clone()));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

type Connection = http1::Connection<TokioIo<TcpStream>, ConnService>;

/// Runs one connection to its end. Evicted by the cap, it is dropped at once when no request
/// is in progress (one still sending its headers included). On shutdown, or evicted while busy,
/// it finishes its request and closes (hyper closes an idle one at once; one mid-headers gets
/// the header timeout).
async fn drive(conn: Connection, slot: Slot, shutdown: CancellationToken) {
    let mut conn = std::pin::pin!(conn);
    let evicted = tokio::select! {
        ended = conn.as_mut() => return log_end(ended),
        _ = slot.conn().closing().cancelled() => true,
        _ = shutdown.cancelled() => false,
    };
    if evicted && slot.conn().is_idle() {
        return;
    }
    conn.as_mut().graceful_shutdown();
    log_end(conn.await);
}

fn log_end(ended: hyper::Result<()>) {
    if let Err(err) = ended {
        debug!(error = %err, "HTTP connection ended with an error");
    }
}

/// The router as one connection sees it: each request knows its peer, and keeps the
/// connection busy from its start until its answer has been handed over.
#[derive(Clone)]
struct ConnService {
    router: TowerToHyperService<Router>,
    peer: SocketAddr,
    conn: Arc<Conn>,
}

impl ConnService {
    fn new(router: &Router, peer: SocketAddr, slot: &Slot) -> Self {
        Self {
            router: TowerToHyperService::new(router.clone()),
            peer,
            conn: slot.conn().clone(),
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(api::Peer(self.peer));
        let busy = self.conn.enter();
        let answer = self.router.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| Body::new(Tracked { inner, _busy: busy })))
        })
    }
}

/// `max`, lowered to leave [`FD_RESERVE`] open files under the process's limit.
fn fit_to_fd_limit(max: usize) -> usize {
    use rustix::process::{Resource, getrlimit};
    let Some(limit) = getrlimit(Resource::Nofile).current else {
        return max;
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE).max(1)).unwrap_or(max);
    if room < max {
        warn!(
            max_connections = max,
            open_file_limit = limit,
            lowered_to = room,
            "the open-file limit is too low for api.max_connections: raise LimitNOFILE"
        );
        return room;
    }
    info!(max_connections = max, "HTTP connection cap");
    max
}

async fn metrics(State(app): State<AppState>) -> Response {
    match app.metrics.render_parts() {
        // The parts go out as they are, with their summed length.
        Ok(parts) => {
            let body = Body::new(parts::Parts::new(parts));
            ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
        }
        Err(err) => {
            warn!(error = %err, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}

async fn live() -> &'static str {
    "ok\n"
}

/// Ready once the first full listing of units is done, and no longer once shutdown starts.
async fn ready(State(app): State<AppState>) -> (StatusCode, &'static str) {
    if app.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !app.state.read().listed {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first listing of units\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

#[cfg(test)]
mod tests;
