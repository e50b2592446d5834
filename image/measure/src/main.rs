//! `cocoon-measure`: parse the command line, run the command, report.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use cocoon_measure::cli::{run, Cli};

fn main() -> anyhow::Result<ExitCode> {
    let outcome = run(Cli::parse())?;
    print!("{}", outcome.stdout);
    Ok(if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
