//! The handlers, one module per endpoint family. They stand on `http::state` and
//! `http::body` and never import the router, which stands on them.

pub mod answer;
pub mod attestation;
pub mod billing;
pub mod health;
pub mod inference;
pub mod internal;
pub mod models;
pub mod openapi_doc;
pub mod sse;
