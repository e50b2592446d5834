//! Settlements: the charge messages the agent sends to escrows, and what the chain said
//! about them.
//!
//! **Why every message is stored before it is sent.** A wallet external message is
//! identified by the wallet's seqno: once stored, a crash between "built" and "sent" (or
//! between "sent" and "confirmed") is recovered by looking at the chain, not guessed:
//! if the wallet's seqno moved past the message's, it was applied (and the escrows' own
//! counters say which charges landed); if not, the very same bytes are sent again, which
//! is harmless before `valid_until` (the wallet refuses a used seqno), and after
//! `valid_until` the message can never apply, so its charges go into a new one.
//!
//! **Why confirmation is by escrow state.** An external message being accepted says nothing
//! about the internal messages it causes. An item is settled when its escrow's
//! `get_guest(key).seq` reaches the item's voucher seq, read from the chain
//! ([`Ledger::record_chain_guest`] keeps the latest reading).

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension as _, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::vouchers::int;
use super::{db_error, ledger_error, unsigned, Ledger};
use crate::error::Result;

/// A settlement's state (see the schema's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementState {
    Pending,
    Sent,
    Confirmed,
    Expired,
    Failed,
}

impl SettlementState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Sent,
        Self::Confirmed,
        Self::Expired,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Confirmed => "confirmed",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == label)
    }

    /// Still waiting on the chain.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Sent)
    }
}

/// One charge's state within a settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Pending,
    Landed,
    Failed,
    Expired,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Landed => "landed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        [Self::Pending, Self::Landed, Self::Failed, Self::Expired]
            .into_iter()
            .find(|s| s.as_str() == label)
    }
}

/// The newest stored voucher of one (escrow, guest key) that the chain has not paid yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherHead {
    pub voucher_id: i64,
    /// `0:<hex>`.
    pub escrow: String,
    /// Hex.
    pub receipt_key: String,
    pub account: String,
    pub seq: u64,
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
    pub expires_at: u32,
    pub cap: u128,
    pub voucher_boc: Vec<u8>,
    pub authorization_boc: Vec<u8>,
    /// When the oldest voucher of the pair above the chain's seq was stored.
    pub oldest_unsettled_at: u64,
    /// The last chain reading for the pair (seq, charged), if any.
    pub chain: Option<(u64, u128)>,
}

/// A settlement to store (state `pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSettlement {
    /// The wallet's address, `0:<hex>`.
    pub wallet: String,
    pub seqno: u32,
    pub valid_until: u32,
    /// The external message BoC.
    pub message: Vec<u8>,
    pub message_hash: [u8; 32],
    /// The wallet's balance when the message was built.
    pub wallet_balance: u128,
    pub items: Vec<NewItem>,
}

/// One charge of a [`NewSettlement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub voucher_id: i64,
    pub escrow: String,
    pub receipt_key: String,
    pub seq: u64,
    /// The escrow's cumulative charge for the key once it lands.
    pub charged: u128,
    /// What it moves: `charged` less what the escrow had charged when it was built.
    pub amount: u128,
}

/// A stored settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settlement {
    pub id: i64,
    pub wallet: String,
    pub seqno: u32,
    pub valid_until: u32,
    #[serde(skip)]
    pub message: Vec<u8>,
    pub message_hash: String,
    pub state: SettlementState,
    pub detail: Option<String>,
    pub wallet_balance: u128,
    /// What the wallet's balance dropped by (charge values and fees), once confirmed.
    pub gas: Option<u128>,
    pub created_at: u64,
    pub sent_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub items: Vec<Item>,
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub position: u32,
    pub voucher_id: i64,
    pub escrow: String,
    pub receipt_key: String,
    pub seq: u64,
    pub charged: u128,
    pub amount: u128,
    pub state: ItemState,
}

/// Totals over every settlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettlementTotals {
    /// Settlements by state label (every state present).
    pub settlements: BTreeMap<String, u64>,
    /// Sum of landed items' amounts.
    pub settled_nanoton: u128,
    /// Sum of confirmed settlements' gas.
    pub gas_nanoton: u128,
    /// Vouchers stored / refused at collection.
    pub vouchers: u64,
    pub refused_vouchers: u64,
}

const SETTLEMENT_COLUMNS: &str = "id, wallet, seqno, valid_until, message, message_hash, state, \
     detail, wallet_balance, gas, created_at, sent_at, finished_at";

fn state_of<T>(
    row: &Row<'_>,
    index: usize,
    parse: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let label: String = row.get(index)?;
    parse(&label).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown state {label:?}").into(),
        )
    })
}

fn optional_unsigned<T>(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<T>>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(_) => unsigned(row, index).map(Some),
    }
}

fn settlement_row(row: &Row<'_>) -> rusqlite::Result<Settlement> {
    Ok(Settlement {
        id: row.get(0)?,
        wallet: row.get(1)?,
        seqno: unsigned(row, 2)?,
        valid_until: unsigned(row, 3)?,
        message: row.get(4)?,
        message_hash: row.get(5)?,
        state: state_of(row, 6, SettlementState::from_label)?,
        detail: row.get(7)?,
        wallet_balance: unsigned::<u64>(row, 8)?.into(),
        gas: optional_unsigned::<u64>(row, 9)?.map(u128::from),
        created_at: unsigned(row, 10)?,
        sent_at: optional_unsigned(row, 11)?,
        finished_at: optional_unsigned(row, 12)?,
        items: Vec::new(),
    })
}

impl Ledger {
    /// For each (escrow, guest key) whose newest stored voucher is above the last chain
    /// reading and has not failed on-chain: that voucher.
    pub fn voucher_heads(&self) -> Result<Vec<VoucherHead>> {
        let fail = |e| db_error(&self.path, e);
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT v.id, v.escrow, v.receipt_key, v.account, v.seq, v.prompt_tokens, \
                 v.cached_tokens, v.completion_tokens, v.expires_at, v.cap, v.voucher, \
                 v.authorization, \
                 (SELECT min(o.stored_at) FROM vouchers o WHERE o.escrow = v.escrow \
                  AND o.receipt_key = v.receipt_key AND o.seq > coalesce(c.seq, 0)), \
                 c.seq, c.charged \
                 FROM vouchers v LEFT JOIN chain_guests c \
                   ON c.escrow = v.escrow AND c.receipt_key = v.receipt_key \
                 WHERE v.seq > coalesce(c.seq, 0) \
                 AND v.seq = (SELECT max(w.seq) FROM vouchers w WHERE w.escrow = v.escrow \
                              AND w.receipt_key = v.receipt_key) \
                 AND NOT EXISTS (SELECT 1 FROM settlement_items i \
                                 WHERE i.voucher_id = v.id AND i.state = 'failed') \
                 ORDER BY v.id",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                let chain = match row.get::<_, Option<i64>>(13)? {
                    None => None,
                    Some(_) => Some((unsigned(row, 13)?, u128::from(unsigned::<u64>(row, 14)?))),
                };
                Ok(VoucherHead {
                    voucher_id: row.get(0)?,
                    escrow: row.get(1)?,
                    receipt_key: row.get(2)?,
                    account: row.get(3)?,
                    seq: unsigned(row, 4)?,
                    prompt: unsigned(row, 5)?,
                    cached: unsigned(row, 6)?,
                    completion: unsigned(row, 7)?,
                    expires_at: unsigned(row, 8)?,
                    cap: u128::from(unsigned::<u64>(row, 9)?),
                    voucher_boc: row.get(10)?,
                    authorization_boc: row.get(11)?,
                    oldest_unsettled_at: unsigned(row, 12)?,
                    chain,
                })
            })
            .map_err(fail)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)
    }

    /// Records what the chain says an escrow has paid under a guest key (only ever moves
    /// forward).
    pub fn record_chain_guest(
        &mut self,
        escrow: &str,
        receipt_key: &str,
        seq: u64,
        charged: u128,
        at: u64,
    ) -> Result<()> {
        let path = &self.path;
        let bad = |e: String| ledger_error(path, e);
        let (seq, charged, at) = (
            int("seq", seq).map_err(bad)?,
            int("charged", charged).map_err(bad)?,
            int("time", at).map_err(bad)?,
        );
        self.conn
            .prepare_cached(
                "INSERT INTO chain_guests (escrow, receipt_key, seq, charged, read_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (escrow, receipt_key) DO UPDATE SET \
                 seq = max(seq, excluded.seq), charged = max(charged, excluded.charged), \
                 read_at = excluded.read_at",
            )
            .and_then(|mut s| s.execute(params![escrow, receipt_key, seq, charged, at]))
            .map_err(|e| db_error(path, e))?;
        Ok(())
    }

    /// Stores a settlement (state `pending`) and its items in one transaction; returns its
    /// id. Nothing is sent before this returns.
    pub fn create_settlement(&mut self, new: &NewSettlement, at: u64) -> Result<i64> {
        let path = &self.path;
        let fail = |e| db_error(path, e);
        let bad = |e: String| ledger_error(path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        tx.prepare_cached(
            "INSERT INTO settlements (wallet, seqno, valid_until, message, message_hash, state, \
             wallet_balance, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                new.wallet,
                new.seqno,
                new.valid_until,
                new.message,
                hex::encode(new.message_hash),
                int("wallet balance", new.wallet_balance).unwrap_or(i64::MAX),
                int("time", at).unwrap_or(i64::MAX),
            ])
        })
        .map_err(fail)?;
        let id = tx.last_insert_rowid();
        for (position, item) in new.items.iter().enumerate() {
            let numbers = (
                int("seq", item.seq).map_err(bad)?,
                int("charged", item.charged).map_err(bad)?,
                int("amount", item.amount).map_err(bad)?,
            );
            tx.prepare_cached(
                "INSERT INTO settlement_items (settlement_id, position, voucher_id, escrow, \
                 receipt_key, seq, charged, amount, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    position as i64,
                    item.voucher_id,
                    item.escrow,
                    item.receipt_key,
                    numbers.0,
                    numbers.1,
                    numbers.2
                ])
            })
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(id)
    }

    /// Marks a settlement sent (the chain took the message, or at least did not refuse it).
    pub fn mark_settlement_sent(&mut self, id: i64, at: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE settlements SET state = 'sent', sent_at = coalesce(sent_at, ?2) \
                 WHERE id = ?1 AND state IN ('pending', 'sent')",
            )
            .and_then(|mut s| s.execute(params![id, int("time", at).unwrap_or(i64::MAX)]))
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }

    /// Ends a settlement: its state, why, the gas it cost, and each item's state
    /// (`(position, state)`), in one transaction.
    pub fn finish_settlement(
        &mut self,
        id: i64,
        state: SettlementState,
        detail: Option<&str>,
        gas: Option<u128>,
        items: &[(u32, ItemState)],
        at: u64,
    ) -> Result<()> {
        let path = &self.path;
        let fail = |e| db_error(path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        tx.prepare_cached(
            "UPDATE settlements SET state = ?2, detail = ?3, gas = ?4, finished_at = ?5 \
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                state.as_str(),
                detail,
                gas.map(|g| int("gas", g).unwrap_or(i64::MAX)),
                int("time", at).unwrap_or(i64::MAX)
            ])
        })
        .map_err(fail)?;
        for (position, item) in items {
            tx.prepare_cached(
                "UPDATE settlement_items SET state = ?3 WHERE settlement_id = ?1 AND position = ?2",
            )
            .and_then(|mut s| s.execute(params![id, position, item.as_str()]))
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    fn items_of(&self, id: i64) -> rusqlite::Result<Vec<Item>> {
        self.conn
            .prepare_cached(
                "SELECT position, voucher_id, escrow, receipt_key, seq, charged, amount, state \
                 FROM settlement_items WHERE settlement_id = ?1 ORDER BY position",
            )?
            .query_map([id], |row| {
                Ok(Item {
                    position: unsigned(row, 0)?,
                    voucher_id: row.get(1)?,
                    escrow: row.get(2)?,
                    receipt_key: row.get(3)?,
                    seq: unsigned(row, 4)?,
                    charged: u128::from(unsigned::<u64>(row, 5)?),
                    amount: u128::from(unsigned::<u64>(row, 6)?),
                    state: state_of(row, 7, ItemState::from_label)?,
                })
            })?
            .collect()
    }

    fn settlements_where(&self, clause: &str, limit: usize) -> Result<Vec<Settlement>> {
        let fail = |e| db_error(&self.path, e);
        let sql = format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements {clause} ORDER BY id DESC LIMIT ?1"
        );
        let mut found = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], settlement_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(fail)?;
        for settlement in &mut found {
            settlement.items = self.items_of(settlement.id).map_err(fail)?;
        }
        Ok(found)
    }

    /// Settlements still waiting on the chain (`pending`, `sent`), oldest first.
    pub fn active_settlements(&self) -> Result<Vec<Settlement>> {
        let mut found = self.settlements_where("WHERE state IN ('pending', 'sent')", 1_000)?;
        found.reverse();
        Ok(found)
    }

    /// The newest `limit` settlements, newest first.
    pub fn recent_settlements(&self, limit: usize) -> Result<Vec<Settlement>> {
        self.settlements_where("", limit)
    }

    /// One settlement.
    pub fn settlement(&self, id: i64) -> Result<Option<Settlement>> {
        let fail = |e| db_error(&self.path, e);
        let sql = format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = ?1");
        let found = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row([id], settlement_row).optional())
            .map_err(fail)?;
        match found {
            None => Ok(None),
            Some(mut settlement) => {
                settlement.items = self.items_of(id).map_err(fail)?;
                Ok(Some(settlement))
            }
        }
    }

    /// Totals over every settlement and voucher.
    pub fn settlement_totals(&self) -> Result<SettlementTotals> {
        let fail = |e| db_error(&self.path, e);
        let mut totals = SettlementTotals::default();
        for state in SettlementState::ALL {
            totals.settlements.insert(state.as_str().to_string(), 0);
        }
        let mut statement = self
            .conn
            .prepare_cached("SELECT state, count(*) FROM settlements GROUP BY state")
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, unsigned::<u64>(row, 1)?))
            })
            .map_err(fail)?;
        for row in rows {
            let (state, n) = row.map_err(fail)?;
            totals.settlements.insert(state, n);
        }
        let sum = |sql: &str| -> Result<u128> {
            self.conn
                .query_row(sql, [], |row| unsigned::<u64>(row, 0))
                .map(u128::from)
                .map_err(fail)
        };
        totals.settled_nanoton =
            sum("SELECT coalesce(sum(amount), 0) FROM settlement_items WHERE state = 'landed'")?;
        totals.gas_nanoton = sum("SELECT coalesce(sum(gas), 0) FROM settlements")?;
        totals.vouchers = sum("SELECT count(*) FROM vouchers")? as u64;
        totals.refused_vouchers = sum("SELECT count(*) FROM refused_vouchers")? as u64;
        Ok(totals)
    }
}
