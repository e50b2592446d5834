//! The receipt ledger: where the host agent keeps the usage receipts it collects from its
//! guests, in one SQLite file.
//!
//! **Why it is built this way.** The host is outside the trust boundary, so nobody (a
//! client disputing a bill, an auditor) should have to trust the ledger or its operator.
//! It stores each receipt's original JWS next to its decoded columns, and the receipt key
//! of every epoch with the attestation facts it was verified under, so anyone can take an
//! export and re-verify every signature and every chain without this code. The checks
//! here (signature under the attested key, per-account sequence, cumulative totals) exist
//! so the *operator* learns at collection time when something is off, not so the ledger
//! can vouch for anything.
//!
//! **Epochs.** A guest boot makes a fresh receipt key, bound in its attestation evidence;
//! journal indexes and per-account sequences restart at 1. The collector records each
//! verified key first ([`Ledger::record_verification`]); receipts are only ever checked
//! against a key recorded that way.
//!
//! **Idempotence.** The collector asks for receipts after [`Ledger::cursor`], stores a page
//! ([`Ledger::store`]), and acknowledges up to the returned cursor only then. A crash
//! anywhere in between makes it fetch and store the same page again, which is harmless:
//! indexes at or below the cursor are skipped, and a receipt already stored (same key,
//! account and sequence, same JWS) is a duplicate, not an error.
//!
//! **Crash safety.** A page is one `BEGIN IMMEDIATE … COMMIT` transaction; the file is in
//! WAL mode with `synchronous=FULL`, so `store` returns only after the commit is on disk.
//! Either the whole page (receipts, refusals and the new cursor) is durable or none of it
//! is; on any SQLite error the transaction rolls back and `store` returns the error, and
//! the collector must not acknowledge.
//!
//! **Refusals.** A receipt that does not check out (unknown key, bad signature, malformed,
//! a gap or fork in its account's sequence, totals that do not add up) is not dropped:
//! it goes, with its JWS, the reason and a precise detail, to a table of its own for
//! inspection, and the cursor passes it like a stored one (the guest may then drop it;
//! the ledger still has it). A refusal means the guest's statement and the ledger's view
//! disagree, and someone should look; it is never silently repaired. Later receipts of
//! the account are checked against the last *accepted* one, so after a refusal they
//! show up as gaps: the ledger's totals stay exactly what verified chains state.
//!
//! - `schema`: the file's settings and migrations; `check`: the chain rules;
//! - `read`: what the admin API reads (usage, epochs, export, refusals, totals);
//! - `vouchers`: escrow vouchers, checked and stored with their receipts;
//! - `settlements`: the charges the agent sends, stored before they are sent.

#[cfg(test)]
mod billing_tests;
mod check;
mod proofs;
mod read;
pub mod schema;
pub mod settlements;
#[cfg(test)]
mod tests;
pub mod vouchers;

use std::path::{Path, PathBuf};

use cocoon_attestation::receipt::{verify_receipt, Cumulative, TokenCounts, UsageReceipt};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use check::ChainHead;

pub use schema::SCHEMA_VERSION;

/// Prepared statements kept per connection (a page store uses seven, the reads a few more).
const STATEMENT_CACHE: usize = 32;

/// One entry of the guest's receipt journal, as `GET /internal/v1/receipts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalReceipt {
    /// Position in the guest's journal for this boot, from 1.
    pub index: u64,
    /// The signed receipt (JWS compact).
    pub receipt: String,
    /// For an account that pays through an escrow: the voucher signed with the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<vouchers::JournalVoucher>,
}

/// What the attestation check established about a guest with a given receipt key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochInfo {
    /// The TEE the evidence came from (`tdx`, `sev-snp`, …).
    pub tee: String,
    /// The evidence chains to a development root, not a hardware vendor's.
    pub simulated: bool,
    /// SHA-256 (hex) of the guest's measured config, where the evidence binds one.
    pub config_digest: Option<String>,
    /// Unix seconds of the verification.
    pub verified_at: u64,
}

/// Why a receipt was refused (the `reason` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// No epoch was recorded for the key, or the signature does not verify under it.
    UnverifiedKey,
    /// Not a receipt this verifier reads (syntax, header, version, out-of-range numbers).
    Malformed,
    /// The account's sequence does not continue from its last accepted receipt.
    Gap,
    /// A different receipt is already stored under the same key, account and sequence.
    Fork,
    /// The cumulative totals are not the previous ones plus this request.
    Totals,
}

impl RefusalReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RefusalReason; 5] = [
        Self::UnverifiedKey,
        Self::Malformed,
        Self::Gap,
        Self::Fork,
        Self::Totals,
    ];

    /// The label stored in the ledger and used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnverifiedKey => "unverified_key",
            Self::Malformed => "malformed",
            Self::Gap => "gap",
            Self::Fork => "fork",
            Self::Totals => "totals",
        }
    }

    /// The reason with label `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == label)
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One receipt refused by [`Ledger::store`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Its journal index.
    pub index: u64,
    pub reason: RefusalReason,
    /// What exactly was wrong (expected and observed values).
    pub detail: String,
}

/// What one [`Ledger::store`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Receipts newly stored, in journal order.
    pub stored: Vec<UsageReceipt>,
    /// Entries already handled (at or below the cursor, or the same receipt already
    /// stored): no-ops.
    pub duplicates: usize,
    /// Entries refused, in journal order (kept in the ledger's refused table).
    pub refused: Vec<Refusal>,
    /// Vouchers stored with the receipts of this page.
    pub vouchers: usize,
    /// Vouchers refused (journal index, why), kept in `refused_vouchers`; their receipts
    /// may still be stored.
    pub refused_vouchers: Vec<(u64, String)>,
    /// The cursor after this page: the collector may acknowledge up to here.
    pub cursor: u64,
}

/// A stored receipt, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReceipt {
    /// Ledger id: increases with every stored receipt, never reused.
    pub id: i64,
    /// The guest (its configured name) it was collected from.
    pub guest: String,
    /// Hex of the receipt key it verified under.
    pub receipt_key: String,
    pub journal_index: u64,
    /// Unix seconds when it was stored.
    pub stored_at: u64,
    pub receipt: UsageReceipt,
    /// The JWS as the guest signed it: re-verify it with `receipt_key`.
    pub jws: String,
}

/// A refused receipt, as kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedReceipt {
    /// Increases with every refusal, never reused.
    pub id: i64,
    pub guest: String,
    /// Hex of the receipt key the collector presented it under.
    pub receipt_key: String,
    pub journal_index: u64,
    pub reason: RefusalReason,
    pub detail: String,
    /// The JWS as received.
    pub jws: String,
    /// Unix seconds when it was refused.
    pub refused_at: u64,
}

/// One account's latest state under one receipt key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochUsage {
    /// Hex of the receipt key.
    pub receipt_key: String,
    pub guest: String,
    /// The latest accepted sequence.
    pub sequence: u64,
    /// Its cumulative totals: everything owed under this key.
    pub cumulative: Cumulative,
    /// Its `issued_at`.
    pub issued_at: u64,
}

/// One account's usage over every epoch, from the stored receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUsage {
    pub account: String,
    /// Stored receipts (one per request).
    pub requests: u64,
    /// Sum of the receipts' tokens.
    pub tokens: TokenCounts,
    /// Sum of the receipts' charges.
    pub charge: u64,
    /// Number of epochs (receipt keys) with receipts of this account.
    pub epochs: u64,
    /// The latest `issued_at` of its receipts.
    pub last_issued_at: u64,
    /// The latest cumulative totals per epoch, oldest epoch first. Within an epoch they
    /// equal the sums of that epoch's receipts (the chain checks guarantee it).
    pub per_epoch: Vec<EpochUsage>,
}

/// One receipt key: one guest boot that passed the attestation check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub guest: String,
    /// Hex of the receipt key.
    pub receipt_key: String,
    pub tee: String,
    pub simulated: bool,
    pub config_digest: Option<String>,
    pub first_verified_at: u64,
    pub last_verified_at: u64,
    /// The highest journal index handled under this key.
    pub cursor: u64,
    /// Receipts stored under this key.
    pub receipts: u64,
    /// Receipts refused under this key.
    pub refused: u64,
}

/// Counts over the whole ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTotals {
    /// Receipts stored.
    pub receipts: u64,
    /// Receipts refused, by reason label (every reason present, zeros included).
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Epochs recorded.
    pub epochs: u64,
}

/// The receipt ledger (one SQLite file; one `Ledger` per writer).
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

/// What to do with one journal entry above the cursor.
enum Verdict {
    Accept(Box<UsageReceipt>, [i64; 12]),
    Duplicate,
    Refuse(RefusalReason, String),
}

impl Ledger {
    /// Opens or creates the SQLite file: journal_mode=WAL, synchronous=FULL,
    /// foreign_keys=ON, a busy timeout; applies the migrations it lacks, each in its own
    /// transaction. Refuses a file that is not a Cocoon ledger, or whose schema version
    /// is newer than this code knows.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = schema::open(path)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The SQLite connection, for tests that build ledger states by hand.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &Connection {
        &self.conn
    }

    /// The file this ledger is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current schema version.
    pub fn schema_version(&self) -> Result<u32> {
        schema::version(&self.conn).map_err(|e| db_error(&self.path, e))
    }

    /// Records that `guest` (its configured name) was verified with this receipt key:
    /// creates the key's epoch, or widens its first/last verification times. A key is
    /// one guest boot, so the same key under another guest name or other attestation
    /// facts is refused (an error; nothing is changed).
    pub fn record_verification(
        &mut self,
        guest: &str,
        receipt_key: &[u8; 32],
        info: &EpochInfo,
    ) -> Result<()> {
        let path = &self.path;
        let fail = |e| db_error(path, e);
        let key = hex::encode(receipt_key);
        let at = i64::try_from(info.verified_at).map_err(|_| {
            ledger_error(
                path,
                format!("verification time {} is out of range", info.verified_at),
            )
        })?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let known = tx
            .prepare_cached(
                "SELECT guest, tee, simulated, config_digest FROM epochs WHERE receipt_key = ?1",
            )
            .and_then(|mut s| {
                s.query_row([&key], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, bool>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(fail)?;
        match known {
            None => {
                tx.prepare_cached(
                    "INSERT INTO epochs (receipt_key, guest, tee, simulated, config_digest, \
                     first_verified_at, last_verified_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        key,
                        guest,
                        info.tee,
                        info.simulated,
                        info.config_digest,
                        at
                    ])
                })
                .map_err(fail)?;
            }
            Some(was) => {
                let now = (
                    guest.to_string(),
                    info.tee.clone(),
                    info.simulated,
                    info.config_digest.clone(),
                );
                if was != now {
                    return Err(ledger_error(
                        path,
                        format!(
                            "receipt key {key} was recorded as (guest, tee, simulated, \
                             config digest) {was:?}, now presented as {now:?}: one key is \
                             one guest boot"
                        ),
                    ));
                }
                tx.prepare_cached(
                    "UPDATE epochs SET first_verified_at = min(first_verified_at, ?2), \
                     last_verified_at = max(last_verified_at, ?2) WHERE receipt_key = ?1",
                )
                .and_then(|mut s| s.execute(params![key, at]))
                .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    /// The highest journal index already handled (stored or refused) under this key; 0
    /// if none. The collector asks the guest for receipts after this.
    pub fn cursor(&self, receipt_key: &[u8; 32]) -> Result<u64> {
        read_cursor(&self.conn, &hex::encode(receipt_key)).map_err(|e| db_error(&self.path, e))
    }

    /// Checks and stores one page of the guest's journal in one transaction, returning
    /// only after it is committed (and so on disk). Entries are taken in index order:
    /// those at or below the cursor are skipped as duplicates; each other one is stored
    /// or refused (see the module docs), and the cursor moves past it. On any error
    /// nothing of the page is kept.
    pub fn store(
        &mut self,
        guest: &str,
        receipt_key: &[u8; 32],
        page: &[JournalReceipt],
    ) -> Result<StoreOutcome> {
        let path = &self.path;
        let fail = |e| db_error(path, e);
        let key = hex::encode(receipt_key);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let epoch_guest: Option<String> = tx
            .prepare_cached("SELECT guest FROM epochs WHERE receipt_key = ?1")
            .and_then(|mut s| s.query_row([&key], |row| row.get(0)).optional())
            .map_err(fail)?;
        if let Some(verified) = epoch_guest.as_deref().filter(|g| *g != guest) {
            return Err(ledger_error(
                path,
                format!(
                    "receipt key {key} was verified for guest {verified}, not {guest}: \
                     nothing stored"
                ),
            ));
        }
        let mut outcome = StoreOutcome {
            cursor: read_cursor(&tx, &key).map_err(fail)?,
            ..StoreOutcome::default()
        };
        let mut entries: Vec<&JournalReceipt> = page.iter().collect();
        entries.sort_by_key(|entry| entry.index);
        let now = unix_now();
        let mut last_index = None;
        for entry in entries {
            if entry.index <= outcome.cursor {
                outcome.duplicates += 1;
                continue;
            }
            let index = i64::try_from(entry.index).map_err(|_| {
                ledger_error(
                    path,
                    format!(
                        "journal index {} is out of range: nothing stored",
                        entry.index
                    ),
                )
            })?;
            let place = Place {
                key: &key,
                index,
                guest,
                // Whitespace around a JWS is not part of it (the verifier ignores it too).
                jws: entry.receipt.trim(),
                at: now,
            };
            let verdict = judge(&tx, receipt_key, epoch_guest.is_some(), &place);
            match verdict.map_err(fail)? {
                Verdict::Accept(receipt, integers) => {
                    insert_receipt(&tx, &place, &receipt, &integers).map_err(fail)?;
                    if let Some(voucher) = &entry.voucher {
                        let stored = match vouchers::check(receipt_key, &receipt, voucher) {
                            Ok(checked) => {
                                vouchers::insert(&tx, &key, &receipt.account, &checked, now)
                                    .map_err(fail)?
                            }
                            Err(detail) => Err(detail),
                        };
                        match stored {
                            Ok(()) => outcome.vouchers += 1,
                            Err(detail) => {
                                vouchers::refuse(&tx, &key, index, guest, &detail, voucher, now)
                                    .map_err(fail)?;
                                outcome.refused_vouchers.push((entry.index, detail));
                            }
                        }
                    }
                    outcome.stored.push(*receipt);
                }
                Verdict::Duplicate => outcome.duplicates += 1,
                Verdict::Refuse(reason, detail) => {
                    tx.prepare_cached(
                        "INSERT INTO refused_receipts (receipt_key, journal_index, guest, \
                         reason, detail, jws, refused_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            place.key,
                            place.index,
                            place.guest,
                            reason.as_str(),
                            detail,
                            place.jws,
                            place.at
                        ])
                    })
                    .map_err(fail)?;
                    if let Some(voucher) = &entry.voucher {
                        let why = format!("its receipt was refused ({reason})");
                        vouchers::refuse(&tx, &key, index, guest, &why, voucher, now)
                            .map_err(fail)?;
                        outcome.refused_vouchers.push((entry.index, why));
                    }
                    outcome.refused.push(Refusal {
                        index: entry.index,
                        reason,
                        detail,
                    });
                }
            }
            outcome.cursor = entry.index;
            last_index = Some(index);
        }
        if let Some(index) = last_index {
            tx.prepare_cached(
                "INSERT INTO cursors (receipt_key, journal_index) VALUES (?1, ?2) \
                 ON CONFLICT (receipt_key) DO UPDATE SET journal_index = excluded.journal_index",
            )
            .and_then(|mut s| s.execute(params![key, index]))
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(outcome)
    }
}

/// Decides one entry above the cursor: the key, the signature, the numbers, then the
/// account's chain.
fn judge(
    tx: &Transaction<'_>,
    receipt_key: &[u8; 32],
    epoch_known: bool,
    place: &Place<'_>,
) -> rusqlite::Result<Verdict> {
    let (key, jws) = (place.key, place.jws);
    if !epoch_known {
        return Ok(Verdict::Refuse(
            RefusalReason::UnverifiedKey,
            format!("receipt key {key} has no epoch: the agent never verified a guest with it"),
        ));
    }
    let receipt = match verify_receipt(jws, receipt_key) {
        Ok(receipt) => receipt,
        Err(cocoon_attestation::Error::BadSignature(e)) => {
            return Ok(Verdict::Refuse(
                RefusalReason::UnverifiedKey,
                format!("signed by a key the agent has not verified ({e})"),
            ))
        }
        Err(e) => return Ok(Verdict::Refuse(RefusalReason::Malformed, e.to_string())),
    };
    let integers = match check::integers(&receipt) {
        Ok(integers) => integers,
        Err(detail) => return Ok(Verdict::Refuse(RefusalReason::Malformed, detail)),
    };
    let sequence = integers[1];
    let stored = tx
        .prepare_cached(
            "SELECT id, journal_index, jws FROM receipts \
             WHERE receipt_key = ?1 AND account = ?2 AND sequence = ?3",
        )?
        .query_row(params![key, receipt.account, sequence], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    if let Some((id, index, stored_jws)) = stored {
        return Ok(if stored_jws == jws {
            Verdict::Duplicate
        } else {
            Verdict::Refuse(
                RefusalReason::Fork,
                format!(
                    "account {} sequence {}: ledger id {id} (journal index {index}) holds a \
                     different receipt signed with this key",
                    receipt.account, receipt.sequence
                ),
            )
        });
    }
    let head = tx
        .prepare_cached(
            "SELECT sequence, cum_requests, cum_prompt_tokens, cum_cached_tokens, \
             cum_completion_tokens, cum_charge FROM receipts \
             WHERE receipt_key = ?1 AND account = ?2 ORDER BY sequence DESC LIMIT 1",
        )?
        .query_row(params![key, receipt.account], |row| {
            Ok(ChainHead {
                sequence: unsigned(row, 0)?,
                cumulative: cumulative_at(row, 1)?,
            })
        })
        .optional()?;
    Ok(match check::continues(head.as_ref(), &receipt) {
        Ok(()) => Verdict::Accept(Box::new(receipt), integers),
        Err((reason, detail)) => Verdict::Refuse(reason, detail),
    })
}

/// Where and when an entry of a page is being put.
struct Place<'a> {
    /// Hex of the receipt key.
    key: &'a str,
    /// Its journal index.
    index: i64,
    guest: &'a str,
    jws: &'a str,
    /// Unix seconds of this page.
    at: i64,
}

/// Inserts an accepted receipt; `integers` are its numbers in `check::INTEGER_FIELDS`
/// order.
fn insert_receipt(
    tx: &Transaction<'_>,
    place: &Place<'_>,
    receipt: &UsageReceipt,
    integers: &[i64; 12],
) -> rusqlite::Result<()> {
    let [version, sequence, prompt, cached, completion, charge, cum_requests, cum_prompt, cum_cached, cum_completion, cum_charge, issued_at] =
        *integers;
    tx.prepare_cached(
        "INSERT INTO receipts (receipt_key, journal_index, guest, version, account, sequence, \
         request_id, model, finish, prompt_tokens, cached_tokens, completion_tokens, charge, \
         cum_requests, cum_prompt_tokens, cum_cached_tokens, cum_completion_tokens, \
         cum_charge, request_sha256, response_sha256, price_table_sha256, issued_at, \
         stored_at, jws) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
         ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    )?
    .execute(params![
        place.key,
        place.index,
        place.guest,
        version,
        receipt.account,
        sequence,
        receipt.request_id,
        receipt.model,
        receipt.finish,
        prompt,
        cached,
        completion,
        charge,
        cum_requests,
        cum_prompt,
        cum_cached,
        cum_completion,
        cum_charge,
        receipt.request_sha256,
        receipt.response_sha256,
        receipt.price_table_sha256,
        issued_at,
        place.at,
        place.jws
    ])?;
    Ok(())
}

fn read_cursor(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT journal_index FROM cursors WHERE receipt_key = ?1")?
        .query_row([key], |row| unsigned(row, 0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// Column `index` as the unsigned integer it was stored from (a value out of range is a
/// file not written by this code).
fn unsigned<T>(row: &Row<'_>, index: usize) -> rusqlite::Result<T>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let value: i64 = row.get(index)?;
    T::try_from(value).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Integer,
            Box::new(e),
        )
    })
}

/// Five columns from `first`: cumulative requests, prompt, cached and completion tokens,
/// charge.
fn cumulative_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Cumulative> {
    Ok(Cumulative {
        requests: unsigned(row, first)?,
        tokens: tokens_at(row, first + 1)?,
        charge: unsigned(row, first + 4)?,
    })
}

/// Three columns from `first`: prompt, cached and completion tokens.
fn tokens_at(row: &Row<'_>, first: usize) -> rusqlite::Result<TokenCounts> {
    Ok(TokenCounts {
        prompt_tokens: unsigned(row, first)?,
        cached_tokens: unsigned(row, first + 1)?,
        completion_tokens: unsigned(row, first + 2)?,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ledger_error(path: &Path, detail: String) -> Error {
    Error::Ledger {
        path: path.to_path_buf(),
        detail,
    }
}

fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    ledger_error(path, e.to_string())
}
