//! The subcommands that talk to a running agent through its admin API: `status`,
//! `guests`, `usage`, `receipts export` and `drain`. They live apart from the agent's own
//! subcommands because they are clients: they start nothing, and need only the admin
//! address and token.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use cocoon_host_agent::admin::table::render;
use cocoon_host_agent::admin::token::read_token_file;
use cocoon_host_agent::admin::{AdminClient, ExportSummary, MAX_RECEIPTS_PAGE};
use serde_json::Value;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Show the running agent's status: version, uptime, guests, ledger totals.
    Status(ViewArgs),
    /// List the guests and their state.
    ///
    /// For each guest: health, attestation (TEE, measurements, measured config digest,
    /// receipt key), whether it is drained, and the state of receipt collection.
    Guests(ViewArgs),
    /// Show usage per account (all accounts, or one with --account).
    Usage(UsageArgs),
    /// Export the signed usage receipts in the agent's ledger.
    Receipts {
        #[command(subcommand)]
        command: ReceiptsCommand,
    },
    /// Drain a guest (or undrain it with --undrain).
    ///
    /// A drained guest gets no new client connections; open ones finish. Undraining
    /// sends it clients again.
    Drain(DrainArgs),
}

#[derive(Subcommand)]
pub enum ReceiptsCommand {
    /// Write every receipt after --since as JSON lines.
    ///
    /// One receipt a line, in ascending ledger id, exactly as the agent stored it; the
    /// export pages through the ledger until there are no more. A summary goes to stderr,
    /// with the --since a later export continues from.
    Export(ExportArgs),
    /// Prove a settled receipt: its inclusion in the receipts tree the guest committed to
    /// in the latest voucher the escrow paid for its account.
    ///
    /// Writes the proof document (JSON) that `cocoon-verify receipt JWS --onchain --proof
    /// FILE` checks against the root the escrow recorded. A receipt whose voucher has not
    /// landed on chain yet has no proof (try again after the next settlement).
    Proof(ProofArgs),
}

/// Where the admin API is, and its token.
#[derive(Args)]
pub struct Connection {
    /// The agent's admin API address (host:port).
    #[arg(
        long = "admin",
        env = "COCOON_ADMIN",
        default_value = "127.0.0.1:9444",
        value_name = "ADDR"
    )]
    pub admin: String,
    /// A file holding the admin token (the one the agent was started with).
    #[arg(long, env = "COCOON_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl Connection {
    fn client(&self) -> anyhow::Result<AdminClient> {
        let token = self
            .admin_token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        Ok(AdminClient::new(self.admin.clone(), token))
    }
}

#[derive(Args)]
pub struct ViewArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Only this account.
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Export receipts with a ledger id above this (0: from the start).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub since: i64,
    /// Write to FILE instead of stdout (written whole or not at all: receipts go to
    /// FILE.partial, renamed to FILE when the export is complete).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Receipts per request.
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_RECEIPTS_PAGE as i64))]
    pub page_size: u32,
}

#[derive(Args)]
pub struct ProofArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The receipt: its ledger id (as `receipts export` prints it) or its request id
    /// (`chatcmpl-…`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Write the proof to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the receipt itself (JWS compact) to FILE.
    #[arg(long, value_name = "FILE")]
    pub receipt_output: Option<PathBuf>,
}

#[derive(Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// The guest's name (as `guests` lists it).
    #[arg(value_name = "GUEST")]
    pub guest: String,
    /// Undrain instead: send the guest new clients again.
    #[arg(long)]
    pub undrain: bool,
}

/// Runs one admin subcommand.
pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Status(view) => show(&view, view.connection.client()?.status().await?),
        AdminCommand::Guests(view) => show(&view, view.connection.client()?.guests().await?),
        AdminCommand::Usage(args) => {
            let client = args.view.connection.client()?;
            let mut usage = client.usage(args.account.as_deref()).await?;
            if !args.view.json {
                // One row per account; the per-boot detail is in --json.
                let rows = usage.get_mut("data").and_then(Value::as_array_mut);
                for row in rows.into_iter().flatten() {
                    if let Some(row) = row.as_object_mut() {
                        row.remove("per_epoch");
                    }
                }
            }
            show(&args.view, usage)
        }
        AdminCommand::Receipts {
            command: ReceiptsCommand::Export(args),
        } => export(args).await,
        AdminCommand::Receipts {
            command: ReceiptsCommand::Proof(args),
        } => proof(args).await,
        AdminCommand::Drain(args) => {
            let client = args.view.connection.client()?;
            show(
                &args.view,
                client.set_drained(&args.guest, !args.undrain).await?,
            )
        }
    }
}

/// Prints an answer as a table, or as JSON with `--json`.
fn show(view: &ViewArgs, answer: Value) -> anyhow::Result<()> {
    let text = if view.json {
        format!("{}\n", serde_json::to_string_pretty(&answer)?)
    } else {
        render(&answer)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let page_size = args.page_size as usize;
    let summary = match &args.output {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            client
                .export_receipts(args.since, page_size, &mut out)
                .await?
        }
        Some(file) => export_to_file(&client, args.since, page_size, file).await?,
    };
    match (summary.first_id, summary.last_id) {
        (Some(first), Some(last)) => eprintln!(
            "exported {} receipts (ledger ids {first}..={last}); continue with --since {}",
            summary.receipts, summary.next_since
        ),
        _ => eprintln!(
            "no receipts after {}; continue with --since {}",
            args.since, summary.next_since
        ),
    }
    Ok(())
}

async fn proof(args: ProofArgs) -> anyhow::Result<()> {
    let answer = args.connection.client()?.receipt_proof(&args.id).await?;
    let proof = answer
        .get("proof")
        .context("the admin API's answer has no `proof`")?;
    let text = format!("{}\n", serde_json::to_string_pretty(proof)?);
    match &args.output {
        Some(file) => std::fs::write(file, &text)
            .with_context(|| format!("cannot write {}", file.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to stdout")?,
    }
    if let Some(file) = &args.receipt_output {
        let receipt = answer
            .get("receipt")
            .and_then(Value::as_str)
            .context("the admin API's answer has no `receipt`")?;
        std::fs::write(file, format!("{receipt}\n"))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Exports into `FILE.partial` and renames it to `file` once complete, so a failed
/// export never leaves a file that looks whole.
async fn export_to_file(
    client: &AdminClient,
    since: i64,
    page_size: usize,
    file: &Path,
) -> anyhow::Result<ExportSummary> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let handle = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(handle);
    let summary = match client.export_receipts(since, page_size, &mut out).await {
        Ok(summary) => summary,
        Err(e) => {
            drop(out);
            // Nothing written (the first request failed): leave nothing behind.
            if std::fs::metadata(&partial).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&partial);
                return Err(e.into());
            }
            return Err(anyhow::Error::new(e).context(format!(
                "export stopped; the receipts written so far are in {}",
                partial.display()
            )));
        }
    };
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    Ok(summary)
}
