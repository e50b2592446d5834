//! The flags a daemon serves the admin API with, for it to flatten into its own
//! subcommand. They live here because the refusals in [`super::auth`] name them: the
//! error that says "pass --admin-allow-unauthenticated-loopback" must match the flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use super::AdminAuth;
use crate::{Error, Result};

/// Where and how to serve the admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminListenArgs {
    /// Serve the admin API (status, guests, usage, receipts, drain, metrics) on this
    /// address; keep it off the public network.
    #[arg(long, default_value = "127.0.0.1:9444", value_name = "ADDR")]
    pub admin_listen: SocketAddr,
    /// The admin API's bearer token, in a file (hard to guess, 32 characters at least:
    /// `openssl rand -hex 32 > FILE`). Needed on any address but loopback.
    #[arg(long, env = "COCOON_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin API without a token, on a loopback address only: every local
    /// user and process may then drain guests and read receipts and usage.
    #[arg(long)]
    pub admin_allow_unauthenticated_loopback: bool,
}

impl AdminListenArgs {
    /// The authentication these flags ask for (refusing what [`AdminAuth::new`] refuses),
    /// and then the listener.
    pub async fn bind(&self) -> Result<(TcpListener, AdminAuth)> {
        let auth = AdminAuth::new(
            self.admin_listen,
            self.admin_token_file.as_deref(),
            self.admin_allow_unauthenticated_loopback,
        )?;
        let listener = TcpListener::bind(self.admin_listen)
            .await
            .map_err(Error::listen(self.admin_listen))?;
        Ok((listener, auth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Daemon {
        #[command(flatten)]
        admin: AdminListenArgs,
    }

    fn parse(args: &[&str]) -> AdminListenArgs {
        Daemon::try_parse_from([&["daemon"], args].concat())
            .unwrap()
            .admin
    }

    #[tokio::test]
    async fn the_refusals_name_these_flags() {
        let loopback = parse(&["--admin-listen", "127.0.0.1:0"]);
        let err = loopback.bind().await.unwrap_err().to_string();
        assert!(
            err.contains("--admin-allow-unauthenticated-loopback"),
            "{err}"
        );
        assert!(err.contains("--admin-token-file"), "{err}");

        let allowed = parse(&[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-allow-unauthenticated-loopback",
        ]);
        let (listener, auth) = allowed.bind().await.unwrap();
        assert!(listener.local_addr().unwrap().ip().is_loopback());
        assert!(!auth.requires_token());

        let public = parse(&[
            "--admin-listen",
            "0.0.0.0:0",
            "--admin-allow-unauthenticated-loopback",
        ]);
        let err = public.bind().await.unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
    }

    #[test]
    fn defaults_to_loopback_with_no_token() {
        let args = Daemon::try_parse_from(["daemon"]).unwrap().admin;
        assert_eq!(args.admin_listen, "127.0.0.1:9444".parse().unwrap());
        assert!(!args.admin_allow_unauthenticated_loopback);
    }
}
