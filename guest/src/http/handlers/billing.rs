//! `GET /v1/billing/account`: what this guest holds for the caller's escrow account.
//!
//! Only the guest knows the usage it has signed vouchers for but the host has not yet
//! settled: the chain shows what was settled, and the host, outside the trust boundary,
//! could say anything. So the escrow's owner asks the guest itself, inside an attested
//! TLS session, proving its account key the same way as for inference (a signature over
//! this session's exporter). Nobody else can read an account's figures, and the answer
//! comes from the attested guest, so `cocoon-client balance --upstream` can show the
//! unsettled usage (signed charge − the chain's settled charge) without trusting the host.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::http::body::{json_response, Body};
use crate::http::error::ApiError;
use crate::http::handlers::inference::proven_account;
use crate::http::state::{AppState, Session};
use crate::meter::{ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};

/// `GET /v1/billing/account`.
pub fn account(
    state: &Arc<AppState>,
    session: &Session,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let owner = proven_account(session, request.headers())?.ok_or_else(|| {
        ApiError::account_not_proven(format!(
            "name the escrow's owner with {ACCOUNT_HEADER} and prove it with \
             {ACCOUNT_PROOF_HEADER} (its signature over this TLS session's exporter): only \
             the owner reads its account"
        ))
    })?;
    let escrows = state.escrows.as_deref().ok_or_else(|| {
        ApiError::invalid(
            "this guest does not bill through escrows (its measured config names no payout \
             address): its usage receipts are the whole record",
            None,
            Some("escrow_billing_off"),
        )
    })?;
    let view = escrows.view(&owner).map_err(ApiError::escrow_refusal)?;
    let account = owner.to_string();
    let (seq, totals) = state
        .meter
        .account(&account)
        .map_err(|e| ApiError::internal("meter_error", e.to_string()))?
        .unwrap_or_default();
    let settled_reported = view.reported.map(|(s, _)| s.charged).unwrap_or(0);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "billing.account",
            "account": account,
            "escrow": view.escrow.to_string(),
            "guest_key": hex::encode(state.meter.public_key()),
            "payout": escrows.payout().to_string(),
            "seq": seq,
            "requests": totals.requests,
            "tokens": totals.tokens,
            "charged": totals.charge,
            "in_flight": saturating_u64(view.in_flight),
            "authorization": view.authorization.map(|(cap, expires_at)| json!({
                "cap": saturating_u64(cap),
                "expires_at": expires_at,
            })),
            "reported": view.reported.map(|(state, at)| reported(state, at)),
            "unsettled": totals.charge.saturating_sub(settled_reported),
        }),
    ))
}

fn reported(state: crate::escrow::ReportedState, at: u64) -> Value {
    json!({
        "balance": state.balance,
        "stake": state.stake,
        "unlock_at": state.unlock_at,
        "seq": state.seq,
        "charged": state.charged,
        "reported_at": at,
    })
}

fn saturating_u64(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
