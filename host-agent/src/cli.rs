//! The command line: `run` (the plain relay), `vm` (launch and supervise the guest), and
//! the admin API's clients (`status`, `guests`, `usage`, `receipts`, `drain`; see
//! `admin_cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cocoon-host-agent",
    version,
    about = "Cocoon host agent: launches and supervises the guest VM and relays ciphertext to it (outside the TEE)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Relay TCP connections from a public port to the guest's HTTPS port.
    Run(RelayArgs),
    /// Launch the guest's VM (TDX, SEV-SNP or plain) from a config file.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    #[command(flatten)]
    Admin(crate::admin_cli::AdminCommand),
}

#[derive(clap::Args)]
pub struct RelayArgs {
    /// Public address clients connect to.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// The guest's TLS port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub guest: String,
    /// Seconds to wait for the guest to accept a connection.
    #[arg(long, default_value_t = 5)]
    pub connect_timeout_secs: u64,
    /// Close a connection when neither side sent a byte for this many seconds.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Relay at most this many connections at once; more are closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Print the QEMU command line the config implies (program first, one argument per line).
    PrintCmdline {
        /// The VM config (TOML; see host-agent/examples/vm-*.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print one line quoted for a POSIX shell instead.
        #[arg(long)]
        shell: bool,
    },
    /// Launch the VM and supervise it: wait for /healthz, verify the guest's attestation
    /// under the config's policy, only then relay clients; restart with backoff on failure
    /// and exit non-zero when max_restarts is used up.
    Run {
        /// The VM config (TOML; see host-agent/examples/vm-*.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}
