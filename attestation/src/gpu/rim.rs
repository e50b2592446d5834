//! NVIDIA reference-integrity manifests (RIMs): the signed reference values for a GPU's
//! SPDM measurements.
//!
//! NVIDIA publishes one RIM per driver version and one per VBIOS version, as SWID tags
//! (ISO/IEC 19770-2 XML) in the TCG RIM information model: `SoftwareIdentity` names the
//! tag, `Meta` carries NVIDIA's fields (`colloquialVersion` is the driver or VBIOS
//! version, `product` the GPU), and `Payload` lists one `Resource type="Measurement"`
//! per measurement index with `active`, `alternatives` and the SHA-384 values `Hash0`,
//! `Hash1`, … (attributes in the `http://www.w3.org/2001/04/xmlenc#sha384` namespace).
//! RIM index *i* is SPDM measurement block *i + 1*.
//!
//! Parsing is separate from trusting: [`Rim::parse`] reads an untrusted document (with
//! limits, never panicking), [`Rim::verify`] checks its XML signature through the
//! embedded chain to NVIDIA's pinned RIM root at a time the caller gives.

use super::xmldsig::{self, VerifiedSignature};
use crate::gpu::reference::ReferenceMeasurement;
use crate::{Error, Result};

/// The SWID tag namespace (ISO/IEC 19770-2:2015).
pub const SWID_NS: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
/// The TCG RIM information model namespace (the `Meta` platform fields).
pub const TCG_RIM_NS: &str =
    "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/";
/// The namespace of SHA-384 hash attributes (`Hash0`, `Hash1`, …).
pub const SHA384_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
/// SHA-384 digest size.
pub const SHA384_LEN: usize = 48;
/// The most `Resource` entries accepted. SPDM measurement indices run 1..=254, so RIM
/// indices run 0..=253.
pub const MAX_MEASUREMENTS: usize = 254;
/// The most alternative values accepted for one measurement.
pub const MAX_ALTERNATIVES: usize = 16;

/// Which firmware a RIM describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RimKind {
    /// The GPU driver (e.g. colloquial version `545.00`).
    Driver,
    /// The VBIOS (e.g. colloquial version `96.00.5E.00.01`).
    Vbios,
}

impl std::fmt::Display for RimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RimKind::Driver => "driver",
            RimKind::Vbios => "VBIOS",
        })
    }
}

/// One `Payload/Resource` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RimMeasurement {
    /// The RIM's `index` (SPDM measurement block `rim_index + 1`).
    pub rim_index: u32,
    /// Whether the verifier must compare this measurement.
    pub active: bool,
    /// The accepted SHA-384 values (`Hash0`, `Hash1`, …), any one of which matches.
    pub alternatives: Vec<Vec<u8>>,
}

/// A parsed (not yet trusted) RIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    /// Driver or VBIOS, from the colloquial version's form.
    pub kind: RimKind,
    /// `SoftwareIdentity/@name` (e.g. `GH100`).
    pub name: String,
    /// `SoftwareIdentity/@version` (the tag's version, e.g. `1.0`).
    pub version: String,
    /// `SoftwareIdentity/@tagId`.
    pub tag_id: String,
    /// `SoftwareIdentity/@tagVersion`.
    pub tag_version: Option<String>,
    /// `Meta/@colloquialVersion`: the driver or VBIOS version (`545.00`, `96.00.5E.00.01`).
    pub colloquial_version: String,
    /// `Meta/@product` (e.g. `GH100`).
    pub product: Option<String>,
    /// `Meta/@edition` (e.g. `GPU`).
    pub edition: Option<String>,
    /// `Meta/@revision`.
    pub revision: Option<String>,
    /// `Meta/@tcg:PlatformManufacturerStr`.
    pub platform_manufacturer: Option<String>,
    /// `Meta/@tcg:PlatformModel`.
    pub platform_model: Option<String>,
    /// `Meta/@tcg:FirmwareManufacturer`.
    pub firmware_manufacturer: Option<String>,
    /// Every `Resource` entry, in ascending `rim_index`.
    pub measurements: Vec<RimMeasurement>,
    /// The document as received, for [`Rim::verify`].
    xml: Vec<u8>,
}

/// A RIM whose signature verified to the pinned root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRim {
    pub rim: Rim,
    pub signature: VerifiedSignature,
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "NVIDIA RIM",
        detail,
    }
}

fn required(node: roxmltree::Node<'_, '_>, name: &str) -> Result<String> {
    node.attribute(name).map(str::to_string).ok_or_else(|| {
        malformed(format!(
            "{} has no '{name}' attribute",
            node.tag_name().name()
        ))
    })
}

fn parse_bool(value: &str, what: &str) -> Result<bool> {
    match value {
        "True" | "true" => Ok(true),
        "False" | "false" => Ok(false),
        _ => Err(malformed(format!("{what}: '{value}' is not a boolean"))),
    }
}

fn parse_u32(value: &str, what: &str) -> Result<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("{what}: '{value}' is not a number")));
    }
    value
        .parse()
        .map_err(|_| malformed(format!("{what}: '{value}' is out of range")))
}

/// Driver versions are decimal groups (`545.00`, `550.90.07`); VBIOS versions are five
/// two-digit hex groups (`96.00.5E.00.01`).
fn kind_of(version: &str) -> Result<RimKind> {
    let groups: Vec<&str> = version.split('.').collect();
    let all = |f: fn(u8) -> bool| groups.iter().all(|g| !g.is_empty() && g.bytes().all(f));
    if groups.len() == 5 && groups.iter().all(|g| g.len() == 2) && all(|b| b.is_ascii_hexdigit()) {
        Ok(RimKind::Vbios)
    } else if (2..=3).contains(&groups.len()) && all(|b| b.is_ascii_digit()) {
        Ok(RimKind::Driver)
    } else {
        Err(Error::Unsupported {
            what: "NVIDIA RIM colloquialVersion (neither a driver nor a VBIOS version)",
            value: version.to_string(),
        })
    }
}

fn swid_child<'a, 'i>(
    parent: roxmltree::Node<'a, 'i>,
    local: &str,
) -> Result<roxmltree::Node<'a, 'i>> {
    let mut found = parent
        .children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(SWID_NS))
        .filter(|n| n.tag_name().name() == local);
    let first = found
        .next()
        .ok_or_else(|| malformed(format!("no {local} element")))?;
    if found.next().is_some() {
        return Err(malformed(format!("more than one {local} element")));
    }
    Ok(first)
}

impl Rim {
    /// Reads a RIM (untrusted bytes). Does not check the signature: see [`Rim::verify`].
    pub fn parse(xml: &[u8]) -> Result<Rim> {
        let doc = xmldsig::parse_document(xml)?;
        let root = doc.root_element();
        if root.tag_name().namespace() != Some(SWID_NS)
            || root.tag_name().name() != "SoftwareIdentity"
        {
            return Err(malformed(format!(
                "the document element is {:?}, not a SWID SoftwareIdentity",
                root.tag_name()
            )));
        }
        let meta = swid_child(root, "Meta")?;
        let colloquial_version = required(meta, "colloquialVersion")?;
        let kind = kind_of(&colloquial_version)?;
        let tcg = |name: &str| meta.attribute((TCG_RIM_NS, name)).map(str::to_string);
        let payload = swid_child(root, "Payload")?;

        let mut measurements: Vec<RimMeasurement> = Vec::new();
        for resource in payload.children().filter(|n| n.is_element()) {
            if resource.tag_name().namespace() != Some(SWID_NS)
                || resource.tag_name().name() != "Resource"
            {
                return Err(malformed(format!(
                    "unexpected element {:?} in Payload",
                    resource.tag_name()
                )));
            }
            if measurements.len() == MAX_MEASUREMENTS {
                return Err(Error::LimitExceeded {
                    what: "NVIDIA RIM measurement entries",
                    limit: MAX_MEASUREMENTS,
                    actual: payload.children().filter(|n| n.is_element()).count(),
                });
            }
            measurements.push(parse_resource(resource)?);
        }
        if measurements.is_empty() {
            return Err(malformed("Payload lists no measurements".into()));
        }
        measurements.sort_by_key(|m| m.rim_index);
        if let Some(w) = measurements
            .windows(2)
            .find(|w| w[0].rim_index == w[1].rim_index)
        {
            return Err(malformed(format!(
                "measurement index {} appears twice",
                w[0].rim_index
            )));
        }

        Ok(Rim {
            kind,
            name: required(root, "name")?,
            version: required(root, "version")?,
            tag_id: required(root, "tagId")?,
            tag_version: root.attribute("tagVersion").map(str::to_string),
            colloquial_version,
            product: meta.attribute("product").map(str::to_string),
            edition: meta.attribute("edition").map(str::to_string),
            revision: meta.attribute("revision").map(str::to_string),
            platform_manufacturer: tcg("PlatformManufacturerStr"),
            platform_model: tcg("PlatformModel"),
            firmware_manufacturer: tcg("FirmwareManufacturer"),
            measurements,
            xml: xml.to_vec(),
        })
    }

    /// The active entries as reference values, RIM index *i* as SPDM block *i + 1*.
    pub fn reference_measurements(&self) -> Vec<ReferenceMeasurement> {
        self.measurements
            .iter()
            .filter(|m| m.active)
            .filter_map(|m| {
                // rim_index ≤ 253 is checked at parse time; filter_map keeps this total.
                let block_index = u8::try_from(m.rim_index.checked_add(1)?).ok()?;
                Some(ReferenceMeasurement {
                    block_index,
                    alternatives: m.alternatives.clone(),
                    source: format!(
                        "{} RIM {} index {}",
                        self.kind, self.colloquial_version, m.rim_index
                    ),
                })
            })
            .collect()
    }

    /// The number of active entries.
    pub fn active_count(&self) -> usize {
        self.measurements.iter().filter(|m| m.active).count()
    }

    /// Verifies the RIM's XML signature through its embedded chain to NVIDIA's pinned RIM
    /// root, with certificate validity checked at `at_unix` (seconds since the epoch).
    pub fn verify(&self, at_unix: i64) -> Result<VerifiedRim> {
        self.verify_with_root(&xmldsig::nvidia_rim_root_der()?, at_unix)
    }

    /// As [`Rim::verify`], to another root (tests, or a rotated NVIDIA root).
    pub fn verify_with_root(&self, root_der: &[u8], at_unix: i64) -> Result<VerifiedRim> {
        let signature = xmldsig::verify_enveloped(&self.xml, root_der, at_unix)?;
        Ok(VerifiedRim {
            rim: self.clone(),
            signature,
        })
    }

    /// Parses and verifies in one step.
    pub fn parse_verified(xml: &[u8], at_unix: i64) -> Result<VerifiedRim> {
        Rim::parse(xml)?.verify(at_unix)
    }
}

fn parse_resource(resource: roxmltree::Node<'_, '_>) -> Result<RimMeasurement> {
    if let Some(kind) = resource.attribute("type") {
        if kind != "Measurement" {
            return Err(Error::Unsupported {
                what: "NVIDIA RIM Resource type",
                value: kind.to_string(),
            });
        }
    }
    let rim_index = parse_u32(&required(resource, "index")?, "Resource index")?;
    if rim_index as usize >= MAX_MEASUREMENTS {
        return Err(Error::LimitExceeded {
            what: "NVIDIA RIM measurement index",
            limit: MAX_MEASUREMENTS - 1,
            actual: rim_index as usize,
        });
    }
    let what = format!("Resource {rim_index}");
    let active = parse_bool(&required(resource, "active")?, &format!("{what} active"))?;
    let count = parse_u32(
        &required(resource, "alternatives")?,
        &format!("{what} alternatives"),
    )? as usize;
    if count == 0 {
        return Err(malformed(format!("{what}: zero alternatives")));
    }
    if count > MAX_ALTERNATIVES {
        return Err(Error::LimitExceeded {
            what: "NVIDIA RIM alternatives for one measurement",
            limit: MAX_ALTERNATIVES,
            actual: count,
        });
    }
    if let Some(size) = resource.attribute("size") {
        if parse_u32(size, &format!("{what} size"))? as usize != SHA384_LEN {
            return Err(Error::Unsupported {
                what: "NVIDIA RIM measurement size (only SHA-384, 48)",
                value: size.to_string(),
            });
        }
    }
    // Hash attributes: all in the SHA-384 namespace, named Hash0..Hash{count-1}.
    let mut alternatives: Vec<Option<Vec<u8>>> = vec![None; count];
    for attr in resource.attributes() {
        let Some(n) = attr.name().strip_prefix("Hash") else {
            continue;
        };
        if attr.namespace() != Some(SHA384_NS) {
            return Err(Error::Unsupported {
                what: "NVIDIA RIM hash algorithm (only SHA-384)",
                value: format!("{what} {} in {:?}", attr.name(), attr.namespace()),
            });
        }
        let n = parse_u32(n, &format!("{what} {}", attr.name()))? as usize;
        let slot = alternatives.get_mut(n).ok_or_else(|| {
            malformed(format!(
                "{what}: {} beyond alternatives=\"{count}\"",
                attr.name()
            ))
        })?;
        let value = hex::decode(attr.value())
            .map_err(|e| malformed(format!("{what} {}: {e}", attr.name())))?;
        if value.len() != SHA384_LEN {
            return Err(malformed(format!(
                "{what} {}: {} bytes, expected {SHA384_LEN}",
                attr.name(),
                value.len()
            )));
        }
        *slot = Some(value);
    }
    let alternatives = alternatives
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| malformed(format!("{what}: Hash{i} missing"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(RimMeasurement {
        rim_index,
        active,
        alternatives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_rim_kind_from_version() {
        assert_eq!(kind_of("545.00").unwrap(), RimKind::Driver);
        assert_eq!(kind_of("550.90.07").unwrap(), RimKind::Driver);
        assert_eq!(kind_of("96.00.5E.00.01").unwrap(), RimKind::Vbios);
        assert!(kind_of("v1").is_err());
        assert!(kind_of("").is_err());
    }

    #[test]
    fn gpu_rim_refuses_bad_entries() {
        let doc = |res: &str| {
            format!(
                "<SoftwareIdentity xmlns=\"{SWID_NS}\" xmlns:h=\"{SHA384_NS}\" name=\"GH100\" version=\"1.0\" tagId=\"t\"><Meta colloquialVersion=\"545.00\"/><Payload>{res}</Payload></SoftwareIdentity>"
            )
        };
        let h = "00".repeat(48);
        let ok =
            format!("<Resource index=\"0\" active=\"True\" alternatives=\"1\" h:Hash0=\"{h}\"/>");
        let rim = Rim::parse(doc(&ok).as_bytes()).unwrap();
        assert_eq!(rim.reference_measurements()[0].block_index, 1);
        for bad in [
            format!("<Resource index=\"0\" active=\"Yes\" alternatives=\"1\" h:Hash0=\"{h}\"/>"),
            format!("<Resource index=\"0\" active=\"True\" alternatives=\"2\" h:Hash0=\"{h}\"/>"),
            format!("<Resource index=\"0\" active=\"True\" alternatives=\"1\" h:Hash1=\"{h}\"/>"),
            "<Resource index=\"0\" active=\"True\" alternatives=\"1\" h:Hash0=\"00\"/>".to_string(),
            format!("<Resource index=\"0\" active=\"True\" alternatives=\"1\" Hash0=\"{h}\"/>"),
            format!("<Resource index=\"254\" active=\"True\" alternatives=\"1\" h:Hash0=\"{h}\"/>"),
            format!("<Resource index=\"-1\" active=\"True\" alternatives=\"1\" h:Hash0=\"{h}\"/>"),
            format!("{ok}{ok}"),
            String::new(),
        ] {
            assert!(Rim::parse(doc(&bad).as_bytes()).is_err(), "{bad}");
        }
    }
}
