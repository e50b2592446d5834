//! Where the account key comes from: a PKCS#8 PEM file (`cocoon-client account keygen`,
//! `openssl genpkey -algorithm ed25519`) or a TON wallet's 24-word mnemonic.
//!
//! The account key owns the escrow and controls the client's own wallet v5r1, which pays
//! for deploys, top-ups and the gas of owner requests. A mnemonic gives the very key TON
//! wallets derive from the same words, so a user can fund and watch that wallet with any
//! TON wallet app; a PEM key's wallet is the v5r1 wallet of the same key.

use std::path::{Path, PathBuf};

use cocoon_attestation::account::AccountKey;

/// `--account-key FILE` or `--mnemonic-file FILE`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArgs {
    /// The account key (PKCS#8 PEM, from `cocoon-client account keygen`).
    #[arg(
        long,
        value_name = "FILE",
        alias = "key",
        conflicts_with = "mnemonic_file"
    )]
    pub account_key: Option<PathBuf>,
    /// Or a file holding a TON wallet's 24 mnemonic words: the account key is the key TON
    /// wallets derive from them, so the same words control the wallet that pays.
    #[arg(long, value_name = "FILE")]
    pub mnemonic_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key named, `Ok(None)` when neither flag is given.
    pub fn load(&self) -> Result<Option<AccountKey>, String> {
        match (&self.account_key, &self.mnemonic_file) {
            (Some(path), _) => read_account_key(path).map(Some),
            (None, Some(path)) => read_mnemonic_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The key named; an error naming both flags when neither is given.
    pub fn require(&self) -> Result<AccountKey, String> {
        self.load()?.ok_or_else(|| {
            "no account key: give --account-key FILE (PKCS#8 PEM) or --mnemonic-file FILE \
             (24 TON words)"
                .to_string()
        })
    }
}

/// Reads a PKCS#8 PEM account key.
pub fn read_account_key(path: &Path) -> Result<AccountKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read account key {}: {e}", path.display()))?;
    AccountKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a mnemonic file: 24 words separated by white space (line breaks included).
pub fn read_mnemonic_file(path: &Path) -> Result<AccountKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read mnemonic {}: {e}", path.display()))?;
    key_from_mnemonic(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The account key of a TON mnemonic (24 words, no passphrase).
pub fn key_from_mnemonic(text: &str) -> Result<AccountKey, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() != 24 {
        return Err(format!(
            "a TON mnemonic has 24 words; this one has {}",
            words.len()
        ));
    }
    let seed = cocoon_billing::wallet::mnemonic_seed(&words.join(" "))
        .map_err(|e| format!("not a TON mnemonic: {e}"))?;
    AccountKey::from_seed(&seed).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 24 words of the English list whose passwordless seed check passes, and the key
    /// seed TON derives from them (first 32 bytes of PBKDF2-HMAC-SHA512 over
    /// HMAC-SHA512(words), salt "TON default seed", 100 000 rounds), both computed
    /// independently with Python's hashlib.
    const WORDS: &str = "long bomb own void gravity orphan social suspect picture breeze ranch \
                         exotic friend enable heavy squeeze practice shuffle cruel feel great \
                         confirm wagon write";
    const SEED: &str = "5fe53d4429a3efdf19d2d6e592c8188399fdccadebdf6b6a16a6508e8b3fa5bc";

    #[test]
    fn billing_mnemonic_gives_the_ton_wallet_key_and_bad_ones_say_why() {
        let key = key_from_mnemonic(WORDS).unwrap();
        assert_eq!(hex::encode(key.seed()), SEED);
        // Same words, other white space (one per line): the same key.
        let words: Vec<&str> = WORDS.split_whitespace().collect();
        let lines = words.join("\n") + "\n";
        assert_eq!(key_from_mnemonic(&lines).unwrap().id(), key.id());
        let short = words[..12].join(" ");
        let err = key_from_mnemonic(&short).err().unwrap();
        assert!(err.contains("has 12"), "{err}");
        let typo = WORDS.replacen("bomb", "bombe", 1);
        let err = key_from_mnemonic(&typo).err().unwrap();
        assert!(
            err.contains("not a TON mnemonic") && err.contains("bombe"),
            "{err}"
        );
        // Valid words in the wrong order fail the seed check (255 times in 256).
        let swapped = WORDS.replacen("long bomb", "bomb long", 1);
        let err = key_from_mnemonic(&swapped).err().unwrap();
        assert!(err.contains("not a TON mnemonic"), "{err}");
    }
}
