//! Cross-checks against independent tools and real data (deliverable 6).
//!
//! Inputs too big or not ours to commit (Debian's OVMF, EFI binaries, a kernel, firmware
//! builds) are referenced by path and sha256; a test whose input is absent or different
//! says so on stderr and stdout and compares nothing, instead of passing silently.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use cocoon_measure::cli::{run, Cli};
use cocoon_measure::event_log::{quote_rtmrs, EventLog};
use cocoon_measure::snp::{launch_digest, SnpInputs, DEFAULT_GUEST_FEATURES};
use cocoon_measure::tdx::authenticode;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn skip(test: &str, why: String) {
    let line = format!("SKIPPED {test}: {why}");
    eprintln!("{line}");
    println!("{line}");
}

/// Reads `path` if it exists and has `sha256`; otherwise reports why it is skipped.
fn pinned(test: &str, path: &Path, sha256: &str) -> Option<Vec<u8>> {
    let Ok(bytes) = std::fs::read(path) else {
        skip(test, format!("{} is absent", path.display()));
        return None;
    };
    let got = hex::encode(Sha256::digest(&bytes));
    if got != sha256 {
        skip(
            test,
            format!(
                "{} has sha256 {got}, not the {sha256} the fixture was made from",
                path.display()
            ),
        );
        return None;
    }
    Some(bytes)
}

#[test]
fn snp_debian_ovmf_matches_sev_snp_measure() {
    let fx = json("sev_snp_measure.json");
    let ovmf = PathBuf::from(fx["ovmf"]["path"].as_str().unwrap());
    let test = "snp_debian_ovmf_matches_sev_snp_measure";
    if pinned(test, &ovmf, fx["ovmf"]["sha256"].as_str().unwrap()).is_none() {
        return;
    }
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let inputs = SnpInputs {
            ovmf: ovmf.clone(),
            vcpus: case["vcpus"].as_u64().unwrap() as u32,
            vcpu_type: case["vcpu_type"].as_str().unwrap().into(),
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel: None,
            initrd: None,
            append: None,
        };
        let ours = hex::encode(launch_digest(&inputs).unwrap());
        assert_eq!(
            ours,
            case["measurement"].as_str().unwrap(),
            "{}",
            case["command"]
        );
    }
    // The CLI prints the same digest.
    let cli = Cli::parse_from([
        "cocoon-measure",
        "snp",
        "--ovmf",
        ovmf.to_str().unwrap(),
        "--vcpus",
        "16",
        "--vcpu-type",
        "EPYC-Genoa",
    ]);
    let out = run(cli).unwrap().stdout;
    let want = cases
        .iter()
        .find(|c| c["vcpus"] == 16 && c["vcpu_type"] == "EPYC-Genoa")
        .unwrap();
    assert_eq!(out.trim(), want["measurement"].as_str().unwrap());
    // Debian's OVMF has no kernel-hashes section: asking for a kernel is a precise error.
    let mut with_kernel = SnpInputs {
        ovmf: ovmf.clone(),
        vcpus: 1,
        vcpu_type: "EPYC-v4".into(),
        guest_features: DEFAULT_GUEST_FEATURES,
        kernel: Some(fixture("gotdx_ccel_data.bin")),
        initrd: None,
        append: None,
    };
    let err = launch_digest(&with_kernel).unwrap_err().to_string();
    assert!(err.contains("kernel-hashes"), "{err}");
    with_kernel.vcpu_type = "EPYC-Zen7".into();
    assert!(launch_digest(&with_kernel)
        .unwrap_err()
        .to_string()
        .contains("known types: EPYC,"));
}

#[test]
fn ccel_replay_equals_the_quotes_rtmrs() {
    let log = EventLog::parse(&std::fs::read(fixture("gotdx_ccel_data.bin")).unwrap()).unwrap();
    let quote =
        quote_rtmrs(&std::fs::read(fixture("gotdx_cos113_quote_with_ccel.bin")).unwrap()).unwrap();
    assert_eq!(log.events.len(), 43);
    assert_eq!(log.replay(), quote);
    assert_ne!(quote[0], [0; 48]);
    assert_ne!(quote[2], [0; 48]);
    // The fixed RTMR1 events cocoon-measure predicts appear in the real log.
    let rtmr1: Vec<_> = log.events.iter().filter(|e| e.rtmr() == Some(1)).collect();
    let data: Vec<&[u8]> = rtmr1.iter().map(|e| e.data.as_slice()).collect();
    assert_eq!(
        data.first().copied(),
        Some(&b"Calling EFI Application from Boot Option"[..])
    );
    assert_eq!(data.get(1).copied(), Some(&[0u8, 0, 0, 0][..]));
    assert_eq!(
        data.last().copied(),
        Some(&b"Exit Boot Services Returned with Success"[..])
    );

    let cli = Cli::parse_from([
        "cocoon-measure",
        "tdx-replay",
        "--event-log",
        fixture("gotdx_ccel_data.bin").to_str().unwrap(),
        "--quote",
        fixture("gotdx_cos113_quote_with_ccel.bin")
            .to_str()
            .unwrap(),
    ]);
    let out = run(cli).unwrap();
    assert!(
        out.success && out.stdout.matches("= quote").count() == 4,
        "{}",
        out.stdout
    );
    // A quote from another TD does not match, and the command says so.
    let other = Path::new("/work/shared/testvectors/tdx/dcapqvl_tdx_quote_v4.bin");
    if other.exists() {
        let cli = Cli::parse_from([
            "cocoon-measure",
            "tdx-replay",
            "--event-log",
            fixture("gotdx_ccel_data.bin").to_str().unwrap(),
            "--quote",
            other.to_str().unwrap(),
        ]);
        let out = run(cli).unwrap();
        assert!(
            !out.success && out.stdout.contains("DIFFERS"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn authenticode_matches_pesign_and_pefile() {
    let fx = json("authenticode.json");
    for file in fx["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let path = match path.strip_prefix("$COCOON_TEST_KERNEL") {
            Some(_) => {
                match std::env::var_os("COCOON_TEST_KERNEL") {
                    Some(p) => PathBuf::from(p),
                    None => {
                        skip("authenticode (kernel)", "set COCOON_TEST_KERNEL to the Debian kernel named in authenticode.json".into());
                        continue;
                    }
                }
            }
            None => PathBuf::from(path),
        };
        let Some(bytes) = pinned(
            "authenticode_matches_pesign_and_pefile",
            &path,
            file["sha256_file"].as_str().unwrap(),
        ) else {
            continue;
        };
        let ours = hex::encode(authenticode::sha384(&bytes).unwrap());
        assert_eq!(
            ours,
            file["authenticode_sha384"].as_str().unwrap(),
            "{}",
            path.display()
        );
    }
}

/// The first file called `name` under `dir`, at most `depth` levels down.
fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            subdirs.push(path);
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    if depth == 0 {
        return None;
    }
    subdirs.sort();
    subdirs.iter().find_map(|d| find_file(d, name, depth - 1))
}

fn firmware_dir() -> PathBuf {
    std::env::var_os("COCOON_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cocoon-firmware")
        })
}

/// Firmware builds (AmdSevX64 with kernel hashes, IntelTdxX64) cross-checked against
/// the values recorded in `firmware_cross_check.json`, when a build with the recorded
/// sha256 is in `$COCOON_FIRMWARE_DIR` (default `~/.cache/cocoon-firmware`).
#[test]
fn firmware_builds_match_independent_tools() {
    let Ok(text) = std::fs::read(fixture("firmware_cross_check.json")) else {
        skip(
            "firmware_builds_match_independent_tools",
            "no firmware_cross_check.json recorded yet".into(),
        );
        return;
    };
    let fx: Value = serde_json::from_slice(&text).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["file"].as_str().unwrap();
        let Some(path) = find_file(&firmware_dir(), name, 3) else {
            skip(
                "firmware_builds_match_independent_tools",
                format!("no {name} under {}", firmware_dir().display()),
            );
            continue;
        };
        let test = format!("firmware cross-check {}", case["name"]);
        if pinned(&test, &path, case["sha256"].as_str().unwrap()).is_none() {
            continue;
        }
        let args: Vec<String> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("$FIRMWARE", path.to_str().unwrap())
            })
            .collect();
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.replace("$FIXTURES", fixture("").to_str().unwrap()))
            .collect();
        let out = run(Cli::parse_from(
            std::iter::once("cocoon-measure".to_string()).chain(args),
        ))
        .unwrap();
        let got: Value = serde_json::from_str(&out.stdout).unwrap();
        for (key, want) in case["expect"].as_object().unwrap() {
            assert_eq!(&got[key], want, "{test}: {key} ({})", case["independent"]);
        }
    }
}
