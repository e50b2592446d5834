//! AMD SEV-SNP evidence.
pub mod report;
pub mod verify;

pub use report::{GuestPolicy, SnpReport, TcbVersion};
