//! `cocoon-client proxy`: a local, plain-HTTP OpenAI endpoint that forwards only to a
//! Cocoon guest that passed attestation.
//!
//! Every new local connection opens its own upstream TLS session, verifies the
//! certificate's evidence *and* fresh evidence bound to that session (nonce + TLS
//! exporter), and only then forwards requests over that same session, streaming the
//! answers back unchanged. If verification fails, nothing is forwarded: each request
//! gets an OpenAI-style 502 naming the reason.
//!
//! With `--account-key FILE` the proxy bills every request to that account: for each
//! upstream session it signs the session's exporter once with the account key and adds
//! `x-cocoon-account` and `x-cocoon-account-proof` to every request it forwards there (see
//! `cocoon_attestation::account`). Account headers sent by the local client are always
//! dropped: only the proxy, which sees the upstream session, can prove an account in it.
//! `cocoon-client account keygen|show` makes and shows account keys; `--mnemonic-file
//! FILE` takes the key TON wallets derive from 24 words instead, so one secret owns the
//! account, its escrow and the wallet that funds it.
//!
//! With `--spend-cap TON` as well, the proxy pays guests that bill through escrows: it
//! authorizes each verified guest's receipt key to charge the account's escrow
//! (`cocoon_client::proxy::ProxyBilling`).
//!
//! `cocoon-client escrow deploy|top-up|set-stake|withdraw|close|refund` and `cocoon-client
//! balance` are the escrow owner's commands (`owner.rs`, `cocoon_client::onchain`): the
//! account key's wallet v5r1 pays and sends through a TON HTTP API (`--ton-api`), and each
//! command waits until the chain shows its effect.
//!
//! `cocoon-client registry deploy|add|remove|list|address` are a publisher's commands on
//! its on-chain registry of reference values (`registry.rs`, `cocoon_client::publisher`).
//!
//! The local side answers only local programs: requests must name the listener in `Host`,
//! come from no foreign web origin and carry JSON bodies (`cocoon_client::local`); with
//! `--local-token-file` they must also carry that token. Hop-by-hop headers are dropped in
//! both directions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cocoon_attestation::account::AccountKey;
use cocoon_client::amount::Amount;
use cocoon_client::args::{attestor, CollateralArgs, PolicyArgs};
use cocoon_client::escrow::Authorizer;
use cocoon_client::keys::KeyArgs;
use cocoon_client::proxy::{Proxy, ProxyBilling};
use cocoon_client::Endpoint;

mod owner;
mod registry;

#[derive(Parser)]
#[command(
    name = "cocoon-client",
    version,
    about = "Local verifying client for Cocoon endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start; boxing the proxy arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve plain HTTP on a loopback address and forward OpenAI requests to an attested
    /// guest; point any OpenAI SDK at http://LISTEN/v1.
    Proxy {
        /// Loopback address to listen on (127.0.0.1:PORT or [::1]:PORT; port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The endpoint, e.g. https://HOST:PORT (the host agent's public port).
        #[arg(long)]
        upstream: String,
        #[command(flatten)]
        accept: PolicyArgs,
        #[command(flatten)]
        collateral: CollateralArgs,
        /// Seconds to connect and verify an upstream session.
        #[arg(long, default_value_t = 15)]
        connect_timeout: u64,
        /// The account requests are billed to (`--account-key FILE` or `--mnemonic-file
        /// FILE`); it is proven in every upstream session. Without one, requests go unnamed
        /// (billed to `anonymous` where the guest allows that).
        #[command(flatten)]
        key: KeyArgs,
        /// Pay guests that bill through escrows: authorize each verified guest's receipt
        /// key to charge the account's escrow up to this much in all (TON, 9 decimals at
        /// most). Without it no authorization is sent and such guests answer 402.
        #[arg(long, value_name = "TON")]
        spend_cap: Option<Amount>,
        /// Seconds each escrow authorization lasts; a new one is signed before it ends.
        #[arg(long, value_name = "SECS", default_value_t = 86_400,
              value_parser = clap::value_parser!(u64).range(600..=31_536_000))]
        authorization_ttl: u64,
        /// A file holding a local secret: when given, every local request must carry it as
        /// `Authorization: Bearer TOKEN` (the OpenAI SDKs' api_key), so other local users
        /// and programs cannot spend the account. It is never forwarded upstream.
        #[arg(long, value_name = "FILE")]
        local_token_file: Option<PathBuf>,
    },
    /// Make or show an account key (an account is an Ed25519 public key).
    #[command(subcommand)]
    Account(AccountCommand),
    /// The account's escrow (billing/PROTOCOL.md): deploy, top up, stake, withdraw, close,
    /// refund. The key's wallet v5r1 pays and sends; each command checks the escrow's rules
    /// first, then waits until the chain shows the effect (exit status 0 only then).
    #[command(subcommand)]
    Escrow(owner::EscrowCommand),
    /// Show the escrow: address, owner wallet and its balance, deposit, stake, free,
    /// settled (total charged), closing state, close delay, prices, and per known guest key
    /// what the chain has settled; with --upstream URL also the unsettled usage, which the
    /// verified guest reports to the proven owner (what it signed − what the chain settled).
    Balance(owner::BalanceArgs),
    /// A publisher's on-chain registry of reference values (billing/REGISTRY.md): deploy
    /// it, add and remove image, model and price-table values, list it. The publisher
    /// key's wallet v5r1 pays; clients read it with `--registry ADDRESS`.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Write a new account key (PKCS#8 PEM, mode 0600) and print its account id.
    Keygen {
        /// File to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the account id of a key (and the address of the TON wallet it controls).
    Show {
        #[command(flatten)]
        key: KeyArgs,
        /// The network whose wallet address to print: local, testnet or mainnet.
        #[arg(long, value_name = "NETWORK", default_value = "mainnet",
              value_parser = ["local", "testnet", "mainnet"])]
        ton_network: String,
    },
}

/// The `--local-token-file` secret: the file's text, trimmed; at least 16 characters.
fn read_local_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read local token {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{}: the local token must be one word of at least 16 characters (e.g. `openssl rand -hex 32`)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

fn account(command: AccountCommand) -> ExitCode {
    let shown = match command {
        AccountCommand::Keygen { out } => AccountKey::generate()
            .map_err(|e| e.to_string())
            .and_then(|(key, pem)| {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(&out)
                    .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
                std::io::Write::write_all(&mut file, pem.as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                Ok(key.id().to_string())
            }),
        AccountCommand::Show { key, ton_network } => key.require().and_then(|key| {
            let wallet = cocoon_client::wallet::OwnerWallet::new(&key, &ton_network)?;
            Ok(format!(
                "{}\nwallet v5r1 ({ton_network}): {} (pays deploys, top-ups and owner requests)",
                key.id(),
                wallet.address_text()
            ))
        }),
    };
    match shown {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cocoon-client: {e}");
            ExitCode::from(2)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Proxy {
            listen,
            upstream,
            accept,
            collateral,
            connect_timeout,
            key,
            spend_cap,
            authorization_ttl,
            local_token_file,
        } => {
            let args = ProxyArgs {
                listen,
                upstream,
                accept,
                collateral,
                connect_timeout,
                key,
                spend_cap,
                authorization_ttl,
                local_token_file,
            };
            match proxy(args) {
                Ok(proxy) => proxy.run().await,
                Err(e) => {
                    eprintln!("cocoon-client: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Account(command) => account(command),
        Command::Escrow(command) => owner::escrow(command).await,
        Command::Balance(args) => owner::balance(args).await,
        Command::Registry(command) => registry::registry(command).await,
    }
}

/// The proxy's arguments, as parsed.
struct ProxyArgs {
    listen: SocketAddr,
    upstream: String,
    accept: PolicyArgs,
    collateral: CollateralArgs,
    connect_timeout: u64,
    key: KeyArgs,
    spend_cap: Option<Amount>,
    authorization_ttl: u64,
    local_token_file: Option<PathBuf>,
}

/// Checks and loads everything the proxy needs before it touches the network.
fn proxy(args: ProxyArgs) -> Result<Proxy, String> {
    let local_token = args
        .local_token_file
        .as_deref()
        .map(read_local_token)
        .transpose()?
        .map(Arc::<str>::from);
    let account_key = args.key.load()?.map(Arc::new);
    let billing = match (args.spend_cap, &account_key) {
        (Some(cap), Some(_)) => Some(Arc::new(ProxyBilling::new(
            cocoon_client::escrow::escrow_code(),
            Authorizer::new(cap, args.authorization_ttl),
        ))),
        (Some(_), None) => return Err(
            "--spend-cap needs the account that pays: --account-key FILE or --mnemonic-file FILE"
                .into(),
        ),
        (None, _) => None,
    };
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen must be a loopback address (the local side is plain HTTP): {}",
            args.listen
        ));
    }
    let endpoint = Endpoint::parse(&args.upstream).map_err(|e| e.to_string())?;
    let (attestor, manifest) =
        attestor(&args.accept, &args.collateral).map_err(|e| e.to_string())?;
    if let Some(warning) = attestor.any_image_warning() {
        eprintln!("cocoon-client: {warning}");
    }
    Ok(Proxy {
        listen: args.listen,
        endpoint,
        attestor,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        account_key,
        billing,
        local_token,
        manifest,
    })
}
