//! The client's own TON wallet (v5r1, tonlib-core): the wallet of the account key, which
//! pays for deploys, top-ups and the gas of owner requests.
//!
//! One key owns the escrow and controls this wallet, so a mnemonic the user already has
//! in a TON wallet app is all the client needs, and funding "the account" means sending
//! coins to the address `cocoon-client account show` prints.
//!
//! Internal messages are built with tycho-types (the layouts' cell library) and handed to
//! tonlib-core as BoC: tonlib-core's own internal-message helper marks messages bounced
//! (`shared/design/TON.md`), which the escrow would take for a bounce.

use cocoon_attestation::account::AccountKey;
use tonlib_core::cell::BagOfCells;
use tonlib_core::wallet::mnemonic::KeyPair;
use tonlib_core::wallet::ton_wallet::TonWallet;
use tonlib_core::wallet::wallet_version::WalletVersion;
use tycho_types::cell::{CellBuilder, CellFamily as _, HashBytes, Store as _};
use tycho_types::models::StdAddr;
use tycho_types::num::Tokens;

use crate::owner::Outgoing;

/// wallet v5r1's wallet id on mainnet (and on the host agent's local chain, which runs
/// mainnet's configuration).
pub const WALLET_ID_MAINNET: i32 = 0x7FFF_FF11;
/// wallet v5r1's wallet id on testnet.
pub const WALLET_ID_TESTNET: i32 = 0x7FFF_FFFD;

/// The account key's wallet v5r1 on one network.
pub struct OwnerWallet {
    wallet: TonWallet,
    testnet: bool,
}

fn wallet_error(e: impl std::fmt::Display) -> String {
    format!("wallet: {e}")
}

impl OwnerWallet {
    /// The wallet of `key` on `network` (`local`, `testnet` or `mainnet`).
    pub fn new(key: &AccountKey, network: &str) -> Result<Self, String> {
        let testnet = match network {
            "local" | "mainnet" => false,
            "testnet" => true,
            other => {
                return Err(format!(
                    "unknown TON network '{other}': local, testnet or mainnet"
                ))
            }
        };
        // NaCl's secret key: the seed, then the public key.
        let public = key.id().0.to_vec();
        let mut secret = key.seed().to_vec();
        secret.extend_from_slice(&public);
        let pair = KeyPair {
            public_key: public,
            secret_key: secret,
        };
        let wallet_id = if testnet {
            WALLET_ID_TESTNET
        } else {
            WALLET_ID_MAINNET
        };
        let wallet = TonWallet::new_with_params(WalletVersion::V5R1, pair, 0, wallet_id)
            .map_err(wallet_error)?;
        Ok(Self { wallet, testnet })
    }

    /// The wallet's address.
    pub fn address(&self) -> StdAddr {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(self.wallet.address.hash_part.as_slice());
        StdAddr::new(0, HashBytes(hash))
    }

    /// The address as wallet apps show it (non-bounceable user-friendly form, which is
    /// what one funds an uninitialized wallet at), and its raw form.
    pub fn address_text(&self) -> String {
        format!(
            "{} ({})",
            self.wallet
                .address
                .to_base64_url_flags(true, self.testnet),
            self.address()
        )
    }

    /// The BoC of an external message that makes the wallet (at `seqno`; 0 deploys the
    /// wallet itself) send `messages`, good until `valid_until`.
    pub fn transfer(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[Outgoing],
    ) -> Result<Vec<u8>, String> {
        if messages.is_empty() || messages.len() > 255 {
            return Err(format!(
                "a wallet v5 transfer carries 1 to 255 messages, not {}",
                messages.len()
            ));
        }
        let mut cells = Vec::with_capacity(messages.len());
        for message in messages {
            let boc = cocoon_billing::layout::encode_boc(&internal_message(message)?);
            let cell = BagOfCells::parse(&boc)
                .and_then(|b| b.single_root())
                .map_err(wallet_error)?;
            cells.push(cell);
        }
        let external = self
            .wallet
            .create_external_msg(valid_until, seqno, seqno == 0, cells)
            .map_err(wallet_error)?;
        BagOfCells::from_root(external)
            .serialize(true)
            .map_err(wallet_error)
    }
}

/// The cell of an internal message: `int_msg_info$0` with `src` = `addr_none` (the
/// action phase puts the wallet's address there; any other source is refused), no extra
/// currencies, zero fees and times (filled in by the chain), the StateInit and the body
/// each in a reference.
fn internal_message(message: &Outgoing) -> Result<tycho_types::cell::Cell, String> {
    let build = || -> Result<tycho_types::cell::Cell, tycho_types::error::Error> {
        let context = tycho_types::cell::Cell::empty_context();
        let mut b = CellBuilder::new();
        b.store_bit_zero()?; // int_msg_info$0
        b.store_bit_one()?; // ihr_disabled
        b.store_bit(message.bounce)?;
        b.store_bit_zero()?; // bounced
        b.store_zeros(2)?; // src: addr_none
        message.to.store_into(&mut b, context)?;
        Tokens::new(message.value).store_into(&mut b, context)?;
        b.store_bit_zero()?; // no extra currencies
        Tokens::ZERO.store_into(&mut b, context)?; // ihr_fee / extra_flags
        Tokens::ZERO.store_into(&mut b, context)?; // fwd_fee
        b.store_u64(0)?; // created_lt
        b.store_u32(0)?; // created_at
        match &message.state_init {
            Some(init) => {
                b.store_bit_one()?; // Maybe: present
                b.store_bit_one()?; // Either: in a reference
                b.store_reference(CellBuilder::build_from(init)?)?;
            }
            None => b.store_bit_zero()?,
        }
        b.store_bit_one()?; // body in a reference
        b.store_reference(message.body.clone())?;
        b.build()
    };
    build().map_err(wallet_error)
}
