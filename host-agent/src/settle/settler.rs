//! The settlement loop: confirm what was sent, then batch what is owed into one wallet
//! message, store it, send it.
//!
//! Each round:
//! 1. **Check every active settlement against the chain** (this is also the whole of
//!    restart recovery, since a restarted agent starts with the ledger's active ones):
//!    an item has landed when its escrow's `get_guest(key).seq` reaches the item's seq.
//!    All landed: `confirmed`. The wallet's seqno moved past the message's but some item
//!    did not land within `confirm_grace_secs`: `failed` (the escrow refused it; its
//!    voucher is never sent again, a newer one of its key will be). The seqno did not
//!    move and `valid_until` passed: `expired` (the message can never apply; its vouchers
//!    are picked again by step 2 under a new message). Otherwise the stored bytes are sent
//!    (again): harmless, the wallet refuses a seqno it already used.
//! 2. **While a message is active, nothing new is built**: the wallet's seqno orders
//!    messages, and one message carries up to 120 charges, so one at a time loses nothing.
//! 3. **Otherwise decide and batch**: for each (escrow, guest key) the newest stored voucher
//!    above what the chain has paid; owed = `charge_for(tokens, escrow prices) − charged`;
//!    [`decide`] says whether now; [`batch`] picks at most `max_batch`. The message is
//!    stored (`pending`) before it is sent, and marked `sent` after.
//!
//! `COCOON_TEST_CRASH_AT=after-store|after-send` (for the crash tests only, checked here and
//! nowhere else) aborts the process right after storing or right after sending a message,
//! so a test can kill the agent at exactly those points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_billing::address::StdAddr;
use cocoon_billing::chain::{message_hash, Chain};
use cocoon_billing::layout::{
    self, CellLayout as _, Charge, Prices, SignedAuthorization, SignedVoucher,
};
use cocoon_billing::wallet::{OutMessage, Wallet};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use super::decide::{batch, decide, Chosen, Inputs, Thresholds, Verdict};
use super::escrow::{self, address, key_from_hex, within};
use super::metrics::SettleMetrics;
use crate::agent::SharedLedger;
use crate::error::{Error, Result};
use crate::ledger::settlements::{
    ItemState, NewItem, NewSettlement, Settlement, SettlementState, VoucherHead,
};
use crate::ledger::vouchers::raw_address;

/// The environment variable of the crash tests (see the module docs).
pub const CRASH_AT_VAR: &str = "COCOON_TEST_CRASH_AT";

/// The clock settlement runs on (unix seconds): the system's, or in tests the local
/// chain's.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(crate::agent::guest::now_secs)
}

/// `[billing]`'s settlement parameters.
#[derive(Debug, Clone, Copy)]
pub struct SettleParams {
    pub thresholds: Thresholds,
    pub charge_value: u128,
    pub max_batch: usize,
    pub message_ttl_secs: u64,
    pub confirm_grace_secs: u64,
    pub chain_timeout: Duration,
}

/// What the admin API shows of the wallet, updated each round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalletStatus {
    /// The wallet's address, `0:<hex>`.
    pub address: String,
    /// Its user-friendly form.
    pub address_friendly: String,
    /// Its balance at the last round (nanoton).
    pub balance: Option<u128>,
    /// What the agent's vouchers owe at the last round (nanoton).
    pub unsettled_nanoton: u128,
    /// The last round's error, if it failed.
    pub last_error: Option<String>,
    pub last_round_at: Option<u64>,
}

/// Shared with the admin API.
pub type SharedWalletStatus = Arc<Mutex<WalletStatus>>;

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub confirmed: Vec<i64>,
    pub failed: Vec<i64>,
    pub expired: Vec<i64>,
    /// Active settlements sent (again) this round.
    pub resent: Vec<i64>,
    /// The settlement built and sent this round.
    pub created: Option<i64>,
    /// Owed over every key above what the chain paid.
    pub unsettled: u128,
    /// Keys the escrow would refuse now, with why.
    pub held: Vec<(String, String)>,
}

/// Settles from one wallet.
pub struct Settler {
    chain: Arc<dyn Chain>,
    wallet: Arc<Wallet>,
    wallet_address: String,
    ledger: SharedLedger,
    params: SettleParams,
    clock: Clock,
    metrics: SettleMetrics,
    status: SharedWalletStatus,
    /// Price tables by escrow (fixed at deployment).
    prices: HashMap<String, Prices>,
    crash_at: Option<String>,
    /// Tests: stop the round at this point as a crash would (nothing after it happens).
    #[cfg(test)]
    pub(crate) stop_at: Option<&'static str>,
}

impl Settler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chain: Arc<dyn Chain>,
        wallet: Arc<Wallet>,
        ledger: SharedLedger,
        params: SettleParams,
        clock: Clock,
        metrics: SettleMetrics,
        status: SharedWalletStatus,
    ) -> Self {
        let wallet_address = raw_address(&wallet.address());
        {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.address = wallet_address.clone();
            s.address_friendly = cocoon_billing::chain::friendly_address(&wallet.address());
        }
        Self {
            chain,
            wallet,
            wallet_address,
            ledger,
            params,
            clock,
            metrics,
            status,
            prices: HashMap::new(),
            crash_at: std::env::var(CRASH_AT_VAR).ok(),
            #[cfg(test)]
            stop_at: None,
        }
    }

    /// Runs rounds every `poll` until the task is dropped.
    pub async fn run(mut self, poll: Duration) {
        loop {
            match self.round().await {
                Ok(report) => {
                    if report.created.is_some() || !report.confirmed.is_empty() {
                        debug!(?report, "settlement round");
                    }
                    // A message just sent is checked at once (the embedded chain applies it
                    // before answering).
                    if report.created.is_some() {
                        continue;
                    }
                }
                Err(e) => {
                    warn!("settlement round: {e}");
                    self.update_status(|s| s.last_error = Some(e.to_string()));
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut WalletStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Aborts the process at `point` when the crash tests ask for it; in this crate's own
    /// tests, says whether to stop there instead.
    fn crash_point(&self, point: &str) -> bool {
        if self.crash_at.as_deref() == Some(point) {
            eprintln!("cocoon-host-agent: {CRASH_AT_VAR}={point}: aborting (crash test)");
            std::process::abort();
        }
        #[cfg(test)]
        if self.stop_at == Some(point) {
            return true;
        }
        false
    }

    /// One round (see the module docs).
    pub async fn round(&mut self) -> Result<RoundReport> {
        let mut report = RoundReport::default();
        let active = self.ledger.run(|l| l.active_settlements()).await?;
        let mut still_active = false;
        for settlement in active {
            if self.check(settlement, &mut report).await? {
                still_active = true;
            }
        }
        let balance = within(
            self.params.chain_timeout,
            "wallet state",
            self.chain.account_state(&self.wallet.address()),
        )
        .await?
        .balance;
        let now = (self.clock)();
        self.update_status(|s| {
            s.balance = Some(balance);
            s.last_round_at = Some(now);
            s.last_error = None;
        });
        if still_active {
            return Ok(report);
        }
        self.plan_and_send(balance, &mut report).await?;
        self.metrics.unsettled.set(gauge(report.unsettled));
        let unsettled = report.unsettled;
        self.update_status(|s| s.unsettled_nanoton = unsettled);
        Ok(report)
    }

    async fn guest_on_chain(&self, escrow: &str, key: &str) -> Result<escrow::GuestOnChain> {
        let addr = address(escrow)?;
        let state = escrow::guest_state(
            self.chain.as_ref(),
            self.params.chain_timeout,
            &addr,
            &key_from_hex(key)?,
        )
        .await?;
        let (e, k, now) = (escrow.to_string(), key.to_string(), (self.clock)());
        self.ledger
            .run(move |l| l.record_chain_guest(&e, &k, state.seq, state.charged, now))
            .await?;
        Ok(state)
    }

    /// Checks one active settlement; returns whether it is still active.
    async fn check(&mut self, s: Settlement, report: &mut RoundReport) -> Result<bool> {
        let mut landed = Vec::with_capacity(s.items.len());
        for item in &s.items {
            let state = self.guest_on_chain(&item.escrow, &item.receipt_key).await?;
            landed.push(state.seq >= item.seq);
        }
        let wallet = self.wallet.address();
        let seqno = within(
            self.params.chain_timeout,
            "wallet seqno",
            self.chain.wallet_seqno(&wallet),
        )
        .await?;
        let now = (self.clock)();
        let states = |otherwise: ItemState| -> Vec<(u32, ItemState)> {
            s.items
                .iter()
                .zip(&landed)
                .map(|(item, &l)| (item.position, if l { ItemState::Landed } else { otherwise }))
                .collect()
        };
        let landed_amount: u128 = s
            .items
            .iter()
            .zip(&landed)
            .filter(|(_, &l)| l)
            .map(|(item, _)| item.amount)
            .sum();
        let count = landed.iter().filter(|&&l| l).count();
        if count == s.items.len() {
            let gas = self.gas_since(&s).await?;
            let items = states(ItemState::Landed);
            self.finish(&s, SettlementState::Confirmed, None, Some(gas), items, now)
                .await?;
            self.metrics.settled.inc_by(counter(landed_amount));
            self.metrics.gas.inc_by(counter(gas));
            info!(
                settlement = s.id,
                charges = s.items.len(),
                settled = landed_amount,
                gas,
                "settlement confirmed"
            );
            report.confirmed.push(s.id);
            return Ok(false);
        }
        if seqno > s.seqno {
            let since = s.sent_at.unwrap_or(s.created_at);
            if now < since.saturating_add(self.params.confirm_grace_secs) {
                return Ok(true);
            }
            let detail = format!(
                "the wallet used seqno {} but {} of {} charges did not land",
                s.seqno,
                s.items.len() - count,
                s.items.len()
            );
            for (item, &l) in s.items.iter().zip(&landed) {
                if !l {
                    let escrow_state = match address(&item.escrow) {
                        Ok(addr) => escrow::escrow_state(
                            self.chain.as_ref(),
                            self.params.chain_timeout,
                            &addr,
                        )
                        .await
                        .map(|e| format!("{e:?}"))
                        .unwrap_or_else(|e| e.to_string()),
                        Err(e) => e.to_string(),
                    };
                    error!(
                        settlement = s.id,
                        escrow = item.escrow,
                        seq = item.seq,
                        voucher = item.voucher_id,
                        escrow_state,
                        "charge refused by the escrow; this voucher is not sent again"
                    );
                }
            }
            let gas = self.gas_since(&s).await?;
            self.finish(
                &s,
                SettlementState::Failed,
                Some(&detail),
                Some(gas),
                states(ItemState::Failed),
                now,
            )
            .await?;
            self.metrics.settled.inc_by(counter(landed_amount));
            self.metrics.gas.inc_by(counter(gas));
            report.failed.push(s.id);
            return Ok(false);
        }
        if now > u64::from(s.valid_until) {
            let detail = format!(
                "not applied by valid_until {} (wallet seqno still {seqno}); its charges go \
                 into a new message",
                s.valid_until
            );
            warn!(settlement = s.id, "{detail}");
            self.finish(
                &s,
                SettlementState::Expired,
                Some(&detail),
                None,
                states(ItemState::Expired),
                now,
            )
            .await?;
            report.expired.push(s.id);
            return Ok(false);
        }
        // Not applied and still valid: send the stored bytes (again).
        self.send(&s).await;
        report.resent.push(s.id);
        Ok(true)
    }

    /// The wallet's balance drop since the settlement was built.
    async fn gas_since(&self, s: &Settlement) -> Result<u128> {
        let now = within(
            self.params.chain_timeout,
            "wallet state",
            self.chain.account_state(&self.wallet.address()),
        )
        .await?
        .balance;
        Ok(s.wallet_balance.saturating_sub(now))
    }

    async fn finish(
        &self,
        s: &Settlement,
        state: SettlementState,
        detail: Option<&str>,
        gas: Option<u128>,
        items: Vec<(u32, ItemState)>,
        now: u64,
    ) -> Result<()> {
        let (id, detail) = (s.id, detail.map(str::to_string));
        self.ledger
            .run(move |l| l.finish_settlement(id, state, detail.as_deref(), gas, &items, now))
            .await?;
        self.metrics.count(state);
        Ok(())
    }

    /// Sends a stored message and marks it sent; a failure leaves it `pending` for the
    /// next round (which looks at the chain before sending it again).
    async fn send(&self, s: &Settlement) -> bool {
        match within(
            self.params.chain_timeout,
            "sending a wallet message",
            self.chain.send_boc(&s.message),
        )
        .await
        {
            Ok(_) => {
                if self.crash_point("after-send") {
                    return true;
                }
                let (id, now) = (s.id, (self.clock)());
                if let Err(e) = self
                    .ledger
                    .run(move |l| l.mark_settlement_sent(id, now))
                    .await
                {
                    warn!(settlement = s.id, "recording the send: {e}");
                }
                true
            }
            Err(e) => {
                warn!(
                    settlement = s.id,
                    "sending: {e}; checked against the chain next round"
                );
                false
            }
        }
    }

    async fn escrow_prices(&mut self, escrow: &str, addr: &StdAddr) -> Result<Prices> {
        if let Some(prices) = self.prices.get(escrow) {
            return Ok(*prices);
        }
        let prices = escrow::prices(self.chain.as_ref(), self.params.chain_timeout, addr).await?;
        self.prices.insert(escrow.to_string(), prices);
        Ok(prices)
    }

    /// Decides for every key with an unpaid voucher; builds, stores and sends one message.
    async fn plan_and_send(&mut self, balance: u128, report: &mut RoundReport) -> Result<()> {
        let heads = self.ledger.run(|l| l.voucher_heads()).await?;
        let now = (self.clock)();
        let mut considered = Vec::with_capacity(heads.len());
        for head in heads {
            let outcome = self.consider(&head, now).await;
            considered.push((head, outcome));
        }
        // Keys of each escrow with something unpaid: a charge may close a closing escrow
        // only when it is the last one that escrow owes this agent.
        let mut unpaid_keys: HashMap<String, usize> = HashMap::new();
        for (head, outcome) in &considered {
            if matches!(outcome, Ok(Some(_))) {
                *unpaid_keys.entry(head.escrow.clone()).or_default() += 1;
            }
        }
        let mut chosen = Vec::new();
        for (head, outcome) in considered {
            match outcome {
                Ok(Some((verdict, inputs))) => {
                    report.unsettled += inputs.owed();
                    match verdict {
                        Verdict::Settle(reason) => {
                            let is_final = final_charge(&inputs, unpaid_keys[&head.escrow]);
                            chosen.push(Chosen {
                                reason,
                                window_end: inputs.window_end(),
                                owed: inputs.owed(),
                                item: (head, inputs, is_final),
                            })
                        }
                        Verdict::Wait => {}
                        Verdict::Hold(why) => {
                            debug!(escrow = head.escrow, seq = head.seq, "not settling: {why}");
                            report.held.push((head.escrow.clone(), why));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(escrow = head.escrow, "reading the escrow: {e}");
                    report.held.push((head.escrow.clone(), e.to_string()));
                }
            }
        }
        let chosen = batch(chosen, self.params.max_batch);
        if chosen.is_empty() {
            return Ok(());
        }
        let wallet = self.wallet.address();
        let seqno = within(
            self.params.chain_timeout,
            "wallet seqno",
            self.chain.wallet_seqno(&wallet),
        )
        .await?;
        let valid_until =
            u32::try_from(now.saturating_add(self.params.message_ttl_secs)).unwrap_or(u32::MAX);
        let mut messages = Vec::with_capacity(chosen.len());
        let mut items = Vec::with_capacity(chosen.len());
        for (position, c) in chosen.into_iter().enumerate() {
            let (head, inputs, is_final) = c.item;
            let query_id = u64::from(seqno) << 8 | position as u64;
            let body = match charge_body(&head, query_id, is_final) {
                Ok(body) => body,
                Err(e) => {
                    error!(voucher = head.voucher_id, "stored voucher unusable: {e}");
                    continue;
                }
            };
            messages.push(OutMessage {
                dest: address(&head.escrow)?,
                value: self.params.charge_value,
                bounce: true,
                body: Some(body),
                state_init: None,
            });
            items.push(NewItem {
                voucher_id: head.voucher_id,
                escrow: head.escrow,
                receipt_key: head.receipt_key,
                seq: head.seq,
                charged: inputs.charged_new,
                amount: inputs.owed(),
            });
        }
        if messages.is_empty() {
            return Ok(());
        }
        let message = self
            .wallet
            .external_transfer(seqno, valid_until, &messages)
            .map_err(|e| Error::Billing(format!("building the wallet message: {e}")))?;
        let new = NewSettlement {
            wallet: self.wallet_address.clone(),
            seqno,
            valid_until,
            message_hash: message_hash(&message)
                .map_err(|e| Error::Billing(format!("wallet message: {e}")))?,
            message,
            wallet_balance: balance,
            items,
        };
        let charges = new.items.len();
        let id = self
            .ledger
            .run(move |l| {
                let id = l.create_settlement(&new, now)?;
                Ok(id)
            })
            .await?;
        self.metrics.count(SettlementState::Pending);
        report.created = Some(id);
        if self.crash_point("after-store") {
            return Ok(());
        }
        info!(
            settlement = id,
            seqno, charges, "settlement stored; sending"
        );
        let stored = self
            .ledger
            .run(move |l| l.settlement(id))
            .await?
            .ok_or_else(|| Error::Billing(format!("settlement {id} vanished from the ledger")))?;
        if self.send(&stored).await {
            self.metrics.count(SettlementState::Sent);
        }
        Ok(())
    }

    /// Reads the chain for one voucher head; `None` when the chain already paid it (or
    /// no escrow is deployed at its address).
    async fn consider(
        &mut self,
        head: &VoucherHead,
        now: u64,
    ) -> Result<Option<(Verdict, Inputs)>> {
        let addr = address(&head.escrow)?;
        let Some(state) =
            escrow::escrow_state(self.chain.as_ref(), self.params.chain_timeout, &addr).await?
        else {
            return Ok(Some((
                Verdict::Hold("no escrow contract is deployed at this address".into()),
                Inputs {
                    charged_new: 0,
                    charged_old: 0,
                    balance: 0,
                    stake: 0,
                    close_delay: 0,
                    unlock_at: 0,
                    cap: 0,
                    expires_at: 0,
                    oldest_unsettled_at: head.oldest_unsettled_at,
                },
            )));
        };
        let guest = self.guest_on_chain(&head.escrow, &head.receipt_key).await?;
        if guest.seq >= head.seq {
            return Ok(None);
        }
        let prices = self.escrow_prices(&head.escrow, &addr).await?;
        let inputs = Inputs {
            charged_new: layout::charge_for(&prices, head.prompt, head.cached, head.completion),
            charged_old: guest.charged,
            balance: state.balance,
            stake: state.stake,
            close_delay: state.close_delay,
            unlock_at: state.unlock_at,
            cap: head.cap,
            expires_at: head.expires_at,
            oldest_unsettled_at: head.oldest_unsettled_at,
        };
        Ok(Some((
            decide(&inputs, &self.params.thresholds, now),
            inputs,
        )))
    }
}

/// Whether a charge should be `final` (the escrow refunds the rest to its owner at once,
/// PROTOCOL.md): only while the escrow is closing (its owner asked to leave, and the guest
/// takes no new requests on it), and only when this voucher is the last thing the escrow
/// owes this agent (`unpaid_keys` of its guest keys have unpaid vouchers), so closing it
/// leaves nothing of ours behind. The client gets its refund now instead of after the
/// close delay, and the operator is paid without waiting for `unlock_at`.
pub fn final_charge(inputs: &Inputs, unpaid_keys: usize) -> bool {
    inputs.unlock_at != 0 && unpaid_keys == 1
}

/// The `charge` body for a stored voucher.
pub fn charge_body(
    head: &VoucherHead,
    query_id: u64,
    is_final: bool,
) -> Result<cocoon_billing::address::Cell> {
    let bad = |e: cocoon_billing::Error| Error::Billing(e.to_string());
    Charge {
        query_id,
        is_final,
        voucher: SignedVoucher::from_boc(&head.voucher_boc).map_err(bad)?,
        authorization: SignedAuthorization::from_boc(&head.authorization_boc).map_err(bad)?,
    }
    .to_cell()
    .map_err(bad)
}

fn gauge(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn counter(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
