//! The operator's wallet v5r1 (and key derivation from a TON mnemonic).
//!
//! Why: the host agent pays charge messages' gas from a standard wallet, batching up to 255
//! charges into one external message, and the client may hold its owner key as a TON
//! 24-word mnemonic. `tonlib-core` provides the wallet code, data and signing; the internal
//! messages are built here with `tycho-types` (tonlib-core's default internal message
//! header sets `bounced: true`), and cells cross between the two libraries as BoC bytes.

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tonlib_core::cell::{ArcCell, BagOfCells};
use tonlib_core::wallet::mnemonic::{KeyPair, Mnemonic};
use tonlib_core::wallet::ton_wallet::TonWallet;
use tonlib_core::wallet::version_helper::VersionHelper;
use tonlib_core::wallet::wallet_version::WalletVersion;
use tycho_types::cell::{Cell, CellBuilder, CellFamily as _, CellSliceRange};
use tycho_types::dict::Dict;
use tycho_types::models::{
    CurrencyCollection, IntAddr, MessageLayout, OwnedRelaxedMessage, RelaxedIntMsgInfo,
    RelaxedMsgInfo, StateInit, StdAddr,
};
use tycho_types::num::Tokens;

use crate::layout::{decode_boc, encode_boc, BocLimits, PublicKey};
use crate::{Error, Result};

/// Wallet v5r1 id on mainnet (also used by the local chain, whose config is mainnet's).
pub const WALLET_ID_MAINNET: i32 = 0x7FFF_FF11;
/// Wallet v5r1 id on testnet.
pub const WALLET_ID_TESTNET: i32 = 0x7FFF_FFFD;
/// Most internal messages one wallet v5 external message carries (its action list).
pub const MAX_MESSAGES: usize = 255;
/// Most escrow charges one wallet message carries. Not the action limit but the size of
/// an external message: at most 65,535 bytes as a BoC (the default of config param 43),
/// and a charge (voucher with its receipts commitment, and authorization, by reference)
/// adds about 505 bytes, so 128 fit and 129 are refused (measured by
/// `examples/settlement-gas.rs`). 120 leaves room.
pub const MAX_CHARGES_PER_MESSAGE: usize = 120;

/// The network a wallet signs for (its wallet id, so its address, depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// TON mainnet.
    Mainnet,
    /// TON testnet.
    Testnet,
    /// The in-process chain (mainnet config, so the mainnet wallet id).
    Local,
}

impl Network {
    /// The wallet v5r1 id.
    pub const fn wallet_id(self) -> i32 {
        match self {
            Self::Mainnet | Self::Local => WALLET_ID_MAINNET,
            Self::Testnet => WALLET_ID_TESTNET,
        }
    }
}

/// An internal message for the wallet to send (mode 3: fees paid separately, errors
/// ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Destination.
    pub dest: StdAddr,
    /// Value in nanoton.
    pub value: u128,
    /// Bounce flag.
    pub bounce: bool,
    /// Body.
    pub body: Option<Cell>,
    /// StateInit cell to deploy the destination with.
    pub state_init: Option<Cell>,
}

fn wallet_err(e: impl std::fmt::Display) -> Error {
    Error::Wallet(e.to_string())
}

/// A tycho-types cell as a tonlib-core cell.
pub fn to_tonlib_cell(cell: &Cell) -> Result<ArcCell> {
    BagOfCells::parse(&encode_boc(cell))
        .and_then(|boc| boc.single_root())
        .map_err(wallet_err)
}

/// A tonlib-core cell as a tycho-types cell.
pub fn from_tonlib_cell(cell: &tonlib_core::cell::Cell) -> Result<Cell> {
    let bytes = BagOfCells::from_root(cell.clone())
        .serialize(false)
        .map_err(wallet_err)?;
    decode_boc(&bytes, &BocLimits::STATE)
}

/// The 32-byte Ed25519 seed of a TON mnemonic (24 words, no password): the key TON wallets
/// and the client's owner key use.
pub fn mnemonic_seed(words: &str) -> Result<[u8; 32]> {
    let key_pair = Mnemonic::from_str(words, &None)
        .and_then(|m| m.to_key_pair())
        .map_err(|e| Error::Invalid {
            what: "mnemonic",
            reason: e.to_string(),
        })?;
    seed_of(&key_pair)
}

/// The ring key pair of a TON mnemonic (e.g. the owner key, to sign authorizations).
pub fn ring_key_from_mnemonic(words: &str) -> Result<Ed25519KeyPair> {
    ring_key_from_seed(&mnemonic_seed(words)?)
}

/// The ring key pair of a 32-byte Ed25519 seed.
pub fn ring_key_from_seed(seed: &[u8; 32]) -> Result<Ed25519KeyPair> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| Error::Invalid {
        what: "Ed25519 seed",
        reason: e.to_string(),
    })
}

fn seed_of(key_pair: &KeyPair) -> Result<[u8; 32]> {
    // NaCl secret keys are seed ‖ public key.
    key_pair
        .secret_key
        .get(..32)
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| Error::Invalid {
            what: "key pair",
            reason: "secret key shorter than 32 bytes".into(),
        })
}

/// Builds an internal message as a wallet sends it (source `addr_none`, which the network
/// replaces with the wallet's address; `bounced: false`; lt and time zero, set by the network).
pub fn internal_message_cell(msg: &OutMessage) -> Result<Cell> {
    if msg.value > Tokens::MAX.into_inner() {
        return Err(Error::AmountTooLarge(msg.value));
    }
    let init = match &msg.state_init {
        Some(cell) => Some(cell.parse::<StateInit>()?),
        None => None,
    };
    let body = msg.body.clone().unwrap_or_else(Cell::empty_cell);
    let build = |layout: Option<MessageLayout>| {
        let message = OwnedRelaxedMessage {
            info: RelaxedMsgInfo::Int(RelaxedIntMsgInfo {
                ihr_disabled: true,
                bounce: msg.bounce,
                bounced: false,
                src: None,
                dst: IntAddr::Std(msg.dest.clone()),
                value: CurrencyCollection::new(msg.value),
                extra_flags: Default::default(),
                fwd_fee: Tokens::ZERO,
                created_lt: 0,
                created_at: 0,
            }),
            init: init.clone(),
            body: (CellSliceRange::full(body.as_ref()), body.clone()),
            layout,
        };
        CellBuilder::build_from(message)
    };
    // tycho-types 0.3.6 computes the inline layout from a size estimate that can be off by
    // a few bits for message headers near the limit (a 608-bit owner request with a value
    // of 0.05 TON: "cell overflow"). Where the computed layout does not fit, body and
    // init go into references, which always fits.
    match build(None) {
        Ok(cell) => Ok(cell),
        Err(tycho_types::error::Error::CellOverflow) => Ok(build(Some(MessageLayout {
            init_to_cell: true,
            body_to_cell: true,
        }))?),
        Err(e) => Err(e.into()),
    }
}

/// A wallet v5r1 on workchain 0.
pub struct Wallet {
    inner: TonWallet,
    seed: [u8; 32],
    address: StdAddr,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address().to_string())
            .field("wallet_id", &self.inner.wallet_id)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// The wallet of a 24-word TON mnemonic.
    pub fn from_mnemonic(words: &str, network: Network) -> Result<Self> {
        Self::from_seed(&mnemonic_seed(words)?, network)
    }

    /// The wallet of a raw 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32], network: Network) -> Result<Self> {
        let ring = ring_key_from_seed(seed)?;
        let public_key = ring.public_key().as_ref().to_vec();
        let mut secret_key = seed.to_vec();
        secret_key.extend_from_slice(&public_key);
        let key_pair = KeyPair {
            public_key,
            secret_key,
        };
        let inner =
            TonWallet::new_with_params(WalletVersion::V5R1, key_pair, 0, network.wallet_id())
                .map_err(wallet_err)?;
        let mut wallet = Self {
            inner,
            seed: *seed,
            address: StdAddr::default(),
        };
        // The address is the hash of the StateInit we build; tonlib-core must agree.
        wallet.address = crate::layout::state_init_address(&wallet.state_init()?)?;
        if wallet.address.address.as_slice() != wallet.inner.address.hash_part.as_slice()
            || wallet.inner.address.workchain != 0
        {
            return Err(Error::Wallet("address mismatch between libraries".into()));
        }
        Ok(wallet)
    }

    /// The wallet id it signs with.
    pub fn wallet_id(&self) -> i32 {
        self.inner.wallet_id
    }

    /// The wallet's address.
    pub fn address(&self) -> StdAddr {
        self.address.clone()
    }

    /// Its Ed25519 public key.
    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(&self.inner.key_pair.public_key[..32]);
        key
    }

    /// The same key for ring (to sign layouts with it).
    pub fn ring_key_pair(&self) -> Result<Ed25519KeyPair> {
        ring_key_from_seed(&self.seed)
    }

    /// The wallet's StateInit (code and initial data), as deployed with seqno 0.
    pub fn state_init(&self) -> Result<StateInit> {
        let code = VersionHelper::get_code(WalletVersion::V5R1).map_err(wallet_err)?;
        let data = VersionHelper::get_data(
            WalletVersion::V5R1,
            &self.inner.key_pair,
            self.inner.wallet_id,
        )
        .map_err(wallet_err)?;
        Ok(StateInit {
            split_depth: None,
            special: None,
            code: Some(from_tonlib_cell(code)?),
            data: Some(from_tonlib_cell(&data)?),
            libraries: Dict::new(),
        })
    }

    /// The StateInit as a cell (its hash is the address).
    pub fn state_init_cell(&self) -> Result<Cell> {
        Ok(CellBuilder::build_from(self.state_init()?)?)
    }

    /// A signed external message (BoC) sending `messages` (at most 255, in this order) with
    /// mode 3. With
    /// `seqno` 0 it carries the StateInit, so the first transfer deploys the wallet.
    pub fn external_transfer(
        &self,
        seqno: u32,
        valid_until: u32,
        messages: &[OutMessage],
    ) -> Result<Vec<u8>> {
        if messages.len() > MAX_MESSAGES {
            return Err(Error::Wallet(format!(
                "{} messages, at most {MAX_MESSAGES} fit one wallet v5 transfer",
                messages.len()
            )));
        }
        // tonlib-core links the action list so that its last element runs first; reversed
        // here, the messages go out (and get their logical times) in the order given.
        let cells = messages
            .iter()
            .rev()
            .map(|m| internal_message_cell(m).and_then(|c| to_tonlib_cell(&c)))
            .collect::<Result<Vec<_>>>()?;
        let external = self
            .inner
            .create_external_msg(valid_until, seqno, seqno == 0, cells)
            .map_err(wallet_err)?;
        Ok(encode_boc(&from_tonlib_cell(&external)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::state_init_address;

    /// A public test vector (tonlib-core's own tests): this mnemonic's wallet v5r1 address.
    const MNEMONIC: &str = "section garden tomato dinner season dice renew length useful spin trade intact use universe what post spike keen mandate behind concert egg doll rug";
    const ADDRESS: &str = "UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3";

    #[test]
    fn billing_wallet_sends_a_signed_owner_request_that_only_fits_in_a_reference() {
        // A 608-bit owner request with 0.05 TON: the layout tycho-types computes for it
        // does not fit one cell (see internal_message_cell).
        use crate::layout::{CellLayout as _, OwnerAction, OwnerRequest};
        let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("key");
        let escrow = StdAddr::new(0, tycho_types::cell::HashBytes([9; 32]));
        let body = OwnerRequest {
            escrow: escrow.clone(),
            seqno: 0,
            valid_until: 2_000_000_000,
            action: OwnerAction::SetStake { stake: 5 },
        }
        .sign(&key, 1)
        .and_then(|m| m.to_cell())
        .expect("request");
        assert_eq!(body.bit_len(), 608);
        for value in [1, 50_000_000, 1 << 40] {
            let message = OutMessage {
                dest: escrow.clone(),
                value,
                bounce: true,
                body: Some(body.clone()),
                state_init: None,
            };
            let cell = internal_message_cell(&message).expect("fits");
            let parsed = cell.parse::<OwnedRelaxedMessage>().expect("a message");
            assert_eq!(parsed.body.1.repr_hash(), body.repr_hash());
        }
    }

    #[test]
    fn billing_wallet_mnemonic_address_and_keys() {
        let wallet = Wallet::from_mnemonic(MNEMONIC, Network::Mainnet).expect("wallet");
        let expected = tonlib_core::TonAddress::from_base64_url(ADDRESS).expect("address");
        assert_eq!(
            wallet.address().address.as_slice(),
            expected.hash_part.as_slice()
        );
        assert_eq!(wallet.wallet_id(), WALLET_ID_MAINNET);
        // Our own StateInit hashes to the same address.
        let init = wallet.state_init().expect("init");
        assert_eq!(state_init_address(&init).expect("addr"), wallet.address());
        // The ring key is the same key.
        let ring = wallet.ring_key_pair().expect("ring");
        assert_eq!(ring.public_key().as_ref(), wallet.public_key());
        let ring2 = ring_key_from_mnemonic(MNEMONIC).expect("ring");
        assert_eq!(ring2.public_key().as_ref(), wallet.public_key());
        // From the raw seed: same wallet.
        let seed = mnemonic_seed(MNEMONIC).expect("seed");
        let again = Wallet::from_seed(&seed, Network::Local).expect("wallet");
        assert_eq!(again.address(), wallet.address());
        // Testnet: another wallet id, another address.
        let testnet = Wallet::from_seed(&seed, Network::Testnet).expect("wallet");
        assert_eq!(testnet.wallet_id(), WALLET_ID_TESTNET);
        assert_ne!(testnet.address(), wallet.address());
        assert!(!format!("{wallet:?}").contains(&hex::encode(seed)));
        assert!(Wallet::from_mnemonic("not a mnemonic", Network::Mainnet).is_err());
    }

    #[test]
    fn billing_wallet_cells_cross_libraries() {
        let mut b = CellBuilder::new();
        b.store_u64(42).expect("store");
        b.store_reference(Cell::empty_cell()).expect("ref");
        let cell = b.build().expect("build");
        let tonlib = to_tonlib_cell(&cell).expect("to");
        assert_eq!(tonlib.cell_hash().as_slice(), cell.repr_hash().as_slice());
        assert_eq!(from_tonlib_cell(&tonlib).expect("from"), cell);
        // Internal messages: bounced false, our flags.
        let msg = internal_message_cell(&OutMessage {
            dest: StdAddr::new(0, tycho_types::cell::HashBytes([3; 32])),
            value: 5,
            bounce: true,
            body: Some(cell),
            state_init: None,
        })
        .expect("msg");
        let parsed = msg.parse::<OwnedRelaxedMessage>().expect("parse");
        let RelaxedMsgInfo::Int(info) = parsed.info else {
            panic!("not internal")
        };
        assert!(info.bounce && !info.bounced && info.src.is_none());
        assert_eq!(info.value.tokens.into_inner(), 5);
    }

    #[test]
    fn billing_wallet_limits_batch_size() {
        let wallet = Wallet::from_seed(&[7; 32], Network::Local).expect("wallet");
        let message = OutMessage {
            dest: wallet.address(),
            value: 1,
            bounce: false,
            body: None,
            state_init: None,
        };
        let too_many = vec![message.clone(); MAX_MESSAGES + 1];
        assert!(wallet.external_transfer(1, 100, &too_many).is_err());
        let max = vec![message; MAX_MESSAGES];
        let boc = wallet.external_transfer(1, 100, &max).expect("255");
        assert!(!boc.is_empty());
    }

    #[cfg(feature = "local-chain")]
    mod on_chain {
        use super::*;
        use crate::local_chain::{AccountStatus, LocalChain, StackValue};

        const NOW: u32 = 1_767_225_600;
        const TON: u128 = 1_000_000_000;

        fn seqno(chain: &LocalChain, wallet: &Wallet) -> u128 {
            let result = chain
                .run_get_method(&wallet.address(), "seqno", &[])
                .expect("get");
            assert!(result.success(), "{result:?}");
            result
                .stack
                .first()
                .and_then(StackValue::as_u128)
                .expect("int")
        }

        fn check_sender(tx: &crate::local_chain::TxSummary) {
            assert!(tx.success, "{tx:#?}");
            assert!(tx.total_fees > 0);
            let sent: u128 = tx.out_messages.iter().map(|m| m.value + m.fwd_fee).sum();
            assert_eq!(tx.balance_before - tx.balance_after, sent + tx.total_fees);
        }

        #[test]
        fn billing_wallet_deploys_and_batches_on_local_chain() {
            let mut chain = LocalChain::with_default_config().expect("chain");
            chain.set_now(NOW).expect("now");
            let wallet = Wallet::from_seed(&[9; 32], Network::Local).expect("wallet");
            let me = wallet.address();
            chain.airdrop(&me, 10 * TON).expect("airdrop");
            assert_eq!(
                chain.account(&me).expect("acc").status,
                AccountStatus::Uninit
            );

            let dests: Vec<StdAddr> = (1..=3u8)
                .map(|i| StdAddr::new(0, tycho_types::cell::HashBytes([i; 32])))
                .collect();
            let messages: Vec<OutMessage> = dests
                .iter()
                .enumerate()
                .map(|(i, dest)| OutMessage {
                    dest: dest.clone(),
                    value: (i as u128 + 1) * TON / 10,
                    bounce: false,
                    body: None,
                    state_init: None,
                })
                .collect();
            let boc = wallet
                .external_transfer(0, NOW + 60, &messages)
                .expect("transfer");
            let txs = chain.send_external(&boc).expect("send");
            assert_eq!(txs.len(), 4, "{txs:#?}");
            let deploy = &txs[0];
            assert!(deploy.in_external);
            assert_eq!(deploy.end_status, AccountStatus::Active);
            assert_eq!(deploy.out_messages.len(), 3);
            // Sent in the order given, and run in that (lt) order.
            for (sent, message) in deploy.out_messages.iter().zip(&messages) {
                assert_eq!(sent.dest.as_ref(), Some(&message.dest));
                assert_eq!(sent.value, message.value);
            }
            let order: Vec<&StdAddr> = txs[1..].iter().map(|t| &t.account).collect();
            assert_eq!(order, dests.iter().collect::<Vec<_>>());
            check_sender(deploy);
            for (i, dest) in dests.iter().enumerate() {
                let info = chain.account(dest).expect("acc");
                let tx = txs.iter().find(|t| &t.account == dest).expect("tx");
                assert_eq!(tx.in_value, (i as u128 + 1) * TON / 10);
                assert_eq!(info.balance, tx.in_value - tx.total_fees);
            }
            assert_eq!(seqno(&chain, &wallet), 1);
            assert_eq!(
                chain.account(&me).expect("acc").balance,
                deploy.balance_after
            );

            // Replaying the same message is refused; so is a wrong seqno.
            assert!(matches!(
                chain.send_external(&boc),
                Err(Error::ExternalNotAccepted { .. })
            ));

            // Second transfer (no StateInit), one bounceable message to a missing contract:
            // it bounces back to the wallet.
            chain.advance(5).expect("advance");
            let nowhere = StdAddr::new(0, tycho_types::cell::HashBytes([0xEE; 32]));
            let boc = wallet
                .external_transfer(
                    1,
                    NOW + 60,
                    &[OutMessage {
                        dest: nowhere.clone(),
                        value: TON,
                        bounce: true,
                        body: None,
                        state_init: None,
                    }],
                )
                .expect("transfer");
            let txs = chain.send_external(&boc).expect("send");
            assert_eq!(txs.len(), 3, "{txs:#?}");
            check_sender(&txs[0]);
            assert_eq!(txs[1].account, nowhere);
            assert!(txs[1].aborted);
            let back = &txs[2];
            assert_eq!(back.account, me);
            assert!(back.in_bounced);
            assert!(back.in_value > TON - TON / 100 && back.in_value < TON);
            assert_eq!(
                back.balance_after,
                back.balance_before + back.in_value - back.total_fees
            );
            assert_eq!(seqno(&chain, &wallet), 2);
            assert_eq!(
                chain.account(&nowhere).expect("acc").status,
                AccountStatus::NonExist
            );
            assert_eq!(chain.transactions(&me).len(), 3);

            // Expired valid_until is refused.
            let boc = wallet
                .external_transfer(2, NOW - 1, &messages)
                .expect("transfer");
            assert!(chain.send_external(&boc).is_err());
        }
    }
}
