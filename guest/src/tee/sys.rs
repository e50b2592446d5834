//! The guest's only unsafe code: the kernel ABI structures of the TDX and SEV guest
//! devices, their two ioctls, and the vsock socket to the quote generation service.
//!
//! Everything here is a thin, typed wrapper: each structure is `#[repr(C)]` with its
//! size and field offsets asserted at compile time against the kernel UAPI headers
//! (`include/uapi/linux/tdx-guest.h`, `include/uapi/linux/sev-guest.h`), and each
//! unsafe block says why it is sound. The logic that decides what to do with the
//! results lives in safe code (`tdx_guest`, `sev_guest`, `qgs`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `_IOWR(type, nr, size)` as `include/uapi/asm-generic/ioctl.h` builds it on x86-64:
/// direction read|write (3) in bits 30–31, the argument size in bits 16–29, the type in
/// bits 8–15 and the number in bits 0–7.
pub const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
    assert!(size < (1 << 14), "the ioctl size field has 14 bits");
    (3 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct tdx_report_req`: REPORTDATA in, TDREPORT out.
#[repr(C)]
#[derive(Clone)]
pub struct TdxReportReq {
    pub reportdata: [u8; 64],
    pub tdreport: [u8; 1024],
}

const _: () = {
    assert!(size_of::<TdxReportReq>() == 1088);
    assert!(offset_of!(TdxReportReq, reportdata) == 0);
    assert!(offset_of!(TdxReportReq, tdreport) == 64);
};

/// `TDX_CMD_GET_REPORT0 = _IOWR('T', 1, struct tdx_report_req)`.
pub const TDX_CMD_GET_REPORT0: u64 = iowr(b'T', 1, size_of::<TdxReportReq>());

/// `struct snp_report_req`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SnpReportReq {
    pub user_data: [u8; 64],
    pub vmpl: u32,
    /// Must be zero.
    pub rsvd: [u8; 28],
}

/// `struct snp_ext_report_req`: the report request plus the certificate buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SnpExtReportReq {
    pub data: SnpReportReq,
    /// Set by [`snp_get_ext_report`] from the buffer it is given; zero otherwise.
    pub certs_address: u64,
    /// The buffer's length (whole pages); on `SNP_GUEST_VMM_ERR_INVALID_LEN` the kernel
    /// writes back the length the host needs.
    pub certs_len: u32,
}

/// `struct snp_report_resp`: the firmware's `MSG_REPORT_RSP`, padded.
#[repr(C)]
pub struct SnpReportResp {
    pub data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
pub struct SnpGuestRequestIoctl {
    /// Message version, must be non-zero (1).
    pub msg_version: u8,
    pub req_data: u64,
    pub resp_data: u64,
    /// Bits 0–31: firmware error; bits 32–63: VMM (hypervisor) error.
    pub exitinfo2: u64,
}

const _: () = {
    assert!(size_of::<SnpReportReq>() == 96);
    assert!(offset_of!(SnpReportReq, vmpl) == 64);
    assert!(offset_of!(SnpReportReq, rsvd) == 68);
    assert!(size_of::<SnpExtReportReq>() == 112);
    assert!(offset_of!(SnpExtReportReq, certs_address) == 96);
    assert!(offset_of!(SnpExtReportReq, certs_len) == 104);
    assert!(size_of::<SnpReportResp>() == 4000);
    assert!(size_of::<SnpGuestRequestIoctl>() == 32);
    assert!(offset_of!(SnpGuestRequestIoctl, req_data) == 8);
    assert!(offset_of!(SnpGuestRequestIoctl, resp_data) == 16);
    assert!(offset_of!(SnpGuestRequestIoctl, exitinfo2) == 24);
};

/// `SNP_GET_EXT_REPORT = _IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub const SNP_GET_EXT_REPORT: u64 = iowr(b'S', 0x2, size_of::<SnpGuestRequestIoctl>());

/// `TDX_CMD_GET_REPORT0` on an open `/dev/tdx_guest`.
pub fn tdx_get_report0(device: &File, req: &mut TdxReportReq) -> io::Result<()> {
    // SAFETY: TDX_CMD_GET_REPORT0 reads 64 bytes from and writes 1024 bytes into the
    // `struct tdx_report_req` its argument points to. `req` is an exclusively borrowed,
    // live value with exactly that layout (asserted above) for the whole call, and the
    // descriptor is open for as long as `device` is borrowed.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            TDX_CMD_GET_REPORT0 as libc::Ioctl,
            req as *mut TdxReportReq,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How `SNP_GET_EXT_REPORT` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpIoctlError {
    pub errno: i32,
    /// As the kernel wrote it back (firmware error low, VMM error high).
    pub exitinfo2: u64,
}

/// `SNP_GET_EXT_REPORT` on an open `/dev/sev-guest`, with `certs` as the certificate
/// buffer (its length, a multiple of the page size, becomes `certs_len`).
pub fn snp_get_ext_report(
    device: &File,
    req: &mut SnpExtReportReq,
    resp: &mut SnpReportResp,
    certs: &mut [u8],
) -> Result<(), SnpIoctlError> {
    let Ok(certs_len) = u32::try_from(certs.len()) else {
        return Err(SnpIoctlError {
            errno: libc::EINVAL,
            exitinfo2: 0,
        });
    };
    req.certs_address = if certs.is_empty() {
        0
    } else {
        certs.as_mut_ptr() as u64
    };
    req.certs_len = certs_len;
    let mut io = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req as *mut SnpExtReportReq as u64,
        resp_data: resp as *mut SnpReportResp as u64,
        exitinfo2: 0,
    };
    // SAFETY: SNP_GET_EXT_REPORT reads `io` (32 bytes) and writes it back, reads and may
    // write back the `struct snp_ext_report_req` at `req_data`, writes 4000 bytes at
    // `resp_data`, and writes at most `certs_len` bytes at `certs_address`. Each pointer
    // comes from an exclusive borrow that outlives the call (`io`, `req`, `resp`,
    // `certs`), each pointee has the kernel's layout (asserted above), and `certs_len`
    // is exactly the length of `certs`.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            SNP_GET_EXT_REPORT as libc::Ioctl,
            &mut io as *mut SnpGuestRequestIoctl,
        )
    };
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    // The address is only meaningful during the call.
    req.certs_address = 0;
    if rc == -1 {
        return Err(SnpIoctlError {
            errno,
            exitinfo2: io.exitinfo2,
        });
    }
    Ok(())
}

/// A connected `AF_VSOCK` stream socket to `cid:port`, with `timeout` on every send
/// and receive.
pub fn vsock_connect(cid: u32, port: u32, timeout: Duration) -> io::Result<File> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket(2) just returned; nothing else owns it, so
    // `OwnedFd` may close it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: the option value points at a live `timeval` whose size is passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &tv as *const libc::timeval as *const libc::c_void,
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let addr = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: cid,
        svm_zero: [0; 4],
    };
    // SAFETY: `addr` is a live `sockaddr_vm` and its exact size is passed.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernel_values() {
        // The values the kernel headers expand to (also what Intel's tdx_attest and the
        // AMD/go-sev-guest tools use).
        assert_eq!(TDX_CMD_GET_REPORT0, 0xC440_5401);
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
        // SNP_GET_REPORT (0x0) for comparison: same struct, number 0.
        assert_eq!(iowr(b'S', 0, 32), 0xC020_5300);
    }
}
