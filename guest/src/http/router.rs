//! The route table: every `(method, path, handler)` the guest serves, once. Dispatch, the
//! 404 for an unknown path, and the 405 with its `Allow` header for a known path asked
//! with another method are all derived from it.
//!
//! A handler is [`Handler::Public`] (the TLS port; it gets the connection's [`Session`])
//! or [`Handler::Internal`] (the host's separate plain-HTTP listener, behind its bearer
//! token): each listener serves only its own kind, so the public port answers 404 on
//! `/internal/…` and the internal listener knows nothing else.

use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};

use crate::http::body::{error_response, json_response, read_body, Body};
use crate::http::error::ApiError;
use crate::http::handlers::{
    attestation, billing, health, inference, internal, models, openapi_doc,
};
use crate::http::state::{AppState, Session};

/// What a handler answers.
pub type Reply = Result<Response<Body>, ApiError>;

/// A handler's answer, to be awaited.
pub type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What every handler gets: the shared state, the request, and what the trailing
/// `{…}` segment of its route's path matched (empty for a route without one).
pub struct Call {
    pub state: Arc<AppState>,
    pub request: Request<Incoming>,
    pub param: String,
}

/// A handler, and so the listener that serves it.
#[derive(Clone, Copy)]
pub enum Handler {
    /// On the public TLS port, with the connection's session.
    Public(fn(Call, Session) -> Pending),
    /// On the host's internal listener, after its bearer token is checked.
    Internal(fn(Call) -> Pending),
}

/// One route. A path ending in a `{name}` segment matches every path that starts with
/// what comes before it.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub handler: Handler,
}

/// Which listener a request came in on (the public one with the connection's session).
pub enum Listener {
    Public(Session),
    Internal,
}

impl Route {
    fn serves(&self, listener: &Listener) -> bool {
        matches!(
            (self.handler, listener),
            (Handler::Public(_), Listener::Public(_)) | (Handler::Internal(_), Listener::Internal)
        )
    }

    /// What the path's `{…}` segment matched, if `path` is this route's.
    fn matches(&self, path: &str) -> Option<String> {
        let parameter = self
            .path
            .strip_suffix('}')
            .and_then(|p| p.rfind('{').map(|open| &p[..open]));
        match parameter {
            Some(prefix) => path.strip_prefix(prefix).map(str::to_string),
            None => (self.path == path).then(String::new),
        }
    }
}

fn now(reply: Reply) -> Pending {
    Box::pin(ready(reply))
}

fn ok(response: Response<Body>) -> Pending {
    now(Ok(response))
}

/// Every route of both listeners.
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/healthz",
        handler: Handler::Public(|call, _| ok(health::health(&call.state))),
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
        handler: Handler::Public(|call, _| ok(openapi_doc::document(&call.state))),
    },
    Route {
        method: Method::GET,
        path: "/v1/models",
        handler: Handler::Public(|call, _| ok(models::list(&call.state))),
    },
    Route {
        method: Method::GET,
        path: "/v1/models/{model}",
        handler: Handler::Public(|call, _| now(models::get(&call.state, &call.param))),
    },
    Route {
        method: Method::POST,
        path: "/v1/chat/completions",
        handler: Handler::Public(|call, session| {
            Box::pin(inference::chat(call.state, session, call.request))
        }),
    },
    Route {
        method: Method::POST,
        path: "/v1/completions",
        handler: Handler::Public(|call, session| {
            Box::pin(inference::completions(call.state, session, call.request))
        }),
    },
    Route {
        method: Method::POST,
        path: "/v1/embeddings",
        handler: Handler::Public(|call, _| {
            Box::pin(inference::embeddings(call.state, call.request))
        }),
    },
    Route {
        method: Method::POST,
        path: "/v1/attestation",
        handler: Handler::Public(|call, session| {
            Box::pin(attestation::attestation(call.state, session, call.request))
        }),
    },
    Route {
        method: Method::GET,
        path: "/v1/attestation/config",
        handler: Handler::Public(|call, _| ok(attestation::measured_config(&call.state))),
    },
    Route {
        method: Method::GET,
        path: "/v1/attestation/gpu",
        handler: Handler::Public(|call, _| now(attestation::gpu_evidence(&call.state))),
    },
    Route {
        method: Method::GET,
        path: "/v1/billing/account",
        handler: Handler::Public(|call, session| {
            now(billing::account(&call.state, &session, &call.request))
        }),
    },
    Route {
        method: Method::GET,
        path: "/internal/v1/receipts",
        handler: Handler::Internal(|call| {
            now(
                internal::list_receipts(&call.state.meter, call.request.uri().query())
                    .map(|body| json_response(StatusCode::OK, &body)),
            )
        }),
    },
    Route {
        method: Method::GET,
        path: "/internal/v1/accounts",
        handler: Handler::Internal(|call| {
            now(internal::list_accounts(&call.state.meter)
                .map(|body| json_response(StatusCode::OK, &body)))
        }),
    },
    Route {
        method: Method::GET,
        path: "/internal/v1/escrows",
        handler: Handler::Internal(|call| {
            now(
                internal::list_escrows(&call.state.meter, call.state.escrows.as_deref())
                    .map(|body| json_response(StatusCode::OK, &body)),
            )
        }),
    },
    Route {
        method: Method::POST,
        path: "/internal/v1/escrows",
        handler: Handler::Internal(|call| {
            Box::pin(async move {
                let bytes = read_body(&call.state.config.limits, call.request).await?;
                internal::report_escrows(call.state.escrows.as_deref(), &bytes)
                    .map(|body| json_response(StatusCode::OK, &body))
            })
        }),
    },
    Route {
        method: Method::POST,
        path: "/internal/v1/receipts/ack",
        handler: Handler::Internal(|call| {
            Box::pin(async move {
                let bytes = read_body(&call.state.config.limits, call.request).await?;
                internal::acknowledge(&call.state.meter, &bytes)
                    .map(|body| json_response(StatusCode::OK, &body))
            })
        }),
    },
];

/// The route for `method` and `path` on `listener` with what its `{…}` matched; else
/// 405 with the methods the path allows, or 404.
pub fn find(
    listener: &Listener,
    method: &Method,
    path: &str,
) -> Result<(Handler, String), ApiError> {
    let mut allowed = Vec::new();
    for route in ROUTES.iter().filter(|r| r.serves(listener)) {
        if let Some(param) = route.matches(path) {
            if route.method == *method {
                return Ok((route.handler, param));
            }
            allowed.push(route.method.clone());
        }
    }
    if allowed.is_empty() {
        Err(ApiError::unknown_url(method, path))
    } else {
        Err(ApiError::method_not_allowed(method, path, &allowed))
    }
}

/// Runs the handler of `request`'s route on `listener`.
async fn dispatch(listener: Listener, state: Arc<AppState>, request: Request<Incoming>) -> Reply {
    let (handler, param) = find(&listener, request.method(), request.uri().path())?;
    let call = Call {
        state,
        request,
        param,
    };
    match (handler, listener) {
        (Handler::Public(handler), Listener::Public(session)) => handler(call, session).await,
        (Handler::Internal(handler), Listener::Internal) => handler(call).await,
        // `find` returns only routes of the listener asked.
        _ => Err(ApiError::unknown_url(
            call.request.method(),
            call.request.uri().path(),
        )),
    }
}

/// Routes one request of the public port.
pub async fn handle(
    state: Arc<AppState>,
    session: Session,
    request: Request<Incoming>,
) -> Response<Body> {
    dispatch(Listener::Public(session), state, request)
        .await
        .unwrap_or_else(error_response)
}

/// Routes one request of the internal listener: the host agent's receipt collection
/// (see `handlers::internal`), nothing else. A path outside `/internal/` is 404 before
/// the token is looked at; inside it the token is checked before anything else.
pub async fn handle_internal(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if !path.starts_with("/internal/") {
        return error_response(ApiError::unknown_url(request.method(), path));
    }
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = internal::authorize(state.host_token.as_ref(), authorization) {
        return error_response(e);
    }
    dispatch(Listener::Internal, state, request)
        .await
        .unwrap_or_else(error_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_or_by_their_parameter() {
        let found = |listener: Listener, method: Method, path: &str| {
            find(&listener, &method, path).map(|(_, param)| param)
        };
        let public = || Listener::Public(Session::new([0; 32]));
        assert_eq!(found(public(), Method::GET, "/healthz").unwrap(), "");
        assert_eq!(
            found(public(), Method::GET, "/v1/models/m-1").unwrap(),
            "m-1"
        );
        assert_eq!(found(public(), Method::GET, "/v1/models/").unwrap(), "");
        let e = found(public(), Method::PUT, "/v1/chat/completions").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.allow.as_deref(), Some("POST"));
        let e = found(public(), Method::GET, "/v1/chat").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        // Each listener serves only its own routes.
        let e = found(public(), Method::GET, "/internal/v1/receipts").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = found(Listener::Internal, Method::GET, "/healthz").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = found(Listener::Internal, Method::GET, "/internal/v1/receipts/ack").unwrap_err();
        assert_eq!(e.allow.as_deref(), Some("POST"));
    }

    #[test]
    fn every_public_route_is_in_the_openapi_document() {
        let doc = openapi_doc::render("m", 1);
        let public = Listener::Public(Session::new([0; 32]));
        for route in ROUTES.iter().filter(|r| r.serves(&public)) {
            let method = route.method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][route.path][&method].is_object(),
                "{} {} is not in openapi.json",
                route.method,
                route.path
            );
        }
    }
}
