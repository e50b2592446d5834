//! Bounds-checked little-endian reads over untrusted bytes.
//!
//! Firmware images, kernels and event logs come from outside; a short or lying length
//! must become an error, never a slice panic. Every parser in this crate reads through
//! these helpers.

/// Reads `N` bytes at `offset`, or `None` past the end.
pub fn array<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    bytes.get(offset..end)?.try_into().ok()
}

/// Little-endian `u16` at `offset`.
pub fn u16_le(bytes: &[u8], offset: usize) -> Option<u16> {
    array(bytes, offset).map(u16::from_le_bytes)
}

/// Little-endian `u32` at `offset`.
pub fn u32_le(bytes: &[u8], offset: usize) -> Option<u32> {
    array(bytes, offset).map(u32::from_le_bytes)
}

/// Little-endian `u64` at `offset`.
pub fn u64_le(bytes: &[u8], offset: usize) -> Option<u64> {
    array(bytes, offset).map(u64::from_le_bytes)
}

/// `len` bytes at `offset`, or `None` past the end.
pub fn slice(bytes: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    bytes.get(offset..offset.checked_add(len)?)
}
