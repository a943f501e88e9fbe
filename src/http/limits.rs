//! Time limits on a request: the whole handler (`request_timeout`) and the client's body
//! (`body_timeout`, one deadline for the whole body, so a client trickling a byte at a time
//! cannot stretch it). Headers are bounded by hyper's header-read timeout, set in [`super::serve`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::config::ApiConfig;

/// How long a header read may take; also how long a connection may sit idle between requests
/// (hyper restarts the header timer when it waits for the next request on a kept-alive
/// connection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that bounds what one client can hold on the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Headers of a request, and the silence between two requests on one connection.
    pub header_read_timeout: Duration,
    /// A whole request, from its headers to its answer.
    pub request_timeout: Duration,
    /// A request's whole body.
    pub body_timeout: Duration,
}

impl Limits {
    pub fn from_config(api: &ApiConfig) -> Self {
        Self {
            max_connections: api.max_connections,
            header_read_timeout: HEADER_READ_TIMEOUT,
            request_timeout: api.request_timeout,
            body_timeout: api.body_timeout,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&crate::config::Config::default().api)
    }
}

/// `router` with the request and body timeouts on every route.
pub fn apply(router: Router, limits: Limits) -> Router {
    router.layer(middleware::from_fn_with_state(limits, bound))
}

async fn bound(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let late = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + limits.body_timeout;
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            late: late.clone(),
        })
    });
    let answer = tokio::time::timeout(limits.request_timeout, next.run(request)).await;
    // A body cut off by its deadline fails the handler's extractor with some 400; say why.
    if late.load(Ordering::Relaxed) {
        let message = format!(
            "the request body took longer than {:?}",
            limits.body_timeout
        );
        return close(super::api::error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            message,
        ));
    }
    answer.unwrap_or_else(|_| {
        let message = format!("no answer within {:?}", limits.request_timeout);
        close(super::api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            message,
        ))
    })
}

/// Asks the client to close the connection: its request may not have been read to the end.
fn close(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// The request body, failing once `deadline` passes before its end.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
