//! `cocoon-client proxy`: a local, plain-HTTP OpenAI endpoint that forwards only to a
//! Cocoon guest that passed attestation.
//!
//! Every new local connection opens its own upstream TLS session, verifies the
//! certificate's evidence *and* fresh evidence bound to that session (nonce + TLS
//! exporter), and only then forwards requests over that same session, streaming the
//! answers back unchanged. If verification fails, nothing is forwarded: each request
//! gets an OpenAI-style 502 naming the reason. Local requests are screened first
//! ([`crate::local`]): only local programs, never web pages.
//!
//! With an account key the proxy bills every request to that account: for each upstream
//! session it signs the session's exporter once with the account key and adds
//! `x-cocoon-account` and `x-cocoon-account-proof` to every request it forwards there (see
//! `cocoon_attestation::account`). Account headers sent by the local client are always
//! dropped: only the proxy, which sees the upstream session, can prove an account in it.
//!
//! With a spend cap as well ([`ProxyBilling`]), the proxy pays guests that bill through
//! escrows (`billing/PROTOCOL.md`): for each verified session it reads the guest's measured
//! config (checked against the attested digest; once per guest key and config), derives
//! the account's escrow from it and adds `x-cocoon-escrow-authorization`, the account's
//! signed authorization of that session's attested receipt key, to every request. A guest
//! whose config names no payout address gets none. A local client's own authorization
//! header is dropped like its account headers, and the guest's 402 refusals (no
//! authorization, not enough escrow) reach the local client unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cocoon_attestation::account::{AccountKey, ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};
use cocoon_attestation::Manifest;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use cocoon_billing::layout::{PublicKey, AUTHORIZATION_HEADER};
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use crate::config::{fetch_config, BillingTerms};
use crate::escrow::{guest_key, unix_now, Authorizer, EscrowTerms};
use crate::session::{open_attested_session, AttestedConnection, Attestor, Endpoint, SessionBody};

/// Escrow billing in the proxy: the contract code escrows are derived with, and the
/// authorizations signed for the guests seen.
pub struct ProxyBilling {
    /// The escrow contract code (`cocoon_billing::escrow_code()`).
    pub code: Cell,
    pub authorizer: Authorizer,
    /// Per (guest key, attested config digest): the escrow that guest charges, or `None`
    /// when its config does not bill through escrows.
    escrows: Mutex<HashMap<(PublicKey, String), Option<GuestEscrow>>>,
}

/// The escrow a guest charges and the billing terms it was derived from.
type GuestEscrow = (StdAddr, BillingTerms);

impl ProxyBilling {
    pub fn new(code: Cell, authorizer: Authorizer) -> Self {
        Self {
            code,
            authorizer,
            escrows: Mutex::new(HashMap::new()),
        }
    }

    /// The guest behind `connection`'s escrow for `key`'s account (from its config,
    /// fetched once per guest key and config digest), or `None` if it does not bill
    /// through escrows.
    async fn escrow_for(
        &self,
        connection: &mut AttestedConnection,
        endpoint: &Endpoint,
        key: &AccountKey,
    ) -> Result<Option<(PublicKey, StdAddr, BillingTerms)>, String> {
        let certificate = &connection.verified.certificate;
        let guest = guest_key(certificate.receipt_key.as_deref()).map_err(|e| e.to_string())?;
        let digest = certificate.config_digest.clone().unwrap_or_default();
        let mut escrows = self.escrows.lock().await;
        let known = match escrows.get(&(guest, digest.clone())) {
            Some(known) => known.clone(),
            None => {
                let config = fetch_config(connection, endpoint)
                    .await
                    .map_err(|e| format!("the guest's config: {e}"))?;
                let found =
                    match BillingTerms::from_config(&config.json).map_err(|e| e.to_string())? {
                        Some(terms) => {
                            let escrow = EscrowTerms::for_guest(&self.code, &key.id(), &terms)
                                .and_then(|t| t.address())
                                .map_err(|e| e.to_string())?;
                            Some((escrow, terms))
                        }
                        None => None,
                    };
                escrows.insert((guest, digest), found.clone());
                found
            }
        };
        Ok(known.map(|(escrow, terms)| (guest, escrow, terms)))
    }
}

/// Everything the proxy runs with, validated by the caller.
pub struct Proxy {
    pub listen: SocketAddr,
    pub endpoint: Endpoint,
    pub attestor: Attestor,
    pub connect_timeout: Duration,
    pub account_key: Option<Arc<AccountKey>>,
    /// Escrow billing (needs `account_key`).
    pub billing: Option<Arc<ProxyBilling>>,
    pub local_token: Option<Arc<str>>,
    /// The manifest the policy came from, for the start-up message.
    pub manifest: Option<Manifest>,
}

impl Proxy {
    /// Verifies the upstream once, then listens until Ctrl-C. Exit 1 when the upstream is
    /// refused (nothing is ever served then), 2 when the listener cannot start.
    pub async fn run(self) -> ExitCode {
        if let Err(code) = self.verify_first().await {
            return code;
        }
        let listener = match TcpListener::bind(self.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cocoon-client: cannot listen on {}: {e}", self.listen);
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
        println!(
            "cocoon-client: listening on http://{bound} -> https://{}",
            self.endpoint.address()
        );
        let proxy = Arc::new(self);
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
            tokio::spawn(proxy.clone().serve_connection(tcp, peer, bound));
        }
    }

    /// A client that starts must be talking to a good guest: one full check first.
    async fn verify_first(&self) -> Result<(), ExitCode> {
        let upstream = format!("https://{}", self.endpoint.address());
        let mut first = open_attested_session(&self.endpoint, &self.attestor, self.connect_timeout)
            .await
            .map_err(|e| {
                eprintln!("cocoon-client: {upstream}: REFUSED: {e}");
                ExitCode::from(1)
            })?;
        let v = &first.verified.certificate;
        eprintln!(
            "cocoon-client: {upstream} verified: tee={}{} debug={} tcb={} certificate-sha256={} (session-bound evidence checked)",
            v.tee,
            if v.simulated { " (SIMULATED: development root, no TEE)" } else { "" },
            v.debug,
            v.tcb_status.as_deref().unwrap_or("n/a"),
            v.certificate.as_ref().map(|c| c.sha256.as_str()).unwrap_or("n/a"),
        );
        if let Some(m) = &self.manifest {
            eprintln!(
                "cocoon-client: measurements match the signed manifest of '{}' (config digest {})",
                m.image,
                v.config_digest.as_deref().unwrap_or("n/a")
            );
        }
        if let Some(key) = &self.account_key {
            eprintln!(
                "cocoon-client: billing account {} (proven in every upstream session)",
                key.id()
            );
        }
        self.report_billing(&mut first).await
    }

    /// Says at start which escrow pays this guest and under which cap, or why none does.
    async fn report_billing(&self, first: &mut AttestedConnection) -> Result<(), ExitCode> {
        let upstream = format!("https://{}", self.endpoint.address());
        let (Some(billing), Some(key)) = (&self.billing, &self.account_key) else {
            let config = fetch_config(first, &self.endpoint).await.ok();
            let bills = config
                .and_then(|c| BillingTerms::from_config(&c.json).ok().flatten())
                .is_some();
            if bills {
                eprintln!(
                    "cocoon-client: WARNING: {upstream} bills through escrows: without \
                     --account-key (or --mnemonic-file) and --spend-cap its requests get 402"
                );
            }
            return Ok(());
        };
        match billing.escrow_for(first, &self.endpoint, key).await {
            Ok(Some((guest, escrow, terms))) => {
                eprintln!(
                    "cocoon-client: escrow billing: escrow {escrow} on {} pays receipt key {}; \
                     authorizations cap its charge at {} and last {} s",
                    terms.ton_network,
                    hex::encode(guest),
                    crate::amount::with_unit(billing.authorizer.cap),
                    billing.authorizer.ttl_secs
                );
                Ok(())
            }
            Ok(None) => {
                eprintln!(
                    "cocoon-client: {upstream} does not bill through escrows (receipts only)"
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("cocoon-client: {upstream}: escrow billing: {e}");
                Err(ExitCode::from(1))
            }
        }
    }

    /// The escrow authorization header for this session (`None` when not billing).
    async fn authorization_header(
        &self,
        connection: &mut AttestedConnection,
    ) -> Result<Option<HeaderValue>, String> {
        let (Some(billing), Some(key)) = (&self.billing, &self.account_key) else {
            return Ok(None);
        };
        let Some((guest, escrow, _)) = billing.escrow_for(connection, &self.endpoint, key).await?
        else {
            return Ok(None);
        };
        let value = billing
            .authorizer
            .header(key, &escrow, guest, unix_now())
            .map_err(|e| format!("cannot sign the escrow authorization: {e}"))?;
        HeaderValue::from_str(&value)
            .map(Some)
            .map_err(|e| format!("escrow authorization header: {e}"))
    }

    /// Re-verifies for every local connection, on the session that will carry it; `Err`
    /// says why nothing will be forwarded.
    async fn open_upstream(&self, peer: SocketAddr) -> Result<Arc<Upstream>, Refused> {
        let refused = |code: &'static str, message: String| {
            eprintln!("cocoon-client: {peer}: {message}");
            (code, Arc::<str>::from(message))
        };
        let mut c = open_attested_session(&self.endpoint, &self.attestor, self.connect_timeout)
            .await
            .map_err(|e| {
                refused(
                    "attestation_failed",
                    format!("upstream REFUSED: {e}; nothing was forwarded"),
                )
            })?;
        let account =
            account_headers(self.account_key.as_deref(), &c.tls_exporter).map_err(|e| {
                refused(
                    "account_proof_failed",
                    format!("cannot write the account proof: {e}"),
                )
            })?;
        let authorization = self.authorization_header(&mut c).await.map_err(|e| {
            refused(
                "escrow_billing_failed",
                format!("escrow billing: {e}; nothing was forwarded"),
            )
        })?;
        Ok(Arc::new(Upstream {
            sender: Mutex::new(c.sender),
            account,
            authorization,
        }))
    }

    /// One local connection: its own attested upstream session, then HTTP/1.1 with every
    /// request screened before it is forwarded.
    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        bound: SocketAddr,
    ) {
        let upstream = self.open_upstream(peer).await;
        let host = self.endpoint.address();
        let proxy = self.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let (upstream, host) = (upstream.clone(), host.clone());
            let screened = crate::local::screen_local_request(&request, bound).and_then(|()| {
                proxy.local_token.as_deref().map_or(Ok(()), |token| {
                    crate::local::check_local_token(&request, token)
                })
            });
            let drop_authorization = proxy.local_token.is_some();
            async move {
                let response = match (screened, upstream) {
                    (Err(refused), _) => {
                        eprintln!("cocoon-client: {peer}: refused: {}", refused.message);
                        error_response(refused.status, refused.code, &refused.message)
                    }
                    (Ok(()), Ok(up)) => forward(up, host, drop_authorization, request).await,
                    (Ok(()), Err((code, reason))) => {
                        error_response(StatusCode::BAD_GATEWAY, code, &reason)
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
    }
}

type ProxyResponse = Response<SessionBody>;

/// Why a local connection has no upstream: the error code and message its requests get.
type Refused = (&'static str, Arc<str>);

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

/// One verified upstream session, the account headers proven in it and the escrow
/// authorization of its guest key (if any).
struct Upstream {
    sender: Mutex<hyper::client::conn::http1::SendRequest<SessionBody>>,
    account: Option<(HeaderValue, HeaderValue)>,
    authorization: Option<HeaderValue>,
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
    crate::local::strip_hop_by_hop(&mut parts.headers);
    for name in [ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER, AUTHORIZATION_HEADER] {
        parts.headers.remove(name);
    }
    if drop_authorization {
        parts.headers.remove(hyper::header::AUTHORIZATION);
    }
    if let Some((account, proof)) = &upstream.account {
        parts.headers.insert(ACCOUNT_HEADER, account.clone());
        parts.headers.insert(ACCOUNT_PROOF_HEADER, proof.clone());
    }
    if let Some(authorization) = &upstream.authorization {
        parts
            .headers
            .insert(AUTHORIZATION_HEADER, authorization.clone());
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
            crate::local::strip_hop_by_hop(&mut parts.headers);
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
