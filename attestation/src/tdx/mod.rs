//! Intel TDX evidence.
pub mod dcap;
pub mod quote;

pub use quote::{
    CertificationData, QuoteHeader, QuoteSignatureData, TdReportBody, TdxQuote, TEE_TYPE_TDX,
};
