//! Settlement against the real escrow code (`billing/contracts/build/escrow.boc`) on the
//! in-process chain, with a real SQLite ledger: charges land, move exactly what the vouchers
//! say, land once across restarts and crashes (stored but not sent, sent but not confirmed,
//! expired, and a real process abort at each point), and vouchers that were tampered with,
//! replayed or invented move nothing.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use cocoon_attestation::receipt::ReceiptSigner;
use cocoon_billing::address::StdAddr;
use cocoon_billing::chain::{Chain, SharedLocalChain};
use cocoon_billing::layout::{
    self, Authorization, BocLimits, CellLayout as _, EscrowData, OwnerAction, OwnerRequest, Prices,
    ReceiptCommitment, SignedVoucher, TokenCounts, TopUp, Voucher,
};
use cocoon_billing::local_chain::{InternalMessage, LocalChain};
use cocoon_billing::wallet::{ring_key_from_seed, Network, OutMessage, Wallet};

use super::decide::Thresholds;
use super::escrow;
use super::metrics::SettleMetrics;
use super::settler::{RoundReport, SettleParams, Settler, WalletStatus, CRASH_AT_VAR};
use crate::agent::SharedLedger;
use crate::ledger::settlements::{ItemState, SettlementState};
use crate::ledger::vouchers::{raw_address, JournalVoucher};
use crate::ledger::{JournalReceipt, Ledger};
use crate::test_meter::{info, tokens, Meter, Scratch, TEST_MODEL};

const CODE_BOC: &[u8] = include_bytes!("../../../billing/contracts/build/escrow.boc");
const TON: u128 = 1_000_000_000;
const CLOSE_DELAY: u32 = 3_600;
const CHARGE_VALUE: u128 = 50_000_000;
const PRICES: Prices = Prices {
    prompt_per_million: 100_000_007_000,
    cached_per_million: 10_000_003_000,
    completion_per_million: 400_000_009_000,
};
const WALLET_SEED: [u8; 32] = [9; 32];
const CLIENT: [u8; 32] = [0x11; 32];
const PAYOUT: [u8; 32] = [0x33; 32];

fn addr(bytes: [u8; 32]) -> StdAddr {
    cocoon_billing::address::parse_address(&format!("0:{}", hex::encode(bytes))).expect("address")
}

/// The system time as the chain's clock (vouchers are stamped with the system time when
/// stored).
fn system_now() -> u32 {
    u32::try_from(crate::agent::guest::now_secs()).expect("time")
}

/// The escrow of an owner seed, deployed with `deposit` and `stake`.
fn deploy_escrow(
    chain: &SharedLocalChain,
    owner_seed: [u8; 32],
    deposit: u128,
    stake: u128,
) -> StdAddr {
    let owner = ring_key_from_seed(&owner_seed).expect("owner key");
    let code = layout::decode_boc(CODE_BOC, &BocLimits::STATE).expect("code");
    let data = EscrowData::initial(layout::public_key(&owner), CLOSE_DELAY, PRICES);
    let state_init = layout::escrow_state_init(&code, &data).expect("state init");
    let escrow = layout::state_init_address(&state_init).expect("address");
    let mut c = chain.lock().expect("chain");
    c.airdrop(&addr(CLIENT), 10_000 * TON).expect("airdrop");
    let txs = c
        .send_internal(InternalMessage {
            src: addr(CLIENT),
            dest: escrow.clone(),
            value: deposit,
            bounce: true,
            body: Some(TopUp { query_id: 1 }.to_cell().expect("top_up")),
            state_init: Some(state_init),
        })
        .expect("deploy");
    assert!(txs
        .iter()
        .any(|t| t.account == escrow && t.exit_code == Some(0)));
    let body = OwnerRequest {
        escrow: escrow.clone(),
        seqno: 0,
        valid_until: c.now() + 300,
        action: OwnerAction::SetStake { stake },
    }
    .sign(&owner, 2)
    .expect("sign")
    .to_cell()
    .expect("owner body");
    let txs = c
        .send_internal(InternalMessage {
            src: addr(CLIENT),
            dest: escrow.clone(),
            value: TON / 20,
            bounce: true,
            body: Some(body),
            state_init: None,
        })
        .expect("stake");
    assert!(txs
        .iter()
        .any(|t| t.account == escrow && t.exit_code == Some(0)));
    escrow
}

/// One account (its owner seed) with its escrow.
struct Account {
    seed: [u8; 32],
    id: String,
    escrow: StdAddr,
}

/// A chain with the operator's wallet funded, a ledger with one verified guest boot, and
/// a guest meter that journals receipts with vouchers.
struct World {
    _scratch: Option<Scratch>,
    chain: SharedLocalChain,
    ledger: SharedLedger,
    meter: Meter,
    wallet: Arc<Wallet>,
    accounts: Vec<Account>,
    params: SettleParams,
    metrics: SettleMetrics,
}

fn params() -> SettleParams {
    SettleParams {
        thresholds: Thresholds::new(1, 0.0, 3_600, 600),
        charge_value: CHARGE_VALUE,
        max_batch: cocoon_billing::wallet::MAX_CHARGES_PER_MESSAGE,
        message_ttl_secs: 120,
        confirm_grace_secs: 0,
        chain_timeout: Duration::from_secs(10),
    }
}

impl World {
    fn new(accounts: u8) -> Self {
        let scratch = Scratch::new();
        let mut chain = LocalChain::with_default_config().expect("chain");
        chain.set_now(system_now()).expect("clock");
        let mut world = Self::on(Arc::new(Mutex::new(chain)), &scratch.file(), Meter::boot());
        world._scratch = Some(scratch);
        for i in 0..accounts {
            world.open_account([0x40 + i; 32]);
        }
        world
    }

    /// Over an existing chain and ledger file (the wallet is funded if it has nothing).
    fn on(chain: SharedLocalChain, ledger_file: &Path, meter: Meter) -> Self {
        let wallet = Wallet::from_seed(&WALLET_SEED, Network::Local).expect("wallet");
        {
            let mut c = chain.lock().expect("chain");
            if c.account(&wallet.address()).expect("wallet").balance == 0 {
                c.airdrop(&wallet.address(), 1_000 * TON).expect("airdrop");
                c.airdrop(&addr(PAYOUT), TON).expect("airdrop");
            }
        }
        let mut ledger = Ledger::open(ledger_file).expect("ledger");
        ledger
            .record_verification("g1", &meter.key(), &info(u64::from(system_now())))
            .expect("epoch");
        Self {
            _scratch: None,
            chain,
            ledger: SharedLedger::new(ledger),
            meter,
            wallet: Arc::new(wallet),
            accounts: Vec::new(),
            params: params(),
            metrics: SettleMetrics::default(),
        }
    }

    fn open_account(&mut self, seed: [u8; 32]) -> usize {
        let escrow = deploy_escrow(&self.chain, seed, 100 * TON, 10 * TON);
        let owner = ring_key_from_seed(&seed).expect("owner");
        self.accounts.push(Account {
            seed,
            id: format!("ed25519:{}", hex::encode(layout::public_key(&owner))),
            escrow,
        });
        self.accounts.len() - 1
    }

    fn now(&self) -> u32 {
        self.chain.lock().expect("chain").now()
    }

    fn settler(&self) -> Settler {
        let chain = self.chain.clone();
        Settler::new(
            Arc::new(self.chain.clone()),
            self.wallet.clone(),
            self.ledger.clone(),
            self.params,
            Arc::new(move || u64::from(chain.lock().expect("chain").now())),
            self.metrics.clone(),
            Arc::new(Mutex::new(WalletStatus::default())),
        )
    }

    /// The signed voucher and authorization for the account's receipt.
    fn voucher_for(&self, account: usize, seq: u64, cumulative: TokenCounts) -> JournalVoucher {
        let a = &self.accounts[account];
        let key = self.meter.key();
        let voucher = Voucher {
            escrow: a.escrow.clone(),
            guest_key: key,
            seq,
            tokens: cumulative,
            payout: addr(PAYOUT),
            commitment: ReceiptCommitment {
                receipts_root: self.meter.root(&a.id, seq),
                model: TEST_MODEL,
            },
        };
        let signed = sign_voucher(&self.meter.signer, voucher);
        let owner = ring_key_from_seed(&a.seed).expect("owner");
        let authorization = Authorization {
            escrow: a.escrow.clone(),
            guest_key: key,
            cap: 50 * TON,
            expires_at: self.now() + 86_400,
        }
        .sign(&owner)
        .expect("authorization");
        JournalVoucher {
            escrow: raw_address(&a.escrow),
            voucher: b64(&signed.to_boc().expect("boc")),
            authorization: b64(&authorization.to_boc().expect("boc")),
        }
    }

    /// One request of `account` served: a receipt with its voucher.
    fn serve(
        &mut self,
        account: usize,
        prompt: u64,
        cached: u64,
        completion: u64,
    ) -> JournalReceipt {
        let id = self.accounts[account].id.clone();
        let receipt = self.meter.bill(&id, tokens(prompt, cached, completion));
        let c = receipt.cumulative.tokens;
        let voucher = self.voucher_for(
            account,
            receipt.sequence,
            TokenCounts {
                prompt: c.prompt_tokens,
                cached: c.cached_tokens,
                completion: c.completion_tokens,
            },
        );
        let mut entry = self.meter.journal(&receipt);
        entry.voucher = Some(voucher);
        entry
    }

    fn store(&self, page: &[JournalReceipt]) -> crate::ledger::StoreOutcome {
        let key = self.meter.key();
        let page = page.to_vec();
        self.ledger
            .run_blocking(|l| l.store("g1", &key, &page))
            .expect("store")
    }

    /// The account's cumulative tokens so far, as the escrow charges them.
    fn owed_total(&self, account: usize) -> u128 {
        let (_, cumulative) = self.meter.accounts[&self.accounts[account].id];
        let t = cumulative.tokens;
        layout::charge_for(
            &PRICES,
            t.prompt_tokens,
            t.cached_tokens,
            t.completion_tokens,
        )
    }

    fn balance(&self, address: &StdAddr) -> u128 {
        self.chain
            .lock()
            .expect("chain")
            .account(address)
            .expect("account")
            .balance
    }

    async fn on_chain(&self, account: usize) -> escrow::GuestOnChain {
        escrow::guest_state(
            &self.chain,
            Duration::from_secs(5),
            &self.accounts[account].escrow,
            &self.meter.key(),
        )
        .await
        .expect("get_guest")
    }

    /// Rounds until nothing is active and nothing new is sent (at most 10).
    async fn settle_all(&self, settler: &mut Settler) -> Vec<RoundReport> {
        let mut reports = Vec::new();
        for _ in 0..10 {
            let report = settler.round().await.expect("round");
            let idle = report.created.is_none() && report.resent.is_empty();
            reports.push(report);
            if idle {
                return reports;
            }
        }
        panic!("settlement did not come to rest: {reports:?}");
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sign_voucher(signer: &ReceiptSigner, voucher: Voucher) -> SignedVoucher {
    let hash = voucher.to_cell().expect("cell").repr_hash().0;
    SignedVoucher {
        signature: signer.sign_cell_hash(&hash),
        voucher,
    }
}

fn created(reports: &[RoundReport]) -> Vec<i64> {
    reports.iter().filter_map(|r| r.created).collect()
}

fn confirmed(reports: &[RoundReport]) -> Vec<i64> {
    reports.iter().flat_map(|r| r.confirmed.clone()).collect()
}

#[tokio::test]
async fn billing_a_settlement_lands_and_moves_exactly_the_charge() {
    let mut w = World::new(1);
    let page: Vec<_> = (0..3).map(|i| w.serve(0, 1_000 + i, 100, 500)).collect();
    let outcome = w.store(&page);
    assert_eq!((outcome.stored.len(), outcome.vouchers), (3, 3));
    assert!(
        outcome.refused_vouchers.is_empty(),
        "{:?}",
        outcome.refused_vouchers
    );
    let charge = w.owed_total(0);
    assert!(charge > 0);
    let escrow = w.accounts[0].escrow.clone();
    let (escrow_before, payout_before, wallet_before) = (
        w.balance(&escrow),
        w.balance(&addr(PAYOUT)),
        w.balance(&w.wallet.address()),
    );

    let mut settler = w.settler();
    let reports = w.settle_all(&mut settler).await;
    assert_eq!(created(&reports).len(), 1, "{reports:?}");
    assert_eq!(confirmed(&reports), created(&reports));
    assert_eq!(reports[0].unsettled, charge);

    let state = w.on_chain(0).await;
    assert_eq!((state.seq, state.charged), (3, charge));
    // The escrow loses exactly the charge; the payout gains it plus the unused gas.
    assert_eq!(escrow_before - w.balance(&escrow), charge);
    let payout_gain = w.balance(&addr(PAYOUT)) - payout_before;
    assert!(
        payout_gain > charge && payout_gain < charge + CHARGE_VALUE,
        "{payout_gain}"
    );
    let wallet_spent = wallet_before - w.balance(&w.wallet.address());
    assert!(
        wallet_spent > CHARGE_VALUE && wallet_spent < 2 * CHARGE_VALUE,
        "{wallet_spent}"
    );

    let id = created(&reports)[0];
    let stored = w
        .ledger
        .run_blocking(|l| l.settlement(id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, SettlementState::Confirmed);
    assert_eq!(stored.items.len(), 1);
    assert_eq!(stored.items[0].state, ItemState::Landed);
    assert_eq!((stored.items[0].seq, stored.items[0].amount), (3, charge));
    assert_eq!(stored.gas, Some(wallet_spent));
    let totals = w.ledger.run_blocking(|l| l.settlement_totals()).unwrap();
    assert_eq!(totals.settled_nanoton, charge);
    assert_eq!(totals.gas_nanoton, wallet_spent);
    assert_eq!(totals.settlements["confirmed"], 1);
    assert_eq!(w.metrics.settled.get(), charge as u64);

    // Nothing more to do: nothing is sent again.
    let again = w.settle_all(&mut settler).await;
    assert!(created(&again).is_empty(), "{again:?}");
    assert_eq!(escrow_before - w.balance(&escrow), charge);

    // More usage: only the increase moves.
    let more = vec![w.serve(0, 2_000, 0, 1_000)];
    w.store(&more);
    let reports = w.settle_all(&mut settler).await;
    assert_eq!(created(&reports).len(), 1);
    let total = w.owed_total(0);
    assert_eq!(w.on_chain(0).await.charged, total);
    assert_eq!(escrow_before - w.balance(&escrow), total);
}

#[tokio::test]
async fn billing_batches_charges_of_many_escrows_into_wallet_messages() {
    let mut w = World::new(5);
    w.params.max_batch = 2;
    let mut page = Vec::new();
    for account in 0..5 {
        for i in 0..2 {
            page.push(w.serve(account, 100 * (account as u64 + 1) + i, 0, 50));
        }
    }
    assert_eq!(w.store(&page).vouchers, 10);
    let mut settler = w.settler();
    let reports = w.settle_all(&mut settler).await;
    let ids = created(&reports);
    assert_eq!(ids.len(), 3, "{reports:?}");
    let sizes: Vec<usize> = ids
        .iter()
        .map(|&id| {
            w.ledger
                .run_blocking(|l| l.settlement(id))
                .unwrap()
                .unwrap()
                .items
                .len()
        })
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    // Largest amounts first: the accounts with the most tokens go in the first message.
    let first = w
        .ledger
        .run_blocking(|l| l.settlement(ids[0]))
        .unwrap()
        .unwrap();
    let first_escrows: Vec<&str> = first.items.iter().map(|i| i.escrow.as_str()).collect();
    assert!(first_escrows.contains(&raw_address(&w.accounts[4].escrow).as_str()));
    assert!(first_escrows.contains(&raw_address(&w.accounts[3].escrow).as_str()));
    for account in 0..5 {
        let state = w.on_chain(account).await;
        assert_eq!(
            (state.seq, state.charged),
            (2, w.owed_total(account)),
            "{account}"
        );
    }
    // One wallet seqno per message.
    let seqnos: Vec<u32> = ids
        .iter()
        .map(|&id| {
            w.ledger
                .run_blocking(|l| l.settlement(id))
                .unwrap()
                .unwrap()
                .seqno
        })
        .collect();
    assert_eq!(seqnos, vec![0, 1, 2]);
}

#[tokio::test]
async fn billing_thresholds_hold_small_amounts_until_they_age() {
    let mut w = World::new(1);
    w.params.thresholds = Thresholds::new(1_000 * TON as u64, 0.0, 3_600, 600);
    let page = vec![w.serve(0, 10, 0, 10)];
    w.store(&page);
    let mut settler = w.settler();
    let reports = w.settle_all(&mut settler).await;
    assert!(created(&reports).is_empty());
    assert_eq!(reports[0].unsettled, w.owed_total(0));
    assert_eq!(w.metrics.unsettled.get(), w.owed_total(0) as i64);
    // An hour later, the oldest voucher is old enough.
    w.chain.lock().unwrap().advance(3_600).unwrap();
    let reports = w.settle_all(&mut settler).await;
    assert_eq!(created(&reports).len(), 1, "{reports:?}");
    assert_eq!(w.on_chain(0).await.charged, w.owed_total(0));
}

/// The owner of account `account` asks to close its escrow, refunds to `refund_to`.
fn request_close(w: &World, account: usize, refund_to: &StdAddr) {
    let owner = ring_key_from_seed(&w.accounts[account].seed).expect("owner");
    let escrow = w.accounts[account].escrow.clone();
    let mut c = w.chain.lock().expect("chain");
    let body = OwnerRequest {
        escrow: escrow.clone(),
        seqno: 1,
        valid_until: c.now() + 300,
        action: OwnerAction::RequestClose {
            refund_to: refund_to.clone(),
        },
    }
    .sign(&owner, 3)
    .expect("sign")
    .to_cell()
    .expect("owner body");
    let txs = c
        .send_internal(InternalMessage {
            src: addr(CLIENT),
            dest: escrow.clone(),
            value: TON / 20,
            bounce: true,
            body: Some(body),
            state_init: None,
        })
        .expect("close");
    assert!(txs
        .iter()
        .any(|t| t.account == escrow && t.exit_code == Some(0)));
}

#[tokio::test]
async fn billing_a_closing_escrow_is_settled_by_a_final_charge_that_refunds_at_once() {
    let mut w = World::new(2);
    // Nothing would be settled yet for its amount or age.
    w.params.thresholds = Thresholds::new(1_000 * TON as u64, 0.0, 3_600, 600);
    let page = vec![w.serve(0, 100, 0, 200), w.serve(1, 100, 0, 200)];
    w.store(&page);
    let refund_to = addr([0x77; 32]);
    request_close(&w, 0, &refund_to);
    let escrow = w.accounts[0].escrow.clone();
    let (escrow_before, refund_before) = (w.balance(&escrow), w.balance(&refund_to));
    // Closing keeps the stake (and reserve) until unlock_at; the rest went back at once.
    assert!(escrow_before < 11 * TON, "{escrow_before}");

    let mut settler = w.settler();
    let reports = w.settle_all(&mut settler).await;
    assert_eq!(created(&reports).len(), 1, "{reports:?}");
    let charge = w.owed_total(0);
    assert_eq!(w.on_chain(0).await.charged, charge);
    // The final charge paid the operator and refunded everything else now, not after
    // the close delay: the escrow is empty and open again (stake 0, unlock_at 0).
    assert_eq!(w.balance(&escrow), 0);
    let refunded = w.balance(&refund_to) - refund_before;
    assert!(
        refunded + charge <= escrow_before && escrow_before - refunded - charge < TON / 100,
        "refunded {refunded} of {escrow_before} after a charge of {charge}"
    );
    let state = escrow::escrow_state(&w.chain, Duration::from_secs(5), &escrow)
        .await
        .expect("escrow")
        .expect("still deployed");
    assert_eq!((state.stake, state.unlock_at), (0, 0));
    // The other account's escrow is not closing: its voucher waits for the thresholds.
    assert_eq!(w.on_chain(1).await.charged, 0);
}

/// Replaces a stored voucher's BoC (the host's disk or database tampered with).
fn overwrite_voucher(w: &World, seq: u64, voucher: &[u8]) {
    let voucher = voucher.to_vec();
    w.ledger
        .run_blocking(|l| {
            l.raw()
                .execute(
                    "UPDATE vouchers SET voucher = ?1 WHERE seq = ?2",
                    rusqlite::params![voucher, seq as i64],
                )
                .unwrap();
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn billing_tampered_replayed_and_invented_vouchers_get_nothing() {
    let mut w = World::new(1);
    let escrow = w.accounts[0].escrow.clone();
    let page: Vec<_> = (0..2).map(|_| w.serve(0, 500, 0, 500)).collect();
    w.store(&page);
    let mut settler = w.settler();
    w.settle_all(&mut settler).await;
    let paid = w.owed_total(0);
    assert_eq!(w.on_chain(0).await.charged, paid);
    let escrow_after_first = w.balance(&escrow);

    // Collection refuses a voucher with one byte changed (the receipt is still stored).
    let mut tampered = w.serve(0, 500, 0, 500);
    let voucher = tampered.voucher.as_mut().unwrap();
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(&voucher.voucher)
        .unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 0x01;
    voucher.voucher = b64(&bytes);
    let outcome = w.store(&[tampered]);
    assert_eq!((outcome.stored.len(), outcome.vouchers), (1, 0));
    assert_eq!(outcome.refused_vouchers.len(), 1);

    // Stored anyway (the ledger tampered with after collection): the escrow refuses it, the
    // ledger records the failure, and the voucher is not sent again.
    let honest = w.serve(0, 500, 0, 500); // seq 4
    let mut inflated = SignedVoucher::from_boc(
        &base64::engine::general_purpose::STANDARD
            .decode(&honest.voucher.as_ref().unwrap().voucher)
            .unwrap(),
    )
    .unwrap();
    w.store(&[honest]);
    inflated.voucher.tokens.completion += 1;
    overwrite_voucher(&w, 4, &inflated.to_boc().unwrap());
    let reports = w.settle_all(&mut settler).await;
    let failed: Vec<i64> = reports.iter().flat_map(|r| r.failed.clone()).collect();
    assert_eq!(failed.len(), 1, "{reports:?}");
    let settlement = w
        .ledger
        .run_blocking(|l| l.settlement(failed[0]))
        .unwrap()
        .unwrap();
    assert_eq!(settlement.state, SettlementState::Failed);
    assert_eq!(settlement.items[0].state, ItemState::Failed);
    assert_eq!(w.on_chain(0).await.charged, paid);
    assert_eq!(w.balance(&escrow), escrow_after_first);
    let again = w.settle_all(&mut settler).await;
    assert!(
        created(&again).is_empty(),
        "the failed voucher was sent again: {again:?}"
    );

    // Invented: a voucher for the guest's key signed by someone else.
    let impostor = ReceiptSigner::generate().unwrap();
    let invented = sign_voucher(
        &impostor,
        Voucher {
            escrow: escrow.clone(),
            guest_key: w.meter.key(),
            seq: 5,
            tokens: TokenCounts {
                prompt: 3_000,
                cached: 0,
                completion: 3_000,
            },
            payout: addr(PAYOUT),
            commitment: Default::default(),
        },
    );
    let mut entry = w.serve(0, 500, 0, 500); // seq 5
    entry.voucher.as_mut().unwrap().voucher = b64(&invented.to_boc().unwrap());
    let outcome = w.store(&[entry.clone()]);
    assert_eq!(outcome.refused_vouchers.len(), 1);
    assert!(
        outcome.refused_vouchers[0].1.contains("signature"),
        "{:?}",
        outcome.refused_vouchers
    );
    // Forced into the ledger, it fails on-chain too.
    w.ledger
        .run_blocking(|l| {
            l.raw()
                .execute(
                    "INSERT INTO vouchers (receipt_key, account, escrow, seq, prompt_tokens, \
                     cached_tokens, completion_tokens, payout, expires_at, cap, voucher, \
                     authorization, stored_at) SELECT receipt_key, account, escrow, 5, \
                     3000, 0, 3000, payout, expires_at, cap, ?1, authorization, stored_at \
                     FROM vouchers WHERE seq = 4",
                    rusqlite::params![invented.to_boc().unwrap()],
                )
                .unwrap();
            Ok(())
        })
        .unwrap();
    let reports = w.settle_all(&mut settler).await;
    assert_eq!(
        reports.iter().flat_map(|r| r.failed.clone()).count(),
        1,
        "{reports:?}"
    );
    assert_eq!(w.on_chain(0).await.charged, paid);
    assert_eq!(w.balance(&escrow), escrow_after_first);

    // Replayed: the agent never sends a voucher the chain has paid, and the escrow refuses
    // one sent anyway.
    let replay = w.ledger.run_blocking(|l| {
        let (v, a): (Vec<u8>, Vec<u8>) = l
            .raw()
            .query_row(
                "SELECT voucher, authorization FROM vouchers WHERE seq = 2",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        Ok((v, a))
    });
    let (v, a) = replay.unwrap();
    let body = layout::Charge {
        query_id: 1,
        is_final: false,
        voucher: SignedVoucher::from_boc(&v).unwrap(),
        authorization: layout::SignedAuthorization::from_boc(&a).unwrap(),
    }
    .to_cell()
    .unwrap();
    let seqno = w.chain.wallet_seqno(&w.wallet.address()).await.unwrap();
    let message = w
        .wallet
        .external_transfer(
            seqno,
            w.now() + 60,
            &[OutMessage {
                dest: escrow.clone(),
                value: CHARGE_VALUE,
                bounce: true,
                body: Some(body),
                state_init: None,
            }],
        )
        .unwrap();
    w.chain.send_boc(&message).await.unwrap();
    assert_eq!(w.on_chain(0).await.charged, paid);
    assert_eq!(w.balance(&escrow), escrow_after_first);

    // A newer honest voucher is tried, and pays for everything served.
    let page = vec![w.serve(0, 500, 0, 500)];
    w.store(&page);
    let reports = w.settle_all(&mut settler).await;
    assert_eq!(confirmed(&reports).len(), 1, "{reports:?}");
    let total = w.owed_total(0);
    assert_eq!(w.on_chain(0).await.charged, total);
    assert_eq!(escrow_after_first - w.balance(&escrow), total - paid);
}

/// Three requests stored; returns what they owe and the escrow's balance before.
fn three_requests(w: &mut World) -> (u128, u128) {
    let page: Vec<_> = (0..3).map(|i| w.serve(0, 700 + i, 7, 300)).collect();
    assert_eq!(w.store(&page).vouchers, 3);
    (w.owed_total(0), w.balance(&w.accounts[0].escrow))
}

fn resent(reports: &[RoundReport]) -> Vec<i64> {
    reports.iter().flat_map(|r| r.resent.clone()).collect()
}

async fn assert_paid_once(w: &World, owed: u128, escrow_before: u128) {
    assert_paid_once_less_storage(w, owed, escrow_before, 0).await;
}

/// Paid once; the escrow's balance dropped by the charge plus at most `storage` (its
/// storage fee when the clock moved).
async fn assert_paid_once_less_storage(w: &World, owed: u128, escrow_before: u128, storage: u128) {
    let state = w.on_chain(0).await;
    assert_eq!((state.seq, state.charged), (3, owed));
    let dropped = escrow_before - w.balance(&w.accounts[0].escrow);
    assert!(
        dropped >= owed && dropped <= owed + storage,
        "{dropped} vs {owed}"
    );
}

#[tokio::test]
async fn billing_restart_sends_a_message_stored_but_not_sent() {
    let mut w = World::new(1);
    let (owed, before) = three_requests(&mut w);
    let mut crashed = w.settler();
    crashed.stop_at = Some("after-store");
    let id = crashed.round().await.unwrap().created.expect("stored");
    drop(crashed);
    let stored = w
        .ledger
        .run_blocking(|l| l.settlement(id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, SettlementState::Pending);
    assert_eq!(w.chain.wallet_seqno(&w.wallet.address()).await.unwrap(), 0);
    assert_eq!(w.on_chain(0).await.seq, 0);

    let mut restarted = w.settler();
    let reports = w.settle_all(&mut restarted).await;
    assert_eq!(resent(&reports), vec![id]);
    assert_eq!(confirmed(&reports), vec![id]);
    assert!(created(&reports).is_empty(), "{reports:?}");
    assert_paid_once(&w, owed, before).await;
}

#[tokio::test]
async fn billing_restart_confirms_a_message_sent_but_not_recorded_without_resending() {
    let mut w = World::new(1);
    let (owed, before) = three_requests(&mut w);
    let mut crashed = w.settler();
    crashed.stop_at = Some("after-send");
    let id = crashed.round().await.unwrap().created.expect("stored");
    drop(crashed);
    let stored = w
        .ledger
        .run_blocking(|l| l.settlement(id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, SettlementState::Pending);
    assert_eq!(w.chain.wallet_seqno(&w.wallet.address()).await.unwrap(), 1);

    let mut restarted = w.settler();
    let reports = w.settle_all(&mut restarted).await;
    assert_eq!(confirmed(&reports), vec![id]);
    assert!(resent(&reports).is_empty(), "{reports:?}");
    assert!(created(&reports).is_empty(), "{reports:?}");
    assert_paid_once(&w, owed, before).await;
    // Sending the same bytes again changes nothing: the wallet refuses a used seqno.
    assert!(w.chain.send_boc(&stored.message).await.is_err());
    assert_paid_once(&w, owed, before).await;
}

#[tokio::test]
async fn billing_restart_resends_a_message_marked_sent_that_never_arrived() {
    let mut w = World::new(1);
    let (owed, before) = three_requests(&mut w);
    let mut crashed = w.settler();
    crashed.stop_at = Some("after-store");
    let id = crashed.round().await.unwrap().created.expect("stored");
    // Recorded as sent, but lost on the way (a real network may drop it).
    w.ledger
        .run_blocking(|l| l.mark_settlement_sent(id, 1))
        .unwrap();
    let mut restarted = w.settler();
    let reports = w.settle_all(&mut restarted).await;
    assert_eq!(resent(&reports), vec![id]);
    assert_eq!(confirmed(&reports), vec![id]);
    assert_paid_once(&w, owed, before).await;
}

#[tokio::test]
async fn billing_an_expired_message_goes_into_a_new_one_with_its_charges() {
    let mut w = World::new(1);
    let (owed, before) = three_requests(&mut w);
    let mut crashed = w.settler();
    crashed.stop_at = Some("after-store");
    let old = crashed.round().await.unwrap().created.expect("stored");
    let old_message = w
        .ledger
        .run_blocking(|l| l.settlement(old))
        .unwrap()
        .unwrap();
    // Past valid_until (ttl 120 s): the message can never apply.
    w.chain.lock().unwrap().advance(121).unwrap();
    assert!(w.chain.send_boc(&old_message.message).await.is_err());

    let mut restarted = w.settler();
    let reports = w.settle_all(&mut restarted).await;
    let expired: Vec<i64> = reports.iter().flat_map(|r| r.expired.clone()).collect();
    assert_eq!(expired, vec![old]);
    let new = created(&reports);
    assert_eq!(new.len(), 1);
    assert_eq!(confirmed(&reports), new);
    let old_state = w
        .ledger
        .run_blocking(|l| l.settlement(old))
        .unwrap()
        .unwrap();
    assert_eq!(old_state.state, SettlementState::Expired);
    assert_eq!(old_state.items[0].state, ItemState::Expired);
    let fresh = w
        .ledger
        .run_blocking(|l| l.settlement(new[0]))
        .unwrap()
        .unwrap();
    assert_eq!(
        fresh.seqno, old_state.seqno,
        "the unused seqno is used by the new message"
    );
    assert_eq!(fresh.items[0].voucher_id, old_state.items[0].voucher_id);
    // 121 s of storage for the escrow (a few dozen nanoton).
    assert_paid_once_less_storage(&w, owed, before, 100).await;
}

/// Where the crash child keeps its chain and ledger (set by the parent test).
const CRASH_DIR_VAR: &str = "COCOON_TEST_CRASH_DIR";

/// The process the crash test kills: builds a persistent chain and a ledger in the
/// directory the parent names, stores three vouchers, and runs a settlement round with
/// `COCOON_TEST_CRASH_AT` set, which aborts it. Does nothing when run on its own.
#[tokio::test]
#[ignore = "run by billing_a_crash_at_each_point_charges_exactly_once"]
async fn billing_crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (chain, _) = LocalChain::open_persistent(&dir.join("chain.state")).expect("chain");
    let mut w = World::on(
        Arc::new(Mutex::new(chain)),
        &dir.join("ledger.sqlite3"),
        Meter::boot(),
    );
    w.open_account([0x40; 32]);
    let (owed, before) = three_requests(&mut w);
    let expect = format!(
        "{owed} {before} {} {}",
        raw_address(&w.accounts[0].escrow),
        hex::encode(w.meter.key())
    );
    std::fs::write(dir.join("expect"), expect).expect("expect");
    let mut settler = w.settler();
    let _ = settler.round().await;
    panic!("{CRASH_AT_VAR} did not abort the round");
}

#[tokio::test]
async fn billing_a_crash_at_each_point_charges_exactly_once() {
    for point in ["after-store", "after-send"] {
        let scratch = Scratch::new();
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "settle::tests::billing_crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_AT_VAR, point)
            .env(CRASH_DIR_VAR, &scratch.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("child");
        assert!(!status.success(), "{point}: the child was not killed");
        let expect = std::fs::read_to_string(scratch.0.join("expect")).expect("expect");
        let fields: Vec<&str> = expect.split(' ').collect();
        let owed: u128 = fields[0].parse().unwrap();
        let before: u128 = fields[1].parse().unwrap();
        let escrow = escrow::address(fields[2]).unwrap();
        let key = escrow::key_from_hex(fields[3]).unwrap();

        // Restart: the chain and the ledger from their files.
        let (chain, fresh) =
            LocalChain::open_persistent(&scratch.0.join("chain.state")).expect("chain");
        assert!(!fresh);
        let chain: SharedLocalChain = Arc::new(Mutex::new(chain));
        let ledger = SharedLedger::new(Ledger::open(&scratch.0.join("ledger.sqlite3")).unwrap());
        let active = ledger.run_blocking(|l| l.active_settlements()).unwrap();
        assert_eq!(active.len(), 1, "{point}");
        assert_eq!(active[0].state, SettlementState::Pending, "{point}");
        let applied = chain
            .wallet_seqno(
                &Wallet::from_seed(&WALLET_SEED, Network::Local)
                    .unwrap()
                    .address(),
            )
            .await
            .unwrap();
        assert_eq!(applied, u32::from(point == "after-send"), "{point}");

        let mut settler = Settler::new(
            Arc::new(chain.clone()),
            Arc::new(Wallet::from_seed(&WALLET_SEED, Network::Local).unwrap()),
            ledger.clone(),
            params(),
            super::settler::system_clock(),
            SettleMetrics::default(),
            Arc::new(Mutex::new(WalletStatus::default())),
        );
        let mut reports = Vec::new();
        for _ in 0..5 {
            let report = settler.round().await.expect("round");
            let idle = report.created.is_none() && report.resent.is_empty();
            reports.push(report);
            if idle {
                break;
            }
        }
        assert_eq!(
            confirmed(&reports),
            vec![active[0].id],
            "{point}: {reports:?}"
        );
        assert!(created(&reports).is_empty(), "{point}: {reports:?}");
        let expected_resent = if point == "after-store" {
            vec![active[0].id]
        } else {
            vec![]
        };
        assert_eq!(resent(&reports), expected_resent, "{point}");
        let state = escrow::guest_state(&chain, Duration::from_secs(5), &escrow, &key)
            .await
            .unwrap();
        assert_eq!((state.seq, state.charged), (3, owed), "{point}");
        let after = chain.lock().unwrap().account(&escrow).unwrap().balance;
        // Exactly the charge, less the escrow's storage fee for the seconds between the
        // child's deploy and this settlement (the embedded chain follows the system clock).
        let dropped = before - after;
        assert!(
            dropped >= owed && dropped < owed + 1_000,
            "{point}: {dropped} vs {owed}"
        );
    }
}

/// A stand-in for a guest's internal API: answers with `answer(method, path, body)`.
/// How a stand-in guest answers `(method, path, body)`.
type Answer = Arc<dyn Fn(&str, &str, &str) -> String + Send + Sync>;

async fn stand_in_guest(answer: Answer) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                let (head, body) = loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                let mut line = head.lines().next().unwrap_or_default().split_whitespace();
                let (method, path) = (
                    line.next().unwrap_or_default(),
                    line.next().unwrap_or_default(),
                );
                let reply = answer(method, path, &body);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{reply}",
                    reply.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
            });
        }
    });
    address
}

fn guest_handle(internal_address: &str, key: [u8; 32]) -> Arc<crate::agent::guest::GuestHandle> {
    use cocoon_client::args::{CollateralArgs, PolicyArgs};
    let (attestor, _) =
        crate::vm::verify::policy_attestor(&PolicyArgs::default(), &CollateralArgs::default())
            .unwrap();
    let guest = crate::agent::guest::GuestHandle::new(
        crate::agent::config::GuestSection {
            name: "g1".into(),
            address: "127.0.0.1:9".into(),
            internal_address: internal_address.into(),
            host_token_file: "unused".into(),
            attestation: PolicyArgs::default(),
            collateral: CollateralArgs::default(),
        },
        attestor,
        crate::agent::metrics::AgentMetrics::default(),
    );
    guest.assume_verified(key);
    guest
}

#[tokio::test]
async fn billing_escrow_state_is_read_from_the_chain_and_reported_to_the_guest() {
    let mut w = World::new(1);
    let page = vec![w.serve(0, 1_000, 0, 1_000)];
    w.store(&page);
    w.settle_all(&mut w.settler()).await;
    let charged = w.owed_total(0);
    let escrow = raw_address(&w.accounts[0].escrow);
    let nowhere = raw_address(&addr([0x99; 32]));
    let key = hex::encode(w.meter.key());
    let posted = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let (list_key, seen) = (Arc::new(Mutex::new(key.clone())), posted.clone());
    let (escrow_c, nowhere_c, list_key_c) = (escrow.clone(), nowhere.clone(), list_key.clone());
    let address = stand_in_guest(Arc::new(move |method, path, body| match (method, path) {
        ("GET", "/internal/v1/escrows") => serde_json::json!({
            "object": "list",
            "data": [
                {"account": "a", "escrow": escrow_c, "reported": null, "reported_at": null, "unsettled": 0},
                {"account": "b", "escrow": nowhere_c, "reported": null, "reported_at": null, "unsettled": 0},
            ],
            "receipt_key": *list_key_c.lock().unwrap(),
            "payout": "0:33",
        })
        .to_string(),
        ("POST", "/internal/v1/escrows") => {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            seen.lock().unwrap().push(value);
            serde_json::json!({"used": 2}).to_string()
        }
        other => panic!("unexpected {other:?}"),
    }))
    .await;
    let reporter = super::escrow_loop::EscrowReporter {
        guest: guest_handle(&address, w.meter.key()),
        api: crate::agent::internal_api::InternalApi::new(
            address,
            "token".into(),
            Duration::from_secs(5),
        ),
        chain: Arc::new(w.chain.clone()),
        timeout: Duration::from_secs(5),
        metrics: SettleMetrics::default(),
    };
    assert_eq!(reporter.round().await.unwrap(), Some(2));
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    let reports = &posted[0]["escrows"];
    let balance = w.balance(&w.accounts[0].escrow);
    assert_eq!(
        reports[0],
        serde_json::json!({
            "escrow": escrow,
            "balance": balance as u64,
            "stake": (10 * TON) as u64,
            "unlock_at": 0,
            "seq": 1,
            "charged": charged as u64,
        })
    );
    assert_eq!(
        reports[1],
        serde_json::json!({"escrow": nowhere, "balance": 0, "stake": 0, "unlock_at": 0, "seq": 0, "charged": 0})
    );
    // A guest naming another receipt key than the verified one gets nothing.
    *list_key.lock().unwrap() = "11".repeat(32);
    assert_eq!(reporter.round().await.unwrap(), None);
}

#[tokio::test]
async fn billing_the_collector_stores_vouchers_before_acknowledging_and_they_settle() {
    let mut w = World::new(1);
    let entries: Vec<JournalReceipt> = (0..4).map(|i| w.serve(0, 300 + i, 0, 200)).collect();
    let key = w.meter.key();
    let journal = Arc::new(Mutex::new(entries.clone()));
    let acked = Arc::new(Mutex::new(Vec::<(u64, usize)>::new()));
    let ledger_file = w._scratch.as_ref().unwrap().file();
    let (journal_c, acked_c) = (journal.clone(), acked.clone());
    let address = stand_in_guest(Arc::new(move |_, path, body| {
        if path.starts_with("/internal/v1/receipts?") {
            let data: Vec<_> = journal_c.lock().unwrap().clone();
            serde_json::json!({
                "object": "list",
                "data": data,
                "receipt_key": hex::encode(key),
                "last_index": 4,
            })
            .to_string()
        } else {
            let upto = serde_json::from_str::<serde_json::Value>(body).unwrap()["upto"]
                .as_u64()
                .unwrap();
            // What is durable at the acknowledgement: a second connection to the file.
            let vouchers = Ledger::open(&ledger_file).unwrap().voucher_heads().unwrap();
            let durable = vouchers.first().map_or(0, |v| v.seq as usize);
            acked_c.lock().unwrap().push((upto, durable));
            journal_c.lock().unwrap().retain(|e| e.index > upto);
            serde_json::json!({"acknowledged": 4}).to_string()
        }
    }))
    .await;
    let mut collector = crate::agent::collector::Collector::new(
        guest_handle(&address, key),
        crate::agent::internal_api::InternalApi::new(
            address,
            "token".into(),
            Duration::from_secs(5),
        ),
        w.ledger.clone(),
        crate::agent::metrics::AgentMetrics::default(),
        crate::agent::config::CollectorSection::default(),
    );
    collector.round().await.unwrap();
    assert_eq!(*acked.lock().unwrap(), vec![(4, 4)]);
    let reports = w.settle_all(&mut w.settler()).await;
    assert_eq!(confirmed(&reports).len(), 1);
    assert_eq!(w.on_chain(0).await.charged, w.owed_total(0));
}

#[tokio::test]
async fn billing_a_refused_charge_is_failed_only_after_the_grace_period() {
    let mut w = World::new(1);
    w.params.confirm_grace_secs = 60;
    let page = vec![w.serve(0, 100, 0, 100)];
    w.store(&page);
    let mut inflated = SignedVoucher::from_boc(
        &base64::engine::general_purpose::STANDARD
            .decode(&page[0].voucher.as_ref().unwrap().voucher)
            .unwrap(),
    )
    .unwrap();
    inflated.voucher.tokens.prompt += 1;
    overwrite_voucher(&w, 1, &inflated.to_boc().unwrap());
    let mut settler = w.settler();
    let first = settler.round().await.unwrap();
    let id = first.created.expect("sent");
    // The wallet used its seqno; the charge did not land, but it may still be on its way.
    let second = settler.round().await.unwrap();
    assert!(
        second.failed.is_empty() && second.created.is_none(),
        "{second:?}"
    );
    let s = w
        .ledger
        .run_blocking(|l| l.settlement(id))
        .unwrap()
        .unwrap();
    assert_eq!(s.state, SettlementState::Sent);
    w.chain.lock().unwrap().advance(60).unwrap();
    let third = settler.round().await.unwrap();
    assert_eq!(third.failed, vec![id]);
    assert_eq!(w.on_chain(0).await.seq, 0);
}

/// Issue 20: the ledger proves settled receipts against the root the escrow recorded, and
/// a ledger that lost or altered a receipt cannot make a proof (a host's doctored books
/// are caught before anyone checks them on chain).
#[tokio::test]
async fn billing_onchain_ledger_proofs_lead_to_the_recorded_root_and_doctored_books_fail() {
    use cocoon_attestation::receipt::verify_receipt;
    let mut w = World::new(1);
    let page: Vec<_> = (0..5).map(|i| w.serve(0, 100 + i, 10, 50 + i)).collect();
    w.store(&page);
    let mut settler = w.settler();
    w.settle_all(&mut settler).await;
    assert_eq!(w.on_chain(0).await.seq, 5);
    let key = w.meter.key();
    let escrow = w.accounts[0].escrow.clone();
    let recorded = cocoon_billing::record::read_commitment(&w.chain, &escrow, &key)
        .await
        .unwrap();
    assert_eq!(recorded.seq, 5);
    let account = w.accounts[0].id.clone();
    for seq in 1..=5u64 {
        let id = format!("chatcmpl-{account}-{seq}");
        let (proof, jws) = w
            .ledger
            .run_blocking(move |l| l.receipt_proof(&id))
            .unwrap();
        let receipt = verify_receipt(&jws, &key).unwrap();
        assert_eq!(receipt.sequence, seq);
        let checked = proof.check(&receipt, &key).unwrap();
        assert_eq!(
            (checked.root, checked.tree_size),
            (recorded.receipts_root, 5)
        );
        assert_eq!(checked.model_sha256, TEST_MODEL);
        assert_eq!(proof.escrow, raw_address(&escrow));
    }
    // By ledger id too; an unknown id has no proof.
    let (by_id, _) = w.ledger.run_blocking(|l| l.receipt_proof("1")).unwrap();
    assert_eq!(by_id.receipt.leaf.sequence, 1);
    let unknown = w.ledger.run_blocking(|l| l.receipt_proof("chatcmpl-nope"));
    assert!(
        matches!(unknown, Err(crate::Error::NoProof { .. })),
        "{unknown:?}"
    );

    // A receipt served after the last settlement has no proof yet.
    let later = vec![w.meter.serve(&account, 10, 0, 10)];
    w.store(&later);
    let id = format!("chatcmpl-{account}-6");
    let pending = w.ledger.run_blocking(move |l| l.receipt_proof(&id));
    let Err(crate::Error::NoProof { detail, .. }) = pending else {
        panic!("{pending:?}")
    };
    assert!(detail.contains("not settled yet"), "{detail}");

    // Doctored books: receipt 3 re-signed with other counts (as if the ledger's copy were
    // altered; the guest's key signs here because the test meter holds it), then removed.
    let file = w._scratch.as_ref().unwrap().file();
    let conn = rusqlite::Connection::open(&file).unwrap();
    let jws: String = conn
        .query_row(
            "SELECT jws FROM receipts WHERE request_id = ?1",
            [format!("chatcmpl-{account}-3")],
            |row| row.get(0),
        )
        .unwrap();
    let mut altered = verify_receipt(&jws, &key).unwrap();
    altered.tokens.completion_tokens += 1;
    let altered = w.meter.signer.sign(&altered).unwrap();
    conn.execute(
        "UPDATE receipts SET jws = ?1 WHERE request_id = ?2",
        rusqlite::params![altered, format!("chatcmpl-{account}-3")],
    )
    .unwrap();
    let id = format!("chatcmpl-{account}-1");
    let doctored = w.ledger.run_blocking(move |l| l.receipt_proof(&id));
    let Err(crate::Error::NoProof { detail, .. }) = doctored else {
        panic!("{doctored:?}")
    };
    assert!(detail.contains("holds altered receipts"), "{detail}");
    conn.execute(
        "DELETE FROM receipts WHERE request_id = ?1",
        [format!("chatcmpl-{account}-3")],
    )
    .unwrap();
    let id = format!("chatcmpl-{account}-1");
    let gap = w.ledger.run_blocking(move |l| l.receipt_proof(&id));
    let Err(crate::Error::NoProof { detail, .. }) = gap else {
        panic!("{gap:?}")
    };
    assert!(detail.contains("not contiguous"), "{detail}");
}
