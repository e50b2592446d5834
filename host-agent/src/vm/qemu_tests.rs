//! The whole argument vector, pinned per kind. Each expected option carries the QEMU
//! document it follows, so a reviewer can check them one by one.

use std::path::Path;

use super::*;
use crate::vm::config::tests::{FILE, PLAIN};

/// `config_tests`' plain config made into `kind` (a `kind = ...` line, maybe more of
/// `[vm]`), with `firmware` (a line or nothing), the internal port and vsock forwarded,
/// and `extra` sections.
fn config(kind: &str, firmware: &str, extra: &str) -> LoadedConfig {
    let text = PLAIN
        .replace("accel = \"tcg\"\n", "")
        .replace("kind = \"plain\"", kind)
        .replace("rootfs =", &format!("{firmware}\nrootfs ="))
        .replace(
            "https_host_port = 18443",
            "https_host_port = 18443\ninternal_guest_port = 8444\ninternal_host_port = 18444\n\
             vsock_guest_cid = 3",
        )
        + extra;
    LoadedConfig::parse(Path::new(FILE), &text).unwrap_or_else(|e| panic!("test config: {e}"))
}

fn argv(loaded: &LoadedConfig, accel: Accel) -> Vec<String> {
    let cmdline = loaded.kernel_cmdline().unwrap_or_else(|e| panic!("{e}"));
    qemu_args(loaded, accel, &cmdline)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The head every kind starts with (qemu-options.hx: -nodefaults, -no-user-config,
/// -display none, -no-reboot).
const HEAD: [&str; 6] = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-accel",
];

/// Direct boot and the two read-only disks (qemu-options.hx -kernel/-initrd/-append,
/// -drive if=none + -device virtio-blk-pci; root then model, slots 2 and 3), `virtio`
/// appended to each virtio device.
fn boot_and_disks(virtio: &str) -> Vec<String> {
    strings(&[
        "-kernel",
        "/img/vmlinuz",
        "-initrd",
        "/img/initrd.img",
        "-append",
        "console=ttyS0 root=/dev/vda ro",
        "-drive",
        "file=/img/rootfs.img,if=none,id=root,format=raw,readonly=on",
        "-device",
        &format!("virtio-blk-pci,drive=root,bus=pcie.0,addr=0x2{virtio}"),
        "-drive",
        "file=/models/model.img,if=none,id=model,format=raw,readonly=on",
        "-device",
        &format!("virtio-blk-pci,drive=model,bus=pcie.0,addr=0x3{virtio}"),
        // qemu-options.hx -netdev user,hostfwd=tcp:HOSTADDR:HOSTPORT-:GUESTPORT
        "-netdev",
        "user,id=net0,hostfwd=tcp:127.0.0.1:18443-:8443,hostfwd=tcp:127.0.0.1:18444-:8444",
        "-device",
        &format!("virtio-net-pci,netdev=net0{virtio}"),
        // vhost-vsock-pci,guest-cid= (qemu-options.hx / docs vhost-vsock)
        "-device",
        &format!("vhost-vsock-pci,guest-cid=3{virtio}"),
    ])
}

/// Virtio under TDX/SNP: modern only, VIRTIO_F_ACCESS_PLATFORM (the guest bounces DMA
/// through shared memory).
const CC_VIRTIO: &str = ",disable-legacy=on,iommu_platform=on";

fn serial() -> Vec<String> {
    // qemu-options.hx -serial file:PATH
    strings(&["-serial", "file:/var/log/cocoon/serial.log"])
}

/// Everything a TDX argv has before the boot options.
fn tdx_head() -> Vec<String> {
    let mut expected = strings(&HEAD);
    expected.extend(strings(&[
        "kvm", // tdx.rst: -accel kvm
        // tdx.rst: split irqchip, confidential-guest-support=<tdx-guest id>; no HPET
        "-machine",
        "q35,kernel-irqchip=split,confidential-guest-support=tdx0,hpet=off",
        "-cpu",
        "host", // tdx.rst: -cpu host
        "-smp",
        "2",
        "-m",
        "4096M",
        // tdx.rst / qom.json: tdx-guest, quote-generation-socket is a SocketAddress
        // (JSON form; cid and port as strings, as QEMU documents them)
        "-object",
        r#"{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}"#,
        "-bios",
        "/img/TDVF.fd", // tdx.rst: TDVF is loaded with -bios
    ]));
    expected
}

#[test]
fn tdx_argv() {
    let loaded = config(
        "kind = \"tdx\"",
        "firmware = \"/img/TDVF.fd\"",
        "[tdx]\nquote_generation_socket = { vsock = { cid = 2, port = 4050 } }\n",
    );
    let mut expected = tdx_head();
    expected.extend(boot_and_disks(CC_VIRTIO));
    expected.extend(serial());
    assert_eq!(argv(&loaded, Accel::Kvm), expected);
}

#[test]
fn tdx_guest_object_variants() {
    let unix = config(
        "kind = \"tdx\"",
        "firmware = \"/img/TDVF.fd\"",
        "[tdx]\nquote_generation_socket = { unix = { path = \"/run/qgs.sock\" } }\nattributes = 0x10000000\nsept_ve_disable = true\n",
    );
    assert_eq!(
        tdx_guest_object(&unix),
        r#"{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{"type":"unix","path":"/run/qgs.sock"},"attributes":268435456,"sept-ve-disable":true}"#
    );
    let bare = config("kind = \"tdx\"", "firmware = \"/img/TDVF.fd\"", "");
    assert_eq!(
        tdx_guest_object(&bare),
        r#"{"qom-type":"tdx-guest","id":"tdx0"}"#
    );
}

#[test]
fn snp_argv() {
    let loaded = config(
        "kind = \"sev-snp\"",
        "firmware = \"/img/OVMF.amdsev.fd\"",
        "[snp]\nhost_data = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n",
    );
    let mut expected = strings(&HEAD);
    expected.extend(strings(&[
        "kvm",
        // amd-memory-encryption.rst: confidential-guest-support=<sev-snp-guest id>,
        // RAM from the memfd backend, vmport off
        "-machine",
        "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
        "-cpu",
        "EPYC-v4", // the SNP default model
        "-smp",
        "2",
        "-m",
        "4096M",
        // memory-backend-memfd as the guest's RAM (same size as -m)
        "-object",
        "memory-backend-memfd,id=ram1,size=4096M,share=true,prealloc=false",
        // amd-memory-encryption.rst + qom.json sev-snp-guest: cbitpos, reduced-phys-bits,
        // policy, kernel-hashes (measure kernel/initrd/cmdline), host-data (base64, 32 B)
        "-object",
        "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on,host-data=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "-bios",
        "/img/OVMF.amdsev.fd", // the AmdSev OVMF build, loaded with -bios
    ]));
    expected.extend(boot_and_disks(CC_VIRTIO));
    expected.extend(serial());
    assert_eq!(argv(&loaded, Accel::Kvm), expected);
}

#[test]
fn plain_tcg_argv_with_simulated_measurements() {
    let loaded = config(
        "kind = \"plain\"\naccel = \"tcg\"",
        "",
        "[simulated]\nmeasurements = \"/img/reference.json\"\n",
    );
    let mut expected = strings(&HEAD);
    expected.extend(strings(&[
        "tcg", // qemu-options.hx -accel tcg
        "-machine", "q35", "-cpu", "max", // every feature TCG can emulate
        "-smp", "2", "-m", "4096M",
    ]));
    expected.extend(boot_and_disks(""));
    expected.extend(strings(&[
        // qemu-options.hx -fw_cfg name=opt/...,file=: the guest reads it read-only
        "-fw_cfg",
        "name=opt/cocoon/simulated-measurements,file=/img/reference.json",
    ]));
    expected.extend(serial());
    assert_eq!(argv(&loaded, Accel::Tcg), expected);
}

#[test]
fn gpu_argv() {
    let loaded = config(
        "kind = \"tdx\"",
        "firmware = \"/img/TDVF.fd\"",
        "[tdx]\nquote_generation_socket = { vsock = { cid = 2, port = 4050 } }\n\
         [gpu]\ndevices = [\"0000:3b:00.0\", \"0000:86:00.0\"]\n",
    );
    let mut expected = tdx_head();
    expected.extend(boot_and_disks(CC_VIRTIO));
    expected.extend(strings(&[
        // A PCIe root port per GPU (q35's root bus has no hotpluggable slots), each its
        // own chassis; vfio-pci,host= behind it (docs/pcie.txt, vfio-pci device)
        "-device",
        "pcie-root-port,id=rp0,bus=pcie.0,chassis=1",
        "-device",
        "vfio-pci,host=0000:3b:00.0,bus=rp0",
        "-device",
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=2",
        "-device",
        "vfio-pci,host=0000:86:00.0,bus=rp1",
        // OVMF's 64-bit MMIO window (fw_cfg opt/ovmf/X-PciMmio64Mb), large enough for
        // H100/H200 BARs
        "-fw_cfg",
        "name=opt/ovmf/X-PciMmio64Mb,string=262144",
    ]));
    expected.extend(serial());
    assert_eq!(argv(&loaded, Accel::Kvm), expected);
}

#[test]
fn accel_choice() {
    assert_eq!(Accel::resolve(None, || false), Accel::Kvm);
    assert_eq!(Accel::resolve(Some(AccelChoice::Tcg), || true), Accel::Tcg);
    assert_eq!(Accel::resolve(Some(AccelChoice::Auto), || true), Accel::Kvm);
    assert_eq!(
        Accel::resolve(Some(AccelChoice::Auto), || false),
        Accel::Tcg
    );
    // Plain under kvm uses the host's CPU model.
    let loaded = config("kind = \"plain\"\naccel = \"kvm\"", "", "");
    let args = argv(&loaded, Accel::Kvm);
    let cpu_at = args.iter().position(|a| a == "-cpu").unwrap_or(0);
    assert_eq!(args.get(cpu_at + 1).map(String::as_str), Some("host"));
}

#[test]
fn shell_line_quotes_what_needs_it() {
    let line = shell_line(
        Path::new("/usr/bin/qemu-system-x86_64"),
        &strings(&[
            "-append",
            "console=ttyS0 ro",
            "-object",
            r#"{"a":"it's"}"#,
            "-m",
            "4096M",
        ]),
    );
    assert_eq!(
        line,
        r#"/usr/bin/qemu-system-x86_64 -append 'console=ttyS0 ro' -object '{"a":"it'\''s"}' -m 4096M"#
    );
}
