//! The vTPM parsers on untrusted bytes: TPM quote (`TPMS_ATTEST`), attestation key
//! (`TPMT_PUBLIC`), signature (`TPMT_SIGNATURE`), Azure's HCL report and its runtime
//! data, the Azure evidence JSON and GCE's attestation protobuf with their whole checks.
//! None may panic.
#![no_main]

use cocoon_attestation::vtpm::azure::AzureEvidence;
use cocoon_attestation::vtpm::google::GceAttestation;
use cocoon_attestation::vtpm::hcl::HclReport;
use cocoon_attestation::vtpm::{AttestationKey, QuoteSignature, TpmQuote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = TpmQuote::parse(data) {
        let _ = quote.selected().count();
    }
    if let Ok(ak) = AttestationKey::parse(data) {
        if let Ok(signature) = QuoteSignature::parse(data) {
            let _ = signature.verify(&ak.key, data);
        }
    }
    let _ = QuoteSignature::parse(data);
    if let Ok(hcl) = HclReport::parse(data) {
        let _ = hcl.runtime_data_digest();
        if let Ok(runtime) = hcl.runtime() {
            let _ = runtime.attestation_key();
        }
    }
    if let Ok(evidence) = AzureEvidence::from_json(data) {
        let _ = evidence.pcr_values();
        let _ = evidence.check(b"challenge");
    }
    if let Ok(attestation) = GceAttestation::from_protobuf(data) {
        let _ = attestation.check(&[0x90, 0x09], 1_767_225_600);
    }
});
