//! The committed registry code (`billing/contracts/build/registry.boc`) on the local chain
//! (tycho-executor): the cells `registry` builds are the ones the contract accepts; add,
//! remove, re-add, replay, a wrong key, an expired request, a request for another registry
//! and unknown kinds get the exit codes REGISTRY.md names; the history and entry get
//! methods say what happened, read through the same `Chain` readers the clients use. Also
//! prints the gas of each operation (the figures in REGISTRY.md).
//!
//! Run: `cargo test --release -p cocoon-billing --features local-chain --test
//! registry_contract`.
#![cfg(feature = "local-chain")]

use std::sync::{Arc, Mutex};

use cocoon_billing::chain::{Chain, SharedLocalChain};
use cocoon_billing::layout::{self, CellLayout};
use cocoon_billing::local_chain::{InternalMessage, LocalChain, TxSummary};
use cocoon_billing::registry::{
    self, EntryKind, EntryStatus, PublisherAction, PublisherRequest, RegistryData,
    RegistryExitCode, ACTION_ADD, ACTION_REMOVE,
};
use ring::signature::Ed25519KeyPair;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, CellFamily as _, HashBytes};
use tycho_types::models::StdAddr;

const CODE_HASH: &str = include_str!("../contracts/build/registry.code-hash");
const TON: u128 = 1_000_000_000;
const T0: u32 = 1_800_000_000;

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
}

struct Setup {
    chain: SharedLocalChain,
    publisher: Ed25519KeyPair,
    registry: StdAddr,
    relay: StdAddr,
    seqno: u32,
}

impl Setup {
    fn new() -> Self {
        let code = Boc::decode(include_bytes!("../contracts/build/registry.boc")).expect("BoC");
        assert_eq!(code.repr_hash().to_string(), CODE_HASH.trim());
        let publisher = key(1);
        let publisher_key = layout::public_key(&publisher);
        let state_init = registry::registry_state_init(&publisher_key).expect("state init");
        let registry = layout::state_init_address(&state_init).expect("address");
        assert_eq!(
            registry,
            registry::registry_address(&publisher_key).unwrap()
        );
        let mut chain = LocalChain::with_default_config().expect("chain");
        chain.set_now(T0).expect("clock");
        let relay = StdAddr::new(0, HashBytes([0x11; 32]));
        chain.airdrop(&relay, 1_000 * TON).expect("airdrop");
        // Deploy: a plain transfer (no body) with the StateInit.
        let txs = chain
            .send_internal(InternalMessage {
                src: relay.clone(),
                dest: registry.clone(),
                value: TON / 10,
                bounce: false,
                body: None,
                state_init: Some(state_init),
            })
            .expect("deploy");
        let deploy = txs.iter().find(|t| t.account == registry).expect("tx");
        assert_eq!(deploy.exit_code, Some(0), "deploy");
        println!("gas: deploy {}", deploy.gas_used);
        Self {
            chain: Arc::new(Mutex::new(chain)),
            publisher,
            registry,
            relay,
            seqno: 0,
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalChain> {
        self.chain.lock().expect("lock")
    }

    fn now(&self) -> u32 {
        self.local().now()
    }

    fn send(&self, body: Cell) -> TxSummary {
        let txs = self
            .local()
            .send_internal(InternalMessage {
                src: self.relay.clone(),
                dest: self.registry.clone(),
                value: TON / 20,
                bounce: true,
                body: Some(body),
                state_init: None,
            })
            .expect("send");
        txs.into_iter()
            .find(|t| t.account == self.registry)
            .expect("a transaction at the registry")
    }

    fn request(&self, action: PublisherAction) -> PublisherRequest {
        PublisherRequest {
            registry: self.registry.clone(),
            seqno: self.seqno,
            valid_until: self.now() + 300,
            action,
        }
    }

    fn publish_signed(&mut self, request: PublisherRequest, signer: &Ed25519KeyPair) -> TxSummary {
        let body = request
            .sign(signer, 7)
            .expect("sign")
            .to_cell()
            .expect("body");
        let tx = self.send(body);
        if tx.exit_code == Some(0) {
            self.seqno += 1;
        }
        tx
    }

    fn publish(&mut self, action: PublisherAction) -> TxSummary {
        let request = self.request(action);
        let publisher = key(1);
        self.publish_signed(request, &publisher)
    }

    fn data(&self) -> RegistryData {
        let account = self.local().account(&self.registry).expect("account");
        RegistryData::from_cell(&account.data.expect("data")).expect("RegistryData")
    }

    async fn status(&self, kind: EntryKind, value: [u8; 32]) -> EntryStatus {
        registry::read_entry(&self.chain, &self.registry, kind, &value)
            .await
            .expect("get_entry")
    }
}

fn refused(tx: &TxSummary, code: RegistryExitCode) {
    assert_eq!(tx.exit_code, Some(code.code()), "expected {code:?}: {tx:?}");
    assert!(!tx.success);
}

fn add(kind: EntryKind, value: u8) -> PublisherAction {
    PublisherAction::Add {
        kind,
        value: [value; 32],
    }
}

fn remove(kind: EntryKind, value: u8) -> PublisherAction {
    PublisherAction::Remove {
        kind,
        value: [value; 32],
    }
}

#[tokio::test]
async fn onchain_registry_add_remove_readd_and_history() {
    let mut s = Setup::new();
    let shared = s.chain.clone();
    let chain: &dyn Chain = &shared;
    let state = registry::read_registry(chain, &s.registry)
        .await
        .unwrap()
        .expect("deployed");
    assert_eq!(state.publisher, layout::public_key(&s.publisher));
    assert_eq!((state.seqno, state.active, state.event_count), (0, 0, 0));

    // every kind can be added; gas per add
    for (i, kind) in EntryKind::ALL.into_iter().enumerate() {
        let tx = s.publish(add(kind, 0x10 + i as u8));
        assert_eq!(tx.exit_code, Some(0), "{kind}: {tx:?}");
        println!(
            "gas: add {kind} {} (fees {} nanoton)",
            tx.gas_used, tx.total_fees
        );
    }
    assert_eq!(
        s.status(EntryKind::ModelSha256, [0x12; 32]).await,
        EntryStatus::Registered { added_at: T0 }
    );
    // the same value under another kind is another entry
    assert_eq!(
        s.status(EntryKind::ImageTdx, [0x12; 32]).await,
        EntryStatus::NeverRegistered
    );

    s.local().advance(60).unwrap();
    let tx = s.publish(remove(EntryKind::ModelSha256, 0x12));
    assert_eq!(tx.exit_code, Some(0), "{tx:?}");
    println!(
        "gas: remove {} (fees {} nanoton)",
        tx.gas_used, tx.total_fees
    );
    assert_eq!(
        s.status(EntryKind::ModelSha256, [0x12; 32]).await,
        EntryStatus::Removed {
            added_at: T0,
            removed_at: T0 + 60
        }
    );
    // removing again, or adding a registered value, is refused
    refused(
        &s.publish(remove(EntryKind::ModelSha256, 0x12)),
        RegistryExitCode::NotRegistered,
    );
    refused(
        &s.publish(remove(EntryKind::ModelSha256, 0x99)),
        RegistryExitCode::NotRegistered,
    );
    refused(
        &s.publish(add(EntryKind::ImageTdx, 0x10)),
        RegistryExitCode::AlreadyRegistered,
    );
    // re-added after removal
    s.local().advance(60).unwrap();
    let tx = s.publish(add(EntryKind::ModelSha256, 0x12));
    assert_eq!(tx.exit_code, Some(0), "{tx:?}");
    assert_eq!(
        s.status(EntryKind::ModelSha256, [0x12; 32]).await,
        EntryStatus::Registered { added_at: T0 + 120 }
    );

    let state = registry::read_registry(chain, &s.registry)
        .await
        .unwrap()
        .expect("deployed");
    assert_eq!((state.seqno, state.active, state.event_count), (7, 5, 7));
    let history = registry::read_history(chain, &s.registry, 0, 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 7);
    assert_eq!(history[5].action, ACTION_REMOVE);
    assert_eq!(history[5].kind, EntryKind::ModelSha256);
    assert_eq!(history[5].at, T0 + 60);
    assert_eq!(history[6].action, ACTION_ADD);
    assert_eq!(history[6].at, T0 + 120);
    assert!(registry::read_event(chain, &s.registry, 7)
        .await
        .unwrap()
        .is_none());
    let current = registry::current_entries(&history);
    assert_eq!(current.len(), 5);
    // the account data parses with the Rust layout and agrees with the get methods
    let data = s.data();
    assert_eq!(data.event_count, 7);
    assert_eq!(data.active, 5);
    assert_eq!(data.entries.len(), 5);
    assert_eq!(data.events.values().copied().collect::<Vec<_>>(), history);
    let key = registry::entry_key(EntryKind::ModelSha256, &[0x12; 32]).unwrap();
    assert_eq!(data.entries[&key].added_at, T0 + 120);
    // a history of many events costs no more gas per add (maps, not lists)
    let mut last_gas = 0;
    for value in 0..20u8 {
        let tx = s.publish(add(EntryKind::PriceTable, 0x80 + value));
        assert_eq!(tx.exit_code, Some(0));
        last_gas = tx.gas_used;
    }
    println!("gas: add after 27 events {last_gas}");
}

#[tokio::test]
async fn onchain_registry_refuses_replay_wrong_key_expired_and_foreign_requests() {
    let mut s = Setup::new();
    let request = s.request(add(EntryKind::ImageTdx, 1));
    let body = request
        .clone()
        .sign(&s.publisher, 1)
        .unwrap()
        .to_cell()
        .unwrap();
    assert_eq!(s.send(body.clone()).exit_code, Some(0));
    s.seqno += 1;
    // the same signed request again: its seqno is spent
    refused(&s.send(body), RegistryExitCode::WrongSeqno);
    // a future seqno
    let mut ahead = s.request(add(EntryKind::ImageTdx, 2));
    ahead.seqno += 1;
    refused(
        &s.publish_signed(ahead, &key(1)),
        RegistryExitCode::WrongSeqno,
    );
    // another key
    let request = s.request(add(EntryKind::ImageTdx, 2));
    refused(
        &s.publish_signed(request, &key(2)),
        RegistryExitCode::BadSignature,
    );
    // expired
    let mut expired = s.request(add(EntryKind::ImageTdx, 2));
    expired.valid_until = s.now() - 1;
    refused(
        &s.publish_signed(expired, &key(1)),
        RegistryExitCode::Expired,
    );
    // for another registry (the same key's request replayed elsewhere)
    let mut foreign = s.request(add(EntryKind::ImageTdx, 2));
    foreign.registry = StdAddr::new(0, HashBytes([0x77; 32]));
    refused(
        &s.publish_signed(foreign, &key(1)),
        RegistryExitCode::WrongRegistry,
    );
    // an unknown kind, signed properly (the Rust builder cannot make one: raw cells)
    let raw = {
        let mut b = CellBuilder::new();
        b.store_u32(registry::TAG_PUBLISHER_REQUEST).unwrap();
        tycho_types::cell::Store::store_into(&s.registry, &mut b, Cell::empty_context()).unwrap();
        b.store_u32(s.seqno).unwrap();
        b.store_u32(s.now() + 300).unwrap();
        b.store_u8(registry::ACTION_ADD).unwrap();
        b.store_u8(9).unwrap();
        b.store_u256(&HashBytes([3; 32])).unwrap();
        b.build().unwrap()
    };
    let signature = layout::sign_payload(&raw, &s.publisher);
    let mut body = CellBuilder::new();
    body.store_u32(registry::OP_PUBLISH).unwrap();
    body.store_u64(1).unwrap();
    body.store_raw(&signature, 512).unwrap();
    body.store_reference(raw).unwrap();
    refused(&s.send(body.build().unwrap()), RegistryExitCode::BadKind);
    // an unknown op; a plain transfer is kept (storage money)
    let mut body = CellBuilder::new();
    body.store_u32(0x1234_5678).unwrap();
    refused(&s.send(body.build().unwrap()), RegistryExitCode::UnknownOp);
    let mut comment = CellBuilder::new();
    comment.store_u32(0).unwrap();
    assert_eq!(s.send(comment.build().unwrap()).exit_code, Some(0));

    // nothing but the first add happened
    let state = registry::read_registry(&s.chain, &s.registry)
        .await
        .unwrap()
        .expect("deployed");
    assert_eq!((state.seqno, state.active, state.event_count), (1, 1, 1));
    assert_eq!(
        s.status(EntryKind::ImageTdx, [2; 32]).await,
        EntryStatus::NeverRegistered
    );
    // and every named exit code is a distinct number
    let mut codes: Vec<i32> = RegistryExitCode::ALL.iter().map(|c| c.code()).collect();
    codes.dedup();
    assert_eq!(codes.len(), RegistryExitCode::ALL.len());
}

#[tokio::test]
async fn onchain_registry_readers_see_no_registry_where_none_is_deployed() {
    let s = Setup::new();
    let elsewhere = registry::registry_address(&[9; 32]).unwrap();
    assert!(registry::read_registry(&s.chain, &elsewhere)
        .await
        .unwrap()
        .is_none());
}
