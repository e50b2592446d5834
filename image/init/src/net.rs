//! Bringing up the guest's network: `lo` and `eth0` with a static IPv4 address.
//!
//! The image has no DHCP client (nothing at boot may depend on what the network says);
//! the address comes from the measured command line, and QEMU's user-mode network
//! answers the default one. No route is set: the guest only answers connections the
//! host relays to it from the same link. The three `SIOCSIF*` ioctls are what
//! `ip addr add` / `ip link set up` do through the older interface.

#![allow(unsafe_code)]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Error, Result};

fn net_error(interface: &str, what: &str) -> Error {
    Error::Network {
        interface: interface.to_string(),
        detail: format!("{what}: {}", std::io::Error::last_os_error()),
    }
}

fn ifreq(interface: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= req.ifr_name.len() {
        return Err(Error::Network {
            interface: interface.to_string(),
            detail: "bad interface name".into(),
        });
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is
    // the generic view the ioctl expects.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> bool {
    // SAFETY: `req` is a valid, exclusively borrowed ifreq for the duration of the call.
    unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) >= 0 }
}

fn socket() -> Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(net_error("-", "socket"));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The netmask of a prefix length (1..=32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// Sets `interface` up, with `address/prefix` when given.
pub fn configure(interface: &str, address: Option<(Ipv4Addr, u8)>) -> Result<()> {
    let sock = socket()?;
    if let Some((ip, prefix)) = address {
        let mut req = ifreq(interface)?;
        req.ifr_ifru.ifru_addr = sockaddr(ip);
        if !ioctl(&sock, libc::SIOCSIFADDR, &mut req) {
            return Err(net_error(interface, "set address"));
        }
        let mut req = ifreq(interface)?;
        req.ifr_ifru.ifru_netmask = sockaddr(netmask(prefix));
        if !ioctl(&sock, libc::SIOCSIFNETMASK, &mut req) {
            return Err(net_error(interface, "set netmask"));
        }
    }
    let mut req = ifreq(interface)?;
    if !ioctl(&sock, libc::SIOCGIFFLAGS, &mut req) {
        return Err(net_error(interface, "read flags"));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    if !ioctl(&sock, libc::SIOCSIFFLAGS, &mut req) {
        return Err(net_error(interface, "set up"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_of_prefix_lengths() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(1), Ipv4Addr::new(128, 0, 0, 0));
    }

    #[test]
    fn interface_names_must_fit() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-that-is-too-long").is_err());
    }
}
