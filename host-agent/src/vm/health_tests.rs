//! The probe against small local servers: TLS with a self-signed certificate answering
//! 200 or 503, one that never speaks, and a closed port.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::*;

/// A TLS server answering every connection with `answer`; returns its address.
async fn tls_server(answer: &'static str) -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["guest".to_string()]).unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 1024];
                let _ = tls.read(&mut request).await;
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

fn probe(address: String) -> HealthProbe {
    HealthProbe::new(address, Duration::from_millis(500)).unwrap()
}

#[tokio::test]
async fn a_200_is_healthy() {
    let address = tls_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
    probe(address).check().await.unwrap();
}

#[tokio::test]
async fn a_503_is_not() {
    let address = tls_server("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
    let message = probe(address).check().await.unwrap_err().to_string();
    assert!(message.contains("503"), "{message}");
}

#[tokio::test]
async fn a_silent_server_times_out_and_a_closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    let message = probe(silent).check().await.unwrap_err().to_string();
    assert!(message.contains("TLS handshake: no progress"), "{message}");
    drop(listener);
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let message = probe(closed).check().await.unwrap_err().to_string();
    assert!(message.contains("connect:"), "{message}");
}
