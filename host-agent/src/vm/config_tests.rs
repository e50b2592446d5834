use super::*;

/// A complete plain config with absolute paths; tests add or replace lines.
pub(crate) const PLAIN: &str = r#"
[vm]
kind = "plain"
qemu = "/usr/bin/qemu-system-x86_64"
vcpus = 2
memory_mib = 4096
accel = "tcg"
serial_log = "/var/log/cocoon/serial.log"

[image]
kernel = "/img/vmlinuz"
initrd = "/img/initrd.img"
cmdline = "console=ttyS0 root=/dev/vda ro"
rootfs = "/img/rootfs.img"

[model]
disk = "/models/model.img"

[network]
https_host_port = 18443
"#;

pub(crate) const FILE: &str = "/etc/cocoon/vm.toml";

fn parse(text: &str) -> Result<LoadedConfig> {
    LoadedConfig::parse(Path::new(FILE), text)
}

/// The error's text, which must name the file.
fn refusal(text: &str) -> String {
    let message = parse(text).expect_err("must be refused").to_string();
    assert!(message.contains(FILE), "names the file: {message}");
    message
}

fn with(base: &str, replace: &str, by: &str) -> String {
    assert!(base.contains(replace), "test bug: {replace:?} not in base");
    base.replace(replace, by)
}

fn example(name: &str) -> LoadedConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    LoadedConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_examples_parse() {
    let plain = example("vm-plain.toml");
    assert_eq!(plain.config.vm.kind, VmKind::Plain);
    assert!(plain.config.attestation.allow_simulated);
    assert!(plain.config.collateral.offline);
    // Relative paths are anchored at the example's directory.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    assert_eq!(
        plain.config.image.rootfs,
        examples.join("out/image/rootfs.img")
    );
    assert_eq!(plain.config.vm.qemu, PathBuf::from("qemu-system-x86_64"));
    assert!(plain.config.simulated.is_some());

    let tdx = example("vm-tdx.toml");
    assert_eq!(tdx.config.vm.kind, VmKind::Tdx);
    assert_eq!(
        tdx.config.tdx.and_then(|t| t.quote_generation_socket),
        Some(QuoteGenerationSocket::Vsock { cid: 2, port: 4050 })
    );
    assert_eq!(
        tdx.config.gpu.map(|g| g.devices),
        Some(vec!["0000:3b:00.0".to_string()])
    );
    assert_eq!(
        tdx.config.collateral.pccs,
        cocoon_attestation::fetch::INTEL_PCS_URL
    );

    let snp = example("vm-snp.toml");
    assert_eq!(snp.config.vm.kind, VmKind::SevSnp);
    let section = snp.config.snp.unwrap_or_default();
    assert_eq!(
        (section.policy, section.cbitpos, section.reduced_phys_bits),
        (0x30000, 51, 1)
    );
    assert!(section.kernel_hashes);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let loaded = parse(PLAIN).unwrap();
    let c = &loaded.config;
    assert_eq!(c.network.https_guest_port, 8443);
    assert_eq!(c.relay.listen.to_string(), "127.0.0.1:9443");
    assert_eq!(c.relay.limits(), crate::relay::RelayLimits::default());
    assert_eq!(c.supervise.max_restarts, 10);
    assert!(!c.attestation.allow_simulated && !c.attestation.accept_any_image);
    assert_eq!(
        loaded.kernel_cmdline().unwrap(),
        "console=ttyS0 root=/dev/vda ro"
    );
}

#[test]
fn relay_limits_come_from_the_relay_section() {
    let text =
        format!("{PLAIN}\n[relay]\nmax_connection_secs = 0\nmax_connections_per_source = 3\n");
    let loaded = parse(&text).unwrap();
    let limits = loaded.config.relay.limits();
    assert_eq!(limits.max_connection_duration, None);
    assert_eq!(limits.max_connections_per_source, 3);
    let message = refusal(&format!(
        "{PLAIN}\n[relay]\nmax_connections_per_source = 0\n"
    ));
    assert!(
        message.contains("relay.max_connections_per_source"),
        "{message}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let message = refusal(&format!("{PLAIN}\n[snp]\nkernel_hash = false\n"));
    assert!(message.contains("kernel_hash"), "{message}");
    let message = refusal(&with(PLAIN, "vcpus = 2", "vcpus = 2\nvcpu = 3"));
    assert!(message.contains("vcpu"), "{message}");
    let message = refusal(&format!("{PLAIN}\n[attestation]\nallow_simulatd = true\n"));
    assert!(message.contains("allow_simulatd"), "{message}");
}

#[test]
fn wrong_types_and_missing_keys_name_the_key() {
    let message = refusal(&with(PLAIN, "vcpus = 2", "vcpus = \"two\""));
    assert!(message.contains("vcpus"), "{message}");
    let message = refusal(&with(PLAIN, "memory_mib = 4096\n", ""));
    assert!(message.contains("memory_mib"), "{message}");
    let message = refusal(&with(PLAIN, "kind = \"plain\"", "kind = \"sev\""));
    assert!(
        message.contains("kind") || message.contains("sev"),
        "{message}"
    );
}

#[test]
fn simulated_measurements_only_for_plain() {
    let tdx = with(PLAIN, "kind = \"plain\"\n", "kind = \"tdx\"\n")
        .replace("accel = \"tcg\"\n", "")
        .replace("rootfs =", "firmware = \"/img/TDVF.fd\"\nrootfs =");
    assert!(parse(&tdx).is_ok());
    let message = refusal(&format!(
        "{tdx}\n[simulated]\nmeasurements = \"/ref.json\"\n"
    ));
    assert!(message.contains("`simulated`"), "{message}");
    assert!(parse(&format!(
        "{PLAIN}\n[simulated]\nmeasurements = \"/ref.json\"\n"
    ))
    .is_ok());
}

fn snp_base() -> String {
    with(PLAIN, "kind = \"plain\"\n", "kind = \"sev-snp\"\n")
        .replace("accel = \"tcg\"\n", "")
        .replace("rootfs =", "firmware = \"/img/OVMF.amdsev.fd\"\nrootfs =")
}

#[test]
fn snp_refuses_unmeasured_kernels_and_debug() {
    let base = snp_base();
    assert!(parse(&base).is_ok());
    let message = refusal(&format!("{base}\n[snp]\nkernel_hashes = false\n"));
    assert!(message.contains("`snp.kernel_hashes`"), "{message}");
    assert!(parse(&format!(
        "{base}\n[snp]\nkernel_hashes = false\ndangerous_allow_unmeasured_kernel = true\n"
    ))
    .is_ok());
    let message = refusal(&format!("{base}\n[snp]\npolicy = 0xB0000\n"));
    assert!(
        message.contains("`snp.policy`") && message.contains("DEBUG"),
        "{message}"
    );
    let message = refusal(&format!("{base}\n[snp]\npolicy = 0x10000\n"));
    assert!(message.contains("bit 17"), "{message}");
    let message = refusal(&format!("{base}\n[snp]\nhost_data = \"c2hvcnQ=\"\n"));
    assert!(message.contains("`snp.host_data`"), "{message}");
}

#[test]
fn confidential_kinds_need_firmware_and_kvm() {
    let base = snp_base();
    let message = refusal(&base.replace("firmware = \"/img/OVMF.amdsev.fd\"\n", ""));
    assert!(message.contains("`image.firmware`"), "{message}");
    let message = refusal(&with(&base, "vcpus = 2", "vcpus = 2\naccel = \"tcg\""));
    assert!(message.contains("`vm.accel`"), "{message}");
}

#[test]
fn tee_sections_must_match_the_kind() {
    let message = refusal(&format!("{PLAIN}\n[snp]\npolicy = 0x30000\n"));
    assert!(message.contains("`snp`"), "{message}");
    let message = refusal(&format!("{PLAIN}\n[tdx]\nsept_ve_disable = true\n"));
    assert!(message.contains("`tdx`"), "{message}");
    let tdx = with(PLAIN, "kind = \"plain\"\n", "kind = \"tdx\"\n")
        .replace("accel = \"tcg\"\n", "")
        .replace("rootfs =", "firmware = \"/img/TDVF.fd\"\nrootfs =");
    let message = refusal(&format!("{tdx}\n[tdx]\nattributes = 0x10000001\n"));
    assert!(message.contains("`tdx.attributes`"), "{message}");
}

#[test]
fn other_values_are_checked() {
    let message = refusal(&format!("{PLAIN}\n[gpu]\ndevices = [\"3b:00.0\"]\n"));
    assert!(message.contains("`gpu.devices`"), "{message}");
    let message = refusal(&format!("{PLAIN}\n[gpu]\ndevices = [\"0000:3B:00.0\"]\n"));
    assert!(message.contains("lowercase"), "{message}");
    let message = refusal(&with(
        PLAIN,
        "rootfs = \"/img/rootfs.img\"",
        "rootfs = \"/img/root,fs.img\"",
    ));
    assert!(message.contains("`image.rootfs`"), "{message}");
    let message = refusal(&with(
        PLAIN,
        "rootfs =",
        "cmdline_file = \"/img/cmdline\"\nrootfs =",
    ));
    assert!(message.contains("`image.cmdline`"), "{message}");
    let message = refusal(&with(
        PLAIN,
        "https_host_port = 18443",
        "https_host_port = 18443\ninternal_guest_port = 8444",
    ));
    assert!(
        message.contains("`network.internal_host_port`"),
        "{message}"
    );
    let message = refusal(&with(
        PLAIN,
        "https_host_port = 18443",
        "https_host_port = 18443\nvsock_guest_cid = 2",
    ));
    assert!(message.contains("`network.vsock_guest_cid`"), "{message}");
    let message = refusal(&format!(
        "{PLAIN}\n[supervise]\nrestart_backoff_initial_ms = 5000\nrestart_backoff_max_ms = 1000\n"
    ));
    assert!(
        message.contains("`supervise.restart_backoff_initial_ms`"),
        "{message}"
    );
}

#[test]
fn relative_paths_follow_the_config_file() {
    let text = with(
        PLAIN,
        "rootfs = \"/img/rootfs.img\"",
        "rootfs = \"img/rootfs.img\"",
    );
    let text = with(
        &text,
        "[model]",
        "[attestation]\npolicy = \"policy.toml\"\n\n[model]",
    );
    let loaded = parse(&text).unwrap();
    assert_eq!(
        loaded.config.image.rootfs,
        PathBuf::from("/etc/cocoon/img/rootfs.img")
    );
    assert_eq!(
        loaded.config.attestation.policy,
        Some(PathBuf::from("/etc/cocoon/policy.toml"))
    );
}

#[test]
fn missing_input_files_name_their_key() {
    let loaded = parse(PLAIN).unwrap();
    let message = loaded.check_input_files().unwrap_err().to_string();
    assert!(
        message.contains("`image.kernel`") && message.contains(FILE),
        "{message}"
    );
}

#[test]
fn an_unreadable_cmdline_file_names_its_key() {
    let text = with(
        PLAIN,
        "cmdline = \"console=ttyS0 root=/dev/vda ro\"",
        "cmdline_file = \"/nonexistent/cmdline\"",
    );
    let message = parse(&text)
        .unwrap()
        .kernel_cmdline()
        .unwrap_err()
        .to_string();
    assert!(message.contains("`image.cmdline_file`"), "{message}");
}

#[test]
fn pci_addresses() {
    for good in ["0000:3b:00.0", "0001:ff:1f.7"] {
        assert!(is_pci_address(good), "{good}");
    }
    for bad in [
        "",
        "0000:3b:00",
        "0000:3b:00.8",
        "000:3b:00.0",
        "0000:3b:00.0.1",
        "0000:3b:0g.0",
        "0000:3b:00.",
        "0000:3b:00.01",
    ] {
        assert!(!is_pci_address(bad), "{bad}");
    }
}
