//! The guest's own record of an escrow account (`GET /v1/billing/account`): what it has
//! signed vouchers for, so the owner can see the usage the host has not settled yet.
//!
//! The chain knows only settled charges, and the host that settles is outside the trust
//! boundary. The guest is the one party that knows what it counted, so the owner asks it
//! inside a verified session, proving its account key there (the same proof the proxy
//! adds to every request); the guest answers nobody else about the account.

use cocoon_attestation::account::{AccountKey, ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};
use cocoon_attestation::Error;
use serde::Deserialize;

use crate::session::{AttestedConnection, Endpoint};

/// Largest answer accepted.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// The path the guest serves it on.
pub const BILLING_ACCOUNT_PATH: &str = "/v1/billing/account";

/// Cumulative token counts of the account under this guest's key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct GuestTokens {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

/// The authorization the guest holds for the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct HeldAuthorization {
    pub cap: u64,
    pub expires_at: u64,
}

/// What the guest answered (amounts in nanoton).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestAccount {
    pub account: String,
    /// The escrow the guest derived for the account (raw address).
    pub escrow: String,
    /// The guest's receipt (voucher) key, hex.
    pub guest_key: String,
    /// Sequence of the latest voucher (0: none).
    pub seq: u64,
    pub requests: u64,
    pub tokens: GuestTokens,
    /// Cumulative charge of the latest voucher.
    pub charged: u64,
    /// Largest possible charges of requests still running.
    pub in_flight: u64,
    pub authorization: Option<HeldAuthorization>,
    /// `charged` minus the settled charge the host last reported to the guest (the host
    /// may lag or lie: [`GuestAccount::unsettled`] uses the chain's figure instead).
    #[serde(rename = "unsettled")]
    pub unsettled_as_reported: u64,
}

impl GuestAccount {
    /// What the guest has signed for beyond `settled` (the chain's `get_guest` charge).
    pub fn unsettled(&self, settled: u128) -> u128 {
        u128::from(self.charged).saturating_sub(settled)
    }
}

/// `GET /v1/billing/account` over the verified session, the account proven with `key`.
/// The answer must be about this key's account and this session's guest key.
pub async fn fetch_guest_account(
    connection: &mut AttestedConnection,
    endpoint: &Endpoint,
    key: &AccountKey,
) -> Result<GuestAccount, Error> {
    let account = key.id().to_string();
    let proof = key.prove(&connection.tls_exporter);
    let headers = [
        (ACCOUNT_HEADER, account.as_str()),
        (ACCOUNT_PROOF_HEADER, proof.as_str()),
    ];
    let (status, body) = connection
        .get(endpoint, BILLING_ACCOUNT_PATH, &headers, MAX_ANSWER_BYTES)
        .await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(Error::Rejected(format!(
            "GET {BILLING_ACCOUNT_PATH} answered {status}: {message}"
        )));
    }
    let answer: GuestAccount = serde_json::from_slice(&body).map_err(|e| Error::Malformed {
        what: "guest billing account",
        detail: e.to_string(),
    })?;
    if answer.account != account {
        return Err(Error::Rejected(format!(
            "the guest answered for account {}, not {account}",
            answer.account
        )));
    }
    let session_key = connection
        .verified
        .certificate
        .receipt_key
        .clone()
        .unwrap_or_default();
    if !answer.guest_key.eq_ignore_ascii_case(&session_key) {
        return Err(Error::Rejected(format!(
            "the guest answered for key {}, but its evidence attests receipt key {session_key}",
            answer.guest_key
        )));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_guest_account_answers_parse_and_unsettled_never_goes_below_zero() {
        let answer = serde_json::json!({
            "object": "billing.account",
            "account": "ed25519:".to_string() + &"ab".repeat(32),
            "escrow": "0:".to_string() + &"11".repeat(32),
            "guest_key": "cd".repeat(32),
            "payout": "0:".to_string() + &"22".repeat(32),
            "seq": 3, "requests": 3,
            "tokens": {"prompt_tokens": 30, "cached_tokens": 0, "completion_tokens": 12},
            "charged": 900, "in_flight": 50,
            "authorization": {"cap": 2_000_000_000u64, "expires_at": 1_800_000_000u64},
            "reported": null, "unsettled": 900,
        });
        let account: GuestAccount = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(account.seq, 3);
        assert_eq!(account.tokens.completion_tokens, 12);
        assert_eq!(account.authorization.map(|a| a.cap), Some(2_000_000_000));
        assert_eq!(account.unsettled_as_reported, 900);
        // Against what the chain settled: the part still owed, never negative (a chain
        // that shows more settled than the guest signed means a voucher of an earlier
        // boot's key, or a lie; either way nothing is owed here).
        assert_eq!(account.unsettled(0), 900);
        assert_eq!(account.unsettled(600), 300);
        assert_eq!(account.unsettled(5_000), 0);
        // A missing field is an error, not a zero.
        let mut partial = answer;
        partial.as_object_mut().unwrap().remove("charged");
        assert!(serde_json::from_value::<GuestAccount>(partial).is_err());
    }
}
