//! The ledger file's settings and schema, and the migrations that bring a file up to date.
//!
//! The schema version lives in the file (`PRAGMA user_version`) and the migrations in
//! [`MIGRATIONS`]: migration `n` (from 0) takes a file from version `n` to `n + 1`, in its
//! own `BEGIN IMMEDIATE` transaction that also sets the new version, so a crash leaves the
//! file at the old version or the new one, never between. A file whose version is newer
//! than this code knows is refused: an older agent must not misread (or "repair") what a
//! newer one wrote. `PRAGMA application_id` marks the file as a Cocoon ledger, so a path
//! that names some other SQLite database is refused instead of having tables added to it.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::{db_error, ledger_error};
use crate::error::{Error, Result};

/// `PRAGMA application_id` of a ledger file: "CCNL" (Cocoon ledger).
pub const APPLICATION_ID: i32 = 0x4343_4e4c;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Version 1: epochs (one per receipt key), the collector's cursor per key, accepted
/// receipts and refused ones.
///
/// - Integers are SQLite's signed 64-bit; the code refuses values beyond that range
///   before they get here, so every stored count reads back as the `u64` it was.
/// - `receipts.id` and `refused_receipts.id` are `AUTOINCREMENT`: never reused, so an
///   exporter that pages on "id greater than the last one I saw" never misses a row.
/// - `cursors` is apart from `epochs` because receipts under a key nobody verified are
///   refused (and their indexes passed) too.
/// - `refused_receipts` has no foreign key to `epochs`, for the same reason.
const V1: &str = "
CREATE TABLE epochs (
    receipt_key       TEXT PRIMARY KEY CHECK (length(receipt_key) = 64),
    guest             TEXT NOT NULL,
    tee               TEXT NOT NULL,
    simulated         INTEGER NOT NULL CHECK (simulated IN (0, 1)),
    config_digest     TEXT,
    first_verified_at INTEGER NOT NULL,
    last_verified_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE cursors (
    receipt_key   TEXT PRIMARY KEY CHECK (length(receipt_key) = 64),
    journal_index INTEGER NOT NULL CHECK (journal_index >= 0)
) STRICT;

CREATE TABLE receipts (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_key           TEXT NOT NULL REFERENCES epochs (receipt_key),
    journal_index         INTEGER NOT NULL CHECK (journal_index > 0),
    guest                 TEXT NOT NULL,
    version               INTEGER NOT NULL,
    account               TEXT NOT NULL,
    sequence              INTEGER NOT NULL CHECK (sequence > 0),
    request_id            TEXT NOT NULL,
    model                 TEXT NOT NULL,
    finish                TEXT NOT NULL,
    prompt_tokens         INTEGER NOT NULL,
    cached_tokens         INTEGER NOT NULL,
    completion_tokens     INTEGER NOT NULL,
    charge                INTEGER NOT NULL,
    cum_requests          INTEGER NOT NULL,
    cum_prompt_tokens     INTEGER NOT NULL,
    cum_cached_tokens     INTEGER NOT NULL,
    cum_completion_tokens INTEGER NOT NULL,
    cum_charge            INTEGER NOT NULL,
    request_sha256        TEXT NOT NULL,
    response_sha256       TEXT NOT NULL,
    price_table_sha256    TEXT NOT NULL,
    issued_at             INTEGER NOT NULL,
    stored_at             INTEGER NOT NULL,
    jws                   TEXT NOT NULL,
    UNIQUE (receipt_key, account, sequence),
    UNIQUE (receipt_key, journal_index)
) STRICT;

CREATE INDEX receipts_by_account ON receipts (account, receipt_key, sequence);

CREATE TABLE refused_receipts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_key   TEXT NOT NULL CHECK (length(receipt_key) = 64),
    journal_index INTEGER NOT NULL CHECK (journal_index > 0),
    guest         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    detail        TEXT NOT NULL,
    jws           TEXT NOT NULL,
    refused_at    INTEGER NOT NULL,
    UNIQUE (receipt_key, journal_index)
) STRICT;
";

/// Version 2: escrow billing. Vouchers (stored with the receipt they came with, in the same
/// transaction, before the guest may drop either), vouchers refused at collection, the
/// settlements the agent builds (each one wallet external message, stored before it is sent)
/// with their items (one charge each), and the last escrow state read from the chain per
/// (escrow, guest key).
///
/// - Amounts are nanoton as signed 64-bit integers (9.2e9 TON at most); larger values are
///   refused before they get here.
/// - BoCs are stored as the bytes that were checked, so anyone can re-check them.
/// - `settlements.state`: `pending` (stored, maybe not sent) → `sent` → `confirmed` (every
///   item landed) | `expired` (never applied before `valid_until`: its items are tried again
///   in a new message) | `failed` (the wallet used its seqno but some item did not land).
/// - `settlement_items.state`: `pending` → `landed` | `failed` | `expired`. A voucher with a
///   `failed` item is never sent again (a newer voucher of its key is tried instead).
/// - `chain_guests` only ever moves forward (the escrow's counters are monotonic): a voucher
///   at or below its `seq` is settled.
const V2: &str = "
CREATE TABLE vouchers (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_key       TEXT NOT NULL REFERENCES epochs (receipt_key),
    account           TEXT NOT NULL,
    escrow            TEXT NOT NULL,
    seq               INTEGER NOT NULL CHECK (seq > 0),
    prompt_tokens     INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    payout            TEXT NOT NULL,
    expires_at        INTEGER NOT NULL,
    cap               INTEGER NOT NULL,
    voucher           BLOB NOT NULL,
    authorization     BLOB NOT NULL,
    stored_at         INTEGER NOT NULL,
    UNIQUE (receipt_key, account, seq)
) STRICT;

CREATE INDEX vouchers_by_escrow ON vouchers (escrow, receipt_key, seq);

CREATE TABLE refused_vouchers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_key TEXT NOT NULL CHECK (length(receipt_key) = 64),
    journal_index INTEGER NOT NULL,
    guest       TEXT NOT NULL,
    detail      TEXT NOT NULL,
    escrow      TEXT NOT NULL,
    voucher     TEXT NOT NULL,
    authorization TEXT NOT NULL,
    refused_at  INTEGER NOT NULL,
    UNIQUE (receipt_key, journal_index)
) STRICT;

CREATE TABLE settlements (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    wallet         TEXT NOT NULL,
    seqno          INTEGER NOT NULL CHECK (seqno >= 0),
    valid_until    INTEGER NOT NULL,
    message        BLOB NOT NULL,
    message_hash   TEXT NOT NULL CHECK (length(message_hash) = 64),
    state          TEXT NOT NULL
                   CHECK (state IN ('pending', 'sent', 'confirmed', 'expired', 'failed')),
    detail         TEXT,
    wallet_balance INTEGER NOT NULL,
    gas            INTEGER,
    created_at     INTEGER NOT NULL,
    sent_at        INTEGER,
    finished_at    INTEGER
) STRICT;

CREATE INDEX settlements_by_state ON settlements (state);

CREATE TABLE settlement_items (
    settlement_id INTEGER NOT NULL REFERENCES settlements (id),
    position      INTEGER NOT NULL CHECK (position >= 0),
    voucher_id    INTEGER NOT NULL REFERENCES vouchers (id),
    escrow        TEXT NOT NULL,
    receipt_key   TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    charged       INTEGER NOT NULL,
    amount        INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'landed', 'failed', 'expired')),
    PRIMARY KEY (settlement_id, position)
) STRICT;

CREATE INDEX settlement_items_by_voucher ON settlement_items (voucher_id, state);

CREATE TABLE chain_guests (
    escrow      TEXT NOT NULL,
    receipt_key TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    charged     INTEGER NOT NULL,
    read_at     INTEGER NOT NULL,
    PRIMARY KEY (escrow, receipt_key)
) STRICT;
";

/// Every migration, oldest first: entry `n` takes a file from version `n` to `n + 1`.
/// Append only; never edit one that has shipped.
pub const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Opens `path` with the ledger's settings and brings its schema up to date.
pub(super) fn open(path: &Path) -> Result<Connection> {
    let fail = |e| db_error(path, e);
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    // Before changing anything in the file: is it ours, and a version we know?
    check_identity(&conn, path)?;
    // WAL: a commit is one append to the log, and readers (the admin API) never block the
    // collector. Persistent in the file; SQLite answers with the mode it actually got.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ledger_error(
            path,
            format!("journal_mode is {mode}, not wal (does the filesystem support WAL?)"),
        ));
    }
    // FULL: the log is fsynced at every commit, so a committed page survives power loss,
    // which is what lets the collector acknowledge (and the guest drop) its receipts.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(fail)?;
    migrate(conn, path)
}

/// The file's schema version.
pub(super) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn newer(path: &Path, found: u32) -> Error {
    ledger_error(
        path,
        format!(
            "schema version {found} is newer than this agent knows ({SCHEMA_VERSION}): the \
             file was written by a newer cocoon-host-agent; refusing to open it rather than \
             misread it"
        ),
    )
}

/// Refuses a file that is not a (fresh or existing) Cocoon ledger, or is too new.
fn check_identity(conn: &Connection, path: &Path) -> Result<()> {
    let fail = |e| db_error(path, e);
    let found = version(conn).map_err(fail)?;
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(fail)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(fail)?;
    let fresh = application_id == 0 && found == 0 && objects == 0;
    if application_id != APPLICATION_ID && !fresh {
        return Err(ledger_error(
            path,
            format!(
                "not a Cocoon ledger (application_id {application_id:#x}, user_version \
                 {found}, {objects} schema objects); refusing to add tables to it"
            ),
        ));
    }
    if found > SCHEMA_VERSION {
        return Err(newer(path, found));
    }
    Ok(())
}

/// Applies the migrations the file lacks, each in its own transaction. The version is
/// read again inside each transaction, so two agents opening one file at once do not
/// both apply a migration.
fn migrate(mut conn: Connection, path: &Path) -> Result<Connection> {
    let fail = |e| db_error(path, e);
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let found = version(&tx).map_err(fail)?;
        let Some(migration) = MIGRATIONS.get(found as usize) else {
            if found > SCHEMA_VERSION {
                return Err(newer(path, found));
            }
            // Up to date: nothing was written, the transaction ends here.
            tx.commit().map_err(fail)?;
            return Ok(conn);
        };
        tx.execute_batch(migration).map_err(|e| {
            ledger_error(
                path,
                format!("migration to schema version {}: {e}", found + 1),
            )
        })?;
        if found == 0 {
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(fail)?;
        }
        tx.pragma_update(None, "user_version", found + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
}
