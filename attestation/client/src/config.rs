//! The guest's measured config, fetched over a verified session and checked against the
//! attested digest, and the billing terms a client reads from it.
//!
//! The evidence attests only the config's SHA-384 (`Verified::config_digest`); the
//! document itself is served at `GET /v1/attestation/config`, byte-exact. Whatever a
//! client decides from it (which escrow to fund, at which prices, for how long its money
//! stays locked after a close request) is worth only as much as that digest check, so
//! `cocoon-verify endpoint`, `cocoon-client escrow … --upstream` and the proxy all take the
//! config from [`fetch_config`]. (`cocoon-client escrow … --terms-from FILE` reads a saved
//! document instead, for offline use: the user vouches for that file.)

use cocoon_attestation::Error;
use serde::Deserialize;

use crate::registry::{attested_config, MAX_CONFIG_BYTES};
use crate::session::{AttestedConnection, Endpoint};

/// A config document whose SHA-384 is the attested config digest.
#[derive(Debug, Clone)]
pub struct ServedConfig {
    /// The bytes as served (what the digest covers).
    pub bytes: Vec<u8>,
    pub json: serde_json::Value,
}

/// `GET /v1/attestation/config` over the verified session; the document's SHA-384 must be
/// the digest the session's certificate evidence attests.
pub async fn fetch_config(
    connection: &mut AttestedConnection,
    endpoint: &Endpoint,
) -> Result<ServedConfig, Error> {
    let attested = connection.verified.certificate.config_digest.clone();
    let (status, body) = connection
        .get(endpoint, "/v1/attestation/config", &[], MAX_CONFIG_BYTES)
        .await?;
    if !status.is_success() {
        return Err(Error::Rejected(format!(
            "GET /v1/attestation/config answered {status}"
        )));
    }
    let json = attested_config(attested.as_deref(), &body)?;
    Ok(ServedConfig {
        bytes: body.to_vec(),
        json,
    })
}

/// The unit the guest's prices must be in for escrow billing.
pub const PRICE_CURRENCY: &str = "nanoton";

/// The guest's price table (`prices` of the config), per million tokens, nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ConfigPrices {
    pub prompt_per_million: u64,
    pub cached_prompt_per_million: u64,
    pub completion_per_million: u64,
}

/// What a client needs from a guest's config to pay it through an escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingTerms {
    /// `local`, `testnet` or `mainnet`.
    pub ton_network: String,
    /// Where vouchers pay (as the config writes it).
    pub payout_address: String,
    /// Part of the escrow's address: how long a closing escrow keeps the stake.
    pub close_delay_secs: u32,
    /// Hex representation hash of the contract code the guest derives escrows with.
    pub escrow_code_hash: String,
    pub prices: ConfigPrices,
}

#[derive(Deserialize)]
struct PricesSection {
    currency: String,
    #[serde(flatten)]
    prices: ConfigPrices,
}

#[derive(Deserialize)]
struct BillingSection {
    ton_network: String,
    payout_address: Option<String>,
    close_delay_secs: u32,
    escrow_code_hash: String,
}

fn bad_config(detail: String) -> Error {
    Error::Malformed {
        what: "guest config",
        detail,
    }
}

impl BillingTerms {
    /// The terms of a config document; `Ok(None)` when the guest does not bill through
    /// escrows (no `billing` section, or no `payout_address`: receipts only).
    pub fn from_config(config: &serde_json::Value) -> Result<Option<Self>, Error> {
        let Some(billing) = config.get("billing").filter(|b| !b.is_null()) else {
            return Ok(None);
        };
        let billing = BillingSection::deserialize(billing)
            .map_err(|e| bad_config(format!("'billing': {e}")))?;
        let Some(payout_address) = billing.payout_address else {
            return Ok(None);
        };
        let prices = config
            .get("prices")
            .ok_or_else(|| bad_config("a billing guest's config has no 'prices'".into()))?;
        let prices =
            PricesSection::deserialize(prices).map_err(|e| bad_config(format!("'prices': {e}")))?;
        if prices.currency != PRICE_CURRENCY {
            return Err(bad_config(format!(
                "prices are in '{}'; escrow billing needs '{PRICE_CURRENCY}'",
                prices.currency
            )));
        }
        Ok(Some(Self {
            ton_network: billing.ton_network,
            payout_address,
            close_delay_secs: billing.close_delay_secs,
            escrow_code_hash: billing.escrow_code_hash,
            prices: prices.prices,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A guest config as the guest serves it (`guest/src/config.rs`), with billing on.
    pub(crate) const BILLING_CONFIG: &str = r#"{"version":1,"model":{"id":"m","format":"gguf","sha256":"00","verity_root":null},"prices":{"currency":"nanoton","prompt_per_million":8,"cached_prompt_per_million":9,"completion_per_million":10},"billing":{"ton_network":"local","payout_address":"0:1111111111111111111111111111111111111111111111111111111111111111","close_delay_secs":23,"state_wait_secs":24,"escrow_code_hash":"cc"},"accounts":{"allow_anonymous":false,"max_accounts":22}}"#;

    #[test]
    fn billing_terms_come_from_the_config() {
        let config: serde_json::Value = serde_json::from_str(BILLING_CONFIG).unwrap();
        let terms = BillingTerms::from_config(&config).unwrap().unwrap();
        assert_eq!(terms.close_delay_secs, 23);
        assert_eq!(terms.ton_network, "local");
        assert_eq!(terms.escrow_code_hash, "cc");
        assert_eq!(
            terms.prices,
            ConfigPrices {
                prompt_per_million: 8,
                cached_prompt_per_million: 9,
                completion_per_million: 10
            }
        );

        // No payout address, or no billing section: receipts only.
        let mut off = config.clone();
        off["billing"]["payout_address"] = serde_json::Value::Null;
        assert_eq!(BillingTerms::from_config(&off).unwrap(), None);
        let mut none = config.clone();
        none.as_object_mut().unwrap().remove("billing");
        assert_eq!(BillingTerms::from_config(&none).unwrap(), None);

        // Another currency, or a malformed section, is an error, not "no billing".
        let mut usd = config.clone();
        usd["prices"]["currency"] = "usd".into();
        let err = BillingTerms::from_config(&usd).unwrap_err().to_string();
        assert!(err.contains("'usd'"), "{err}");
        let mut bad = config.clone();
        bad["billing"]["close_delay_secs"] = "soon".into();
        let err = BillingTerms::from_config(&bad).unwrap_err().to_string();
        assert!(err.contains("'billing'"), "{err}");
        let mut negative = config;
        negative["prices"]["prompt_per_million"] = (-1).into();
        assert!(BillingTerms::from_config(&negative).is_err());
    }
}
