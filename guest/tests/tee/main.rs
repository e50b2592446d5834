//! Every evidence backend against a fake kernel fed with real recorded evidence.
//!
//! configfs-tsm and tsm-mr cannot be played by a plain directory (mkdir there creates no
//! attributes, reading `outblob` runs no TEE, writing an RTMR extends nothing), so the
//! fake kernel here is a real temporary directory whose few special files behave as the
//! kernel's do (drivers/virt/coco/guest/report.c, tsm-mr.c): mkdir creates the
//! attributes, every write to the entry moves `generation`, `outblob`/`auxblob` serve
//! the recorded TDX quote (dcap-qvl) or SEV-SNP report (go-sev-guest, Milan) with its
//! certificate table, a write to `rtmr3:sha384` extends. The fake devices answer the
//! ioctls the way the TDX and SEV guest drivers do, and a fake QGS on a Unix socket
//! speaks Intel's message protocol, written out byte by byte here. Faults are injected
//! per test: missing interfaces, EBUSY, generation races, truncated blobs, the wrong
//! provider, certificate buffers that are too small, QGS errors and short reads.
//!
//! The fakes echo the recorded evidence whatever is asked, so tests request the
//! recorded REPORTDATA, and ask for something else to see the mismatch refused.
//!
//! One test binary; a module per backend.

mod configfs;
mod fake;
mod probe;
mod sev_guest;
mod tdx_guest;
mod tsm_mr;
