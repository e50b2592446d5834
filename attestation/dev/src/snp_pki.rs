//! A development SEV-SNP PKI: seed-derived ARK, ASK and VCEK that sign attestation
//! reports in AMD's real format (version 3, Milan layout).
//!
//! The chain has AMD's shape: ARK (RSA, self-signed, RSASSA-PSS/SHA-384) → ASK (RSA,
//! RSASSA-PSS/SHA-384) → VCEK (ECDSA P-384) carrying AMD's VCEK extensions (blSPL,
//! teeSPL, snpSPL, ucodeSPL, hwID, productName), and the report is signed with the VCEK
//! over bytes 0x000..0x2A0 with r and s stored little-endian, so `cocoon_attestation::snp::verify` and
//! the `sev` crate check it exactly as they check a real report. The RSA keys are 2048
//! bits (AMD uses 4096) so that deriving them stays fast; nothing else differs.
//! Everything derives from a public seed: the ARK proves nothing, and verifiers trust it
//! only when told to.

use std::str::FromStr;
use std::sync::OnceLock;

use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pss::BlindedSigningKey;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::{Ia5String, OctetString, UtcTime};
use x509_cert::der::oid::{AssociatedOid, ObjectIdentifier};
use x509_cert::der::{Encode, Length, Writer};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::snp::report::{TcbVersion, REPORT_LEN, SIGNED_LEN};
use cocoon_attestation::snp::verify::TrustedArk;
use cocoon_attestation::{Error, Result};

/// The TCB the development VCEK is issued for: at Milan's default floor
/// ([`crate::policy::default_min_snp_tcb`]), so development evidence passes the default
/// policy like a patched machine's.
pub const DEV_TCB: TcbVersion = TcbVersion {
    fmc: None,
    bootloader: 4,
    tee: 0,
    snp: 24,
    microcode: 219,
};

/// Which processor line a development PKI plays (names, CPUID, TCB layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevProduct {
    Milan,
    Genoa,
    Turin,
}

impl DevProduct {
    fn name(self) -> &'static str {
        match self {
            DevProduct::Milan => "Milan",
            DevProduct::Genoa => "Genoa",
            DevProduct::Turin => "Turin",
        }
    }

    fn anchor_label(self) -> &'static str {
        match self {
            DevProduct::Milan => "Milan (development root)",
            DevProduct::Genoa => "Genoa (development root)",
            DevProduct::Turin => "Turin (development root)",
        }
    }

    /// CPUID family, model, stepping written into reports.
    fn cpuid(self) -> (u8, u8, u8) {
        match self {
            DevProduct::Milan => (0x19, 0x01, 0x01),
            DevProduct::Genoa => (0x19, 0x11, 0x01),
            DevProduct::Turin => (0x1A, 0x02, 0x01),
        }
    }
}

/// The shape of a development SNP PKI (see [`DevSnpPki::from_seed_with`]).
#[derive(Debug, Clone)]
pub struct DevSnpOptions {
    pub product: DevProduct,
    /// The TCB the endorsement key is issued for (and reports claim).
    pub tcb: TcbVersion,
    /// Issue a VLEK under an ASVK instead of a VCEK under an ASK.
    pub vlek: bool,
}

impl Default for DevSnpOptions {
    fn default() -> Self {
        Self {
            product: DevProduct::Milan,
            tcb: DEV_TCB,
            vlek: false,
        }
    }
}

/// What a host and firmware choose about one report (see [`DevSnpPki::report_with`]).
#[derive(Debug, Clone)]
pub struct DevReportOptions {
    /// Report version: 3 or 5.
    pub version: u32,
    pub debug: bool,
    pub vmpl: u32,
    /// LAUNCH_TCB; default the PKI's TCB.
    pub launch_tcb: Option<TcbVersion>,
    /// PLATFORM_INFO; default SMT_EN | ALIAS_CHECK_COMPLETE.
    pub platform_info: u64,
    /// The key-info word at 0x48; default SIGNING_KEY of the PKI's key kind.
    pub key_info: Option<u32>,
    /// POLICY; default ABI 0.0, the reserved bit 17, SMT allowed, and DEBUG if `debug`.
    pub policy: Option<u64>,
}

impl Default for DevReportOptions {
    fn default() -> Self {
        Self {
            version: 3,
            debug: false,
            vmpl: 0,
            launch_tcb: None,
            platform_info: 0x21,
            key_info: None,
            policy: None,
        }
    }
}

fn crypto(e: impl std::fmt::Display) -> Error {
    Error::Crypto(e.to_string())
}

fn rng(seed: &[u8], label: &str) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(b"cocoon/dev-snp/");
    h.update(label.as_bytes());
    h.update(seed);
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// A DER value used verbatim as an extension's content.
struct RawValue<const K: u8>(Vec<u8>);

impl<const K: u8> Encode for RawValue<K> {
    fn encoded_len(&self) -> x509_cert::der::Result<Length> {
        Length::try_from(self.0.len())
    }
    fn encode(&self, writer: &mut impl Writer) -> x509_cert::der::Result<()> {
        writer.write(&self.0)
    }
}

macro_rules! amd_extension {
    ($k:literal, $oid:literal) => {
        impl AssociatedOid for RawValue<$k> {
            const OID: ObjectIdentifier = ObjectIdentifier::new_unwrap($oid);
        }
        impl x509_cert::ext::AsExtension for RawValue<$k> {
            fn critical(&self, _: &Name, _: &[x509_cert::ext::Extension]) -> bool {
                false
            }
        }
    };
}
amd_extension!(1, "1.3.6.1.4.1.3704.1.1");
amd_extension!(2, "1.3.6.1.4.1.3704.1.2");
amd_extension!(31, "1.3.6.1.4.1.3704.1.3.1");
amd_extension!(32, "1.3.6.1.4.1.3704.1.3.2");
amd_extension!(33, "1.3.6.1.4.1.3704.1.3.3");
amd_extension!(38, "1.3.6.1.4.1.3704.1.3.8");
amd_extension!(39, "1.3.6.1.4.1.3704.1.3.9");
amd_extension!(4, "1.3.6.1.4.1.3704.1.4");

fn der_integer(v: u8) -> Vec<u8> {
    // A non-negative INTEGER: a leading zero when the high bit is set.
    if v & 0x80 != 0 {
        vec![0x02, 0x02, 0x00, v]
    } else {
        vec![0x02, 0x01, v]
    }
}

fn validity() -> Result<Validity> {
    let t = |secs: u64| -> Result<Time> {
        Ok(Time::UtcTime(
            UtcTime::from_unix_duration(std::time::Duration::from_secs(secs)).map_err(crypto)?,
        ))
    };
    Ok(Validity {
        not_before: t(1_704_067_200)?,
        not_after: t(2_524_521_600)?,
    }) // 2024-01-01 .. 2049-12-31
}

/// The development SNP PKI.
pub struct DevSnpPki {
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
    vcek: SigningKey,
    chip_id: [u8; 64],
    options: DevSnpOptions,
    ark_key: RsaPrivateKey,
    ark_name: Name,
}

impl DevSnpPki {
    /// The PKI every verifier can recreate from the public development seed (built once
    /// per process: RSA key derivation takes a moment).
    pub fn dev() -> Result<&'static DevSnpPki> {
        static DEV: OnceLock<std::result::Result<DevSnpPki, String>> = OnceLock::new();
        DEV.get_or_init(|| Self::from_seed(crate::DEV_SEED).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Crypto(e.clone()))
    }

    /// A PKI of its own (tests use one as an impostor).
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        Self::from_seed_with(seed, DevSnpOptions::default())
    }

    /// A PKI for another product line, TCB or key kind (VLEK through an ASVK).
    pub fn from_seed_with(seed: &[u8], options: DevSnpOptions) -> Result<Self> {
        let product = options.product.name();
        let tcb = options.tcb;
        let ark_key = RsaPrivateKey::new(&mut rng(seed, "ark"), 2048).map_err(crypto)?;
        let ask_key = RsaPrivateKey::new(&mut rng(seed, "ask"), 2048).map_err(crypto)?;
        let mut vcek_seed = rng(seed, "vcek");
        let vcek = SigningKey::random(&mut vcek_seed);
        let mut chip_id = [0u8; 64];
        rand_chacha::rand_core::RngCore::fill_bytes(&mut rng(seed, "chip-id"), &mut chip_id);
        let mut sign_rng = rng(seed, "signatures");

        let org = "O=Cocoon development PKI (NOT AMD)";
        let ark_name = Name::from_str(&format!("CN=ARK-{product}-DEV,{org}")).map_err(crypto)?;
        let (ask_cn, vcek_cn) = if options.vlek {
            (format!("SEV-VLEK-{product}-DEV"), "SEV-VLEK-DEV")
        } else {
            (format!("SEV-{product}-DEV"), "SEV-VCEK-DEV")
        };
        let ask_name = Name::from_str(&format!("CN={ask_cn},{org}")).map_err(crypto)?;
        let vcek_name = Name::from_str(&format!("CN={vcek_cn},{org}")).map_err(crypto)?;

        let ark_signer = BlindedSigningKey::<Sha384>::new(ark_key.clone());
        let ask_signer = BlindedSigningKey::<Sha384>::new(ask_key.clone());
        let spki =
            |der: Vec<u8>| SubjectPublicKeyInfoOwned::try_from(der.as_slice()).map_err(crypto);

        let ark_spki = spki(
            ark_key
                .to_public_key()
                .to_public_key_der()
                .map_err(crypto)?
                .into_vec(),
        )?;
        let ark_name_kept = ark_name.clone();
        let ark = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(1u32),
            validity()?,
            ark_name.clone(),
            ark_spki,
            &ark_signer,
        )
        .map_err(crypto)?
        .build_with_rng::<rsa::pss::Signature>(&mut sign_rng)
        .map_err(crypto)?;
        let ask_spki = spki(
            ask_key
                .to_public_key()
                .to_public_key_der()
                .map_err(crypto)?
                .into_vec(),
        )?;
        let ask = CertificateBuilder::new(
            Profile::SubCA {
                issuer: ark_name,
                path_len_constraint: Some(0),
            },
            SerialNumber::from(2u32),
            validity()?,
            ask_name.clone(),
            ask_spki,
            &ark_signer,
        )
        .map_err(crypto)?
        .build_with_rng::<rsa::pss::Signature>(&mut sign_rng)
        .map_err(crypto)?;
        let vcek_spki = spki(
            vcek.verifying_key()
                .to_public_key_der()
                .map_err(crypto)?
                .into_vec(),
        )?;
        let mut builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: ask_name,
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            SerialNumber::from(3u32),
            validity()?,
            vcek_name,
            vcek_spki,
            &ask_signer,
        )
        .map_err(crypto)?;
        let product_name = Ia5String::new(&format!("{product}-B0"))
            .map_err(crypto)?
            .to_der()
            .map_err(crypto)?;
        let hwid = OctetString::new(chip_id.to_vec())
            .map_err(crypto)?
            .to_der()
            .map_err(crypto)?;
        builder
            .add_extension(&RawValue::<1>(der_integer(1)))
            .map_err(crypto)?;
        builder
            .add_extension(&RawValue::<2>(product_name))
            .map_err(crypto)?;
        builder
            .add_extension(&RawValue::<31>(der_integer(tcb.bootloader)))
            .map_err(crypto)?;
        builder
            .add_extension(&RawValue::<32>(der_integer(tcb.tee)))
            .map_err(crypto)?;
        builder
            .add_extension(&RawValue::<33>(der_integer(tcb.snp)))
            .map_err(crypto)?;
        builder
            .add_extension(&RawValue::<38>(der_integer(tcb.microcode)))
            .map_err(crypto)?;
        if let Some(fmc) = tcb.fmc {
            builder
                .add_extension(&RawValue::<39>(der_integer(fmc)))
                .map_err(crypto)?;
        }
        // A VLEK is not tied to one chip: no hwID.
        if !options.vlek {
            builder
                .add_extension(&RawValue::<4>(hwid))
                .map_err(crypto)?;
        }
        let vcek_cert = builder
            .build_with_rng::<rsa::pss::Signature>(&mut sign_rng)
            .map_err(crypto)?;
        Ok(Self {
            ark_der: ark.to_der().map_err(crypto)?,
            ask_der: ask.to_der().map_err(crypto)?,
            vcek_der: vcek_cert.to_der().map_err(crypto)?,
            vcek,
            chip_id,
            options,
            ark_key,
            ark_name: ark_name_kept,
        })
    }

    /// A CRL as AMD KDS serves it (`/vcek/v1/{product}/crl`): issued and signed by the
    /// ARK (RSA-PSS/SHA-384), listing the certificates with the `revoked` serial numbers
    /// (the DER INTEGER contents), current from `this_update` to `next_update`.
    pub fn crl(&self, revoked: &[&[u8]], this_update: i64, next_update: i64) -> Result<Vec<u8>> {
        use rsa::signature::RandomizedSigner;
        use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
        use x509_cert::der::asn1::BitString;
        use x509_cert::spki::DynSignatureAlgorithmIdentifier;
        let t = |secs: i64| -> Result<Time> {
            let secs = u64::try_from(secs).map_err(crypto)?;
            Ok(Time::UtcTime(
                UtcTime::from_unix_duration(std::time::Duration::from_secs(secs))
                    .map_err(crypto)?,
            ))
        };
        let signer = BlindedSigningKey::<Sha384>::new(self.ark_key.clone());
        let revoked = revoked
            .iter()
            .map(|serial| {
                Ok(RevokedCert {
                    serial_number: x509_cert::serial_number::SerialNumber::new(serial)
                        .map_err(crypto)?,
                    revocation_date: t(this_update)?,
                    crl_entry_extensions: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: signer.signature_algorithm_identifier().map_err(crypto)?,
            issuer: self.ark_name.clone(),
            this_update: t(this_update)?,
            next_update: Some(t(next_update)?),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: None,
        };
        let tbs_der = tbs.to_der().map_err(crypto)?;
        let mut sign_rng = rng(&tbs_der, "crl");
        let signature: rsa::pss::Signature = signer.sign_with_rng(&mut sign_rng, &tbs_der);
        let crl = CertificateList {
            signature_algorithm: tbs.signature.clone(),
            tbs_cert_list: tbs,
            signature: BitString::from_bytes(&Box::<[u8]>::from(signature)).map_err(crypto)?,
        };
        crl.to_der().map_err(crypto)
    }

    /// The development ARK as a trust anchor (marked simulated).
    pub fn trusted_ark(&self) -> TrustedArk {
        TrustedArk {
            product: self.options.product.anchor_label(),
            der: self.ark_der.clone(),
            simulated: true,
        }
    }

    /// DER of the VCEK.
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// DER of the ARK.
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// DER of the ASK (the ASVK for a VLEK PKI).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// ASK then ARK, PEM: the shape of AMD's `cert_chain`.
    pub fn chain_pem(&self) -> String {
        format!(
            "{}{}",
            cocoon_attestation::ratls::certificate_pem(&self.ask_der),
            cocoon_attestation::ratls::certificate_pem(&self.ark_der)
        )
    }

    /// A version 3 attestation report (Milan layout) signed with the VCEK.
    pub fn report(
        &self,
        report_data: &ReportData,
        measurement: &[u8; 48],
        host_data: &[u8; 32],
        debug: bool,
    ) -> Vec<u8> {
        self.report_with(
            report_data,
            measurement,
            host_data,
            &DevReportOptions {
                debug,
                ..DevReportOptions::default()
            },
        )
    }

    /// A report with the fields a host and firmware choose set as `options` says, in the
    /// PKI's product layout, signed with its VCEK or VLEK.
    pub fn report_with(
        &self,
        report_data: &ReportData,
        measurement: &[u8; 48],
        host_data: &[u8; 32],
        options: &DevReportOptions,
    ) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        let (family, model, stepping) = self.options.product.cpuid();
        let turin = self.options.product == DevProduct::Turin;
        let tcb = self.options.tcb.encode(turin);
        let launch = options.launch_tcb.unwrap_or(self.options.tcb).encode(turin);
        // POLICY: ABI 0.0, bit 17 (reserved, must be one), SMT allowed (16), DEBUG (19).
        let policy: u64 = options
            .policy
            .unwrap_or((1 << 17) | (1 << 16) | if options.debug { 1 << 19 } else { 0 });
        let key_info = options
            .key_info
            .unwrap_or(if self.options.vlek { 1 << 2 } else { 0 });
        r[0x000..0x004].copy_from_slice(&options.version.to_le_bytes());
        r[0x008..0x010].copy_from_slice(&policy.to_le_bytes());
        r[0x030..0x034].copy_from_slice(&options.vmpl.to_le_bytes());
        r[0x034..0x038].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384 / SHA-384
        r[0x038..0x040].copy_from_slice(&tcb);
        r[0x040..0x048].copy_from_slice(&options.platform_info.to_le_bytes());
        r[0x048..0x04C].copy_from_slice(&key_info.to_le_bytes());
        r[0x050..0x090].copy_from_slice(report_data);
        r[0x090..0x0C0].copy_from_slice(measurement);
        r[0x0C0..0x0E0].copy_from_slice(host_data);
        r[0x160..0x180].fill(0xff); // REPORT_ID_MA: no migration agent
        r[0x180..0x188].copy_from_slice(&tcb);
        r[0x188] = family;
        r[0x189] = model;
        r[0x18A] = stepping;
        if !self.options.vlek {
            r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        }
        r[0x1E0..0x1E8].copy_from_slice(&tcb);
        r[0x1F0..0x1F8].copy_from_slice(&launch);
        let signature: Signature = self.vcek.sign(&r[..SIGNED_LEN]);
        let (rr, ss) = signature.split_bytes();
        for (i, b) in rr.iter().rev().enumerate() {
            r[0x2A0 + i] = *b;
        }
        for (i, b) in ss.iter().rev().enumerate() {
            r[0x2A0 + 72 + i] = *b;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_attestation::snp::verify::{amd_production_arks, verify_report};

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn dev_report_verifies_with_the_dev_ark_only() {
        let pki = DevSnpPki::dev().unwrap();
        let report = pki.report(&[7; 64], &[1; 48], &[2; 32], false);
        let facts = verify_report(
            &report,
            pki.vcek_der(),
            pki.chain_pem().as_bytes(),
            NOW,
            &[pki.trusted_ark()],
        )
        .unwrap();
        assert!(facts.simulated);
        assert_eq!(facts.report.report_data, [7; 64]);
        assert_eq!(facts.report.reported_tcb, DEV_TCB);
        assert_eq!(facts.report.product(), Some("Milan"));
        assert!(!facts.report.policy.debug_allowed());
        let err = verify_report(
            &report,
            pki.vcek_der(),
            pki.chain_pem().as_bytes(),
            NOW,
            &amd_production_arks(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a trusted AMD root"), "{err}");
    }

    #[test]
    fn the_sev_crate_accepts_the_dev_chain_and_report() {
        use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
        use sev::parser::ByteParser;
        let pki = DevSnpPki::dev().unwrap();
        let report = pki.report(&[7; 64], &[1; 48], &[2; 32], true);
        let chain = Chain {
            ca: ca::Chain {
                ark: Certificate::from_der(&pki.ark_der).unwrap(),
                ask: Certificate::from_der(&pki.ask_der).unwrap(),
            },
            vek: Certificate::from_der(pki.vcek_der()).unwrap(),
        };
        let parsed = sev::firmware::guest::AttestationReport::from_bytes(&report).unwrap();
        assert!(parsed.policy.debug_allowed());
        (&chain, &parsed).verify().unwrap();
    }

    #[test]
    fn tampering_or_an_impostor_fails() {
        let pki = DevSnpPki::dev().unwrap();
        let mut report = pki.report(&[7; 64], &[1; 48], &[2; 32], false);
        report[0x90] ^= 1;
        assert!(verify_report(
            &report,
            pki.vcek_der(),
            pki.chain_pem().as_bytes(),
            NOW,
            &[pki.trusted_ark()]
        )
        .is_err());
        let other = DevSnpPki::from_seed(b"impostor").unwrap();
        let forged = other.report(&[7; 64], &[1; 48], &[2; 32], false);
        assert!(verify_report(
            &forged,
            other.vcek_der(),
            other.chain_pem().as_bytes(),
            NOW,
            &[pki.trusted_ark()]
        )
        .is_err());
    }
}
