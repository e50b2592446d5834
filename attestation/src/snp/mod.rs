//! AMD SEV-SNP evidence.
pub mod ext_report;
pub mod report;
pub mod verify;

pub use report::{GuestPolicy, SnpReport, TcbVersion};
