//! Collateral services on loopback, for tests, so the real fetching code runs unchanged:
//! a PCCS that serves one TDX collateral bundle in Intel's PCS v4 wire format (issuer
//! chains URL-encoded in headers, signed JSON bodies, DER PCK CRL, hex root CA CRL) for
//! `cocoon_attestation::fetch::PcsCollateral` (dcap-qvl's collateral client), and an AMD
//! KDS that serves the development VCEK and chain for SNP evidence without a certificate
//! table. The PCCS bundle can be swapped while it runs (stale, revoked, downgraded
//! collateral), and requests are counted so caches can be tested. Blocking `std::net`, one
//! thread each, so both async and plain tests can use them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_attestation::tdx::dcap::TdxCollateral;

/// A service on loopback: its base URL and how many requests it answered.
pub struct Loopback {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Loopback {
    /// The base URL (`--pccs`, `--kds`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A running loopback PCCS (its URL and request count through [`Loopback`]).
pub struct PcsServer {
    loopback: Loopback,
    collateral: Arc<Mutex<TdxCollateral>>,
}

impl PcsServer {
    /// Starts serving `collateral` on 127.0.0.1 (an ephemeral port).
    pub fn start(collateral: TdxCollateral) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(collateral));
        let served = shared.clone();
        let loopback = serve_loopback(move |path| match served.lock() {
            Ok(c) => route(path, &c),
            Err(_) => ("500 Internal Server Error", None, Vec::new()),
        })?;
        Ok(Self {
            loopback,
            collateral: shared,
        })
    }

    /// Serves `collateral` from now on.
    pub fn replace(&self, collateral: TdxCollateral) {
        if let Ok(mut c) = self.collateral.lock() {
            *c = collateral;
        }
    }
}

impl std::ops::Deref for PcsServer {
    type Target = Loopback;

    fn deref(&self) -> &Loopback {
        &self.loopback
    }
}

/// A loopback AMD KDS for the development SNP PKI: any `/vcek/v1/{product}/…` VCEK request
/// gets the development VCEK (DER), `…/cert_chain` its ASK and ARK (PEM).
pub fn kds_server(pki: &'static crate::DevSnpPki) -> std::io::Result<Loopback> {
    let (vcek, chain) = (pki.vcek_der().to_vec(), pki.chain_pem());
    serve_loopback(move |path| {
        let route = path.split('?').next().unwrap_or("");
        if !route.starts_with("/vcek/v1/") {
            ("404 Not Found", None, b"not found".to_vec())
        } else if route.ends_with("/cert_chain") {
            ("200 OK", None, chain.clone().into_bytes())
        } else {
            ("200 OK", None, vcek.clone())
        }
    })
}

/// Status line, one optional header, body.
type Answer = (&'static str, Option<(&'static str, String)>, Vec<u8>);

/// Serves `handler` (request path with query → answer) on 127.0.0.1, one connection at a
/// time on its own thread.
fn serve_loopback(handler: impl Fn(&str) -> Answer + Send + 'static) -> std::io::Result<Loopback> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(&stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let (status, header, body) = handler(path);
            let mut head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            if let Some((name, value)) = header {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    Ok(Loopback { url, hits })
}

/// The PCS v4 routes dcap-qvl's client asks for.
fn route(path: &str, c: &TdxCollateral) -> Answer {
    let endpoint = path.split('?').next().unwrap_or("");
    match endpoint {
        "/sgx/certification/v4/pckcrl" if path.contains("ca=") => (
            "200 OK",
            Some((
                "SGX-PCK-CRL-Issuer-Chain",
                url_encode(&c.pck_crl_issuer_chain),
            )),
            c.pck_crl.clone(),
        ),
        "/tdx/certification/v4/tcb" if path.contains("fmspc=") => (
            "200 OK",
            Some((
                "TCB-Info-Issuer-Chain",
                url_encode(&c.tcb_info_issuer_chain),
            )),
            format!(
                r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                c.tcb_info,
                hex::encode(&c.tcb_info_signature)
            )
            .into_bytes(),
        ),
        "/tdx/certification/v4/qe/identity" => (
            "200 OK",
            Some((
                "SGX-Enclave-Identity-Issuer-Chain",
                url_encode(&c.qe_identity_issuer_chain),
            )),
            format!(
                r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                c.qe_identity,
                hex::encode(&c.qe_identity_signature)
            )
            .into_bytes(),
        ),
        "/sgx/certification/v4/rootcacrl" => {
            ("200 OK", None, hex::encode(&c.root_ca_crl).into_bytes())
        }
        _ => ("404 Not Found", None, b"not found".to_vec()),
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
