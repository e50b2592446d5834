//! The ledger's billing tables (schema version 2): the migration from a version 1 file,
//! vouchers checked and stored in the receipt's transaction, refused vouchers, settlements
//! and their items, the chain readings.

use base64::Engine as _;
use cocoon_attestation::receipt::ReceiptSigner;
use cocoon_billing::address::{parse_address, StdAddr};
use cocoon_billing::layout::{
    self, Authorization, CellLayout as _, SignedVoucher, TokenCounts, Voucher,
};
use cocoon_billing::wallet::ring_key_from_seed;

use super::settlements::{ItemState, NewItem, NewSettlement, SettlementState};
use super::vouchers::{raw_address, JournalVoucher};
use super::*;
use crate::test_meter::{info, tokens, Meter, Scratch};

const OWNER_SEED: [u8; 32] = [0x51; 32];

fn escrow() -> StdAddr {
    parse_address(&format!("0:{}", "ee".repeat(32))).unwrap()
}

fn payout() -> StdAddr {
    parse_address(&format!("0:{}", "33".repeat(32))).unwrap()
}

fn account() -> String {
    let owner = ring_key_from_seed(&OWNER_SEED).unwrap();
    format!("ed25519:{}", hex::encode(layout::public_key(&owner)))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn signed(signer: &ReceiptSigner, voucher: Voucher) -> SignedVoucher {
    let hash = voucher.to_cell().unwrap().repr_hash().0;
    SignedVoucher {
        signature: signer.sign_cell_hash(&hash),
        voucher,
    }
}

/// What the guest sends with a receipt: a voucher for `seq` and `cumulative`, and the
/// owner's authorization of `key`.
fn voucher(
    signer: &ReceiptSigner,
    key: [u8; 32],
    seq: u64,
    cumulative: TokenCounts,
) -> JournalVoucher {
    let v = signed(
        signer,
        Voucher {
            escrow: escrow(),
            guest_key: key,
            seq,
            tokens: cumulative,
            payout: payout(),
            commitment: Default::default(),
        },
    );
    let owner = ring_key_from_seed(&OWNER_SEED).unwrap();
    let a = Authorization {
        escrow: escrow(),
        guest_key: key,
        cap: 1_000_000_000_000,
        expires_at: 1_900_000_000,
    }
    .sign(&owner)
    .unwrap();
    JournalVoucher {
        escrow: raw_address(&escrow()),
        voucher: b64(&v.to_boc().unwrap()),
        authorization: b64(&a.to_boc().unwrap()),
    }
}

/// A served request of the escrow's account with its voucher (edited by `edit`).
fn serve(
    meter: &mut Meter,
    edit: impl FnOnce(&mut Voucher, &mut JournalVoucher),
) -> JournalReceipt {
    let receipt = meter.bill(&account(), tokens(100, 10, 50));
    let c = receipt.cumulative.tokens;
    let mut v = Voucher {
        escrow: escrow(),
        guest_key: meter.key(),
        seq: receipt.sequence,
        tokens: TokenCounts {
            prompt: c.prompt_tokens,
            cached: c.cached_tokens,
            completion: c.completion_tokens,
        },
        payout: payout(),
        commitment: Default::default(),
    };
    let mut entry_voucher = voucher(&meter.signer, meter.key(), v.seq, v.tokens);
    let original = v.clone();
    edit(&mut v, &mut entry_voucher);
    if v != original {
        entry_voucher.voucher = b64(&signed(&meter.signer, v).to_boc().unwrap());
    }
    let mut entry = meter.journal(&receipt);
    entry.voucher = Some(entry_voucher);
    entry
}

fn open(scratch: &Scratch, meter: &Meter) -> Ledger {
    let mut ledger = Ledger::open(&scratch.file()).unwrap();
    ledger
        .record_verification("g1", &meter.key(), &info(1_700_000_000))
        .unwrap();
    ledger
}

fn count(ledger: &Ledger, table: &str) -> i64 {
    ledger
        .raw()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn billing_ledger_migrates_a_version_1_file_and_keeps_its_receipts() {
    let scratch = Scratch::new();
    let mut meter = Meter::boot();
    {
        // A file as the previous agent left it: version 1, with a receipt.
        let conn = rusqlite::Connection::open(scratch.file()).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    {
        // Reopened by this agent: it is migrated; store a receipt without voucher.
        let mut ledger = open(&scratch, &meter);
        assert_eq!(ledger.schema_version().unwrap(), 2);
        let page = vec![meter.serve("alice", 10, 0, 5)];
        assert_eq!(
            ledger
                .store("g1", &meter.key(), &page)
                .unwrap()
                .stored
                .len(),
            1
        );
    }
    let ledger = Ledger::open(&scratch.file()).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    for table in [
        "vouchers",
        "refused_vouchers",
        "settlements",
        "settlement_items",
        "chain_guests",
    ] {
        assert_eq!(count(&ledger, table), 0, "{table}");
    }
    assert_eq!(ledger.totals().unwrap().receipts, 1);
}

#[test]
fn billing_ledger_stores_each_voucher_with_its_receipt_once() {
    let scratch = Scratch::new();
    let mut meter = Meter::boot();
    let mut ledger = open(&scratch, &meter);
    let page: Vec<_> = (0..3).map(|_| serve(&mut meter, |_, _| {})).collect();
    let outcome = ledger.store("g1", &meter.key(), &page).unwrap();
    assert_eq!((outcome.stored.len(), outcome.vouchers), (3, 3));
    assert!(outcome.refused_vouchers.is_empty());
    // The same page again (a crash before the acknowledgement): nothing new.
    let again = ledger.store("g1", &meter.key(), &page).unwrap();
    assert_eq!((again.duplicates, again.vouchers), (3, 0));
    assert_eq!(count(&ledger, "vouchers"), 3);
    let heads = ledger.voucher_heads().unwrap();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert_eq!((head.seq, head.account.as_str()), (3, account().as_str()));
    assert_eq!(head.escrow, raw_address(&escrow()));
    assert_eq!((head.prompt, head.cached, head.completion), (300, 30, 150));
    assert_eq!(head.expires_at, 1_900_000_000);
    assert!(SignedVoucher::from_boc(&head.voucher_boc)
        .unwrap()
        .verify()
        .is_ok());
    assert_eq!(head.chain, None);
}

#[test]
fn billing_ledger_refuses_vouchers_that_disagree_with_their_receipt() {
    let scratch = Scratch::new();
    let mut meter = Meter::boot();
    let mut ledger = open(&scratch, &meter);
    let other = ReceiptSigner::generate().unwrap();
    let other_key = other.public_key();
    let page = vec![
        serve(&mut meter, |v, _| v.seq += 1),
        serve(&mut meter, |v, _| v.tokens.completion += 1),
        serve(&mut meter, |v, _| v.payout = escrow()),
        serve(&mut meter, |_, j| j.escrow = raw_address(&payout())),
        serve(&mut meter, |_, j| {
            j.voucher = b64(&signed(
                &other,
                Voucher {
                    escrow: escrow(),
                    guest_key: other_key,
                    seq: 5,
                    tokens: TokenCounts::default(),
                    payout: payout(),
                    commitment: Default::default(),
                },
            )
            .to_boc()
            .unwrap());
        }),
        serve(&mut meter, |_, j| j.authorization = j.voucher.clone()),
        serve(&mut meter, |_, j| j.voucher = "not base64!".into()),
        serve(&mut meter, |_, j| {
            // Authorized by someone other than the account.
            let stranger = ring_key_from_seed(&[0x77; 32]).unwrap();
            let a = Authorization {
                escrow: escrow(),
                guest_key: parse_key_of(j),
                cap: 1_000,
                expires_at: 1_900_000_000,
            }
            .sign(&stranger)
            .unwrap();
            j.authorization = b64(&a.to_boc().unwrap());
        }),
    ];
    let outcome = ledger.store("g1", &meter.key(), &page).unwrap();
    assert_eq!(outcome.stored.len(), 8, "the receipts themselves are fine");
    // The payout is the guest's to choose (its measured config names it): a voucher the
    // guest signed with another payout is stored, and the escrow pays where it says.
    assert_eq!(outcome.vouchers, 1);
    let indexes: Vec<u64> = outcome.refused_vouchers.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, vec![1, 2, 4, 5, 6, 7, 8]);
    let details: Vec<&str> = outcome
        .refused_vouchers
        .iter()
        .map(|(_, d)| d.as_str())
        .collect();
    assert!(
        details[0].contains("seq 2 for the receipt of sequence 1"),
        "{}",
        details[0]
    );
    assert!(details[1].contains("cumulative tokens"), "{}", details[1]);
    assert!(details[2].contains("names escrow"), "{}", details[2]);
    assert!(
        details[3].contains("guest key other than the receipt"),
        "{}",
        details[3]
    );
    assert!(details[4].contains("authorization"), "{}", details[4]);
    assert!(details[5].contains("not base64"), "{}", details[5]);
    assert!(
        details[6].contains("not signed by the account"),
        "{}",
        details[6]
    );
    assert_eq!(count(&ledger, "refused_vouchers"), 7);
    assert_eq!(count(&ledger, "vouchers"), 1);
    let totals = ledger.settlement_totals().unwrap();
    assert_eq!((totals.vouchers, totals.refused_vouchers), (1, 7));
}

/// The guest key an entry's voucher names.
fn parse_key_of(j: &JournalVoucher) -> [u8; 32] {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&j.voucher)
        .unwrap();
    SignedVoucher::from_boc(&bytes).unwrap().voucher.guest_key
}

#[test]
fn billing_ledger_keeps_nothing_of_a_page_whose_voucher_insert_fails() {
    let scratch = Scratch::new();
    let mut meter = Meter::boot();
    let mut ledger = open(&scratch, &meter);
    let page: Vec<_> = (0..3).map(|_| serve(&mut meter, |_, _| {})).collect();
    ledger
        .raw()
        .execute_batch(
            "CREATE TEMP TRIGGER fail_voucher BEFORE INSERT ON vouchers WHEN NEW.seq = 3 \
             BEGIN SELECT RAISE(ABORT, 'injected voucher failure'); END",
        )
        .unwrap();
    let err = ledger
        .store("g1", &meter.key(), &page)
        .unwrap_err()
        .to_string();
    assert!(err.contains("injected voucher failure"), "{err}");
    assert_eq!(ledger.cursor(&meter.key()).unwrap(), 0);
    assert_eq!(ledger.totals().unwrap().receipts, 0);
    assert_eq!(count(&ledger, "vouchers"), 0);
    ledger
        .raw()
        .execute_batch("DROP TRIGGER fail_voucher")
        .unwrap();
    let outcome = ledger.store("g1", &meter.key(), &page).unwrap();
    assert_eq!((outcome.stored.len(), outcome.vouchers), (3, 3));
}

#[test]
fn billing_ledger_settlements_move_through_their_states() {
    let scratch = Scratch::new();
    let mut meter = Meter::boot();
    let mut ledger = open(&scratch, &meter);
    let page: Vec<_> = (0..2).map(|_| serve(&mut meter, |_, _| {})).collect();
    ledger.store("g1", &meter.key(), &page).unwrap();
    let head = ledger.voucher_heads().unwrap().remove(0);
    let key = hex::encode(meter.key());
    let new = NewSettlement {
        wallet: "0:".to_string() + &"aa".repeat(32),
        seqno: 7,
        valid_until: 1_800_000_120,
        message: vec![1, 2, 3],
        message_hash: [5; 32],
        wallet_balance: 1_000_000_000,
        items: vec![NewItem {
            voucher_id: head.voucher_id,
            escrow: head.escrow.clone(),
            receipt_key: key.clone(),
            seq: 2,
            charged: 4_000,
            amount: 4_000,
        }],
    };
    let id = ledger.create_settlement(&new, 1_800_000_000).unwrap();
    let active = ledger.active_settlements().unwrap();
    assert_eq!(active.len(), 1);
    let s = &active[0];
    assert_eq!((s.id, s.seqno, s.state), (id, 7, SettlementState::Pending));
    assert_eq!(
        (s.message.as_slice(), s.message_hash.as_str()),
        (&[1u8, 2, 3][..], "05".repeat(32).as_str())
    );
    assert_eq!(s.items[0].state, ItemState::Pending);
    ledger.mark_settlement_sent(id, 1_800_000_001).unwrap();
    ledger.mark_settlement_sent(id, 1_800_000_050).unwrap();
    let s = ledger.settlement(id).unwrap().unwrap();
    assert_eq!(
        (s.state, s.sent_at),
        (SettlementState::Sent, Some(1_800_000_001))
    );

    // Failed: the voucher is never offered again; a newer one is.
    ledger
        .finish_settlement(
            id,
            SettlementState::Failed,
            Some("refused"),
            Some(60_000),
            &[(0, ItemState::Failed)],
            1_800_000_060,
        )
        .unwrap();
    assert!(ledger.active_settlements().unwrap().is_empty());
    assert!(ledger.voucher_heads().unwrap().is_empty());
    let page = vec![serve(&mut meter, |_, _| {})];
    ledger.store("g1", &meter.key(), &page).unwrap();
    let heads = ledger.voucher_heads().unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].seq, 3);

    // The chain paid seq 3: nothing is owed; readings never go back.
    ledger
        .record_chain_guest(&head.escrow, &key, 3, 9_000, 1_800_000_070)
        .unwrap();
    ledger
        .record_chain_guest(&head.escrow, &key, 1, 10, 1_800_000_080)
        .unwrap();
    assert!(ledger.voucher_heads().unwrap().is_empty());
    let (seq, charged): (i64, i64) = ledger
        .raw()
        .query_row("SELECT seq, charged FROM chain_guests", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((seq, charged), (3, 9_000));

    let totals = ledger.settlement_totals().unwrap();
    assert_eq!(totals.settlements["failed"], 1);
    assert_eq!(totals.settlements["confirmed"], 0);
    assert_eq!((totals.settled_nanoton, totals.gas_nanoton), (0, 60_000));
    assert_eq!(ledger.recent_settlements(10).unwrap().len(), 1);
    let json = serde_json::to_value(ledger.recent_settlements(1).unwrap()).unwrap();
    assert_eq!(json[0]["state"], "failed");
    assert_eq!(json[0]["items"][0]["state"], "failed");
    assert!(json[0].get("message").is_none());
}
