//! Inclusion proofs for settled receipts (`cocoon-host-agent receipts proof`).
//!
//! The guest commits each voucher to the RFC 6962 tree over the account's receipts under
//! its key (`cocoon_attestation::receipt_tree`); the escrow records that root when the
//! voucher is paid. The ledger holds every receipt, so it can rebuild the tree of the
//! latest landed voucher and show any receipt in it. The rebuilt root must be the one the
//! guest signed in that voucher: a ledger that lost or altered a receipt cannot make a
//! proof (and says so) rather than one that fails later.

use cocoon_attestation::receipt::verify_receipt;
use cocoon_attestation::receipt_tree::{build_proof, ReceiptLeaf, ReceiptProof};
use cocoon_billing::layout::{CellLayout as _, SignedVoucher};

use super::{db_error, unsigned, Ledger};
use crate::error::{Error, Result};

/// The receipt a proof is asked for: by ledger id (all digits) or by request id.
const FIND_RECEIPT: &str = "SELECT id, receipt_key, account, sequence, jws FROM receipts \
     WHERE (?1 IS NOT NULL AND id = ?1) OR (?1 IS NULL AND request_id = ?2) \
     ORDER BY id DESC LIMIT 2";

/// The latest voucher of (key, account) that a settlement landed.
const LATEST_LANDED: &str = "SELECT v.seq, v.escrow, v.voucher FROM vouchers v \
     JOIN settlement_items si ON si.voucher_id = v.id \
     WHERE si.state = 'landed' AND v.receipt_key = ?1 AND v.account = ?2 \
     ORDER BY v.seq DESC LIMIT 1";

/// The account's receipts under the key, up to a sequence, in order.
const TREE_RECEIPTS: &str = "SELECT sequence, jws FROM receipts \
     WHERE receipt_key = ?1 AND account = ?2 AND sequence <= ?3 ORDER BY sequence";

fn no_proof(id: &str, detail: String) -> Error {
    Error::NoProof {
        id: id.to_string(),
        detail,
    }
}

impl Ledger {
    /// The inclusion proof of receipt `id` (a ledger id, or a request id such as
    /// `chatcmpl-…`) in the tree of the latest landed voucher of its account and key,
    /// with the receipt itself (JWS).
    pub fn receipt_proof(&self, id: &str) -> Result<(ReceiptProof, String)> {
        let ledger_id: Option<i64> = if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            Some(
                id.parse()
                    .map_err(|_| no_proof(id, "ledger id out of range".into()))?,
            )
        } else {
            None
        };
        let found = self.all(FIND_RECEIPT, rusqlite::params![ledger_id, id], |row| {
            Ok((
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                unsigned::<u64>(row, 3)?,
                row.get::<_, String>(4)?,
            ))
        })?;
        let (key_hex, account, sequence, jws) = match found.as_slice() {
            [one] => one.clone(),
            [] => return Err(no_proof(id, "no receipt with this id in the ledger".into())),
            _ => {
                return Err(no_proof(
                    id,
                    "several receipts have this request id: give the ledger id".into(),
                ))
            }
        };
        let fail = |e| db_error(&self.path, e);
        let landed = self
            .conn
            .query_row(LATEST_LANDED, [&key_hex, &account], |row| {
                Ok((
                    unsigned::<u64>(row, 0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(fail(e)),
            })?;
        let Some((settled_seq, escrow, voucher_boc)) = landed else {
            return Err(no_proof(
                id,
                format!("no settlement of {account}'s vouchers under this key has landed yet"),
            ));
        };
        if settled_seq < sequence {
            return Err(no_proof(
                id,
                format!(
                    "receipt {sequence} is not settled yet: the latest landed voucher is \
                     sequence {settled_seq}"
                ),
            ));
        }
        let voucher = SignedVoucher::from_boc(&voucher_boc)
            .map_err(|e| no_proof(id, format!("the stored voucher does not parse: {e}")))?
            .voucher;
        let key: [u8; 32] = hex::decode(&key_hex)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| no_proof(id, format!("receipt key {key_hex} is not 32 bytes")))?;
        let model = voucher.commitment.model;
        let rows = self.all(
            TREE_RECEIPTS,
            rusqlite::params![
                &key_hex,
                &account,
                i64::try_from(settled_seq).unwrap_or(i64::MAX)
            ],
            |row| row.get::<_, String>(1),
        )?;
        let mut leaves = Vec::with_capacity(rows.len());
        for stored in &rows {
            let receipt = verify_receipt(stored, &key)
                .map_err(|e| no_proof(id, format!("a stored receipt does not verify: {e}")))?;
            leaves.push(ReceiptLeaf::from_receipt(&receipt, key, model));
        }
        let proof = build_proof(&escrow, &account, &leaves, sequence)
            .map_err(|e| no_proof(id, e.to_string()))?;
        if proof.root != voucher.commitment.receipts_root {
            return Err(no_proof(
                id,
                format!(
                    "the ledger's receipts 1..{settled_seq} make root {}, but the guest signed \
                     {} in that voucher: the ledger is missing or holds altered receipts",
                    hex::encode(proof.root),
                    hex::encode(voucher.commitment.receipts_root)
                ),
            ));
        }
        Ok((proof, jws))
    }
}
