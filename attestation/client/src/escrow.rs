//! The client's side of escrow billing (`billing/PROTOCOL.md`): which escrow pays a guest,
//! the authorization that lets that guest's key charge it, and the owner's operations.
//!
//! Why the client derives everything itself: the escrow's address is a function of the
//! contract code, the owner key (the account key) and two values of the guest's *measured*
//! config (close delay and prices). The guest derives the same address from the same
//! inputs, so the operator cannot point a client's money at another contract, and a guest
//! with other prices simply has another escrow. The client takes those inputs only from a
//! config whose SHA-384 the verified evidence attests ([`crate::config::fetch_config`]), and
//! authorizes only the receipt key that evidence binds: a key the operator made outside
//! the TEE can never charge it.
//!
//! An authorization caps the guest key's cumulative charge and expires; the proxy signs a
//! fresh one per guest key before the old one nears expiry ([`Authorizer`]).

use std::collections::HashMap;
use std::sync::Mutex;

use cocoon_attestation::account::{AccountId, AccountKey};
use cocoon_billing::layout::{self, Authorization, Prices, PublicKey, SignedAuthorization};
use tycho_types::cell::Cell;
use tycho_types::models::{StateInit, StdAddr};

use crate::amount::Amount;
use crate::config::{BillingTerms, ConfigPrices};

/// What can go wrong on the client's side of escrow billing.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// The guest derives escrows with contract code other than this client's.
    #[error(
        "the guest derives escrow addresses with contract code {guest}, this client with \
         {client}: they would name different escrows (update cocoon-client, or the guest \
         runs code you have not reviewed)"
    )]
    CodeMismatch { guest: String, client: String },
    /// The guest's evidence binds no receipt key, so there is nothing to authorize.
    #[error("the guest's evidence binds no receipt key: it cannot be authorized to charge")]
    NoGuestKey,
    /// A malformed key, address or amount.
    #[error("{0}")]
    Invalid(String),
    /// A cell could not be built or parsed.
    #[error("{0}")]
    Layout(#[from] cocoon_billing::Error),
}

/// The escrow contract code escrows are derived with: the compiled contract
/// (`billing/contracts/build/escrow.boc`) that `cocoon-billing` embeds.
pub fn escrow_code() -> Cell {
    cocoon_billing::escrow_code()
}

/// The contract's view of a config's price table.
pub fn contract_prices(prices: &ConfigPrices) -> Prices {
    Prices {
        prompt_per_million: prices.prompt_per_million,
        cached_per_million: prices.cached_prompt_per_million,
        completion_per_million: prices.completion_per_million,
    }
}

/// What an escrow's address is derived from: its code, owner, close delay and prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowTerms {
    pub code: Cell,
    pub owner: PublicKey,
    pub close_delay: u32,
    pub prices: Prices,
}

impl EscrowTerms {
    /// The escrow `owner` pays a guest with these billing terms from. The guest's code
    /// hash must be `code`'s: otherwise the guest derives another address.
    pub fn for_guest(
        code: &Cell,
        owner: &AccountId,
        terms: &BillingTerms,
    ) -> Result<Self, EscrowError> {
        let client = hex::encode(code.repr_hash().as_slice());
        if !terms.escrow_code_hash.eq_ignore_ascii_case(&client) {
            return Err(EscrowError::CodeMismatch {
                guest: terms.escrow_code_hash.clone(),
                client,
            });
        }
        Ok(Self {
            code: code.clone(),
            owner: owner.0,
            close_delay: terms.close_delay_secs,
            prices: contract_prices(&terms.prices),
        })
    }

    /// The escrow's address (workchain 0).
    pub fn address(&self) -> Result<StdAddr, EscrowError> {
        Ok(layout::escrow_address(
            &self.code,
            &self.owner,
            self.close_delay,
            &self.prices,
        )?)
    }

    /// The StateInit a deploy carries (its hash is [`EscrowTerms::address`]).
    pub fn state_init(&self) -> Result<StateInit, EscrowError> {
        let data = layout::EscrowData::initial(self.owner, self.close_delay, self.prices);
        Ok(layout::escrow_state_init(&self.code, &data)?)
    }
}

/// The guest's receipt key (hex in the verified evidence) as the layouts store it.
pub fn guest_key(receipt_key: Option<&str>) -> Result<PublicKey, EscrowError> {
    let hex_key = receipt_key.ok_or(EscrowError::NoGuestKey)?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut key).map_err(|e| {
        EscrowError::Invalid(format!(
            "the guest's receipt key '{hex_key}' is not 32 bytes of hex: {e}"
        ))
    })?;
    Ok(key)
}

/// The owner's authorization of `guest_key` to charge `escrow` up to `cap` (cumulative)
/// until `expires_at` (Unix seconds).
pub fn sign_authorization(
    owner: &AccountKey,
    escrow: &StdAddr,
    guest_key: PublicKey,
    cap: Amount,
    expires_at: u32,
) -> Result<SignedAuthorization, EscrowError> {
    Ok(Authorization {
        escrow: escrow.clone(),
        guest_key,
        cap: cap.nano(),
        expires_at,
    }
    .sign(owner.key_pair())?)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An authorization made within this long of expiry is renewed: the guest wants at least
/// 60 s left on every request, and a stream may run for minutes.
pub const RENEW_BEFORE_SECS: u64 = 600;

/// What the proxy sends to one guest: the header value, and when it stops being good.
#[derive(Debug, Clone)]
struct Signed {
    header: String,
    expires_at: u64,
}

/// Signs authorizations for the proxy, one per guest key, and reuses each until it nears
/// expiry (so a guest sees one authorization per period, not one per connection).
pub struct Authorizer {
    pub cap: Amount,
    /// Lifetime of a new authorization.
    pub ttl_secs: u64,
    signed: Mutex<HashMap<(StdAddr, PublicKey), Signed>>,
}

impl Authorizer {
    pub fn new(cap: Amount, ttl_secs: u64) -> Self {
        Self {
            cap,
            ttl_secs,
            signed: Mutex::new(HashMap::new()),
        }
    }

    /// The `x-cocoon-escrow-authorization` value for `guest_key` at `escrow`, at Unix time
    /// `now`: the one signed before while it has more than [`RENEW_BEFORE_SECS`] left,
    /// else a fresh one.
    pub fn header(
        &self,
        owner: &AccountKey,
        escrow: &StdAddr,
        guest_key: PublicKey,
        now: u64,
    ) -> Result<String, EscrowError> {
        let mut signed = self
            .signed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = (escrow.clone(), guest_key);
        if let Some(held) = signed.get(&slot) {
            if held.expires_at > now + RENEW_BEFORE_SECS.min(self.ttl_secs / 2) {
                return Ok(held.header.clone());
            }
        }
        let expires_at = u32::try_from(now.saturating_add(self.ttl_secs)).map_err(|_| {
            EscrowError::Invalid(format!(
                "an authorization {} s from now is past what the contract's 32-bit time holds",
                self.ttl_secs
            ))
        })?;
        let header = sign_authorization(owner, escrow, guest_key, self.cap, expires_at)?
            .to_header_value()?;
        signed.insert(
            slot,
            Signed {
                header: header.clone(),
                expires_at: u64::from(expires_at),
            },
        );
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_billing::layout::CellLayout as _;
    use tycho_types::cell::{CellBuilder, HashBytes};

    /// Stands in for the contract code: derivation only hashes it.
    fn code() -> Cell {
        let mut b = CellBuilder::new();
        b.store_u32(0xc0de).unwrap();
        b.build().unwrap()
    }

    fn owner() -> AccountKey {
        AccountKey::from_seed(&[3; 32]).unwrap()
    }

    fn config_terms(code_hash: &str) -> BillingTerms {
        let mut config: serde_json::Value =
            serde_json::from_str(crate::config::tests::BILLING_CONFIG).unwrap();
        config["billing"]["escrow_code_hash"] = code_hash.into();
        BillingTerms::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn billing_escrow_address_is_the_guests_derivation_of_the_config() {
        let code = code();
        let key = owner();
        let hash = hex::encode(code.repr_hash().as_slice());
        let terms = EscrowTerms::for_guest(&code, &key.id(), &config_terms(&hash)).unwrap();
        // What the guest computes from the same config (guest/src/escrow.rs): the
        // layout's derivation with the config's close delay and its prices, the cached
        // price mapped to the contract's `cached_per_million`.
        let guest = layout::escrow_address(
            &code,
            &key.id().0,
            23,
            &Prices {
                prompt_per_million: 8,
                cached_per_million: 9,
                completion_per_million: 10,
            },
        )
        .unwrap();
        assert_eq!(terms.address().unwrap(), guest);
        // The StateInit a deploy carries hashes to that address.
        let init = layout::state_init_address(&terms.state_init().unwrap()).unwrap();
        assert_eq!(init, guest);
        // Another owner, close delay or price: another escrow.
        let other = AccountKey::from_seed(&[4; 32]).unwrap();
        let theirs = EscrowTerms::for_guest(&code, &other.id(), &config_terms(&hash)).unwrap();
        assert_ne!(theirs.address().unwrap(), guest);
        let mut slower = terms.clone();
        slower.close_delay += 1;
        assert_ne!(slower.address().unwrap(), guest);
        let mut dearer = terms;
        dearer.prices.cached_per_million += 1;
        assert_ne!(dearer.address().unwrap(), guest);
        // A guest on other contract code derives other addresses: refused, not guessed.
        let err = EscrowTerms::for_guest(&code, &key.id(), &config_terms("ab")).unwrap_err();
        assert!(err.to_string().contains("contract code ab"), "{err}");
    }

    #[test]
    fn billing_authorization_verifies_and_binds_escrow_key_cap_and_expiry() {
        let key = owner();
        let escrow = StdAddr::new(0, HashBytes([7; 32]));
        let guest = [9u8; 32];
        let cap = Amount::parse("2.5").unwrap();
        let signed = sign_authorization(&key, &escrow, guest, cap, 1_900_000_000).unwrap();
        let header = signed.to_header_value().unwrap();
        let parsed = SignedAuthorization::from_header_value(&header).unwrap();
        parsed.verify(&key.id().0).unwrap();
        assert_eq!(
            parsed.authorization,
            Authorization {
                escrow: escrow.clone(),
                guest_key: guest,
                cap: 2_500_000_000,
                expires_at: 1_900_000_000
            }
        );
        // Not another owner's; and any changed field breaks the signature.
        let other = AccountKey::from_seed(&[4; 32]).unwrap();
        assert!(parsed.verify(&other.id().0).is_err());
        let changed = [
            Authorization {
                escrow: StdAddr::new(0, HashBytes([8; 32])),
                ..parsed.authorization.clone()
            },
            Authorization {
                guest_key: [1; 32],
                ..parsed.authorization.clone()
            },
            Authorization {
                cap: 2_500_000_001,
                ..parsed.authorization.clone()
            },
            Authorization {
                expires_at: 1_900_000_001,
                ..parsed.authorization.clone()
            },
        ];
        for authorization in changed {
            let forged = SignedAuthorization {
                signature: parsed.signature,
                authorization,
            };
            assert!(forged.verify(&key.id().0).is_err(), "{forged:?}");
        }
        // The header is base64url without padding of the cell's BoC.
        assert!(!header.contains(['=', '+', '/']));
        assert_eq!(
            layout::base64url_decode(&header, 4096).unwrap(),
            signed.to_boc().unwrap()
        );
    }

    #[test]
    fn billing_authorizer_reuses_until_near_expiry() {
        let key = owner();
        let escrow = StdAddr::new(0, HashBytes([7; 32]));
        let authorizer = Authorizer::new(Amount::parse("1").unwrap(), 86_400);
        let now = 1_800_000_000;
        let first = authorizer.header(&key, &escrow, [1; 32], now).unwrap();
        assert_eq!(
            authorizer
                .header(&key, &escrow, [1; 32], now + 3600)
                .unwrap(),
            first
        );
        let other_guest = authorizer.header(&key, &escrow, [2; 32], now).unwrap();
        assert_ne!(other_guest, first);
        // Within RENEW_BEFORE_SECS of expiry: a new one that expires later.
        let renewed = authorizer
            .header(&key, &escrow, [1; 32], now + 86_400 - 60)
            .unwrap();
        assert_ne!(renewed, first);
        let parsed = SignedAuthorization::from_header_value(&renewed).unwrap();
        assert_eq!(
            u64::from(parsed.authorization.expires_at),
            now + 86_400 - 60 + 86_400
        );
        assert_eq!(parsed.authorization.cap, 1_000_000_000);
        // Past 2106 the contract's 32-bit clock ends: refused, not wrapped.
        let long = Authorizer::new(Amount::ZERO, u64::from(u32::MAX));
        assert!(long.header(&key, &escrow, [1; 32], now).is_err());
    }
}
