//! ESP framing (RFC 4303 section 2): the 8-byte header and the trailer inside the
//! encrypted part. Encryption and integrity are done elsewhere.

use crate::error::{DecodeError, EncodeError, Part};
use crate::reader::Reader;

/// Next-header value of an IPv4 packet in tunnel mode (RFC 4303 section 2.6).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next-header value of an IPv6 packet in tunnel mode.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next-header value of a dummy packet, to be dropped silently (RFC 4303 section 2.6).
pub const NEXT_HEADER_NO_NEXT: u8 = 59;

/// The ESP header: SPI and sequence number (RFC 4303 sections 2.1 and 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EspHeader {
    /// Security Parameters Index; 0 is reserved, 1 to 255 reserved by IANA.
    pub spi: u32,
    /// Sequence number (low 32 bits; this codec does not do ESN).
    pub sequence_number: u32,
}

impl EspHeader {
    /// Encoded size.
    pub const LEN: usize = 8;

    /// Reads the header from the start of `packet`.
    pub fn parse(packet: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(packet, 0, Part::EspHeader);
        Ok(Self {
            spi: r.u32()?,
            sequence_number: r.u32()?,
        })
    }

    /// The 8 header bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.spi.to_be_bytes());
        out[4..].copy_from_slice(&self.sequence_number.to_be_bytes());
        out
    }

    /// Writes the header into the first 8 bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), EncodeError> {
        let available = out.len();
        let field = out
            .get_mut(..Self::LEN)
            .ok_or(EncodeError::BufferTooShort {
                part: Part::EspHeader,
                needed: Self::LEN,
                available,
            })?;
        field.copy_from_slice(&self.to_bytes());
        Ok(())
    }
}

/// The last two bytes of ESP plaintext (RFC 4303 section 2.4 and 2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trailer {
    /// Number of padding bytes before the pad-length byte.
    pub pad_len: u8,
    /// Protocol of the payload ([`NEXT_HEADER_IPV4`] in tunnel mode).
    pub next_header: u8,
}

impl Trailer {
    /// Size of pad-length plus next-header.
    pub const LEN: usize = 2;

    /// Writes the default padding (1, 2, 3, ...; RFC 4303 section 2.4), the pad length
    /// and the next header into `out`, which must be exactly `pad_len + 2` bytes long
    /// or longer (only the first `pad_len + 2` bytes are written).
    pub fn encode(&self, out: &mut [u8]) -> Result<(), EncodeError> {
        let needed = usize::from(self.pad_len).saturating_add(Self::LEN);
        let available = out.len();
        let area = out.get_mut(..needed).ok_or(EncodeError::BufferTooShort {
            part: Part::EspTrailer,
            needed,
            available,
        })?;
        let (padding, tail) = area.split_at_mut(usize::from(self.pad_len));
        for (byte, value) in padding.iter_mut().zip(1u8..) {
            *byte = value;
        }
        tail.copy_from_slice(&[self.pad_len, self.next_header]);
        Ok(())
    }
}

/// Padding needed after `payload_len` bytes so that payload, padding and the two
/// trailer bytes fill whole blocks of `block_len` (RFC 4303 section 2.4; use 4 for the
/// minimum 32-bit alignment). A `block_len` of 0 or above 255 is treated as 4.
pub fn pad_len(payload_len: usize, block_len: usize) -> u8 {
    let block = if block_len == 0 || block_len > 255 {
        4
    } else {
        block_len
    };
    let used = payload_len.saturating_add(Trailer::LEN) % block;
    let pad = (block - used) % block;
    u8::try_from(pad).unwrap_or(0)
}

/// Splits decrypted ESP payload data (after the IV, without the ICV) into the inner
/// packet length and the trailer, checking that the padding is the default sequence
/// 1, 2, 3, ... (RFC 4303 section 2.4: the receiver checks it when the default
/// scheme is used, which is all that strongSwan, libreswan and this workspace send).
pub fn parse_trailer(plaintext: &[u8]) -> Result<(usize, Trailer), DecodeError> {
    let Some(split) = plaintext.len().checked_sub(Trailer::LEN) else {
        return Err(DecodeError::Truncated {
            part: Part::EspTrailer,
            offset: 0,
            needed: Trailer::LEN,
            available: plaintext.len(),
        });
    };
    let (data, tail) = plaintext.split_at(split);
    let [pad_len, next_header] = [tail.first().copied(), tail.get(1).copied()];
    let (Some(pad_len), Some(next_header)) = (pad_len, next_header) else {
        return Err(DecodeError::Truncated {
            part: Part::EspTrailer,
            offset: split,
            needed: Trailer::LEN,
            available: tail.len(),
        });
    };
    let Some(payload_len) = data.len().checked_sub(usize::from(pad_len)) else {
        return Err(DecodeError::BadEspPadding { offset: split });
    };
    let padding = data.get(payload_len..).unwrap_or(&[]);
    for (i, (&byte, expected)) in padding.iter().zip(1u8..).enumerate() {
        if byte != expected {
            return Err(DecodeError::BadEspPadding {
                offset: payload_len.saturating_add(i),
            });
        }
    }
    Ok((
        payload_len,
        Trailer {
            pad_len,
            next_header,
        },
    ))
}
