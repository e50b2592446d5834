//! Unix-time helpers shared by messages and collateral checks.

/// RFC 3339 rendering of a Unix time, for messages.
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Refuses `cert` outside its validity window at `at` (Unix seconds); `what` names the
/// certificate in the message.
pub(crate) fn check_certificate_window(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    what: &str,
    at: i64,
) -> crate::Result<()> {
    let v = cert.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    if at < from || at > to {
        return Err(crate::Error::CertificateExpired {
            at: format!("{} ({what})", format_time(at)),
            not_before: format_time(from),
            not_after: format_time(to),
        });
    }
    Ok(())
}
