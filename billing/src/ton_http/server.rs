//! A loopback TON HTTP API server (toncenter v2 routes) over a [`SharedLocalChain`].
//!
//! Why: the client must be tested against a real HTTP server, not a stub of itself, and
//! `make run` lets `cocoon-client` reach the host agent's embedded chain the same way it
//! reaches toncenter. The answers follow toncenter's shapes (see `wire`), including its
//! quirks: an address that does not exist reads as `uninitialized`, get methods answer
//! `ok:true` with their exit code, slices come back as `"cell"`.
//!
//! Routes (all under `/api/v2/`):
//! - `GET getAddressInformation?address=`
//! - `GET getWalletInformation?address=`
//! - `POST sendBoc` `{"boc": base64}` (runs the message and everything it causes)
//! - `POST sendBocReturnHash` `{"boc": base64}` → `{"hash": base64}`
//! - `POST runGetMethod` `{"address", "method", "stack"}`
//! - `GET getTransactions?address=&limit=&lt=&to_lt=` (newest first)
//!
//! Bad input gets toncenter's error envelope `{"ok":false,"error":...,"code":N}`. Limits: a
//! header size and read timeout, a body size (checked against `Content-Length` first) and
//! read timeout, and a cap on open connections (beyond it a connection is closed at once).
//! The chain is locked for each call and runs it synchronously (milliseconds).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tycho_types::models::StdAddr;

use super::wire;
use crate::chain::{
    friendly_address, local_account_state, local_send_boc, local_transaction_info, lock_local,
    parse_address, AccountStatus, SharedLocalChain, StackValue, MAX_TRANSACTIONS,
    NO_CODE_EXIT_CODE,
};
use crate::local_chain::{self, LocalChain};
use crate::{Error, Result};

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Largest request head (hyper's read buffer; at least 8192).
    pub max_header_bytes: usize,
    /// Largest request body (a 64 KiB BoC in base64 and JSON fits in the default).
    pub max_body_bytes: usize,
    /// Time to read a request head, idle keep-alive included.
    pub header_timeout: Duration,
    /// Time to read a request body.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 256 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// A running server. Dropping it leaves the server running until the runtime ends; call
/// [`ServerHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<addr>`, the base URL for [`TonHttpConfig`](super::TonHttpConfig).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting, closes every connection and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}

/// Serves the routes from `chain` on `listener` (bind it to loopback). Needs a tokio
/// runtime.
pub fn spawn_server(
    listener: TcpListener,
    chain: SharedLocalChain,
    limits: ServerLimits,
) -> Result<ServerHandle> {
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::Chain(format!("TON API server address: {e}")))?;
    let (shutdown, mut stop) = oneshot::channel();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        // Out of descriptors or a connection reset before accept: wait a
                        // little rather than spin.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        drop(stream);
                        continue;
                    };
                    let chain = chain.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        let service = service_fn(move |request| {
                            let chain = chain.clone();
                            async move { Ok::<_, Infallible>(handle(request, &chain, &limits).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(limits.header_timeout)
                            .max_buf_size(limits.max_header_bytes.max(8192))
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
        connections.shutdown().await;
    });
    Ok(ServerHandle {
        local_addr,
        shutdown,
        task,
    })
}

type HttpResponse = Response<Full<Bytes>>;

fn respond(status: StatusCode, body: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn ok(result: Value) -> HttpResponse {
    respond(StatusCode::OK, &json!({ "ok": true, "result": result }))
}

/// An error answer in toncenter's envelope.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn into_response(self) -> HttpResponse {
        respond(
            self.status,
            &json!({ "ok": false, "error": self.message, "code": self.status.as_u16() }),
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match &error {
            Error::Boc(_)
            | Error::BocTooLarge { .. }
            | Error::Base64(_)
            | Error::Invalid { .. }
            | Error::Anycast => Self::bad_request(error.to_string()),
            Error::ExternalNotAccepted { exit_code } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "cannot apply external message to current state : External message was not accepted (exitcode={})",
                    exit_code.map_or_else(|| "none".to_owned(), |c| c.to_string())
                ),
            ),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        }
    }
}

type Handled = std::result::Result<Value, ApiError>;

async fn handle(
    request: Request<Incoming>,
    chain: &SharedLocalChain,
    limits: &ServerLimits,
) -> HttpResponse {
    match route(request, chain, limits).await {
        Ok(result) => ok(result),
        Err(error) => error.into_response(),
    }
}

async fn route(
    request: Request<Incoming>,
    chain: &SharedLocalChain,
    limits: &ServerLimits,
) -> Handled {
    let path = request.uri().path().to_owned();
    let Some(name) = path.strip_prefix("/api/v2/") else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Not Found"));
    };
    let query = parse_query(request.uri().query().unwrap_or(""))?;
    let is_get = request.method() == Method::GET;
    let is_post = request.method() == Method::POST;
    match name {
        "getAddressInformation" if is_get => address_information(chain, &query),
        "getWalletInformation" if is_get => wallet_information(chain, &query),
        "getTransactions" if is_get => get_transactions(chain, &query),
        "sendBoc" if is_post => {
            let body = read_json(request, limits).await?;
            send_boc(chain, &body).map(|_| json!({"@type": "ok"}))
        }
        "sendBocReturnHash" if is_post => {
            let body = read_json(request, limits).await?;
            send_boc(chain, &body)
                .map(|hash| json!({"@type": "raw.extMessageInfo", "hash": wire::b64(&hash)}))
        }
        "runGetMethod" if is_post => {
            let body = read_json(request, limits).await?;
            run_get_method(chain, &body)
        }
        "getAddressInformation"
        | "getWalletInformation"
        | "getTransactions"
        | "sendBoc"
        | "sendBocReturnHash"
        | "runGetMethod" => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} not allowed on {path}", request.method()),
        )),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "Not Found")),
    }
}

/// Reads a JSON body within the size and time limits.
async fn read_json(request: Request<Incoming>, limits: &ServerLimits) -> Handled {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {} bytes", limits.max_body_bytes),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), limits.max_body_bytes);
    let collected = tokio::time::timeout(limits.body_timeout, body.collect())
        .await
        .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "request body timed out"))?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::bad_request(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice(&collected)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn percent_decode(text: &str) -> std::result::Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::bad_request("malformed percent-encoding in the query"))?;
            out.push(hex);
            i += 3;
        } else {
            // `+` stays `+`: standard-base64 addresses are often sent unencoded.
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

fn parse_query(query: &str) -> std::result::Result<HashMap<String, String>, ApiError> {
    let mut map = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()).take(32) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(percent_decode(key)?, percent_decode(value)?);
    }
    Ok(map)
}

fn address_param(query: &HashMap<String, String>) -> std::result::Result<StdAddr, ApiError> {
    let text = query
        .get("address")
        .ok_or_else(|| ApiError::bad_request("missing address"))?;
    parse_address(text).map_err(ApiError::from)
}

fn body_address(body: &Value) -> std::result::Result<StdAddr, ApiError> {
    let text = body
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("missing address"))?;
    parse_address(text).map_err(ApiError::from)
}

fn locked(
    chain: &SharedLocalChain,
) -> std::result::Result<std::sync::MutexGuard<'_, LocalChain>, ApiError> {
    lock_local(chain).map_err(ApiError::from)
}

fn state_name(status: AccountStatus) -> &'static str {
    match status {
        AccountStatus::Active => "active",
        AccountStatus::Frozen => "frozen",
        // toncenter (tonlib) does not tell a nonexistent account from an uninitialized one.
        AccountStatus::Uninit | AccountStatus::Nonexist => "uninitialized",
    }
}

fn last_transaction_id(chain: &LocalChain, addr: &StdAddr) -> Value {
    let last = chain
        .transactions(addr)
        .last()
        .map(|tx| (tx.lt, tx.transaction.repr_hash().0));
    let (lt, hash) = last.unwrap_or((0, [0; 32]));
    json!({"@type": "internal.transactionId", "lt": lt.to_string(), "hash": wire::b64(&hash)})
}

fn address_information(chain: &SharedLocalChain, query: &HashMap<String, String>) -> Handled {
    let addr = address_param(query)?;
    let chain = locked(chain)?;
    let info = chain.account(&addr)?;
    let cell_text = |cell: &Option<tycho_types::cell::Cell>| {
        cell.as_ref().map(wire::boc_to_b64).unwrap_or_default()
    };
    Ok(json!({
        "@type": "raw.fullAccountState",
        "balance": info.balance.to_string(),
        "extra_currencies": [],
        "code": cell_text(&info.code),
        "data": cell_text(&info.data),
        "last_transaction_id": last_transaction_id(&chain, &addr),
        "frozen_hash": "",
        "sync_utime": chain.now(),
        "state": state_name(info.status.into()),
    }))
}

fn wallet_information(chain: &SharedLocalChain, query: &HashMap<String, String>) -> Handled {
    let addr = address_param(query)?;
    let chain = locked(chain)?;
    let state = local_account_state(&chain, &addr)?;
    let mut answer = json!({
        "wallet": false,
        "balance": state.balance.to_string(),
        "account_state": state_name(state.status),
        "last_transaction_id": last_transaction_id(&chain, &addr),
    });
    if state.status == AccountStatus::Active {
        let result = chain.run_get_method(&addr, "seqno", &[])?;
        let seqno = result
            .stack
            .first()
            .and_then(local_chain::StackValue::as_u128)
            .filter(|_| result.success());
        if let (Some(seqno), Some(map)) = (seqno, answer.as_object_mut()) {
            map.insert("wallet".into(), json!(true));
            map.insert("seqno".into(), json!(seqno));
        }
    }
    Ok(answer)
}

fn send_boc(chain: &SharedLocalChain, body: &Value) -> std::result::Result<[u8; 32], ApiError> {
    let text = body
        .get("boc")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("missing boc"))?;
    let boc = wire::b64_decode(text, crate::chain::EXTERNAL_MESSAGE_LIMITS.max_bytes)
        .map_err(|e| ApiError::bad_request(format!("Failed to deserialize BoC: {e}")))?;
    // Check the BoC before taking the lock, with the same message as toncenter's.
    crate::chain::message_hash(&boc)
        .map_err(|e| ApiError::bad_request(format!("Failed to deserialize BoC: {e}")))?;
    let mut chain = locked(chain)?;
    Ok(local_send_boc(&mut chain, &boc)?)
}

fn run_get_method(chain: &SharedLocalChain, body: &Value) -> Handled {
    let addr = body_address(body)?;
    let method = match body.get("method") {
        Some(Value::String(name)) if !name.is_empty() && name.len() <= 128 => name.clone(),
        _ => return Err(ApiError::bad_request("missing or invalid method")),
    };
    let args = match body.get("stack") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= wire::MAX_STACK_ENTRIES => items
            .iter()
            .map(wire::arg_from_json)
            .collect::<Result<Vec<StackValue>>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "stack must be a list of at most 1024 entries",
            ))
        }
    };
    let chain = locked(chain)?;
    let (exit_code, gas_used, stack) =
        if chain.account(&addr)?.status == local_chain::AccountStatus::Active {
            let args = args.iter().map(StackValue::to_local).collect::<Vec<_>>();
            let result = chain.run_get_method(&addr, &method, &args)?;
            let stack = result
                .stack
                .iter()
                .map(|v| StackValue::from_local(v).map(|v| wire::result_to_json(&v)))
                .collect::<Result<Vec<_>>>()?;
            (result.exit_code, result.gas_used, stack)
        } else {
            (NO_CODE_EXIT_CODE, 0, Vec::new())
        };
    Ok(json!({
        "@type": "smc.runResult",
        "gas_used": gas_used,
        "stack": stack,
        "exit_code": exit_code,
    }))
}

fn get_transactions(chain: &SharedLocalChain, query: &HashMap<String, String>) -> Handled {
    let addr = address_param(query)?;
    let number = |name: &str| -> std::result::Result<Option<u64>, ApiError> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{name} must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(10);
    if limit == 0 || limit > MAX_TRANSACTIONS as u64 {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={MAX_TRANSACTIONS}"
        )));
    }
    let from_lt = number("lt")?.unwrap_or(u64::MAX);
    let to_lt = number("to_lt")?.unwrap_or(0);
    let chain = locked(chain)?;
    let account = friendly_address(&addr);
    let items = chain
        .transactions(&addr)
        .iter()
        .rev()
        .filter(|tx| tx.lt <= from_lt && tx.lt > to_lt)
        .take(usize::try_from(limit).unwrap_or(MAX_TRANSACTIONS))
        .map(|tx| local_transaction_info(tx).map(|tx| wire::transaction_to_json(&account, &tx)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Value::Array(items))
}
