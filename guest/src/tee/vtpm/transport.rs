//! Where TPM 2.0 command bytes go: the kernel's resource-managed character device, or a
//! software TPM's command socket.
//!
//! The TPM interface is a byte pipe: write one marshalled command, read one response whose
//! header says how long it is. `/dev/tpmrm0` (the kernel's resource manager: transient
//! objects are flushed when the file is closed, so a crashed guest leaks nothing) returns
//! the whole response to one read. `swtpm` (a real TPM 2.0 implementation, libtpms) speaks
//! the same bytes on its command socket, Unix or TCP; that is how the tests and the
//! simulated vTPM reach it. Every socket read and write has a deadline, so a wedged TPM
//! fails a request instead of hanging the guest.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

/// The largest response a TPM sends (TPM2's `MAX_RESPONSE_SIZE` is 4096 on every TPM we
/// know; the bound keeps a broken peer from making us allocate).
pub const MAX_RESPONSE: usize = 8192;

/// Deadline for each read and write on a socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the vTPM is, as `--vtpm` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VtpmEndpoint {
    /// A TPM character device (`/dev/tpmrm0`).
    Device(PathBuf),
    /// swtpm's command socket, `unix:PATH`.
    Unix(PathBuf),
    /// swtpm's command port, `tcp:HOST:PORT`.
    Tcp(String),
}

impl std::str::FromStr for VtpmEndpoint {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(VtpmEndpoint::Unix(path.into()));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(format!("'{text}': expected tcp:HOST:PORT"));
            }
            return Ok(VtpmEndpoint::Tcp(addr.into()));
        }
        if text.starts_with('/') {
            return Ok(VtpmEndpoint::Device(text.into()));
        }
        Err(format!(
            "'{text}': expected a device path (/dev/tpmrm0), unix:PATH or tcp:HOST:PORT"
        ))
    }
}

impl std::fmt::Display for VtpmEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VtpmEndpoint::Device(p) => write!(f, "{}", p.display()),
            VtpmEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            VtpmEndpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// One open connection to a TPM.
pub trait TpmTransport: Send {
    /// Sends one command and returns the whole response.
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>>;
}

fn io_error(endpoint: &VtpmEndpoint, what: &str, e: std::io::Error) -> Error {
    Error::TeeInterface {
        interface: format!("vTPM {endpoint}"),
        detail: format!("{what}: {e}"),
    }
}

/// Opens `endpoint`.
pub fn open(endpoint: &VtpmEndpoint) -> Result<Box<dyn TpmTransport>> {
    let err = |what, e| io_error(endpoint, what, e);
    Ok(match endpoint {
        VtpmEndpoint::Device(path) => Box::new(DeviceTransport {
            endpoint: endpoint.clone(),
            file: OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| err("open", e))?,
        }),
        VtpmEndpoint::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|e| err("connect", e))?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .map_err(|e| err("set timeouts", e))?;
            Box::new(StreamTransport {
                endpoint: endpoint.clone(),
                stream,
            })
        }
        VtpmEndpoint::Tcp(addr) => {
            let stream = TcpStream::connect(addr).map_err(|e| err("connect", e))?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .and_then(|_| stream.set_nodelay(true))
                .map_err(|e| err("set timeouts", e))?;
            Box::new(StreamTransport {
                endpoint: endpoint.clone(),
                stream,
            })
        }
    })
}

/// A TPM character device: one write, one read.
struct DeviceTransport {
    endpoint: VtpmEndpoint,
    file: File,
}

impl TpmTransport for DeviceTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        self.file
            .write_all(command)
            .map_err(|e| io_error(&self.endpoint, "write", e))?;
        let mut response = vec![0u8; MAX_RESPONSE];
        let n = self
            .file
            .read(&mut response)
            .map_err(|e| io_error(&self.endpoint, "read", e))?;
        response.truncate(n);
        check_length(&self.endpoint, &response)?;
        Ok(response)
    }
}

/// A stream socket: the response's header gives its length.
struct StreamTransport<S> {
    endpoint: VtpmEndpoint,
    stream: S,
}

impl<S: Read + Write + Send> TpmTransport for StreamTransport<S> {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let err = |what, e| io_error(&self.endpoint, what, e);
        self.stream
            .write_all(command)
            .map_err(|e| err("write", e))?;
        let mut response = vec![0u8; 10];
        self.stream
            .read_exact(&mut response)
            .map_err(|e| err("read header", e))?;
        let size = declared_size(&response);
        if !(10..=MAX_RESPONSE).contains(&size) {
            return Err(Error::TeeInterface {
                interface: format!("vTPM {}", self.endpoint),
                detail: format!("response declares {size} bytes (10..={MAX_RESPONSE})"),
            });
        }
        response.resize(size, 0);
        self.stream
            .read_exact(&mut response[10..])
            .map_err(|e| err("read body", e))?;
        Ok(response)
    }
}

fn declared_size(response: &[u8]) -> usize {
    u32::from_be_bytes([response[2], response[3], response[4], response[5]]) as usize
}

fn check_length(endpoint: &VtpmEndpoint, response: &[u8]) -> Result<()> {
    if response.len() < 10 || declared_size(response) != response.len() {
        return Err(Error::TeeInterface {
            interface: format!("vTPM {endpoint}"),
            detail: format!(
                "a response of {} bytes that is not one whole TPM response",
                response.len()
            ),
        });
    }
    Ok(())
}
