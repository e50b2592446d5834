//! PEM text for certificates (a leaf: formats and verifiers both write PEM).

/// PEM armour for a DER certificate (for SDKs that take a CA file).
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    use std::fmt::Write;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A certificate file's bytes as DER: the first certificate of PEM text, or the bytes as
/// they are (DER).
pub fn der_or_pem(bytes: Vec<u8>) -> Vec<u8> {
    match x509_parser::pem::parse_x509_pem(&bytes) {
        Ok((_, pem)) => pem.contents,
        Err(_) => bytes,
    }
}
