//! `cocoon-client proxy`: a local, plain-HTTP OpenAI endpoint that forwards only to a
//! Cocoon guest that passed attestation.
//!
//! Every new local connection opens its own upstream TLS session, verifies the
//! certificate's evidence *and* fresh evidence bound to that session (nonce + TLS
//! exporter), and only then forwards requests over that same session, streaming the
//! answers back unchanged. If verification fails, nothing is forwarded: each request
//! gets an OpenAI-style 502 naming the reason.
//!
//! With `--account-key FILE` the proxy bills every request to that account: for each
//! upstream session it signs the session's exporter once with the account key and adds
//! `x-cocoon-account` and `x-cocoon-account-proof` to every request it forwards there (see
//! `cocoon_attestation::account`). Account headers sent by the local client are always
//! dropped: only the proxy, which sees the upstream session, can prove an account in it.
//! `cocoon-client account keygen|show` makes and shows account keys.
//!
//! The local side answers only local programs: requests must name the listener in `Host`,
//! come from no foreign web origin and carry JSON bodies (see [`local`]); with
//! `--local-token-file` they must also carry that token. Hop-by-hop headers are dropped in
//! both directions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use cocoon_attestation::account::{AccountKey, ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};
use cocoon_client::args::{attestor, CollateralArgs, PolicyArgs};
use cocoon_client::{open_attested_session, Endpoint, SessionBody};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(
    name = "cocoon-client",
    version,
    about = "Local verifying client for Cocoon endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start; boxing the proxy arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve plain HTTP on a loopback address and forward OpenAI requests to an attested
    /// guest; point any OpenAI SDK at http://LISTEN/v1.
    Proxy {
        /// Loopback address to listen on (127.0.0.1:PORT or [::1]:PORT; port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The endpoint, e.g. https://HOST:PORT (the host agent's public port).
        #[arg(long)]
        upstream: String,
        #[command(flatten)]
        accept: PolicyArgs,
        #[command(flatten)]
        collateral: CollateralArgs,
        /// Seconds to connect and verify an upstream session.
        #[arg(long, default_value_t = 15)]
        connect_timeout: u64,
        /// The account key (PKCS#8 PEM, from `cocoon-client account keygen`) that requests
        /// are billed to; it proves the account in every upstream session. Without it,
        /// requests go unnamed (billed to `anonymous` where the guest allows that).
        #[arg(long, value_name = "FILE")]
        account_key: Option<PathBuf>,
        /// A file holding a local secret: when given, every local request must carry it as
        /// `Authorization: Bearer TOKEN` (the OpenAI SDKs' api_key), so other local users
        /// and programs cannot spend the account. It is never forwarded upstream.
        #[arg(long, value_name = "FILE")]
        local_token_file: Option<PathBuf>,
    },
    /// Make or show an account key (an account is an Ed25519 public key).
    #[command(subcommand)]
    Account(AccountCommand),
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Write a new account key (PKCS#8 PEM, mode 0600) and print its account id.
    Keygen {
        /// File to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the account id of a key file.
    Show {
        /// The account key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

fn read_account_key(path: &Path) -> Result<AccountKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read account key {}: {e}", path.display()))?;
    AccountKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `--local-token-file` secret: the file's text, trimmed; at least 16 characters.
fn read_local_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read local token {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{}: the local token must be one word of at least 16 characters (e.g. `openssl rand -hex 32`)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

fn account(command: AccountCommand) -> ExitCode {
    let key = match command {
        AccountCommand::Keygen { out } => AccountKey::generate()
            .map_err(|e| e.to_string())
            .and_then(|(key, pem)| {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(&out)
                    .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
                std::io::Write::write_all(&mut file, pem.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                Ok(key)
            }),
        AccountCommand::Show { key } => read_account_key(&key),
    };
    match key {
        Ok(key) => {
            println!("{}", key.id());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            ExitCode::from(2)
        }
    }
}

type ProxyResponse = Response<SessionBody>;

fn error_response(status: StatusCode, code: &str, message: &str) -> ProxyResponse {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    })
    .to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// One verified upstream session and the account headers proven in it (if any).
struct Upstream {
    sender: Mutex<hyper::client::conn::http1::SendRequest<SessionBody>>,
    account: Option<(HeaderValue, HeaderValue)>,
}

/// The account headers for the upstream session with this exporter. The proof signs the
/// exporter, so it is good in this session and nowhere else: made once per session.
fn account_headers(
    key: Option<&AccountKey>,
    exporter: &[u8],
) -> Result<Option<(HeaderValue, HeaderValue)>, hyper::header::InvalidHeaderValue> {
    let Some(key) = key else {
        return Ok(None);
    };
    Ok(Some((
        HeaderValue::from_str(&key.id().to_string())?,
        HeaderValue::from_str(&key.prove(exporter))?,
    )))
}

/// Sends one screened local request upstream and streams the answer back. The local
/// token (`drop_authorization`) stays on this machine.
async fn forward(
    upstream: Arc<Upstream>,
    host: String,
    drop_authorization: bool,
    request: Request<Incoming>,
) -> ProxyResponse {
    let (mut parts, body) = request.into_parts();
    local::strip_hop_by_hop(&mut parts.headers);
    for name in [ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER] {
        parts.headers.remove(name);
    }
    if drop_authorization {
        parts.headers.remove(hyper::header::AUTHORIZATION);
    }
    if let Some((account, proof)) = &upstream.account {
        parts.headers.insert(ACCOUNT_HEADER, account.clone());
        parts.headers.insert(ACCOUNT_PROOF_HEADER, proof.clone());
    }
    if let Ok(value) = hyper::header::HeaderValue::from_str(&host) {
        parts.headers.insert(hyper::header::HOST, value);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "unparsable request path",
            )
        }
    };
    let body = body
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        .boxed();
    let mut sender = upstream.sender.lock().await;
    if sender.ready().await.is_err() {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "upstream_closed",
            "the attested upstream session closed",
        );
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            local::strip_hop_by_hop(&mut parts.headers);
            let body = body
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed();
            Response::from_parts(parts, body)
        }
        Err(e) => error_response(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            &format!("upstream request failed: {e}"),
        ),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, upstream, accept, collateral, connect_timeout, account_key, local_token_file) =
        match Cli::parse().command {
            Command::Proxy {
                listen,
                upstream,
                accept,
                collateral,
                connect_timeout,
                account_key,
                local_token_file,
            } => (
                listen,
                upstream,
                accept,
                collateral,
                connect_timeout,
                account_key,
                local_token_file,
            ),
            Command::Account(command) => return account(command),
        };
    let local_token = match local_token_file
        .as_deref()
        .map(read_local_token)
        .transpose()
    {
        Ok(token) => token.map(Arc::<str>::from),
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            return ExitCode::from(2);
        }
    };
    let account_key = match account_key.as_deref().map(read_account_key).transpose() {
        Ok(key) => key.map(Arc::new),
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            return ExitCode::from(2);
        }
    };
    if !listen.ip().is_loopback() {
        eprintln!("cocoon-client: --listen must be a loopback address (the local side is plain HTTP): {listen}");
        return ExitCode::from(2);
    }
    let endpoint = match Endpoint::parse(&upstream) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            return ExitCode::from(2);
        }
    };
    let (_, manifest) = match accept.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match attestor(&accept, &collateral) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            return ExitCode::from(2);
        }
    };
    if options.verifier.policy().accept_any_image {
        eprintln!(
            "cocoon-client: WARNING: --accept-any-image: guests are accepted whatever image \
             and config they run, as long as the TEE is genuine"
        );
    }
    let timeout = Duration::from_secs(connect_timeout);

    // Verify once before listening: a client that starts must be talking to a good guest.
    let first = match open_attested_session(&endpoint, &options, timeout).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cocoon-client: {upstream}: REFUSED: {e}");
            return ExitCode::from(1);
        }
    };
    let v = &first.verified.certificate;
    eprintln!(
        "cocoon-client: {upstream} verified: tee={}{} debug={} tcb={} certificate-sha256={} (session-bound evidence checked)",
        v.tee,
        if v.simulated { " (SIMULATED: development root, no TEE)" } else { "" },
        v.debug,
        v.tcb_status.as_deref().unwrap_or("n/a"),
        v.certificate.as_ref().map(|c| c.sha256.as_str()).unwrap_or("n/a"),
    );
    if let Some(m) = &manifest {
        eprintln!(
            "cocoon-client: measurements match the signed manifest of '{}' (config digest {})",
            m.image,
            v.config_digest.as_deref().unwrap_or("n/a")
        );
    }
    if let Some(key) = &account_key {
        eprintln!(
            "cocoon-client: billing account {} (proven in every upstream session)",
            key.id()
        );
    }
    drop(first);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cocoon-client: cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    // The bound address (port 0 resolved): what local requests must name in Host.
    let bound = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cocoon-client: cannot read the listening address: {e}");
            return ExitCode::from(2);
        }
    };
    println!("cocoon-client: listening on http://{bound} -> {upstream}");
    let host = endpoint.address();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    eprintln!("cocoon-client: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (endpoint, options, host) = (endpoint.clone(), options.clone(), host.clone());
        let (account_key, local_token) = (account_key.clone(), local_token.clone());
        tokio::spawn(async move {
            // Re-verify for every local connection, on the session that will carry it.
            let upstream = match open_attested_session(&endpoint, &options, timeout).await {
                Ok(c) => match account_headers(account_key.as_deref(), &c.tls_exporter) {
                    Ok(account) => Some(Arc::new(Upstream {
                        sender: Mutex::new(c.sender),
                        account,
                    })),
                    Err(e) => {
                        eprintln!("cocoon-client: {peer}: cannot write the account proof: {e}");
                        None
                    }
                },
                Err(e) => {
                    eprintln!("cocoon-client: {peer}: upstream REFUSED: {e}");
                    None
                }
            };
            let refusal = "the upstream guest failed attestation; nothing was forwarded";
            let service = service_fn(move |request: Request<Incoming>| {
                let (upstream, host) = (upstream.clone(), host.clone());
                let screened = local::screen_local_request(&request, bound).and_then(|()| {
                    local_token
                        .as_deref()
                        .map_or(Ok(()), |token| local::check_local_token(&request, token))
                });
                let drop_authorization = local_token.is_some();
                async move {
                    let response = match (screened, upstream) {
                        (Err(refused), _) => {
                            eprintln!("cocoon-client: {peer}: refused: {}", refused.message);
                            error_response(refused.status, refused.code, &refused.message)
                        }
                        (Ok(()), Some(up)) => forward(up, host, drop_authorization, request).await,
                        (Ok(()), None) => {
                            error_response(StatusCode::BAD_GATEWAY, "attestation_failed", refusal)
                        }
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// What the proxy checks on the local side before anything goes upstream (security
/// review findings 11 and 24): only requests made for this loopback listener by a local
/// program, not by a web page, and never the headers that describe a single hop.
///
/// The proxy is plain HTTP on loopback, so any web page the user visits can reach it:
/// through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1, sent with
/// `Host: evil.example:PORT`) or as a blind cross-site request (`no-cors` POST with a
/// `text/plain` body). [`screen_local_request`] refuses both: the `Host` (and an
/// absolute-form target) must name this listener, a browser's `Origin` must be this
/// listener's own origin, cross-site fetches and CORS preflights are refused, and request
/// bodies must be `application/json` (which no page can send cross-origin without a
/// preflight). With `--local-token-file`, [`check_local_token`] also asks every request
/// for that bearer token.
mod local {
    use std::net::SocketAddr;

    use hyper::header::{HeaderMap, HeaderName, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
    use hyper::{Method, Request, StatusCode};
    use sha2::{Digest, Sha256};

    /// Why a local request was refused; nothing of it was forwarded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Refusal {
        pub status: StatusCode,
        pub code: &'static str,
        pub message: String,
    }

    impl Refusal {
        fn forbidden(code: &'static str, message: String) -> Self {
            Self {
                status: StatusCode::FORBIDDEN,
                code,
                message,
            }
        }
    }

    /// The `host[:port]` values that name `listen` (the bound address, port resolved):
    /// its literal address and `localhost`, with the port; without it as well on port 80.
    fn local_authorities(listen: SocketAddr) -> Vec<String> {
        let ip = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let port = listen.port();
        let mut names = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
        if port == 80 {
            names.extend([ip, "localhost".to_string()]);
        }
        names
    }

    fn names_listener(authority: &str, listen: SocketAddr) -> bool {
        local_authorities(listen)
            .iter()
            .any(|name| name.eq_ignore_ascii_case(authority))
    }

    /// The one value of header `name`, as text; `Err` when it is repeated or not text.
    fn single<'a, B>(
        request: &'a Request<B>,
        name: &HeaderName,
    ) -> Result<Option<&'a str>, Refusal> {
        let mut values = request.headers().get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(Refusal::forbidden(
                "ambiguous_header",
                format!("the request has more than one {name} header"),
            ));
        }
        first
            .map(|v| {
                v.to_str().map_err(|_| {
                    Refusal::forbidden(
                        "invalid_header",
                        format!("the {name} header is not visible ASCII"),
                    )
                })
            })
            .transpose()
    }

    /// Admits only requests made for this listener by a local program: see the module
    /// documentation. `listen` is the address the proxy is bound to.
    pub fn screen_local_request<B>(
        request: &Request<B>,
        listen: SocketAddr,
    ) -> Result<(), Refusal> {
        let expected = || local_authorities(listen).join(", ");
        match single(request, &HOST)? {
            None => {
                return Err(Refusal::forbidden(
                    "forbidden_host",
                    format!("the request has no Host header; this proxy answers only to {}", expected()),
                ))
            }
            Some(host) if !names_listener(host, listen) => {
                return Err(Refusal::forbidden(
                    "forbidden_host",
                    format!(
                        "Host '{host}' is not this proxy's address (DNS rebinding?); this proxy answers only to {}",
                        expected()
                    ),
                ))
            }
            Some(_) => {}
        }
        // An absolute-form target (`POST http://evil.example/v1/...`) overrides Host.
        if let Some(authority) = request.uri().authority() {
            if !names_listener(authority.as_str(), listen)
                || request.uri().scheme_str() != Some("http")
            {
                return Err(Refusal::forbidden(
                    "forbidden_host",
                    format!(
                        "request target '{}' is not this proxy's address; this proxy answers only to {}",
                        request.uri(),
                        expected()
                    ),
                ));
            }
        }
        let origin = single(request, &HeaderName::from_static("origin"))?;
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key("access-control-request-method")
        {
            return Err(Refusal::forbidden(
                "cors_refused",
                format!(
                    "CORS preflight from origin '{}' refused: this proxy serves no cross-origin browser requests",
                    origin.unwrap_or("(none)")
                ),
            ));
        }
        if let Some(origin) = origin {
            let local = origin
                .strip_prefix("http://")
                .is_some_and(|authority| names_listener(authority, listen));
            if !local {
                return Err(Refusal::forbidden(
                    "forbidden_origin",
                    format!(
                        "requests from origin '{origin}' are refused: this proxy serves only local programs and pages of its own origin (http://{listen})"
                    ),
                ));
            }
        }
        if let Some(site) = single(request, &HeaderName::from_static("sec-fetch-site"))? {
            if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
                return Err(Refusal::forbidden(
                    "forbidden_origin",
                    format!("a {site} browser request is refused: this proxy serves no cross-origin browser requests"),
                ));
            }
        }
        if matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        ) {
            let content_type = single(request, &CONTENT_TYPE)?;
            let media_type = content_type
                .and_then(|v| v.split(';').next())
                .map(str::trim);
            if !media_type.is_some_and(|t| t.eq_ignore_ascii_case("application/json")) {
                return Err(Refusal {
                    status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    code: "unsupported_media_type",
                    message: format!(
                        "{} bodies must be sent with content-type: application/json (got {})",
                        request.method(),
                        content_type.map_or("no content-type".to_string(), |t| format!("'{t}'"))
                    ),
                });
            }
        }
        Ok(())
    }

    /// With a local token configured, admits only requests carrying
    /// `Authorization: Bearer TOKEN` (compared as SHA-256 digests, without early exit).
    pub fn check_local_token<B>(request: &Request<B>, token: &str) -> Result<(), Refusal> {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let (a, b) = (Sha256::digest(presented.trim()), Sha256::digest(token));
        let differ = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        if differ == 0 {
            return Ok(());
        }
        Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_api_key",
            message: "this proxy was started with --local-token-file: send that token as \
                      'Authorization: Bearer TOKEN' (the OpenAI SDKs' api_key)"
                .to_string(),
        })
    }

    /// Headers that describe one hop (RFC 9110 section 7.6.1 and the usual extras).
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    ];

    /// Drops the hop-by-hop headers: those the `Connection` header names, then the
    /// standard ones. Used on requests going upstream and on answers coming back.
    pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn v4() -> SocketAddr {
            "127.0.0.1:8080".parse().unwrap()
        }

        fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
            let mut builder = Request::builder()
                .method(method)
                .uri("/v1/chat/completions");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).unwrap()
        }

        fn screen(method: &str, headers: &[(&str, &str)]) -> Result<(), Refusal> {
            screen_local_request(&request(method, headers), v4())
        }

        const JSON: (&str, &str) = ("content-type", "application/json");

        #[test]
        fn local_names_of_the_listener_pass() {
            for host in ["127.0.0.1:8080", "localhost:8080", "LocalHost:8080"] {
                screen("POST", &[("host", host), JSON]).unwrap();
                screen("GET", &[("host", host)]).unwrap();
            }
            let v6: SocketAddr = "[::1]:9000".parse().unwrap();
            for host in ["[::1]:9000", "localhost:9000"] {
                screen_local_request(&request("GET", &[("host", host)]), v6).unwrap();
            }
            let port80: SocketAddr = "127.0.0.1:80".parse().unwrap();
            screen_local_request(&request("GET", &[("host", "localhost")]), port80).unwrap();
            screen(
                "POST",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("content-type", "application/json; charset=utf-8"),
                ],
            )
            .unwrap();
            for origin in ["http://127.0.0.1:8080", "http://localhost:8080"] {
                screen(
                    "POST",
                    &[("host", "127.0.0.1:8080"), ("origin", origin), JSON],
                )
                .unwrap();
            }
            screen(
                "GET",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin"),
                ],
            )
            .unwrap();
            screen(
                "GET",
                &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "none")],
            )
            .unwrap();
        }

        #[test]
        fn other_hosts_are_refused() {
            for host in [
                "evil.example:8080",
                "evil.example",
                "127.0.0.1:8081",
                "127.0.0.1",
                "[::1]:8080",
                "localhost.:8080",
                "127.0.0.1:8080.evil.example",
            ] {
                let refusal = screen("GET", &[("host", host)]).unwrap_err();
                assert_eq!(refusal.status, StatusCode::FORBIDDEN, "{host}");
                assert_eq!(refusal.code, "forbidden_host", "{host}");
                assert!(refusal.message.contains(host), "{refusal:?}");
            }
            assert_eq!(screen("GET", &[]).unwrap_err().code, "forbidden_host");
            let twice = screen(
                "GET",
                &[("host", "127.0.0.1:8080"), ("host", "evil.example")],
            );
            assert_eq!(twice.unwrap_err().code, "ambiguous_header");
            let absolute = Request::builder()
                .uri("http://evil.example:8080/v1/models")
                .header("host", "127.0.0.1:8080")
                .body(())
                .unwrap();
            assert_eq!(
                screen_local_request(&absolute, v4()).unwrap_err().code,
                "forbidden_host"
            );
            let absolute_local = Request::builder()
                .uri("http://localhost:8080/v1/models")
                .header("host", "127.0.0.1:8080")
                .body(())
                .unwrap();
            screen_local_request(&absolute_local, v4()).unwrap();
        }

        #[test]
        fn foreign_origins_preflights_and_cross_site_fetches_are_refused() {
            let host = ("host", "127.0.0.1:8080");
            for origin in [
                "http://evil.example",
                "null",
                "http://127.0.0.1:8081",
                "https://127.0.0.1:8080",
                "http://127.0.0.1:8080.evil.example",
            ] {
                let refusal = screen("POST", &[host, ("origin", origin), JSON]).unwrap_err();
                assert_eq!(
                    (refusal.status, refusal.code),
                    (StatusCode::FORBIDDEN, "forbidden_origin"),
                    "{origin}"
                );
                assert!(refusal.message.contains(origin), "{refusal:?}");
            }
            let preflight = screen(
                "OPTIONS",
                &[
                    host,
                    ("origin", "http://evil.example"),
                    ("access-control-request-method", "POST"),
                ],
            )
            .unwrap_err();
            assert_eq!(
                (preflight.status, preflight.code),
                (StatusCode::FORBIDDEN, "cors_refused")
            );
            let cross = screen("GET", &[host, ("sec-fetch-site", "cross-site")]).unwrap_err();
            assert_eq!(cross.code, "forbidden_origin");
        }

        #[test]
        fn bodies_must_be_json() {
            let host = ("host", "127.0.0.1:8080");
            for content_type in [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
            ] {
                let refusal = screen("POST", &[host, ("content-type", content_type)]).unwrap_err();
                assert_eq!(
                    (refusal.status, refusal.code),
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                );
                assert!(refusal.message.contains(content_type), "{refusal:?}");
            }
            let none = screen("POST", &[host]).unwrap_err();
            assert_eq!(none.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(none.message.contains("no content-type"), "{none:?}");
        }

        #[test]
        fn the_local_token_is_required_when_set() {
            let with = |v: &str| request("GET", &[("authorization", v)]);
            check_local_token(&with("Bearer s3cret-token"), "s3cret-token").unwrap();
            for wrong in [
                "Bearer s3cret-tokem",
                "Bearer ",
                "s3cret-token",
                "Basic s3cret-token",
            ] {
                let refusal = check_local_token(&with(wrong), "s3cret-token").unwrap_err();
                assert_eq!(
                    (refusal.status, refusal.code),
                    (StatusCode::UNAUTHORIZED, "invalid_api_key")
                );
            }
            assert!(check_local_token(&request("GET", &[]), "s3cret-token").is_err());
        }

        #[test]
        fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
            let mut headers = HeaderMap::new();
            for (name, value) in [
                ("connection", "keep-alive, X-Hop-One"),
                ("connection", "x-hop-two ,,"),
                ("x-hop-one", "1"),
                ("x-hop-two", "2"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-sum"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"),
                ("proxy-authorization", "Basic eA=="),
                ("proxy-authenticate", "Basic"),
                ("content-type", "application/json"),
                ("x-end-to-end", "kept"),
            ] {
                headers.append(HeaderName::from_static(name), value.parse().unwrap());
            }
            strip_hop_by_hop(&mut headers);
            let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
            left.sort();
            assert_eq!(left, ["content-type", "x-end-to-end"]);
        }
    }
}
