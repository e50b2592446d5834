//! The client's own TON wallet: the wallet v5r1 of the account key
//! (`cocoon_billing::wallet`), which pays for deploys, top-ups and the gas of owner
//! requests.
//!
//! One key owns the escrow and controls this wallet, so a mnemonic the user already has in
//! a TON wallet app is all the client needs, and funding the account means sending coins
//! to the address `cocoon-client account show` prints.

use cocoon_attestation::account::AccountKey;
use cocoon_billing::wallet::{Network, OutMessage, Wallet};
use tycho_types::models::StdAddr;

/// The network named on the command line or in a guest's config.
pub fn network(name: &str) -> Result<Network, String> {
    match name {
        "local" => Ok(Network::Local),
        "testnet" => Ok(Network::Testnet),
        "mainnet" => Ok(Network::Mainnet),
        other => Err(format!(
            "unknown TON network '{other}': local, testnet or mainnet"
        )),
    }
}

/// The account key's wallet v5r1 on one network.
pub struct OwnerWallet {
    wallet: Wallet,
    network: Network,
}

impl OwnerWallet {
    /// The wallet of `key` on `network` (`local`, `testnet` or `mainnet`).
    pub fn new(key: &AccountKey, network_name: &str) -> Result<Self, String> {
        let network = network(network_name)?;
        let wallet = Wallet::from_seed(key.seed(), network).map_err(|e| e.to_string())?;
        Ok(Self { wallet, network })
    }

    /// The wallet's address.
    pub fn address(&self) -> StdAddr {
        self.wallet.address()
    }

    /// The address as wallet apps show it for funding (user-friendly, non-bounceable, as
    /// one sends to a wallet not yet deployed), and its raw form.
    pub fn address_text(&self) -> String {
        let address = self.address();
        let mut flags = address.display_base64_url(false).flags;
        flags.testnet = self.network == Network::Testnet;
        let friendly = tycho_types::models::DisplayBase64StdAddr {
            addr: &address,
            flags,
        };
        format!("{friendly} ({address})")
    }

    /// The BoC of an external message that makes the wallet (at `seqno`; 0 also deploys
    /// the wallet) send `messages` in order, good until `valid_until`.
    pub fn transfer(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[OutMessage],
    ) -> Result<Vec<u8>, String> {
        self.wallet
            .external_transfer(seqno, valid_until, messages)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_wallet_address_is_the_ton_apps_for_the_same_words() {
        // tonlib-core's public vector: these words' wallet v5r1 on mainnet.
        let words = "section garden tomato dinner season dice renew length useful spin trade \
                     intact use universe what post spike keen mandate behind concert egg doll rug";
        let key = crate::keys::key_from_mnemonic(words).unwrap();
        let wallet = OwnerWallet::new(&key, "mainnet").unwrap();
        assert!(
            wallet
                .address_text()
                .starts_with("UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3 (0:"),
            "{}",
            wallet.address_text()
        );
        assert_eq!(
            OwnerWallet::new(&key, "local").unwrap().address(),
            wallet.address()
        );
        assert_ne!(
            OwnerWallet::new(&key, "testnet").unwrap().address(),
            wallet.address()
        );
        assert!(OwnerWallet::new(&key, "devnet").is_err());
    }
}
