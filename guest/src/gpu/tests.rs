//! The checks against fake driver answers: the development GPU with one fault each, and
//! a fake NVML whose every query fails.

use super::*;

/// A fake NVML whose CC and device queries answer as configured.
struct FakeNvml {
    driver: GpuQuery<String>,
    count: GpuQuery<u32>,
    cc: GpuQuery<CcSettings>,
}

impl GpuSystem for FakeNvml {
    fn driver_version(&self) -> GpuQuery<String> {
        self.driver.clone()
    }
    fn device_count(&self) -> GpuQuery<u32> {
        self.count.clone()
    }
    fn device_name(&self, _: u32) -> GpuQuery<String> {
        Ok("NVIDIA H200".into())
    }
    fn cc_settings(&self) -> GpuQuery<CcSettings> {
        self.cc.clone()
    }
    fn ready_state(&self) -> GpuQuery<bool> {
        Err(GpuQueryError::Failed("GPU is lost".into()))
    }
    fn set_ready_state(&self, _: bool) -> GpuQuery<()> {
        Ok(())
    }
    fn memory(&self, _: u32) -> GpuQuery<GpuMemory> {
        Ok(GpuMemory {
            free: 100,
            total: 200,
        })
    }
    fn attestation_report(&self, _: u32, _: &[u8; 32]) -> GpuQuery<Vec<u8>> {
        Ok(b"not SPDM".to_vec())
    }
    fn certificate_chain_pem(&self, _: u32) -> GpuQuery<Vec<u8>> {
        Ok(Vec::new())
    }
}

fn required(protected_pcie: bool) -> GpuRequirement {
    GpuRequirement {
        vendor: "nvidia".into(),
        protected_pcie,
        confidential: true,
    }
}

fn check_of(e: Error) -> (&'static str, String) {
    match e {
        Error::Gpu { check, detail } => (check, detail),
        other => panic!("not a GPU check failure: {other}"),
    }
}

fn fake(cc: GpuQuery<CcSettings>) -> FakeNvml {
    FakeNvml {
        driver: Ok("580.95.05".into()),
        count: Ok(1),
        cc,
    }
}

const CC_ON: CcSettings = CcSettings {
    cc_enabled: true,
    dev_tools: false,
    protected_pcie: false,
};

#[test]
fn gpu_fake_nvml_every_failing_query_names_its_check() {
    let no_lib = FakeNvml {
        driver: Err(GpuQueryError::Failed("libnvidia-ml.so.1: not found".into())),
        ..fake(Ok(CC_ON))
    };
    let (check, detail) = check_of(check_before_evidence(&no_lib, &required(false)).unwrap_err());
    assert_eq!(check, GpuCheck::Driver.name());
    assert!(detail.contains("libnvidia-ml"), "{detail}");

    let none = FakeNvml {
        count: Ok(0),
        ..fake(Ok(CC_ON))
    };
    let (check, _) = check_of(check_before_evidence(&none, &required(false)).unwrap_err());
    assert_eq!(check, GpuCheck::Device.name());

    // A GPU without CC (an A100, a consumer card, an old driver): reported, not a crash.
    let no_cc = fake(Err(GpuQueryError::NotSupported("settings".into())));
    let (check, detail) = check_of(check_before_evidence(&no_cc, &required(false)).unwrap_err());
    assert_eq!(check, GpuCheck::CcMode.name());
    assert!(detail.contains("confidential computing is off"), "{detail}");

    let off = fake(Ok(CcSettings {
        cc_enabled: false,
        ..CC_ON
    }));
    let (check, _) = check_of(check_before_evidence(&off, &required(false)).unwrap_err());
    assert_eq!(check, GpuCheck::CcMode.name());

    let devtools = fake(Ok(CcSettings {
        dev_tools: true,
        ..CC_ON
    }));
    let (check, _) = check_of(check_before_evidence(&devtools, &required(false)).unwrap_err());
    assert_eq!(check, GpuCheck::DevTools.name());

    // Protected PCIe must be exactly as configured, both ways.
    let (check, detail) =
        check_of(check_before_evidence(&fake(Ok(CC_ON)), &required(true)).unwrap_err());
    assert_eq!(check, GpuCheck::ProtectedPcie.name());
    assert!(
        detail.contains("is off") && detail.contains("requires it on"),
        "{detail}"
    );
    let ppcie = fake(Ok(CcSettings {
        protected_pcie: true,
        ..CC_ON
    }));
    check_before_evidence(&ppcie, &required(true)).unwrap();

    // Evidence that is not SPDM; a ready state that cannot be read back.
    let inventory = check_before_evidence(&fake(Ok(CC_ON)), &required(false)).unwrap();
    assert_eq!(inventory.least_free_memory(), Some(100));
    let err = GpuAttestation::collect(&fake(Ok(CC_ON)), &inventory, b"spki", &[], 0).unwrap_err();
    assert_eq!(check_of(err).0, GpuCheck::Evidence.name());
    let (check, _) = check_of(set_ready(&fake(Ok(CC_ON))).unwrap_err());
    assert_eq!(check, GpuCheck::ReadyState.name());
}

#[test]
fn gpu_unattested_mode_reports_cc_off_and_stops_at_nothing_but_the_driver() {
    let unattested = GpuRequirement {
        confidential: false,
        ..required(true)
    };
    let no_cc = fake(Err(GpuQueryError::NotSupported("settings".into())));
    let inventory = check_before_evidence(&no_cc, &unattested).unwrap();
    assert!(!inventory.cc.cc_enabled);
    assert_eq!(inventory.least_free_memory(), Some(100));
    // Without a driver there is nothing to serve from: still refused.
    let no_lib = FakeNvml {
        driver: Err(GpuQueryError::Failed("libnvidia-ml.so.1: not found".into())),
        ..fake(Ok(CC_ON))
    };
    let (check, _) = check_of(check_before_evidence(&no_lib, &unattested).unwrap_err());
    assert_eq!(check, GpuCheck::Driver.name());
}

#[cfg(feature = "simulated")]
mod simulated_gpu {
    use super::*;
    use crate::gpu::simulated::{GpuFault, SimulatedGpu};
    use cocoon_attestation::gpu::{gpu_nonce_for_key, verify_served_gpu};

    const NOW: i64 = 1_800_000_000;

    fn roots() -> Vec<GpuRoot> {
        vec![cocoon_attestation_dev::DevGpuPki::dev().unwrap().root()]
    }

    fn start(fault: Option<GpuFault>) -> Result<GpuAttestation> {
        let gpu = SimulatedGpu::new(fault).unwrap();
        let inventory = check_before_evidence(&gpu, &required(false))?;
        let attestation = GpuAttestation::collect(&gpu, &inventory, b"the TLS key", &roots(), NOW)?;
        set_ready(&gpu)?;
        Ok(attestation)
    }

    #[test]
    fn gpu_simulated_device_passes_every_check_with_evidence_for_the_key() {
        let attestation = start(None).unwrap();
        let doc = &attestation.document;
        assert_eq!(doc.nonce, hex::encode(gpu_nonce_for_key(b"the TLS key")));
        assert_eq!(doc.evidence_digest, hex::encode(attestation.digest));
        let check = verify_served_gpu(
            &doc.to_json(),
            b"the TLS key",
            &attestation.digest,
            NOW,
            &roots(),
            &[],
        );
        assert!(check.verified, "{:?}", check.errors);
        // The same evidence is not fresh for another key.
        let check = verify_served_gpu(
            &doc.to_json(),
            b"another key",
            &attestation.digest,
            NOW,
            &roots(),
            &[],
        );
        assert!(!check.verified);
    }

    #[test]
    fn gpu_simulated_faults_each_stop_the_guest_at_their_check() {
        for (fault, expected) in [
            (GpuFault::NoDriver, GpuCheck::Driver),
            (GpuFault::NoDevice, GpuCheck::Device),
            (GpuFault::CcUnsupported, GpuCheck::CcMode),
            (GpuFault::CcOff, GpuCheck::CcMode),
            (GpuFault::DevTools, GpuCheck::DevTools),
            (GpuFault::ProtectedPcie, GpuCheck::ProtectedPcie),
            (GpuFault::StaleReport, GpuCheck::Evidence),
            (GpuFault::ForeignChain, GpuCheck::Evidence),
            (GpuFault::NotReady, GpuCheck::ReadyState),
        ] {
            let err = start(Some(fault))
                .err()
                .unwrap_or_else(|| panic!("{fault:?} passed"));
            assert_eq!(check_of(err).0, expected.name(), "{fault:?}");
        }
    }
}
