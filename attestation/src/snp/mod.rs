//! AMD SEV-SNP evidence.
pub mod dev;
pub mod report;
pub mod verify;

pub use report::{GuestPolicy, SnpReport, TcbVersion};
