//! Connecting to an attested endpoint (the one place in this crate that does I/O).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::AttestedServerVerifier;
use crate::verify::{VerifiedEvidence, VerifyOptions};
use crate::Error;

/// Host and port of an `https://HOST:PORT[/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = || Error::BadUrl(url.to_string());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
            (host, port)
        } else {
            authority.rsplit_once(':').ok_or_else(bad)?
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = port.parse::<u16>().map_err(|_| bad())?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Opens a TLS 1.3 connection that completes only if the server's evidence verifies.
pub async fn connect_attested(
    endpoint: &Endpoint,
    options: VerifyOptions,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, VerifiedEvidence), Error> {
    let address = endpoint.address();
    let verifier = AttestedServerVerifier::new(options);
    let config = verifier
        .client_config()
        .map_err(|e| Error::Tls(address.clone(), e.to_string()))?;
    let server_name = ServerName::try_from(endpoint.host.clone())
        .map_err(|_| Error::BadUrl(endpoint.host.clone()))?;
    let attempt = async {
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|e| Error::Unreachable(address.clone(), e.to_string()))?;
        tcp.set_nodelay(true).ok();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await;
        match (tls, verifier.last_outcome()) {
            (Ok(stream), Some(Ok(evidence))) => Ok((stream, evidence)),
            (_, Some(Err(reason))) => Err(Error::Rejected(reason)),
            (Err(e), _) => Err(Error::Tls(address.clone(), e.to_string())),
            (Ok(_), None) => Err(Error::Rejected(
                "the server's certificate was never checked".into(),
            )),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout(address.clone(), timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoint_urls() {
        assert_eq!(
            Endpoint::parse("https://127.0.0.1:8443").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 8443
            }
        );
        assert_eq!(
            Endpoint::parse("https://[::1]:9/v1").unwrap(),
            Endpoint {
                host: "::1".into(),
                port: 9
            }
        );
        for bad in [
            "http://x:1",
            "https://x",
            "https://:1",
            "https://x:99999",
            "x:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
