//! The signed image manifest: the reference values a client checks a guest against.
//!
//! An operator cannot be trusted to say which measurements are good; the people who build
//! the image can. `cocoon-measure` (the image build) computes the TDX MRTD/RTMR0-2 and the
//! SEV-SNP launch digests of a release, lists the measured runtime configs that release
//! may run, and signs that list. A client then needs one public key, not a hand-written
//! policy, to decide whether an endpoint runs a published image.
//!
//! Format: a DSSE envelope (the signing envelope of in-toto and Sigstore) whose payload is
//! the JSON [`Manifest`] and whose payload type is [`PAYLOAD_TYPE`]; signatures are
//! Ed25519 over DSSE's pre-authentication encoding, so the bytes that were signed are the
//! bytes that are parsed, with no JSON canonicalisation. Public keys are written
//! `ed25519:<base64 of the 32 key bytes>`; private keys are PKCS#8 PEM, so
//! `openssl genpkey -algorithm ed25519` keys work too.
//!
//! A manifest only adds reference values to a [`Policy`]; TCB rules and the debug rule
//! stay with the policy (strict by default). Where both name the same register, that is
//! an error rather than a silent choice.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::Policy;
use crate::{Error, Result};

/// DSSE payload type of a version-1 manifest.
pub const PAYLOAD_TYPE: &str = "application/vnd.cocoon.manifest.v1+json";

/// The format version this crate reads and writes.
pub const MANIFEST_VERSION: u32 = 1;

/// TDX reference values of one image: the TD's build-time measurement and the boot
/// chain's runtime registers (firmware, kernel + command line, initrd). RTMR3 is not
/// here: it measures the runtime config, listed in [`Manifest::config_digests`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxReference {
    pub mrtd: String,
    pub rtmr0: String,
    pub rtmr1: String,
    pub rtmr2: String,
    /// TD_ATTRIBUTES the image is launched with (64-bit hex, e.g. `"0x10000000"`): the
    /// host chooses them and MRTD does not cover them. Absent: any without TUD bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub td_attributes: Option<String>,
    /// XFAM the image is launched with (64-bit hex). Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xfam: Option<String>,
}

/// SEV-SNP reference values: one launch digest per supported VM shape (the digest
/// depends on the vCPU count and type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpReference {
    pub measurements: Vec<String>,
    /// The TCB floor the publisher requires (replaces the verifier's per-product default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<crate::policy::MinSnpTcb>,
}

/// The reference values of one released image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; must be [`MANIFEST_VERSION`].
    pub version: u32,
    /// Human-readable release name, e.g. `cocoon-guest 0.1.0`.
    pub image: String,
    /// Release number, increasing with every release: a client that has seen release N
    /// refuses older manifests with `--min-release N` (no rollback to a withdrawn image).
    pub release: u64,
    /// Expiry, RFC 3339 (e.g. `2027-06-30T00:00:00Z`): verifiers refuse the manifest
    /// afterwards, so a withdrawn release stops being accepted without any revocation.
    pub not_after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sev_snp: Option<SnpReference>,
    /// SHA-384 digests of the measured runtime configs this release may run (model,
    /// sampling defaults, limits, prices, contract). Empty means "any".
    #[serde(default)]
    pub config_digests: Vec<String>,
    /// SHA-256 vTPM PCR reference values of this release, index (`"0"`..`"23"`) → the
    /// accepted values (hex, 32 bytes): the boot chain an SVSM's or a cloud's vTPM
    /// measures. Non-empty: clients require a vTPM quote with these values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vtpm_pcrs: std::collections::BTreeMap<String, Vec<String>>,
}

fn bad_manifest(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "manifest",
        detail: detail.into(),
    }
}

fn check_hex(name: &str, value: &str, len: usize) -> Result<()> {
    let bytes = hex::decode(value)
        .map_err(|e| bad_manifest(format!("{name}: '{value}' is not hex: {e}")))?;
    if bytes.len() != len {
        return Err(bad_manifest(format!(
            "{name}: '{value}' has {} bytes, expected {len}",
            bytes.len()
        )));
    }
    Ok(())
}

impl Manifest {
    /// Checks the version, hex lengths, and that the manifest pins at least one TEE.
    pub fn validate(&self) -> Result<()> {
        if self.version != MANIFEST_VERSION {
            return Err(bad_manifest(format!(
                "version {} is not supported (this verifier reads version {MANIFEST_VERSION})",
                self.version
            )));
        }
        self.not_after_unix()?;
        if self.tdx.is_none() && self.sev_snp.is_none() {
            return Err(bad_manifest(
                "names neither tdx nor sev_snp reference values: it would accept any image",
            ));
        }
        if let Some(t) = &self.tdx {
            for (name, v) in [
                ("tdx.mrtd", &t.mrtd),
                ("tdx.rtmr0", &t.rtmr0),
                ("tdx.rtmr1", &t.rtmr1),
                ("tdx.rtmr2", &t.rtmr2),
            ] {
                check_hex(name, v, 48)?;
            }
            for (name, v) in [
                ("tdx.td_attributes", &t.td_attributes),
                ("tdx.xfam", &t.xfam),
            ] {
                if let Some(v) = v {
                    crate::policy::parse_u64_hex(v)
                        .map_err(|e| bad_manifest(format!("{name}: {e}")))?;
                }
            }
        }
        if let Some(s) = &self.sev_snp {
            if s.measurements.is_empty() {
                return Err(bad_manifest("sev_snp.measurements is empty"));
            }
            for m in &s.measurements {
                check_hex("sev_snp.measurements", m, 48)?;
            }
        }
        for d in &self.config_digests {
            check_hex("config_digests", d, 48)?;
        }
        for (index, values) in &self.vtpm_pcrs {
            if index.parse::<u8>().ok().filter(|i| *i <= 23).is_none() {
                return Err(bad_manifest(format!(
                    "vtpm_pcrs: '{index}' is not a PCR index 0-23"
                )));
            }
            if values.is_empty() {
                return Err(bad_manifest(format!("vtpm_pcrs.{index} is empty")));
            }
            for v in values {
                check_hex(&format!("vtpm_pcrs.{index}"), v, 32)?;
            }
        }
        Ok(())
    }

    /// `not_after` as Unix seconds.
    pub fn not_after_unix(&self) -> Result<i64> {
        time::OffsetDateTime::parse(
            &self.not_after,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            bad_manifest(format!(
                "not_after '{}' is not an RFC 3339 time: {e}",
                self.not_after
            ))
        })
    }

    /// Refuses a manifest that has expired at `now` (Unix seconds) or whose release is
    /// below `min_release`.
    pub fn check_current(&self, now: i64, min_release: Option<u64>) -> Result<()> {
        let not_after = self.not_after_unix()?;
        if now > not_after {
            return Err(Error::Policy {
                rule: "manifest not_after",
                observed: format!(
                    "{} expired at {}",
                    self.image,
                    crate::unix_time::format_time(not_after)
                ),
                expected: format!("valid at {}", crate::unix_time::format_time(now)),
            });
        }
        if let Some(min) = min_release {
            if self.release < min {
                return Err(Error::Policy {
                    rule: "manifest release (--min-release)",
                    observed: format!("{} is release {}", self.image, self.release),
                    expected: format!(">= {min}"),
                });
            }
        }
        Ok(())
    }

    /// Adds this manifest's reference values to `policy`. A TEE the manifest does not
    /// describe is refused outright (an empty list would mean "any value"), and a
    /// register the policy already pins is an error.
    pub fn apply_to(&self, policy: &mut Policy) -> Result<()> {
        fn set(slot: &mut Vec<String>, name: &str, values: Vec<String>) -> Result<()> {
            if !slot.is_empty() {
                return Err(bad_manifest(format!(
                    "both the policy and the manifest set {name}; keep reference values in one of them"
                )));
            }
            *slot = values.into_iter().map(|v| v.to_ascii_lowercase()).collect();
            Ok(())
        }
        self.validate()?;
        match &self.tdx {
            Some(t) => {
                if let Some(a) = &t.td_attributes {
                    set(
                        &mut policy.tdx.td_attributes,
                        "tdx.td_attributes",
                        vec![a.clone()],
                    )?;
                }
                if let Some(x) = &t.xfam {
                    set(&mut policy.tdx.xfam, "tdx.xfam", vec![x.clone()])?;
                }
                set(&mut policy.tdx.mrtd, "tdx.mrtd", vec![t.mrtd.clone()])?;
                set(&mut policy.tdx.rtmr0, "tdx.rtmr0", vec![t.rtmr0.clone()])?;
                set(&mut policy.tdx.rtmr1, "tdx.rtmr1", vec![t.rtmr1.clone()])?;
                set(&mut policy.tdx.rtmr2, "tdx.rtmr2", vec![t.rtmr2.clone()])?;
            }
            None => policy.accepted_tees.retain(|t| t != "tdx"),
        }
        match &self.sev_snp {
            Some(s) => {
                set(
                    &mut policy.snp.measurement,
                    "snp.measurement",
                    s.measurements.clone(),
                )?;
                if let Some(min) = &s.min_tcb {
                    if policy.snp.min_tcb.is_some() {
                        return Err(bad_manifest(
                            "both the policy and the manifest set snp.min_tcb; keep it in one of them",
                        ));
                    }
                    policy.snp.min_tcb = Some(min.clone());
                }
            }
            None => policy.accepted_tees.retain(|t| t != "sev-snp"),
        }
        if !self.config_digests.is_empty() {
            set(
                &mut policy.config_digests,
                "config_digests",
                self.config_digests.clone(),
            )?;
        }
        for (index, values) in &self.vtpm_pcrs {
            let slot = policy.vtpm.pcrs.entry(index.clone()).or_default();
            set(slot, &format!("vtpm.pcrs.{index}"), values.clone())?;
            policy.vtpm.require = true;
        }
        Ok(())
    }

    /// The manifest as pretty JSON (the payload that gets signed).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| bad_manifest(format!("cannot encode: {e}")))
    }

    /// Signs the manifest into a DSSE envelope (pretty JSON, ready to publish).
    pub fn sign(&self, key: &ManifestSigningKey) -> Result<Vec<u8>> {
        self.validate()?;
        let payload = self.to_json()?;
        let signature = key.pair.sign(&pae(PAYLOAD_TYPE, &payload));
        let envelope = Envelope {
            payload_type: PAYLOAD_TYPE.into(),
            payload: B64.encode(&payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.public_key().key_id(),
                sig: B64.encode(signature.as_ref()),
            }],
        };
        let mut out = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| bad_manifest(format!("cannot encode envelope: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Opens a signed manifest: the envelope must parse, carry our payload type, and hold
    /// a valid signature by one of `trusted`; only then is the payload parsed.
    pub fn open(envelope: &[u8], trusted: &[ManifestPublicKey]) -> Result<Manifest> {
        let envelope: Envelope = serde_json::from_slice(envelope)
            .map_err(|e| bad_manifest(format!("not a DSSE envelope: {e}")))?;
        if envelope.payload_type != PAYLOAD_TYPE {
            return Err(bad_manifest(format!(
                "payloadType is '{}', expected '{PAYLOAD_TYPE}'",
                envelope.payload_type
            )));
        }
        let payload = B64
            .decode(envelope.payload.as_bytes())
            .map_err(|e| bad_manifest(format!("payload is not base64: {e}")))?;
        let message = pae(&envelope.payload_type, &payload);
        let signed_by_trusted = envelope.signatures.iter().any(|s| {
            let Ok(sig) = B64.decode(s.sig.as_bytes()) else {
                return false;
            };
            trusted.iter().any(|k| {
                UnparsedPublicKey::new(&ED25519, &k.0)
                    .verify(&message, &sig)
                    .is_ok()
            })
        });
        if !signed_by_trusted {
            let seen: Vec<&str> = envelope
                .signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect();
            let wanted: Vec<String> = trusted.iter().map(|k| k.key_id()).collect();
            return Err(Error::BadSignature(format!(
                "the manifest carries no valid signature by a trusted key (signatures from key \
                 ids [{}], trusted [{}])",
                seen.join(", "),
                wanted.join(", ")
            )));
        }
        Self::from_json(&payload)
    }

    /// Parses and validates an unsigned manifest (JSON). Only for the publisher's own
    /// input and for payloads whose signature already verified.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| bad_manifest(format!("payload: {e}")))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads and opens a signed manifest file.
    pub fn open_file(path: &Path, trusted: &[ManifestPublicKey]) -> Result<Manifest> {
        let bytes = std::fs::read(path)
            .map_err(|e| bad_manifest(format!("cannot read {}: {e}", path.display())))?;
        Self::open(&bytes, trusted).map_err(|e| bad_manifest(format!("{}: {e}", path.display())))
    }
}

/// DSSE's pre-authentication encoding: what the signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSignature {
    #[serde(default)]
    keyid: String,
    sig: String,
}

/// An Ed25519 public key that may sign manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPublicKey(pub [u8; 32]);

impl ManifestPublicKey {
    /// Parses `ed25519:<base64>`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |d: String| bad_manifest(format!("manifest key '{}': {d}", text.trim()));
        let b64 = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| bad("expected ed25519:<base64 of 32 bytes>".into()))?;
        let bytes = B64
            .decode(b64)
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32", b.len())))?;
        Ok(Self(key))
    }

    /// Parses a key given inline (`ed25519:...`) or as the path of a file holding it.
    pub fn from_arg(arg: &str) -> Result<Self> {
        if arg.trim().starts_with("ed25519:") {
            return Self::parse(arg);
        }
        let text = std::fs::read_to_string(arg)
            .map_err(|e| bad_manifest(format!("cannot read manifest key file {arg}: {e}")))?;
        Self::parse(&text)
    }

    /// Every key of a repeatable `--manifest-key` argument.
    pub fn from_args(args: &[String]) -> Result<Vec<Self>> {
        args.iter().map(|a| Self::from_arg(a)).collect()
    }

    /// First 8 bytes of SHA-256 of the key, hex: the DSSE `keyid` we write.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }
}

impl std::fmt::Display for ManifestPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0))
    }
}

/// The Ed25519 key that signs manifests (kept by whoever publishes images).
pub struct ManifestSigningKey {
    pair: Ed25519KeyPair,
}

impl ManifestSigningKey {
    /// A fresh key, returned with its PKCS#8 PEM encoding.
    pub fn generate() -> Result<(Self, String)> {
        let (pair, pem) = crate::pkcs8::generate("manifest")?;
        Ok((Self { pair }, pem))
    }

    /// Reads a PKCS#8 (v1 or v2) Ed25519 private key in DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        Ok(Self {
            pair: crate::pkcs8::from_der(der, "manifest")?,
        })
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        Ok(Self {
            pair: crate::pkcs8::from_pem(pem, "manifest")?,
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> ManifestPublicKey {
        ManifestPublicKey(crate::pkcs8::public_key(&self.pair))
    }
}

/// The policy a client enforces: a policy file (or the strict default) plus, when given,
/// a signed manifest's reference values. The opened manifest is returned too, for the
/// summary a client prints. The manifest must be unexpired at `now` (Unix seconds) and
/// at least release `min_release`.
pub fn load_policy(
    policy: Option<&Path>,
    manifest: Option<(&Path, &[ManifestPublicKey])>,
    now: i64,
    min_release: Option<u64>,
) -> Result<(Policy, Option<Manifest>)> {
    let mut out = policy
        .map(Policy::from_file)
        .transpose()?
        .unwrap_or_default();
    let Some((path, trusted)) = manifest else {
        return Ok((out, None));
    };
    if trusted.is_empty() {
        return Err(bad_manifest(
            "a manifest needs --manifest-key: the public key of whoever publishes the image",
        ));
    }
    let opened = Manifest::open_file(path, trusted)?;
    opened
        .check_current(now, min_release)
        .map_err(|e| bad_manifest(format!("{}: {e}", path.display())))?;
    opened.apply_to(&mut out)?;
    Ok((out, Some(opened)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: 1,
            image: "cocoon-guest test".into(),
            release: 7,
            not_after: "2030-01-01T00:00:00Z".into(),
            tdx: Some(TdxReference {
                mrtd: "11".repeat(48),
                rtmr0: "22".repeat(48),
                rtmr1: "33".repeat(48),
                rtmr2: "44".repeat(48),
                td_attributes: None,
                xfam: None,
            }),
            sev_snp: None,
            config_digests: vec!["55".repeat(48)],
            vtpm_pcrs: Default::default(),
        }
    }

    #[test]
    fn vtpm_pcr_reference_values_apply_and_are_checked() {
        let mut manifest = sample();
        manifest
            .vtpm_pcrs
            .insert("7".into(), vec!["AA".repeat(32), "bb".repeat(32)]);
        let mut policy = Policy::default();
        manifest.apply_to(&mut policy).unwrap();
        assert!(policy.vtpm.require);
        assert_eq!(
            policy.vtpm.pcrs["7"],
            vec!["aa".repeat(32), "bb".repeat(32)]
        );
        // Also in the policy: one source only.
        assert!(manifest.apply_to(&mut policy).is_err());
        for (index, value) in [("24", "aa".repeat(32)), ("7", "aa".repeat(31))] {
            let mut bad = sample();
            bad.vtpm_pcrs.insert(index.into(), vec![value]);
            assert!(bad.validate().is_err(), "{index}");
        }
    }

    #[test]
    fn signed_manifest_round_trips_and_applies() {
        let (key, pem) = ManifestSigningKey::generate().unwrap();
        let again = ManifestSigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let envelope = sample().sign(&key).unwrap();
        let opened = Manifest::open(&envelope, &[key.public_key()]).unwrap();
        assert_eq!(opened, sample());
        let mut policy = Policy::default();
        opened.apply_to(&mut policy).unwrap();
        assert_eq!(policy.tdx.mrtd, vec!["11".repeat(48)]);
        assert_eq!(policy.config_digests, vec!["55".repeat(48)]);
        assert_eq!(
            policy.accepted_tees,
            vec!["tdx".to_string()],
            "a TDX-only manifest must refuse SNP guests"
        );
        // The public key's text form round-trips.
        let text = key.public_key().to_string();
        assert_eq!(ManifestPublicKey::parse(&text).unwrap(), key.public_key());
    }

    #[test]
    fn wrong_key_tampered_payload_and_wrong_type_are_refused() {
        let (key, _) = ManifestSigningKey::generate().unwrap();
        let (other, _) = ManifestSigningKey::generate().unwrap();
        let envelope = sample().sign(&key).unwrap();
        let err = Manifest::open(&envelope, &[other.public_key()]).unwrap_err();
        assert!(err.to_string().contains("no valid signature"), "{err}");

        let mut json: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
        let mut evil = sample();
        evil.tdx.as_mut().unwrap().mrtd = "66".repeat(48);
        json["payload"] = B64.encode(serde_json::to_vec(&evil).unwrap()).into();
        let tampered = serde_json::to_vec(&json).unwrap();
        let err = Manifest::open(&tampered, &[key.public_key()]).unwrap_err();
        assert!(err.to_string().contains("no valid signature"), "{err}");

        let mut json: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
        json["payloadType"] = "application/json".into();
        let err =
            Manifest::open(&serde_json::to_vec(&json).unwrap(), &[key.public_key()]).unwrap_err();
        assert!(err.to_string().contains("payloadType"), "{err}");

        for junk in [&b""[..], b"{}", b"[1,2]", b"\xff\xfe"] {
            assert!(Manifest::open(junk, &[key.public_key()]).is_err());
        }
    }

    /// Review finding 22: an expired manifest, and one below the client's release floor,
    /// are refused when loading the policy.
    #[test]
    fn expired_or_rolled_back_manifests_are_refused() {
        let (key, _) = ManifestSigningKey::generate().unwrap();
        let dir =
            std::env::temp_dir().join(format!("cocoon-manifest-fresh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.json");
        std::fs::write(&path, sample().sign(&key).unwrap()).unwrap();
        let trusted = [key.public_key()];
        let before = 1_800_000_000; // 2027-01-15
        let after = 1_900_000_000; // 2030-03-17, past not_after
        let load = |now, min| load_policy(None, Some((&path, &trusted[..])), now, min);
        assert!(load(before, None).is_ok());
        assert!(load(before, Some(7)).is_ok());
        let err = load(after, None).unwrap_err().to_string();
        assert!(
            err.contains("not_after") && err.contains("expired"),
            "{err}"
        );
        let err = load(before, Some(8)).unwrap_err().to_string();
        assert!(err.contains("release 7") && err.contains(">= 8"), "{err}");
        // A manifest without the fields does not parse (deny_unknown_fields keeps typos out,
        // and both fields are required).
        let mut json = serde_json::to_value(sample()).unwrap();
        json.as_object_mut().unwrap().remove("not_after");
        assert!(Manifest::from_json(json.to_string().as_bytes()).is_err());
        let mut m = sample();
        m.not_after = "next year".into();
        assert!(m.validate().unwrap_err().to_string().contains("not_after"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn manifest_td_attributes_xfam_and_snp_floor_reach_the_policy() {
        let mut m = sample();
        m.tdx.as_mut().unwrap().td_attributes = Some("0x10000000".into());
        m.tdx.as_mut().unwrap().xfam = Some("0x602e7".into());
        m.sev_snp = Some(SnpReference {
            measurements: vec!["77".repeat(48)],
            min_tcb: Some(crate::policy::MinSnpTcb::NONE),
        });
        let mut policy = Policy::default();
        m.apply_to(&mut policy).unwrap();
        assert_eq!(policy.tdx.td_attributes, vec!["0x10000000"]);
        assert_eq!(policy.tdx.xfam, vec!["0x602e7"]);
        assert_eq!(policy.snp.min_tcb, Some(crate::policy::MinSnpTcb::NONE));
        m.tdx.as_mut().unwrap().xfam = Some("xyz".into());
        assert!(m.validate().unwrap_err().to_string().contains("tdx.xfam"));
    }

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // The worked example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn bad_values_and_conflicts_are_named() {
        let mut m = sample();
        m.version = 2;
        assert!(m.validate().unwrap_err().to_string().contains("version 2"));
        let mut m = sample();
        m.tdx.as_mut().unwrap().rtmr1 = "12".into();
        assert!(m.validate().unwrap_err().to_string().contains("tdx.rtmr1"));
        let mut m = sample();
        m.tdx = None;
        assert!(m.validate().unwrap_err().to_string().contains("neither"));

        let mut policy = Policy::default().allow_mrtd(&[9; 48]);
        let err = sample().apply_to(&mut policy).unwrap_err();
        assert!(err
            .to_string()
            .contains("both the policy and the manifest set tdx.mrtd"));

        for bad in ["ed25519:", "ed25519:AAAA", "rsa:AAAA", "ed25519:!!"] {
            assert!(ManifestPublicKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openssl_style_pkcs8_v1_keys_are_accepted() {
        // RFC 8410 section 10.3 example private key (PKCS#8 v1, no public key inside).
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let key = ManifestSigningKey::from_pem(pem).unwrap();
        // RFC 8410 section 10.1 gives the matching public key.
        assert_eq!(
            hex::encode(key.public_key().0),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
    }
}
