//! The buffer between a streamed generation and the client's socket, bounded in bytes
//! and in time.
//!
//! A streaming client decides how fast its events leave the guest: one that stops
//! reading (a zero TCP window, or a relay that trickles a byte at a time) fills the
//! socket, then hyper's write buffer, then this buffer. Nothing behind it may block on
//! that: the generation task waits here, never the engine, and it waits at most
//! `stall_timeout` for room (the client made no progress: the request is cancelled and
//! billed for what was generated) and never past the request's deadline. The memory one
//! request can hold here is `max_bytes`, whatever the client does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client went away (the response body was dropped).
    Closed,
    /// No room for `stall_timeout`: the client is not reading.
    Stalled,
    /// The request's deadline passed while waiting for room.
    Deadline,
}

/// The generation's end of the buffer.
pub struct StreamSender {
    budget: Arc<Semaphore>,
    max_bytes: usize,
    events: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    stall_timeout: Duration,
    deadline: Instant,
    sent: sha2::Sha256,
}

/// The response body's end of the buffer.
pub struct StreamReceiver {
    events: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
}

/// A buffer of at most `max_bytes` bytes whose sender gives up after `stall_timeout`
/// without room, or at `deadline`.
pub fn channel(
    max_bytes: usize,
    stall_timeout: Duration,
    deadline: Instant,
) -> (StreamSender, StreamReceiver) {
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::unbounded_channel();
    (
        StreamSender {
            budget: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
            events: tx,
            stall_timeout,
            deadline,
            sent: <sha2::Sha256 as sha2::Digest>::new(),
        },
        StreamReceiver { events: rx },
    )
}

impl StreamSender {
    /// Queues `bytes`, waiting for room as long as the client makes progress.
    pub async fn send(&mut self, bytes: Bytes) -> Result<(), SendError> {
        if self.events.is_closed() {
            return Err(SendError::Closed);
        }
        // An event larger than the whole buffer waits for the buffer to drain completely.
        let need = u32::try_from(bytes.len().clamp(1, self.max_bytes)).unwrap_or(u32::MAX);
        let stall_end = Instant::now() + self.stall_timeout;
        let (limit, on_timeout) = if stall_end < self.deadline {
            (stall_end, SendError::Stalled)
        } else {
            (self.deadline, SendError::Deadline)
        };
        let closed = self.events.clone();
        let permit = tokio::select! {
            permit = tokio::time::timeout_at(limit, self.budget.clone().acquire_many_owned(need)) => match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(SendError::Closed),
                Err(_) => return Err(on_timeout),
            },
            // The body was dropped while we waited: no point waiting out the timeout.
            () = closed.closed() => return Err(SendError::Closed),
        };
        sha2::Digest::update(&mut self.sent, &bytes);
        self.events
            .send((bytes, permit))
            .map_err(|_| SendError::Closed)
    }

    /// SHA-256 of every byte queued so far, in order: what the client was sent.
    pub fn sent_sha256(&self) -> [u8; 32] {
        sha2::Digest::finalize(self.sent.clone()).into()
    }
}

impl StreamReceiver {
    /// The response body: each event as one frame; its room in the buffer is given back
    /// as hyper takes it.
    pub fn into_body(self) -> crate::http::body::Body {
        let frames = futures::stream::unfold(self.events, |mut rx| async move {
            rx.recv()
                .await
                .map(|(bytes, _permit)| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
        });
        http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_reader_that_stops_stalls_the_sender_which_learns_when_it_goes() {
        let deadline = Instant::now() + Duration::from_secs(600);
        let (mut tx, rx) = channel(10, Duration::from_millis(200), deadline);
        tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
        // Full and nobody reads: the next send gives up with a stall, not a hang.
        assert_eq!(
            tx.send(Bytes::from_static(b"x")).await,
            Err(SendError::Stalled)
        );
        // The reader takes the first event: room again.
        let mut body = rx.into_body();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(
            frame.into_data().unwrap(),
            Bytes::from_static(b"0123456789")
        );
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(
            tx.sent_sha256(),
            <sha2::Sha256 as sha2::Digest>::digest(b"0123456789abc").as_slice()
        );
        // The body goes away: the sender learns at once, also while it waits for room.
        drop(body);
        assert_eq!(
            tx.send(Bytes::from_static(b"y")).await,
            Err(SendError::Closed)
        );
    }

    #[tokio::test]
    async fn a_waiting_sender_learns_of_a_dropped_body_before_its_timeout() {
        let deadline = Instant::now() + Duration::from_secs(600);
        let (mut tx, rx) = channel(4, Duration::from_secs(600), deadline);
        tx.send(Bytes::from_static(b"full")).await.unwrap();
        let dropper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(rx);
        });
        // Would wait 600 s for room; returns as soon as the body is dropped.
        let sent = tokio::time::timeout(
            Duration::from_secs(60),
            tx.send(Bytes::from_static(b"more")),
        )
        .await
        .expect("the sender noticed the dropped body");
        assert_eq!(sent, Err(SendError::Closed));
        dropper.await.unwrap();
    }

    #[tokio::test]
    async fn the_deadline_bounds_every_wait_and_oversized_events_still_pass() {
        let deadline = Instant::now() + Duration::from_millis(200);
        let (mut tx, rx) = channel(4, Duration::from_secs(600), deadline);
        // Larger than the buffer: accepted when the buffer is empty.
        tx.send(Bytes::from_static(b"longer than four"))
            .await
            .unwrap();
        assert_eq!(
            tx.send(Bytes::from_static(b"z")).await,
            Err(SendError::Deadline)
        );
        drop(rx);
    }
}
