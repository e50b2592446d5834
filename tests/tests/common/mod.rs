//! Raw HTTP/1.1 over the guest's attested TLS, for tests that need to control every byte
//! and every socket (limits, receipts).
#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use cocoon_attestation::account::{AccountKey, ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};
use cocoon_attestation::report_data::TLS_EXPORTER_LABEL;
use cocoon_attestation::Verified;
use cocoon_client::{connect_attested, Endpoint};
use cocoon_tests::Appliance;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long a server may take to act on a limit before the test calls it hung.
pub const BOUND: Duration = Duration::from_secs(30);

pub async fn tls(app: &Appliance) -> TlsStream<TcpStream> {
    tls_verified(app).await.0
}

/// An attested TLS connection to the guest (simulated evidence allowed) and what its
/// certificate proved.
pub async fn tls_verified(app: &Appliance) -> (TlsStream<TcpStream>, Verified) {
    let endpoint = Endpoint::parse(&format!("https://{}", app.guest_addr)).unwrap();
    let options = cocoon_tests::dev_attestor();
    connect_attested(&endpoint, &options, BOUND).await.unwrap()
}

/// Reads until the peer closes (or errors); returns what arrived. Fails the test if the
/// peer keeps the connection open past [`BOUND`].
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open past {BOUND:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response head and as much body as `Content-Length` says. Fails the test if
/// the connection closes first or the server stalls past [`BOUND`].
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (String, String) {
    try_read_response(stream).await.unwrap()
}

/// Like [`read_response`], returning what went wrong instead of failing the test (for
/// tests where servers are killed under the client).
pub async fn try_read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(String, String), String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let wanted = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|end| {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            (end, head, length)
        });
        if let Some((end, head, length)) = &wanted {
            if raw.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).to_string();
                return Ok((head.clone(), body));
            }
        }
        let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .map_err(|_| format!("no complete response within {BOUND:?}"))?
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err(match wanted {
                Some(_) => "connection closed mid-body".to_string(),
                None => format!("connection closed before a response: {raw:?}"),
            });
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

pub fn chat_body(max_tokens: u32, stream: bool) -> String {
    serde_json::json!({
        "model": "smollm2-135m-instruct.q4_1",
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

pub fn post(path: &str, body: &str) -> String {
    post_with(path, &[], body)
}

/// A POST with extra headers.
pub fn post_with(path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!(
        "POST {path} HTTP/1.1\r\nhost: guest\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The value of header `name` (any case) in a response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The account headers that prove `key` in `stream`'s TLS session.
pub fn proven(key: &AccountKey, stream: &TlsStream<TcpStream>) -> [(&'static str, String); 2] {
    let mut exporter = [0u8; 32];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut exporter, TLS_EXPORTER_LABEL, None)
        .unwrap();
    [
        (ACCOUNT_HEADER, key.id().to_string()),
        (ACCOUNT_PROOF_HEADER, key.prove(&exporter)),
    ]
}

/// `(name, value)` pairs borrowed, as `post_with` takes them.
pub fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// One call to a plain-HTTP JSON API (the guest's internal listener, the host agent's
/// admin API) from async code, with `token` as bearer: the status and the JSON body.
pub async fn http_json(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let (addr, method, path, token, body) = (
        addr.to_string(),
        method.to_string(),
        path.to_string(),
        token.map(str::to_string),
        body.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        cocoon_tests::internal_call(&addr, &method, &path, token.as_deref(), &body).unwrap()
    })
    .await
    .unwrap()
}
