//! A bounds-checked cursor over a byte slice; every read returns a [`DecodeError`]
//! instead of panicking.

use crate::error::{DecodeError, Part};

/// Cursor over `buf`, reporting offsets as `base + position`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    part: Part,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, whose first byte sits at `base` in the caller's buffer.
    pub(crate) fn new(buf: &'a [u8], base: usize, part: Part) -> Self {
        Self {
            buf,
            pos: 0,
            base,
            part,
        }
    }

    /// The same position, reporting errors against `part`.
    pub(crate) fn with_part(self, part: Part) -> Self {
        Self { part, ..self }
    }

    /// The structure this reader reports errors against.
    pub(crate) fn part(&self) -> Part {
        self.part
    }

    /// Offset of the next byte in the caller's buffer.
    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match rest.get(..n) {
            Some(bytes) => {
                self.pos = self.pos.saturating_add(n);
                Ok(bytes)
            }
            None => Err(DecodeError::Truncated {
                part: self.part,
                offset: self.offset(),
                needed: n,
                available: rest.len(),
            }),
        }
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        rest
    }

    /// Takes a fixed-size array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a RESERVED field of `n` bytes that must be zero.
    pub(crate) fn reserved(&mut self, n: usize) -> Result<(), DecodeError> {
        let offset = self.offset();
        let bytes = self.take(n)?;
        if bytes.iter().any(|&b| b != 0) {
            return Err(DecodeError::ReservedNotZero {
                part: self.part,
                offset,
            });
        }
        Ok(())
    }
}
