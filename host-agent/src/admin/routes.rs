//! The admin API's routes: each request is authorised first (so an unauthorised client
//! learns nothing, not even which routes exist), then routed, its query checked and its
//! body bounded, and only then handed to the backend on the blocking pool.
//!
//! - `GET /v1/status`, `GET /v1/guests`, `GET /v1/usage[?account=ID]`: JSON.
//! - `GET /v1/receipts?since=N&limit=M`: NDJSON, one receipt a line, ids ascending and
//!   above `since`; `x-cocoon-next-since` is the last id sent (`since` when none), the
//!   `since` of the next page.
//! - `POST /v1/guests/{name}/drain`, `POST /v1/guests/{name}/undrain`: JSON.
//! - `GET /metrics`: OpenMetrics text.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::percent;
use super::reply::{json, with_body, ApiError, Reply};
use super::{AdminAuth, AdminBackend};

/// Most receipts one page may hold, and how many a page holds when `limit` is not given.
pub const MAX_RECEIPTS_PAGE: usize = 10_000;
pub const DEFAULT_RECEIPTS_PAGE: usize = 1_000;

/// The header that carries the next page's `since`.
pub const NEXT_SINCE_HEADER: &str = "x-cocoon-next-since";

/// `GET /metrics`'s content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every request needs.
pub(super) struct Admin {
    pub(super) auth: AdminAuth,
    pub(super) backend: Arc<dyn AdminBackend>,
    /// Largest request body taken, in bytes.
    pub(super) body_limit: usize,
}

/// A route, with what its path says.
enum Route {
    Status,
    Guests,
    Usage,
    Receipts,
    ReceiptProof { id: String },
    Drain { guest: String, drained: bool },
    Metrics,
    Settlements,
}

impl Route {
    /// The route `method` and `path` name: 404 when there is none, 405 (with the method
    /// to use) when it takes another method.
    fn find(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let (route, allow) = match segments.as_slice() {
            ["v1", "status"] => (Route::Status, "GET"),
            ["v1", "guests"] => (Route::Guests, "GET"),
            ["v1", "usage"] => (Route::Usage, "GET"),
            ["v1", "receipts"] => (Route::Receipts, "GET"),
            ["v1", "settlements"] => (Route::Settlements, "GET"),
            ["v1", "receipts", id, "proof"] if !id.is_empty() => {
                let id = percent::decode(id, false).ok_or_else(|| {
                    ApiError::not_found(
                        "the receipt id in the path is not valid percent-encoded UTF-8".into(),
                        "no_proof",
                    )
                })?;
                (Route::ReceiptProof { id }, "GET")
            }
            ["metrics"] => (Route::Metrics, "GET"),
            ["v1", "guests", name, action @ ("drain" | "undrain")] if !name.is_empty() => {
                let guest = percent::decode(name, false).ok_or_else(|| {
                    ApiError::not_found(
                        "the guest name in the path is not valid percent-encoded UTF-8".into(),
                        "unknown_guest",
                    )
                })?;
                let drained = *action == "drain";
                (Route::Drain { guest, drained }, "POST")
            }
            _ => {
                return Err(ApiError::not_found(
                    "no such route (see GET /v1/status, /v1/guests, /v1/usage, /v1/receipts, \
                     /v1/receipts/{id}/proof, /v1/settlements, /metrics; \
                     POST /v1/guests/{name}/drain|undrain)"
                        .into(),
                    "unknown_route",
                ))
            }
        };
        if method.as_str() != allow {
            return Err(ApiError::method_not_allowed(allow));
        }
        Ok(route)
    }

    /// The route's name for logs (never the guest name or query: request contents).
    fn label(&self) -> &'static str {
        match self {
            Route::Status => "GET /v1/status",
            Route::Guests => "GET /v1/guests",
            Route::Usage => "GET /v1/usage",
            Route::Receipts => "GET /v1/receipts",
            Route::ReceiptProof { .. } => "GET /v1/receipts/{id}/proof",
            Route::Drain { drained: true, .. } => "POST /v1/guests/{name}/drain",
            Route::Drain { drained: false, .. } => "POST /v1/guests/{name}/undrain",
            Route::Metrics => "GET /metrics",
            Route::Settlements => "GET /v1/settlements",
        }
    }

    /// The query parameters the route takes.
    fn parameters(&self) -> &'static [&'static str] {
        match self {
            Route::Usage => &["account"],
            Route::Receipts => &["since", "limit"],
            Route::Settlements => &["limit"],
            _ => &[],
        }
    }
}

/// Answers one request, and logs its route and status (nothing of its contents).
pub(super) async fn handle(admin: &Admin, peer: SocketAddr, request: Request<Incoming>) -> Reply {
    let mut label = "unrouted";
    let reply = match respond(admin, request, &mut label).await {
        Ok(reply) => reply,
        Err(error) => {
            if error.status().is_server_error() {
                warn!(%peer, route = label, "admin request failed: {error:?}");
            }
            error.into_reply()
        }
    };
    // Successes at debug (a scraper calls every few seconds), refusals where they show.
    let status = reply.status().as_u16();
    if reply.status().is_success() {
        debug!(%peer, route = label, status, "admin request");
    } else {
        info!(%peer, route = label, status, "admin request refused");
    }
    reply
}

async fn respond(
    admin: &Admin,
    request: Request<Incoming>,
    label: &mut &'static str,
) -> Result<Reply, ApiError> {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    admin
        .auth
        .authorize(authorization)
        .map_err(ApiError::unauthorized)?;
    let route = Route::find(request.method(), request.uri().path())?;
    *label = route.label();
    let params = Params::parse(request.uri().query(), route.parameters())?;
    read_body(request, admin.body_limit).await?;
    let backend = &admin.backend;
    match route {
        Route::Status => Ok(json(&blocking(backend, |b| b.status()).await?)),
        Route::Guests => Ok(json(&blocking(backend, |b| b.guests()).await?)),
        Route::Usage => {
            let account = params.get("account").map(str::to_string);
            if account.as_deref() == Some("") {
                return Err(ApiError::bad_parameter(
                    "account",
                    "query parameter `account` is empty; give an account ID or leave it out".into(),
                ));
            }
            Ok(json(
                &blocking(backend, move |b| b.usage(account.as_deref())).await?,
            ))
        }
        Route::Receipts => {
            let since = params.since()?;
            let limit = params.limit()?;
            let receipts = blocking(backend, move |b| b.export_receipts(since, limit)).await?;
            receipts_page(since, limit, &receipts)
        }
        Route::ReceiptProof { id } => Ok(json(
            &blocking(backend, move |b| b.receipt_proof(&id)).await?,
        )),
        Route::Drain { guest, drained } => Ok(json(
            &blocking(backend, move |b| b.set_drained(&guest, drained)).await?,
        )),
        Route::Settlements => {
            let limit = params.limit()?.min(1_000);
            Ok(json(
                &blocking(backend, move |b| b.settlements(limit)).await?,
            ))
        }
        Route::Metrics => {
            let text = blocking(backend, |b| b.metrics()).await?;
            Ok(with_body(StatusCode::OK, OPENMETRICS, Bytes::from(text)))
        }
    }
}

/// Reads (and drops: no route takes one) the body, refusing one over `limit` bytes:
/// by its `content-length` before reading, or when it grows past the limit.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if declared.is_some_and(|length| length > limit_u64) {
        return Err(ApiError::too_large(limit));
    }
    let body = request.into_body();
    if body.is_end_stream() {
        return Ok(());
    }
    match Limited::new(body, limit).collect().await {
        Ok(_) => Ok(()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_body(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// Runs a backend call on the blocking pool (it may wait on SQLite).
async fn blocking<T: Send + 'static>(
    backend: &Arc<dyn AdminBackend>,
    call: impl FnOnce(&dyn AdminBackend) -> crate::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let backend = Arc::clone(backend);
    match tokio::task::spawn_blocking(move || call(backend.as_ref())).await {
        Ok(result) => result.map_err(ApiError::from_backend),
        Err(e) => Err(ApiError::internal(format!("the admin backend failed: {e}"))),
    }
}

/// A receipts page as NDJSON. Checks that the backend kept its promise (objects with an
/// integer `id`, ascending, above `since`, at most `limit`), since a client pages by
/// these ids and would otherwise skip or repeat receipts.
fn receipts_page(since: i64, limit: usize, receipts: &[Value]) -> Result<Reply, ApiError> {
    if receipts.len() > limit {
        return Err(ApiError::internal(format!(
            "the ledger returned {} receipts for a page of {limit}",
            receipts.len()
        )));
    }
    let mut body = Vec::new();
    let mut last = since;
    for receipt in receipts {
        let id = receipt.get("id").and_then(Value::as_i64).ok_or_else(|| {
            ApiError::internal("the ledger returned a receipt without an integer `id`".into())
        })?;
        if id <= last {
            return Err(ApiError::internal(format!(
                "the ledger returned receipt {id} after {last} (ids must ascend above `since`)"
            )));
        }
        last = id;
        serde_json::to_writer(&mut body, receipt)
            .map_err(|e| ApiError::internal(format!("cannot encode a receipt: {e}")))?;
        body.push(b'\n');
    }
    let mut reply = with_body(StatusCode::OK, "application/x-ndjson", Bytes::from(body));
    reply
        .headers_mut()
        .insert(NEXT_SINCE_HEADER, HeaderValue::from(last));
    Ok(reply)
}

/// A request's query parameters, decoded, each one the route takes at most once.
struct Params(Vec<(&'static str, String)>);

impl Params {
    fn parse(query: Option<&str>, known: &'static [&'static str]) -> Result<Self, ApiError> {
        let mut params: Vec<(&'static str, String)> = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent::decode(raw_name, true).unwrap_or_default();
            let Some(&param) = known.iter().find(|k| **k == name) else {
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(ApiError::unknown_parameter(&name, &known));
            };
            if params.iter().any(|(p, _)| *p == param) {
                return Err(ApiError::bad_parameter(
                    param,
                    format!("query parameter `{param}` is given more than once"),
                ));
            }
            let value = percent::decode(raw_value, true).ok_or_else(|| {
                ApiError::bad_parameter(
                    param,
                    format!("query parameter `{param}` is not valid percent-encoded UTF-8"),
                )
            })?;
            params.push((param, value));
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, _)| *p == name)
            .map(|(_, v)| v.as_str())
    }

    /// `since`: a ledger id, 0 (the default) for the start.
    fn since(&self) -> Result<i64, ApiError> {
        let Some(value) = self.get("since") else {
            return Ok(0);
        };
        value
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    "since",
                    format!("query parameter `since` must be an integer from 0 up, not `{value}`"),
                )
            })
    }

    /// `limit`: receipts in a page, 1 to [`MAX_RECEIPTS_PAGE`].
    fn limit(&self) -> Result<usize, ApiError> {
        let Some(value) = self.get("limit") else {
            return Ok(DEFAULT_RECEIPTS_PAGE);
        };
        value
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_RECEIPTS_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    "limit",
                    format!(
                        "query parameter `limit` must be an integer from 1 to \
                         {MAX_RECEIPTS_PAGE}, not `{value}`"
                    ),
                )
            })
    }
}
