//! The escrow contract's behaviour (`billing/PROTOCOL.md`), run as real compiled bytecode
//! (`contracts/build/escrow.boc`) in the in-process chain with the mainnet fee config:
//! every check and exit code of a charge, the owner's operations, closing and refunds,
//! and where every nanoton goes.
#![cfg(feature = "local-chain")]

use cocoon_billing::address::{Cell, StdAddr};
use cocoon_billing::layout::{
    escrow_state_init, Authorization, CellLayout, Charge, EscrowData, ExitCode, OwnerAction,
    OwnerRequest, Prices, ReceiptCommitment, Refund, SignedAuthorization, SignedVoucher,
    TokenCounts, TopUp, Voucher, STORAGE_RESERVE,
};
use cocoon_billing::local_chain::{InternalMessage, LocalChain, StackValue, TxSummary};
use ring::signature::Ed25519KeyPair;
use tycho_types::cell::CellFamily as _;

const TON: u128 = 1_000_000_000;
const DELAY: u32 = 3_600;
/// Gas attached to each charge (what the operator's wallet sends along).
const CHARGE_VALUE: u128 = TON / 20;

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn pk(key: &Ed25519KeyPair) -> [u8; 32] {
    cocoon_billing::layout::public_key(key)
}

fn addr(byte: u8) -> StdAddr {
    StdAddr::new(0, [byte; 32].into())
}

const PRICES: Prices = Prices {
    prompt_per_million: 1_000_000_000,
    cached_per_million: 100_000_000,
    completion_per_million: 3_000_000_000,
};

/// One client's escrow with one authorized guest, on a fresh chain.
struct Bench {
    chain: LocalChain,
    owner: Ed25519KeyPair,
    guest: Ed25519KeyPair,
    escrow: StdAddr,
    /// The client's wallet (sends deposits), the operator's wallet (sends charges), and
    /// the guest's payout address.
    client: StdAddr,
    operator: StdAddr,
    payout: StdAddr,
    query: u64,
}

/// What the escrow's `get_escrow` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EscrowView {
    balance: u128,
    stake: u128,
    total_charged: u128,
    owner_seqno: u32,
    unlock_at: u32,
}

impl Bench {
    fn new() -> Self {
        let mut chain = LocalChain::with_default_config().unwrap();
        let owner = key(1);
        let code = cocoon_billing::escrow_code();
        let data = EscrowData::initial(pk(&owner), DELAY, PRICES);
        let init = escrow_state_init(&code, &data).unwrap();
        let escrow = cocoon_billing::layout::state_init_address(&init).unwrap();
        let (client, operator, payout) = (addr(0xc1), addr(0x0e), addr(0xfa));
        for a in [&client, &operator] {
            chain.airdrop(a, 1_000 * TON).unwrap();
        }
        let mut bench = Self {
            chain,
            owner,
            guest: key(2),
            escrow,
            client,
            operator,
            payout,
            query: 0,
        };
        let txs = bench.send(
            bench.client.clone(),
            10 * TON,
            TopUp { query_id: 1 }.to_cell().unwrap(),
            Some(init),
        );
        assert_eq!(bench.exit_of(&txs), Some(0), "deploy: {txs:#?}");
        bench
    }

    fn send(
        &mut self,
        src: StdAddr,
        value: u128,
        body: Cell,
        state_init: Option<tycho_types::models::StateInit>,
    ) -> Vec<TxSummary> {
        self.chain
            .send_internal(InternalMessage {
                src,
                dest: self.escrow.clone(),
                value,
                bounce: true,
                body: Some(body),
                state_init,
            })
            .unwrap()
    }

    fn exit_of(&self, txs: &[TxSummary]) -> Option<i32> {
        exit(&self.escrow, txs)
    }

    fn view(&self) -> EscrowView {
        let r = self
            .chain
            .run_get_method(&self.escrow, "get_escrow", &[])
            .unwrap();
        assert!(r.success(), "get_escrow exit {}", r.exit_code);
        let n = |i: usize| r.stack[i].as_u128().unwrap();
        EscrowView {
            balance: n(1),
            stake: n(2),
            total_charged: n(3),
            owner_seqno: n(4) as u32,
            unlock_at: n(5) as u32,
        }
    }

    fn guest_state(&self, guest: &[u8; 32]) -> (u64, u128) {
        let key = StackValue::Int(num_bigint::BigInt::from_bytes_be(
            num_bigint::Sign::Plus,
            guest,
        ));
        let r = self
            .chain
            .run_get_method(&self.escrow, "get_guest", &[key])
            .unwrap();
        assert!(r.success(), "get_guest exit {}", r.exit_code);
        (
            r.stack[0].as_u128().unwrap() as u64,
            r.stack[1].as_u128().unwrap(),
        )
    }

    fn balance(&self, a: &StdAddr) -> u128 {
        self.chain.account(a).unwrap().balance
    }

    fn authorization(&self, cap: u128, expires_in: u32) -> SignedAuthorization {
        Authorization {
            escrow: self.escrow.clone(),
            guest_key: pk(&self.guest),
            cap,
            expires_at: self.chain.now() + expires_in,
        }
        .sign(&self.owner)
        .unwrap()
    }

    fn voucher(&self, seq: u64, prompt: u64, completion: u64) -> SignedVoucher {
        Voucher {
            escrow: self.escrow.clone(),
            guest_key: pk(&self.guest),
            seq,
            tokens: TokenCounts {
                prompt,
                cached: 0,
                completion,
            },
            payout: self.payout.clone(),
            commitment: ReceiptCommitment {
                receipts_root: [seq as u8; 32],
                model: [0x3C; 32],
            },
        }
        .sign(&self.guest)
        .unwrap()
    }

    fn charge(
        &mut self,
        voucher: SignedVoucher,
        authorization: SignedAuthorization,
        is_final: bool,
    ) -> Vec<TxSummary> {
        self.query += 1;
        let body = Charge {
            query_id: self.query,
            is_final,
            voucher,
            authorization,
        }
        .to_cell()
        .unwrap();
        self.send(self.operator.clone(), CHARGE_VALUE, body, None)
    }

    fn owner_op(&mut self, action: OwnerAction) -> Vec<TxSummary> {
        let seqno = self.view().owner_seqno;
        self.owner_op_with(seqno, self.chain.now() + 60, action, &key(1))
    }

    fn owner_op_with(
        &mut self,
        seqno: u32,
        valid_until: u32,
        action: OwnerAction,
        signer: &Ed25519KeyPair,
    ) -> Vec<TxSummary> {
        self.query += 1;
        let body = OwnerRequest {
            escrow: self.escrow.clone(),
            seqno,
            valid_until,
            action,
        }
        .sign(signer, self.query)
        .unwrap()
        .to_cell()
        .unwrap();
        self.send(self.client.clone(), TON / 20, body, None)
    }

    fn set_stake(&mut self, stake: u128) {
        let txs = self.owner_op(OwnerAction::SetStake { stake });
        assert_eq!(self.exit_of(&txs), Some(0), "set_stake {stake}");
    }
}

/// The escrow's own transaction among `txs`: its compute exit code.
fn exit(escrow: &StdAddr, txs: &[TxSummary]) -> Option<i32> {
    txs.iter()
        .find(|t| &t.account == escrow && !t.in_bounced)
        .and_then(|t| t.exit_code)
}

fn code(c: ExitCode) -> Option<i32> {
    Some(c.code())
}

#[test]
fn billing_contract_charge_pays_exactly_the_voucher_to_the_payout() {
    let mut b = Bench::new();
    b.set_stake(2 * TON);
    let auth = b.authorization(100 * TON, 3_600);
    let before = (b.balance(&b.escrow), b.balance(&b.payout));
    let voucher = b.voucher(1, 1_000, 500);
    let due = voucher.voucher.charge(&PRICES);
    assert_eq!(due, 1_000 * 1_000 + 500 * 3_000);
    let txs = b.charge(voucher, auth.clone(), false);
    assert_eq!(b.exit_of(&txs), Some(0), "{txs:#?}");
    // The escrow loses the charge and its own storage fee (under a millionth of a TON
    // here), nothing else: the gas comes out of the operator's attached value.
    let after = (b.balance(&b.escrow), b.balance(&b.payout));
    let lost = before.0 - after.0;
    assert!(
        lost >= due && lost - due < TON / 1_000_000,
        "the escrow lost {lost}, the charge is {due}"
    );
    let gained = after.1 - before.1;
    assert!(
        gained > due && gained < due + CHARGE_VALUE,
        "the payout gained {gained}: the charge {due} plus the unused gas"
    );
    assert_eq!(b.guest_state(&pk(&b.guest)), (1, due));
    assert_eq!(b.view().total_charged, due);

    // A later voucher pays only the difference.
    let next = b.voucher(5, 3_000, 500);
    let total = next.voucher.charge(&PRICES);
    let txs = b.charge(next, auth, false);
    assert_eq!(b.exit_of(&txs), Some(0));
    assert_eq!(b.guest_state(&pk(&b.guest)), (5, total));
    assert_eq!(b.view().total_charged, total);
}

#[test]
fn billing_contract_refuses_replayed_and_lower_vouchers() {
    let mut b = Bench::new();
    b.set_stake(TON);
    let auth = b.authorization(100 * TON, 3_600);
    let v2 = b.voucher(2, 100, 100);
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(v2.clone(), auth.clone(), false)
        ),
        Some(0)
    );
    let paid = b.view().total_charged;
    let escrow_before = b.balance(&b.escrow);
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(v2, auth.clone(), false)),
        code(ExitCode::VoucherNotNewer),
        "replay"
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(b.voucher(1, 50, 50), auth.clone(), false)
        ),
        code(ExitCode::VoucherNotNewer),
        "older sequence"
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(b.voucher(3, 10, 10), auth, false)
        ),
        code(ExitCode::VoucherNotNewer),
        "newer sequence, lower counts"
    );
    assert_eq!(b.view().total_charged, paid);
    // Refused charges bounce the operator's value back; the escrow keeps its money.
    assert!(b.balance(&b.escrow) <= escrow_before);
    assert!(escrow_before - b.balance(&b.escrow) < TON / 1_000_000);
}

#[test]
fn billing_contract_refuses_forged_and_misdirected_charges() {
    let mut b = Bench::new();
    b.set_stake(TON);
    let auth = b.authorization(100 * TON, 3_600);
    let good = b.voucher(1, 100, 100);

    // A voucher signed by a key that is not the one it names.
    let mut forged = good.clone();
    forged.signature[0] ^= 1;
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(forged, auth.clone(), false)),
        code(ExitCode::BadVoucherSignature)
    );
    // The operator signs a voucher for its own key: the owner never authorized that key.
    let operator_key = key(9);
    let own = Voucher {
        guest_key: pk(&operator_key),
        ..good.voucher.clone()
    }
    .sign(&operator_key)
    .unwrap();
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(own.clone(), auth.clone(), false)
        ),
        code(ExitCode::GuestKeyMismatch)
    );
    // ... and authorizes it himself.
    let self_authorized = Authorization {
        guest_key: pk(&operator_key),
        ..auth.authorization.clone()
    }
    .sign(&operator_key)
    .unwrap();
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(own, self_authorized, false)),
        code(ExitCode::BadOwnerSignature)
    );
    // An authorization the owner signed for another escrow.
    let elsewhere = Authorization {
        escrow: addr(0x77),
        ..auth.authorization.clone()
    }
    .sign(&b.owner)
    .unwrap();
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(good.clone(), elsewhere, false)),
        code(ExitCode::WrongAuthorizationEscrow)
    );
    // A voucher the guest signed for another escrow (another client's, or another price
    // table's).
    let other_escrow = Voucher {
        escrow: addr(0x78),
        ..good.voucher.clone()
    }
    .sign(&b.guest)
    .unwrap();
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(other_escrow, auth.clone(), false)
        ),
        code(ExitCode::WrongEscrow)
    );
    assert_eq!(b.view().total_charged, 0, "nothing was paid");
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(good, auth, false)),
        Some(0)
    );
}

#[test]
fn billing_contract_enforces_the_authorizations_cap_and_expiry() {
    let mut b = Bench::new();
    b.set_stake(TON);
    let v = b.voucher(1, 1_000, 0); // 1_000_000 nanoton
    let due = v.voucher.charge(&PRICES);
    let tight = b.authorization(due - 1, 3_600);
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(v.clone(), tight, false)),
        code(ExitCode::CapExceeded)
    );
    // Expired, but within the close delay after expiry: still payable (work served
    // before expiry).
    let short = b.authorization(due, 100);
    b.chain.advance(100 + DELAY - 10).unwrap();
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(v, short.clone(), false)),
        Some(0)
    );
    b.chain.advance(20).unwrap();
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(b.voucher(2, 1_000, 1), short, false)
        ),
        code(ExitCode::AuthorizationExpired)
    );
}

#[test]
fn billing_contract_charges_only_what_the_escrow_holds() {
    let mut b = Bench::new();
    let auth = b.authorization(1_000 * TON, 3_600);
    // 10 TON deposited: a voucher for 20 TON cannot be paid.
    let big = b.voucher(1, 0, 20_000 / 3 * 1_000);
    assert!(big.voucher.charge(&PRICES) > 10 * TON);
    assert_eq!(
        exit(&b.escrow.clone(), &b.charge(big, auth, false)),
        code(ExitCode::InsufficientBalance)
    );
}

#[test]
fn billing_contract_top_up_stake_and_withdraw_above_stake_only() {
    let mut b = Bench::new();
    let deposit = b.view().balance;
    let txs = b.send(
        b.client.clone(),
        5 * TON,
        TopUp { query_id: 7 }.to_cell().unwrap(),
        None,
    );
    assert_eq!(b.exit_of(&txs), Some(0));
    assert!(b.view().balance > deposit + 5 * TON - TON / 100);
    b.set_stake(4 * TON);
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op(OwnerAction::SetStake { stake: 3 * TON })
        ),
        code(ExitCode::StakeDecrease),
        "the stake never goes down while open"
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op(OwnerAction::SetStake { stake: 1_000 * TON })
        ),
        code(ExitCode::InsufficientFreeBalance)
    );
    let view = b.view();
    let free = view.balance - view.stake - STORAGE_RESERVE;
    let to = addr(0xd0);
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op(OwnerAction::Withdraw {
                amount: free + TON / 10,
                to: to.clone()
            })
        ),
        code(ExitCode::InsufficientFreeBalance),
        "withdrawing into the stake"
    );
    let amount = free - TON / 10;
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op(OwnerAction::Withdraw {
                amount,
                to: to.clone()
            })
        ),
        Some(0)
    );
    assert!(b.balance(&to) > amount - TON / 100);
    assert!(b.view().balance >= b.view().stake + STORAGE_RESERVE);
}

#[test]
fn billing_contract_owner_requests_are_signed_fresh_and_used_once() {
    let mut b = Bench::new();
    let now = b.chain.now();
    let stake = |s| OwnerAction::SetStake { stake: s };
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op_with(0, now + 60, stake(TON), &key(5))
        ),
        code(ExitCode::BadOwnerSignature),
        "someone else's key"
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op_with(1, now + 60, stake(TON), &key(1))
        ),
        code(ExitCode::WrongOwnerSeqno)
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op_with(0, now - 1, stake(TON), &key(1))
        ),
        code(ExitCode::OwnerRequestExpired)
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op_with(0, now + 60, stake(TON), &key(1))
        ),
        Some(0)
    );
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op_with(0, now + 60, stake(TON), &key(1))
        ),
        code(ExitCode::WrongOwnerSeqno),
        "a replayed request"
    );
    // Money only enters through top_up.
    let plain = b.send(
        b.client.clone(),
        TON,
        tycho_types::cell::Cell::empty_cell(),
        None,
    );
    assert_eq!(b.exit_of(&plain), code(ExitCode::PlainTransferRefused));
    let mut unknown = tycho_types::cell::CellBuilder::new();
    unknown.store_u32(0x1234_5678).unwrap();
    unknown.store_u64(0).unwrap();
    let txs = b.send(b.client.clone(), TON, unknown.build().unwrap(), None);
    assert_eq!(b.exit_of(&txs), code(ExitCode::UnknownOp));
}

#[test]
fn billing_contract_close_refunds_everything_after_the_delay_stake_included() {
    let mut b = Bench::new();
    b.set_stake(3 * TON);
    let auth = b.authorization(100 * TON, 3_600);
    let refund_to = addr(0xee);
    let txs = b.owner_op(OwnerAction::RequestClose {
        refund_to: refund_to.clone(),
    });
    assert_eq!(b.exit_of(&txs), Some(0));
    let view = b.view();
    assert_eq!(view.unlock_at, b.chain.now() + DELAY);
    // Everything above the stake (and the storage reserve) came back at once.
    assert!(b.balance(&refund_to) > 10 * TON - 3 * TON - TON / 10);
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op(OwnerAction::RequestClose {
                refund_to: refund_to.clone()
            })
        ),
        code(ExitCode::AlreadyClosing)
    );
    let top_up = b.send(
        b.client.clone(),
        TON,
        TopUp { query_id: 3 }.to_cell().unwrap(),
        None,
    );
    assert_eq!(b.exit_of(&top_up), code(ExitCode::AlreadyClosing));
    // The operator can still settle what it served during the delay.
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(b.voucher(1, 1_000, 0), auth, false)
        ),
        Some(0)
    );
    // Refund before the delay: refused. After: everything, stake included, and the
    // escrow is gone.
    let refund = || Refund { query_id: 9 }.to_cell().unwrap();
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.send(b.client.clone(), TON / 20, refund(), None)
        ),
        code(ExitCode::NotUnlocked)
    );
    b.chain.advance(DELAY).unwrap();
    let before = b.balance(&refund_to);
    let remaining = b.balance(&b.escrow);
    // Anyone may trigger it: the destination was fixed by the owner.
    let txs = b.send(addr(0x99), TON / 20, refund(), None);
    assert_eq!(b.exit_of(&txs), Some(0));
    let got = b.balance(&refund_to) - before;
    assert!(
        got + TON / 100 > remaining,
        "refund {got} of {remaining}: the stake must come back too"
    );
    let gone = b.chain.account(&b.escrow).unwrap();
    assert!(gone.balance == 0, "the escrow is destroyed: {gone:?}");
}

#[test]
fn billing_contract_final_charge_closes_at_once() {
    let mut b = Bench::new();
    b.set_stake(2 * TON);
    let auth = b.authorization(100 * TON, 3_600);
    // Without a close request a final charge is refused (the operator cannot close a
    // client's escrow).
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.charge(b.voucher(1, 1_000, 0), auth.clone(), true)
        ),
        code(ExitCode::NotUnlocked)
    );
    let refund_to = addr(0xef);
    assert_eq!(
        exit(
            &b.escrow.clone(),
            &b.owner_op(OwnerAction::RequestClose {
                refund_to: refund_to.clone()
            })
        ),
        Some(0)
    );
    let before = b.balance(&refund_to);
    let v = b.voucher(1, 1_000, 0);
    let due = v.voucher.charge(&PRICES);
    let remaining = b.balance(&b.escrow);
    assert_eq!(exit(&b.escrow.clone(), &b.charge(v, auth, true)), Some(0));
    let got = b.balance(&refund_to) - before;
    assert!(
        got + due + TON / 100 > remaining && got + due <= remaining,
        "the rest ({got}) after the final charge ({due}) goes back to the client"
    );
    assert_eq!(b.chain.account(&b.escrow).unwrap().balance, 0);
}
