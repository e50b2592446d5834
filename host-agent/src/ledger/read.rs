//! What the admin API reads: usage per account, epochs, the export of stored receipts,
//! refusals and totals. Reads only; each sees one committed state (WAL readers never wait
//! for the collector, nor it for them).

use std::collections::BTreeMap;

use cocoon_attestation::receipt::UsageReceipt;
use rusqlite::{Params, Row};

use super::{
    cumulative_at, db_error, ledger_error, tokens_at, unsigned, AccountUsage, Epoch, EpochUsage,
    Ledger, LedgerTotals, RefusalReason, RefusedReceipt, StoredReceipt,
};
use crate::error::Result;

/// Per-account sums over every stored receipt (`?1` NULL: every account).
const USAGE_SUMS: &str = "SELECT account, count(*), sum(prompt_tokens), sum(cached_tokens), \
     sum(completion_tokens), sum(charge), count(DISTINCT receipt_key), max(issued_at) \
     FROM receipts WHERE ?1 IS NULL OR account = ?1 GROUP BY account ORDER BY account";

/// Each account's latest receipt per epoch. SQLite takes the bare columns of a
/// `max()` aggregate from the row holding the maximum, so these are that receipt's.
const USAGE_LATEST: &str = "SELECT r.account, r.receipt_key, e.guest, max(r.sequence), \
     r.cum_requests, r.cum_prompt_tokens, r.cum_cached_tokens, r.cum_completion_tokens, \
     r.cum_charge, r.issued_at, e.first_verified_at \
     FROM receipts r JOIN epochs e ON e.receipt_key = r.receipt_key \
     WHERE ?1 IS NULL OR r.account = ?1 \
     GROUP BY r.receipt_key, r.account \
     ORDER BY r.account, e.first_verified_at, r.receipt_key";

const EPOCHS: &str = "SELECT e.guest, e.receipt_key, e.tee, e.simulated, e.config_digest, \
     e.first_verified_at, e.last_verified_at, coalesce(c.journal_index, 0), \
     (SELECT count(*) FROM receipts r WHERE r.receipt_key = e.receipt_key), \
     (SELECT count(*) FROM refused_receipts f WHERE f.receipt_key = e.receipt_key) \
     FROM epochs e LEFT JOIN cursors c ON c.receipt_key = e.receipt_key \
     ORDER BY e.first_verified_at, e.receipt_key";

const EXPORT: &str = "SELECT id, guest, receipt_key, journal_index, stored_at, jws, version, \
     request_id, account, model, finish, prompt_tokens, cached_tokens, completion_tokens, \
     request_sha256, response_sha256, charge, price_table_sha256, issued_at, sequence, \
     cum_requests, cum_prompt_tokens, cum_cached_tokens, cum_completion_tokens, cum_charge \
     FROM receipts WHERE id > ?1 ORDER BY id LIMIT ?2";

const REFUSED: &str = "SELECT id, guest, receipt_key, journal_index, reason, detail, jws, \
     refused_at FROM refused_receipts WHERE id > ?1 ORDER BY id LIMIT ?2";

impl Ledger {
    /// Usage per account (only `account` when given), summed over every epoch, with
    /// each epoch's latest cumulative totals.
    pub fn usage(&self, account: Option<&str>) -> Result<Vec<AccountUsage>> {
        // One snapshot for both queries (read only: dropping it ends it).
        let _snapshot = self
            .conn
            .unchecked_transaction()
            .map_err(|e| db_error(&self.path, e))?;
        let sums = self.all(USAGE_SUMS, [account], |row| {
            Ok(AccountUsage {
                account: row.get(0)?,
                requests: unsigned(row, 1)?,
                tokens: tokens_at(row, 2)?,
                charge: unsigned(row, 5)?,
                epochs: unsigned(row, 6)?,
                last_issued_at: unsigned(row, 7)?,
                per_epoch: Vec::new(),
            })
        })?;
        let mut accounts: BTreeMap<String, AccountUsage> = sums
            .into_iter()
            .map(|usage| (usage.account.clone(), usage))
            .collect();
        let latest = self.all(USAGE_LATEST, [account], |row| {
            Ok((
                row.get::<_, String>(0)?,
                EpochUsage {
                    receipt_key: row.get(1)?,
                    guest: row.get(2)?,
                    sequence: unsigned(row, 3)?,
                    cumulative: cumulative_at(row, 4)?,
                    issued_at: unsigned(row, 9)?,
                },
            ))
        })?;
        for (name, epoch) in latest {
            let usage = accounts.get_mut(&name).ok_or_else(|| {
                ledger_error(
                    &self.path,
                    format!("account {name} has a latest receipt but no sums"),
                )
            })?;
            usage.per_epoch.push(epoch);
        }
        Ok(accounts.into_values().collect())
    }

    /// Every epoch (receipt key) recorded, oldest verification first.
    pub fn epochs(&self) -> Result<Vec<Epoch>> {
        self.all(EPOCHS, [], |row| {
            Ok(Epoch {
                guest: row.get(0)?,
                receipt_key: row.get(1)?,
                tee: row.get(2)?,
                simulated: row.get(3)?,
                config_digest: row.get(4)?,
                first_verified_at: unsigned(row, 5)?,
                last_verified_at: unsigned(row, 6)?,
                cursor: unsigned(row, 7)?,
                receipts: unsigned(row, 8)?,
                refused: unsigned(row, 9)?,
            })
        })
    }

    /// Stored receipts with ledger id greater than `since`, ascending, at most `limit`.
    /// Page with the last id returned as the next `since`.
    pub fn export(&self, since: i64, limit: usize) -> Result<Vec<StoredReceipt>> {
        self.all(EXPORT, [since, sql_limit(limit)], stored_receipt)
    }

    /// Refused receipts with id greater than `since`, ascending, at most `limit`.
    pub fn refused(&self, since: i64, limit: usize) -> Result<Vec<RefusedReceipt>> {
        self.all(REFUSED, [since, sql_limit(limit)], |row| {
            let (id, guest, receipt_key, journal_index) = origin(row)?;
            Ok(RefusedReceipt {
                id,
                guest,
                receipt_key,
                journal_index,
                reason: reason_at(row, 4)?,
                detail: row.get(5)?,
                jws: row.get(6)?,
                refused_at: unsigned(row, 7)?,
            })
        })
    }

    /// Receipts stored, refused by reason, epochs recorded.
    pub fn totals(&self) -> Result<LedgerTotals> {
        let fail = |e| db_error(&self.path, e);
        let count = |sql: &str| -> Result<u64> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.query_row([], |row| unsigned(row, 0)))
                .map_err(fail)
        };
        let receipts = count("SELECT count(*) FROM receipts")?;
        let epochs = count("SELECT count(*) FROM epochs")?;
        let mut refused: BTreeMap<String, u64> = RefusalReason::ALL
            .iter()
            .map(|reason| (reason.as_str().to_string(), 0))
            .collect();
        let counts = self.all(
            "SELECT reason, count(*) FROM refused_receipts GROUP BY reason",
            [],
            |row| Ok((reason_at(row, 0)?, unsigned(row, 1)?)),
        )?;
        for (reason, n) in counts {
            refused.insert(reason.as_str().to_string(), n);
        }
        Ok(LedgerTotals {
            receipts,
            refused,
            epochs,
        })
    }

    /// Every row of `sql` with `params`, mapped.
    pub(super) fn all<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let fail = |e| db_error(&self.path, e);
        let mut statement = self.conn.prepare_cached(sql).map_err(fail)?;
        let rows = statement.query_map(params, map).map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }
}

/// A page size as SQLite's `LIMIT` (beyond `i64::MAX` is "no limit" anyway).
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The first four columns of [`EXPORT`] and [`REFUSED`]: id, guest, receipt key, journal
/// index.
fn origin(row: &Row<'_>) -> rusqlite::Result<(i64, String, String, u64)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, unsigned(row, 3)?))
}

/// An [`EXPORT`] row.
fn stored_receipt(row: &Row<'_>) -> rusqlite::Result<StoredReceipt> {
    let (id, guest, receipt_key, journal_index) = origin(row)?;
    Ok(StoredReceipt {
        id,
        guest,
        receipt_key,
        journal_index,
        stored_at: unsigned(row, 4)?,
        jws: row.get(5)?,
        receipt: UsageReceipt {
            version: unsigned(row, 6)?,
            request_id: row.get(7)?,
            account: row.get(8)?,
            model: row.get(9)?,
            finish: row.get(10)?,
            tokens: tokens_at(row, 11)?,
            request_sha256: row.get(14)?,
            response_sha256: row.get(15)?,
            charge: unsigned(row, 16)?,
            price_table_sha256: row.get(17)?,
            issued_at: unsigned(row, 18)?,
            sequence: unsigned(row, 19)?,
            cumulative: cumulative_at(row, 20)?,
        },
    })
}

/// A refusal reason column (an unknown label is a file written by other code).
fn reason_at(row: &Row<'_>, index: usize) -> rusqlite::Result<RefusalReason> {
    let label: String = row.get(index)?;
    RefusalReason::from_label(&label).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown refusal reason {label:?}").into(),
        )
    })
}
