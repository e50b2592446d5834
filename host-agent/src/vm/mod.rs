//! `cocoon-host-agent vm`: launch the guest's VM with QEMU and supervise it.
//!
//! The host is outside the trust boundary, so nothing here is trusted by clients; what it
//! does get right is the operator's side: boot exactly the configured, measurable image,
//! restart a dead or unhealthy guest with backoff, and never relay a client to a guest
//! that has not passed the operator's attestation check.
//!
//! - `config`: the TOML file; `qemu`: the argv it implies; `vfio`: GPU pre-flight;
//! - `supervise`: the state machine; `run`: the loop that drives it;
//! - `process`: one QEMU child; `health`: `/healthz` probes; `verify`: attestation check.

pub mod config;
pub mod health;
pub mod process;
pub mod qemu;
pub mod run;
pub mod supervise;
pub mod verify;
pub mod vfio;
