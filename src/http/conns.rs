//! The connection cap. At most `max_connections` are open; when a new one arrives at the cap,
//! the oldest connection with no request in progress (one that has sent nothing yet, is still
//! sending headers, or sits idle between requests) is closed to make room. So a flood of idle
//! connections can never lock out `/live`, and no open file goes to a client that does nothing;
//! a request in progress is never cut. Only when every connection is busy is the newcomer
//! closed at once (requests are bounded by the request timeout, so that does not last).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a newcomer waits for the connection it evicted to give back its slot.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// The open connections, oldest first.
pub struct Conns {
    slots: Arc<Semaphore>,
    /// How many idle connections one eviction closes: a flood then costs one wait for a
    /// freed slot per batch, not per connection, so the accept loop keeps up with it.
    batch: usize,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

/// One open connection, as the cap sees it.
#[derive(Default)]
pub struct Conn {
    /// Requests being handled or answered (their answer's body not yet handed to the socket).
    busy: AtomicUsize,
    /// Cancelled to ask the connection's task to close it.
    close: CancellationToken,
}

impl Conn {
    /// Marks a request in progress until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// No request is in progress: closing it now loses nobody's answer.
    pub fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }

    /// Cancelled when the cap wants this connection closed.
    pub fn closing(&self) -> &CancellationToken {
        &self.close
    }
}

/// A request in progress on a [`Conn`], until dropped.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's slot; dropping it frees the slot.
pub struct Slot {
    conns: Arc<Conns>,
    id: u64,
    conn: Arc<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
    }
}

impl Conns {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            batch: (max / 32).max(1),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// A slot for a new connection, after closing the oldest idle one if the cap is reached;
    /// `None` when every open connection is busy.
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !self.evict_oldest_idle(self.batch) {
                    return None;
                }
                let freed = tokio::time::timeout(EVICT_WAIT, self.slots.clone().acquire_owned());
                freed.await.ok()?.ok()?
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        self.lock().insert(id, conn.clone());
        Some(Slot {
            conns: self.clone(),
            id,
            conn,
            _permit: permit,
        })
    }

    /// Asks up to `n` of the oldest idle connections not already asked to close; false if
    /// there is none.
    fn evict_oldest_idle(&self, n: usize) -> bool {
        let open = self.lock();
        let victims = open
            .values()
            .filter(|c| c.is_idle() && !c.close.is_cancelled())
            .take(n);
        victims.map(|c| c.close.cancel()).count() > 0
    }
}

/// A response body that keeps its connection busy until it has been handed to the socket.
pub struct Tracked {
    pub inner: Body,
    /// Held, never read: dropping the body ends the request.
    pub _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn evicts_the_oldest_idle_connection_never_a_busy_one() {
        let conns = Conns::new(2);
        let first = conns.admit().await.unwrap();
        let second = conns.admit().await.unwrap();
        let _busy = first.conn().enter();
        // At the cap: the oldest idle one (the second, the first being busy) is asked to close.
        let closing = second.conn().closing().clone();
        let third = tokio::spawn({
            let conns = conns.clone();
            async move { conns.admit().await }
        });
        closing.cancelled().await;
        assert!(!first.conn().closing().is_cancelled());
        drop(second);
        let third = third.await.unwrap();
        assert!(third.is_some());
        assert_eq!(conns.open(), 2);
    }

    #[tokio::test]
    async fn refuses_when_every_connection_is_busy() {
        let conns = Conns::new(1);
        let only = conns.admit().await.unwrap();
        let _busy = only.conn().enter();
        assert!(conns.admit().await.is_none());
        assert!(!only.conn().closing().is_cancelled());
    }
}
