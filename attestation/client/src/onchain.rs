//! The escrow owner's commands against a chain: read the escrow, pay from the client's
//! wallet, and wait until the chain shows the effect (`cocoon-client escrow …` and
//! `cocoon-client balance`).
//!
//! The chain is a [`Chain`]: in the CLI a TON HTTP API (toncenter v2 routes, or the host
//! agent's loopback server over its local chain), in tests the same server over a
//! `LocalChain`. Every command follows the same steps:
//!
//! 1. read the escrow (`get_escrow`) and check, with [`crate::owner`], that the operation is
//!    one the contract will accept from this key (so a refusal costs no gas and says why);
//! 2. check that the wallet holds what the messages carry plus [`FEE_MARGIN`], and name the
//!    wallet address to fund if it does not;
//! 3. sign a wallet v5r1 transfer at the wallet's current seqno, valid for the wait, and
//!    send it;
//! 4. poll the wallet and the escrow until the effect is there (the escrow deployed, its
//!    `owner_seqno` advanced, the refund done, the balance grown), or until the escrow
//!    shows it processed our message without that effect (refused), or until the wait ends.
//!
//! A send is never taken as success: a real network only queues it, and a message the
//! escrow refuses bounces back to the wallet.

use std::time::Duration;

use cocoon_attestation::account::AccountKey;
use cocoon_billing::address::parse_address;
use cocoon_billing::chain::{AccountState, AccountStatus, Chain, StackValue};
use cocoon_billing::layout::{Prices, PublicKey, STORAGE_RESERVE};
use cocoon_billing::wallet::OutMessage;
use num_bigint::{BigInt, Sign};
use tycho_types::models::StdAddr;

use crate::amount::{with_unit, Amount};
use crate::escrow::EscrowTerms;
use crate::guest_account::{fetch_guest_account, GuestAccount};
use crate::owner::{self, EscrowState, Operation};
use crate::wallet::OwnerWallet;

/// What the wallet must hold beyond the values it sends: the external message's gas and
/// the forwarding fees (an estimate with room to spare; what is unused stays in the
/// wallet).
pub const FEE_MARGIN: u128 = 50_000_000;

/// Longest a wallet transfer stays valid, whatever the wait.
const MAX_TRANSFER_VALIDITY_SECS: u64 = 600;

/// Shortest validity of a wallet transfer (a network needs a few blocks to include it).
const MIN_TRANSFER_VALIDITY_SECS: u64 = 60;

fn chain_error(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn shape(method: &str, stack: &[StackValue]) -> String {
    format!("{method}: unexpected result {stack:?}")
}

fn uint<T: TryFrom<u128>>(method: &str, stack: &[StackValue], index: usize) -> Result<T, String> {
    stack
        .get(index)
        .and_then(StackValue::as_u128)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| shape(method, stack))
}

/// Reads an escrow (`get_escrow`); `None` when no contract is deployed at the address.
pub async fn read_escrow(
    chain: &dyn Chain,
    escrow: &StdAddr,
) -> Result<Option<EscrowState>, String> {
    let account = chain
        .account_state(escrow)
        .await
        .map_err(|e| chain_error("reading the escrow's account", e))?;
    if account.status != AccountStatus::Active {
        return Ok(None);
    }
    let method = "get_escrow";
    let stack = chain
        .run_get_method(escrow, method, &[])
        .await
        .map_err(|e| chain_error(method, e))?;
    if stack.len() != 7 {
        return Err(shape(method, &stack));
    }
    let owner = stack[0]
        .as_u256_bytes()
        .ok_or_else(|| shape(method, &stack))?;
    Ok(Some(EscrowState {
        owner,
        balance: uint(method, &stack, 1)?,
        stake: uint(method, &stack, 2)?,
        total_charged: uint(method, &stack, 3)?,
        owner_seqno: uint(method, &stack, 4)?,
        unlock_at: uint(method, &stack, 5)?,
        close_delay: uint(method, &stack, 6)?,
    }))
}

/// `get_guest(key)`: the last voucher the escrow paid under a guest key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestOnChain {
    pub seq: u64,
    pub charged: u128,
}

/// Reads what an escrow has paid under `key` (`(0, 0)` for a key it never paid).
pub async fn read_guest(
    chain: &dyn Chain,
    escrow: &StdAddr,
    key: &PublicKey,
) -> Result<GuestOnChain, String> {
    let method = "get_guest";
    let arg = StackValue::int(BigInt::from_bytes_be(Sign::Plus, key));
    let stack = chain
        .run_get_method(escrow, method, &[arg])
        .await
        .map_err(|e| chain_error(method, e))?;
    if stack.len() != 2 {
        return Err(shape(method, &stack));
    }
    Ok(GuestOnChain {
        seq: uint(method, &stack, 0)?,
        charged: uint(method, &stack, 1)?,
    })
}

/// Reads an escrow's price table (`get_prices`; fixed at deployment, part of the address).
pub async fn read_prices(chain: &dyn Chain, escrow: &StdAddr) -> Result<Prices, String> {
    cocoon_billing::record::read_prices(chain, escrow)
        .await
        .map_err(|e| chain_error("get_prices", e))
}

/// A TON HTTP API client for `url`, sending the key in `api_key_file` (toncenter's
/// X-API-Key) when one is given.
pub fn ton_http_client(
    url: String,
    api_key_file: Option<&std::path::Path>,
) -> Result<cocoon_billing::ton_http::TonHttpClient, String> {
    use cocoon_billing::ton_http::{TonHttpClient, TonHttpConfig};
    let mut config = TonHttpConfig::new(url);
    if let Some(path) = api_key_file {
        config = config.with_api_key_file(path).map_err(|e| e.to_string())?;
    }
    TonHttpClient::new(config).map_err(|e| e.to_string())
}

/// What an owner command runs with: the chain, the key (owner and wallet), and how long
/// and how often to look for the effect.
pub struct Owner<'a> {
    pub chain: &'a dyn Chain,
    pub key: &'a AccountKey,
    pub wallet: &'a OwnerWallet,
    /// How long to wait for the effect after sending.
    pub wait: Duration,
    /// Pause between two looks at the chain.
    pub poll: Duration,
}

/// A wallet transfer [`Owner::send_transfer`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentTransfer {
    /// The wallet seqno it was signed with.
    pub seqno: u32,
    /// The destination's last logical time before it.
    pub watched_lt: u64,
    /// It cannot execute after this time.
    pub valid_until: u32,
}

/// What a command did: the escrow before and after, and the wallet's seqno the transfer
/// used.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub escrow: StdAddr,
    /// `None` when the escrow was not deployed before (a deploy).
    pub before: Option<EscrowState>,
    pub after: EscrowState,
    /// The wallet seqno the transfer was signed with.
    pub wallet_seqno: u32,
}

impl Outcome {
    /// One line per changed field, for the human output.
    pub fn describe(&self) -> String {
        let after = &self.after;
        let mut lines = vec![format!("escrow {}", self.escrow)];
        let field = |name: &str, before: Option<String>, now: String| match before {
            Some(b) if b != now => format!("  {name:<14} {b} -> {now}"),
            _ => format!("  {name:<14} {now}"),
        };
        let b = self.before.as_ref();
        lines.push(field(
            "balance",
            b.map(|s| with_unit(Amount(s.balance))),
            with_unit(Amount(after.balance)),
        ));
        lines.push(field(
            "stake",
            b.map(|s| with_unit(Amount(s.stake))),
            with_unit(Amount(after.stake)),
        ));
        lines.push(field(
            "free",
            b.map(|s| with_unit(Amount(s.free()))),
            with_unit(Amount(after.free())),
        ));
        lines.push(field(
            "owner_seqno",
            b.map(|s| s.owner_seqno.to_string()),
            after.owner_seqno.to_string(),
        ));
        lines.push(field(
            "closing",
            b.map(|s| closing_text(s.unlock_at)),
            closing_text(after.unlock_at),
        ));
        lines.join("\n")
    }
}

/// `no`, or when the refund is allowed from (UTC).
pub fn closing_text(unlock_at: u32) -> String {
    if unlock_at == 0 {
        "no".into()
    } else {
        format!("yes, refund from {}", utc(unlock_at))
    }
}

/// A Unix time as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub fn utc(unix: u32) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::from(unix))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// What the escrow must show for a command to have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Deployed (and, with a stake, the stake set by owner request 0).
    Deployed { stake: Option<u128> },
    /// A top-up arrived: the balance grew (a charge in the same moment could hide it; the
    /// escrow's transaction from the wallet, kept and not bounced, settles that).
    ToppedUp,
    /// An owner request was executed.
    OwnerSeqno(u32),
    /// The refund left: the escrow is open again.
    Refunded,
}

impl Effect {
    fn seen(self, before: Option<&EscrowState>, now: &EscrowState) -> bool {
        match self {
            Self::Deployed { stake } => {
                stake.is_none_or(|s| now.owner_seqno >= 1 && now.stake >= s)
            }
            Self::ToppedUp => before.is_none_or(|b| now.balance > b.balance),
            Self::OwnerSeqno(seqno) => now.owner_seqno > seqno,
            Self::Refunded => now.unlock_at == 0,
        }
    }
}

impl Owner<'_> {
    /// Deploys the escrow of `terms` with `amount` (and `stake`, set in the same
    /// transfer), and waits until it is deployed.
    pub async fn deploy(
        &self,
        terms: &EscrowTerms,
        amount: Amount,
        stake: Option<Amount>,
        now: u64,
    ) -> Result<Outcome, String> {
        let escrow = terms.address().map_err(|e| e.to_string())?;
        if let Some(state) = read_escrow(self.chain, &escrow).await? {
            return Err(format!(
                "escrow {escrow} is already deployed (balance {}, stake {}): use \
                 `cocoon-client escrow top-up` or `set-stake`",
                with_unit(Amount(state.balance)),
                with_unit(Amount(state.stake))
            ));
        }
        let messages =
            owner::deploy(self.key, terms, amount, stake, now).map_err(|e| e.to_string())?;
        let effect = Effect::Deployed {
            stake: stake.map(Amount::nano).filter(|s| *s > 0),
        };
        self.send_and_wait(&escrow, None, &messages, effect, now)
            .await
    }

    /// Runs `operation` on the deployed escrow at `escrow` (after checking it is this
    /// key's and the contract will accept it), and waits for its effect.
    pub async fn operate(
        &self,
        escrow: &StdAddr,
        operation: &Operation,
        now: u64,
    ) -> Result<Outcome, String> {
        let state = read_escrow(self.chain, escrow).await?.ok_or_else(|| {
            format!(
                "no escrow is deployed at {escrow}: deploy it first (`cocoon-client escrow \
                 deploy`)"
            )
        })?;
        let message = owner::operation(self.key, escrow, &state, operation, now)
            .map_err(|e| e.to_string())?;
        let effect = match operation {
            Operation::TopUp { .. } => Effect::ToppedUp,
            Operation::Refund => Effect::Refunded,
            _ => Effect::OwnerSeqno(state.owner_seqno),
        };
        self.send_and_wait(escrow, Some(state), &[message], effect, now)
            .await
    }

    /// Sends `messages` from the wallet (after checking it can pay them) and waits until
    /// the escrow at `escrow` (in state `before`, `None` if not deployed) shows `effect`.
    /// [`Owner::deploy`] and [`Owner::operate`] check the escrow's rules first; this does
    /// not.
    pub async fn send_and_wait(
        &self,
        escrow: &StdAddr,
        before: Option<EscrowState>,
        messages: &[OutMessage],
        effect: Effect,
        now: u64,
    ) -> Result<Outcome, String> {
        let sent = self.send_transfer(escrow, messages, now).await?;
        self.wait_for(
            escrow,
            before,
            effect,
            sent.seqno,
            sent.watched_lt,
            sent.valid_until,
        )
        .await
    }

    /// Sends `messages` in one wallet transfer after checking the wallet can pay them
    /// (naming the address to fund if not); returns the wallet seqno it used, the last
    /// logical time of `watched` before (to find its transactions after) and the
    /// transfer's expiry.
    pub async fn send_transfer(
        &self,
        watched: &StdAddr,
        messages: &[OutMessage],
        now: u64,
    ) -> Result<SentTransfer, String> {
        let wallet = self.wallet.address();
        let funds = self
            .chain
            .account_state(&wallet)
            .await
            .map_err(|e| chain_error("reading the wallet", e))?;
        let sent: u128 = messages.iter().map(|m| m.value).sum();
        let needed = sent + FEE_MARGIN;
        if funds.balance < needed {
            return Err(format!(
                "the wallet holds {}, this needs {} ({} sent plus up to {} in fees): send at \
                 least {} to {}",
                with_unit(Amount(funds.balance)),
                with_unit(Amount(needed)),
                with_unit(Amount(sent)),
                with_unit(Amount(FEE_MARGIN)),
                with_unit(Amount(needed - funds.balance)),
                self.wallet.address_text()
            ));
        }
        let seqno = self
            .chain
            .wallet_seqno(&wallet)
            .await
            .map_err(|e| chain_error("reading the wallet's seqno", e))?;
        let watched_lt = self
            .chain
            .account_state(watched)
            .await
            .map_err(|e| chain_error("reading the destination's account", e))?
            .last_lt;
        let validity = self
            .wait
            .as_secs()
            .clamp(MIN_TRANSFER_VALIDITY_SECS, MAX_TRANSFER_VALIDITY_SECS);
        let valid_until = u32::try_from(now + validity)
            .map_err(|_| "the clock is past what a 32-bit TON time holds".to_string())?;
        let boc = self.wallet.transfer(seqno, valid_until, messages)?;
        self.chain
            .send_boc(&boc)
            .await
            .map_err(|e| chain_error("sending the wallet's transfer", e))?;
        Ok(SentTransfer {
            seqno,
            watched_lt,
            valid_until,
        })
    }

    /// Polls until the escrow shows `effect`; fails early when the escrow bounced a
    /// message from the wallet back (refused).
    async fn wait_for(
        &self,
        escrow: &StdAddr,
        before: Option<EscrowState>,
        effect: Effect,
        seqno: u32,
        escrow_lt: u64,
        valid_until: u32,
    ) -> Result<Outcome, String> {
        let wallet = self.wallet.address();
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut wallet_moved = false;
        let done = |after: EscrowState| Outcome {
            escrow: escrow.clone(),
            before,
            after,
            wallet_seqno: seqno,
        };
        loop {
            if !wallet_moved {
                // A read error while polling is not fatal: the next look may succeed.
                wallet_moved = matches!(self.chain.wallet_seqno(&wallet).await, Ok(s) if s > seqno);
            }
            if wallet_moved {
                let ours = self.escrow_processed_ours(escrow, escrow_lt).await;
                if let Ok(Some(now)) = read_escrow(self.chain, escrow).await {
                    // A top-up the escrow kept is done even if a charge in the same
                    // moment took the balance back down.
                    if effect.seen(before.as_ref(), &now)
                        || (matches!(effect, Effect::ToppedUp) && ours == Some(false))
                    {
                        return Ok(done(now));
                    }
                }
                if ours == Some(true) {
                    return Err(format!(
                        "the wallet sent the message (seqno {seqno}) and escrow {escrow} \
                         refused it: the value bounced back to the wallet (the escrow's \
                         transactions carry the exit code, see billing/PROTOCOL.md)"
                    ));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(if wallet_moved {
                    format!(
                        "the wallet sent the message (seqno {seqno}) but escrow {escrow} showed \
                         no effect within {} s; check again with `cocoon-client balance`",
                        self.wait.as_secs()
                    )
                } else {
                    format!(
                        "the wallet's transfer (seqno {seqno}) was not executed within {} s; it \
                         stays valid until {} and cannot execute after: check with \
                         `cocoon-client balance` before sending again",
                        self.wait.as_secs(),
                        utc(valid_until)
                    )
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Whether the escrow processed a message from this wallet after `since_lt`:
    /// `Some(true)` if it bounced one back (refused), `Some(false)` if it kept them,
    /// `None` if none is there (yet) or the transactions could not be read.
    async fn escrow_processed_ours(&self, escrow: &StdAddr, since_lt: u64) -> Option<bool> {
        let wallet = self.wallet.address();
        let transactions = self.chain.transactions(escrow, 16).await.ok()?;
        let ours: Vec<_> = transactions
            .iter()
            .filter(|tx| {
                tx.lt > since_lt
                    && tx
                        .in_msg
                        .as_ref()
                        .and_then(|m| m.source.as_ref())
                        .is_some_and(|source| *source == wallet)
            })
            .collect();
        if ours.is_empty() {
            return None;
        }
        Some(ours.iter().any(|tx| {
            tx.out_msgs
                .iter()
                .any(|m| m.destination.as_ref() == Some(&wallet) && is_bounce(&m.body))
        }))
    }
}

/// Whether a message body is a bounce (`0xffffffff` then the original body).
fn is_bounce(body: &tycho_types::cell::Cell) -> bool {
    let Ok(mut slice) = body.as_slice() else {
        return false;
    };
    slice.load_u32().is_ok_and(|tag| tag == 0xffff_ffff)
}

/// One guest key's line in the balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBalance {
    pub key: PublicKey,
    pub on_chain: GuestOnChain,
    /// The authorization cap the user named (`--spend-cap`), if any.
    pub cap: Option<u128>,
    /// What the guest itself holds for the account (`balance --upstream`).
    pub guest: Option<GuestAccount>,
}

impl GuestBalance {
    /// What the guest has signed vouchers for beyond what the chain has settled
    /// (`None` unless the guest was asked).
    pub fn unsettled(&self) -> Option<u128> {
        self.guest
            .as_ref()
            .map(|g| g.unsettled(self.on_chain.charged))
    }

    /// What the guest may still charge under the cap: cap − what the chain has settled
    /// (the unsettled usage, unknown to the client, comes out of this too).
    pub fn cap_headroom(&self) -> Option<u128> {
        self.cap.map(|c| c.saturating_sub(self.on_chain.charged))
    }
}

/// What `cocoon-client balance` shows.
#[derive(Debug, Clone)]
pub struct Balance {
    pub escrow: StdAddr,
    pub network: String,
    pub wallet: StdAddr,
    pub wallet_text: String,
    pub wallet_account: AccountState,
    /// The escrow's account (balance and status even when not deployed).
    pub escrow_account: AccountState,
    /// `None`: no escrow deployed at the address.
    pub state: Option<EscrowState>,
    pub prices: Option<Prices>,
    /// Whether the escrow's owner is this key (`None` when not deployed).
    pub owned: Option<bool>,
    pub guests: Vec<GuestBalance>,
}

/// Reads everything `cocoon-client balance` shows.
pub async fn balance(
    chain: &dyn Chain,
    key: &AccountKey,
    wallet: &OwnerWallet,
    network: &str,
    escrow: &StdAddr,
    guest_keys: &[PublicKey],
    cap: Option<Amount>,
) -> Result<Balance, String> {
    let wallet_account = chain
        .account_state(&wallet.address())
        .await
        .map_err(|e| chain_error("reading the wallet", e))?;
    let escrow_account = chain
        .account_state(escrow)
        .await
        .map_err(|e| chain_error("reading the escrow's account", e))?;
    let state = read_escrow(chain, escrow).await?;
    let (prices, guests) = match &state {
        Some(_) => {
            let prices = read_prices(chain, escrow).await?;
            let mut guests = Vec::new();
            for key in guest_keys {
                guests.push(GuestBalance {
                    key: *key,
                    on_chain: read_guest(chain, escrow, key).await?,
                    cap: cap.map(Amount::nano),
                    guest: None,
                });
            }
            (Some(prices), guests)
        }
        None => (None, Vec::new()),
    };
    Ok(Balance {
        escrow: escrow.clone(),
        network: network.to_string(),
        wallet: wallet.address(),
        wallet_text: wallet.address_text(),
        wallet_account,
        escrow_account,
        owned: state.map(|s| s.owner == key.id().0),
        state,
        prices,
        guests,
    })
}

/// Why a guest's unsettled usage is not shown.
pub const UNSETTLED_UNKNOWN: &str = "not asked: give --upstream URL to ask the guest (over a \
    verified session) what it has signed beyond the settled charge; it is at most the cap \
    headroom, and at most the stake while the escrow is open";

fn status_text(status: AccountStatus) -> &'static str {
    match status {
        AccountStatus::Nonexist => "nonexist",
        AccountStatus::Uninit => "uninit",
        AccountStatus::Active => "active",
        AccountStatus::Frozen => "frozen",
    }
}

fn ton(nano: u128) -> serde_json::Value {
    Amount(nano).to_string().into()
}

impl Balance {
    /// Adds what a guest reported for the account to that guest key's line (if shown).
    pub fn with_guest_account(mut self, account: &GuestAccount) -> Self {
        for guest in &mut self.guests {
            if account
                .guest_key
                .eq_ignore_ascii_case(&hex::encode(guest.key))
            {
                guest.guest = Some(account.clone());
            }
        }
        self
    }

    /// The stable JSON object of `balance --json` (amounts: TON strings with 9 decimals).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let escrow = match &self.state {
            None => json!(null),
            Some(s) => json!({
                "owner": format!("ed25519:{}", hex::encode(s.owner)),
                "owned_by_this_key": self.owned,
                "balance": ton(s.balance),
                "stake": ton(s.stake),
                "storage_reserve": ton(STORAGE_RESERVE),
                "free": ton(s.free()),
                "total_charged": ton(s.total_charged),
                "owner_seqno": s.owner_seqno,
                "closing": s.unlock_at != 0,
                "unlock_at": s.unlock_at,
                "unlock_at_utc": (s.unlock_at != 0).then(|| utc(s.unlock_at)),
                "close_delay": s.close_delay,
                "prices": self.prices.map(|p| json!({
                    "prompt_per_million": p.prompt_per_million,
                    "cached_prompt_per_million": p.cached_per_million,
                    "completion_per_million": p.completion_per_million,
                    "currency": "nanoton",
                })),
            }),
        };
        let guests: Vec<serde_json::Value> = self
            .guests
            .iter()
            .map(|g| {
                json!({
                    "guest_key": hex::encode(g.key),
                    "seq": g.on_chain.seq,
                    "charged": ton(g.on_chain.charged),
                    "cap": g.cap.map(ton),
                    "cap_headroom": g.cap_headroom().map(ton),
                    "unsettled": g.unsettled().map(ton),
                    "unsettled_note": g.guest.is_none().then_some(UNSETTLED_UNKNOWN),
                    "guest": g.guest.as_ref().map(|a| json!({
                        "seq": a.seq,
                        "requests": a.requests,
                        "charged": ton(u128::from(a.charged)),
                        "in_flight": ton(u128::from(a.in_flight)),
                        "prompt_tokens": a.tokens.prompt_tokens,
                        "cached_tokens": a.tokens.cached_tokens,
                        "completion_tokens": a.tokens.completion_tokens,
                        "authorization": a.authorization.map(|h| json!({
                            "cap": ton(u128::from(h.cap)),
                            "expires_at": h.expires_at,
                        })),
                    })),
                })
            })
            .collect();
        json!({
            "network": self.network,
            "escrow_address": self.escrow.to_string(),
            "escrow_address_friendly": self.escrow.display_base64_url(true).to_string(),
            "deployed": self.state.is_some(),
            "escrow_account_balance": ton(self.escrow_account.balance),
            "escrow_account_status": status_text(self.escrow_account.status),
            "wallet": {
                "address": self.wallet.to_string(),
                "display": self.wallet_text,
                "balance": ton(self.wallet_account.balance),
                "status": status_text(self.wallet_account.status),
            },
            "escrow": escrow,
            "guests": guests,
        })
    }

    /// The human output.
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        out.push(format!("escrow          {}", self.escrow));
        out.push(format!(
            "                {} (bounceable)",
            self.escrow.display_base64_url(true)
        ));
        out.push(format!(
            "wallet v5r1     {} ({})",
            self.wallet_text, self.network
        ));
        out.push(format!(
            "wallet balance  {} ({})",
            with_unit(Amount(self.wallet_account.balance)),
            status_text(self.wallet_account.status)
        ));
        let Some(s) = &self.state else {
            out.push(format!(
                "escrow state    not deployed (account {}, {}): `cocoon-client escrow deploy`",
                status_text(self.escrow_account.status),
                with_unit(Amount(self.escrow_account.balance))
            ));
            return out.join("\n");
        };
        if self.owned == Some(false) {
            out.push(format!(
                "WARNING         owned by ed25519:{}, not by this key",
                hex::encode(s.owner)
            ));
        }
        out.push(format!("deposit         {}", with_unit(Amount(s.balance))));
        out.push(format!("stake           {}", with_unit(Amount(s.stake))));
        out.push(format!(
            "free            {} (deposit - storage reserve {} - stake; withdrawable)",
            with_unit(Amount(s.free())),
            with_unit(Amount(STORAGE_RESERVE))
        ));
        out.push(format!(
            "settled         {} (total charged on chain)",
            with_unit(Amount(s.total_charged))
        ));
        out.push(format!("owner_seqno     {}", s.owner_seqno));
        out.push(format!("closing         {}", closing_text(s.unlock_at)));
        out.push(format!("close delay     {} s", s.close_delay));
        if let Some(p) = &self.prices {
            out.push(format!(
                "prices          {} / {} / {} nanoton per million prompt / cached prompt / \
                 completion tokens",
                p.prompt_per_million, p.cached_per_million, p.completion_per_million
            ));
        }
        for g in &self.guests {
            out.push(format!("guest key       {}", hex::encode(g.key)));
            out.push(format!(
                "  settled       {} (voucher seq {})",
                with_unit(Amount(g.on_chain.charged)),
                g.on_chain.seq
            ));
            match g.cap_headroom() {
                Some(headroom) => out.push(format!(
                    "  cap headroom  {} (cap {} - settled)",
                    with_unit(Amount(headroom)),
                    with_unit(Amount(g.cap.unwrap_or_default()))
                )),
                None => out
                    .push("  cap headroom  (give --spend-cap TON, the proxy's, to see it)".into()),
            }
            match (&g.guest, g.unsettled()) {
                (Some(a), Some(unsettled)) => {
                    out.push(format!(
                        "  unsettled     {} (the guest signed {} up to voucher seq {}; \
                         requests: {}, prompt + completion tokens: {} + {})",
                        with_unit(Amount(unsettled)),
                        with_unit(Amount(u128::from(a.charged))),
                        a.seq,
                        a.requests,
                        a.tokens.prompt_tokens,
                        a.tokens.completion_tokens
                    ));
                    if a.in_flight > 0 {
                        out.push(format!(
                            "  in flight     up to {}",
                            with_unit(Amount(u128::from(a.in_flight)))
                        ));
                    }
                }
                _ => out.push(format!("  unsettled     {UNSETTLED_UNKNOWN}")),
            }
        }
        out.join("\n")
    }
}

/// An escrow's terms and what came with them: the guest's receipt key (when known) and
/// the TON network the guest bills on.
#[derive(Debug, Clone)]
pub struct GuestTerms {
    pub terms: EscrowTerms,
    pub guest_key: Option<PublicKey>,
    pub ton_network: String,
    /// What the live guest holds for this key's account (asked for by `balance`).
    pub guest_account: Option<GuestAccount>,
}

fn terms_of_config(
    config: &serde_json::Value,
    key: &AccountKey,
    guest_key: Option<PublicKey>,
    source: &str,
) -> Result<GuestTerms, String> {
    let billing = crate::config::BillingTerms::from_config(config)
        .map_err(|e| format!("{source}: {e}"))?
        .ok_or_else(|| {
            format!(
                "{source}: the guest does not bill through escrows (its config has no \
                 billing.payout_address)"
            )
        })?;
    let terms = EscrowTerms::for_guest(&crate::escrow::escrow_code(), &key.id(), &billing)
        .map_err(|e| format!("{source}: {e}"))?;
    Ok(GuestTerms {
        terms,
        guest_key,
        ton_network: billing.ton_network,
        guest_account: None,
    })
}

/// The terms in a saved document: a guest config as `GET /v1/attestation/config` serves
/// it, or the output of `cocoon-verify endpoint --json` (its `config`, and its
/// `receipt_key` as the guest key). The document is taken as given: the user vouches for
/// it (it is not checked against evidence here).
pub fn terms_from_document(
    text: &str,
    key: &AccountKey,
    source: &str,
) -> Result<GuestTerms, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{source}: not JSON: {e}"))?;
    match document.get("config").filter(|c| c.is_object()) {
        Some(config) => {
            let guest_key = match document.get("receipt_key").and_then(|k| k.as_str()) {
                Some(hex_key) => Some(
                    crate::escrow::guest_key(Some(hex_key))
                        .map_err(|e| format!("{source}: {e}"))?,
                ),
                None => None,
            };
            terms_of_config(config, key, guest_key, source)
        }
        None => terms_of_config(&document, key, None, source),
    }
}

/// The terms of the guest at `endpoint`: its config is fetched over a session whose
/// evidence verified ([`crate::config::fetch_config`] checks it against the attested
/// digest), and its guest key is the receipt key that evidence binds. With
/// `with_account`, the same session also asks the guest what it holds for this key's
/// account ([`crate::guest_account`]), which must name the escrow derived here.
pub async fn terms_from_guest(
    endpoint: &crate::Endpoint,
    attestor: &crate::Attestor,
    timeout: Duration,
    key: &AccountKey,
    with_account: bool,
) -> Result<GuestTerms, String> {
    let source = format!("https://{}", endpoint.address());
    let mut connection = crate::open_attested_session(endpoint, attestor, timeout)
        .await
        .map_err(|e| format!("{source}: {e}"))?;
    let guest_key =
        crate::escrow::guest_key(connection.verified.certificate.receipt_key.as_deref())
            .map_err(|e| format!("{source}: {e}"))?;
    let config = crate::config::fetch_config(&mut connection, endpoint)
        .await
        .map_err(|e| format!("{source}: the guest's config: {e}"))?;
    let mut terms = terms_of_config(&config.json, key, Some(guest_key), &source)?;
    if with_account {
        let account = fetch_guest_account(&mut connection, endpoint, key)
            .await
            .map_err(|e| format!("{source}: {e}"))?;
        let derived = terms.terms.address().map_err(|e| e.to_string())?;
        if parse_address(&account.escrow).ok().as_ref() != Some(&derived) {
            return Err(format!(
                "{source}: the guest bills this key through escrow {}, not the {derived} \
                 derived from its attested config",
                account.escrow
            ));
        }
        terms.guest_account = Some(account);
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(code_hash: &str) -> serde_json::Value {
        let mut config: serde_json::Value =
            serde_json::from_str(crate::config::tests::BILLING_CONFIG).unwrap();
        config["billing"]["escrow_code_hash"] = code_hash.into();
        config
    }

    #[test]
    fn billing_terms_from_a_saved_config_or_cocoon_verify_output() {
        let key = AccountKey::from_seed(&[3; 32]).unwrap();
        let good = config(&cocoon_billing::escrow_code_hash_hex());
        let plain = terms_from_document(&good.to_string(), &key, "f").unwrap();
        assert_eq!(plain.ton_network, "local");
        assert_eq!(plain.guest_key, None);
        assert_eq!(plain.terms.close_delay, 23);
        assert_eq!(plain.terms.prices.cached_per_million, 9);
        assert_eq!(plain.terms.owner, key.id().0);
        let verified = serde_json::json!({"receipt_key": "ab".repeat(32), "config": good});
        let from_verify = terms_from_document(&verified.to_string(), &key, "f").unwrap();
        assert_eq!(from_verify.guest_key, Some([0xab; 32]));
        assert_eq!(
            from_verify.terms.address().unwrap(),
            plain.terms.address().unwrap()
        );
        // Another contract code, no billing, not JSON: refused with the file named.
        let err = terms_from_document(&config("cc").to_string(), &key, "f").unwrap_err();
        assert!(
            err.starts_with("f: ") && err.contains("contract code cc"),
            "{err}"
        );
        let mut off = good.clone();
        off["billing"]["payout_address"] = serde_json::Value::Null;
        let err = terms_from_document(&off.to_string(), &key, "f").unwrap_err();
        assert!(err.contains("does not bill through escrows"), "{err}");
        assert!(terms_from_document("{", &key, "f")
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn billing_utc_and_closing_text() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(closing_text(0), "no");
        assert_eq!(
            closing_text(1_800_000_000),
            "yes, refund from 2027-01-15T08:00:00Z"
        );
    }
}
