//! Gas per settled request: what the host agent's settlement costs on the local chain (real
//! escrow and wallet v5r1 bytecode, the committed mainnet config's fees), at batch sizes 1,
//! 10 and 100 charges per wallet message and 1, 10 and 100 requests per cumulative voucher,
//! next to the reference system's (COCOON's) figure of about 0.011 TON per charge.
//!
//! The settlement is built as `host-agent/src/settle/settler.rs` builds it: one wallet v5r1
//! external message per batch, one `charge` internal message per escrow (bounceable, value
//! `charge_value_nanoton`'s default, `query_id = seqno << 8 | position`, not final, with the
//! voucher and the authorization as stored), mode 3. Every transaction the message causes is
//! executed (wallet, escrows, the payout address), and the fees are counted from the
//! transactions and checked against every account's balance change:
//! - each escrow loses exactly its voucher's delta (`layout::charge_for` of the cumulative
//!   counts, minus what was charged before) plus its own storage fee;
//! - the payout address gains exactly the deltas plus the attached values minus the fees of
//!   the escrows' transactions and of the payout messages;
//! - the wallet loses exactly the attached values plus its own fees;
//! - everyone's losses minus gains equal the fees.
//!
//! A mismatch prints what differs and exits non-zero.
//!
//! `cargo run --release -p cocoon-billing --features local-chain,wallet --example settlement-gas`
//! (`make bench` runs it first).

use std::error::Error as StdError;
use std::fmt::Write as _;

use cocoon_billing::address::{Cell, StdAddr};
use cocoon_billing::layout::{
    self, escrow_state_init, Authorization, CellLayout as _, Charge, EscrowData, OwnerAction,
    OwnerRequest, Prices, ReceiptCommitment, SignedAuthorization, TokenCounts, TopUp, Voucher,
};
use cocoon_billing::local_chain::{InternalMessage, LocalChain, StackValue, TxSummary};
use cocoon_billing::wallet::{Network, OutMessage, Wallet, MAX_MESSAGES};
use ring::signature::Ed25519KeyPair;
use tycho_executor::ParsedConfig;
use tycho_types::models::{ComputePhase, Transaction, TxInfo};

type Res<T> = Result<T, Box<dyn StdError>>;

const TON: u128 = 1_000_000_000;
/// The reference system's client charge, from its own test suite (`shared/design/TON.md`).
const COCOON_CHARGE: u128 = 11_000_000;
/// `[billing] charge_value_nanoton`'s default (`host-agent/src/settle/config.rs`).
const CHARGE_VALUE: u128 = 50_000_000;
/// `[billing] message_ttl_secs`'s default.
const MESSAGE_TTL: u32 = 120;
/// `[billing] poll_secs`'s default: the clock moves this much between settlements.
const POLL: u32 = 10;
/// The largest BoC an external message may have (`max_ext_msg_size`: config param 43, or
/// without it TON's default; the local chain's `send_external` enforces it too).
const MAX_EXT_MSG_BYTES: usize = 65_535;
const NOW: u32 = 1_767_225_600;
const CLOSE_DELAY: u32 = 3_600;
const BATCHES: [usize; 3] = [1, 10, 100];
const REQUESTS: [u64; 3] = [1, 10, 100];
/// Escrows deployed: enough for a full wallet v5 message (to find the real cap).
const ESCROWS: usize = MAX_MESSAGES;

const PRICES: Prices = Prices {
    prompt_per_million: 1_000_000_000,
    cached_per_million: 100_000_000,
    completion_per_million: 3_000_000_000,
};
/// One request's tokens (prompt, of which cached, completion) for client `i`: a little
/// different per client, so no two escrows' cumulative `TokenCounts` cells are equal (a BoC
/// stores equal cells once, and fees count distinct cells: equal counts would understate
/// a batch's size and import fee).
fn request_tokens(i: usize) -> (u64, u64, u64) {
    (600 + i as u64, 200, 250 + i as u64)
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Res<()> {
    if ok {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn seeded_key(tag: u8, index: usize) -> Res<Ed25519KeyPair> {
    let mut seed = [tag; 32];
    seed[..8].copy_from_slice(&(index as u64).to_be_bytes());
    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| format!("key: {e}").into())
}

struct Client {
    escrow: StdAddr,
    authorization: SignedAuthorization,
    /// The guest's receipt sequence under its key for this account (one per request).
    seq: u64,
    /// Cumulative token counts under the key.
    tokens: TokenCounts,
    /// What the escrow has charged for the key (`get_guest`).
    charged: u128,
}

struct Setup {
    chain: LocalChain,
    wallet: Wallet,
    seqno: u32,
    guest: Ed25519KeyPair,
    payout: StdAddr,
    clients: Vec<Client>,
}

/// What one settlement message cost, every nanoton accounted for.
#[derive(Debug, Default, Clone)]
struct Measured {
    batch: usize,
    requests_per_voucher: u64,
    messages: usize,
    ext_bytes: usize,
    /// Wallet transaction: import of the external message, gas, action fees (total_fees).
    wallet_fees: u128,
    /// Its parts: gas, action fees, storage (the rest is the external message's import).
    wallet_gas: u128,
    wallet_action: u128,
    wallet_storage: u128,
    /// Forwarding fees the charge messages carried (beyond the wallet's total_fees).
    charge_fwd: u128,
    /// Escrows' transactions: gas and action fees (storage apart).
    escrow_fees: u128,
    /// Escrows' storage fees (the client's money, not the operator's).
    escrow_storage: u128,
    /// Forwarding fees the payout messages carried.
    payout_fwd: u128,
    /// The payout address's transactions.
    payout_fees: u128,
    escrow_gas: u64,
    charges: usize,
    /// What the vouchers moved (sum of deltas).
    settled: u128,
    /// The operator's (wallet + payout address) net loss, its earnings apart.
    operator_cost: u128,
}

impl Measured {
    fn all_fees(&self) -> u128 {
        self.wallet_fees
            + self.charge_fwd
            + self.escrow_fees
            + self.escrow_storage
            + self.payout_fwd
            + self.payout_fees
    }
    fn per_message(&self) -> u128 {
        self.all_fees() / self.messages as u128
    }
    fn per_charge(&self) -> u128 {
        self.all_fees() / self.charges as u128
    }
    fn per_request(&self) -> u128 {
        self.all_fees() / (self.charges as u128 * u128::from(self.requests_per_voucher))
    }
    fn add(&mut self, other: &Measured) {
        self.messages += other.messages;
        self.ext_bytes = self.ext_bytes.max(other.ext_bytes);
        self.wallet_fees += other.wallet_fees;
        self.wallet_gas += other.wallet_gas;
        self.wallet_action += other.wallet_action;
        self.wallet_storage += other.wallet_storage;
        self.charge_fwd += other.charge_fwd;
        self.escrow_fees += other.escrow_fees;
        self.escrow_storage += other.escrow_storage;
        self.payout_fwd += other.payout_fwd;
        self.payout_fees += other.payout_fees;
        self.escrow_gas += other.escrow_gas;
        self.charges += other.charges;
        self.settled += other.settled;
        self.operator_cost += other.operator_cost;
    }
}

/// A transaction's phases: storage fee, whether the compute phase ran, its gas fee, and
/// the action phase's fees (the part of the forwarding fees the sender's side keeps).
struct Phases {
    storage: u128,
    computed: bool,
    gas: u128,
    action: u128,
}

fn phases(tx: &TxSummary) -> Res<Phases> {
    let parsed = tx.transaction.parse::<Transaction>()?;
    let TxInfo::Ordinary(info) = parsed.load_info()? else {
        return Err("not an ordinary transaction".into());
    };
    let (computed, gas) = match &info.compute_phase {
        ComputePhase::Executed(phase) => (true, phase.gas_fees.into_inner()),
        ComputePhase::Skipped(_) => (false, 0),
    };
    Ok(Phases {
        storage: info
            .storage_phase
            .map(|s| s.storage_fees_collected.into_inner())
            .unwrap_or(0),
        computed,
        gas,
        action: info
            .action_phase
            .and_then(|a| a.total_action_fees)
            .map(|t| t.into_inner())
            .unwrap_or(0),
    })
}

fn balance(chain: &LocalChain, addr: &StdAddr) -> Res<u128> {
    Ok(chain.account(addr)?.balance)
}

fn guest_state(chain: &LocalChain, escrow: &StdAddr, key: &[u8; 32]) -> Res<(u64, u128)> {
    let arg = StackValue::Int(num_bigint::BigInt::from_bytes_be(
        num_bigint::Sign::Plus,
        key,
    ));
    let r = chain.run_get_method(escrow, "get_guest", &[arg])?;
    ensure(r.success(), || format!("get_guest exit {}", r.exit_code))?;
    let n = |i: usize| {
        r.stack
            .get(i)
            .and_then(StackValue::as_u128)
            .ok_or("get_guest stack")
    };
    Ok((n(0)? as u64, n(1)?))
}

fn wallet_seqno(chain: &LocalChain, wallet: &Wallet) -> Res<u32> {
    let r = chain.run_get_method(&wallet.address(), "seqno", &[])?;
    ensure(r.success(), || format!("seqno exit {}", r.exit_code))?;
    Ok(r.stack
        .first()
        .and_then(StackValue::as_u128)
        .ok_or("seqno stack")? as u32)
}

impl Setup {
    fn new() -> Res<Self> {
        let mut chain = LocalChain::with_default_config()?;
        chain.set_now(NOW)?;
        let wallet = Wallet::from_seed(&[0x0e; 32], Network::Local)?;
        chain.airdrop(&wallet.address(), 1_000 * TON)?;
        let guest = seeded_key(0x60, 0)?;
        let payout = StdAddr::new(0, [0xfa; 32].into());
        let funder = StdAddr::new(0, [0xc1; 32].into());
        let code = cocoon_billing::escrow_code();
        let mut clients = Vec::with_capacity(ESCROWS);
        for i in 0..ESCROWS {
            let owner = seeded_key(0x0a, i)?;
            let data = EscrowData::initial(layout::public_key(&owner), CLOSE_DELAY, PRICES);
            let init = escrow_state_init(&code, &data)?;
            let escrow = layout::state_init_address(&init)?;
            let send = |chain: &mut LocalChain, body: Cell, init| -> Res<()> {
                let txs = chain.send_internal(InternalMessage {
                    src: funder.clone(),
                    dest: escrow.clone(),
                    value: 10 * TON,
                    bounce: true,
                    body: Some(body),
                    state_init: init,
                })?;
                ensure(txs.first().is_some_and(|t| t.success), || {
                    format!("escrow {i} setup: {:?}", txs.first().map(|t| t.exit_code))
                })
            };
            // Deploy with a top_up carrying the StateInit; then the owner sets a stake.
            send(
                &mut chain,
                TopUp { query_id: i as u64 }.to_cell()?,
                Some(init),
            )?;
            let stake = OwnerRequest {
                escrow: escrow.clone(),
                seqno: 0,
                valid_until: chain.now() + 60,
                action: OwnerAction::SetStake { stake: 5 * TON },
            }
            .sign(&owner, i as u64)?
            .to_cell()?;
            send(&mut chain, stake, None)?;
            let authorization = Authorization {
                escrow: escrow.clone(),
                guest_key: layout::public_key(&guest),
                cap: 1_000 * TON,
                expires_at: NOW + 30 * 86_400,
            }
            .sign(&owner)?;
            clients.push(Client {
                escrow,
                authorization,
                seq: 0,
                tokens: TokenCounts {
                    prompt: 0,
                    cached: 0,
                    completion: 0,
                },
                charged: 0,
            });
        }
        // Deploy the wallet (its first transfer carries the StateInit), outside the
        // measurements.
        let mut setup = Self {
            chain,
            wallet,
            seqno: 0,
            guest,
            payout,
            clients,
        };
        let boc = setup.wallet.external_transfer(
            0,
            setup.chain.now() + MESSAGE_TTL,
            &[OutMessage {
                dest: funder,
                value: TON / 100,
                bounce: false,
                body: None,
                state_init: None,
            }],
        )?;
        let txs = setup.chain.send_external(&boc)?;
        ensure(txs.first().is_some_and(|t| t.success), || {
            "wallet deploy failed".into()
        })?;
        setup.seqno = 1;
        Ok(setup)
    }

    /// The guest serves `requests` more requests to client `i` and signs the voucher of its
    /// new cumulative counts; returns the charge message as the host agent builds it, and
    /// the delta it moves.
    fn serve_and_charge(
        &mut self,
        i: usize,
        requests: u64,
        position: usize,
    ) -> Res<(OutMessage, u128)> {
        let guest_key = layout::public_key(&self.guest);
        let (prompt, cached, completion) = request_tokens(i);
        let client = &mut self.clients[i];
        client.seq += requests;
        client.tokens.prompt += prompt * requests;
        client.tokens.cached += cached * requests;
        client.tokens.completion += completion * requests;
        let voucher = Voucher {
            escrow: client.escrow.clone(),
            guest_key,
            seq: client.seq,
            tokens: client.tokens,
            payout: self.payout.clone(),
            // A distinct tree head per voucher, as the guest's would be.
            commitment: ReceiptCommitment {
                receipts_root: receipts_root_stand_in(i, client.seq),
                model: [0x3C; 32],
            },
        }
        .sign(&self.guest)?;
        let charged_new = layout::charge_for(
            &PRICES,
            client.tokens.prompt,
            client.tokens.cached,
            client.tokens.completion,
        );
        ensure(voucher.voucher.charge(&PRICES) == charged_new, || {
            "Voucher::charge and charge_for differ".into()
        })?;
        let delta = charged_new - client.charged;
        // As the settler's charge_body: the stored voucher and authorization BoCs.
        let body = Charge {
            query_id: u64::from(self.seqno) << 8 | position as u64,
            is_final: false,
            voucher,
            authorization: client.authorization.clone(),
        }
        .to_cell()?;
        Ok((
            OutMessage {
                dest: client.escrow.clone(),
                value: CHARGE_VALUE,
                bounce: true,
                body: Some(body),
                state_init: None,
            },
            delta,
        ))
    }

    /// The charges of one wallet message over clients `first..first + batch`.
    fn build(
        &mut self,
        first: usize,
        batch: usize,
        requests: u64,
    ) -> Res<(Vec<OutMessage>, Vec<u128>)> {
        let mut messages = Vec::with_capacity(batch);
        let mut deltas = Vec::with_capacity(batch);
        for position in 0..batch {
            let (message, delta) = self.serve_and_charge(first + position, requests, position)?;
            messages.push(message);
            deltas.push(delta);
        }
        Ok((messages, deltas))
    }

    /// Sends one wallet message charging clients `first..first + batch`, `requests` new
    /// requests each, and accounts for every nanoton.
    fn settle(&mut self, first: usize, batch: usize, requests: u64) -> Res<Measured> {
        self.chain.advance(POLL)?;
        let (messages, deltas) = self.build(first, batch, requests)?;
        let boc =
            self.wallet
                .external_transfer(self.seqno, self.chain.now() + MESSAGE_TTL, &messages)?;
        let me = self.wallet.address();
        let escrows: Vec<StdAddr> = messages.iter().map(|m| m.dest.clone()).collect();
        let wallet_before = balance(&self.chain, &me)?;
        let payout_before = balance(&self.chain, &self.payout)?;
        let escrows_before = escrows
            .iter()
            .map(|e| balance(&self.chain, e))
            .collect::<Res<Vec<_>>>()?;

        let txs = self.chain.send_external(&boc)?;
        self.seqno += 1;
        ensure(
            wallet_seqno(&self.chain, &self.wallet)? == self.seqno,
            || "the wallet's seqno did not move".into(),
        )?;

        let mut m = Measured {
            batch,
            requests_per_voucher: requests,
            messages: 1,
            ext_bytes: boc.len(),
            charges: batch,
            settled: deltas.iter().sum(),
            ..Measured::default()
        };
        ensure(txs.len() == 1 + 2 * batch, || {
            format!("{} transactions for {batch} charges", txs.len())
        })?;
        for tx in &txs {
            // Every transaction balances: before + in − fees − sent = after.
            let sent: u128 = tx.out_messages.iter().map(|o| o.value + o.fwd_fee).sum();
            ensure(
                tx.balance_before + tx.in_value == tx.balance_after + tx.total_fees + sent,
                || format!("transaction of {} does not balance: {tx:#?}", tx.account),
            )?;
            let out_fwd: u128 = tx.out_messages.iter().map(|o| o.fwd_fee).sum();
            if tx.account == me {
                ensure(tx.in_external && tx.success, || {
                    format!("wallet transaction failed: {tx:#?}")
                })?;
                ensure(tx.out_messages.len() == batch, || {
                    format!("the wallet sent {} of {batch}", tx.out_messages.len())
                })?;
                m.wallet_fees += tx.total_fees;
                let p = phases(tx)?;
                m.wallet_gas += p.gas;
                m.wallet_action += p.action;
                m.wallet_storage += p.storage;
                m.charge_fwd += out_fwd;
            } else if tx.account == self.payout {
                ensure(!phases(tx)?.computed, || {
                    "the payout address ran code".into()
                })?;
                m.payout_fees += tx.total_fees;
            } else if let Some(k) = escrows.iter().position(|e| e == &tx.account) {
                ensure(tx.success && tx.exit_code == Some(0), || {
                    format!("charge {k} refused: exit {:?}", tx.exit_code)
                })?;
                let storage = phases(tx)?.storage;
                m.escrow_storage += storage;
                m.escrow_fees += tx.total_fees - storage;
                m.payout_fwd += out_fwd;
                m.escrow_gas += tx.gas_used;
                // Exactly the delta (and its own storage) leaves the escrow.
                let after = balance(&self.chain, &tx.account)?;
                let lost = escrows_before[k] - after;
                ensure(lost == deltas[k] + storage, || {
                    format!(
                        "escrow {k} lost {lost}, the voucher's delta is {} (+ storage {storage})",
                        deltas[k]
                    )
                })?;
            } else {
                return Err(format!("unexpected transaction of {}", tx.account).into());
            }
        }
        // The escrows record the vouchers.
        let guest_key = layout::public_key(&self.guest);
        for (k, delta) in deltas.iter().enumerate() {
            let client = &mut self.clients[first + k];
            let (seq, charged) = guest_state(&self.chain, &client.escrow, &guest_key)?;
            ensure(
                seq == client.seq && charged == client.charged + delta,
                || format!("escrow {k}: get_guest says ({seq}, {charged})"),
            )?;
            client.charged = charged;
        }
        // Balances: the wallet paid the attached values and its fees; the payout got the
        // deltas and the unused values; everyone's losses are the fees.
        let wallet_lost = wallet_before - balance(&self.chain, &me)?;
        let payout_gained = balance(&self.chain, &self.payout)? - payout_before;
        let escrows_lost = escrows
            .iter()
            .zip(&escrows_before)
            .map(|(e, before)| balance(&self.chain, e).map(|after| before - after))
            .sum::<Res<u128>>()?;
        let attached = CHARGE_VALUE * batch as u128;
        ensure(
            wallet_lost == attached + m.wallet_fees + m.charge_fwd,
            || format!("the wallet lost {wallet_lost}: {attached} attached + fees {m:?}"),
        )?;
        ensure(
            payout_gained + m.escrow_fees + m.payout_fwd + m.payout_fees == m.settled + attached,
            || {
                format!(
                    "the payout gained {payout_gained}, charges {} ({m:?})",
                    m.settled
                )
            },
        )?;
        ensure(
            wallet_lost + escrows_lost == payout_gained + m.all_fees(),
            || {
                format!("money not conserved: wallet −{wallet_lost}, escrows −{escrows_lost}, payout +{payout_gained}, fees {}", m.all_fees())
            },
        )?;
        m.operator_cost = wallet_lost - (payout_gained - m.settled);
        ensure(m.operator_cost == m.all_fees() - m.escrow_storage, || {
            "the operator's cost is not the fees".into()
        })?;
        Ok(m)
    }

    /// The largest number of charges whose wallet message fits an external message, checked
    /// on the chain at the cap and one above (without changing any state: sizes only, then
    /// one real send at the cap).
    fn find_cap(&mut self) -> Res<(usize, usize, usize)> {
        let mut size = |batch: usize| -> Res<usize> {
            // Built on a copy of the client counters: nothing is settled here.
            let saved: Vec<(u64, TokenCounts)> =
                self.clients.iter().map(|c| (c.seq, c.tokens)).collect();
            let built = self.build(0, batch, 1);
            for (client, (seq, tokens)) in self.clients.iter_mut().zip(saved) {
                client.seq = seq;
                client.tokens = tokens;
            }
            let boc = self.wallet.external_transfer(self.seqno, NOW, &built?.0)?;
            Ok(boc.len())
        };
        // The size grows with the batch: the largest batch that fits, by bisection.
        if size(ESCROWS)? <= MAX_EXT_MSG_BYTES {
            let full = size(ESCROWS)?;
            return Ok((ESCROWS, full, 0));
        }
        let (mut lo, mut hi) = (1usize, ESCROWS);
        ensure(size(lo)? <= MAX_EXT_MSG_BYTES, || {
            "one charge does not fit".into()
        })?;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if size(mid)? <= MAX_EXT_MSG_BYTES {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok((lo, size(lo)?, size(hi)?))
    }
}

/// `max_ext_msg_size` of config param 43 and where it came from. Read by hand: mainnet's
/// `size_limits_config_v2#02` is longer than what `tycho-types` 0.3.6 parses; both versions
/// start `tag:uint8 max_msg_bits:uint32 max_msg_cells:uint32 max_library_cells:uint32
/// max_vm_data_depth:uint16 max_ext_msg_size:uint32`. Without the parameter (the committed
/// fixture has none) validators, and `tycho-executor`, use the default, 65535.
fn max_ext_msg_size(chain: &LocalChain) -> Res<(u32, &'static str)> {
    let Some(mut slice) = chain.config().params.get_raw(43)? else {
        return Ok((
            ParsedConfig::DEFAULT_SIZE_LIMITS_CONFIG.max_ext_msg_size,
            "the default size limits (the config has no param 43)",
        ));
    };
    let tag = slice.load_u8()?;
    ensure(tag == 1 || tag == 2, || {
        format!("config param 43 tag {tag}")
    })?;
    slice.skip_first(32 * 3 + 16, 0)?;
    Ok((slice.load_u32()?, "config param 43"))
}

fn ratio(ours: u128) -> String {
    if ours == 0 {
        return "-".into();
    }
    format!("1/{:.1}", COCOON_CHARGE as f64 / ours as f64)
}

fn main() -> Res<()> {
    let started = std::time::Instant::now();
    let mut s = Setup::new()?;
    println!(
        "settlement gas on the local chain (tycho-executor, committed mainnet config), wallet v5r1 {}",
        s.wallet.address()
    );
    println!(
        "{} escrows (distinct owner keys, 10 TON, stake 5 TON), one guest key; charge value \
         {CHARGE_VALUE} nanoTON (the agent's default); a request = {}/{}/{} prompt/cached/completion \
         tokens = {} nanoTON (client 0; +1 prompt and completion token per client index) at \
         {}/{}/{} nanoTON per million",
        s.clients.len(),
        request_tokens(0).0,
        request_tokens(0).1,
        request_tokens(0).2,
        layout::charge_for(&PRICES, request_tokens(0).0, request_tokens(0).1, request_tokens(0).2),
        PRICES.prompt_per_million,
        PRICES.cached_per_million,
        PRICES.completion_per_million,
    );

    // The real cap of one wallet message: the config's external message size limit.
    let (config_limit, limit_source) = max_ext_msg_size(&s.chain)?;
    ensure(config_limit as usize == MAX_EXT_MSG_BYTES, || {
        format!("{limit_source}: max_ext_msg_size {config_limit}, not {MAX_EXT_MSG_BYTES}")
    })?;
    let (cap, cap_bytes, over_bytes) = s.find_cap()?;

    // First voucher of every key (the guests dictionary gains an entry): one message of 100
    // reported apart, the other keys unreported; from then on the steady state, a key's
    // next voucher.
    let first = s.settle(0, 100, 1)?;
    let mut warm = 100;
    while warm < ESCROWS {
        let batch = (ESCROWS - warm).min(cap);
        s.settle(warm, batch, 1)?;
        warm += batch;
    }

    let mut rows: Vec<(String, Measured)> = Vec::new();
    rows.push(("first voucher of each key".into(), first));
    let mut cursor = 0usize;
    for batch in BATCHES {
        for requests in REQUESTS {
            let m = s.settle(cursor % (ESCROWS - batch + 1), batch, requests)?;
            cursor += batch;
            rows.push((String::new(), m));
        }
    }
    // COCOON-like naive peer: one charge per request, one wallet message per charge
    // (batch 1, R 1), ten times over.
    let mut naive = Measured {
        batch: 1,
        requests_per_voucher: 1,
        ..Measured::default()
    };
    for i in 0..10 {
        let m = s.settle(200 + i, 1, 1)?;
        naive.add(&m);
    }
    rows.push(("naive: 1 message per request (x10)".into(), naive.clone()));
    // The cap itself, sent.
    let at_cap = s.settle(0, cap, 10)?;
    rows.push((format!("the cap ({cap} charges)"), at_cap));
    // One more does not fit: the chain refuses it (max_ext_msg_size, 64 KiB).
    if cap < ESCROWS {
        let saved: Vec<(u64, TokenCounts)> = s.clients.iter().map(|c| (c.seq, c.tokens)).collect();
        let built = s.build(0, cap + 1, 1);
        for (client, (seq, tokens)) in s.clients.iter_mut().zip(saved) {
            client.seq = seq;
            client.tokens = tokens;
        }
        let boc = s
            .wallet
            .external_transfer(s.seqno, s.chain.now() + MESSAGE_TTL, &built?.0)?;
        let refused = s.chain.send_external(&boc);
        ensure(
            matches!(refused, Err(cocoon_billing::Error::BocTooLarge { .. })),
            || format!("{} charges ({} bytes): {refused:?}", cap + 1, boc.len()),
        )?;
    }

    let mut out = String::new();
    writeln!(
        out,
        "\n{:>5} {:>4} {:>6} | {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} | {:>11} {:>11} {:>10} | {:>9} {:>9}  note",
        "batch", "R", "bytes", "wallet tx", "charge fwd", "escrow txs", "payout fwd", "payout", "storage",
        "/message", "/charge", "/request", "vs COCOON", "fee%"
    )?;
    for (note, m) in &rows {
        let per_msg = |v: u128| v / m.messages as u128;
        writeln!(
            out,
            "{:>5} {:>4} {:>6} | {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} | {:>11} {:>11} {:>10} | {:>9} {:>8.2}%  {}",
            m.batch,
            m.requests_per_voucher,
            m.ext_bytes,
            per_msg(m.wallet_fees),
            per_msg(m.charge_fwd),
            per_msg(m.escrow_fees),
            per_msg(m.payout_fwd),
            per_msg(m.payout_fees),
            per_msg(m.escrow_storage),
            m.per_message(),
            m.per_charge(),
            m.per_request(),
            ratio(m.per_request()),
            100.0 * m.all_fees() as f64 / m.settled as f64,
            note,
        )?;
    }
    print!("{out}");
    println!(
        "(nanoTON; columns wallet tx .. storage are per message: the wallet's transaction \
         (external import, gas, action fees), forwarding fees of the charge messages, the \
         escrows' gas and action fees, forwarding of the payout messages, the payout \
         address's transactions, the escrows' storage; fee%: fees as a share of what \
         was settled. Every nanoton is checked against the balances.)"
    );
    println!(
        "reference: COCOON charge ≈ 0.011 TON = {COCOON_CHARGE} nanoTON per charge operation, \
         one per request in the naive configuration; \"vs COCOON\" = ours per request against it"
    );
    for (note, m) in &rows {
        if note.is_empty() && m.requests_per_voucher == 10 {
            let c = m.charges as u128;
            println!(
                "batch {:>3}, per charge: wallet transaction {} = import of the external message {} \
                 + gas {} + action fees {} + storage {}; charge forwarding {}; escrow {} \
                 ({} gas); payout forwarding {}",
                m.batch,
                m.wallet_fees / c,
                (m.wallet_fees - m.wallet_gas - m.wallet_action - m.wallet_storage) / c,
                m.wallet_gas / c,
                m.wallet_action / c,
                m.wallet_storage / c,
                m.charge_fwd / c,
                m.escrow_fees / c,
                m.escrow_gas / c as u64,
                m.payout_fwd / c,
            );
        }
    }
    let naive_per_charge = naive.per_charge();
    for batch in BATCHES {
        let pick = |r: u64| {
            rows.iter()
                .find(|(n, m)| n.is_empty() && m.batch == batch && m.requests_per_voucher == r)
                .map(|(_, m)| m)
        };
        let Some(m10) = pick(10) else { continue };
        let per_request = |r: u64| pick(r).map(|m| m.per_request()).unwrap_or(0);
        println!(
            "batch {batch}: {} nanoTON/message, {} nanoTON/charge, {} nanoTON/request at R=10 \
             ({} at R=1, {} at R=100); ratio vs COCOON 0.011 TON/charge: {} per charge, {} per request at R=10",
            m10.per_message(),
            m10.per_charge(),
            m10.per_request(),
            per_request(1),
            per_request(100),
            ratio(m10.per_charge()),
            ratio(m10.per_request()),
        );
    }
    println!(
        "naive (batch 1, R 1, one message per request): {naive_per_charge} nanoTON/request, \
         ratio vs COCOON: {}",
        ratio(naive_per_charge)
    );
    println!(
        "wallet v5r1 cap: {cap} charges per message ({cap_bytes} bytes; {} charges would be \
         {over_bytes} bytes, above the {MAX_EXT_MSG_BYTES}-byte external message limit of \
         {limit_source}, refused by the chain); the action list allows {MAX_MESSAGES}",
        cap + 1
    );
    println!(
        "all conservation checks passed; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A stand-in for the guest's receipts tree head of client `i` at `seq`: distinct per
/// voucher (so no cell is shared between charges), the size of a real one.
fn receipts_root_stand_in(i: usize, seq: u64) -> [u8; 32] {
    let mut input = (i as u64).to_be_bytes().to_vec();
    input.extend_from_slice(&seq.to_be_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut root = [0u8; 32];
    root.copy_from_slice(digest.as_ref());
    root
}
