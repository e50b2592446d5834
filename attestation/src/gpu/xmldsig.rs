//! Verification of the enveloped XML signature that signs an NVIDIA RIM.
//!
//! NVIDIA signs its reference-integrity manifests (SWID tag XML) with one enveloped
//! XML-DSig signature: `Reference URI=""`, the transforms *enveloped-signature* and
//! Canonical XML 1.1, digest SHA-384, signature ECDSA P-384/SHA-384 (raw r‖s), and the
//! signing certificate chain in `KeyInfo/X509Data`. A general XML-DSig library would
//! bring XPath, many algorithms and external references; this module supports exactly
//! that profile and refuses anything else with a precise error, so the attack surface
//! is one fixed path.
//!
//! Canonicalization is inclusive Canonical XML 1.1 (<https://www.w3.org/TR/xml-c14n11/>)
//! for the two node sets the profile needs: the whole document less the `Signature`
//! element (the reference), and the `SignedInfo` subtree (what is signed). Comments are
//! dropped (the algorithm is the one without comments), namespace nodes are rendered
//! where they differ from the output parent's, attributes are sorted by namespace URI
//! then local name, text and attribute values are escaped per the spec, empty elements
//! become start/end tag pairs and whitespace text is kept. `xml:base` fix-up is not
//! implemented: a document that needs it is refused.
//!
//! The trust anchor is NVIDIA's "CoRIM signing Root CA", pinned in the crate
//! (`nvidia_rim_root.pem`, taken from NVIDIA's nvtrust local GPU verifier,
//! `guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/certs/` @ 0281730,
//! Apache-2.0). Certificate validity is checked at a time the caller gives, never at
//! the wall clock.

use std::collections::BTreeMap;

use base64::Engine as _;
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use roxmltree::{Node, NodeId};
use sha2::{Digest as _, Sha384};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, Result};

/// The XML-DSig namespace.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Canonical XML 1.1, without comments (the only canonicalization supported).
pub const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
/// The enveloped-signature transform.
pub const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// ECDSA with SHA-384 (RFC 6931); the only signature method supported.
pub const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
/// SHA-384 as a digest method (RFC 6931); the only digest method supported.
pub const SHA384_DIGEST: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";

/// The largest XML document accepted (NVIDIA's RIMs are about 20 KiB).
pub const MAX_XML_BYTES: usize = 1 << 20;
/// The most XML nodes (elements, text, attributes-free count) accepted.
pub const MAX_XML_NODES: u32 = 100_000;
/// The deepest element nesting accepted (the RIMs nest 5 deep).
pub const MAX_XML_DEPTH: usize = 64;
/// The most certificates accepted in `KeyInfo`.
pub const MAX_CHAIN_LEN: usize = 8;

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// ecdsa-with-SHA384 (RFC 5758), the only certificate signature algorithm accepted.
const OID_ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";

/// NVIDIA's "CoRIM signing Root CA" (PEM), the pinned anchor of RIM signatures.
const NVIDIA_RIM_ROOT_PEM: &[u8] = include_bytes!("nvidia_rim_root.pem");

/// NVIDIA's pinned RIM signing root, DER.
pub fn nvidia_rim_root_der() -> Result<Vec<u8>> {
    let pem = x509_parser::pem::Pem::iter_from_buffer(NVIDIA_RIM_ROOT_PEM)
        .next()
        .ok_or_else(|| malformed("pinned NVIDIA RIM root", "no PEM block".into()))?
        .map_err(|e| malformed("pinned NVIDIA RIM root", e.to_string()))?;
    Ok(pem.contents)
}

/// What a successful signature check established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The signing certificate (first `X509Certificate` in `KeyInfo`), DER.
    pub signer_der: Vec<u8>,
    /// Subjects of the verified chain, signer first, pinned root last.
    pub chain_subjects: Vec<String>,
    /// The reference digest (SHA-384 of the canonical document less the signature).
    pub digest: Vec<u8>,
}

/// Parses untrusted XML with this module's limits: size, node count, no DTD.
pub fn parse_document(xml: &[u8]) -> Result<roxmltree::Document<'_>> {
    if xml.len() > MAX_XML_BYTES {
        return Err(Error::LimitExceeded {
            what: "XML document size (bytes)",
            limit: MAX_XML_BYTES,
            actual: xml.len(),
        });
    }
    let text = std::str::from_utf8(xml).map_err(|e| malformed("XML document", e.to_string()))?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| malformed("XML document", e.to_string()))?;
    check_depth(doc.root_element())?;
    Ok(doc)
}

/// Refuses documents nested deeper than [`MAX_XML_DEPTH`], so the recursive
/// canonicalizer stays bounded.
fn check_depth(root: Node<'_, '_>) -> Result<()> {
    for node in root.descendants().filter(|n| n.is_element()) {
        let depth = node.ancestors().count();
        if depth > MAX_XML_DEPTH + 1 {
            return Err(Error::LimitExceeded {
                what: "XML element nesting depth",
                limit: MAX_XML_DEPTH,
                actual: depth - 1,
            });
        }
    }
    Ok(())
}

/// Canonical XML 1.1 (no comments) of the whole document, leaving out the subtree rooted
/// at `excluded` (the enveloped-signature transform) when given.
pub fn canonicalize_document(
    doc: &roxmltree::Document<'_>,
    excluded: Option<NodeId>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut seen_root = false;
    for child in doc.root().children() {
        if child.is_element() {
            let ctx = NsContext::new();
            write_element(&mut out, child, &ctx, excluded, 0, &[])?;
            seen_root = true;
        } else if child.is_pi() {
            // PIs outside the document element: a line break separates them from it.
            if seen_root {
                out.push(b'\n');
            }
            write_pi(&mut out, child);
            if !seen_root {
                out.push(b'\n');
            }
        }
        // Comments (dropped), and whitespace outside the document element (not in the
        // data model) are not rendered.
    }
    Ok(out)
}

/// Canonical XML 1.1 (no comments) of the subtree rooted at `apex` as a document subset:
/// every namespace in scope is rendered on the apex, and the inheritable `xml:lang` and
/// `xml:space` of its ancestors are carried onto it.
pub fn canonicalize_subtree(apex: Node<'_, '_>) -> Result<Vec<u8>> {
    let mut inherited: Vec<(String, String)> = Vec::new();
    for ancestor in apex.ancestors().skip(1).filter(|n| n.is_element()) {
        for attr in ancestor.attributes() {
            if attr.namespace() != Some(XML_NS) {
                continue;
            }
            match attr.name() {
                "lang" | "space" => {
                    let qname = format!("xml:{}", attr.name());
                    let defined_nearer = inherited.iter().any(|(q, _)| *q == qname);
                    if !defined_nearer {
                        inherited.push((qname, attr.value().to_string()));
                    }
                }
                "base" => {
                    return Err(Error::Unsupported {
                        what: "xml:base on an ancestor of a canonicalized subtree",
                        value: attr.value().to_string(),
                    })
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    write_element(&mut out, apex, &NsContext::new(), None, 0, &inherited)?;
    Ok(out)
}

/// The namespace declarations rendered by the nearest output ancestor: prefix ("" for
/// the default namespace) to URI.
type NsContext = BTreeMap<String, String>;

fn write_element(
    out: &mut Vec<u8>,
    node: Node<'_, '_>,
    parent_ctx: &NsContext,
    excluded: Option<NodeId>,
    depth: usize,
    inherited_xml: &[(String, String)],
) -> Result<()> {
    if depth > MAX_XML_DEPTH {
        return Err(Error::LimitExceeded {
            what: "XML element nesting depth",
            limit: MAX_XML_DEPTH,
            actual: depth,
        });
    }
    let qname = element_qname(node)?;

    // Namespace nodes of this element, minus the implicit xml namespace.
    let mut in_scope: NsContext = BTreeMap::new();
    for ns in node.namespaces() {
        if ns.uri() == XML_NS {
            continue;
        }
        in_scope.insert(ns.name().unwrap_or("").to_string(), ns.uri().to_string());
    }
    let mut ctx = parent_ctx.clone();
    let mut ns_out: Vec<(String, String)> = Vec::new();
    for (prefix, uri) in &in_scope {
        if prefix.is_empty() && uri.is_empty() {
            continue;
        }
        if parent_ctx.get(prefix) != Some(uri) {
            ns_out.push((prefix.clone(), uri.clone()));
            ctx.insert(prefix.clone(), uri.clone());
        }
    }
    // An element without a default namespace under an output parent that rendered one.
    let parent_default = parent_ctx.get("").map(String::as_str).unwrap_or("");
    let own_default = in_scope.get("").map(String::as_str).unwrap_or("");
    if own_default.is_empty() && !parent_default.is_empty() {
        ns_out.push((String::new(), String::new()));
        ctx.insert(String::new(), String::new());
    }
    // BTreeMap iteration already orders by prefix, with "" (default) first; the
    // undeclaration was pushed last, so sort again.
    ns_out.sort();

    // Attributes: (namespace URI, local name), no namespace first.
    let mut attrs: Vec<(String, String, String, String)> = Vec::new();
    for attr in node.attributes() {
        let uri = attr.namespace().unwrap_or("").to_string();
        let qname = attribute_qname(node, &attr)?;
        attrs.push((
            uri,
            attr.name().to_string(),
            qname,
            attr.value().to_string(),
        ));
    }
    for (q, v) in inherited_xml {
        let local = q.trim_start_matches("xml:");
        let present = attrs.iter().any(|a| a.0 == XML_NS && a.1 == local);
        if !present {
            attrs.push((XML_NS.to_string(), local.to_string(), q.clone(), v.clone()));
        }
    }
    attrs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));

    out.push(b'<');
    out.extend_from_slice(qname.as_bytes());
    for (prefix, uri) in &ns_out {
        if prefix.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"=\"");
        }
        escape_attribute(out, uri);
        out.push(b'"');
    }
    for (_, _, q, v) in &attrs {
        out.push(b' ');
        out.extend_from_slice(q.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attribute(out, v);
        out.push(b'"');
    }
    out.push(b'>');
    for child in node.children() {
        if Some(child.id()) == excluded {
            continue;
        }
        if child.is_element() {
            write_element(out, child, &ctx, excluded, depth + 1, &[])?;
        } else if child.is_text() {
            escape_text(out, child.text().unwrap_or(""));
        } else if child.is_pi() {
            write_pi(out, child);
        }
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(qname.as_bytes());
    out.push(b'>');
    Ok(())
}

/// The element's name as written (prefix included): roxmltree resolves prefixes to URIs,
/// and two prefixes may name one URI, so the source text is the only faithful record.
fn element_qname(node: Node<'_, '_>) -> Result<String> {
    let input = node.document().input_text();
    let start = node.range().start.saturating_add(1);
    let rest = input
        .get(start..)
        .ok_or_else(|| malformed("XML element", "name out of range".into()))?;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() || !name.ends_with(node.tag_name().name()) {
        return Err(malformed(
            "XML element",
            format!("unexpected name '{name}'"),
        ));
    }
    Ok(name.to_string())
}

/// The attribute's name as written (see [`element_qname`]).
fn attribute_qname(node: Node<'_, '_>, attr: &roxmltree::Attribute<'_, '_>) -> Result<String> {
    let input = node.document().input_text();
    let name = input
        .get(attr.range_qname())
        .ok_or_else(|| malformed("XML attribute", "name out of range".into()))?;
    if !name.ends_with(attr.name()) {
        return Err(malformed(
            "XML attribute",
            format!("unexpected name '{name}'"),
        ));
    }
    Ok(name.to_string())
}

fn write_pi(out: &mut Vec<u8>, node: Node<'_, '_>) {
    if let Some(pi) = node.pi() {
        out.extend_from_slice(b"<?");
        out.extend_from_slice(pi.target.as_bytes());
        if let Some(value) = pi.value.filter(|v| !v.is_empty()) {
            out.push(b' ');
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"?>");
    }
}

/// Text node escaping (C14N 1.1 §2.3): `&`, `<`, `>` and carriage return.
fn escape_text(out: &mut Vec<u8>, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Attribute value escaping (C14N 1.1 §2.3): `&`, `<`, `"`, tab, line feed, carriage
/// return.
fn escape_attribute(out: &mut Vec<u8>, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\t' => out.extend_from_slice(b"&#x9;"),
            '\n' => out.extend_from_slice(b"&#xA;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

fn malformed(what: &'static str, detail: String) -> Error {
    Error::Malformed { what, detail }
}

fn is_dsig<'a, 'i>(node: &Node<'a, 'i>, local: &str) -> bool {
    node.is_element()
        && node.tag_name().namespace() == Some(DSIG_NS)
        && node.tag_name().name() == local
}

/// The element children of `node`, which must be exactly the XML-DSig elements named.
fn dsig_children<'a, 'i>(node: Node<'a, 'i>, names: &[&str]) -> Result<Vec<Node<'a, 'i>>> {
    let children: Vec<Node<'a, 'i>> = node.children().filter(|n| n.is_element()).collect();
    let found: Vec<String> = children
        .iter()
        .map(|c| c.tag_name().name().to_string())
        .collect();
    let ok =
        children.len() == names.len() && children.iter().zip(names).all(|(c, n)| is_dsig(c, n));
    if !ok {
        return Err(malformed(
            "XML signature",
            format!(
                "ds:{} must contain exactly {:?}, found {:?}",
                node.tag_name().name(),
                names,
                found
            ),
        ));
    }
    Ok(children)
}

fn algorithm<'a>(node: Node<'a, '_>) -> Result<&'a str> {
    node.attribute("Algorithm").ok_or_else(|| {
        malformed(
            "XML signature",
            format!("ds:{} has no Algorithm", node.tag_name().name()),
        )
    })
}

fn require_algorithm(node: Node<'_, '_>, what: &'static str, expected: &str) -> Result<()> {
    let value = algorithm(node)?;
    if value != expected {
        return Err(Error::Unsupported {
            what,
            value: format!("{value} (supported: {expected})"),
        });
    }
    Ok(())
}

fn base64_text(node: Node<'_, '_>, what: &'static str) -> Result<Vec<u8>> {
    let text: String = node
        .children()
        .filter(|c| c.is_text())
        .flat_map(|c| c.text().unwrap_or("").chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| malformed(what, format!("bad base64: {e}")))
}

/// Verifies the enveloped XML signature of `xml` through its embedded certificate chain
/// to `root_der`, with certificates checked at `at_unix`.
pub fn verify_enveloped(xml: &[u8], root_der: &[u8], at_unix: i64) -> Result<VerifiedSignature> {
    let doc = parse_document(xml)?;
    let root = doc.root_element();

    let signatures: Vec<Node<'_, '_>> = doc
        .descendants()
        .filter(|n| is_dsig(n, "Signature"))
        .collect();
    let signature = match signatures.as_slice() {
        [] => {
            return Err(Error::NotSigned {
                what: "XML document",
                detail: "no ds:Signature element".into(),
            })
        }
        [one] => *one,
        more => {
            return Err(malformed(
                "XML signature",
                format!("{} ds:Signature elements, expected one", more.len()),
            ))
        }
    };
    if signature.parent_element().map(|p| p.id()) != Some(root.id()) {
        return Err(malformed(
            "XML signature",
            "ds:Signature must be a child of the document element (enveloped)".into(),
        ));
    }

    let parts = dsig_children(signature, &["SignedInfo", "SignatureValue", "KeyInfo"])?;
    let (signed_info, signature_value, key_info) = (parts[0], parts[1], parts[2]);
    let si = dsig_children(
        signed_info,
        &["CanonicalizationMethod", "SignatureMethod", "Reference"],
    )?;
    require_algorithm(si[0], "XML-DSig CanonicalizationMethod", C14N11)?;
    require_algorithm(si[1], "XML-DSig SignatureMethod", ECDSA_SHA384)?;
    let reference = si[2];
    if reference.attribute("URI") != Some("") {
        return Err(Error::Unsupported {
            what: "XML-DSig Reference URI (only URI=\"\", the whole document)",
            value: format!("{:?}", reference.attribute("URI")),
        });
    }
    let r = dsig_children(reference, &["Transforms", "DigestMethod", "DigestValue"])?;
    let transforms = dsig_children(r[0], &["Transform", "Transform"])?;
    require_algorithm(
        transforms[0],
        "XML-DSig first Transform",
        ENVELOPED_SIGNATURE,
    )?;
    require_algorithm(transforms[1], "XML-DSig second Transform", C14N11)?;
    require_algorithm(r[1], "XML-DSig DigestMethod", SHA384_DIGEST)?;
    let expected_digest = base64_text(r[2], "XML-DSig DigestValue")?;

    // The reference: the document less the signature, canonicalized, hashed.
    let canonical = canonicalize_document(&doc, Some(signature.id()))?;
    let digest = Sha384::digest(&canonical).to_vec();
    if digest != expected_digest {
        return Err(Error::DigestMismatch {
            what: "XML-DSig reference (the signed document's content)",
            computed: hex::encode(&digest),
            expected: hex::encode(&expected_digest),
        });
    }

    // The certificates.
    let x509_data = dsig_children(key_info, &["X509Data"])?[0];
    let cert_nodes: Vec<Node<'_, '_>> = x509_data
        .children()
        .filter(|n| is_dsig(n, "X509Certificate"))
        .collect();
    if cert_nodes.is_empty() {
        return Err(malformed(
            "XML signature",
            "ds:X509Data holds no ds:X509Certificate".into(),
        ));
    }
    if cert_nodes.len() > MAX_CHAIN_LEN {
        return Err(Error::LimitExceeded {
            what: "certificates in ds:X509Data",
            limit: MAX_CHAIN_LEN,
            actual: cert_nodes.len(),
        });
    }
    let ders = cert_nodes
        .iter()
        .map(|n| base64_text(*n, "XML-DSig X509Certificate"))
        .collect::<Result<Vec<_>>>()?;

    // The signature over SignedInfo, with the first certificate's key.
    let signed = canonicalize_subtree(signed_info)?;
    let raw = base64_text(signature_value, "XML-DSig SignatureValue")?;
    let sig = Signature::from_slice(&raw).map_err(|_| {
        Error::BadSignature(format!(
            "XML-DSig SignatureValue is not a P-384 r||s pair ({} bytes, expected 96)",
            raw.len()
        ))
    })?;
    let signer = parse_cert(&ders[0])?;
    let key = p384_key(&signer, "RIM signing certificate")?;
    key.verify(&signed, &sig).map_err(|_| {
        Error::BadSignature("the XML signature over ds:SignedInfo does not verify".into())
    })?;

    let chain_subjects = verify_chain(&ders, root_der, at_unix)?;
    Ok(VerifiedSignature {
        signer_der: ders[0].clone(),
        chain_subjects,
        digest,
    })
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| malformed("RIM certificate", e.to_string()))
}

fn p384_key(cert: &X509Certificate<'_>, what: &str) -> Result<VerifyingKey> {
    VerifyingKey::from_sec1_bytes(cert.public_key().subject_public_key.data.as_ref()).map_err(
        |_| Error::Unsupported {
            what: "RIM certificate key (only ECDSA P-384)",
            value: format!("{what} '{}'", cert.subject()),
        },
    )
}

fn check_validity(cert: &X509Certificate<'_>, at: i64) -> Result<()> {
    let what = format!("RIM certificate '{}'", cert.subject());
    crate::unix_time::check_certificate_window(cert, &what, at)
}

/// Verifies `ders` (signer first; a trailing copy of the root is allowed) up to the
/// pinned `root_der`: names, ECDSA P-384/SHA-384 signatures, CA flags, validity at `at`.
/// Returns the subjects, signer first, root last.
fn verify_chain(ders: &[Vec<u8>], root_der: &[u8], at: i64) -> Result<Vec<String>> {
    let root = parse_cert(root_der)?;
    let mut chain: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
    while chain.len() > 1 && chain.last() == Some(&root_der) {
        chain.pop();
    }
    let certs = chain
        .iter()
        .map(|d| parse_cert(d))
        .collect::<Result<Vec<_>>>()?;
    let mut subjects = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        let issuer = certs.get(i + 1).unwrap_or(&root);
        let anchored = i + 1 == certs.len();
        if cert.issuer().as_raw() != issuer.subject().as_raw() {
            if anchored {
                return Err(Error::UntrustedAnchor {
                    tee: "NVIDIA RIM",
                    detail: format!(
                        "the chain ends at '{}', issued by '{}', not by the pinned root '{}'",
                        cert.subject(),
                        cert.issuer(),
                        root.subject()
                    ),
                });
            }
            return Err(Error::BadSignature(format!(
                "RIM certificate '{}' names issuer '{}', but the next certificate is '{}'",
                cert.subject(),
                cert.issuer(),
                issuer.subject()
            )));
        }
        verify_cert_signature(cert, issuer)?;
        let is_ca = issuer
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(Error::BadSignature(format!(
                "RIM certificate issuer '{}' is not a CA",
                issuer.subject()
            )));
        }
        if i == 0 {
            if let Ok(Some(ku)) = cert.key_usage() {
                if !ku.value.digital_signature() && !ku.value.non_repudiation() {
                    return Err(Error::BadSignature(format!(
                        "RIM signing certificate '{}' does not allow signatures (key usage)",
                        cert.subject()
                    )));
                }
            }
        }
        check_validity(cert, at)?;
        subjects.push(cert.subject().to_string());
    }
    check_validity(&root, at)?;
    subjects.push(root.subject().to_string());
    Ok(subjects)
}

fn verify_cert_signature(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<()> {
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    if oid != OID_ECDSA_WITH_SHA384 {
        return Err(Error::Unsupported {
            what: "RIM certificate signature algorithm (only ecdsa-with-SHA384)",
            value: oid,
        });
    }
    let key = p384_key(issuer, "issuer")?;
    let sig = Signature::from_der(cert.signature_value.data.as_ref()).map_err(|_| {
        Error::BadSignature(format!(
            "RIM certificate '{}' has a malformed ECDSA signature",
            cert.subject()
        ))
    })?;
    key.verify(cert.tbs_certificate.as_ref(), &sig)
        .map_err(|_| {
            Error::BadSignature(format!(
                "RIM certificate '{}' is not signed by '{}'",
                cert.subject(),
                issuer.subject()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        let doc = parse_document(xml.as_bytes()).unwrap();
        String::from_utf8(canonicalize_document(&doc, None).unwrap()).unwrap()
    }

    #[test]
    fn gpu_c14n_orders_escapes_and_expands() {
        // Attribute order by (namespace URI, local name), unprefixed first; empty
        // elements as pairs; escaping of text and attribute values; comments dropped.
        let got = c14n(
            "<?xml version=\"1.0\"?>\n<!-- c --><r xmlns:b=\"urn:b\" xmlns:a=\"urn:a\" z=\"1\" b:y=\"2\" a:y=\"3\" x='&quot;&#9;&#10;&lt;'>\r\n <e/><!-- x -->t&amp;&gt;&#13;</r>",
        );
        assert_eq!(
            got,
            "<r xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" x=\"&quot;&#x9;&#xA;&lt;\" z=\"1\" a:y=\"3\" b:y=\"2\">\n <e></e>t&amp;&gt;&#xD;</r>"
        );
    }

    #[test]
    fn gpu_c14n_renders_namespaces_once_and_undeclares_default() {
        let got = c14n(
            "<r xmlns=\"urn:d\" xmlns:p=\"urn:p\"><p:c xmlns:p=\"urn:p\"><n xmlns=\"\"/></p:c></r>",
        );
        assert_eq!(
            got,
            "<r xmlns=\"urn:d\" xmlns:p=\"urn:p\"><p:c><n xmlns=\"\"></n></p:c></r>"
        );
    }

    #[test]
    fn gpu_c14n_subtree_carries_in_scope_namespaces() {
        let xml =
            "<r xmlns=\"urn:d\" xmlns:p=\"urn:p\" xml:lang=\"en\"><p:s a=\"1\"><p:t/></p:s></r>";
        let doc = parse_document(xml.as_bytes()).unwrap();
        let s = doc
            .descendants()
            .find(|n| n.tag_name().name() == "s")
            .unwrap();
        let got = String::from_utf8(canonicalize_subtree(s).unwrap()).unwrap();
        assert_eq!(
            got,
            "<p:s xmlns=\"urn:d\" xmlns:p=\"urn:p\" a=\"1\" xml:lang=\"en\"><p:t></p:t></p:s>"
        );
    }

    #[test]
    fn gpu_xml_limits_refuse_dtd_and_depth() {
        assert!(parse_document(b"<!DOCTYPE r [<!ENTITY a \"b\">]><r>&a;</r>").is_err());
        let deep = "<a>".repeat(MAX_XML_DEPTH + 2) + &"</a>".repeat(MAX_XML_DEPTH + 2);
        assert!(matches!(
            parse_document(deep.as_bytes()),
            Err(Error::LimitExceeded { .. })
        ));
        let big = vec![b' '; MAX_XML_BYTES + 1];
        assert!(matches!(
            parse_document(&big),
            Err(Error::LimitExceeded { .. })
        ));
    }

    #[test]
    fn gpu_pinned_rim_root_parses() {
        let der = nvidia_rim_root_der().unwrap();
        let cert = parse_cert(&der).unwrap();
        assert!(cert
            .subject()
            .to_string()
            .contains("NVIDIA CoRIM signing Root CA"));
    }
}
