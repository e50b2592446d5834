//! `cocoon-host-agent`: runs on the operator's host, outside the trust boundary.
//!
//! It relays TCP bytes between clients and the guest and never terminates TLS, so it sees
//! only ciphertext. The VM launcher, the receipts ledger and TON settlement join it later.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cocoon_host_agent::relay::{run_relay, RelayConfig};

#[derive(Parser)]
#[command(
    name = "cocoon-host-agent",
    version,
    about = "Cocoon host agent: relays ciphertext to the guest (outside the TEE)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relay TCP connections from a public port to the guest's HTTPS port.
    Run {
        /// Public address clients connect to.
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        /// The guest's TLS port.
        #[arg(long, default_value = "127.0.0.1:8443")]
        guest: String,
        /// Seconds to wait for the guest to accept a connection.
        #[arg(long, default_value_t = 5)]
        connect_timeout_secs: u64,
        /// Close a connection when neither side sent a byte for this many seconds.
        #[arg(long, default_value_t = 300)]
        idle_timeout_secs: u64,
        /// Relay at most this many connections at once; more are closed at once.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run {
            listen,
            guest,
            connect_timeout_secs,
            idle_timeout_secs,
            max_connections,
        } => {
            let config = RelayConfig {
                listen,
                upstream: guest,
                connect_timeout: Duration::from_secs(connect_timeout_secs),
                idle_timeout: Duration::from_secs(idle_timeout_secs),
                max_connections,
            };
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            println!(
                "cocoon-host-agent: relaying {} -> {} (TLS passes through untouched)",
                listener.local_addr()?,
                config.upstream
            );
            run_relay(listener, config, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }
    }
}
