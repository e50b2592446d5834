//! One HTTP/1.1 request on a fresh connection, its answer read up to a bound: what both of
//! the agent's clients need (the collector's, of a guest's internal API, and the CLI's, of
//! the agent's admin API). Each caller keeps its own deadlines and words its own errors;
//! this drives the connection while the exchange waits on it and stops reading at
//! `max_answer` bytes, so a peer that answers without end cannot fill memory.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::http::response::Parts;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Which step of the exchange failed.
#[derive(Debug)]
pub enum CallError {
    /// HTTP could not start on the connection.
    Handshake(hyper::Error),
    /// The request was not answered.
    Send(hyper::Error),
    /// The answer's body could not be read (or passed `max_answer`).
    Read(String),
    /// The connection failed while the exchange waited on it.
    Connection(hyper::Error),
}

/// Sends `request` on `stream` and reads the whole answer (at most `max_answer` bytes of
/// body). Any status is returned; deciding what is an error is the caller's.
pub async fn call(
    stream: TcpStream,
    request: Request<Full<Bytes>>,
    max_answer: usize,
) -> Result<(Parts, Bytes), CallError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(CallError::Handshake)?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(CallError::Send)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_answer)
            .collect()
            .await
            .map_err(|e| CallError::Read(e.to_string()))?
            .to_bytes();
        Ok::<_, CallError>((parts, body))
    };
    tokio::pin!(exchange, connection);
    // The connection must be driven while the exchange waits on it; when it ends first,
    // the exchange still finishes (with what was read, or an error).
    tokio::select! {
        biased;
        done = &mut exchange => done,
        ended = &mut connection => match ended {
            Ok(()) => exchange.await,
            Err(e) => Err(CallError::Connection(e)),
        },
    }
}

/// The message of an OpenAI-style error body (`{"error":{"message":…}}`), if it is one.
pub fn error_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
}
