//! `cocoon-verify receipt`: check a usage receipt against an attested receipt key.

use std::process::ExitCode;

use crate::output::say;

pub fn run(receipt: &str, receipt_key: &str) -> ExitCode {
    let key = match hex::decode(receipt_key.trim()) {
        Ok(k) if k.len() == 32 => k,
        _ => {
            eprintln!("cocoon-verify: --receipt-key must be 32 bytes, hex-encoded");
            return ExitCode::from(2);
        }
    };
    let jws = if receipt.matches('.').count() == 2 {
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
    match cocoon_attestation::receipt::verify_receipt(&jws, &key) {
        Ok(r) => {
            say!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cocoon-verify: REFUSED: {e}");
            ExitCode::from(1)
        }
    }
}
