//! `cocoon-verify receipt`: check a usage receipt against an attested receipt key, and with
//! `--onchain` its settlement on TON.

use std::path::Path;
use std::process::ExitCode;

use super::onchain::{self, TonApiArgs};
use crate::output::say;

pub async fn run(
    receipt: &str,
    receipt_key: &str,
    proof: Option<&Path>,
    chain: &TonApiArgs,
    json: bool,
) -> ExitCode {
    let key: [u8; 32] = match hex::decode(receipt_key.trim()).map(<[u8; 32]>::try_from) {
        Ok(Ok(k)) => k,
        _ => {
            eprintln!("cocoon-verify: --receipt-key must be 32 bytes, hex-encoded");
            return ExitCode::from(2);
        }
    };
    // A file that exists is read (its path may well hold two dots); anything else is the
    // JWS itself.
    let jws = if !Path::new(receipt).is_file() && receipt.matches('.').count() == 2 {
        receipt.to_string()
    } else {
        match std::fs::read_to_string(receipt) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("cocoon-verify: {receipt} is neither a JWS nor a readable file: {e}");
                return ExitCode::from(2);
            }
        }
    };
    match cocoon_attestation::receipt::verify_receipt(jws.trim(), &key) {
        Ok(r) => match proof {
            Some(proof) => onchain::receipt(&r, &key, proof, chain, json).await,
            None => {
                say!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                ExitCode::SUCCESS
            }
        },
        Err(e) => {
            eprintln!("cocoon-verify: REFUSED: {e}");
            ExitCode::from(1)
        }
    }
}
