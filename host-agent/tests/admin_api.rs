//! The admin API over real TCP on loopback, against an in-memory backend: who gets in,
//! what each route answers, how bad requests are refused, the CLI's client, and the
//! `receipts export` subcommand end to end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_host_agent::admin::{
    serve_admin, serve_admin_with, AdminAuth, AdminBackend, AdminClient, AdminLimits,
};
use cocoon_host_agent::Error;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `openssl rand -hex 32`.
const TOKEN: &str = "58102d39da8818bdbdb0530d0a46ffbf082474e39b6a3afe292faf9af523f2a9";

/// Bounds every wait, so a hang fails the test instead of stalling it.
const BOUND: Duration = Duration::from_secs(30);

/// Receipt ids in the test ledger (with gaps, as a real ledger may have).
const RECEIPT_IDS: [i64; 5] = [3, 5, 8, 9, 12];

/// An in-memory backend: two guests, five receipts, usage for two accounts.
struct TestBackend {
    drained: Mutex<BTreeMap<String, bool>>,
    receipts: Vec<Value>,
}

impl TestBackend {
    fn new() -> Self {
        let drained = [("g1".to_string(), false), ("g 2/x".to_string(), false)];
        Self {
            drained: Mutex::new(drained.into_iter().collect()),
            receipts: RECEIPT_IDS.iter().map(|&id| receipt(id)).collect(),
        }
    }
}

fn receipt(id: i64) -> Value {
    json!({"id": id, "account": "0:abc", "tokens": id * 10, "signature": format!("sig{id}")})
}

impl AdminBackend for TestBackend {
    fn status(&self) -> cocoon_host_agent::Result<Value> {
        Ok(json!({"version": "test", "guests": {"total": 2}, "ledger": {"receipts": 5}}))
    }

    fn guests(&self) -> cocoon_host_agent::Result<Value> {
        let drained = self.drained.lock().expect("not poisoned");
        Ok(Value::Array(
            drained
                .iter()
                .map(|(name, drained)| json!({"name": name, "drained": drained, "health": "ok"}))
                .collect(),
        ))
    }

    fn usage(&self, account: Option<&str>) -> cocoon_host_agent::Result<Value> {
        let all = [
            json!({"account": "0:abc", "tokens": 420}),
            json!({"account": "0:d+f/", "tokens": 7}),
        ];
        Ok(Value::Array(
            all.into_iter()
                .filter(|row| account.is_none_or(|a| row["account"] == a))
                .collect(),
        ))
    }

    fn export_receipts(&self, since: i64, limit: usize) -> cocoon_host_agent::Result<Vec<Value>> {
        Ok(self
            .receipts
            .iter()
            .filter(|r| r["id"].as_i64().is_some_and(|id| id > since))
            .take(limit)
            .cloned()
            .collect())
    }

    fn set_drained(&self, guest: &str, drained: bool) -> cocoon_host_agent::Result<Value> {
        let mut guests = self.drained.lock().expect("not poisoned");
        let slot = guests.get_mut(guest).ok_or_else(|| Error::UnknownGuest {
            name: guest.to_string(),
        })?;
        *slot = drained;
        Ok(json!({"name": guest, "drained": drained}))
    }

    fn metrics(&self) -> cocoon_host_agent::Result<String> {
        Ok("# TYPE cocoon_up gauge\ncocoon_up 1\n# EOF\n".into())
    }
}

/// A scratch directory of its own for each test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cocoon-admin-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_token(dir: &Path, token: &str) -> PathBuf {
    let file = dir.join("admin-token");
    std::fs::write(&file, format!("{token}\n")).expect("token file");
    file
}

/// Authentication by [`TOKEN`], from a token file in the test's scratch directory.
fn token_auth(test: &str) -> AdminAuth {
    let file = write_token(&scratch(test), TOKEN);
    AdminAuth::new("127.0.0.1:0".parse().unwrap(), Some(&file), false).unwrap()
}

/// A running admin API.
struct Server {
    addr: SocketAddr,
    backend: Arc<TestBackend>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(test: &str) -> Self {
        Self::start_with(token_auth(test), AdminLimits::default()).await
    }

    async fn start_with(auth: AdminAuth, limits: AdminLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(TestBackend::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_admin_with(
            listener,
            auth,
            backend.clone(),
            limits,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            backend,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn client(&self, token: Option<&str>) -> AdminClient {
        AdminClient::new(self.addr.to_string(), token.map(str::to_string))
    }

    /// Stops the server and waits for it to finish.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(BOUND, task)
                .await
                .expect("the admin API stops")
                .expect("the admin API task does not panic");
        }
    }
}

/// An answer read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The OpenAI-style error, checked for shape.
    fn error(&self) -> Value {
        let body = self.json();
        let error = body["error"].clone();
        for field in ["message", "type", "code"] {
            assert!(error[field].is_string(), "error without {field}: {body}");
        }
        assert_eq!(self.header("content-type"), Some("application/json"));
        error
    }
}

/// Sends `head` (and `body`) as is on a new connection and reads the answer until the
/// server closes.
async fn raw_bytes(addr: SocketAddr, head: &str, body: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .expect("the server answers and closes")
        .expect("read the answer");
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8(got[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: got[split + 4..].to_vec(),
    }
}

/// `method path` with `authorization` (a full header value) if given.
async fn raw(addr: SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> Raw {
    let auth = authorization
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let head =
        format!("{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}connection: close\r\n\r\n");
    raw_bytes(addr, &head, b"").await
}

/// `method path` with the right token.
async fn authed(addr: SocketAddr, method: &str, path: &str) -> Raw {
    raw(addr, method, path, Some(&format!("Bearer {TOKEN}"))).await
}

#[tokio::test]
async fn requests_without_a_token_get_401_everywhere() {
    let server = Server::start("no-token").await;
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/metrics"),
        ("GET", "/v1/receipts?since=0"),
        ("POST", "/v1/guests/g1/drain"),
        ("GET", "/no/such/route"),
    ] {
        let answer = raw(server.addr, method, path, None).await;
        assert_eq!(answer.status, 401, "{method} {path}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        let error = answer.error();
        assert_eq!(error["type"], "authentication_error");
        assert_eq!(error["code"], "missing_admin_token");
    }
    assert!(!server.backend.drained.lock().unwrap()["g1"], "not drained");
    server.stop().await;
}

#[tokio::test]
async fn wrong_tokens_get_401() {
    let server = Server::start("wrong-token").await;
    let mut one_char_off = TOKEN.to_string();
    one_char_off.replace_range(63.., "f");
    assert_ne!(one_char_off, TOKEN);
    let wrong = [
        format!("Bearer {}", "0".repeat(64)),
        format!("Bearer {one_char_off}"),
        format!("Bearer {}", &TOKEN[..63]),
        format!("Bearer {}", &TOKEN[..1]),
        format!("Bearer {TOKEN}x"),
        format!("Basic {TOKEN}"),
    ];
    for authorization in &wrong {
        let answer = raw(server.addr, "GET", "/v1/status", Some(authorization)).await;
        assert_eq!(answer.status, 401, "{authorization}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        let code = answer.error()["code"].clone();
        let expected = if authorization.starts_with("Basic") {
            "missing_admin_token"
        } else {
            "invalid_admin_token"
        };
        assert_eq!(code, expected, "{authorization}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_token_opens_every_route() {
    let server = Server::start("right-token").await;
    let status = authed(server.addr, "GET", "/v1/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    assert_eq!(status.json()["version"], "test");

    let guests = authed(server.addr, "GET", "/v1/guests").await;
    assert_eq!(guests.status, 200);
    assert_eq!(guests.json().as_array().map(Vec::len), Some(2));

    let usage = authed(server.addr, "GET", "/v1/usage?account=0%3Ad%2Bf%2F").await;
    assert_eq!(usage.status, 200);
    assert_eq!(usage.json(), json!([{"account": "0:d+f/", "tokens": 7}]));

    let metrics = authed(server.addr, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&metrics.body).ends_with("# EOF\n"));
    server.stop().await;
}

#[tokio::test]
async fn billing_settlements_route_answers_and_checks_its_limit() {
    let server = Server::start("right-token").await;
    let list = authed(server.addr, "GET", "/v1/settlements?limit=5").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json(),
        json!({"object": "list", "billing": false, "data": []})
    );
    assert_eq!(
        authed(server.addr, "GET", "/v1/settlements?limit=0")
            .await
            .status,
        400
    );
    assert_eq!(
        authed(server.addr, "GET", "/v1/settlements?since=1")
            .await
            .status,
        400
    );
    assert_eq!(
        authed(server.addr, "POST", "/v1/settlements").await.status,
        405
    );
    server.stop().await;
}

#[test]
fn refuses_to_serve_without_a_token_off_loopback() {
    for listen in ["0.0.0.0:0", "[::]:9444", "192.0.2.7:9444"] {
        let listen: SocketAddr = listen.parse().unwrap();
        for allow in [false, true] {
            let err = AdminAuth::new(listen, None, allow).unwrap_err();
            assert!(
                matches!(&err, Error::AdminUnauthenticated { listen: l, .. } if *l == listen),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("not a loopback address") && text.contains("--admin-token-file"),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn loopback_without_a_token_needs_the_flag() {
    let listen: SocketAddr = "127.0.0.1:9444".parse().unwrap();
    let err = AdminAuth::new(listen, None, false).unwrap_err().to_string();
    assert!(
        err.contains("--admin-allow-unauthenticated-loopback") && err.contains("127.0.0.1:9444"),
        "{err}"
    );
    let auth = AdminAuth::new("[::1]:0".parse().unwrap(), None, true).unwrap();
    assert!(!auth.requires_token());
    let server = Server::start_with(auth, AdminLimits::default()).await;
    assert_eq!(
        raw(server.addr, "GET", "/v1/status", None).await.status,
        200
    );
    server.stop().await;
}

#[test]
fn weak_or_missing_token_files_are_refused() {
    let dir = scratch("weak-token");
    let listen: SocketAddr = "0.0.0.0:9444".parse().unwrap();
    let cases = [
        ("a".repeat(40), "too easy to guess"),
        ("0123456789abcdef".repeat(4), "too easy to guess"),
        (TOKEN[..20].to_string(), "fewer than 32"),
        ("  \n".to_string(), "is empty"),
    ];
    for (token, why) in cases {
        let file = write_token(&dir, &token);
        let err = AdminAuth::new(listen, Some(&file), false).unwrap_err();
        assert!(matches!(err, Error::AdminToken { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(why) && text.contains(&*file.to_string_lossy()),
            "{text}"
        );
    }
    let err = AdminAuth::new(listen, Some(&dir.join("absent")), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
    let strong = write_token(&dir, TOKEN);
    assert!(AdminAuth::new(listen, Some(&strong), false)
        .unwrap()
        .requires_token());
}

#[tokio::test]
async fn drain_and_undrain_round_trip() {
    let server = Server::start("drain").await;
    let client = server.client(Some(TOKEN));
    let drained = client.set_drained("g1", true).await.unwrap();
    assert_eq!(drained, json!({"name": "g1", "drained": true}));
    let guests = client.guests().await.unwrap();
    let g1 = guests
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "g1"))
        .cloned();
    assert_eq!(g1.map(|g| g["drained"].clone()), Some(json!(true)));

    // A name that needs encoding in a path.
    client.set_drained("g 2/x", true).await.unwrap();
    assert!(server.backend.drained.lock().unwrap()["g 2/x"]);

    let undrained = client.set_drained("g1", false).await.unwrap();
    assert_eq!(undrained["drained"], false);
    assert!(!server.backend.drained.lock().unwrap()["g1"]);

    let err = client
        .set_drained("nope", true)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("admin API at {}: 404 no guest named `nope`", server.addr)
    );
    let answer = authed(server.addr, "POST", "/v1/guests/nope/undrain").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error()["code"], "unknown_guest");
    server.stop().await;
}

#[tokio::test]
async fn receipts_page_by_since_and_next_since() {
    let server = Server::start("receipts").await;
    let mut since = 0;
    let mut pages = Vec::new();
    loop {
        let answer = authed(
            server.addr,
            "GET",
            &format!("/v1/receipts?since={since}&limit=2"),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some("application/x-ndjson"));
        let next: i64 = answer
            .header("x-cocoon-next-since")
            .unwrap()
            .parse()
            .unwrap();
        let ids: Vec<i64> = String::from_utf8(answer.body)
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        pages.push((since, ids.clone(), next));
        if ids.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
        since = next;
    }
    assert_eq!(
        pages,
        vec![
            (0, vec![3, 5], 5),
            (5, vec![8, 9], 9),
            (9, vec![12], 12),
            (12, vec![], 12),
        ]
    );
    // The default limit takes them all; a since between ids starts after it.
    let answer = authed(server.addr, "GET", "/v1/receipts?since=6").await;
    assert_eq!(answer.header("x-cocoon-next-since"), Some("12"));
    assert_eq!(String::from_utf8(answer.body).unwrap().lines().count(), 3);

    let client = server.client(Some(TOKEN));
    let page = client.receipts(5, 2).await.unwrap();
    assert_eq!((page.ids.clone(), page.next_since), (vec![8, 9], 9));
    assert_eq!(page.lines[0], receipt(8).to_string());
    let mut out = Vec::new();
    let summary = client.export_receipts(4, 2, &mut out).await.unwrap();
    let expected: String = [5, 8, 9, 12]
        .iter()
        .map(|&id| format!("{}\n", receipt(id)))
        .collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert_eq!(
        (
            summary.receipts,
            summary.first_id,
            summary.last_id,
            summary.next_since
        ),
        (4, Some(5), Some(12), 12)
    );
    let mut none = Vec::new();
    let summary = client.export_receipts(12, 1000, &mut none).await.unwrap();
    assert!(none.is_empty());
    assert_eq!((summary.receipts, summary.next_since), (0, 12));
    server.stop().await;
}

#[tokio::test]
async fn bad_queries_get_400_naming_the_parameter() {
    let server = Server::start("bad-query").await;
    let cases = [
        ("/v1/receipts?limit=0", "limit"),
        ("/v1/receipts?limit=10001", "limit"),
        ("/v1/receipts?limit=ten", "limit"),
        ("/v1/receipts?since=-1", "since"),
        ("/v1/receipts?since=1.5", "since"),
        ("/v1/receipts?since=1&since=2", "since"),
        ("/v1/receipts?since=%zz", "since"),
        ("/v1/usage?account=", "account"),
    ];
    for (path, param) in cases {
        let answer = authed(server.addr, "GET", path).await;
        assert_eq!(answer.status, 400, "{path}");
        let error = answer.error();
        assert_eq!(error["param"], param, "{path}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{param}`")), "{path}: {message}");
    }
    for (path, name) in [
        ("/v1/receipts?sinse=3", "sinse"),
        ("/v1/status?verbose=1", "verbose"),
    ] {
        let answer = authed(server.addr, "GET", path).await;
        assert_eq!(answer.status, 400, "{path}");
        let error = answer.error();
        assert_eq!(error["code"], "unknown_parameter");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{name}`")),
            "{error}"
        );
    }
    assert_eq!(
        authed(server.addr, "GET", "/v1/receipts?limit=10000")
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_methods_get_405_and_unknown_paths_404() {
    let server = Server::start("method").await;
    for (method, path, allow) in [
        ("POST", "/v1/status", "GET"),
        ("DELETE", "/v1/receipts", "GET"),
        ("PUT", "/metrics", "GET"),
        ("GET", "/v1/guests/g1/drain", "POST"),
        ("GET", "/v1/guests/g1/undrain", "POST"),
    ] {
        let answer = authed(server.addr, method, path).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(answer.error()["code"], "method_not_allowed");
    }
    for path in [
        "/",
        "/v1",
        "/v1/status/",
        "/v2/status",
        "/v1/guests/g1",
        "/v1/guests//drain",
    ] {
        let answer = authed(server.addr, "GET", path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.error()["code"], "unknown_route", "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let server = Server::start("body").await;
    let auth = format!("authorization: Bearer {TOKEN}\r\n");
    // Declared too large: refused on the head alone, before any body is sent.
    let head = format!(
        "POST /v1/guests/g1/drain HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 70000\r\n\r\n"
    );
    let answer = raw_bytes(server.addr, &head, b"").await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error()["code"], "body_too_large");
    // Chunked, so the size shows only while reading: one byte over the limit.
    let head = format!(
        "POST /v1/guests/g1/drain HTTP/1.1\r\nhost: admin\r\n{auth}transfer-encoding: chunked\r\n\r\n{:x}\r\n",
        64 * 1024 + 1
    );
    let answer = raw_bytes(server.addr, &head, &vec![b'x'; 64 * 1024 + 1]).await;
    assert_eq!(answer.status, 413);
    assert!(!server.backend.drained.lock().unwrap()["g1"], "not drained");
    // At the limit it is read (and ignored).
    let head = format!(
        "POST /v1/guests/g1/drain HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 65536\r\nconnection: close\r\n\r\n"
    );
    let answer = raw_bytes(server.addr, &head, &vec![b'x'; 64 * 1024]).await;
    assert_eq!(answer.status, 200);
    assert!(server.backend.drained.lock().unwrap()["g1"], "drained");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let auth = token_auth("cap");
    // Timeouts far beyond BOUND: a connection that was let in stays open for the test.
    let limits = AdminLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        ..AdminLimits::default()
    };
    let server = Server::start_with(auth, limits).await;
    // The first connection holds the only slot (it has sent nothing yet).
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(BOUND, second.read(&mut buf))
        .await
        .expect("the second connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // The first is served.
    let request = format!(
        "GET /v1/status HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    first.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, first.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let auth = token_auth("shutdown");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_admin(
        listener,
        auth,
        Arc::new(TestBackend::new()),
        async {
            let _ = stopped.await;
        },
    ));
    // A kept-alive connection that has had one answer and now idles.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /metrics HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(BOUND, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    stop.send(()).unwrap();
    tokio::time::timeout(BOUND, task)
        .await
        .expect("serve_admin returns after shutdown")
        .unwrap();
    let mut rest = Vec::new();
    // Closed: end of stream (or a reset), and nothing more was sent.
    let end = tokio::time::timeout(BOUND, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed");
    if end.is_ok() {
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
}

#[tokio::test]
async fn client_errors_say_what_went_wrong() {
    let server = Server::start("client-errors").await;
    let wrong = server
        .client(Some(&"f".repeat(64)))
        .status()
        .await
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        format!("admin API at {}: 401 invalid admin token", server.addr)
    );
    let missing = server.client(None).status().await.unwrap_err().to_string();
    assert!(
        missing.contains("401 admin token required") && missing.contains("--admin-token-file"),
        "{missing}"
    );
    let usage = server
        .client(Some(TOKEN))
        .usage(Some("0:abc"))
        .await
        .unwrap();
    assert_eq!(usage, json!([{"account": "0:abc", "tokens": 420}]));
    assert!(server
        .client(Some(TOKEN))
        .metrics()
        .await
        .unwrap()
        .contains("cocoon_up 1"));
    server.stop().await;

    // Nothing listens there any more.
    let refused = AdminClient::new(server_addr_after_stop().await, None)
        .status()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("connection refused: the agent is not running"),
        "{refused}"
    );
}

/// A loopback address nothing listens on: bind, learn the port, close.
async fn server_addr_after_stop() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Runs the built `cocoon-host-agent` with `args`; returns (success, stdout, stderr).
async fn cli(args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        BOUND,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cocoon-host-agent"))
            .args(args)
            .env_remove("COCOON_ADMIN")
            .env_remove("COCOON_ADMIN_TOKEN_FILE")
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the CLI finishes")
    .expect("the CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_exports_receipts_and_shows_tables() {
    let server = Server::start("cli").await;
    let dir = scratch("cli-files");
    let token = write_token(&dir, TOKEN);
    let output = dir.join("receipts.jsonl");
    let addr = server.addr.to_string();
    let common = [
        "--admin",
        addr.as_str(),
        "--admin-token-file",
        token.to_str().unwrap(),
    ];

    let mut args = vec!["receipts", "export"];
    args.extend(common);
    args.extend([
        "--since",
        "3",
        "--page-size",
        "2",
        "--output",
        output.to_str().unwrap(),
    ]);
    let (ok, stdout, stderr) = cli(&args).await;
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let expected: String = [5, 8, 9, 12]
        .iter()
        .map(|&id| format!("{}\n", receipt(id)))
        .collect();
    assert_eq!(std::fs::read_to_string(&output).unwrap(), expected);
    assert!(!dir.join("receipts.jsonl.partial").exists());
    assert!(
        stderr.contains("exported 4 receipts") && stderr.contains("--since 12"),
        "{stderr}"
    );

    // To stdout.
    let mut args = vec!["receipts", "export"];
    args.extend(common);
    args.extend(["--since", "9"]);
    let (ok, stdout, _) = cli(&args).await;
    assert!(ok);
    assert_eq!(stdout, format!("{}\n", receipt(12)));

    let mut args = vec!["usage"];
    args.extend(common);
    let (ok, stdout, stderr) = cli(&args).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "ACCOUNT  TOKENS\n0:abc    420\n0:d+f/   7\n");

    let mut args = vec!["drain", "g1"];
    args.extend(common);
    args.push("--json");
    let (ok, stdout, stderr) = cli(&args).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["drained"],
        true
    );

    let mut args = vec!["drain", "nope", "--undrain"];
    args.extend(common);
    let (ok, _, stderr) = cli(&args).await;
    assert!(!ok);
    assert!(stderr.contains("404 no guest named `nope`"), "{stderr}");

    // A wrong token stops the export and leaves no output file.
    let wrong = dir.join("wrong-token");
    std::fs::write(&wrong, "e".repeat(64)).unwrap();
    let failed = dir.join("failed.jsonl");
    let (ok, _, stderr) = cli(&[
        "receipts",
        "export",
        "--admin",
        &addr,
        "--admin-token-file",
        wrong.to_str().unwrap(),
        "--output",
        failed.to_str().unwrap(),
    ])
    .await;
    assert!(!ok);
    assert!(stderr.contains("401 invalid admin token"), "{stderr}");
    assert!(!failed.exists());
    assert!(!dir.join("failed.jsonl.partial").exists());
    server.stop().await;
}
