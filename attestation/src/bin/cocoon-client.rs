//! `cocoon-client proxy`: a local, plain-HTTP OpenAI endpoint that forwards only to a
//! Cocoon guest that passed attestation.
//!
//! Every new local connection opens its own upstream TLS session, verifies the
//! certificate's evidence *and* fresh evidence bound to that session (nonce + TLS
//! exporter), and only then forwards requests over that same session, streaming the
//! answers back unchanged. If verification fails, nothing is forwarded: each request
//! gets an OpenAI-style 502 naming the reason.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use cocoon_attestation::client::{open_attested_session, Endpoint, SessionBody};
use cocoon_attestation::policy_args::PolicyArgs;
use cocoon_attestation::verify::VerifyOptions;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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
        /// Accept SIMULATED evidence (development roots, no TEE). For development only.
        #[arg(long)]
        allow_simulated: bool,
        /// Seconds to connect and verify an upstream session.
        #[arg(long, default_value_t = 15)]
        connect_timeout: u64,
    },
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

async fn forward(
    upstream: Arc<Mutex<hyper::client::conn::http1::SendRequest<SessionBody>>>,
    host: String,
    request: Request<Incoming>,
) -> ProxyResponse {
    let (mut parts, body) = request.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
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
    let mut sender = upstream.lock().await;
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
    let Command::Proxy {
        listen,
        upstream,
        accept,
        allow_simulated,
        connect_timeout,
    } = Cli::parse().command;
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
    let (policy, manifest) = match accept.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            return ExitCode::from(2);
        }
    };
    let options = VerifyOptions {
        allow_simulated,
        policy,
    };
    let timeout = Duration::from_secs(connect_timeout);

    // Verify once before listening: a client that starts must be talking to a good guest.
    let first = match open_attested_session(&endpoint, options.clone(), timeout).await {
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
        v.certificate_sha256,
    );
    if let Some(m) = &manifest {
        eprintln!(
            "cocoon-client: measurements match the signed manifest of '{}' (config digest {})",
            m.image, v.config_digest
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
        tokio::spawn(async move {
            // Re-verify for every local connection, on the session that will carry it.
            let upstream = match open_attested_session(&endpoint, options, timeout).await {
                Ok(c) => Some(Arc::new(Mutex::new(c.sender))),
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
