//! NVIDIA GPU attestation (H100 in confidential-computing mode).
//!
//! A confidential VM that serves a model on a GPU must prove what runs on the GPU too:
//! the GPU's SPDM measurements are compared with NVIDIA's signed reference values. This
//! module holds the reference side: [`rim`] reads NVIDIA's reference-integrity manifests
//! (signed SWID tag XML) and [`xmldsig`] verifies their XML signature to NVIDIA's pinned
//! RIM root.

pub mod rim;
pub mod xmldsig;
