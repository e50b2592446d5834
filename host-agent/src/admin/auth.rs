//! Who may use the admin API: whoever presents the operator's bearer token.
//!
//! The token comes from a file (never the command line, where `ps` shows it) and must be
//! hard to guess ([`super::token`]). Only its SHA-256 is kept, and a presented token is
//! hashed and compared to it in constant time, so neither the comparison's timing nor
//! the length of a guess tells anything about the token.
//!
//! Serving without a token is refused, except on a loopback address when the operator
//! says so with a flag named for the risk (every local user and process may then drain
//! guests and read receipts); on any other address it is refused outright.

use std::net::SocketAddr;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::token::{check_strength, read_token_file};
use crate::{Error, Result};

/// The admin API's authentication: a token's SHA-256, or none (loopback, by choice).
#[derive(Clone)]
pub struct AdminAuth {
    sha256: Option<[u8; 32]>,
}

/// Why a request was not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A Bearer token that is not the admin token.
    Invalid,
}

impl AdminAuth {
    /// The authentication for an admin API on `listen`: the token in `token_file`
    /// (trimmed, refused when weak), or none, which is allowed only on a loopback address
    /// with `allow_unauthenticated_loopback`.
    pub fn new(
        listen: SocketAddr,
        token_file: Option<&Path>,
        allow_unauthenticated_loopback: bool,
    ) -> Result<AdminAuth> {
        if let Some(file) = token_file {
            let token = read_token_file(file)?;
            check_strength(&token).map_err(|message| Error::AdminToken {
                file: file.to_path_buf(),
                message,
            })?;
            return Ok(Self::from_token_digest(
                Sha256::digest(token.as_bytes()).into(),
            ));
        }
        let refuse = |message: &str| {
            Err(Error::AdminUnauthenticated {
                listen,
                message: message.to_string(),
            })
        };
        if !listen.ip().is_loopback() {
            return refuse(
                "not a loopback address, so it needs a token (--admin-token-file); \
                 it is never served without one there",
            );
        }
        if !allow_unauthenticated_loopback {
            return refuse(
                "no token (--admin-token-file); give one, or pass \
                 --admin-allow-unauthenticated-loopback to let every local user and \
                 process drain guests and read receipts",
            );
        }
        Ok(Self { sha256: None })
    }

    fn from_token_digest(sha256: [u8; 32]) -> Self {
        Self {
            sha256: Some(sha256),
        }
    }

    /// Whether requests need a token.
    pub fn requires_token(&self) -> bool {
        self.sha256.is_some()
    }

    /// Checks an `Authorization` header value (`Bearer <token>`, the scheme in any case).
    pub fn authorize(&self, authorization: Option<&[u8]>) -> std::result::Result<(), AuthFailure> {
        let Some(expected) = &self.sha256 else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|value| value.split_first_chunk::<7>())
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"Bearer "))
            .map(|(_, token)| token.trim_ascii())
            .filter(|token| !token.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.requires_token() {
            "required"
        } else {
            "none (loopback)"
        };
        f.debug_struct("AdminAuth").field("token", &token).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "c035cc8a9d7cbdafcf51c5ad9010f51845c77da18d5c65fe9686399e47237dcf";

    fn auth() -> AdminAuth {
        AdminAuth::from_token_digest(Sha256::digest(TOKEN.as_bytes()).into())
    }

    #[test]
    fn only_the_token_passes() {
        let auth = auth();
        let header = |v: &str| auth.authorize(Some(v.as_bytes()));
        assert_eq!(header(&format!("Bearer {TOKEN}")), Ok(()));
        assert_eq!(header(&format!("bearer  {TOKEN} ")), Ok(()));
        assert_eq!(
            header(&format!("Bearer {}", &TOKEN[1..])),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            header(&format!("Bearer {TOKEN}0")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(header(&format!("Basic {TOKEN}")), Err(AuthFailure::Missing));
        assert_eq!(header("Bearer "), Err(AuthFailure::Missing));
        assert_eq!(header(TOKEN), Err(AuthFailure::Missing));
        assert_eq!(auth.authorize(None), Err(AuthFailure::Missing));
    }

    #[test]
    fn debug_does_not_show_the_digest() {
        let shown = format!("{:?}", auth());
        assert_eq!(shown, r#"AdminAuth { token: "required" }"#);
    }
}
