//! `--registry ADDRESS`: a publisher's on-chain registry (`billing/REGISTRY.md`) as a
//! source of reference values, beside `--manifest` and `--policy`.
//!
//! A signed manifest pins what one release may run and is a file the client must be
//! handed; a registry is one address whose current state anyone reads, so a publisher
//! withdraws a value (a vulnerable image, a retired model, an old price table) for every
//! client at once. With `--registry`, a guest is accepted only when every value its
//! verified evidence and attested config name is registered there *now*:
//!
//! - the image (`cocoon_billing::registry::tdx_image_value`, `snp_image_value`): for TDX,
//!   `SHA-256("cocoon/registry/image/tdx/v1\0" ‖ MRTD ‖ RTMR0 ‖ RTMR1
//!   ‖ RTMR2)` (the 48-byte registers, raw), for SEV-SNP `SHA-256("cocoon/registry/image/
//!   sev-snp/v1\0" ‖ MEASUREMENT)`: exactly the registers a manifest pins for that TEE
//!   (firmware, kernel, command line with the dm-verity roots), computed from evidence that
//!   verified, so a registry value is the manifest's reference values in 32 bytes. RTMR3
//!   and HOST_DATA are left out: they carry the runtime config, which the next values
//!   cover;
//! - the model: `model.sha256` of the attested config (kind `model-sha256`) and, when the
//!   config has one, `model.verity_root` (kind `model-verity-root`);
//! - the prices: the SHA-256 of the canonical price table (`prices` as the guest
//!   serializes it, the `price_table_sha256` every receipt names; kind `price-table`).
//!
//! The config is the document served at `GET /v1/attestation/config` whose SHA-384 the
//! evidence attests ([`crate::session`] fetches and checks it before calling
//! [`RegistrySource::check`]). A refusal names the registry and each missing value, and
//! whether it was never registered or removed (and when). Positive answers are cached for
//! [`CACHE_SECS`] so a proxy opening a session per connection does not ask the chain each
//! time; a removal therefore takes effect within that long.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_attestation::unix_time::format_time;
use cocoon_attestation::{Error, Verified};
use cocoon_billing::chain::{friendly_address, Chain};
use cocoon_billing::registry::{
    read_entry, read_registry, snp_image_value, tdx_image_value, EntryKind, EntryStatus,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use tycho_types::models::StdAddr;

/// Largest config document accepted (`GET /v1/attestation/config`).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// How long a value seen registered is trusted without asking the chain again.
pub const CACHE_SECS: u64 = 60;

/// One value a guest must have registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequiredValue {
    /// Its kind, as `cocoon-client registry add --kind` takes it.
    #[serde(serialize_with = "kind_name")]
    pub kind: EntryKind,
    /// The value, hex.
    #[serde(with = "hex_bytes")]
    pub value: [u8; 32],
    /// What it is, for messages (`image (tdx: MRTD, RTMR0-2)`, `model "id" SHA-256`, …).
    pub what: String,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(value))
    }
}

fn kind_name<S: serde::Serializer>(kind: &EntryKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "registry reference value",
        detail,
    }
}

fn register(measurements: &BTreeMap<&'static str, String>, name: &str) -> Result<[u8; 48], Error> {
    let text = measurements
        .get(name)
        .ok_or_else(|| malformed(format!("the evidence has no {name}")))?;
    let bytes = hex::decode(text).map_err(|e| malformed(format!("{name} is not hex: {e}")))?;
    <[u8; 48]>::try_from(bytes.as_slice())
        .map_err(|_| malformed(format!("{name} is {} bytes, not 48", bytes.len())))
}

/// The image value of verified evidence (`tee` `tdx` or `sev-snp`, and its measurements
/// as [`Verified::measurements`] holds them): `cocoon_billing::registry`'s
/// `tdx_image_value` or `snp_image_value`.
pub fn image_value(
    tee: &str,
    measurements: &BTreeMap<&'static str, String>,
) -> Result<RequiredValue, Error> {
    let (kind, value, what) = match tee {
        "tdx" => {
            let mrtd = register(measurements, "mrtd")?;
            let rtmr0 = register(measurements, "rtmr0")?;
            let rtmr1 = register(measurements, "rtmr1")?;
            let rtmr2 = register(measurements, "rtmr2")?;
            (
                EntryKind::ImageTdx,
                tdx_image_value(&mrtd, [&rtmr0, &rtmr1, &rtmr2]),
                "image (tdx: MRTD, RTMR0-2)",
            )
        }
        "sev-snp" => (
            EntryKind::ImageSevSnp,
            snp_image_value(&register(measurements, "measurement")?),
            "image (sev-snp: MEASUREMENT)",
        ),
        other => return Err(malformed(format!("no image value for TEE '{other}'"))),
    };
    Ok(RequiredValue {
        kind,
        value,
        what: what.to_string(),
    })
}

/// The guest's price table in its canonical form (the guest's `PriceTable`: these fields,
/// this order, compact JSON), whose SHA-256 receipts name.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanonicalPrices {
    currency: String,
    prompt_per_million: u64,
    cached_prompt_per_million: u64,
    completion_per_million: u64,
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], Error> {
    let bytes = hex::decode(text).map_err(|e| malformed(format!("{what} is not hex: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| malformed(format!("{what} is {} bytes, not 32", bytes.len())))
}

/// The values an attested config names: the model's SHA-256 (and dm-verity root, if
/// any) and the price table's SHA-256.
pub fn config_values(config: &serde_json::Value) -> Result<Vec<RequiredValue>, Error> {
    let model = &config["model"];
    let id = model["id"].as_str().unwrap_or("?");
    let sha256 = model["sha256"]
        .as_str()
        .ok_or_else(|| malformed("the config has no model.sha256".into()))?;
    let mut values = vec![RequiredValue {
        kind: EntryKind::ModelSha256,
        value: hex32(sha256, "model.sha256")?,
        what: format!("model \"{id}\" SHA-256"),
    }];
    if let Some(root) = model["verity_root"].as_str() {
        values.push(RequiredValue {
            kind: EntryKind::ModelVerityRoot,
            value: hex32(root, "model.verity_root")?,
            what: format!("model \"{id}\" dm-verity root"),
        });
    }
    let prices: CanonicalPrices = serde_json::from_value(config["prices"].clone())
        .map_err(|e| malformed(format!("the config's prices: {e}")))?;
    let canonical =
        serde_json::to_vec(&prices).map_err(|e| malformed(format!("the price table: {e}")))?;
    values.push(RequiredValue {
        kind: EntryKind::PriceTable,
        value: Sha256::digest(&canonical).into(),
        what: format!(
            "price table ({} {}/{}/{} per million prompt/cached/completion tokens)",
            prices.currency,
            prices.prompt_per_million,
            prices.cached_prompt_per_million,
            prices.completion_per_million
        ),
    });
    Ok(values)
}

/// Everything a verified guest must have registered: its image, then its config's values.
pub fn required_values(
    verified: &Verified,
    config: &serde_json::Value,
) -> Result<Vec<RequiredValue>, Error> {
    let mut values = vec![image_value(verified.tee, &verified.measurements)?];
    values.extend(config_values(config)?);
    Ok(values)
}

/// The config document served by a guest, checked against the attested digest
/// (`attested`, hex SHA-384), parsed.
pub fn attested_config(attested: Option<&str>, served: &[u8]) -> Result<serde_json::Value, Error> {
    let attested = attested.ok_or_else(|| {
        Error::Rejected(
            "the guest's evidence attests no config digest, so its config cannot be checked".into(),
        )
    })?;
    let digest = hex::encode(Sha384::digest(served));
    if !digest.eq_ignore_ascii_case(attested) {
        return Err(Error::Rejected(format!(
            "the served config document hashes to {digest}, not to the attested {attested}"
        )));
    }
    serde_json::from_slice(served).map_err(|e| Error::Malformed {
        what: "guest config",
        detail: e.to_string(),
    })
}

/// A registry the client reads reference values from.
pub struct RegistrySource {
    address: StdAddr,
    chain: Arc<dyn Chain>,
    /// Values seen registered, and when.
    seen: Mutex<HashMap<(EntryKind, [u8; 32]), Instant>>,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("address", &self.address.to_string())
            .finish_non_exhaustive()
    }
}

impl RegistrySource {
    /// The registry at `address`, read through `chain`.
    pub fn new(address: StdAddr, chain: Arc<dyn Chain>) -> Self {
        Self {
            address,
            chain,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The registry's address.
    pub fn address(&self) -> &StdAddr {
        &self.address
    }

    /// How messages name it (user-friendly and raw).
    pub fn name(&self) -> String {
        format!(
            "registry {} ({})",
            friendly_address(&self.address),
            self.address
        )
    }

    fn unreachable(&self, e: cocoon_billing::Error) -> Error {
        Error::Unreachable(self.name(), e.to_string())
    }

    /// Checks that every value of `required` is registered now; the refusal names the
    /// registry and every value that is not (never registered, or removed and when).
    pub async fn check(&self, required: &[RequiredValue]) -> Result<(), Error> {
        let fresh = Duration::from_secs(CACHE_SECS);
        let mut missing = Vec::new();
        let mut deployed_checked = false;
        for value in required {
            let key = (value.kind, value.value);
            let cached = self
                .seen
                .lock()
                .ok()
                .and_then(|seen| seen.get(&key).copied())
                .is_some_and(|at| at.elapsed() < fresh);
            if cached {
                continue;
            }
            if !deployed_checked {
                let state = read_registry(self.chain.as_ref(), &self.address)
                    .await
                    .map_err(|e| self.unreachable(e))?;
                if state.is_none() {
                    return Err(Error::Rejected(format!(
                        "{}: no registry contract is deployed there, so nothing is registered",
                        self.name()
                    )));
                }
                deployed_checked = true;
            }
            let status = read_entry(self.chain.as_ref(), &self.address, value.kind, &value.value)
                .await
                .map_err(|e| self.unreachable(e))?;
            match status {
                EntryStatus::Registered { .. } => {
                    if let Ok(mut seen) = self.seen.lock() {
                        seen.insert(key, Instant::now());
                    }
                }
                EntryStatus::NeverRegistered => missing.push(format!(
                    "{} {} {} is not registered",
                    value.what,
                    value.kind,
                    hex::encode(value.value)
                )),
                EntryStatus::Removed { removed_at, .. } => missing.push(format!(
                    "{} {} {} was removed at {}",
                    value.what,
                    value.kind,
                    hex::encode(value.value),
                    format_time(i64::from(removed_at))
                )),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Rejected(format!(
                "{} refuses this guest: {}",
                self.name(),
                missing.join("; ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prices: &str, verity: &str) -> serde_json::Value {
        serde_json::from_str(&format!(
            r#"{{"model":{{"id":"m","sha256":"{}","verity_root":{verity}}},"prices":{prices}}}"#,
            "ab".repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn onchain_registry_price_value_is_the_receipts_price_table_sha256() {
        // The guest's canonical bytes (guest/src/config.rs: declaration order, compact),
        // whatever order the served JSON has.
        let canonical = br#"{"currency":"nanoton","prompt_per_million":8,"cached_prompt_per_million":9,"completion_per_million":10}"#;
        let served = r#"{"completion_per_million":10,"currency":"nanoton","cached_prompt_per_million":9,"prompt_per_million":8}"#;
        let values = config_values(&config(served, "null")).unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].kind, EntryKind::ModelSha256);
        assert_eq!(values[0].value, [0xab; 32]);
        assert_eq!(values[1].kind, EntryKind::PriceTable);
        assert_eq!(values[1].value, <[u8; 32]>::from(Sha256::digest(canonical)));
        let with_root = config(served, &format!("\"{}\"", "cd".repeat(32)));
        let values = config_values(&with_root).unwrap();
        assert_eq!(values[1].kind, EntryKind::ModelVerityRoot);
        assert_eq!(values[1].value, [0xcd; 32]);
        assert!(config_values(&config(r#"{"currency":"nanoton"}"#, "null")).is_err());
    }

    #[test]
    fn onchain_registry_image_value_covers_the_pinned_registers_only() {
        let mut m = BTreeMap::from([
            ("mrtd", "11".repeat(48)),
            ("rtmr0", "22".repeat(48)),
            ("rtmr1", "33".repeat(48)),
            ("rtmr2", "44".repeat(48)),
            ("rtmr3", "55".repeat(48)),
        ]);
        let a = image_value("tdx", &m).unwrap();
        assert_eq!(a.kind, EntryKind::ImageTdx);
        m.insert("rtmr3", "66".repeat(48));
        assert_eq!(image_value("tdx", &m).unwrap(), a, "RTMR3 is the config's");
        m.insert("rtmr2", "77".repeat(48));
        assert_ne!(image_value("tdx", &m).unwrap().value, a.value);
        let snp = BTreeMap::from([("measurement", "11".repeat(48))]);
        let s = image_value("sev-snp", &snp).unwrap();
        assert_eq!(s.kind, EntryKind::ImageSevSnp);
        assert_ne!(s.value, a.value);
        assert!(image_value("sev-snp", &m).is_err());
    }

    #[test]
    fn onchain_registry_served_config_must_hash_to_the_attested_digest() {
        let doc = br#"{"model":{}}"#;
        let digest = hex::encode(Sha384::digest(doc));
        assert!(attested_config(Some(&digest), doc).is_ok());
        assert!(attested_config(Some(&digest), br#"{"model":1}"#).is_err());
        assert!(attested_config(None, doc).is_err());
    }
}
