//! The local side of `cocoon-client proxy`, with the real proxy process and raw TCP
//! clients (security review findings 11 and 24): web pages cannot use it (DNS rebinding,
//! cross-site requests, CORS preflights, non-JSON bodies are refused with OpenAI-style
//! errors, and nothing is forwarded), `--local-token-file` asks every request for a token
//! that never goes upstream, and hop-by-hop headers are dropped in both directions.
//!
//! Most tests put the proxy in front of a header-recording upstream in this process: a
//! simulated-TEE identity that passes attestation (certificate and session-bound evidence)
//! and records what it is sent. The last one uses a real guest.

use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cocoon_attestation::event_log::RuntimeEventLog;
use cocoon_attestation::evidence::{EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::ratls::SubjectAltName;
use cocoon_attestation::report_data::{session_binding, TLS_EXPORTER_LABEL};
use cocoon_guest::identity::GuestIdentity;
use cocoon_guest::tee::{EvidenceProvider, SimulatedTee};
use cocoon_tests::{start_appliance, start_proxy};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use sha2::Digest as _;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// Standard base64 (the test crate has no base64 dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The answer of the recording upstream to everything but `/v1/attestation`: JSON, with
/// hop-by-hop headers of its own (one named by its `Connection` header) and one
/// end-to-end header.
fn recorded_answer() -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authenticate", "Basic realm=\"upstream\"")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::from_static(br#"{"ok":true}"#)))
        .unwrap()
}

/// Starts an attested upstream (simulated TEE, session-bound evidence answered like the
/// guest does) on a loopback port, on its own thread; returns `https://ADDR` and what it
/// was sent.
fn recording_upstream() -> (String, Log) {
    let tee = Arc::new(SimulatedTee::new(false).unwrap());
    // The config it attests and serves at /v1/attestation/config, as the guest does (the
    // proxy reads it at start to learn whether the guest bills through escrows; this one
    // does not). Those reads are the proxy's own, so they are not recorded.
    let config: &'static [u8] = br#"{"model":"m","prices":null}"#;
    let config_digest: [u8; 48] = sha2::Sha384::digest(config).into();
    tee.extend_config_register(&config_digest).unwrap();
    let event_log = RuntimeEventLog::config(3, &config_digest)
        .to_cbor()
        .unwrap();
    let receipt_key = [0x17; 32];
    let identity = Arc::new(
        GuestIdentity::create(
            tee.as_ref(),
            &config_digest,
            &event_log,
            &receipt_key,
            &[SubjectAltName::parse("127.0.0.1")],
            time::Duration::hours(1),
            None,
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let log = Log::default();
    let record = log.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut exporter = [0u8; 32];
                tls.get_ref()
                    .1
                    .export_keying_material(&mut exporter, TLS_EXPORTER_LABEL, None)
                    .unwrap();
                let (tee, identity, log) = (tee.clone(), identity.clone(), record.clone());
                let event_log = event_log.clone();
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let (tee, identity, log) = (tee.clone(), identity.clone(), log.clone());
                    let event_log = event_log.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body: hyper::body::Incoming = body;
                        let body = body.collect().await?.to_bytes();
                        if parts.uri.path() == "/v1/attestation" {
                            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let nonce = hex::decode(value["nonce"].as_str().unwrap()).unwrap();
                            let report_data = session_binding(
                                &identity.spki_der,
                                &config_digest,
                                &nonce,
                                &exporter,
                            );
                            let evidence = tee.attest(&report_data).unwrap();
                            let payload = EvidencePayload {
                                version: PAYLOAD_VERSION,
                                kind: tee.kind(),
                                evidence: evidence.raw,
                                event_log,
                                config_digest: config_digest.to_vec(),
                                gpu_evidence_digest: None,
                                receipt_key: Some(receipt_key.to_vec()),
                                snp_certificates: None,
                                vtpm: None,
                            };
                            let answer = serde_json::json!({
                                "object": "attestation",
                                "nonce": hex::encode(&nonce),
                                "evidence": base64(&payload.to_cbor().unwrap()),
                            });
                            return Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                                answer.to_string(),
                            ))));
                        }
                        if parts.uri.path() == "/v1/attestation/config" {
                            return Ok(Response::new(Full::new(Bytes::from_static(config))));
                        }
                        log.lock().unwrap().push(Recorded {
                            method: parts.method.to_string(),
                            path: parts.uri.to_string(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(n, v)| {
                                    (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect(),
                        });
                        Ok(recorded_answer())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service),
                );
            }
        });
    });
    (url, log)
}

/// The proxy in front of the recording upstream; returns it, its address and the log.
fn proxy_with_recorder(extra: &[&str]) -> (cocoon_tests::Service, String, Log) {
    let (upstream, log) = recording_upstream();
    let mut args = vec!["--allow-simulated", "--accept-any-image"];
    args.extend(extra);
    let (proxy, addr) = start_proxy(&upstream, &args).expect("the proxy starts");
    (proxy, addr, log)
}

/// A parsed HTTP/1.1 response.
struct Answer {
    status: u16,
    /// The head, header names lower-cased.
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.eq_ignore_ascii_case(name)).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts an OpenAI-style error with this status and code; returns its message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}\n{}", self.head, self.body);
        let json = self.json();
        let error = &json["error"];
        let keys: Vec<&String> = error.as_object().expect("an error object").keys().collect();
        assert_eq!(keys.len(), 4, "{json}");
        assert!(error["param"].is_null(), "{json}");
        assert_eq!(error["type"], "invalid_request_error", "{json}");
        assert_eq!(error["code"], code, "{json}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        error["message"].as_str().unwrap().to_string()
    }
}

/// Sends `request` (a raw HTTP/1.1 request up to the end of its headers, without
/// `connection`) and `body` on a fresh connection to `addr`, with `content-length` and
/// `connection: close` added, and reads the whole response.
fn send(addr: &str, request: &str, body: &str) -> Answer {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let length = if body.is_empty() && request.starts_with("GET ") {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    let head = request.trim_end_matches("\r\n");
    write!(conn, "{head}\r\n{length}connection: close\r\n\r\n{body}").unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut answer = Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    };
    if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        answer.body = dechunk(body);
    }
    answer
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        raw = rest[size..].trim_start_matches("\r\n");
    }
    out
}

const CHAT: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}"#;

/// Finding 11: what a web page can make a browser send is refused before anything goes
/// upstream; what a local program sends still goes through.
#[test]
fn web_pages_cannot_use_the_proxy_rebinding_cross_origin_and_non_json_are_refused() {
    let (_proxy, addr, log) = proxy_with_recorder(&[]);
    let port = addr.rsplit_once(':').unwrap().1;
    let post = |host: &str, extra: &str| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n{extra}")
    };
    let json = "content-type: application/json\r\n";

    // DNS rebinding: the page's own name, resolved to 127.0.0.1 (the review's test).
    let rebound = send(
        &addr,
        &post(
            "evil.example",
            &format!("origin: http://evil.example\r\n{json}"),
        ),
        CHAT,
    );
    let message = rebound.error(403, "forbidden_host");
    assert!(
        message.contains("Host 'evil.example'") && message.contains(&addr),
        "{message}"
    );
    let rebound_with_port = send(&addr, &post(&format!("evil.example:{port}"), json), CHAT);
    rebound_with_port.error(403, "forbidden_host");
    // Without a Host, or with an absolute-form target naming another host.
    send(&addr, "GET /v1/models HTTP/1.0\r\n", "").error(403, "forbidden_host");
    let absolute = send(
        &addr,
        &format!("GET http://evil.example:{port}/v1/models HTTP/1.1\r\nhost: {addr}\r\n"),
        "",
    );
    absolute.error(403, "forbidden_host");

    // Cross-origin requests with the right Host (a page of another origin, or a sandboxed
    // one), a CORS preflight and a cross-site fetch without Origin.
    for origin in [
        "http://evil.example".to_string(),
        "null".to_string(),
        format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() ^ 1),
        format!("https://localhost:{port}"),
    ] {
        let answer = send(
            &addr,
            &post(&addr, &format!("origin: {origin}\r\n{json}")),
            CHAT,
        );
        let message = answer.error(403, "forbidden_origin");
        assert!(message.contains(&format!("origin '{origin}'")), "{message}");
    }
    let preflight = send(
        &addr,
        &format!(
            "OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\norigin: http://evil.example\r\n\
             access-control-request-method: POST\r\naccess-control-request-headers: content-type\r\n"
        ),
        "",
    );
    let message = preflight.error(403, "cors_refused");
    assert!(message.contains("CORS preflight"), "{message}");
    assert!(preflight.header("access-control-allow-origin").is_none());
    let cross_site = send(
        &addr,
        &format!("GET /v1/models HTTP/1.1\r\nhost: {addr}\r\nsec-fetch-site: cross-site\r\n"),
        "",
    );
    cross_site.error(403, "forbidden_origin");

    // A no-cors form or text/plain POST (blind CSRF), or no content type at all: 415.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let answer = send(
            &addr,
            &post(&addr, &format!("content-type: {content_type}\r\n")),
            CHAT,
        );
        let message = answer.error(415, "unsupported_media_type");
        assert!(
            message.contains("application/json") && message.contains(content_type),
            "{message}"
        );
    }
    send(&addr, &post(&addr, ""), CHAT).error(415, "unsupported_media_type");
    assert!(
        log.lock().unwrap().is_empty(),
        "refused requests were forwarded: {:?}",
        log.lock().unwrap()
    );

    // What a local program (or a page of the proxy's own origin) sends goes through.
    let local_names = [addr.clone(), format!("localhost:{port}")];
    for host in &local_names {
        let answer = send(&addr, &post(host, json), CHAT);
        assert_eq!(answer.status, 200, "{}\n{}", answer.head, answer.body);
        assert_eq!(answer.json()["ok"], true);
    }
    let same_origin = send(
        &addr,
        &post(
            &addr,
            &format!(
                "origin: http://localhost:{port}\r\nsec-fetch-site: same-origin\r\n\
                 content-type: application/json; charset=utf-8\r\n"
            ),
        ),
        CHAT,
    );
    assert_eq!(same_origin.status, 200, "{}", same_origin.body);
    let get = send(
        &addr,
        &format!("GET /v1/models HTTP/1.1\r\nhost: {addr}\r\n"),
        "",
    );
    assert_eq!(get.status, 200, "{}", get.body);
    let log = log.lock().unwrap();
    let seen: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
        ]
    );
    // The upstream sees its own name, not the local one.
    let upstream_host = log[0].header("host").unwrap();
    assert!(upstream_host.starts_with("127.0.0.1:"), "{upstream_host}");
    assert_ne!(upstream_host, addr);
}

/// Finding 11, the optional local token: without it (or with another) a request gets 401
/// and is not forwarded; with it, it goes through, and the token stays on this machine.
#[test]
fn with_a_local_token_only_requests_that_carry_it_go_through_and_it_stays_local() {
    let dir = cocoon_tests::scratch_dir("local-token").unwrap();
    let token = "3f1c0b9e5a7d44e2b8c6a1f0d2e4c6b8";
    let token_file = dir.join("local-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (_proxy, addr, log) =
        proxy_with_recorder(&["--local-token-file", token_file.to_str().unwrap()]);
    let request = |auth: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}"
        )
    };
    for auth in [
        String::new(),
        "authorization: Bearer none\r\n".to_string(),
        format!("authorization: Basic {token}\r\n"),
    ] {
        let answer = send(&addr, &request(&auth), CHAT);
        let message = answer.error(401, "invalid_api_key");
        assert!(message.contains("--local-token-file"), "{message}");
    }
    assert!(log.lock().unwrap().is_empty());
    let answer = send(
        &addr,
        &request(&format!("authorization: Bearer {token}\r\n")),
        CHAT,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].header("authorization"), None, "{:?}", log[0]);
    // A token file that is too short to be a secret keeps the proxy from starting.
    std::fs::write(&token_file, "short").unwrap();
    let (upstream, _) = recording_upstream();
    let refused = start_proxy(
        &upstream,
        &[
            "--allow-simulated",
            "--accept-any-image",
            "--local-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(refused.is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 24: headers named by `Connection` and the standard hop-by-hop headers are not
/// forwarded upstream, nor passed back from the upstream's answer; end-to-end headers are.
#[test]
fn hop_by_hop_headers_are_dropped_in_both_directions() {
    let (_proxy, addr, log) = proxy_with_recorder(&[]);
    let answer = send(
        &addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             connection: keep-alive, X-Hop-Secret\r\nx-hop-secret: local-only\r\n\
             proxy-authorization: Basic bG9jYWw6c2VjcmV0\r\nkeep-alive: timeout=5\r\n\
             proxy-connection: keep-alive\r\nte: trailers\r\nx-end-to-end: kept\r\n"
        ),
        CHAT,
    );
    assert_eq!(answer.status, 200, "{}\n{}", answer.head, answer.body);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    let seen = &log[0];
    for name in [
        "x-hop-secret",
        "proxy-authorization",
        "keep-alive",
        "proxy-connection",
        "te",
        "connection",
    ] {
        assert_eq!(seen.header(name), None, "{name} was forwarded: {seen:?}");
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"), "{seen:?}");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    // The answer: the upstream's hop-by-hop headers stop at the proxy.
    for name in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(
            answer.header(name),
            None,
            "{name} came back:\n{}",
            answer.head
        );
    }
    assert!(
        answer
            .header("connection")
            .is_none_or(|v| v.eq_ignore_ascii_case("close")),
        "{}",
        answer.head
    );
    assert_eq!(
        answer.header("x-end-to-end"),
        Some("kept"),
        "{}",
        answer.head
    );
    assert_eq!(answer.json()["ok"], true);
}

/// Finding 11 against a real guest: the review's request (`Host: evil.example`) is
/// refused; an OpenAI-style JSON chat with the proxy's own Host is answered by the guest.
#[test]
fn a_real_guest_answers_local_json_requests_and_never_sees_rebound_ones() {
    let app = start_appliance(&[]).expect("appliance starts");
    let upstream = format!("https://{}", app.agent_addr);
    let (_proxy, addr) =
        start_proxy(&upstream, &["--allow-simulated", "--accept-any-image"]).expect("proxy");
    let body = CHAT.replace("\"m\"", &format!("\"{}\"", app.model_id));
    let chat = |host: &str, extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n\
             content-type: application/json\r\n{extra}"
        )
    };
    let evil = send(
        &addr,
        &chat("evil.example", "origin: http://evil.example\r\n"),
        &body,
    );
    evil.error(403, "forbidden_host");
    let answer = send(&addr, &chat(&addr, "authorization: Bearer none\r\n"), &body);
    assert_eq!(answer.status, 200, "{}\n{}", answer.head, answer.body);
    let json = answer.json();
    assert_eq!(json["object"], "chat.completion", "{json}");
    assert!(
        json["choices"][0]["message"]["content"].is_string(),
        "{json}"
    );
    assert!(
        answer.header("x-cocoon-receipt").is_some(),
        "{}",
        answer.head
    );
}
