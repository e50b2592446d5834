//! The collector against a faithful stand-in for a guest's internal API (a journal that
//! pages after an index and drops what is acknowledged) and a real SQLite ledger. The
//! stand-in checks, at every acknowledgement, that the ledger file already holds what is
//! acknowledged: nothing may be acknowledged before it is durable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_client::args::{CollateralArgs, PolicyArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::agent::config::{CollectorSection, GuestSection};
use crate::ledger::{JournalReceipt, Ledger};
use crate::test_meter::{info, Meter, Scratch};
use crate::vm::verify::policy_attestor;

/// The guest's side: its journal and what it saw.
struct FakeGuest {
    key: Mutex<[u8; 32]>,
    journal: Mutex<BTreeMap<u64, String>>,
    last_index: Mutex<u64>,
    /// Each acknowledgement: `upto`, and whether the ledger held index `upto` then.
    acks: Mutex<Vec<(u64, bool)>>,
    ledger_file: PathBuf,
}

impl FakeGuest {
    fn add(&self, entries: &[JournalReceipt]) {
        let mut journal = self.journal.lock().unwrap();
        for entry in entries {
            journal.insert(entry.index, entry.receipt.clone());
            let mut last = self.last_index.lock().unwrap();
            *last = (*last).max(entry.index);
        }
    }

    fn answer(&self, request_line: &str, body: &str) -> String {
        let path = request_line.split_whitespace().nth(1).unwrap_or_default();
        if let Some(query) = path.strip_prefix("/internal/v1/receipts?") {
            let mut after = 0;
            let mut limit = 100;
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("after", v)) => after = v.parse().unwrap(),
                    Some(("limit", v)) => limit = v.parse().unwrap(),
                    _ => panic!("unexpected query {query}"),
                }
            }
            let data: Vec<serde_json::Value> = self
                .journal
                .lock()
                .unwrap()
                .range(after + 1..)
                .take(limit)
                .map(|(index, receipt)| serde_json::json!({"index": index, "receipt": receipt}))
                .collect();
            serde_json::json!({
                "object": "list",
                "data": data,
                "receipt_key": hex::encode(*self.key.lock().unwrap()),
                "last_index": *self.last_index.lock().unwrap(),
            })
            .to_string()
        } else if path == "/internal/v1/receipts/ack" {
            let upto = serde_json::from_str::<serde_json::Value>(body).unwrap()["upto"]
                .as_u64()
                .unwrap();
            // A second connection to the file: what is durable, not what one connection saw.
            let key = *self.key.lock().unwrap();
            let durable = Ledger::open(&self.ledger_file)
                .unwrap()
                .cursor(&key)
                .unwrap()
                >= upto;
            self.acks.lock().unwrap().push((upto, durable));
            let mut journal = self.journal.lock().unwrap();
            let kept = journal.split_off(&(upto + 1));
            let dropped = journal.len();
            *journal = kept;
            serde_json::json!({"acknowledged": dropped}).to_string()
        } else {
            panic!("unexpected request {request_line}");
        }
    }

    async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let me = self.clone();
            tokio::spawn(async move { me.exchange(stream).await });
        }
    }

    async fn exchange(&self, mut stream: TcpStream) {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let (head, body) = loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break (head.to_string(), body.to_string());
                }
            }
        };
        let answer = self.answer(head.lines().next().unwrap_or_default(), &body);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
    }
}

struct Setup {
    fake: Arc<FakeGuest>,
    guest: Arc<GuestHandle>,
    api: InternalApi,
    ledger: SharedLedger,
    meter: Meter,
    _scratch: Scratch,
}

async fn setup() -> Setup {
    let scratch = Scratch::new();
    let file = scratch.0.join("ledger.sqlite3");
    let meter = Meter::boot();
    let mut ledger = Ledger::open(&file).unwrap();
    ledger
        .record_verification("g", &meter.key(), &info(1))
        .unwrap();
    let fake = Arc::new(FakeGuest {
        key: Mutex::new(meter.key()),
        journal: Mutex::new(BTreeMap::new()),
        last_index: Mutex::new(0),
        acks: Mutex::new(Vec::new()),
        ledger_file: file,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(fake.clone().serve(listener));
    let (attestor, _) =
        policy_attestor(&PolicyArgs::default(), &CollateralArgs::default()).unwrap();
    let guest = GuestHandle::new(
        GuestSection {
            name: "g".into(),
            address: "127.0.0.1:9".into(),
            internal_address: address.clone(),
            host_token_file: PathBuf::from("unused"),
            attestation: PolicyArgs::default(),
            collateral: CollateralArgs::default(),
        },
        attestor,
        AgentMetrics::default(),
    );
    guest.assume_verified(meter.key());
    Setup {
        fake,
        guest,
        api: InternalApi::new(address, "token".into(), Duration::from_secs(10)),
        ledger: SharedLedger::new(ledger),
        meter,
        _scratch: scratch,
    }
}

impl Setup {
    fn collector(&self, page_size: usize) -> Collector {
        Collector::new(
            self.guest.clone(),
            self.api.clone(),
            self.ledger.clone(),
            AgentMetrics::default(),
            CollectorSection {
                page_size,
                ..CollectorSection::default()
            },
        )
    }
}

#[tokio::test]
async fn receipts_are_acknowledged_only_once_durable_and_after_a_crash_too() {
    let mut s = setup().await;
    let served = s.meter.serve_many(&["alice", "bob"], 5);
    s.fake.add(&served);
    let mut collector = s.collector(2);
    let mut rounds = Vec::new();
    loop {
        let round = collector.round().await.unwrap();
        let more = matches!(round, Round::Collected { more: true, .. });
        rounds.push(round);
        if !more {
            break;
        }
    }
    assert_eq!(
        rounds,
        [
            Round::Collected {
                stored: 2,
                more: true
            },
            Round::Collected {
                stored: 2,
                more: true
            },
            Round::Collected {
                stored: 1,
                more: false
            },
        ]
    );
    assert_eq!(
        *s.fake.acks.lock().unwrap(),
        [(2, true), (4, true), (5, true)]
    );
    assert!(s.fake.journal.lock().unwrap().is_empty());
    assert_eq!(s.guest.state().collector.cursor, 5);

    // A predecessor stored two more and died before acknowledging them: the guest still
    // holds them. A fresh collector fetches nothing new, and acknowledges them.
    let more = s.meter.serve_many(&["alice"], 2);
    s.fake.add(&more);
    let key = s.meter.key();
    let stored = s
        .ledger
        .run(move |l| l.store("g", &key, &more))
        .await
        .unwrap();
    assert_eq!(stored.stored.len(), 2);
    let round = s.collector(2).round().await.unwrap();
    assert_eq!(
        round,
        Round::Collected {
            stored: 0,
            more: false
        }
    );
    assert_eq!(s.fake.acks.lock().unwrap().last(), Some(&(7, true)));
    assert!(s.fake.journal.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_receipt_is_kept_acknowledged_and_makes_the_guest_suspect() {
    let s = setup().await;
    s.guest.upstream.set_drained(false);
    // Signed by a key the agent never verified, offered under the verified one.
    let mut impostor = Meter::boot();
    s.fake.add(&impostor.serve_many(&["mallory"], 1));
    let round = s.collector(10).round().await.unwrap();
    assert_eq!(
        round,
        Round::Collected {
            stored: 0,
            more: false
        }
    );
    let state = s.guest.state();
    let why = state.suspect.expect("suspect");
    assert!(why.contains("unverified_key"), "{why}");
    assert!(s.guest.upstream.is_drained(), "no new clients");
    let refused = s.ledger.run(|l| l.refused(0, 10)).await.unwrap();
    assert_eq!(refused.len(), 1, "kept apart for inspection");
    assert_eq!(*s.fake.acks.lock().unwrap(), [(1, true)]);
    // The operator has looked: undraining clears the suspicion.
    s.guest.set_drained(false);
    assert!(s.guest.state().suspect.is_none());
    assert!(!s.guest.upstream.is_drained());
}

#[tokio::test]
async fn a_new_receipt_key_stores_nothing_until_verified_again() {
    let mut s = setup().await;
    s.fake.add(&s.meter.serve_many(&["alice"], 2));
    // The guest rebooted: it now signs with a key no evidence has shown the agent.
    let rebooted = Meter::boot();
    *s.fake.key.lock().unwrap() = rebooted.key();
    let round = s.collector(10).round().await.unwrap();
    assert_eq!(round, Round::KeyChanged);
    assert!(s.fake.acks.lock().unwrap().is_empty());
    let key = s.meter.key();
    assert_eq!(s.ledger.run(move |l| l.cursor(&key)).await.unwrap(), 0);
}
