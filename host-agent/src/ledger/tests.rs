//! The ledger against real SQLite files in a temporary directory, with receipts signed by
//! a real receipt key the way the guest's meter signs them.

use std::collections::HashMap;

use cocoon_attestation::receipt::{verify_receipt, Cumulative, RECEIPT_VERSION};

use super::*;
use crate::test_meter::{info, tokens, Meter, Scratch};

/// A ledger in a scratch directory that has verified a booted guest's key as `g1`'s.
struct Setup {
    ledger: Ledger,
    meter: Meter,
    /// Last, so the directory goes after the ledger is closed.
    scratch: Scratch,
}

impl Setup {
    fn new() -> Self {
        let scratch = Scratch::new();
        let meter = Meter::boot();
        let mut ledger = Ledger::open(&scratch.file()).expect("open");
        ledger
            .record_verification("g1", &meter.key(), &info(1_700_000_000))
            .expect("record verification");
        Setup {
            ledger,
            meter,
            scratch,
        }
    }

    /// Stores `page` as guest `g1`'s under the meter's key.
    fn store(&mut self, page: &[JournalReceipt]) -> StoreOutcome {
        self.ledger
            .store("g1", &self.meter.key(), page)
            .expect("store")
    }

    fn cursor(&self) -> u64 {
        self.ledger.cursor(&self.meter.key()).expect("cursor")
    }

    /// The guest reboots (a new receipt key), verified at `verified_at`; returns the old
    /// boot's meter.
    fn reboot(&mut self, verified_at: u64) -> Meter {
        let next = Meter::boot();
        self.ledger
            .record_verification("g1", &next.key(), &info(verified_at))
            .expect("record verification");
        std::mem::replace(&mut self.meter, next)
    }
}

fn reasons(outcome: &StoreOutcome) -> Vec<(u64, RefusalReason)> {
    outcome
        .refused
        .iter()
        .map(|r| (r.index, r.reason))
        .collect()
}

/// `reason` for each index of `indexes`, as [`reasons`] lists them.
fn each(
    indexes: std::ops::RangeInclusive<u64>,
    reason: RefusalReason,
) -> Vec<(u64, RefusalReason)> {
    indexes.map(|index| (index, reason)).collect()
}

/// Asserts that refusal `n` of `outcome` says `text`.
#[track_caller]
fn says(outcome: &StoreOutcome, n: usize, text: &str) {
    let detail = &outcome.refused[n].detail;
    assert!(
        detail.contains(text),
        "refusal {n}: {detail:?} lacks {text:?}"
    );
}

fn all_exported(ledger: &Ledger) -> Vec<StoredReceipt> {
    ledger.export(0, usize::MAX).expect("export")
}

fn message(err: crate::Error) -> String {
    err.to_string()
}

#[test]
fn a_page_is_checked_stored_and_exported_with_its_signatures() {
    let mut t = Setup::new();
    assert_eq!(t.cursor(), 0);
    let page = t.meter.serve_many(&["alice", "bob"], 6);

    let outcome = t.store(&page);
    assert_eq!(outcome.stored.len(), 6);
    assert_eq!((outcome.duplicates, outcome.refused.len()), (0, 0));
    assert_eq!(outcome.cursor, 6);
    assert_eq!(t.cursor(), 6);

    let exported = all_exported(&t.ledger);
    assert_eq!(exported.len(), 6);
    for (stored, entry) in exported.iter().zip(&page) {
        assert_eq!(stored.journal_index, entry.index);
        assert_eq!(stored.jws, entry.receipt);
        assert_eq!(stored.guest, "g1");
        assert_eq!(stored.receipt_key, hex::encode(t.meter.key()));
        // Anyone can check the export: the JWS verifies and says what the columns say.
        assert_eq!(
            verify_receipt(&stored.jws, &t.meter.key()).unwrap(),
            stored.receipt
        );
    }
    assert_eq!(
        exported
            .iter()
            .map(|s| s.receipt.clone())
            .collect::<Vec<_>>(),
        outcome.stored
    );
    let totals = t.ledger.totals().unwrap();
    assert_eq!((totals.receipts, totals.epochs), (6, 1));
    assert!(totals.refused.values().all(|n| *n == 0));
    assert_eq!(totals.refused.len(), RefusalReason::ALL.len());

    let usage = t.ledger.usage(Some("alice")).unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].requests, 3);
    assert_eq!(usage[0].epochs, 1);
    assert_eq!(usage[0].per_epoch[0].sequence, 3);
    assert_eq!(
        usage[0].per_epoch[0].cumulative,
        t.meter.accounts["alice"].1
    );
    assert_eq!(t.ledger.usage(None).unwrap().len(), 2);
    assert!(t.ledger.usage(Some("carol")).unwrap().is_empty());
}

#[test]
fn storing_the_same_page_again_changes_nothing() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice", "bob"], 5);
    t.store(&page);
    let before = (all_exported(&t.ledger), t.ledger.usage(None).unwrap());

    let again = t.store(&page);
    assert_eq!(again.stored, Vec::new());
    assert_eq!(
        (again.duplicates, again.refused.len(), again.cursor),
        (5, 0, 5)
    );
    assert_eq!(
        (all_exported(&t.ledger), t.ledger.usage(None).unwrap()),
        before
    );

    // An overlapping page: the old part is skipped, the new part stored.
    let mut overlapping = page[3..].to_vec();
    overlapping.extend(t.meter.serve_many(&["alice"], 2));
    let outcome = t.store(&overlapping);
    assert_eq!(
        (outcome.stored.len(), outcome.duplicates, outcome.cursor),
        (2, 2, 7)
    );
    assert_eq!(t.ledger.totals().unwrap().receipts, 7);
}

#[test]
fn the_same_receipt_at_a_new_index_is_a_duplicate_and_the_cursor_passes_it() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice"], 2);
    t.store(&page);
    let replay = JournalReceipt {
        index: 3,
        receipt: page[1].receipt.clone(),
        voucher: None,
    };
    let outcome = t.store(&[replay]);
    assert_eq!(
        (outcome.stored.len(), outcome.duplicates, outcome.cursor),
        (0, 1, 3)
    );
    assert_eq!(t.cursor(), 3);
    assert_eq!(t.ledger.totals().unwrap().receipts, 2);
}

#[test]
fn a_page_is_taken_in_index_order_and_the_cursor_ends_at_its_highest() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice", "bob", "carol"], 9);
    let mut shuffled = page.clone();
    shuffled.reverse();
    shuffled.swap(2, 6);
    let outcome = t.store(&shuffled[2..]);
    // Indexes 1..=7, whatever their order in the page: every chain continues.
    assert_eq!((outcome.stored.len(), outcome.refused.len()), (7, 0));
    assert_eq!(outcome.cursor, 7);
    assert_eq!(
        all_exported(&t.ledger)
            .iter()
            .map(|s| s.journal_index)
            .collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    // The whole page again, plus what is new: only 8 and 9 are stored.
    let outcome = t.store(&shuffled);
    assert_eq!((outcome.stored.len(), outcome.duplicates), (2, 7));
    assert_eq!(outcome.cursor, 9);
    // An empty page leaves the cursor where it is.
    assert_eq!(t.store(&[]).cursor, 9);
    assert_eq!(t.cursor(), 9);
}

#[test]
fn everything_survives_reopening_the_file() {
    let everything = |ledger: &Ledger| {
        (
            all_exported(ledger),
            ledger.refused(0, 100).unwrap(),
            ledger.usage(None).unwrap(),
            ledger.epochs().unwrap(),
            ledger.totals().unwrap(),
        )
    };
    let mut t = Setup::new();
    let mut page = t.meter.serve_many(&["alice", "bob"], 4);
    page.push(JournalReceipt {
        index: t.meter.next_index,
        receipt: "junk".into(),
        voucher: None,
    });
    t.meter.next_index += 1;
    t.store(&page);
    let before = everything(&t.ledger);
    drop(t.ledger);

    t.ledger = Ledger::open(&t.scratch.file()).unwrap();
    let after = everything(&t.ledger);
    assert_eq!(after, before);
    assert_eq!(before.0.len(), 4);
    assert_eq!(t.cursor(), 5);
    // And collection continues where it stopped.
    let next = t.meter.serve_many(&["alice"], 1);
    let outcome = t.store(&next);
    assert_eq!((outcome.stored.len(), outcome.cursor), (1, 6));
}

#[test]
fn a_missing_receipt_is_a_gap_and_later_ones_stay_gaps() {
    let mut t = Setup::new();
    let mut page = t.meter.serve_many(&["alice"], 4);
    page.extend(t.meter.serve_many(&["bob"], 1));
    page.remove(1); // alice's sequence 2 never arrives
    let outcome = t.store(&page);
    assert_eq!(outcome.stored.len(), 2); // alice 1, bob 1
    assert_eq!(
        reasons(&outcome),
        vec![(3, RefusalReason::Gap), (4, RefusalReason::Gap)]
    );
    says(&outcome, 0, "account alice: expected sequence 2, got 3");
    says(&outcome, 1, "expected sequence 2, got 4");
    assert_eq!(outcome.cursor, 5);
    let refused = t.ledger.refused(0, 10).unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].jws, page[1].receipt);
    assert_eq!(refused[0].journal_index, 3);
    assert_eq!(refused[0].reason, RefusalReason::Gap);
    assert_eq!(t.ledger.totals().unwrap().refused["gap"], 2);
    // Usage is what the accepted chain states: alice's first receipt only.
    let alice = &t.ledger.usage(Some("alice")).unwrap()[0];
    assert_eq!((alice.requests, alice.per_epoch[0].sequence), (1, 1));
}

#[test]
fn a_different_receipt_under_a_stored_sequence_is_a_fork() {
    let mut t = Setup::new();
    let first = t.meter.bill("alice", tokens(10, 0, 5));
    let page = vec![t.meter.journal(&first)];
    t.store(&page);
    let mut other = first.clone();
    other.request_id = "chatcmpl-other".into();
    let fork = t.meter.journal(&other);
    let outcome = t.store(std::slice::from_ref(&fork));
    assert_eq!(reasons(&outcome), vec![(2, RefusalReason::Fork)]);
    says(
        &outcome,
        0,
        "account alice sequence 1: ledger id 1 (journal index 1)",
    );
    assert_eq!(t.ledger.refused(0, 10).unwrap()[0].jws, fork.receipt);
    assert_eq!(all_exported(&t.ledger)[0].jws, page[0].receipt);
}

#[test]
fn cumulative_totals_that_do_not_add_up_are_refused_naming_the_field() {
    let mut t = Setup::new();
    let first = t.meter.serve("alice", 100, 0, 50);
    // Signed with the right key, but claiming less than it adds up to.
    let mut cheap = t.meter.bill("alice", tokens(10, 0, 10));
    cheap.cumulative.charge -= 1;
    let cheap = t.meter.journal(&cheap);
    let mut padded = t.meter.bill("bob", tokens(10, 2, 10));
    padded.cumulative.tokens.completion_tokens += 5;
    padded.cumulative.requests = 2;
    let padded = t.meter.journal(&padded);
    let outcome = t.store(&[first, cheap, padded]);
    assert_eq!(outcome.stored.len(), 1);
    assert_eq!(
        reasons(&outcome),
        vec![(2, RefusalReason::Totals), (3, RefusalReason::Totals)]
    );
    says(
        &outcome,
        0,
        "account alice sequence 2: cumulative.charge is",
    );
    assert!(!outcome.refused[0].detail.contains("tokens"));
    says(
        &outcome,
        1,
        "cumulative.requests is 2, expected 1 (previous 0 + 1)",
    );
    says(
        &outcome,
        1,
        "cumulative.tokens.completion_tokens is 15, expected 10 (previous 0 + 10)",
    );
    assert_eq!(t.ledger.totals().unwrap().refused["totals"], 2);
}

#[test]
fn a_receipt_signed_by_another_key_is_refused_as_unverified() {
    let mut t = Setup::new();
    let mut impostor = Meter::boot();
    impostor.next_index = 2;
    let page = vec![
        t.meter.serve("alice", 10, 0, 5),
        impostor.serve("alice", 10, 0, 5),
    ];
    let outcome = t.store(&page);
    assert_eq!(outcome.stored.len(), 1);
    assert_eq!(reasons(&outcome), vec![(2, RefusalReason::UnverifiedKey)]);
    says(&outcome, 0, "signed by a key the agent has not verified");
}

#[test]
fn receipts_under_a_key_with_no_epoch_are_all_refused_and_passed() {
    let scratch = Scratch::new();
    let mut ledger = Ledger::open(&scratch.file()).unwrap();
    let mut meter = Meter::boot();
    let page = meter.serve_many(&["alice", "bob"], 3);
    let outcome = ledger.store("g1", &meter.key(), &page).unwrap();
    assert_eq!(outcome.stored.len(), 0);
    assert_eq!(reasons(&outcome), each(1..=3, RefusalReason::UnverifiedKey));
    says(&outcome, 0, "has no epoch");
    assert_eq!(ledger.cursor(&meter.key()).unwrap(), 3);
    let refused = ledger.refused(0, 10).unwrap();
    assert_eq!(refused.len(), 3);
    assert_eq!(refused[2].receipt_key, hex::encode(meter.key()));
    assert!(ledger.epochs().unwrap().is_empty());
    assert_eq!(ledger.totals().unwrap().refused["unverified_key"], 3);
}

#[test]
fn malformed_entries_are_refused_with_the_decoder_s_reason() {
    let mut t = Setup::new();
    // Signed with the right key, but a receipt version this verifier does not read.
    let mut old = t.meter.bill("alice", tokens(1, 0, 1));
    old.version = RECEIPT_VERSION - 1;
    let page = vec![
        JournalReceipt {
            index: 1,
            receipt: "not a jws".into(),
            voucher: None,
        },
        JournalReceipt {
            index: 2,
            receipt: "e30.e30.AAAA".into(),
            voucher: None,
        },
        JournalReceipt {
            index: 3,
            receipt: t.meter.signer.sign(&old).unwrap(),
            voucher: None,
        },
    ];
    let outcome = t.store(&page);
    assert_eq!(reasons(&outcome), each(1..=3, RefusalReason::Malformed));
    says(&outcome, 0, "three dot-separated");
    says(&outcome, 2, "version");
    assert_eq!(outcome.cursor, 3);
}

#[test]
fn numbers_beyond_sqlite_integers_are_refused_not_wrapped() {
    let mut t = Setup::new();
    let mut huge = t.meter.bill("alice", tokens(1, 0, 1));
    huge.issued_at = u64::MAX;
    let page = vec![t.meter.journal(&huge)];
    let outcome = t.store(&page);
    assert_eq!(reasons(&outcome), vec![(1, RefusalReason::Malformed)]);
    says(&outcome, 0, "issued_at = 18446744073709551615 is beyond");
}

#[test]
fn a_reboot_starts_a_new_epoch_and_usage_sums_both() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice", "bob"], 5);
    t.store(&page);

    let first = t.reboot(1_700_000_500);
    t.meter.clock += 1000;
    let page = t.meter.serve_many(&["alice"], 4);
    assert_eq!(page[0].index, 1);
    let outcome = t.store(&page);
    assert_eq!((outcome.stored.len(), outcome.cursor), (4, 4));
    assert_eq!(outcome.stored[0].sequence, 1);
    // The first epoch's cursor is its own.
    assert_eq!(t.ledger.cursor(&first.key()).unwrap(), 5);
    let (ledger, second) = (&t.ledger, &t.meter);

    let epochs = ledger.epochs().unwrap();
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[0].receipt_key, hex::encode(first.key()));
    assert_eq!((epochs[0].receipts, epochs[0].cursor), (5, 5));
    assert_eq!((epochs[1].receipts, epochs[1].cursor), (4, 4));
    assert_eq!(epochs[1].tee, "tdx");
    assert!(epochs[1].simulated);

    let alice = &ledger.usage(Some("alice")).unwrap()[0];
    assert_eq!((alice.requests, alice.epochs), (7, 2));
    let (a1, a2) = (first.accounts["alice"].1, second.accounts["alice"].1);
    assert_eq!(alice.per_epoch.len(), 2);
    assert_eq!(alice.per_epoch[0].cumulative, a1);
    assert_eq!(alice.per_epoch[1].cumulative, a2);
    assert_eq!(alice.charge, a1.charge + a2.charge);
    assert_eq!(alice.tokens, a1.tokens.plus(a2.tokens));
    assert_eq!(alice.last_issued_at, second.clock);
    let bob = &ledger.usage(Some("bob")).unwrap()[0];
    assert_eq!((bob.requests, bob.epochs), (2, 1));
}

#[test]
fn within_an_epoch_the_receipts_sum_to_the_latest_cumulative() {
    let mut t = Setup::new();
    let accounts = ["alice", "bob", "carol"];
    let page = t.meter.serve_many(&accounts, 40);
    t.store(&page);
    t.reboot(1_700_000_001);
    let page = t.meter.serve_many(&accounts[..2], 17);
    t.store(&page);
    let ledger = &t.ledger;

    let mut sums: HashMap<(String, String), Cumulative> = HashMap::new();
    for stored in all_exported(ledger) {
        let r = stored.receipt;
        let sum = sums.entry((r.account, stored.receipt_key)).or_default();
        sum.requests += 1;
        sum.tokens = sum.tokens.plus(r.tokens);
        sum.charge += r.charge;
    }
    let usage = ledger.usage(None).unwrap();
    assert_eq!(usage.len(), 3);
    let mut epochs_seen = 0;
    for account in &usage {
        let mut total = Cumulative::default();
        for epoch in &account.per_epoch {
            let key = (account.account.clone(), epoch.receipt_key.clone());
            assert_eq!(sums[&key], epoch.cumulative, "{key:?}");
            total.requests += epoch.cumulative.requests;
            total.tokens = total.tokens.plus(epoch.cumulative.tokens);
            total.charge += epoch.cumulative.charge;
            epochs_seen += 1;
        }
        assert_eq!(
            (total.requests, total.tokens, total.charge),
            (account.requests, account.tokens, account.charge)
        );
    }
    assert_eq!(epochs_seen, sums.len());
}

#[test]
fn export_pages_by_ledger_id() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice", "bob"], 7);
    t.store(&page);
    let mut since = 0;
    let mut pages = Vec::new();
    loop {
        let batch = t.ledger.export(since, 3).unwrap();
        let Some(last) = batch.last() else { break };
        since = last.id;
        pages.push(batch.iter().map(|s| s.journal_index).collect::<Vec<_>>());
    }
    assert_eq!(pages, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    assert!(t.ledger.export(0, 0).unwrap().is_empty());
    assert_eq!(t.ledger.export(5, 100).unwrap()[0].id, 6);
    // Refusals page the same way.
    let junk: Vec<JournalReceipt> = (8..12)
        .map(|index| JournalReceipt {
            index,
            receipt: format!("junk-{index}"),
            voucher: None,
        })
        .collect();
    t.store(&junk);
    let first = t.ledger.refused(0, 3).unwrap();
    assert_eq!(first.len(), 3);
    let rest = t.ledger.refused(first[2].id, 3).unwrap();
    assert_eq!(
        rest.iter().map(|r| r.jws.as_str()).collect::<Vec<_>>(),
        vec!["junk-11"]
    );
}

#[test]
fn a_page_of_a_thousand_is_stored_in_one_call() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice", "bob", "carol", "dave"], 1000);
    let outcome = t.store(&page);
    assert_eq!((outcome.stored.len(), outcome.cursor), (1000, 1000));
    assert_eq!(t.ledger.totals().unwrap().receipts, 1000);
    assert_eq!(t.ledger.usage(None).unwrap().len(), 4);
}

#[test]
fn an_sqlite_failure_mid_page_keeps_nothing_of_the_page() {
    let mut t = Setup::new();
    let page = t.meter.serve_many(&["alice", "bob"], 5);
    // Make the fourth insert fail inside SQLite (this connection only).
    t.ledger
        .conn
        .execute_batch(
            "CREATE TEMP TRIGGER fail_fourth BEFORE INSERT ON receipts \
             WHEN NEW.journal_index = 4 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .unwrap();
    let err = message(t.ledger.store("g1", &t.meter.key(), &page).unwrap_err());
    assert!(err.contains("injected failure"), "{err}");
    assert!(err.contains("ledger.sqlite3"), "{err}");
    assert_eq!(t.cursor(), 0);
    assert_eq!(t.ledger.totals().unwrap().receipts, 0);
    assert!(t.ledger.refused(0, 10).unwrap().is_empty());

    t.ledger
        .conn
        .execute_batch("DROP TRIGGER fail_fourth")
        .unwrap();
    let outcome = t.store(&page);
    assert_eq!((outcome.stored.len(), outcome.cursor), (5, 5));
}

#[test]
fn a_key_is_one_guest_boot() {
    let mut t = Setup::new();
    // Verified again later: the epoch widens.
    t.ledger
        .record_verification("g1", &t.meter.key(), &info(1_700_000_900))
        .unwrap();
    t.ledger
        .record_verification("g1", &t.meter.key(), &info(1_600_000_000))
        .unwrap();
    let epoch = &t.ledger.epochs().unwrap()[0];
    assert_eq!(
        (epoch.first_verified_at, epoch.last_verified_at),
        (1_600_000_000, 1_700_000_900)
    );
    assert_eq!(epoch.config_digest, Some("44".repeat(32)));
    // The same key claimed by another guest, or with other facts, is an error.
    let err = message(
        t.ledger
            .record_verification("g2", &t.meter.key(), &info(1_700_001_000))
            .unwrap_err(),
    );
    assert!(err.contains("one key is one guest boot"), "{err}");
    let mut other = info(1_700_001_000);
    other.config_digest = None;
    assert!(t
        .ledger
        .record_verification("g1", &t.meter.key(), &other)
        .is_err());
    // Receipts collected under the key by another guest name: nothing stored.
    let page = t.meter.serve_many(&["alice"], 1);
    let err = message(t.ledger.store("g2", &t.meter.key(), &page).unwrap_err());
    assert!(err.contains("verified for guest g1, not g2"), "{err}");
    assert_eq!(t.cursor(), 0);
}

/// A pragma's value as text, read through `conn`.
fn pragma(conn: &rusqlite::Connection, name: &str) -> String {
    use rusqlite::types::Value;
    let value: Value = conn
        .pragma_query_value(None, name, |row| row.get(0))
        .expect("pragma");
    match value {
        Value::Integer(n) => n.to_string(),
        Value::Text(text) => text,
        other => format!("{other:?}"),
    }
}

/// A plain SQLite connection to the file, beside (or instead of) the ledger's.
fn raw(scratch: &Scratch) -> rusqlite::Connection {
    rusqlite::Connection::open(scratch.file()).expect("raw connection")
}

#[test]
fn the_file_is_in_wal_mode_with_full_sync_and_foreign_keys() {
    let scratch = Scratch::new();
    let ledger = Ledger::open(&scratch.file()).unwrap();
    assert_eq!(pragma(&ledger.conn, "journal_mode"), "wal");
    assert_eq!(pragma(&ledger.conn, "synchronous"), "2"); // FULL
    assert_eq!(pragma(&ledger.conn, "foreign_keys"), "1");
    assert_eq!(pragma(&ledger.conn, "busy_timeout"), "10000");
    assert_eq!(
        pragma(&ledger.conn, "application_id"),
        schema::APPLICATION_ID.to_string()
    );
    // WAL is a property of the file: another connection sees it too.
    assert_eq!(pragma(&raw(&scratch), "journal_mode"), "wal");
}

#[test]
fn reopening_migrates_once_and_keeps_the_version() {
    let scratch = Scratch::new();
    let ledger = Ledger::open(&scratch.file()).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, schema::MIGRATIONS.len() as u32);
    drop(ledger);
    for _ in 0..2 {
        let ledger = Ledger::open(&scratch.file()).unwrap();
        assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
        let tables: i64 = ledger
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' \
                 AND name IN ('epochs', 'cursors', 'receipts', 'refused_receipts')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 4);
    }
}

#[test]
fn a_file_from_a_newer_agent_is_refused() {
    let scratch = Scratch::new();
    drop(Ledger::open(&scratch.file()).unwrap());
    raw(&scratch)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = message(Ledger::open(&scratch.file()).unwrap_err());
    assert!(
        err.contains(&format!(
            "schema version {} is newer than this agent knows ({SCHEMA_VERSION})",
            SCHEMA_VERSION + 1
        )),
        "{err}"
    );
    assert!(err.contains("ledger.sqlite3"), "{err}");
}

#[test]
fn a_foreign_sqlite_file_is_refused_untouched() {
    let scratch = Scratch::new();
    raw(&scratch)
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let err = message(Ledger::open(&scratch.file()).unwrap_err());
    assert!(err.contains("not a Cocoon ledger"), "{err}");
    let after = raw(&scratch);
    let tables: i64 = after
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 1);
    assert_eq!(pragma(&after, "journal_mode"), "delete");
    assert_eq!(pragma(&after, "user_version"), "0");
}

#[test]
fn refusal_labels_round_trip() {
    for reason in RefusalReason::ALL {
        assert_eq!(RefusalReason::from_label(reason.as_str()), Some(reason));
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            serde_json::Value::String(reason.as_str().into())
        );
    }
    assert_eq!(RefusalReason::from_label("other"), None);
}

#[test]
fn chain_rules_alone() {
    let mut meter = Meter::boot();
    let first = meter.bill("alice", tokens(5, 1, 2));
    assert_eq!(check::continues(None, &first), Ok(()));
    let head = check::ChainHead {
        sequence: first.sequence,
        cumulative: first.cumulative,
    };
    let second = meter.bill("alice", tokens(5, 0, 9));
    assert_eq!(check::continues(Some(&head), &second), Ok(()));
    let (reason, _) = check::continues(None, &second).unwrap_err();
    assert_eq!(reason, RefusalReason::Gap);
    let mut overflowing = second.clone();
    overflowing.charge = u64::MAX;
    let (reason, detail) = check::continues(Some(&head), &overflowing).unwrap_err();
    assert_eq!(reason, RefusalReason::Totals);
    assert!(detail.contains("cumulative.charge: previous"), "{detail}");
    assert!(detail.contains("overflows"), "{detail}");
}
