//! The object identifiers this project owns.
//!
//! We own the arc `2.25.82655435228990311331305050791691260688` (the UUID
//! `3e2edb97-4c81-4f1c-8ad9-f3b30de19310` read as an integer, as ITU-T X.667 allows;
//! it needs no registration). Its second arc is 128 bits wide, which the usual X.509
//! crates cannot hold in their `u32`/`u64` arcs, so this module encodes OIDs itself and
//! parsers compare the encoded bytes.

/// The UUID under `2.25` that roots every Cocoon OID.
pub const COCOON_ARC_UUID: u128 = 0x3e2edb97_4c81_4f1c_8ad9_f3b30de19310;

/// Dotted form of the Cocoon root arc.
pub const COCOON_ARC: &str = "2.25.82655435228990311331305050791691260688";

/// Dotted form of the X.509 extension that carries attestation evidence (`<arc>.1`).
pub const EVIDENCE_EXTENSION: &str = "2.25.82655435228990311331305050791691260688.1";

/// The arcs of the evidence extension OID.
pub const EVIDENCE_EXTENSION_ARCS: [u128; 4] = [2, 25, COCOON_ARC_UUID, 1];

/// DER content octets (without tag and length) of an OID with the given arcs.
///
/// The first two arcs are combined as `40 * a + b` (X.690 8.19.4); every subidentifier
/// is written base 128, most significant group first, with the high bit set on all but
/// the last byte.
pub fn encode_oid_content(arcs: &[u128]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut subidentifiers = Vec::with_capacity(arcs.len());
    match arcs {
        [] => return out,
        [first] => subidentifiers.push(first * 40),
        [first, second, rest @ ..] => {
            subidentifiers.push(first * 40 + second);
            subidentifiers.extend_from_slice(rest);
        }
    }
    for mut value in subidentifiers {
        let mut groups = vec![(value & 0x7f) as u8];
        value >>= 7;
        while value > 0 {
            groups.push(0x80 | (value & 0x7f) as u8);
            value >>= 7;
        }
        groups.reverse();
        out.extend_from_slice(&groups);
    }
    out
}

/// DER content octets of the evidence extension OID.
pub fn evidence_extension_oid_content() -> Vec<u8> {
    encode_oid_content(&EVIDENCE_EXTENSION_ARCS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_constant_matches_decimal_arc() {
        assert_eq!(
            COCOON_ARC_UUID.to_string(),
            COCOON_ARC.trim_start_matches("2.25.")
        );
        assert_eq!(format!("{COCOON_ARC}.1"), EVIDENCE_EXTENSION);
    }

    #[test]
    fn encodes_known_oids() {
        // 1.2.840.10045.2.1 (id-ecPublicKey), a well-known DER encoding.
        assert_eq!(
            encode_oid_content(&[1, 2, 840, 10045, 2, 1]),
            [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]
        );
        // 2.25.<uuid>: 2*40+25 = 105 = 0x69, then the arc in groups of 7 bits, then 1.
        let enc = evidence_extension_oid_content();
        assert_eq!(enc[0], 0x69);
        assert_eq!(*enc.last().unwrap(), 0x01);
        let bits = 128 - COCOON_ARC_UUID.leading_zeros() as usize;
        assert_eq!(enc.len(), 1 + bits.div_ceil(7) + 1);
    }

    #[test]
    fn x509_parser_reads_the_same_oid_back() {
        let enc = evidence_extension_oid_content();
        let oid = x509_parser::der_parser::oid::Oid::new(enc.into());
        assert_eq!(oid.to_id_string(), EVIDENCE_EXTENSION);
    }
}
