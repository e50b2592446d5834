//! `cocoon-client escrow …` and `cocoon-client balance`: the escrow owner's commands
//! (`cocoon_client::onchain` does the work; this is the command line around it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use cocoon_attestation::account::AccountKey;
use cocoon_billing::layout::PublicKey;
use cocoon_billing::ton_http::TonHttpClient;
use cocoon_client::amount::Amount;
use cocoon_client::args::{attestor, CollateralArgs, PolicyArgs};
use cocoon_client::escrow::unix_now;
use cocoon_client::keys::KeyArgs;
use cocoon_client::onchain::{self, GuestTerms, Owner};
use cocoon_client::owner::{parse_address, Operation};
use cocoon_client::wallet::OwnerWallet;
use cocoon_client::Endpoint;
use tycho_types::models::StdAddr;

/// Where the chain is: `--ton-api`, `--ton-api-key-file`, `--ton-network`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChainArgs {
    /// TON HTTP API (toncenter v2 routes) base URL, e.g. https://toncenter.com, or the host
    /// agent's loopback API over its local chain (`[billing.local_chain] api_listen`, e.g.
    /// http://127.0.0.1:8081). Default: toncenter for mainnet and testnet; required for
    /// the local network.
    #[arg(long, value_name = "URL", env = "COCOON_TON_API")]
    pub ton_api: Option<String>,
    /// A file holding the API key sent as X-API-Key (toncenter's).
    #[arg(long, value_name = "FILE")]
    pub ton_api_key_file: Option<PathBuf>,
    /// The network (it selects the wallet's id, so its address): local, testnet or
    /// mainnet. Default: the network the guest's config names, else mainnet; a guest
    /// config naming another network is refused.
    #[arg(long, value_name = "NETWORK", value_parser = ["local", "testnet", "mainnet"])]
    pub ton_network: Option<String>,
}

/// Where the escrow's terms (close delay, prices, contract code) come from.
#[derive(Debug, Clone, clap::Args)]
pub struct TermsArgs {
    /// The guest the escrow pays, https://HOST:PORT: its evidence is verified (same flags as
    /// `proxy`), its config is fetched over that session and checked against the attested
    /// digest, and the escrow is derived from it and this key.
    #[arg(long, value_name = "URL", conflicts_with = "terms_from")]
    pub upstream: Option<String>,
    /// Or take the terms from a saved file instead of a live guest: a guest config as
    /// `GET /v1/attestation/config` serves it, or the output of `cocoon-verify endpoint
    /// URL --json` (its `config`, and its `receipt_key` as the guest key). Not verified
    /// here: use only a file you got from a verified guest (offline use, tests).
    #[arg(long, value_name = "FILE")]
    pub terms_from: Option<PathBuf>,
    #[command(flatten)]
    pub accept: PolicyArgs,
    #[command(flatten)]
    pub collateral: CollateralArgs,
    /// Seconds to connect to and verify --upstream.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub connect_timeout: u64,
}

/// What every owner command takes: the key, the chain, and the escrow (by address or by
/// terms).
#[derive(Debug, Clone, clap::Args)]
pub struct OwnerArgs {
    /// The owner (`--account-key FILE` or `--mnemonic-file FILE`): it owns the escrow and
    /// its wallet v5r1 pays.
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// The escrow's address (raw 0:HEX or user-friendly), for commands on an existing
    /// escrow; without it the address is derived from --upstream or --terms-from. With
    /// both, they must agree.
    #[arg(long, value_name = "ADDR")]
    pub escrow: Option<String>,
    #[command(flatten)]
    pub terms: TermsArgs,
}

/// `--wait`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct WaitArgs {
    /// Seconds to wait for the chain to show the effect (the wallet's transfer is valid
    /// this long, at least 60 s and at most 600 s).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum EscrowCommand {
    /// Deploy the escrow for a guest with a first deposit (needs the terms: --upstream or
    /// --terms-from), optionally setting a stake in the same transfer.
    Deploy {
        #[command(flatten)]
        owner: OwnerArgs,
        /// The first deposit (TON, at most 9 decimals); at least 0.06 (storage reserve and
        /// gas).
        #[arg(long, value_name = "TON")]
        amount: Amount,
        /// The stake to lock at once (within what the deposit leaves after 0.06 TON).
        #[arg(long, value_name = "TON")]
        stake: Option<Amount>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Add to the deposit of a deployed, open escrow.
    TopUp {
        #[command(flatten)]
        owner: OwnerArgs,
        /// How much to add (TON).
        #[arg(long, value_name = "TON")]
        amount: Amount,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Raise the stake (the guaranteed credit guests admit requests against). It can only
    /// go up; it comes back by closing.
    SetStake {
        #[command(flatten)]
        owner: OwnerArgs,
        /// The new stake (TON), at least the current one.
        #[arg(long, value_name = "TON")]
        stake: Amount,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Withdraw from the free balance (deposit − 0.01 TON storage reserve − stake) of an
    /// open escrow; the forwarding fee comes out of the amount.
    Withdraw {
        #[command(flatten)]
        owner: OwnerArgs,
        /// How much (TON).
        #[arg(long, value_name = "TON")]
        amount: Amount,
        /// Where to send it (default: this key's wallet).
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Request the close: everything above stake and storage reserve goes to the refund
    /// address at once; the rest after the close delay, with `escrow refund`.
    Close {
        #[command(flatten)]
        owner: OwnerArgs,
        /// Where the money goes (default: this key's wallet).
        #[arg(long, value_name = "ADDR")]
        refund_to: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// After a close, once the close delay has passed: send everything left to the refund
    /// address named at the close. The escrow stays deployed, open and empty.
    Refund {
        #[command(flatten)]
        owner: OwnerArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `cocoon-client balance`'s own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BalanceArgs {
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// Also show what the escrow has settled for this guest key (hex, repeatable); the
    /// guest key of --upstream (or of a cocoon-verify --json --terms-from file) is shown
    /// anyway.
    #[arg(long, value_name = "HEX")]
    pub guest_key: Vec<String>,
    /// The proxy's --spend-cap, to show each guest key's cap headroom (cap − settled).
    #[arg(long, value_name = "TON")]
    pub spend_cap: Option<Amount>,
    /// Print one JSON object (amounts as TON strings with 9 decimals).
    #[arg(long)]
    pub json: bool,
}

/// The default API of a network.
fn default_api(network: &str) -> Option<&'static str> {
    match network {
        "mainnet" => Some("https://toncenter.com"),
        "testnet" => Some("https://testnet.toncenter.com"),
        _ => None,
    }
}

/// Everything resolved from [`OwnerArgs`].
struct Context {
    key: AccountKey,
    wallet: OwnerWallet,
    network: String,
    chain: TonHttpClient,
    /// `None` when no terms were given (only --escrow).
    terms: Option<GuestTerms>,
    /// The escrow's address: --escrow, else derived from the terms.
    escrow: Option<StdAddr>,
}

/// Resolves the owner's flags; with `with_account` a live --upstream is also asked what it
/// holds for the account (`balance`).
async fn context(args: &OwnerArgs, with_account: bool) -> Result<Context, String> {
    let key = args.key.require()?;
    let terms = match (&args.terms.upstream, &args.terms.terms_from) {
        (Some(url), _) => {
            let endpoint = Endpoint::parse(url).map_err(|e| e.to_string())?;
            let (attestor, _manifest) =
                attestor(&args.terms.accept, &args.terms.collateral).map_err(|e| e.to_string())?;
            if let Some(warning) = attestor.any_image_warning() {
                eprintln!("cocoon-client: {warning}");
            }
            let timeout = Duration::from_secs(args.terms.connect_timeout);
            Some(
                onchain::terms_from_guest(&endpoint, &attestor, timeout, &key, with_account)
                    .await?,
            )
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(onchain::terms_from_document(
                &text,
                &key,
                &path.display().to_string(),
            )?)
        }
        (None, None) => None,
    };
    let network = match (&args.chain.ton_network, &terms) {
        (Some(flag), Some(t)) if *flag != t.ton_network => {
            return Err(format!(
                "--ton-network {flag}, but the guest bills on {}",
                t.ton_network
            ))
        }
        (Some(flag), _) => flag.clone(),
        (None, Some(t)) => t.ton_network.clone(),
        (None, None) => "mainnet".to_string(),
    };
    let wallet = OwnerWallet::new(&key, &network)?;
    let derived = match &terms {
        Some(t) => Some(t.terms.address().map_err(|e| e.to_string())?),
        None => None,
    };
    let escrow = match (&args.escrow, derived) {
        (Some(text), derived) => {
            let given = parse_address(text).map_err(|e| e.to_string())?;
            if let Some(derived) = derived.filter(|d| *d != given) {
                return Err(format!(
                    "--escrow {given} is not the escrow this key has with that guest \
                     ({derived})"
                ));
            }
            Some(given)
        }
        (None, derived) => derived,
    };
    let chain = ton_client(&args.chain, &network)?;
    Ok(Context {
        key,
        wallet,
        network,
        chain,
        terms,
        escrow,
    })
}

/// The TON HTTP API client of `--ton-api` (default: toncenter for mainnet and testnet).
pub fn ton_client(args: &ChainArgs, network: &str) -> Result<TonHttpClient, String> {
    let url = match &args.ton_api {
        Some(url) => url.clone(),
        None => default_api(network)
            .ok_or_else(|| {
                format!(
                    "the {network} network has no public API: give --ton-api URL (the host \
                     agent's `[billing.local_chain] api_listen`) or set COCOON_TON_API"
                )
            })?
            .to_string(),
    };
    cocoon_client::onchain::ton_http_client(url, args.ton_api_key_file.as_deref())
}

fn escrow_of(context: &Context) -> Result<StdAddr, String> {
    context.escrow.clone().ok_or_else(|| {
        "which escrow? give --escrow ADDR, or the guest (--upstream URL or --terms-from \
         FILE) to derive it"
            .to_string()
    })
}

fn address_or_wallet(text: &Option<String>, wallet: &OwnerWallet) -> Result<StdAddr, String> {
    match text {
        Some(text) => parse_address(text).map_err(|e| e.to_string()),
        None => Ok(wallet.address()),
    }
}

async fn run_escrow(command: EscrowCommand) -> Result<String, String> {
    let (args, wait) = match &command {
        EscrowCommand::Deploy { owner, wait, .. }
        | EscrowCommand::TopUp { owner, wait, .. }
        | EscrowCommand::SetStake { owner, wait, .. }
        | EscrowCommand::Withdraw { owner, wait, .. }
        | EscrowCommand::Close { owner, wait, .. }
        | EscrowCommand::Refund { owner, wait } => (owner, *wait),
    };
    let context = context(args, false).await?;
    let owner = Owner {
        chain: &context.chain,
        key: &context.key,
        wallet: &context.wallet,
        wait: Duration::from_secs(wait.wait),
        poll: Duration::from_secs(2),
    };
    let now = unix_now();
    let operation = match &command {
        EscrowCommand::Deploy { amount, stake, .. } => {
            let terms = context.terms.as_ref().ok_or_else(|| {
                "a deploy needs the escrow's terms: --upstream URL (the guest) or --terms-from \
                 FILE"
                    .to_string()
            })?;
            let outcome = owner.deploy(&terms.terms, *amount, *stake, now).await?;
            return Ok(format!("deployed\n{}", outcome.describe()));
        }
        EscrowCommand::TopUp { amount, .. } => Operation::TopUp { amount: *amount },
        EscrowCommand::SetStake { stake, .. } => Operation::SetStake { stake: *stake },
        EscrowCommand::Withdraw { amount, to, .. } => Operation::Withdraw {
            amount: *amount,
            to: address_or_wallet(to, &context.wallet)?,
        },
        EscrowCommand::Close { refund_to, .. } => Operation::Close {
            refund_to: address_or_wallet(refund_to, &context.wallet)?,
        },
        EscrowCommand::Refund { .. } => Operation::Refund,
    };
    let escrow = escrow_of(&context)?;
    let outcome = owner.operate(&escrow, &operation, now).await?;
    let done = match operation {
        Operation::TopUp { .. } => "topped up".to_string(),
        Operation::SetStake { .. } => "stake set".to_string(),
        Operation::Withdraw { amount, to } => format!(
            "withdrew {} to {to} (less the forwarding fee)",
            cocoon_client::amount::with_unit(amount)
        ),
        Operation::Close { refund_to } => {
            format!("closing: what was above the stake went to {refund_to}")
        }
        Operation::Refund => "refunded".to_string(),
    };
    Ok(format!("{done}\n{}", outcome.describe()))
}

fn hex_key(text: &str) -> Result<PublicKey, String> {
    cocoon_client::escrow::guest_key(Some(text.trim())).map_err(|e| format!("--guest-key: {e}"))
}

async fn run_balance(args: BalanceArgs) -> Result<String, String> {
    let context = context(&args.owner, true).await?;
    let escrow = escrow_of(&context)?;
    let mut keys: Vec<PublicKey> = Vec::new();
    if let Some(key) = context.terms.as_ref().and_then(|t| t.guest_key) {
        keys.push(key);
    }
    for text in &args.guest_key {
        let key = hex_key(text)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let balance = onchain::balance(
        &context.chain,
        &context.key,
        &context.wallet,
        &context.network,
        &escrow,
        &keys,
        args.spend_cap,
    )
    .await?;
    let balance = match context
        .terms
        .as_ref()
        .and_then(|t| t.guest_account.as_ref())
    {
        Some(account) => balance.with_guest_account(account),
        None => balance,
    };
    Ok(if args.json {
        balance.to_json().to_string()
    } else {
        balance.to_text()
    })
}

pub fn finish(result: Result<String, String>) -> ExitCode {
    match result {
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

pub async fn escrow(command: EscrowCommand) -> ExitCode {
    finish(run_escrow(command).await)
}

pub async fn balance(args: BalanceArgs) -> ExitCode {
    finish(run_balance(args).await)
}
