//! A TON HTTP API client (toncenter v2 routes) implementing [`Chain`].
//!
//! Why hyper and tokio-rustls rather than reqwest: the workspace already builds hyper 1,
//! tokio-rustls 0.26 and rustls 0.23 with ring (and webpki-roots is in the lock), so this adds
//! no crate; reqwest would add its own stack (hickory, platform verifier, tower) for four
//! JSON routes. One connection per request: billing makes a few calls a minute, toncenter
//! closes idle connections anyway, and there is no pool to go stale.
//!
//! Every request has a connect timeout (DNS included) and a whole-request timeout; answers
//! are read up to a size bound; HTTP 429 (toncenter's rate limit) is retried with exponential
//! backoff a bounded number of times (`Retry-After` honoured within the cap). Errors name the
//! URL and carry toncenter's `error` text. Roots of trust are webpki-roots (Mozilla's), built
//! in, so the appliance does not depend on the image's certificate store.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tycho_types::models::StdAddr;

use super::wire;
use crate::chain::{
    friendly_address, message_hash, AccountState, AccountStatus, Chain, StackValue,
    TransactionInfo, MAX_TRANSACTIONS,
};
use crate::{Error, Result};

/// The header toncenter reads the API key from.
pub const API_KEY_HEADER: &str = "X-API-Key";

/// Longest API key accepted from a file (toncenter's are 64 hex characters).
const MAX_API_KEY_BYTES: usize = 256;

/// How the client reaches the API.
#[derive(Clone)]
pub struct TonHttpConfig {
    /// Base URL, e.g. `https://toncenter.com` or `http://127.0.0.1:8081` (a trailing `/api/v2`
    /// is accepted too).
    pub base_url: String,
    /// API key sent as `X-API-Key` (never printed by `Debug`).
    pub api_key: Option<String>,
    /// TCP connect (DNS included) and TLS handshake limit.
    pub connect_timeout: Duration,
    /// Whole-request limit (connect, send, read).
    pub request_timeout: Duration,
    /// Largest answer body read.
    pub max_response_bytes: usize,
    /// Retries after HTTP 429 (0: none).
    pub max_retries: u32,
    /// First backoff after a 429; doubled each retry.
    pub retry_base_delay: Duration,
    /// Longest single backoff (also caps `Retry-After`).
    pub retry_max_delay: Duration,
}

impl fmt::Debug for TonHttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonHttpConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl TonHttpConfig {
    /// Defaults: 10 s to connect, 30 s per request, 4 MiB answers, 4 retries on 429 from 1 s.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 4 << 20,
            max_retries: 4,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(16),
        }
    }

    /// Reads the API key from a file (surrounding whitespace trimmed).
    pub fn with_api_key_file(mut self, path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::Invalid {
            what: "API key file",
            reason: format!("{}: {reason}", path.display()),
        };
        let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        if bytes.len() > MAX_API_KEY_BYTES {
            return Err(invalid(format!("more than {MAX_API_KEY_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".into()))?;
        let key = text.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "empty or not printable ASCII without spaces".into(),
            ));
        }
        self.api_key = Some(key.to_owned());
        Ok(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// A toncenter v2 client. Cheap to clone.
#[derive(Clone)]
pub struct TonHttpClient {
    config: Arc<TonHttpConfig>,
    scheme: Scheme,
    host: String,
    port: u16,
    /// Authority for the `Host` header.
    authority: String,
    /// Path before `/api/v2` (usually empty).
    prefix: String,
    api_key: Option<HeaderValue>,
    tls: tokio_rustls::TlsConnector,
}

impl fmt::Debug for TonHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonHttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Characters left as they are in a query value (RFC 3986 unreserved).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One attempt's outcome: the status, `Retry-After` seconds and the body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Bytes,
}

impl TonHttpClient {
    /// A client for `config.base_url` (`http` or `https`).
    pub fn new(config: TonHttpConfig) -> Result<Self> {
        let invalid = |reason: String| Error::Invalid {
            what: "TON API URL",
            reason: format!("{:?}: {reason}", config.base_url),
        };
        let uri: Uri = config
            .base_url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(invalid("the scheme must be http or https".into())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("no host".into()))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported".into()));
        }
        if uri.query().is_some() {
            return Err(invalid("a base URL takes no query".into()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let path = uri.path().trim_end_matches('/');
        let prefix = path.strip_suffix("/api/v2").unwrap_or(path).to_owned();
        let api_key = match &config.api_key {
            Some(key) => Some(HeaderValue::from_str(key).map_err(|_| Error::Invalid {
                what: "API key",
                reason: "not a valid header value".into(),
            })?),
            None => None,
        };
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid {
            what: "TLS configuration",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            scheme,
            host,
            port,
            authority: authority.as_str().to_owned(),
            prefix,
            api_key,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            config: Arc::new(config),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TonHttpConfig {
        &self.config
    }

    fn url(&self, path_and_query: &str) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{path_and_query}", self.authority)
    }

    async fn connect(&self) -> std::result::Result<Box<dyn Stream>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Requests are small and answered at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match self.scheme {
            Scheme::Http => Ok(Box::new(tcp)),
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Ok(Box::new(tls))
            }
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        path_and_query: &str,
        body: &Option<Vec<u8>>,
    ) -> std::result::Result<Answer, String> {
        let stream = tokio::time::timeout(self.config.connect_timeout, self.connect())
            .await
            .map_err(|_| format!("connect timed out after {:?}", self.config.connect_timeout))??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(HOST, self.authority.as_str())
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("cocoon-billing/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = &self.api_key {
            request = request.header(API_KEY_HEADER, key.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
            .map_err(|e| format!("request: {e}"))?;
        let max = self.config.max_response_bytes;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = Limited::new(response.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        format!("answer larger than {max} bytes")
                    } else {
                        format!("reading the answer: {e}")
                    }
                })?
                .to_bytes();
            Ok::<_, String>(Answer {
                status,
                retry_after,
                body,
            })
        };
        // Drive the connection and the exchange together; a connection that ends cleanly
        // first has delivered everything the exchange still reads.
        let mut conn = std::pin::pin!(conn);
        let mut exchange = std::pin::pin!(exchange);
        tokio::select! {
            answer = &mut exchange => answer,
            done = &mut conn => match done {
                Ok(()) => exchange.await,
                Err(e) => Err(format!("connection: {e}")),
            },
        }
    }

    /// Sends a request, retrying after 429, and returns toncenter's `result`.
    async fn call(
        &self,
        method: Method,
        path_and_query: String,
        body: Option<Value>,
    ) -> Result<Value> {
        let path_and_query = format!("{}{path_and_query}", self.prefix);
        let url = self.url(&path_and_query);
        let body = body.map(|b| b.to_string().into_bytes());
        let mut attempt = 0u32;
        loop {
            let answer = tokio::time::timeout(
                self.config.request_timeout,
                self.attempt(&method, &path_and_query, &body),
            )
            .await
            .map_err(|_| Error::Http {
                url: url.clone(),
                reason: format!("timed out after {:?}", self.config.request_timeout),
            })?
            .map_err(|reason| Error::Http {
                url: url.clone(),
                reason,
            })?;
            if answer.status == StatusCode::TOO_MANY_REQUESTS && attempt < self.config.max_retries {
                let backoff = self
                    .config
                    .retry_base_delay
                    .saturating_mul(1u32 << attempt.min(16));
                let delay = answer
                    .retry_after
                    .map(Duration::from_secs)
                    .unwrap_or(backoff)
                    .min(self.config.retry_max_delay);
                attempt += 1;
                tokio::time::sleep(delay).await;
                continue;
            }
            return parse_answer(&url, answer.status, &answer.body);
        }
    }

    /// `POST /api/v2/sendBoc`.
    pub async fn send_boc(&self, boc: &[u8]) -> Result<()> {
        let result = self
            .call(
                Method::POST,
                "/api/v2/sendBoc".into(),
                Some(json!({ "boc": wire::b64(boc) })),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(Error::Api { message, url, code }) => {
                // toncenter passes on the lite server's refusal, which names the exit code
                // (`... exitcode=33, steps=...`); the local chain reports the same refusal
                // as `ExternalNotAccepted`.
                if message.contains("not accepted") || message.contains("rejected") {
                    Err(Error::ExternalNotAccepted {
                        exit_code: exit_code_in(&message),
                    })
                } else {
                    Err(Error::Api { url, code, message })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v2/getAddressInformation`: balance, state and last transaction.
    pub async fn get_address_information(&self, addr: &StdAddr) -> Result<AccountState> {
        let path = format!(
            "/api/v2/getAddressInformation?address={}",
            percent_encode(&addr.to_string())
        );
        let url = self.url(&path);
        let result = self.call(Method::GET, path, None).await?;
        let malformed = |what: &str| Error::Http {
            url: url.clone(),
            reason: format!("malformed answer: {what}"),
        };
        let balance = wire::u128_from_json(
            result
                .get("balance")
                .ok_or_else(|| malformed("no balance"))?,
            "balance",
        )?;
        let last_lt = match result.get("last_transaction_id").and_then(|t| t.get("lt")) {
            Some(lt) => wire::u64_from_json(lt, "lt")?,
            None => 0,
        };
        let status = match result.get("state").and_then(Value::as_str) {
            Some("active") => AccountStatus::Active,
            Some("frozen") => AccountStatus::Frozen,
            Some("uninitialized") | Some("uninit") | Some("nonexist") => {
                if balance == 0 && last_lt == 0 {
                    AccountStatus::Nonexist
                } else {
                    AccountStatus::Uninit
                }
            }
            other => return Err(malformed(&format!("state {other:?}"))),
        };
        Ok(AccountState {
            balance,
            status,
            last_lt,
        })
    }

    /// `POST /api/v2/runGetMethod`.
    pub async fn run_get_method(
        &self,
        addr: &StdAddr,
        method: &str,
        args: &[StackValue],
    ) -> Result<Vec<StackValue>> {
        let stack = args
            .iter()
            .map(wire::arg_to_json)
            .collect::<Result<Vec<_>>>()?;
        let path = "/api/v2/runGetMethod".to_owned();
        let url = self.url(&path);
        let result = self
            .call(
                Method::POST,
                path,
                Some(json!({ "address": addr.to_string(), "method": method, "stack": stack })),
            )
            .await?;
        let exit_code = result
            .get("exit_code")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
            .ok_or_else(|| Error::Http {
                url: url.clone(),
                reason: "malformed answer: no exit_code".into(),
            })?;
        if exit_code != 0 && exit_code != 1 {
            return Err(Error::GetMethodFailed {
                method: method.to_owned(),
                exit_code,
            });
        }
        wire::results_from_json(result.get("stack").unwrap_or(&Value::Null)).map_err(|e| {
            Error::Http {
                url,
                reason: format!("malformed stack: {e}"),
            }
        })
    }

    /// `GET /api/v2/getTransactions`: newest first, at most `limit` (≤ 100).
    pub async fn get_transactions(
        &self,
        addr: &StdAddr,
        limit: usize,
        from: Option<(u64, [u8; 32])>,
    ) -> Result<Vec<TransactionInfo>> {
        let limit = limit.clamp(1, MAX_TRANSACTIONS);
        let mut path = format!(
            "/api/v2/getTransactions?address={}&limit={limit}",
            percent_encode(&friendly_address(addr))
        );
        if let Some((lt, hash)) = from {
            // The transaction to start from (inclusive): its lt and its hash (toncenter
            // takes the hash in hex or base64).
            path.push_str(&format!("&lt={lt}&hash={}", hex::encode(hash)));
        }
        let url = self.url(&path);
        let result = self.call(Method::GET, path, None).await?;
        let items = result.as_array().ok_or_else(|| Error::Http {
            url: url.clone(),
            reason: "malformed answer: not a list of transactions".into(),
        })?;
        items
            .iter()
            .take(limit)
            .map(|tx| {
                wire::transaction_from_json(tx).map_err(|e| Error::Http {
                    url: url.clone(),
                    reason: format!("malformed transaction: {e}"),
                })
            })
            .collect()
    }
}

/// The number after `exitcode=` or `exit code` in a lite server message.
fn exit_code_in(message: &str) -> Option<i32> {
    ["exitcode=", "exit code "].iter().find_map(|marker| {
        let start = message.find(marker)? + marker.len();
        let digits: String = message[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse().ok()
    })
}

/// toncenter's envelope: `{"ok":true,"result":...}` or `{"ok":false,"error":...,"code":...}`.
fn parse_answer(url: &str, status: StatusCode, body: &[u8]) -> Result<Value> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed {
        Some(Value::Object(mut map)) => {
            if map.get("ok").and_then(Value::as_bool) == Some(true) && status.is_success() {
                return map.remove("result").ok_or_else(|| Error::Http {
                    url: url.to_owned(),
                    reason: "malformed answer: ok without result".into(),
                });
            }
            let message = match map.get("error").or_else(|| map.get("result")) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => format!("HTTP {status}"),
            };
            let code = map
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(i64::from(status.as_u16()));
            Err(Error::Api {
                url: url.to_owned(),
                code,
                message: truncate(&message, 1024),
            })
        }
        _ => Err(Error::Http {
            url: url.to_owned(),
            reason: format!(
                "HTTP {status}, not a JSON answer: {:?}",
                truncate(&String::from_utf8_lossy(body), 200)
            ),
        }),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[async_trait]
impl Chain for TonHttpClient {
    async fn send_boc(&self, boc: &[u8]) -> Result<[u8; 32]> {
        // Refuse a malformed BoC here, with the same error the local chain gives.
        let hash = message_hash(boc)?;
        TonHttpClient::send_boc(self, boc).await?;
        Ok(hash)
    }

    async fn account_state(&self, addr: &StdAddr) -> Result<AccountState> {
        self.get_address_information(addr).await
    }

    async fn run_get_method(
        &self,
        addr: &StdAddr,
        method: &str,
        args: &[StackValue],
    ) -> Result<Vec<StackValue>> {
        TonHttpClient::run_get_method(self, addr, method, args).await
    }

    async fn transactions_before(
        &self,
        addr: &StdAddr,
        before: Option<(u64, [u8; 32])>,
        limit: usize,
    ) -> Result<Vec<TransactionInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some((lt, hash)) = before else {
            return self.get_transactions(addr, limit, None).await;
        };
        // toncenter's page starts at the given transaction itself, which is dropped: a page
        // after a cursor holds at most one less than asked (at most MAX_TRANSACTIONS - 1).
        let mut page = self.get_transactions(addr, limit, Some((lt, hash))).await?;
        page.retain(|tx| tx.lt < lt);
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_http_config_parses_urls_and_hides_the_key() {
        let client = TonHttpClient::new(TonHttpConfig::new("https://toncenter.com/api/v2/"))
            .expect("client");
        assert_eq!(client.port, 443);
        assert_eq!(client.prefix, "");
        assert_eq!(
            client.url("/api/v2/sendBoc"),
            "https://toncenter.com/api/v2/sendBoc"
        );
        let client =
            TonHttpClient::new(TonHttpConfig::new("http://127.0.0.1:8081/ton")).expect("client");
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 8081));
        assert_eq!(client.prefix, "/ton");
        for bad in [
            "ftp://x",
            "toncenter.com",
            "http://u:p@host",
            "http://h/?q=1",
            "",
        ] {
            assert!(
                TonHttpClient::new(TonHttpConfig::new(bad)).is_err(),
                "{bad}"
            );
        }
        let mut config = TonHttpConfig::new("https://toncenter.com");
        config.api_key = Some("secret-key".into());
        assert!(!format!("{config:?}").contains("secret-key"));
        assert_eq!(percent_encode("0:ab+/="), "0%3Aab%2B%2F%3D");
        assert_eq!(exit_code_in("x: exitcode=33, steps=5"), Some(33));
        assert_eq!(exit_code_in("nothing"), None);
    }

    #[test]
    fn billing_http_api_key_file() {
        let dir = std::env::temp_dir().join(format!("billing-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good");
        std::fs::write(&good, "abc123\n").expect("write");
        let config = TonHttpConfig::new("http://127.0.0.1:1")
            .with_api_key_file(&good)
            .expect("key");
        assert_eq!(config.api_key.as_deref(), Some("abc123"));
        let bad = dir.join("bad");
        std::fs::write(&bad, "two words").expect("write");
        assert!(TonHttpConfig::new("x").with_api_key_file(&bad).is_err());
        std::fs::write(&bad, "").expect("write");
        assert!(TonHttpConfig::new("x").with_api_key_file(&bad).is_err());
        assert!(TonHttpConfig::new("x")
            .with_api_key_file(&dir.join("missing"))
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
