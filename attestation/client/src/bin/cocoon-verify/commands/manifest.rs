//! `cocoon-verify manifest keygen|sign|show`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use cocoon_attestation::manifest::{Manifest, ManifestPublicKey, ManifestSigningKey};

use crate::output::{read_input, say};

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Make an Ed25519 signing key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a manifest (the JSON reference values) into a DSSE envelope.
    Sign {
        /// The unsigned manifest: {"version":1,"image":..,"release":N,"not_after":"RFC 3339","tdx":{..},"sev_snp":{..},"config_digests":[..]}.
        manifest: PathBuf,
        /// The signing key (PKCS#8 PEM, from `manifest keygen` or `openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the signed manifest.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a signed manifest's signature and print its reference values as JSON.
    Show {
        /// The signed manifest (DSSE envelope).
        manifest: PathBuf,
        /// Public key trusted to sign it: ed25519:BASE64, or a file holding it (repeatable).
        #[arg(long, value_name = "KEY", required = true)]
        manifest_key: Vec<String>,
    },
}

pub fn run(command: ManifestCommand) -> Result<ExitCode, ExitCode> {
    let usage = |e: cocoon_attestation::Error| {
        eprintln!("cocoon-verify: {e}");
        ExitCode::from(2)
    };
    match command {
        ManifestCommand::Keygen { out } => {
            let (key, pem) = ManifestSigningKey::generate().map_err(usage)?;
            write_new_private_file(&out, pem.as_bytes()).map_err(|e| {
                eprintln!("cocoon-verify: cannot write {}: {e}", out.display());
                ExitCode::from(2)
            })?;
            eprintln!("cocoon-verify: private key written to {}", out.display());
            say!("{}", key.public_key());
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Sign { manifest, key, out } => {
            let text = read_input(&manifest, "manifest")?;
            let parsed = Manifest::from_json(&text).map_err(|e| {
                eprintln!("cocoon-verify: {}: {e}", manifest.display());
                ExitCode::from(2)
            })?;
            let pem = String::from_utf8_lossy(&read_input(&key, "signing key")?).into_owned();
            let key = ManifestSigningKey::from_pem(&pem).map_err(usage)?;
            let envelope = parsed.sign(&key).map_err(usage)?;
            std::fs::write(&out, envelope).map_err(|e| {
                eprintln!("cocoon-verify: cannot write {}: {e}", out.display());
                ExitCode::from(2)
            })?;
            eprintln!(
                "cocoon-verify: {} signed by {} -> {}",
                manifest.display(),
                key.public_key(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Show {
            manifest,
            manifest_key,
        } => {
            let keys = ManifestPublicKey::from_args(&manifest_key).map_err(usage)?;
            match Manifest::open_file(&manifest, &keys) {
                Ok(m) => {
                    say!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("cocoon-verify: REFUSED: {e}");
                    Err(ExitCode::from(1))
                }
            }
        }
    }
}

/// Creates `path` with mode 0600, refusing to replace an existing file.
fn write_new_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
