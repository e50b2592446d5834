//! The command line: `run` (the agent: relay, receipt ledger, admin API, from a config
//! file), `relay` (the plain relay to one guest), `vm` (launch and supervise a guest's
//! VM), and the admin API's clients (`status`, `guests`, `usage`, `receipts`, `drain`;
//! see `admin_cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cocoon-host-agent",
    version,
    about = "Cocoon host agent (outside the TEE): relays ciphertext to the guests, keeps the ledger of their signed receipts, serves the admin API, launches and supervises guest VMs"
)]
pub struct Cli {
    /// Log format on stderr: `text`, or `json` (one object per line, for log shippers).
    /// Logs never contain request or response content.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "COCOON_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent in front of the guests its config lists: relay clients to healthy,
    /// verified guests (least connections), collect their signed receipts into the SQLite
    /// ledger, serve the admin API and /metrics (see host-agent/examples/agent.toml).
    Run {
        /// The agent's config (TOML).
        #[arg(long, value_name = "FILE", default_value = cocoon_host_agent::agent::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Relay TCP connections from a public port to one guest's HTTPS port (no ledger, no
    /// admin API: development and benchmarks).
    Relay(RelayArgs),
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
    #[arg(long, default_value_t = 5, value_parser = at_least_one_u64())]
    pub connect_timeout_secs: u64,
    /// Close a connection when neither side sent a byte for this many seconds.
    #[arg(long, default_value_t = 300, value_parser = at_least_one_u64())]
    pub idle_timeout_secs: u64,
    /// Close a connection this many seconds after it was accepted, busy or not (0: never).
    #[arg(long, default_value_t = 3600)]
    pub max_connection_secs: u64,
    /// Relay at most this many connections at once; more are closed at once.
    #[arg(long, default_value_t = 1024, value_parser = at_least_one_usize())]
    pub max_connections: usize,
    /// Relay at most this many connections at once from one client address (IPv6: one
    /// /64); more are closed at once.
    #[arg(long, default_value_t = 128, value_parser = at_least_one_usize())]
    pub max_connections_per_source: usize,
}

fn at_least_one_u64() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

fn at_least_one_usize() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
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
