//! ISAKMP messages as used by IKEv1: the header (RFC 2408 section 3.1), the chain of
//! generic payloads (section 3.2) and the payload bodies (sections 3.4 to 3.16, RFC 2407
//! section 4.6, RFC 3947 sections 3.2 and 5.2).
//!
//! Reading happens in three checked steps, each of which can only fail with a
//! [`DecodeError`] and never panics:
//! 1. [`Message::parse`] checks the header and that its length matches the datagram.
//! 2. [`parse_payloads`] walks the generic headers of a (clear-text or decrypted) body
//!    and returns borrowed [`RawPayload`] views, checking every length.
//! 3. [`RawPayload::decode`] turns one view into an owned [`Payload`].
//!
//! Writing goes the other way: [`encode_payloads`] writes a chain and fills in every
//! length and next-payload field, and [`encode_message`] adds the header.

pub mod attr;
mod codes;
mod payload;

pub use codes::{
    ExchangeType, Flags, IdType, NotifyType, PayloadType, ProtocolId, DOI_IPSEC, SIT_IDENTITY_ONLY,
    SIT_INTEGRITY, SIT_SECRECY,
};
pub use payload::{
    Attribute, AttributeValue, DeletePayload, IdPayload, NotifyPayload, Payload, Proposal,
    SaPayload, Transform,
};

use crate::error::{DecodeError, EncodeError, Part};
use crate::reader::Reader;

/// ISAKMP version 1.0 as carried in the header's version byte (major 1, minor 0;
/// RFC 2408 section 3.1, RFC 2409 section 5).
pub const VERSION_1_0: u8 = 0x10;

/// Most payloads one chain may hold. The largest messages seen from strongSwan and
/// libreswan carry about a dozen; the bound caps the work a hostile message can cause.
pub const MAX_PAYLOADS: usize = 64;

/// Size of the generic payload header (RFC 2408 section 3.2).
pub const GENERIC_HEADER_LEN: usize = 4;

/// The fixed ISAKMP header (RFC 2408 section 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Initiator cookie (RFC 2408 section 2.5.3).
    pub initiator_cookie: [u8; 8],
    /// Responder cookie; zero in the first message of an exchange.
    pub responder_cookie: [u8; 8],
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Major version in the high nibble, minor in the low nibble ([`VERSION_1_0`]).
    pub version: u8,
    /// Exchange type.
    pub exchange_type: ExchangeType,
    /// Flags (encryption, commit, authentication only).
    pub flags: Flags,
    /// Message ID: zero in phase 1, random per Quick Mode / Informational exchange.
    pub message_id: u32,
    /// Total message length including the header.
    pub length: u32,
}

impl Header {
    /// Encoded size of the header.
    pub const LEN: usize = 28;

    /// Reads the header from the first 28 bytes of `buf`. The length field is not
    /// compared with `buf` here; [`Message::parse`] does that.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, 0, Part::IsakmpHeader);
        Ok(Self {
            initiator_cookie: r.array()?,
            responder_cookie: r.array()?,
            next_payload: PayloadType(r.u8()?),
            version: r.u8()?,
            exchange_type: ExchangeType(r.u8()?),
            flags: Flags(r.u8()?),
            message_id: r.u32()?,
            length: r.u32()?,
        })
    }

    /// Appends the 28 header bytes to `out`, length field as stored in `self`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.initiator_cookie);
        out.extend_from_slice(&self.responder_cookie);
        out.push(self.next_payload.0);
        out.push(self.version);
        out.push(self.exchange_type.0);
        out.push(self.flags.0);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    /// Major version (high nibble of the version byte).
    pub fn major_version(&self) -> u8 {
        self.version >> 4
    }

    /// Minor version (low nibble of the version byte).
    pub fn minor_version(&self) -> u8 {
        self.version & 0x0f
    }

    /// Whether the body is encrypted (E flag, RFC 2408 section 3.1).
    pub fn is_encrypted(&self) -> bool {
        self.flags.contains(Flags::ENCRYPTION)
    }
}

/// One ISAKMP message: its header and the bytes after it, borrowed from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The parsed header.
    pub header: Header,
    /// Everything after the header up to `header.length`: a payload chain, or
    /// ciphertext when the E flag is set.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses the header of `datagram` (a UDP payload, after any non-ESP marker) and
    /// checks that its Length field equals the datagram's size (RFC 2408 section 3.1;
    /// section 5.1 lists a length mismatch as UNEQUAL-PAYLOAD-LENGTHS).
    ///
    /// Version and exchange type are not judged here; that is policy.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        let header = Header::parse(datagram)?;
        let declared = usize::try_from(header.length).unwrap_or(usize::MAX);
        if declared < Header::LEN {
            return Err(DecodeError::LengthTooSmall {
                part: Part::IsakmpHeader,
                offset: 0,
                declared,
                minimum: Header::LEN,
            });
        }
        if declared != datagram.len() {
            return Err(DecodeError::MessageLengthMismatch {
                declared: header.length,
                datagram: datagram.len(),
            });
        }
        let body = datagram.get(Header::LEN..).unwrap_or(&[]);
        Ok(Self { header, body })
    }

    /// Parses the body as a clear-text payload chain, with no padding allowed after it.
    /// For an encrypted message, decrypt `body` and call [`parse_payloads`] instead.
    pub fn payloads(&self) -> Result<Vec<RawPayload<'a>>, DecodeError> {
        parse_payloads_exact(self.header.next_payload, self.body)
    }
}

/// One payload of a chain as it is on the wire, borrowed from the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// Payload type, from the previous next-payload field.
    pub payload_type: PayloadType,
    /// The bytes after the 4-byte generic header.
    pub body: &'a [u8],
    /// The payload including its generic header (what HASH(1), HASH(2) and the
    /// Informational HASH are computed over, RFC 2409 section 5.5 and 5.7).
    pub raw: &'a [u8],
    /// Offset of `raw` within the chain.
    pub offset: usize,
    /// Position of the payload in the chain, starting at 0.
    pub index: u16,
    /// The next-payload field of this payload's generic header.
    pub next_payload: PayloadType,
}

impl RawPayload<'_> {
    /// Decodes the body by type. Types this crate does not know, and Proposal or
    /// Transform at the top level, become [`Payload::Unknown`] so they re-encode
    /// unchanged.
    pub fn decode(&self) -> Result<Payload, DecodeError> {
        payload::decode(self)
    }

    /// The [`Part`] naming this payload in errors.
    pub fn part(&self) -> Part {
        Part::Payload {
            payload_type: self.payload_type,
            index: self.index,
        }
    }
}

/// Walks a payload chain starting with type `first` (RFC 2408 section 3.2) and returns
/// a view of each payload.
///
/// Each generic header's length must be at least 4, must fit in what is left of the
/// chain, and its RESERVED byte must be zero. After the payload whose next-payload is
/// NONE, the remaining bytes may only be block-cipher padding of a decrypted body
/// (RFC 2409 Appendix B): all zero, or all zero with the pad count in the last byte.
/// At most [`MAX_PAYLOADS`] payloads are read, and every step advances by at least 4
/// bytes, so the walk always ends.
pub fn parse_payloads(
    first: PayloadType,
    chain: &[u8],
) -> Result<Vec<RawPayload<'_>>, DecodeError> {
    let (payloads, end) = walk_chain(first, chain)?;
    check_padding(chain, end)?;
    Ok(payloads)
}

/// Like [`parse_payloads`], but for a clear-text body: no byte may follow the last
/// payload.
pub fn parse_payloads_exact(
    first: PayloadType,
    chain: &[u8],
) -> Result<Vec<RawPayload<'_>>, DecodeError> {
    let (payloads, end) = walk_chain(first, chain)?;
    let extra = chain.len().saturating_sub(end);
    if extra != 0 {
        return Err(DecodeError::TrailingBytes {
            part: Part::Padding,
            offset: end,
            extra,
        });
    }
    Ok(payloads)
}

/// The length of the chain (payload bytes without padding) described by `payloads`.
pub fn chain_len(payloads: &[RawPayload<'_>]) -> usize {
    payloads
        .last()
        .map_or(0, |p| p.offset.saturating_add(p.raw.len()))
}

/// Reads generic headers until NONE; returns the views and the end of the last payload.
fn walk_chain(
    first: PayloadType,
    chain: &[u8],
) -> Result<(Vec<RawPayload<'_>>, usize), DecodeError> {
    let mut payloads = Vec::new();
    let mut next = first;
    let mut offset = 0usize;

    while next != PayloadType::NONE {
        let index = u16::try_from(payloads.len()).unwrap_or(u16::MAX);
        if payloads.len() >= MAX_PAYLOADS {
            return Err(DecodeError::TooManyPayloads {
                limit: MAX_PAYLOADS,
            });
        }
        let part = Part::Payload {
            payload_type: next,
            index,
        };
        let rest = chain.get(offset..).unwrap_or(&[]);

        // Generic payload header: next payload, RESERVED, payload length.
        let mut r = Reader::new(rest, offset, part);
        let following = PayloadType(r.u8()?);
        r.reserved(1)?;
        let length = usize::from(r.u16()?);
        if length < GENERIC_HEADER_LEN {
            return Err(DecodeError::LengthTooSmall {
                part,
                offset,
                declared: length,
                minimum: GENERIC_HEADER_LEN,
            });
        }
        let Some(raw) = rest.get(..length) else {
            return Err(DecodeError::LengthOverrun {
                part,
                offset,
                declared: length,
                available: rest.len(),
            });
        };

        payloads.push(RawPayload {
            payload_type: next,
            body: raw.get(GENERIC_HEADER_LEN..).unwrap_or(&[]),
            raw,
            offset,
            index,
            next_payload: following,
        });
        offset = offset.saturating_add(length);
        next = following;
    }
    Ok((payloads, offset))
}

/// Accepts the padding after the chain: zero bytes, optionally ending in the pad count.
fn check_padding(chain: &[u8], end: usize) -> Result<(), DecodeError> {
    let padding = chain.get(end..).unwrap_or(&[]);
    let Some((&last, body)) = padding.split_last() else {
        return Ok(());
    };
    if let Some(pos) = body.iter().position(|&b| b != 0) {
        return Err(DecodeError::BadPadding {
            offset: end.saturating_add(pos),
        });
    }
    if last != 0 && usize::from(last) != padding.len() {
        return Err(DecodeError::BadPadding {
            offset: end.saturating_add(body.len()),
        });
    }
    Ok(())
}

/// Writes `payloads` as a chain (RFC 2408 section 3.2), filling in each generic header's
/// next-payload and length fields, and returns the type of the first payload (for the
/// ISAKMP header or the previous payload). An empty slice writes nothing and returns
/// [`PayloadType::NONE`].
///
/// A payload longer than 65535 bytes cannot be expressed; use [`try_encode_payloads`]
/// where that can happen. Here its length field saturates at 65535 (the peer will
/// reject the message) and the broken invariant is logged at error level.
pub fn encode_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    match try_encode_payloads(payloads, out) {
        Ok(first) => first,
        Err(error) => {
            tracing::error!(%error, "payload too long for its length field, message will be malformed");
            payloads
                .first()
                .map_or(PayloadType::NONE, Payload::payload_type)
        }
    }
}

/// Like [`encode_payloads`], but reports a payload that does not fit its 16-bit length
/// field instead of writing a saturated length. On error `out` keeps the bytes written
/// so far, with the offending length saturated.
pub fn try_encode_payloads(
    payloads: &[Payload],
    out: &mut Vec<u8>,
) -> Result<PayloadType, EncodeError> {
    let mut result = Ok(());
    for (index, payload) in payloads.iter().enumerate() {
        let next = payloads
            .get(index.saturating_add(1))
            .map_or(PayloadType::NONE, Payload::payload_type);
        let start = out.len();
        out.push(next.0);
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        let inner = payload.try_encode_body(out);
        let part = Part::Payload {
            payload_type: payload.payload_type(),
            index: u16::try_from(index).unwrap_or(u16::MAX),
        };
        let length = out.len().saturating_sub(start);
        let written = patch_u16(out, start.saturating_add(2), length, part);
        if result.is_ok() {
            result = inner.and(written);
        }
    }
    result.map(|()| {
        payloads
            .first()
            .map_or(PayloadType::NONE, Payload::payload_type)
    })
}

/// Writes a whole clear-text message: `header` with its next-payload and length fields
/// replaced by the values of the encoded chain (RFC 2408 section 3.1).
pub fn encode_message(header: &Header, payloads: &[Payload], out: &mut Vec<u8>) {
    let start = out.len();
    header.encode(out);
    let first = encode_payloads(payloads, out);
    if let Some(byte) = out.get_mut(start.saturating_add(16)) {
        *byte = first.0;
    }
    let length = out.len().saturating_sub(start);
    patch_length(out.get_mut(start..).unwrap_or(&mut []), length);
}

/// Sets the Length field of the ISAKMP header at the start of `message` to `length`
/// (used after encrypting the body, whose padded size is only known then).
/// Does nothing when `message` is shorter than a header.
pub fn patch_length(message: &mut [u8], length: usize) {
    let value = u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes();
    if let Some(field) = message.get_mut(24..Header::LEN) {
        field.copy_from_slice(&value);
    }
}

/// Writes `length` as a big-endian u16 at `at`, saturating and reporting when it does
/// not fit.
pub(crate) fn patch_u16(
    out: &mut [u8],
    at: usize,
    length: usize,
    part: Part,
) -> Result<(), EncodeError> {
    let (value, result) = match u16::try_from(length) {
        Ok(v) => (v, Ok(())),
        Err(_) => (u16::MAX, Err(EncodeError::TooLong { part, length })),
    };
    if let Some(field) = out.get_mut(at..at.saturating_add(2)) {
        field.copy_from_slice(&value.to_be_bytes());
    }
    result
}
