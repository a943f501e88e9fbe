//! A response body sent as a few buffers, each as it is: no copy into one, and an exact
//! `Content-Length` (a stream body would be sent chunked).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};

/// The buffers still to send.
pub struct Parts(VecDeque<Bytes>);

impl Parts {
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        Self(parts.into_iter().filter(|b| !b.is_empty()).collect())
    }
}

impl HttpBody for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn sends_every_part_in_order_with_its_length() {
        let body = Parts::new([Bytes::from("ab"), Bytes::new(), Bytes::from("cde")]);
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abcde");
    }
}
