//! The client side of a guest's internal API (`GET /internal/v1/receipts`, `POST
//! /internal/v1/receipts/ack`, `GET /internal/v1/accounts`, `GET|POST
//! /internal/v1/escrows`): plain HTTP/1.1 on a port only
//! the host reaches, with the host token as bearer.
//!
//! Plain HTTP is enough because nothing here needs secrecy or trust in the channel: the
//! receipts are signed inside the TEE and checked against the attested key before they
//! count, and the token only decides who may drain the journal. Every call has one
//! deadline (connect, send, whole answer), and the answer is read up to a bound, so a
//! stuck or hostile guest cannot hold the collector.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::http_call::{call, error_message, CallError};
use crate::ledger::JournalReceipt;

/// Largest answer read: a full page (1000 receipts of about 1.5 KiB) with room to spare.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// One page of the guest's journal.
#[derive(Debug, Deserialize)]
pub struct ReceiptPage {
    pub data: Vec<JournalReceipt>,
    /// The key the guest signs with now (hex). Only a hint: what counts is the key in the
    /// verified evidence.
    pub receipt_key: String,
    /// The newest receipt the guest has signed (collected or not).
    #[serde(default)]
    pub last_index: u64,
}

/// One account's totals as the guest states them.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct GuestAccount {
    pub account: String,
    pub sequence: u64,
    pub cumulative: cocoon_attestation::receipt::Cumulative,
}

#[derive(Debug, Deserialize)]
struct AccountList {
    data: Vec<GuestAccount>,
    receipt_key: String,
}

/// `GET /internal/v1/escrows`: the escrows the guest needs state for.
#[derive(Debug, Clone, Deserialize)]
pub struct EscrowList {
    pub data: Vec<GuestEscrow>,
    /// The key the guest signs with now (hex).
    pub receipt_key: String,
    /// Where the guest's vouchers pay (`0:<hex>`).
    #[serde(default)]
    pub payout: Option<String>,
}

/// One escrow the guest bills.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestEscrow {
    pub account: String,
    /// `0:<hex>`.
    pub escrow: String,
    /// What the agent last reported (the guest's view), if anything.
    #[serde(default)]
    pub reported: Option<serde_json::Value>,
    #[serde(default)]
    pub reported_at: Option<u64>,
    #[serde(default)]
    pub unsettled: Option<u64>,
}

/// One escrow's state as the agent reports it (`POST /internal/v1/escrows`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EscrowReport {
    pub escrow: String,
    pub balance: u64,
    pub stake: u64,
    pub unlock_at: u64,
    /// `get_guest(receipt_key)` of the guest's key.
    pub seq: u64,
    pub charged: u64,
}

#[derive(Debug, Deserialize)]
struct Used {
    used: u64,
}

#[derive(Debug, Deserialize)]
struct Acknowledged {
    acknowledged: u64,
}

/// A guest's internal API.
#[derive(Clone)]
pub struct InternalApi {
    address: String,
    token: String,
    timeout: Duration,
}

impl InternalApi {
    /// The API at `address` (`host:port`), called with `token`, each call within `timeout`.
    pub fn new(address: String, token: String, timeout: Duration) -> Self {
        Self {
            address,
            token,
            timeout,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Receipts after journal index `after`, at most `limit`.
    pub async fn receipts(&self, after: u64, limit: usize) -> Result<ReceiptPage> {
        self.call(
            Method::GET,
            &format!("/internal/v1/receipts?after={after}&limit={limit}"),
            None,
        )
        .await
    }

    /// Lets the guest drop receipts up to `upto` (they are durable in the ledger).
    pub async fn acknowledge(&self, upto: u64) -> Result<u64> {
        let body = serde_json::json!({ "upto": upto }).to_string();
        let answer: Acknowledged = self
            .call(Method::POST, "/internal/v1/receipts/ack", Some(body))
            .await?;
        Ok(answer.acknowledged)
    }

    /// Every account's sequence and cumulative totals under the guest's current key (hex).
    pub async fn accounts(&self) -> Result<(String, Vec<GuestAccount>)> {
        let list: AccountList = self
            .call(Method::GET, "/internal/v1/accounts", None)
            .await?;
        Ok((list.receipt_key, list.data))
    }

    /// The escrows the guest bills and needs on-chain state for.
    pub async fn escrows(&self) -> Result<EscrowList> {
        self.call(Method::GET, "/internal/v1/escrows", None).await
    }

    /// Reports what the chain says of those escrows; returns how many the guest used.
    pub async fn report_escrows(&self, escrows: &[EscrowReport]) -> Result<u64> {
        let body = serde_json::json!({ "escrows": escrows }).to_string();
        let answer: Used = self
            .call(Method::POST, "/internal/v1/escrows", Some(body))
            .await?;
        Ok(answer.used)
    }

    fn fail(&self, detail: impl Into<String>) -> Error {
        Error::Collect {
            address: self.address.clone(),
            detail: detail.into(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| self.fail(format!("{path}: no answer within {:?}", self.timeout)))?
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| self.fail(format!("cannot connect: {e}")))?;
        stream.set_nodelay(true).ok();
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.as_str())
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.fail(format!("{path}: {e}")))?;
        let (parts, bytes) = call(stream, request, MAX_ANSWER).await.map_err(|e| {
            self.fail(match e {
                CallError::Handshake(e) => format!("HTTP handshake: {e}"),
                CallError::Send(e) | CallError::Connection(e) => format!("{path}: {e}"),
                CallError::Read(e) => format!("{path}: reading the answer: {e}"),
            })
        })?;
        let status = parts.status;
        if !status.is_success() {
            // The guest's errors are OpenAI-style JSON; show its message, bounded.
            let message = error_message(&bytes)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into());
            return Err(self.fail(format!("{path}: {status}: {message}")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.fail(format!("{path}: unexpected answer: {e}")))
    }
}
