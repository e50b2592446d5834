//! The committed escrow code (`billing/contracts/build/escrow.boc`) on the local chain
//! (tycho-executor): the cells `layout` builds are the ones the contract accepts, and its
//! exit codes, balances and refunds are those PROTOCOL.md names. The JS development tests
//! (`billing/contracts/tests`, `make contracts-test`) cover every check on @ton/sandbox; this
//! is the path the Rust side relies on: deploy, stake, charge, replay, close, refund.
//!
//! Run: `cargo test -p cocoon-billing --features local-chain --test escrow_contract`.
#![cfg(feature = "local-chain")]

use cocoon_billing::layout::{
    self, Authorization, CellLayout, Charge, EscrowData, ExitCode, OwnerAction, OwnerRequest,
    Prices, ReceiptCommitment, Refund, SignedVoucher, TokenCounts, TopUp, Voucher, STORAGE_RESERVE,
};
use cocoon_billing::local_chain::{InternalMessage, LocalChain, StackValue, TxSummary};
use ring::signature::Ed25519KeyPair;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::StdAddr;

const CODE_BOC: &[u8] = include_bytes!("../contracts/build/escrow.boc");
const CODE_HASH: &str = include_str!("../contracts/build/escrow.code-hash");
const TON: u128 = 1_000_000_000;
const T0: u32 = 1_800_000_000;
const CLOSE_DELAY: u32 = 3600;
const PRICES: Prices = Prices {
    prompt_per_million: 100_000_007,
    cached_per_million: 10_000_003,
    completion_per_million: 400_000_009,
};

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
}

fn wallet(byte: u8) -> StdAddr {
    StdAddr::new(0, HashBytes([byte; 32]))
}

struct Setup {
    chain: LocalChain,
    owner: Ed25519KeyPair,
    guest: Ed25519KeyPair,
    escrow: StdAddr,
    client: StdAddr,
    operator: StdAddr,
    payout: StdAddr,
    refund_to: StdAddr,
    owner_seqno: u32,
}

impl Setup {
    fn new(deposit: u128) -> Self {
        let code = Boc::decode(CODE_BOC).expect("code BoC");
        assert_eq!(
            code.repr_hash().to_string(),
            CODE_HASH.trim(),
            "escrow.code-hash is not the hash of escrow.boc"
        );
        let owner = key(1);
        let guest = key(2);
        let data = EscrowData::initial(layout::public_key(&owner), CLOSE_DELAY, PRICES);
        let state_init = layout::escrow_state_init(&code, &data).expect("state init");
        let escrow = layout::state_init_address(&state_init).expect("address");
        let mut chain = LocalChain::with_default_config().expect("chain");
        chain.set_now(T0).expect("clock");
        let mut setup = Self {
            chain,
            owner,
            guest,
            escrow: escrow.clone(),
            client: wallet(0x11),
            operator: wallet(0x22),
            payout: wallet(0x33),
            refund_to: wallet(0x44),
            owner_seqno: 0,
        };
        for addr in [
            &setup.client,
            &setup.operator,
            &setup.payout,
            &setup.refund_to,
        ] {
            setup.chain.airdrop(addr, 1_000 * TON).expect("airdrop");
        }
        let txs = setup
            .chain
            .send_internal(InternalMessage {
                src: setup.client.clone(),
                dest: escrow,
                value: deposit,
                bounce: true,
                body: Some(TopUp { query_id: 1 }.to_cell().expect("top_up")),
                state_init: Some(state_init),
            })
            .expect("deploy");
        assert_eq!(setup.at_escrow(&txs).exit_code, Some(0), "deploy");
        setup
    }

    fn at_escrow<'a>(&self, txs: &'a [TxSummary]) -> &'a TxSummary {
        txs.iter()
            .find(|tx| tx.account == self.escrow)
            .expect("a transaction at the escrow")
    }

    fn send(&mut self, from: StdAddr, value: u128, body: Cell) -> TxSummary {
        let txs = self
            .chain
            .send_internal(InternalMessage {
                src: from,
                dest: self.escrow.clone(),
                value,
                bounce: true,
                body: Some(body),
                state_init: None,
            })
            .expect("send");
        self.at_escrow(&txs).clone()
    }

    fn owner_request(&mut self, action: OwnerAction) -> TxSummary {
        let body = OwnerRequest {
            escrow: self.escrow.clone(),
            seqno: self.owner_seqno,
            valid_until: self.chain.now() + 300,
            action,
        }
        .sign(&self.owner, 9)
        .expect("sign")
        .to_cell()
        .expect("owner body");
        let tx = self.send(self.client.clone(), TON / 20, body);
        if tx.exit_code == Some(0) {
            self.owner_seqno += 1;
        }
        tx
    }

    fn charge(&mut self, seq: u64, tokens: TokenCounts, is_final: bool) -> TxSummary {
        let voucher = self.voucher(seq, tokens, [seq as u8; 32]);
        self.send_charge(voucher, is_final)
    }

    /// The guest's voucher for `seq` with `tokens`, committing to `receipts_root`.
    fn voucher(&self, seq: u64, tokens: TokenCounts, receipts_root: [u8; 32]) -> SignedVoucher {
        Voucher {
            escrow: self.escrow.clone(),
            guest_key: layout::public_key(&self.guest),
            seq,
            tokens,
            payout: self.payout.clone(),
            commitment: ReceiptCommitment {
                receipts_root,
                model: [0x3C; 32],
            },
        }
        .sign(&self.guest)
        .expect("voucher")
    }

    fn send_charge(&mut self, voucher: SignedVoucher, is_final: bool) -> TxSummary {
        let authorization = Authorization {
            escrow: self.escrow.clone(),
            guest_key: voucher.voucher.guest_key,
            cap: 5 * TON,
            expires_at: T0 + 86_400,
        }
        .sign(&self.owner)
        .expect("authorization");
        let body = Charge {
            query_id: 7,
            is_final,
            voucher,
            authorization,
        }
        .to_cell()
        .expect("charge body");
        self.send(self.operator.clone(), TON / 20, body)
    }

    /// `get_commitment(guest key)`: (seq, charged, receipts root).
    fn commitment(&self) -> (u64, u128, [u8; 32]) {
        let key = StackValue::Int(num_bigint::BigInt::from_bytes_be(
            num_bigint::Sign::Plus,
            &layout::public_key(&self.guest),
        ));
        let result = self
            .chain
            .run_get_method(&self.escrow, "get_commitment", &[key])
            .expect("get method");
        assert!(
            result.success(),
            "get_commitment: exit {}",
            result.exit_code
        );
        let seq = result.stack[0].as_u128().expect("seq");
        let charged = result.stack[1].as_u128().expect("charged");
        let (sign, bytes) = result.stack[2].as_int().expect("root").to_bytes_be();
        assert_ne!(sign, num_bigint::Sign::Minus);
        let mut root = [0u8; 32];
        root[32 - bytes.len()..].copy_from_slice(&bytes);
        (u64::try_from(seq).expect("seq"), charged, root)
    }

    fn balance(&self) -> u128 {
        self.chain.account(&self.escrow).expect("account").balance
    }

    fn get(&self, method: &str, args: &[StackValue]) -> Vec<u128> {
        let result = self
            .chain
            .run_get_method(&self.escrow, method, args)
            .expect("get method");
        assert!(result.success(), "{method}: exit {}", result.exit_code);
        result
            .stack
            .iter()
            .map(|v| v.as_u128().expect("a non-negative integer"))
            .collect()
    }

    fn stored(&self) -> EscrowData {
        let data = self.chain.account(&self.escrow).expect("account").data;
        EscrowData::from_cell(&data.expect("active")).expect("EscrowData")
    }
}

fn code(exit: ExitCode) -> Option<i32> {
    Some(exit.code())
}

#[test]
fn billing_escrow_contract_charges_closes_and_refunds_everything() {
    let mut s = Setup::new(10 * TON);
    let prices = s.get("get_prices", &[]);
    assert_eq!(
        prices,
        vec![
            u128::from(PRICES.prompt_per_million),
            u128::from(PRICES.cached_per_million),
            u128::from(PRICES.completion_per_million)
        ]
    );

    // stake: only up
    assert_eq!(
        s.owner_request(OwnerAction::SetStake { stake: 2 * TON })
            .exit_code,
        Some(0)
    );
    assert_eq!(
        s.owner_request(OwnerAction::SetStake { stake: TON })
            .exit_code,
        code(ExitCode::StakeDecrease)
    );

    // a charge pays exactly the delta out of the escrow
    let tokens = TokenCounts {
        prompt: 1000,
        cached: 200,
        completion: 500,
    };
    let before = s.balance();
    let tx = s.charge(1, tokens, false);
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(tx.action_result_code, Some(0));
    let delta = layout::charge_for(&PRICES, 1000, 200, 500);
    assert_eq!(before - s.balance(), delta);
    assert_eq!(tx.out_messages.len(), 1);
    assert_eq!(tx.out_messages[0].dest.as_ref(), Some(&s.payout));
    assert!(!tx.out_messages[0].bounce);
    let payout = layout::Payout::from_cell(&tx.out_messages[0].body).expect("payout body");
    assert_eq!(payout.owner, layout::public_key(&s.owner));
    println!("escrow charge on the local chain: gas {}", tx.gas_used);

    // the stored data is PROTOCOL.md's EscrowData, and get_guest agrees
    let stored = s.stored();
    let guest_key = layout::public_key(&s.guest);
    assert_eq!(stored.guests[&guest_key].seq, 1);
    assert_eq!(stored.guests[&guest_key].charged, delta);
    assert_eq!(stored.total_charged, delta);
    assert_eq!(stored.stake, 2 * TON);
    let key_int = StackValue::Int(num_bigint::BigInt::from_bytes_be(
        num_bigint::Sign::Plus,
        &guest_key,
    ));
    assert_eq!(s.get("get_guest", &[key_int]), vec![1, delta]);

    // replay
    assert_eq!(
        s.charge(1, tokens, false).exit_code,
        code(ExitCode::VoucherNotNewer)
    );

    // close: everything above stake + reserve at once; refund only from unlock_at
    assert_eq!(
        s.owner_request(OwnerAction::RequestClose {
            refund_to: s.refund_to.clone()
        })
        .exit_code,
        Some(0)
    );
    assert_eq!(s.balance(), 2 * TON + STORAGE_RESERVE);
    assert_eq!(s.stored().unlock_at, T0 + CLOSE_DELAY);
    let refund = Refund { query_id: 3 }.to_cell().expect("refund");
    s.chain.set_now(T0 + CLOSE_DELAY - 1).expect("clock");
    assert_eq!(
        s.send(s.operator.clone(), TON / 20, refund.clone())
            .exit_code,
        code(ExitCode::NotUnlocked)
    );
    s.chain.set_now(T0 + CLOSE_DELAY).expect("clock");
    let tx = s.send(s.operator.clone(), TON / 20, refund);
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(tx.action_result_code, Some(0));
    assert_eq!(tx.out_messages.len(), 1);
    assert_eq!(tx.out_messages[0].dest.as_ref(), Some(&s.refund_to));
    // stake and storage reserve included, plus the refund message's leftover value
    assert!(tx.out_messages[0].value > 2 * TON + STORAGE_RESERVE - TON / 100);
    assert_eq!(s.balance(), 0);

    // the escrow stays, open again, and remembers what it paid
    let stored = s.stored();
    assert_eq!(
        (stored.stake, stored.unlock_at, stored.refund_to),
        (0, 0, None)
    );
    assert_eq!(stored.guests[&guest_key].seq, 1);
    let tx = s.send(
        s.client.clone(),
        TON,
        TopUp { query_id: 4 }.to_cell().unwrap(),
    );
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(
        s.charge(1, tokens, false).exit_code,
        code(ExitCode::VoucherNotNewer)
    );
}

/// The receipts root a voucher commits to is what the escrow records for its key, and a
/// root the guest did not sign (the operator's own) is refused like any forged voucher.
#[test]
fn billing_escrow_onchain_commitment_recorded_and_foreign_root_refused() {
    let mut s = Setup::new(3 * TON);
    assert_eq!(s.commitment(), (0, 0, [0; 32]), "unknown key");
    let tokens = TokenCounts {
        prompt: 1_000,
        cached: 0,
        completion: 500,
    };
    let signed = s.voucher(1, tokens, [0xAB; 32]);
    let charged = signed.voucher.charge(&PRICES);
    // The operator swaps in a root of its own choosing: the guest's signature no longer holds.
    let mut swapped = signed.clone();
    swapped.voucher.commitment.receipts_root = [0xCD; 32];
    assert_eq!(
        s.send_charge(swapped, false).exit_code,
        code(ExitCode::BadVoucherSignature)
    );
    let mut other_model = signed.clone();
    other_model.voucher.commitment.model = [0x00; 32];
    assert_eq!(
        s.send_charge(other_model, false).exit_code,
        code(ExitCode::BadVoucherSignature)
    );
    assert_eq!(
        s.commitment(),
        (0, 0, [0; 32]),
        "nothing recorded by refusals"
    );
    let tx = s.send_charge(signed, false);
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(s.commitment(), (1, charged, [0xAB; 32]));
    // The next voucher's root replaces it (each covers receipts 1..seq).
    let more = TokenCounts {
        prompt: 2_000,
        cached: 0,
        completion: 900,
    };
    let next = s.voucher(2, more, [0xEF; 32]);
    let charged = next.voucher.charge(&PRICES);
    assert_eq!(s.send_charge(next, false).exit_code, Some(0));
    assert_eq!(s.commitment(), (2, charged, [0xEF; 32]));
    assert_eq!(
        s.stored().guests[&layout::public_key(&s.guest)].receipts_root,
        [0xEF; 32]
    );
}
