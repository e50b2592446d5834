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
    let body = serde_json::json!({
        "error": {"message": message, "type": "server_error", "param": null, "code": code}
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

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

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

async fn forward(
    upstream: Arc<Upstream>,
    host: String,
    request: Request<Incoming>,
) -> ProxyResponse {
    let (mut parts, body) = request.into_parts();
    for name in HOP_BY_HOP
        .iter()
        .chain(&[ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER])
    {
        parts.headers.remove(*name);
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
        Ok(response) => response.map(|b| {
            b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed()
        }),
        Err(e) => error_response(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            &format!("upstream request failed: {e}"),
        ),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, upstream, accept, collateral, connect_timeout, account_key) =
        match Cli::parse().command {
            Command::Proxy {
                listen,
                upstream,
                accept,
                collateral,
                connect_timeout,
                account_key,
            } => (
                listen,
                upstream,
                accept,
                collateral,
                connect_timeout,
                account_key,
            ),
            Command::Account(command) => return account(command),
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
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("cocoon-client: listening on http://{local} -> {upstream}");
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
        let account_key = account_key.clone();
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
            let service = service_fn(move |request| {
                let (upstream, host) = (upstream.clone(), host.clone());
                async move {
                    let response = match upstream {
                        Some(up) => forward(up, host, request).await,
                        None => {
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
