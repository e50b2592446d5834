//! What the proxy checks on the local side before anything goes upstream (security
//! review findings 11 and 24): only requests made for this loopback listener by a local
//! program, not by a web page, and never the headers that describe a single hop.
//!
//! The proxy is plain HTTP on loopback, so any web page the user visits can reach it:
//! through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1, sent with
//! `Host: evil.example:PORT`) or as a blind cross-site request (`no-cors` POST with a
//! `text/plain` body). [`screen_local_request`] refuses both: the `Host` (and an
//! absolute-form target) must name this listener, a browser's `Origin` must be this
//! listener's own origin, cross-site fetches and CORS preflights are refused, and request
//! bodies must be `application/json` (which no page can send cross-origin without a
//! preflight). With `--local-token-file`, [`check_local_token`] also asks every request
//! for that bearer token.

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
fn single<'a, B>(request: &'a Request<B>, name: &HeaderName) -> Result<Option<&'a str>, Refusal> {
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
pub fn screen_local_request<B>(request: &Request<B>, listen: SocketAddr) -> Result<(), Refusal> {
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
        if !names_listener(authority.as_str(), listen) || request.uri().scheme_str() != Some("http")
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
