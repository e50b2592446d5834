//! The public record on TON: `receipt --onchain` (a receipt's inclusion in the receipts
//! tree an escrow recorded) and `audit` (what the chain alone says was served and charged,
//! per model and guest key). Both read the chain through a TON HTTP API and trust nothing
//! the operator says: see `cocoon_billing::record`.

use std::path::PathBuf;
use std::process::ExitCode;

use cocoon_attestation::receipt::UsageReceipt;
use cocoon_attestation::receipt_tree::{CheckedProof, ReceiptProof};
use cocoon_billing::address::parse_address;
use cocoon_billing::record::{self, EscrowRecord};
use cocoon_billing::ton_http::TonHttpClient;

use crate::output::{read_input, say};

/// Where the chain is.
#[derive(Debug, Clone, clap::Args)]
pub struct TonApiArgs {
    /// TON HTTP API (toncenter v2 routes) base URL, e.g. https://toncenter.com, or the host
    /// agent's loopback API over its local chain (`[billing.local_chain] api_listen`).
    #[arg(long, value_name = "URL", env = "COCOON_TON_API")]
    pub ton_api: Option<String>,
    /// A file holding the API key sent as X-API-Key (toncenter's).
    #[arg(long, value_name = "FILE")]
    pub ton_api_key_file: Option<PathBuf>,
}

impl TonApiArgs {
    fn client(&self) -> Result<TonHttpClient, ExitCode> {
        let Some(url) = &self.ton_api else {
            eprintln!("cocoon-verify: give --ton-api URL (or COCOON_TON_API) to read the chain");
            return Err(ExitCode::from(2));
        };
        cocoon_client::onchain::ton_http_client(url.clone(), self.ton_api_key_file.as_deref())
            .map_err(|e| {
                eprintln!("cocoon-verify: --ton-api {url}: {e}");
                ExitCode::from(2)
            })
    }
}

fn refused(message: String) -> ExitCode {
    eprintln!("cocoon-verify: REFUSED: {message}");
    ExitCode::from(1)
}

fn unreachable(message: String) -> ExitCode {
    eprintln!("cocoon-verify: {message}");
    ExitCode::from(2)
}

/// Checks `receipt` (verified under `key`) against the proof in `proof_file` and the root
/// its escrow recorded on chain.
pub async fn receipt(
    receipt: &UsageReceipt,
    key: &[u8; 32],
    proof_file: &std::path::Path,
    chain: &TonApiArgs,
    json: bool,
) -> ExitCode {
    let bytes = match read_input(proof_file, "proof") {
        Ok(b) => b,
        Err(code) => return code,
    };
    let proof = match ReceiptProof::from_json(&bytes) {
        Ok(p) => p,
        Err(e) => return refused(format!("{}: {e}", proof_file.display())),
    };
    let checked = match proof.check(receipt, key) {
        Ok(c) => c,
        Err(e) => return refused(e.to_string()),
    };
    let escrow = match parse_address(&proof.escrow) {
        Ok(a) => a,
        Err(e) => return refused(format!("the proof's escrow {}: {e}", proof.escrow)),
    };
    let client = match chain.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let recorded = match record::read_commitment(&client, &escrow, key).await {
        Ok(r) => r,
        Err(e) => return unreachable(format!("cannot read escrow {escrow}: {e}")),
    };
    // The escrow keeps the latest root; an older one is in the charge that recorded it.
    let (root, charged, source) = if recorded.seq == checked.tree_size {
        (recorded.receipts_root, recorded.charged, "escrow state")
    } else if recorded.seq > checked.tree_size {
        let history = match record::read_escrow(&client, &escrow).await {
            Ok(h) => h,
            Err(e) => return unreachable(format!("cannot read escrow {escrow}'s history: {e}")),
        };
        let Some(charge) = history
            .charges
            .iter()
            .find(|c| c.voucher.guest_key == *key && c.voucher.seq == checked.tree_size)
        else {
            return refused(format!(
                "escrow {escrow} shows no settled charge of sequence {} for this key (it has \
                 settled up to {}): ask the operator for a fresh proof",
                checked.tree_size, recorded.seq
            ));
        };
        (
            charge.voucher.commitment.receipts_root,
            charge.charged,
            "charge transaction",
        )
    } else {
        return refused(format!(
            "escrow {escrow} has settled only up to sequence {} for this key, not {}",
            recorded.seq, checked.tree_size
        ));
    };
    if root != checked.root {
        return refused(format!(
            "escrow {escrow} recorded root {} for receipts 1..{}, the proof leads to {}",
            hex::encode(root),
            checked.tree_size,
            hex::encode(checked.root)
        ));
    }
    if charged != u128::from(checked.settled_cumulative_charge) {
        return refused(format!(
            "escrow {escrow} paid {charged} nanoton in total for receipts 1..{}, the guest's \
             receipts say {}",
            checked.tree_size, checked.settled_cumulative_charge
        ));
    }
    report(receipt, &checked, &escrow.to_string(), source, json);
    ExitCode::SUCCESS
}

fn report(receipt: &UsageReceipt, checked: &CheckedProof, escrow: &str, source: &str, json: bool) {
    if json {
        let value = serde_json::json!({
            "verified": true,
            "receipt": receipt,
            "escrow": escrow,
            "tree_size": checked.tree_size,
            "receipts_root": hex::encode(checked.root),
            "settled_charge_nanoton": checked.settled_cumulative_charge.to_string(),
            "model_sha256": hex::encode(checked.model_sha256),
            "recorded_in": source,
        });
        say!("{value}");
    } else {
        say!(
            "receipt {} ({}) PROVEN ON-CHAIN: escrow {escrow} recorded root {} over receipts \
             1..{} ({source}); paid {} nanoton in total for them; model sha256 {}",
            receipt.sequence,
            receipt.request_id,
            hex::encode(checked.root),
            checked.tree_size,
            checked.settled_cumulative_charge,
            hex::encode(checked.model_sha256)
        );
    }
}

/// `cocoon-verify audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub chain: TonApiArgs,
    /// An operator's payout address: every escrow that paid it is read.
    #[arg(long, value_name = "ADDR", required_unless_present = "escrow")]
    pub payout: Option<String>,
    /// An escrow to read (repeatable), in addition to those found from --payout.
    #[arg(long, value_name = "ADDR")]
    pub escrow: Vec<String>,
    /// Count charges settled at or after this unix time.
    #[arg(long, value_name = "UNIX", default_value_t = 0)]
    pub since: u32,
    /// Count charges settled before this unix time (default: no end).
    #[arg(long, value_name = "UNIX", default_value_t = u32::MAX)]
    pub until: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Lists, from the chain alone, the tokens served and charged per model and guest key.
pub async fn audit(args: &AuditArgs) -> ExitCode {
    let client = match args.chain.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut escrows = Vec::new();
    for text in &args.escrow {
        match parse_address(text) {
            Ok(a) => escrows.push(a),
            Err(e) => return unreachable(format!("--escrow {text}: {e}")),
        }
    }
    let mut complete = true;
    if let Some(text) = &args.payout {
        let payout = match parse_address(text) {
            Ok(a) => a,
            Err(e) => return unreachable(format!("--payout {text}: {e}")),
        };
        match record::escrows_paying(&client, &payout).await {
            Ok((found, whole)) => {
                complete &= whole;
                for a in found {
                    if !escrows.contains(&a) {
                        escrows.push(a);
                    }
                }
            }
            Err(e) => return unreachable(format!("cannot read {payout}'s history: {e}")),
        }
    }
    let mut records: Vec<EscrowRecord> = Vec::new();
    for escrow in &escrows {
        match record::read_escrow(&client, escrow).await {
            Ok(r) => {
                complete &= r.complete;
                records.push(r);
            }
            Err(e) => return unreachable(format!("cannot read escrow {escrow}: {e}")),
        }
    }
    let totals = record::served_totals(&records, args.since, args.until);
    if args.json {
        let rows: Vec<serde_json::Value> = totals
            .iter()
            .map(|((model, key), t)| {
                serde_json::json!({
                    "model_sha256": hex::encode(model),
                    "guest_key": hex::encode(key),
                    "prompt_tokens": t.prompt,
                    "cached_tokens": t.cached,
                    "completion_tokens": t.completion,
                    "charged_nanoton": t.charged.to_string(),
                    "charges": t.charges,
                })
            })
            .collect();
        let value = serde_json::json!({
            "escrows": escrows.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "since": args.since,
            "until": args.until,
            "complete": complete,
            "data": rows,
        });
        say!("{value}");
    } else {
        say!(
            "{} escrow(s); charges settled in [{}, {}){}",
            escrows.len(),
            args.since,
            args.until,
            if complete {
                ""
            } else {
                " (INCOMPLETE: the transactions read do not show everything the escrows \
                 charged: the node pruned older ones, or an account has more than 10 000)"
            }
        );
        say!(
            "{:<16} {:<16} {:>12} {:>12} {:>12} {:>20} {:>8}",
            "model sha256",
            "guest key",
            "prompt",
            "cached",
            "completion",
            "charged (nanoton)",
            "charges"
        );
        for ((model, key), t) in &totals {
            say!(
                "{:<16} {:<16} {:>12} {:>12} {:>12} {:>20} {:>8}",
                &hex::encode(model)[..16],
                &hex::encode(key)[..16],
                t.prompt,
                t.cached,
                t.completion,
                t.charged,
                t.charges
            );
        }
    }
    ExitCode::SUCCESS
}
