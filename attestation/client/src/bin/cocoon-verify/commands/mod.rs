//! One module per subcommand.
pub mod endpoint;
pub mod evidence;
pub mod gpu;
pub mod manifest;
pub mod onchain;
pub mod receipt;
pub mod tpm;
