//! `cocoon-host-agent`: runs on the operator's host, outside the trust boundary.
//!
//! It relays TCP bytes between clients and the guests and never terminates TLS, so it sees
//! only ciphertext; `run` also collects the guests' signed receipts into the ledger and
//! serves the admin API; `vm` launches and supervises a guest's VM. TON settlement joins
//! it later.
#![forbid(unsafe_code)]

mod admin_cli;
mod cli;

use std::time::Duration;

use clap::Parser;
use cli::{Cli, Command, LogFormat, RelayArgs, VmCommand};
use cocoon_host_agent::agent::config::LoadedAgentConfig;
use cocoon_host_agent::agent::run_agent;
use cocoon_host_agent::listen::listen;
use cocoon_host_agent::relay::{limit_from_secs, run_relay, RelayLimits};
use cocoon_host_agent::vm::config::LoadedConfig;
use cocoon_host_agent::vm::qemu::{kvm_usable, qemu_args, shell_line, Accel};
use cocoon_host_agent::vm::run::run_vm;
use cocoon_host_agent::vm::vfio::HostPaths;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        // Colour only on a terminal: logs often go to files and journals.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match cli.command {
        Command::Run { config } => {
            let loaded = LoadedAgentConfig::load(&config)?;
            run_agent(&loaded, shutdown_signal()).await?;
            Ok(())
        }
        Command::Relay(args) => relay(args).await,
        Command::Admin(command) => admin_cli::run(command).await,
        Command::Vm {
            command: VmCommand::PrintCmdline { config, shell },
        } => {
            let loaded = LoadedConfig::load(&config)?;
            let accel = Accel::resolve(loaded.config.vm.accel, kvm_usable);
            let args = qemu_args(&loaded, accel, &loaded.kernel_cmdline()?);
            let program = &loaded.config.vm.qemu;
            if shell {
                println!("{}", shell_line(program, &args));
            } else {
                println!("{}", program.display());
                for arg in args {
                    println!("{arg}");
                }
            }
            Ok(())
        }
        Command::Vm {
            command: VmCommand::Run { config },
        } => {
            let loaded = LoadedConfig::load(&config)?;
            run_vm(&loaded, &HostPaths::default(), shutdown_signal()).await?;
            Ok(())
        }
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let limits = RelayLimits {
        connect_timeout: Duration::from_secs(args.connect_timeout_secs),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_connection_duration: limit_from_secs(args.max_connection_secs),
        max_connections: args.max_connections,
        max_connections_per_source: args.max_connections_per_source,
    };
    let (listener, listening) = listen(args.listen).await?;
    println!(
        "cocoon-host-agent: relaying {listening} -> {} (TLS passes through untouched)",
        args.guest
    );
    run_relay(listener, args.guest, limits, shutdown_signal()).await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
