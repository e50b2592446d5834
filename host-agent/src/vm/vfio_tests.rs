//! The pre-flight against fake sysfs and /dev trees built in a temporary directory.

use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A temporary host: `sys/` and `dev/` under a fresh directory, removed on drop.
struct FakeHost {
    root: PathBuf,
}

impl FakeHost {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "cocoon-vfio-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
        Self { root }
    }

    fn paths(&self) -> HostPaths {
        HostPaths {
            sysfs: self.root.join("sys"),
            dev: self.root.join("dev"),
        }
    }

    /// A PCI device bound to `driver` (none: unbound) in IOMMU `group`.
    fn device(&self, address: &str, driver: Option<&str>, group: &str) -> &Self {
        let sys = self.root.join("sys");
        let device = sys.join("bus/pci/devices").join(address);
        std::fs::create_dir_all(&device).unwrap();
        if let Some(driver) = driver {
            symlink(
                sys.join("bus/pci/drivers").join(driver),
                device.join("driver"),
            )
            .unwrap();
        }
        let group_dir = sys.join("kernel/iommu_groups").join(group);
        std::fs::create_dir_all(group_dir.join("devices")).unwrap();
        symlink(&device, group_dir.join("devices").join(address)).unwrap();
        symlink(&group_dir, device.join("iommu_group")).unwrap();
        self
    }

    fn vfio_node(&self, group: &str) -> &Self {
        std::fs::write(self.root.join("dev/vfio").join(group), b"").unwrap();
        self
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const GPU: &str = "0000:3b:00.0";

fn check(host: &FakeHost, devices: &[&str]) -> Result<Vec<ReadyDevice>> {
    let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
    preflight(&devices, &host.paths())
}

fn refusal(host: &FakeHost, devices: &[&str]) -> String {
    let message = check(host, devices)
        .expect_err("must be refused")
        .to_string();
    assert!(message.contains("GPU 0000:"), "names the device: {message}");
    message
}

#[test]
fn a_gpu_bound_to_vfio_alone_in_its_group_passes() {
    let host = FakeHost::new();
    host.device(GPU, Some("vfio-pci"), "12").vfio_node("12");
    assert_eq!(
        check(&host, &[GPU]).unwrap(),
        vec![ReadyDevice {
            address: GPU.into(),
            iommu_group: "12".into()
        }]
    );
}

#[test]
fn a_gpu_bound_to_nvidia_is_refused() {
    let host = FakeHost::new();
    host.device(GPU, Some("nvidia"), "12").vfio_node("12");
    let message = refusal(&host, &[GPU]);
    assert!(
        message.contains("\"nvidia\"") && message.contains("vfio-pci"),
        "{message}"
    );
    let unbound = FakeHost::new();
    unbound.device(GPU, None, "12").vfio_node("12");
    assert!(refusal(&unbound, &[GPU]).contains("no driver"));
}

#[test]
fn a_shared_iommu_group_is_refused_listing_the_others() {
    let host = FakeHost::new();
    host.device(GPU, Some("vfio-pci"), "12")
        .device("0000:3b:00.1", Some("snd_hda_intel"), "12")
        .device("0000:3a:00.0", Some("pcieport"), "12")
        .vfio_node("12");
    let message = refusal(&host, &[GPU]);
    assert!(
        message.contains("IOMMU group 12 also holds 0000:3a:00.0, 0000:3b:00.1"),
        "{message}"
    );
}

#[test]
fn group_members_that_are_passed_through_too_are_fine() {
    let host = FakeHost::new();
    host.device(GPU, Some("vfio-pci"), "12")
        .device("0000:3b:00.1", Some("vfio-pci"), "12")
        .vfio_node("12");
    assert_eq!(check(&host, &[GPU, "0000:3b:00.1"]).unwrap().len(), 2);
}

#[test]
fn a_missing_device_or_node_is_refused() {
    let host = FakeHost::new();
    assert!(refusal(&host, &[GPU]).contains("no such PCI device"));
    host.device(GPU, Some("vfio-pci"), "12");
    let message = refusal(&host, &[GPU]);
    assert!(
        message.contains("dev/vfio/12") && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn a_device_without_an_iommu_group_is_refused() {
    let host = FakeHost::new();
    let device = host.root.join("sys/bus/pci/devices").join(GPU);
    std::fs::create_dir_all(&device).unwrap();
    symlink(
        host.root.join("sys/bus/pci/drivers/vfio-pci"),
        device.join("driver"),
    )
    .unwrap();
    assert!(refusal(&host, &[GPU]).contains("no IOMMU group"));
}
