//! Intel TDX evidence.
pub mod dcap;
pub mod qgs;
pub mod quote;
pub mod td_report;

pub use quote::{
    CertificationData, QuoteHeader, QuoteSignatureData, TdReportBody, TdxQuote, TEE_TYPE_TDX,
};
