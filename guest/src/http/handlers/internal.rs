//! The internal endpoint the host agent collects receipts from.
//!
//! The host agent sits outside the TEE and relays TLS it cannot read, so it cannot see the
//! receipts that go to clients. It collects its own copy here, authenticated with a bearer
//! token the operator gives the guest at launch (`--host-token-file`). The token only
//! guards *who may drain the journal*; receipts are signed, so a host cannot alter them,
//! only fail to collect them, and then the guest stops taking work (see `meter`).
//!
//! These routes are served only on a separate listener (`--internal-listen`, plain HTTP on
//! a loopback address: in a VM, an address only the host reaches), never on the public TLS
//! port that the relay forwards, so no client reaches them and a guessing client costs the
//! collector nothing. Without a token there is no collector: no listener, no journal.
//!
//! - `GET /internal/v1/receipts?after=N&limit=M` → `{"object":"list","data":[{"index",
//!   "receipt"}],"receipt_key": hex,"last_index": N}` (`last_index`: the newest receipt
//!   signed so far, collected or not)
//! - `GET /internal/v1/accounts` → `{"object":"list","data":[{"account","sequence",
//!   "cumulative"}],"receipt_key": hex}`: what each account's latest receipt states, so
//!   the host can reconcile its ledger with the guest's own totals
//! - `POST /internal/v1/receipts/ack` with `{"upto": N}` → `{"acknowledged": count}`
//! - `GET /internal/v1/escrows` → `{"object":"list","data":[{"account","escrow",
//!   "reported","reported_at","unsettled"}],"receipt_key","payout"}`: the escrows this
//!   guest needs on-chain state for (escrow billing only; `escrow_billing_off` otherwise)
//! - `POST /internal/v1/escrows` with `{"escrows":[{"escrow","balance","stake",
//!   "unlock_at","seq","charged"}]}` (what `get_escrow` and `get_guest(receipt key)`
//!   returned) → `{"used": count}`. A host that reports less only makes the guest refuse
//!   work; one that reports more only makes its operator serve at its own risk
//!   (`crate::escrow`).
//!
//! The token must be hard to guess (see `http::state::HostToken`).

use serde_json::{json, Value};

use crate::escrow::{EscrowReport, Escrows};
use crate::http::error::ApiError;
use crate::http::state::HostToken;
use crate::meter::Meter;

/// Longest page of receipts one call returns.
pub const MAX_PAGE: usize = 1000;

/// Checks the `Authorization` header value against the configured token.
pub fn authorize(token: Option<&HostToken>, authorization: Option<&str>) -> Result<(), ApiError> {
    let token = token.ok_or_else(ApiError::internal_api_disabled)?;
    let presented = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::invalid_host_token())
    }
}

/// Parses `after=N&limit=M` (both optional).
fn page(query: Option<&str>) -> Result<(u64, usize), ApiError> {
    let (mut after, mut limit) = (0u64, 100usize);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            ApiError::invalid(
                format!("'{name}' must be {what}, got '{value}'"),
                Some(name.to_string()),
                Some("invalid_value"),
            )
        };
        match name {
            "after" => after = value.parse().map_err(|_| bad("a non-negative integer"))?,
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| bad(&format!("an integer from 1 to {MAX_PAGE}")))?
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("unknown query parameter '{name}' (known: after, limit)"),
                    Some(name.to_string()),
                    Some("unknown_parameter"),
                ))
            }
        }
    }
    Ok((after, limit))
}

fn meter_error(e: crate::Error) -> ApiError {
    ApiError::internal("meter_error", e.to_string())
}

/// `GET /internal/v1/receipts`.
pub fn list_receipts(meter: &Meter, query: Option<&str>) -> Result<Value, ApiError> {
    let (after, limit) = page(query)?;
    let entries = meter.pending(after, limit).map_err(meter_error)?;
    Ok(json!({
        "object": "list",
        "data": entries,
        "receipt_key": hex::encode(meter.public_key()),
        "last_index": meter.last_index().map_err(meter_error)?,
    }))
}

/// `GET /internal/v1/accounts`.
pub fn list_accounts(meter: &Meter) -> Result<Value, ApiError> {
    let data: Vec<Value> = meter
        .accounts()
        .map_err(meter_error)?
        .into_iter()
        .map(|(account, (sequence, cumulative))| {
            json!({"account": account, "sequence": sequence, "cumulative": cumulative})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "receipt_key": hex::encode(meter.public_key()),
    }))
}

fn escrow_billing(escrows: Option<&Escrows>) -> Result<&Escrows, ApiError> {
    escrows.ok_or_else(|| {
        ApiError::invalid(
            "this guest does not bill through escrows (its measured config names no payout \
             address)",
            None,
            Some("escrow_billing_off"),
        )
    })
}

/// `GET /internal/v1/escrows`.
pub fn list_escrows(meter: &Meter, escrows: Option<&Escrows>) -> Result<Value, ApiError> {
    let escrows = escrow_billing(escrows)?;
    let charges = |owner: &cocoon_attestation::account::AccountId| {
        meter.cumulative_charge(&owner.to_string()).unwrap_or(0)
    };
    Ok(json!({
        "object": "list",
        "data": escrows.wanted(&charges),
        "receipt_key": hex::encode(meter.public_key()),
        "payout": escrows.payout().to_string(),
    }))
}

/// `POST /internal/v1/escrows`.
pub fn report_escrows(escrows: Option<&Escrows>, body: &[u8]) -> Result<Value, ApiError> {
    let escrows = escrow_billing(escrows)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reports {
        escrows: Vec<EscrowReport>,
    }
    let reports: Reports = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!(
                "the body must be {{\"escrows\": [{{\"escrow\", \"balance\", \"stake\", \
                 \"unlock_at\", \"seq\", \"charged\"}}]}}: {e}"
            ),
            None,
            Some("invalid_json"),
        )
    })?;
    let used = escrows
        .report(&reports.escrows)
        .map_err(|e| ApiError::invalid(e, Some("escrows".into()), Some("invalid_value")))?;
    Ok(json!({"used": used}))
}

/// `POST /internal/v1/receipts/ack` with body `{"upto": N}`.
pub fn acknowledge(meter: &Meter, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ack {
        upto: u64,
    }
    let ack: Ack = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("the body must be {{\"upto\": <index>}}: {e}"),
            None,
            Some("invalid_json"),
        )
    })?;
    let n = meter.acknowledge(ack.upto).map_err(meter_error)?;
    Ok(json!({"acknowledged": n}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriceTable;
    use cocoon_attestation::receipt::TokenCounts;
    use hyper::StatusCode;

    fn meter() -> Meter {
        Meter::new(
            PriceTable {
                currency: "nanoton".into(),
                prompt_per_million: 1,
                cached_prompt_per_million: 1,
                completion_per_million: 1,
            },
            [0x4D; 32],
            10,
            10,
        )
        .unwrap()
    }

    /// What `openssl rand -hex 32` printed once.
    const STRONG: &str = "372e6511537134e8d6940693fa82498804d75a3c675a82de789c7ed7fd91438d";

    #[test]
    fn tokens_are_required_and_compared_exactly() {
        let token = HostToken::new(STRONG).unwrap();
        let ok = format!("Bearer {STRONG}");
        assert!(authorize(Some(&token), Some(&ok)).is_ok());
        let other = format!("Bearer {}", &STRONG[1..]);
        for bad in [
            None,
            Some("Bearer "),
            Some("tttt"),
            Some("Basic abc"),
            Some(STRONG),
            Some(other.as_str()),
        ] {
            assert_eq!(
                authorize(Some(&token), bad).unwrap_err().status,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            authorize(None, Some(&ok)).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn pages_and_acknowledgements() {
        let m = meter();
        for i in 0..3 {
            let id = format!("r{i}");
            m.record(
                "a",
                &crate::meter::tests::billed(&id, "stop", TokenCounts::default()),
            )
            .unwrap();
        }
        let body = list_receipts(&m, Some("after=1&limit=1")).unwrap();
        assert_eq!(body["data"][0]["index"], 2);
        assert_eq!(body["last_index"], 3);
        let accounts = list_accounts(&m).unwrap();
        assert_eq!(accounts["data"][0]["account"], "a");
        assert_eq!(accounts["data"][0]["sequence"], 3);
        assert_eq!(accounts["data"][0]["cumulative"]["requests"], 3);
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        for bad in ["limit=0", "after=-1", "limit=99999", "colour=red"] {
            assert_eq!(
                list_receipts(&m, Some(bad)).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(
            acknowledge(&m, br#"{"upto":2}"#).unwrap()["acknowledged"],
            2
        );
        assert_eq!(
            acknowledge(&m, b"{}").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(list_receipts(&m, None).unwrap()["data"][0]["index"], 3);
        // Acknowledging drops receipts from the journal, never from the totals.
        assert_eq!(list_receipts(&m, None).unwrap()["last_index"], 3);
        assert_eq!(list_accounts(&m).unwrap()["data"][0]["sequence"], 3);
    }
}
