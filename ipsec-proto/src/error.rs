//! Errors of the codec: small, `Copy`, and precise about where the bytes went wrong.

use crate::isakmp::{NotifyType, PayloadType};

/// The structure a decode error was found in.
///
/// Offsets in [`DecodeError`] are relative to the buffer handed to the parser that
/// reported them: the datagram for [`crate::isakmp::Message::parse`], the payload chain
/// for [`crate::isakmp::parse_payloads`] and [`crate::isakmp::RawPayload::decode`] (a
/// payload's offset is the offset of its generic header in the chain), the plaintext for
/// [`crate::esp::parse_trailer`] and the UDP payload for [`crate::natt::classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Part {
    /// The 28-byte ISAKMP header (RFC 2408 section 3.1).
    IsakmpHeader,
    /// A payload of the chain: its type and its index in the chain (0-based).
    Payload {
        /// The payload type, as named by the previous next-payload field.
        payload_type: PayloadType,
        /// Position of the payload in the chain, starting at 0.
        index: u16,
    },
    /// A Proposal payload inside an SA payload (RFC 2408 section 3.5).
    Proposal,
    /// A Transform payload inside a Proposal payload (RFC 2408 section 3.6).
    Transform,
    /// A data attribute inside a Transform payload (RFC 2408 section 3.3).
    Attribute,
    /// The SPI field of a proposal, notification or delete payload (RFC 2408 sections
    /// 3.5, 3.14, 3.15).
    Spi,
    /// The padding after the last payload of a decrypted body (RFC 2409 Appendix B).
    Padding,
    /// The 8-byte ESP header (RFC 4303 section 2).
    EspHeader,
    /// The ESP trailer: padding, pad length and next header (RFC 4303 section 2.4).
    EspTrailer,
    /// The payload of a UDP datagram on port 4500 (RFC 3948 section 2).
    UdpEncapsulation,
}

impl core::fmt::Display for Part {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::IsakmpHeader => f.write_str("isakmp header"),
            Self::Payload {
                payload_type,
                index,
            } => write!(f, "{payload_type} payload #{index}"),
            Self::Proposal => f.write_str("proposal"),
            Self::Transform => f.write_str("transform"),
            Self::Attribute => f.write_str("attribute"),
            Self::Spi => f.write_str("spi"),
            Self::Padding => f.write_str("padding"),
            Self::EspHeader => f.write_str("esp header"),
            Self::EspTrailer => f.write_str("esp trailer"),
            Self::UdpEncapsulation => f.write_str("udp-encapsulated payload"),
        }
    }
}

/// Bytes that do not form a valid ISAKMP message, payload or ESP framing.
///
/// Every variant names the structure ([`Part`]) and the byte offset where the problem
/// was found. The type is `Copy` and allocation-free so parsers can return it cheaply
/// on hostile input. [`NotifyType::from`] maps it to the RFC 2408 section 3.14.1 error
/// a responder would report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before a fixed-size field or declared value.
    #[error("{part} truncated at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        /// Structure being read.
        part: Part,
        /// Offset of the field that did not fit.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },

    /// The ISAKMP header's length differs from the datagram's size (RFC 2408 section 3.1:
    /// the length covers header and payloads, and one datagram carries one message).
    #[error("isakmp header declares {declared} bytes but the datagram has {datagram}")]
    MessageLengthMismatch {
        /// Value of the header's Length field.
        declared: u32,
        /// Size of the datagram (after any non-ESP marker).
        datagram: usize,
    },

    /// A length field is smaller than the fixed part of its structure, e.g. a payload
    /// length under 4 (RFC 2408 section 3.2) or an ISAKMP length under 28.
    #[error(
        "{part} at offset {offset} declares length {declared}, below its minimum of {minimum}"
    )]
    LengthTooSmall {
        /// Structure whose length field is wrong.
        part: Part,
        /// Offset of the structure.
        offset: usize,
        /// Declared length.
        declared: usize,
        /// Smallest valid length.
        minimum: usize,
    },

    /// A length field points past the end of the enclosing buffer.
    #[error(
        "{part} at offset {offset} declares length {declared} but only {available} bytes remain"
    )]
    LengthOverrun {
        /// Structure whose length field is wrong.
        part: Part,
        /// Offset of the structure.
        offset: usize,
        /// Declared length.
        declared: usize,
        /// Bytes left in the enclosing buffer from `offset`.
        available: usize,
    },

    /// Bytes remain after the last element of a structure whose elements must fill it
    /// exactly (the proposals of an SA payload, the transforms of a proposal, the SPIs
    /// of a Delete payload, a clear-text payload chain).
    #[error("{extra} unexpected bytes after the last element of {part} at offset {offset}")]
    TrailingBytes {
        /// Structure that should have ended.
        part: Part,
        /// Offset of the first unexpected byte.
        offset: usize,
        /// Number of unexpected bytes.
        extra: usize,
    },

    /// The padding after a decrypted payload chain is neither all zero nor zero with the
    /// pad count in its last byte (RFC 2409 Appendix B).
    #[error("padding after the payload chain is not zero at offset {offset}")]
    BadPadding {
        /// Offset of the first offending byte.
        offset: usize,
    },

    /// The chain holds more payloads than [`crate::isakmp::MAX_PAYLOADS`].
    #[error("payload chain exceeds the limit of {limit} payloads")]
    TooManyPayloads {
        /// The limit that was exceeded.
        limit: usize,
    },

    /// A RESERVED field is not zero (RFC 2408 sections 3.2, 3.5, 3.6 and RFC 3947
    /// section 5.2 say "set to 0"; a strict reader rejects anything else so that every
    /// accepted message re-encodes byte for byte).
    #[error("reserved field of {part} at offset {offset} is not zero")]
    ReservedNotZero {
        /// Structure with the non-zero field.
        part: Part,
        /// Offset of the field.
        offset: usize,
    },

    /// Inside an SA payload, a next-payload field names something other than another
    /// Proposal (or Transform) or NONE (RFC 2408 sections 3.5 and 3.6).
    #[error("{part} at offset {offset} is followed by a {found} payload")]
    UnexpectedPayload {
        /// Structure whose next-payload field is wrong.
        part: Part,
        /// Offset of the structure.
        offset: usize,
        /// The payload type that was named.
        found: PayloadType,
    },

    /// A proposal's "# of Transforms" disagrees with the transforms it contains
    /// (RFC 2408 section 3.5).
    #[error("proposal at offset {offset} declares {declared} transforms but contains {found}")]
    TransformCountMismatch {
        /// Offset of the proposal.
        offset: usize,
        /// Value of the "# of Transforms" field.
        declared: u8,
        /// Transforms actually present.
        found: usize,
    },

    /// An IPsec DOI situation other than SIT_IDENTITY_ONLY: secrecy and integrity
    /// situations carry labelled-domain fields this codec does not read (RFC 2407
    /// section 4.6.1 and 4.6.1.1).
    #[error("sa payload at offset {offset} uses unsupported ipsec situation {situation:#x}")]
    UnsupportedSituation {
        /// Offset of the SA payload.
        offset: usize,
        /// The situation bitmap.
        situation: u32,
    },

    /// ESP padding bytes are not the default 1, 2, 3, ... sequence (RFC 4303
    /// section 2.4), or the pad length exceeds the data.
    #[error("esp padding is wrong at offset {offset}")]
    BadEspPadding {
        /// Offset in the plaintext of the first offending byte (or of the pad length).
        offset: usize,
    },
}

impl From<DecodeError> for NotifyType {
    /// The notification a responder sends for bytes it could not parse (RFC 2408
    /// section 3.14.1): proposal structure errors are BAD-PROPOSAL-SYNTAX, a header
    /// length that disagrees with the datagram is UNEQUAL-PAYLOAD-LENGTHS, everything
    /// else is PAYLOAD-MALFORMED.
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::MessageLengthMismatch { .. } => Self::UNEQUAL_PAYLOAD_LENGTHS,
            DecodeError::TransformCountMismatch { .. } | DecodeError::UnexpectedPayload { .. } => {
                Self::BAD_PROPOSAL_SYNTAX
            }
            DecodeError::UnsupportedSituation { .. } => Self::SITUATION_NOT_SUPPORTED,
            DecodeError::Truncated {
                part: Part::Proposal | Part::Transform | Part::Attribute,
                ..
            }
            | DecodeError::LengthTooSmall {
                part: Part::Proposal | Part::Transform | Part::Attribute,
                ..
            }
            | DecodeError::LengthOverrun {
                part: Part::Proposal | Part::Transform | Part::Attribute,
                ..
            } => Self::BAD_PROPOSAL_SYNTAX,
            _ => Self::PAYLOAD_MALFORMED,
        }
    }
}

/// A value that cannot be written because it does not fit its length field or the
/// caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An element is longer than its 16-bit length field can say (RFC 2408 section 3.2:
    /// payload lengths are 16 bits, including the 4-byte generic header).
    #[error("{part} of {length} bytes does not fit a 16-bit length field")]
    TooLong {
        /// Structure that is too long.
        part: Part,
        /// Its length in bytes.
        length: usize,
    },
    /// More elements than their count field can say (a proposal's 8-bit "# of
    /// Transforms", a delete payload's 16-bit "# of SPIs").
    #[error("{count} elements of {part} exceed the count field's limit of {limit}")]
    TooMany {
        /// Structure whose elements are counted.
        part: Part,
        /// Number of elements.
        count: usize,
        /// Largest value of the count field.
        limit: usize,
    },
    /// A Delete payload's SPI differs in length from its SPI Size field (RFC 2408
    /// section 3.15: all SPIs of one payload have the same size).
    #[error("spi of {found} bytes in a delete payload whose spi size is {expected}")]
    SpiSizeMismatch {
        /// The SPI Size field.
        expected: u8,
        /// Length of the offending SPI.
        found: usize,
    },
    /// The output buffer is shorter than the encoded form.
    #[error("{part} needs {needed} bytes of buffer, {available} given")]
    BufferTooShort {
        /// Structure being written.
        part: Part,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}
