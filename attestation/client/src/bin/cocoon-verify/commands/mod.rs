//! One module per subcommand.
pub mod endpoint;
pub mod evidence;
pub mod manifest;
pub mod receipt;
