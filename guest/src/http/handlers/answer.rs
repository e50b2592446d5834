//! What both shapes of an answer share (one JSON document from [`super::inference`], an
//! event stream from [`super::sse`]): the [`Bill`] its receipt is signed from, and the
//! token texts its `logprobs` name.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use cocoon_attestation::receipt::TokenCounts;
use sha2::{Digest, Sha256};

use crate::engine::generate::{BilledUsage, Delta, Generation, UsageProbe};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::meter::{Billed, VoucherOrder};
use crate::openai::plan::Plan;
use crate::openai::render::{self, TokenTexts};

/// A generation under way and what its answer is made from: the validated request, the
/// admission slot and KV blocks it holds until the end, its bill, and its creation time and deadline.
pub struct AnswerCtx {
    pub plan: Plan,
    pub generation: Generation,
    pub permit: OwnedSemaphorePermit,
    /// The KV cache blocks reserved for it, held as long as the admission slot.
    pub kv: crate::kv::KvReservation,
    pub bill: Bill,
    pub created: u64,
    pub deadline: Instant,
}

/// Everything a request's receipt names besides its outcome.
#[derive(Clone)]
pub struct Bill {
    pub state: Arc<AppState>,
    pub account: String,
    pub id: String,
    pub request_sha256: [u8; 32],
    /// The escrow credit reserved for this request (escrow billing only): released when
    /// the last copy of the bill goes, after the receipt moved the real charge into the
    /// meter's totals.
    pub credit: Option<Arc<crate::escrow::CreditHold>>,
}

impl Bill {
    /// Records the usage and returns the signed receipt (`None`, logged, if signing
    /// failed: the answer still goes out, the failure is the operator's to see).
    pub fn record(
        &self,
        finish: &str,
        usage: BilledUsage,
        response_sha256: [u8; 32],
    ) -> Option<String> {
        let tokens = TokenCounts {
            prompt_tokens: usage.prompt_tokens as u64,
            // The prefix cache is off (engine.rs): no prompt token is served from it.
            cached_tokens: 0,
            completion_tokens: usage.completion_tokens as u64,
        };
        let billed = Billed {
            request_id: &self.id,
            model: &self.state.engine.id,
            finish,
            tokens,
            request_sha256: self.request_sha256,
            response_sha256,
        };
        let escrows = self.state.escrows.as_deref();
        let target = escrows.and_then(|e| {
            let owner = cocoon_attestation::account::AccountId::parse(&self.account).ok()?;
            e.voucher_target(&owner).map(|t| (t, e.payout().clone()))
        });
        let order = target
            .as_ref()
            .map(|(target, payout)| VoucherOrder { target, payout });
        match self
            .state
            .meter
            .record_with_voucher(&self.account, &billed, order)
        {
            Ok(receipt) => Some(receipt),
            Err(e) => {
                tracing::error!(request = %self.id, "usage receipt not recorded: {e}");
                None
            }
        }
    }
}

/// Bills a non-streamed request as `cancelled` if its handler is dropped (the client
/// went away) before the answer was built: the engine did the work.
pub struct BillOnDrop {
    pub bill: Option<(Bill, UsageProbe)>,
}

impl BillOnDrop {
    /// The request ended another way (answered, or failed on the server's side).
    pub fn disarm(&mut self) {
        self.bill = None;
    }
}

impl Drop for BillOnDrop {
    fn drop(&mut self) {
        if let Some((bill, probe)) = self.bill.take() {
            bill.record("cancelled", probe.generated(), Sha256::digest(b"").into());
        }
    }
}
/// Spells out the tokens of `deltas` for `logprobs`.
pub async fn token_texts(state: &AppState, deltas: &[Delta]) -> Result<TokenTexts, ApiError> {
    let ids = render::token_ids(deltas);
    if ids.is_empty() {
        return Ok(TokenTexts::new());
    }
    let texts = state
        .engine
        .texts
        .texts(&state.engine.model, &ids)
        .await
        .map_err(|e| ApiError::internal("engine_error", format!("detokenizing failed: {e:?}")))?;
    Ok(ids.into_iter().zip(texts).collect())
}
