//! Escrow billing inside the guest: which escrow an account pays from, which guest key its
//! owner authorized, and how much more work the escrow covers.
//!
//! The host agent settles outside the trust boundary, so nothing it says can make a client
//! pay more than the guest counted (`billing/PROTOCOL.md`):
//! - the escrow address is derived here, from the proven account key, the contract code
//!   compiled into this binary and the measured config (prices, close delay), never taken
//!   from a request or from the host;
//! - the owner's authorization of this guest's receipt key is checked here (signature,
//!   escrow, key, expiry) before anything is served, and travels with every voucher so the
//!   escrow can check it again;
//! - the escrow's on-chain state comes from the host ([`Escrows::report`]); a host that
//!   under-reports only makes this guest refuse work, one that over-reports only makes the
//!   operator serve at its own risk: the escrow pays vouchers, never more than they state,
//!   and never more than its stake covers once the guest has checked credit against it.
//!
//! Credit: a request is admitted only when the account's unsettled usage under this key,
//! plus what requests in flight may still charge, plus this request's largest possible
//! charge, stays within `min(stake, balance − STORAGE_RESERVE)`, and its cumulative charge
//! within the authorization's cap. The reservation ([`CreditHold`]) is released after the
//! request's receipt has moved its real charge into the meter's totals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_attestation::account::AccountId;
use cocoon_billing::address::{parse_address, Cell, StdAddr};
use cocoon_billing::layout::{self, CellLayout as _, Prices, SignedAuthorization};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{Billing, PriceTable};

/// Request header that carries the owner's signed authorization of this guest's key.
pub use cocoon_billing::layout::AUTHORIZATION_HEADER;

/// An authorization must stay valid this long past a request's start, so the voucher of
/// a request admitted now can still be settled (the contract adds its close delay on top).
pub const EXPIRY_MARGIN_SECS: u64 = 60;

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The authorization header is malformed or names something else.
    BadAuthorization(String),
    /// No authorization of this guest's key is held for the account.
    NoAuthorization,
    /// The host has not reported the escrow's state within the wait.
    StateUnknown { escrow: String, waited_secs: u32 },
    /// One of the credit bounds would be crossed.
    Credit(String),
    /// The guest could not build a cell (a bug, not the client's doing).
    Internal(String),
}

/// The escrow state the host read from the chain, for this guest's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedState {
    /// The escrow contract's balance, nanoton.
    pub balance: u64,
    pub stake: u64,
    /// 0: open; else the escrow is closing.
    pub unlock_at: u64,
    /// `get_guest(this key)`: the last settled voucher's sequence and cumulative charge.
    pub seq: u64,
    pub charged: u64,
}

/// What the host reports for one escrow (`POST /internal/v1/escrows`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowReport {
    /// The escrow address (raw `0:<hex>`).
    pub escrow: String,
    #[serde(flatten)]
    pub state: ReportedState,
}

/// An escrow the guest wants (fresh) state for (`GET /internal/v1/escrows`).
#[derive(Debug, Clone, Serialize)]
pub struct Wanted {
    pub account: String,
    pub escrow: String,
    /// The state last reported (none yet: requests for it are waiting).
    pub reported: Option<ReportedState>,
    /// Unix seconds of the last report (0: none).
    pub reported_at: u64,
    /// Charge this key has signed for the account beyond what the host last reported
    /// as settled, in flight included: how much the host should want to settle.
    pub unsettled: u64,
}

/// What the guest holds for one escrow account, as its owner may read it
/// (`GET /v1/billing/account`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub escrow: StdAddr,
    /// The held authorization's cap (nanoton) and expiry (unix seconds).
    pub authorization: Option<(u128, u64)>,
    /// What the host last reported of the escrow, and when (unix seconds).
    pub reported: Option<(ReportedState, u64)>,
    /// Largest possible charges of the account's requests in flight.
    pub in_flight: u128,
}

/// What a voucher needs besides the meter's counts: where it pays from and the owner's
/// authorization the escrow checks with it.
#[derive(Debug, Clone)]
pub struct VoucherTarget {
    pub escrow: StdAddr,
    /// BoC of the owner's SignedAuthorization.
    pub authorization_boc: Vec<u8>,
}

struct Held {
    cap: u128,
    expires_at: u64,
    boc: Vec<u8>,
}

struct Entry {
    escrow: StdAddr,
    authorization: Option<Held>,
    state: Option<ReportedState>,
    reported_at: u64,
    /// Largest possible charges of the account's requests in flight.
    reserved: u128,
}

/// Every escrow account this guest serves.
pub struct Escrows {
    code: Cell,
    prices: Prices,
    close_delay: u32,
    payout: StdAddr,
    guest_key: [u8; 32],
    state_wait: Duration,
    accounts: Mutex<HashMap<AccountId, Entry>>,
    reported: Notify,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The contract's view of a price table.
pub fn contract_prices(prices: &PriceTable) -> Prices {
    Prices {
        prompt_per_million: prices.prompt_per_million,
        cached_per_million: prices.cached_prompt_per_million,
        completion_per_million: prices.completion_per_million,
    }
}

impl Escrows {
    /// Escrow billing for a guest whose measured config has a payout address; `None`
    /// without one (receipts only). `guest_key` is the receipt key vouchers are signed
    /// with.
    pub fn new(
        billing: &Billing,
        prices: &PriceTable,
        guest_key: [u8; 32],
        code: Cell,
    ) -> Result<Option<Self>, String> {
        let Some(payout) = billing.payout_address.as_deref() else {
            return Ok(None);
        };
        let payout = parse_address(payout).map_err(|e| format!("--payout-address: {e}"))?;
        Ok(Some(Self {
            code,
            prices: contract_prices(prices),
            close_delay: billing.close_delay_secs,
            payout,
            guest_key,
            state_wait: Duration::from_secs(billing.state_wait_secs.into()),
            accounts: Mutex::new(HashMap::new()),
            reported: Notify::new(),
        }))
    }

    /// The escrow `owner` pays from under this guest's config.
    pub fn escrow_of(&self, owner: &AccountId) -> Result<StdAddr, Refusal> {
        layout::escrow_address(&self.code, &owner.0, self.close_delay, &self.prices)
            .map_err(|e| Refusal::Internal(format!("cannot derive the escrow address: {e}")))
    }

    /// Where vouchers pay.
    pub fn payout(&self) -> &StdAddr {
        &self.payout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Entry>> {
        // A panic while holding this lock cannot leave a half-written entry (every
        // update is one assignment), so a poisoned lock is still consistent.
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry<'a>(
        &self,
        accounts: &'a mut HashMap<AccountId, Entry>,
        owner: &AccountId,
    ) -> Result<&'a mut Entry, Refusal> {
        Ok(match accounts.entry(*owner) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Entry {
                escrow: self.escrow_of(owner)?,
                authorization: None,
                state: None,
                reported_at: 0,
                reserved: 0,
            }),
        })
    }

    /// Checks an `x-cocoon-escrow-authorization` value for `owner` and keeps it when it
    /// allows more than the one held (a higher cap, or the same cap for longer).
    pub fn authorize(&self, owner: &AccountId, header: &[u8]) -> Result<(), Refusal> {
        let bad = |detail: String| Refusal::BadAuthorization(detail);
        let text = std::str::from_utf8(header).map_err(|_| bad("not ASCII".into()))?;
        let signed =
            SignedAuthorization::from_header_value(text).map_err(|e| bad(e.to_string()))?;
        let boc = signed
            .to_boc()
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        signed
            .verify(&owner.0)
            .map_err(|_| bad("the signature is not the account key's".into()))?;
        let authorization = &signed.authorization;
        let mut accounts = self.lock();
        let entry = self.entry(&mut accounts, owner)?;
        if authorization.escrow != entry.escrow {
            return Err(bad(format!(
                "it authorizes escrow {} but this account's escrow under this guest's \
                 config is {}",
                authorization.escrow, entry.escrow
            )));
        }
        if authorization.guest_key != self.guest_key {
            return Err(bad(format!(
                "it authorizes guest key {} but this guest's receipt key is {}",
                hex::encode(authorization.guest_key),
                hex::encode(self.guest_key)
            )));
        }
        let expires_at = u64::from(authorization.expires_at);
        if expires_at <= unix_now() + EXPIRY_MARGIN_SECS {
            return Err(bad(format!(
                "it expires at {expires_at} (unix), less than {EXPIRY_MARGIN_SECS} s from now"
            )));
        }
        let better = match &entry.authorization {
            None => true,
            Some(held) => {
                (authorization.cap, expires_at) > (held.cap, held.expires_at)
                    && authorization.cap >= held.cap
            }
        };
        if better {
            entry.authorization = Some(Held {
                cap: authorization.cap,
                expires_at,
                boc,
            });
        }
        Ok(())
    }

    /// Reserves `largest_charge` of `owner`'s credit for one request, given the account's
    /// cumulative charge under this key so far; waits up to the configured time for the
    /// host's first report of the escrow.
    pub async fn reserve(
        self: &Arc<Self>,
        owner: &AccountId,
        cumulative_charge: u64,
        largest_charge: u64,
    ) -> Result<CreditHold, Refusal> {
        let deadline = tokio::time::Instant::now() + self.state_wait;
        loop {
            let notified = self.reported.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_reserve(owner, cumulative_charge, largest_charge)? {
                Some(hold) => return Ok(hold),
                None => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        let escrow = self.escrow_of(owner)?.to_string();
                        return Err(Refusal::StateUnknown {
                            escrow,
                            waited_secs: self.state_wait.as_secs() as u32,
                        });
                    }
                }
            }
        }
    }

    /// `Ok(None)`: no state reported yet.
    fn try_reserve(
        self: &Arc<Self>,
        owner: &AccountId,
        cumulative_charge: u64,
        largest_charge: u64,
    ) -> Result<Option<CreditHold>, Refusal> {
        let mut accounts = self.lock();
        let entry = self.entry(&mut accounts, owner)?;
        let held = entry
            .authorization
            .as_ref()
            .ok_or(Refusal::NoAuthorization)?;
        let Some(state) = entry.state else {
            return Ok(None);
        };
        check_credit(
            held.cap,
            held.expires_at,
            &state,
            u128::from(cumulative_charge),
            entry.reserved,
            u128::from(largest_charge),
            unix_now(),
        )
        .map_err(Refusal::Credit)?;
        entry.reserved += u128::from(largest_charge);
        Ok(Some(CreditHold {
            escrows: self.clone(),
            owner: *owner,
            amount: u128::from(largest_charge),
        }))
    }

    /// Where `owner`'s voucher pays from and the authorization it goes with; `None` when
    /// the account has none (anonymous, or never authorized).
    pub fn voucher_target(&self, owner: &AccountId) -> Option<VoucherTarget> {
        let accounts = self.lock();
        let entry = accounts.get(owner)?;
        let held = entry.authorization.as_ref()?;
        Some(VoucherTarget {
            escrow: entry.escrow.clone(),
            authorization_boc: held.boc.clone(),
        })
    }

    /// What this guest holds for `owner`'s escrow (nothing held yet: the derived escrow
    /// alone). Reading it creates no account entry.
    pub fn view(&self, owner: &AccountId) -> Result<AccountView, Refusal> {
        if let Some(entry) = self.lock().get(owner) {
            return Ok(AccountView {
                escrow: entry.escrow.clone(),
                authorization: entry.authorization.as_ref().map(|h| (h.cap, h.expires_at)),
                reported: entry.state.map(|s| (s, entry.reported_at)),
                in_flight: entry.reserved,
            });
        }
        Ok(AccountView {
            escrow: self.escrow_of(owner)?,
            authorization: None,
            reported: None,
            in_flight: 0,
        })
    }

    /// The escrows whose state the guest uses, with what it last heard; `charges` gives
    /// each account's cumulative charge under this key (from the meter).
    pub fn wanted(&self, charges: &dyn Fn(&AccountId) -> u64) -> Vec<Wanted> {
        let accounts = self.lock();
        let mut out: Vec<Wanted> = accounts
            .iter()
            .filter(|(_, e)| e.authorization.is_some())
            .map(|(owner, e)| {
                let settled = e.state.map(|s| u128::from(s.charged)).unwrap_or(0);
                let unsettled = (u128::from(charges(owner)) + e.reserved).saturating_sub(settled);
                Wanted {
                    account: owner.to_string(),
                    escrow: e.escrow.to_string(),
                    reported: e.state,
                    reported_at: e.reported_at,
                    unsettled: u64::try_from(unsettled).unwrap_or(u64::MAX),
                }
            })
            .collect();
        out.sort_by(|a, b| a.account.cmp(&b.account));
        out
    }

    /// Takes the states the host read; returns how many named an escrow in use here
    /// (the others are ignored: the host cannot create accounts).
    pub fn report(&self, reports: &[EscrowReport]) -> Result<usize, String> {
        let now = unix_now();
        let mut parsed = Vec::with_capacity(reports.len());
        for report in reports {
            let escrow = parse_address(&report.escrow)
                .map_err(|e| format!("escrow '{}': {e}", report.escrow))?;
            parsed.push((escrow, report.state));
        }
        let mut used = 0;
        {
            let mut accounts = self.lock();
            for entry in accounts.values_mut() {
                if let Some((_, state)) = parsed.iter().find(|(a, _)| *a == entry.escrow) {
                    entry.state = Some(*state);
                    entry.reported_at = now;
                    used += 1;
                }
            }
        }
        self.reported.notify_waiters();
        Ok(used)
    }

    fn release(&self, owner: &AccountId, amount: u128) {
        if let Some(entry) = self.lock().get_mut(owner) {
            entry.reserved = entry.reserved.saturating_sub(amount);
        }
    }
}

/// The credit rules of the module docs; the error names the bound that would be crossed.
fn check_credit(
    cap: u128,
    expires_at: u64,
    state: &ReportedState,
    cumulative_charge: u128,
    reserved: u128,
    request: u128,
    now: u64,
) -> Result<(), String> {
    if state.unlock_at != 0 {
        return Err(format!(
            "the escrow is closing (refund possible from unix time {}): it takes no new \
             work; deploy a new escrow",
            state.unlock_at
        ));
    }
    if now + EXPIRY_MARGIN_SECS >= expires_at {
        return Err(format!(
            "the authorization of this guest expires at unix time {expires_at}: sign a new one"
        ));
    }
    let committed = cumulative_charge + reserved + request;
    if committed > cap {
        return Err(format!(
            "the authorization's spending cap is {cap} nanoton; this guest has charged \
             {cumulative_charge}, holds {reserved} for requests in flight and this request \
             may cost up to {request}: authorize a higher cap"
        ));
    }
    let covered = u128::from(state.stake)
        .min(u128::from(state.balance).saturating_sub(layout::STORAGE_RESERVE));
    let unsettled = committed.saturating_sub(u128::from(state.charged));
    if unsettled > covered {
        return Err(format!(
            "the escrow covers {covered} nanoton of unsettled usage (stake {}, balance {}); \
             unsettled usage with this request could reach {unsettled}: raise the stake or \
             top up",
            state.stake, state.balance
        ));
    }
    Ok(())
}

/// A request's reserved credit; released when dropped.
pub struct CreditHold {
    escrows: Arc<Escrows>,
    owner: AccountId,
    amount: u128,
}

impl Drop for CreditHold {
    fn drop(&mut self) {
        self.escrows.release(&self.owner, self.amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(balance: u64, stake: u64, charged: u64) -> ReportedState {
        ReportedState {
            balance,
            stake,
            unlock_at: 0,
            seq: 0,
            charged,
        }
    }

    const R: u64 = layout::STORAGE_RESERVE as u64; // 0.01 TON fits in u64

    #[test]
    fn billing_credit_is_bounded_by_stake_balance_cap_and_expiry() {
        let now = 1_000_000;
        let later = now + 3600;
        let s = state(R + 1_000, 500, 0);
        assert!(check_credit(10_000, later, &s, 0, 0, 500, now).is_ok());
        let e = check_credit(10_000, later, &s, 0, 0, 501, now).unwrap_err();
        assert!(e.contains("covers 500"), "{e}");
        // Settled usage frees credit; what is reserved in flight uses it.
        assert!(check_credit(10_000, later, &state(R + 1_000, 500, 300), 300, 0, 500, now).is_ok());
        assert!(check_credit(10_000, later, &s, 0, 100, 401, now).is_err());
        // The balance bounds credit when it is below the stake.
        let thin = state(R + 100, 500, 0);
        assert!(check_credit(10_000, later, &thin, 0, 0, 101, now)
            .unwrap_err()
            .contains("covers 100"));
        // The cap bounds the cumulative charge, settled or not.
        let rich = state(R + 1_000_000, 1_000_000, 9_000);
        assert!(check_credit(10_000, later, &rich, 9_000, 0, 1_000, now).is_ok());
        assert!(check_credit(10_000, later, &rich, 9_000, 0, 1_001, now)
            .unwrap_err()
            .contains("spending cap"));
        // Expiry with its margin, and closing escrows.
        assert!(
            check_credit(10_000, now + EXPIRY_MARGIN_SECS, &rich, 0, 0, 1, now)
                .unwrap_err()
                .contains("expires")
        );
        let closing = ReportedState {
            unlock_at: 5,
            ..rich
        };
        assert!(check_credit(10_000, later, &closing, 0, 0, 1, now)
            .unwrap_err()
            .contains("closing"));
    }
}

#[cfg(test)]
mod authorization_tests {
    use super::*;
    use cocoon_billing::layout::{Authorization, SignedVoucher, TokenCounts};
    use ring::signature::Ed25519KeyPair;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn billing(prices_scale: u64) -> (Billing, PriceTable) {
        let billing = Billing {
            ton_network: "local".into(),
            payout_address: Some(format!("0:{}", "11".repeat(32))),
            close_delay_secs: 3600,
            state_wait_secs: 1,
            escrow_code_hash: cocoon_billing::escrow_code_hash_hex(),
        };
        let prices = PriceTable {
            currency: "nanoton".into(),
            prompt_per_million: 1_000_000 * prices_scale,
            cached_prompt_per_million: 0,
            completion_per_million: 2_000_000 * prices_scale,
        };
        (billing, prices)
    }

    fn escrows(guest: &Ed25519KeyPair, prices_scale: u64) -> Arc<Escrows> {
        let (billing, prices) = billing(prices_scale);
        let key = layout::public_key(guest);
        Arc::new(
            Escrows::new(&billing, &prices, key, cocoon_billing::escrow_code())
                .unwrap()
                .unwrap(),
        )
    }

    fn header(owner: &Ed25519KeyPair, escrow: StdAddr, guest_key: [u8; 32], cap: u128) -> String {
        Authorization {
            escrow,
            guest_key,
            cap,
            expires_at: (unix_now() + 3600) as u32,
        }
        .sign(owner)
        .unwrap()
        .to_header_value()
        .unwrap()
    }

    #[test]
    fn billing_guest_accepts_only_the_owners_authorization_of_its_own_key_and_escrow() {
        let (guest, owner, stranger) = (key(1), key(2), key(3));
        let escrows = escrows(&guest, 1);
        let account = AccountId(layout::public_key(&owner));
        let escrow = escrows.escrow_of(&account).unwrap();
        let guest_key = layout::public_key(&guest);

        let good = header(&owner, escrow.clone(), guest_key, 1_000);
        assert_eq!(escrows.authorize(&account, good.as_bytes()), Ok(()));

        let by_stranger = header(&stranger, escrow.clone(), guest_key, 1_000);
        let other_key = header(&owner, escrow.clone(), layout::public_key(&stranger), 1_000);
        let stranger_escrow = escrows
            .escrow_of(&AccountId(layout::public_key(&stranger)))
            .unwrap();
        let other_escrow = header(&owner, stranger_escrow, guest_key, 1_000);
        let expired = Authorization {
            escrow: escrow.clone(),
            guest_key,
            cap: 1,
            expires_at: (unix_now() + 10) as u32,
        }
        .sign(&owner)
        .unwrap()
        .to_header_value()
        .unwrap();
        for (name, value, wanted) in [
            ("stranger", by_stranger.as_str(), "signature"),
            ("other key", other_key.as_str(), "guest key"),
            ("other escrow", other_escrow.as_str(), "escrow"),
            ("expired", expired.as_str(), "expires"),
            ("garbage", "!!!", ""),
            ("truncated", &good[..good.len() / 2], ""),
        ] {
            match escrows.authorize(&account, value.as_bytes()) {
                Err(Refusal::BadAuthorization(detail)) => {
                    assert!(detail.contains(wanted), "{name}: {detail}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn billing_guest_with_another_price_table_derives_another_escrow() {
        let (guest, owner) = (key(1), key(2));
        let account = AccountId(layout::public_key(&owner));
        let this = escrows(&guest, 1);
        let other = escrows(&guest, 2);
        let escrow = this.escrow_of(&account).unwrap();
        assert_ne!(escrow, other.escrow_of(&account).unwrap());
        // The client's authorization for this guest's escrow means nothing to the other.
        let value = header(&owner, escrow, layout::public_key(&guest), 1_000);
        assert!(matches!(
            other.authorize(&account, value.as_bytes()),
            Err(Refusal::BadAuthorization(_))
        ));
    }

    #[tokio::test]
    async fn billing_guest_reserves_credit_only_after_the_host_reports_state() {
        let (guest, owner) = (key(1), key(2));
        let escrows = escrows(&guest, 1);
        let account = AccountId(layout::public_key(&owner));
        assert!(matches!(
            escrows.reserve(&account, 0, 10).await,
            Err(Refusal::NoAuthorization)
        ));
        let escrow = escrows.escrow_of(&account).unwrap();
        let value = header(
            &owner,
            escrow.clone(),
            layout::public_key(&guest),
            1_000_000,
        );
        escrows.authorize(&account, value.as_bytes()).unwrap();
        // No state yet: the request waits (1 s here), then is refused.
        assert!(matches!(
            escrows.reserve(&account, 0, 10).await,
            Err(Refusal::StateUnknown { .. })
        ));
        let report = |balance: u64, stake: u64| EscrowReport {
            escrow: escrow.to_string(),
            state: ReportedState {
                balance,
                stake,
                unlock_at: 0,
                seq: 0,
                charged: 0,
            },
        };
        let reserve = layout::STORAGE_RESERVE as u64;
        // A report naming an escrow nobody uses changes nothing.
        assert_eq!(
            escrows.report(&[EscrowReport {
                escrow: format!("0:{}", "22".repeat(32)),
                ..report(1, 1)
            }]),
            Ok(0)
        );
        assert_eq!(escrows.report(&[report(reserve + 100, 50)]), Ok(1));
        let first = escrows.reserve(&account, 0, 30).await.unwrap();
        let second = escrows.reserve(&account, 0, 20).await.unwrap();
        assert!(
            matches!(
                escrows.reserve(&account, 0, 1).await,
                Err(Refusal::Credit(_))
            ),
            "50 of the stake is held by requests in flight"
        );
        drop(second);
        let third = escrows.reserve(&account, 0, 20).await.unwrap();
        drop((first, third));
        let wanted = escrows.wanted(&|_| 40);
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].escrow, escrow.to_string());
        assert_eq!(wanted[0].unsettled, 40);
    }

    #[test]
    fn billing_vouchers_are_signed_by_the_receipt_key_with_cumulative_counts() {
        use crate::meter::{tests::billed, Meter, VoucherOrder};
        use cocoon_attestation::receipt::TokenCounts as Counts;
        let (billing, prices) = billing(1);
        let meter = Meter::new(prices.clone(), [0x4D; 32], 10, 10).unwrap();
        let owner = key(2);
        let escrows = Escrows::new(
            &billing,
            &prices,
            meter.public_key(),
            cocoon_billing::escrow_code(),
        )
        .unwrap()
        .unwrap();
        let account = AccountId(layout::public_key(&owner));
        let escrow = escrows.escrow_of(&account).unwrap();
        let value = header(&owner, escrow.clone(), meter.public_key(), 1_000_000);
        escrows.authorize(&account, value.as_bytes()).unwrap();
        let target = escrows.voucher_target(&account).unwrap();
        let order = || VoucherOrder {
            target: &target,
            payout: escrows.payout(),
        };
        let name = account.to_string();
        let t = |p, k| Counts {
            prompt_tokens: p,
            cached_tokens: 0,
            completion_tokens: k,
        };
        meter
            .record_with_voucher(&name, &billed("r1", "stop", t(3, 4)), Some(order()))
            .unwrap();
        meter
            .record_with_voucher(&name, &billed("r2", "stop", t(5, 6)), Some(order()))
            .unwrap();
        let journal = meter.pending(0, 10).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        use base64::Engine as _;
        let last = journal[1].voucher.as_ref().unwrap();
        let signed = SignedVoucher::from_boc(&b64.decode(&last.voucher).unwrap()).unwrap();
        signed.verify().unwrap();
        assert_eq!(signed.voucher.guest_key, meter.public_key());
        assert_eq!(signed.voucher.escrow, escrow);
        assert_eq!(last.escrow, escrow.to_string());
        assert_eq!(signed.voucher.seq, 2);
        assert_eq!(
            signed.voucher.tokens,
            TokenCounts {
                prompt: 8,
                cached: 0,
                completion: 10
            }
        );
        assert_eq!(&signed.voucher.payout, escrows.payout());
        // What the contract will charge is what the receipts say.
        let cumulative = meter.cumulative_charge(&name).unwrap();
        assert_eq!(
            signed.voucher.charge(&contract_prices(&prices)),
            u128::from(cumulative)
        );
        let authorization =
            SignedAuthorization::from_boc(&b64.decode(&last.authorization).unwrap()).unwrap();
        authorization.verify(&account.0).unwrap();
        // The voucher commits to the tree over both receipts, rebuilt from the receipts
        // alone (as the host agent does), and to the model.
        use cocoon_attestation::receipt_tree::{root_of, ReceiptLeaf};
        let leaves: Vec<_> = journal
            .iter()
            .map(|entry| {
                let receipt = cocoon_attestation::receipt::verify_receipt(
                    &entry.receipt,
                    &meter.public_key(),
                )
                .unwrap();
                ReceiptLeaf::from_receipt(&receipt, meter.public_key(), [0x4D; 32]).hash()
            })
            .collect();
        assert_eq!(signed.voucher.commitment.receipts_root, root_of(&leaves));
        assert_eq!(signed.voucher.commitment.model, [0x4D; 32]);
        let first = journal[0].voucher.as_ref().unwrap();
        let first = SignedVoucher::from_boc(&b64.decode(&first.voucher).unwrap()).unwrap();
        assert_eq!(first.voucher.commitment.receipts_root, leaves[0]);
        assert_eq!(
            meter.receipts_root(&name).unwrap(),
            Some((root_of(&leaves), 2))
        );
    }
}
