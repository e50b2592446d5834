//! Signed-manifest parsing on untrusted bytes: `Manifest::open` (the DSSE envelope) and
//! `Manifest::from_json` (the payload) never panic; an accepted payload re-encodes to
//! JSON that parses back to the same manifest.
#![no_main]

use cocoon_attestation::manifest::{Manifest, ManifestPublicKey};
use libfuzzer_sys::fuzz_target;

/// The RFC 8410 example key that signs the seed envelope.
const SEED_SIGNER: [u8; 32] = [
    0x19, 0xbf, 0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc, 0x3b,
    0x96, 0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad, 0x70, 0x31,
    0x66, 0xe1,
];

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::open(data, &[ManifestPublicKey(SEED_SIGNER)]);
    if let Ok(manifest) = Manifest::from_json(data) {
        let json = manifest.to_json().expect("an accepted manifest encodes");
        let back = Manifest::from_json(&json).expect("a re-encoded manifest parses");
        assert_eq!(back, manifest);
    }
});
