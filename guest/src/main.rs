//! `cocoon-guest`: the confidential inference server. Parsing and start-up live in the
//! library (`cli`, `boot`); this binary only wires them together.

use clap::Parser;
use cocoon_guest::boot;
use cocoon_guest::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mistralrs_core=warn,mistralrs=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => boot::run(*args, boot::shutdown_signal()).await,
        Command::MeasuredConfig(args) => {
            let config = boot::predicted_config(&args)?;
            eprintln!("{}", String::from_utf8_lossy(&config.canonical_json()));
            println!("{}", hex::encode(config.digest()));
            Ok(())
        }
    }
}
