//! The CLI's client of the admin API: one HTTP/1.1 request per connection, with a connect
//! timeout and a timeout on the whole exchange, so a wedged agent cannot hang a script.
//!
//! Its errors name the address and say what to do, since the person reading them is at
//! a shell: a refused connection means the agent is not running or the address is wrong,
//! a 401 means the token is missing or wrong, anything else carries the API's message.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, HOST};
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tokio::net::TcpStream;

use super::percent;
use super::routes::NEXT_SINCE_HEADER;
use crate::http_call::{call, error_message, CallError};
use crate::{Error, Result};

/// Largest answer the client reads (a page of 10 000 receipts is a few MiB).
const MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// A client of one agent's admin API.
#[derive(Clone)]
pub struct AdminClient {
    address: String,
    token: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// One page of receipts, as the API sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptPage {
    /// The receipts, one JSON object a line, byte for byte as sent (no newline).
    pub lines: Vec<String>,
    /// The ledger ids of `lines`, ascending.
    pub ids: Vec<i64>,
    /// The `since` of the next page: the last id, or the `since` asked for when empty.
    pub next_since: i64,
}

/// What [`AdminClient::export_receipts`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Receipts written.
    pub receipts: u64,
    /// Ledger ids of the first and last receipt written.
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// Where a later export continues from (`--since`).
    pub next_since: i64,
}

/// A successful answer.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
}

impl AdminClient {
    /// A client of the admin API at `addr` (`host:port`), sending `token` if given.
    /// Connects within 5 s, and gives every request 60 s.
    pub fn new(addr: String, token: Option<String>) -> Self {
        Self {
            address: addr,
            token,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }

    /// The same client with other timeouts.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// The address this client calls.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Value> {
        self.json(Method::GET, "/v1/status").await
    }

    /// `GET /v1/guests`.
    pub async fn guests(&self) -> Result<Value> {
        self.json(Method::GET, "/v1/guests").await
    }

    /// `GET /v1/usage`, for one account or all.
    pub async fn usage(&self, account: Option<&str>) -> Result<Value> {
        let path = match account {
            Some(account) => format!("/v1/usage?account={}", percent::encode(account)),
            None => "/v1/usage".to_string(),
        };
        self.json(Method::GET, &path).await
    }

    /// `GET /v1/receipts/{id}/proof`: `{"proof": …, "receipt": JWS}`.
    pub async fn receipt_proof(&self, id: &str) -> Result<Value> {
        let path = format!("/v1/receipts/{}/proof", percent::encode(id));
        self.json(Method::GET, &path).await
    }

    /// `POST /v1/guests/{guest}/drain` (or `/undrain` when `drained` is false).
    pub async fn set_drained(&self, guest: &str, drained: bool) -> Result<Value> {
        let action = if drained { "drain" } else { "undrain" };
        let path = format!("/v1/guests/{}/{action}", percent::encode(guest));
        self.json(Method::POST, &path).await
    }

    /// `GET /metrics`: the OpenMetrics text.
    pub async fn metrics(&self) -> Result<String> {
        let answer = self.request(Method::GET, "/metrics").await?;
        String::from_utf8(answer.body.to_vec())
            .map_err(|_| self.fail("the metrics are not UTF-8 text".into()))
    }

    /// `GET /v1/receipts?since=N&limit=M`: one page, checked (ids ascend above `since`,
    /// `next_since` is the last of them) so that paging neither skips nor repeats.
    pub async fn receipts(&self, since: i64, limit: usize) -> Result<ReceiptPage> {
        let path = format!("/v1/receipts?since={since}&limit={limit}");
        let answer = self.request(Method::GET, &path).await?;
        let next_since = answer
            .headers
            .get(NEXT_SINCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| self.fail(format!("the answer has no integer {NEXT_SINCE_HEADER}")))?;
        let text = std::str::from_utf8(&answer.body)
            .map_err(|_| self.fail("the receipts are not UTF-8 text".into()))?;
        let mut page = ReceiptPage {
            lines: Vec::new(),
            ids: Vec::new(),
            next_since,
        };
        let mut last = since;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let id = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|receipt| receipt.get("id").and_then(Value::as_i64))
                .ok_or_else(|| self.fail("a receipt line is not JSON with an integer id".into()))?;
            if id <= last {
                return Err(self.fail(format!(
                    "receipt {id} came after {last}; ids must ascend above since={since}"
                )));
            }
            last = id;
            page.lines.push(line.to_string());
            page.ids.push(id);
        }
        if next_since != last {
            return Err(self.fail(format!(
                "{NEXT_SINCE_HEADER} is {next_since}, but the last receipt sent is {last}"
            )));
        }
        Ok(page)
    }

    /// Writes every receipt after `since` to `out`, one JSON line each, in pages of
    /// `page_size`, until a page comes back empty.
    pub async fn export_receipts(
        &self,
        since: i64,
        page_size: usize,
        out: &mut dyn Write,
    ) -> Result<ExportSummary> {
        let mut summary = ExportSummary {
            receipts: 0,
            first_id: None,
            last_id: None,
            next_since: since,
        };
        loop {
            let page = self.receipts(summary.next_since, page_size).await?;
            if page.lines.is_empty() {
                out.flush().map_err(Error::ExportWrite)?;
                return Ok(summary);
            }
            for line in &page.lines {
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(Error::ExportWrite)?;
            }
            summary.receipts += page.lines.len() as u64;
            summary.first_id = summary.first_id.or(page.ids.first().copied());
            summary.last_id = page.ids.last().copied();
            summary.next_since = page.next_since;
        }
    }

    /// A JSON answer.
    async fn json(&self, method: Method, path: &str) -> Result<Value> {
        let answer = self.request(method, path).await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| self.fail(format!("the answer is not JSON: {e}")))
    }

    /// One request on a new connection; an answer other than 2xx is an error.
    async fn request(&self, method: Method, path: &str) -> Result<Answer> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| {
                self.fail(format!(
                    "no connection within {:?}; is the address right (--admin, COCOON_ADMIN)?",
                    self.connect_timeout
                ))
            })?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    self.fail(
                        "connection refused: the agent is not running, or its admin API is \
                         not at this address (--admin, COCOON_ADMIN)"
                            .into(),
                    )
                } else {
                    self.fail(format!("cannot connect: {e}"))
                }
            })?;
        tokio::time::timeout(self.request_timeout, self.exchange(stream, method, path))
            .await
            .map_err(|_| self.fail(format!("no answer within {:?}", self.request_timeout)))?
    }

    async fn exchange(&self, stream: TcpStream, method: Method, path: &str) -> Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.address.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.fail(format!("cannot build the request: {e}")))?;
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| self.fail("the admin token cannot be sent in a header".into()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let (parts, body) = call(stream, request, MAX_ANSWER_BYTES).await.map_err(|e| {
            self.fail(match e {
                CallError::Handshake(e) => format!("cannot start HTTP: {e}"),
                CallError::Send(e) => {
                    format!("no answer ({e}); the agent may be at its admin connection limit")
                }
                CallError::Read(e) => format!("cannot read the answer: {e}"),
                CallError::Connection(e) => format!("connection failed: {e}"),
            })
        })?;
        if !parts.status.is_success() {
            return Err(self.fail(self.refusal(parts.status, &body)));
        }
        Ok(Answer {
            headers: parts.headers,
            body,
        })
    }

    /// `401 invalid admin token`: the status and the API's message.
    fn refusal(&self, status: StatusCode, body: &[u8]) -> String {
        let message = error_message(body).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_lowercase()
        });
        let mut detail = format!("{} {message}", status.as_u16());
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            detail.push_str(" (give the token with --admin-token-file or COCOON_ADMIN_TOKEN_FILE)");
        }
        detail
    }

    fn fail(&self, detail: String) -> Error {
        Error::AdminClient {
            address: self.address.clone(),
            detail,
        }
    }
}
