//! A bounds-checked little-endian reader over untrusted bytes, shared by the binary
//! evidence parsers (TDX quotes, GPU SPDM messages).
//!
//! Every read checks the length against what is left and names the structure and offset
//! in the error, so a hostile length can neither panic a parser nor make it read past the
//! input; the parsers keep their own layouts and only share this.

use crate::{Error, Result};

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    /// Where the next read starts.
    pub(crate) offset: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self {
            bytes,
            offset: 0,
            what,
        }
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.offset..end];
                self.offset = end;
                Ok(out)
            }
            None => Err(Error::Truncated {
                what: self.what,
                offset: self.offset,
                needed: len,
                available: self.remaining(),
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A 3-byte little-endian length (SPDM's MeasurementRecordLength).
    pub(crate) fn u24(&mut self) -> Result<u32> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.bytes.get(self.offset..).unwrap_or_default();
        self.offset = self.bytes.len();
        out
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.offset)
    }
}
