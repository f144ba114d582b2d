//! Owned payload bodies: decoding from a [`RawPayload`] and encoding back.

use super::{
    patch_u16, IdType, NotifyType, PayloadType, ProtocolId, RawPayload, DOI_IPSEC,
    GENERIC_HEADER_LEN, SIT_IDENTITY_ONLY,
};
use crate::error::{DecodeError, EncodeError, Part};
use crate::reader::Reader;

/// A decoded payload body (RFC 2408 sections 3.4 to 3.16, RFC 3947).
///
/// Every variant re-encodes to the bytes it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// Security Association (RFC 2408 section 3.4).
    Sa(SaPayload),
    /// Key Exchange data: the Diffie-Hellman public value (RFC 2408 section 3.7).
    KeyExchange(Vec<u8>),
    /// Identification (RFC 2408 section 3.8, RFC 2407 section 4.6.2).
    Identification(IdPayload),
    /// Certificate (RFC 2408 section 3.9).
    Certificate {
        /// Certificate encoding (RFC 2408 section 3.9 table).
        encoding: u8,
        /// The certificate.
        data: Vec<u8>,
    },
    /// Certificate Request (RFC 2408 section 3.10).
    CertificateRequest {
        /// Requested certificate type.
        cert_type: u8,
        /// Acceptable certificate authority.
        authority: Vec<u8>,
    },
    /// Hash data (RFC 2408 section 3.11).
    Hash(Vec<u8>),
    /// Signature data (RFC 2408 section 3.12).
    Signature(Vec<u8>),
    /// Nonce data (RFC 2408 section 3.13).
    Nonce(Vec<u8>),
    /// Notification (RFC 2408 section 3.14).
    Notification(NotifyPayload),
    /// Delete (RFC 2408 section 3.15).
    Delete(DeletePayload),
    /// Vendor ID (RFC 2408 section 3.16).
    VendorId(Vec<u8>),
    /// NAT Discovery hash (RFC 3947 section 3.2), under type 20 or draft type 130.
    NatD {
        /// [`PayloadType::NAT_D`] or [`PayloadType::NAT_D_DRAFT`].
        payload_type: PayloadType,
        /// HASH(CKY-I | CKY-R | IP | Port).
        hash: Vec<u8>,
    },
    /// NAT Original Address (RFC 3947 section 5.2), under type 21 or draft type 131.
    NatOa {
        /// [`PayloadType::NAT_OA`] or [`PayloadType::NAT_OA_DRAFT`].
        payload_type: PayloadType,
        /// [`IdType::IPV4_ADDR`] or [`IdType::IPV6_ADDR`].
        id_type: IdType,
        /// The original address (4 or 16 bytes for the two ID types).
        address: Vec<u8>,
    },
    /// A payload type this crate does not decode, kept as it was.
    Unknown {
        /// Its type.
        payload_type: PayloadType,
        /// Its body after the generic header.
        body: Vec<u8>,
    },
}

/// Security Association payload (RFC 2408 section 3.4, RFC 2407 section 4.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaPayload {
    /// Domain of interpretation ([`DOI_IPSEC`]).
    pub doi: u32,
    /// Situation ([`SIT_IDENTITY_ONLY`]).
    pub situation: u32,
    /// The proposals, in wire order (at least one).
    pub proposals: Vec<Proposal>,
}

/// Proposal payload (RFC 2408 section 3.5). Proposals with the same number are ANDed
/// (e.g. AH and ESP together), different numbers are alternatives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number.
    pub number: u8,
    /// Protocol of the SA ([`ProtocolId::ISAKMP`] in phase 1, ESP in phase 2).
    pub protocol_id: ProtocolId,
    /// SPI: empty in phase 1 (RFC 2409 section 5 allows the cookies, rarely sent),
    /// 4 bytes for ESP.
    pub spi: Vec<u8>,
    /// Alternative transforms (at least one), in order of preference.
    pub transforms: Vec<Transform>,
}

/// Transform payload (RFC 2408 section 3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    /// Transform number.
    pub number: u8,
    /// Transform identifier ([`super::attr::oakley::KEY_IKE`] or an ESP transform such
    /// as [`super::attr::ipsec::ESP_AES`]).
    pub transform_id: u8,
    /// SA attributes, in wire order.
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// The first attribute of class `attribute_type`, if present.
    pub fn attribute(&self, attribute_type: u16) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|a| a.attribute_type == attribute_type)
            .map(|a| &a.value)
    }
}

/// A data attribute (RFC 2408 section 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute class, with the AF (format) bit stripped; 15 bits.
    pub attribute_type: u16,
    /// The value; its variant decides the AF bit.
    pub value: AttributeValue,
}

impl Attribute {
    /// A basic (TV) attribute.
    pub fn basic(attribute_type: u16, value: u16) -> Self {
        Self {
            attribute_type,
            value: AttributeValue::Basic(value),
        }
    }

    /// A lifetime-like value: basic when it fits 16 bits, otherwise variable with the
    /// shortest big-endian form of 4 or 8 bytes (RFC 2409 Appendix A lets Life
    /// Duration take either form; peers commonly send 4-byte variable values).
    pub fn number(attribute_type: u16, value: u64) -> Self {
        let value = match u16::try_from(value) {
            Ok(v) => AttributeValue::Basic(v),
            Err(_) => match u32::try_from(value) {
                Ok(v) => AttributeValue::Variable(v.to_be_bytes().to_vec()),
                Err(_) => AttributeValue::Variable(value.to_be_bytes().to_vec()),
            },
        };
        Self {
            attribute_type,
            value,
        }
    }
}

/// Value of a data attribute (RFC 2408 section 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    /// TV form (AF = 1): a 16-bit value.
    Basic(u16),
    /// TLV form (AF = 0): a length-prefixed byte string.
    Variable(Vec<u8>),
}

impl AttributeValue {
    /// The value as an integer: basic values directly, variable ones as big-endian of
    /// up to 8 bytes. `None` for longer variable values.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Basic(v) => Some(u64::from(*v)),
            Self::Variable(bytes) if bytes.len() <= 8 => {
                Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
            }
            Self::Variable(_) => None,
        }
    }
}

/// Identification payload (RFC 2408 section 3.8 with the IPsec DOI fields of RFC 2407
/// section 4.6.2). Phase 1 uses protocol/port 0/0 or 17/500; phase 2 client IDs carry
/// the selector's protocol and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPayload {
    /// Identification type.
    pub id_type: IdType,
    /// IP protocol number, 0 for any.
    pub protocol: u8,
    /// Port, 0 for any.
    pub port: u16,
    /// Identification data, laid out as `id_type` says.
    pub data: Vec<u8>,
}

impl IdPayload {
    /// ID_IPV4_ADDR for `addr`, any protocol and port.
    pub fn ipv4(addr: core::net::Ipv4Addr) -> Self {
        Self {
            id_type: IdType::IPV4_ADDR,
            protocol: 0,
            port: 0,
            data: addr.octets().to_vec(),
        }
    }

    /// ID_IPV4_ADDR_SUBNET for `addr`/`mask`, any protocol and port.
    pub fn ipv4_subnet(addr: core::net::Ipv4Addr, mask: core::net::Ipv4Addr) -> Self {
        let mut data = addr.octets().to_vec();
        data.extend_from_slice(&mask.octets());
        Self {
            id_type: IdType::IPV4_ADDR_SUBNET,
            protocol: 0,
            port: 0,
            data,
        }
    }

    /// The body as it goes on the wire without the generic header: IDii_b / IDir_b of
    /// RFC 2409 section 5.
    pub fn to_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len().saturating_add(4));
        self.encode(&mut out);
        out
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.id_type.0);
        out.push(self.protocol);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.data);
    }
}

/// Notification payload (RFC 2408 section 3.14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyPayload {
    /// Domain of interpretation.
    pub doi: u32,
    /// Protocol of the SA the notification is about.
    pub protocol_id: ProtocolId,
    /// Notify message type.
    pub notify_type: NotifyType,
    /// SPI of that SA (the two cookies, 16 bytes, for ISAKMP in R-U-THERE; RFC 3706
    /// section 5), or empty.
    pub spi: Vec<u8>,
    /// Notification data (the 4-byte sequence number of R-U-THERE, for example).
    pub data: Vec<u8>,
}

/// Delete payload (RFC 2408 section 3.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletePayload {
    /// Domain of interpretation.
    pub doi: u32,
    /// Protocol of the SAs being deleted.
    pub protocol_id: ProtocolId,
    /// Size of each SPI: 16 for ISAKMP (the cookies), 4 for ESP. Every entry of `spis`
    /// must have this length for the payload to re-encode consistently.
    pub spi_size: u8,
    /// The SPIs.
    pub spis: Vec<Vec<u8>>,
}

impl Payload {
    /// The payload type written in the previous next-payload field.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::SA,
            Self::KeyExchange(_) => PayloadType::KEY_EXCHANGE,
            Self::Identification(_) => PayloadType::IDENTIFICATION,
            Self::Certificate { .. } => PayloadType::CERTIFICATE,
            Self::CertificateRequest { .. } => PayloadType::CERTIFICATE_REQUEST,
            Self::Hash(_) => PayloadType::HASH,
            Self::Signature(_) => PayloadType::SIGNATURE,
            Self::Nonce(_) => PayloadType::NONCE,
            Self::Notification(_) => PayloadType::NOTIFICATION,
            Self::Delete(_) => PayloadType::DELETE,
            Self::VendorId(_) => PayloadType::VENDOR_ID,
            Self::NatD { payload_type, .. }
            | Self::NatOa { payload_type, .. }
            | Self::Unknown { payload_type, .. } => *payload_type,
        }
    }

    /// Appends the body (without generic header) to `out`. Lengths inside an SA
    /// payload that exceed 16 bits saturate; [`Self::try_encode_body`] reports them.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        if let Err(error) = self.try_encode_body(out) {
            tracing::error!(%error, "sa payload element too long, message will be malformed");
        }
    }

    /// The body as a new vector (e.g. SAi_b for HASH_I, RFC 2409 section 5).
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_body(&mut out);
        out
    }

    /// Like [`Self::encode_body`], but reports a value its length or count field cannot
    /// express (a proposal, transform or attribute over 65535 bytes, an SPI over 255
    /// bytes, more than 255 transforms or 65535 SPIs) or a Delete payload whose SPIs
    /// differ from its SPI size. The bytes are written either way, with the offending
    /// field saturated.
    pub fn try_encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut result = Ok(());
        match self {
            Self::Sa(sa) => return sa.encode(out),
            Self::KeyExchange(data)
            | Self::Hash(data)
            | Self::Signature(data)
            | Self::Nonce(data)
            | Self::VendorId(data)
            | Self::NatD { hash: data, .. }
            | Self::Unknown { body: data, .. } => out.extend_from_slice(data),
            Self::Identification(id) => id.encode(out),
            Self::Certificate { encoding, data } => {
                out.push(*encoding);
                out.extend_from_slice(data);
            }
            Self::CertificateRequest {
                cert_type,
                authority,
            } => {
                out.push(*cert_type);
                out.extend_from_slice(authority);
            }
            Self::Notification(n) => {
                out.extend_from_slice(&n.doi.to_be_bytes());
                out.push(n.protocol_id.0);
                out.push(spi_size(&n.spi, &mut result));
                out.extend_from_slice(&n.notify_type.0.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                out.extend_from_slice(&d.doi.to_be_bytes());
                out.push(d.protocol_id.0);
                out.push(d.spi_size);
                let count = u16::try_from(d.spis.len()).unwrap_or_else(|_| {
                    keep_first(
                        &mut result,
                        EncodeError::TooMany {
                            part: Part::Spi,
                            count: d.spis.len(),
                            limit: usize::from(u16::MAX),
                        },
                    );
                    u16::MAX
                });
                out.extend_from_slice(&count.to_be_bytes());
                for spi in &d.spis {
                    if spi.len() != usize::from(d.spi_size) {
                        keep_first(
                            &mut result,
                            EncodeError::SpiSizeMismatch {
                                expected: d.spi_size,
                                found: spi.len(),
                            },
                        );
                    }
                    out.extend_from_slice(spi);
                }
            }
            Self::NatOa {
                id_type, address, ..
            } => {
                out.push(id_type.0);
                out.extend_from_slice(&[0, 0, 0]);
                out.extend_from_slice(address);
            }
        }
        result
    }
}

/// Records `error` unless an earlier one is already recorded.
fn keep_first(result: &mut Result<(), EncodeError>, error: EncodeError) {
    if result.is_ok() {
        *result = Err(error);
    }
}

/// The SPI Size byte for `spi`, saturated (and reported) above 255.
fn spi_size(spi: &[u8], result: &mut Result<(), EncodeError>) -> u8 {
    u8::try_from(spi.len()).unwrap_or_else(|_| {
        keep_first(
            result,
            EncodeError::TooLong {
                part: Part::Spi,
                length: spi.len(),
            },
        );
        u8::MAX
    })
}

impl SaPayload {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut result = Ok(());
        out.extend_from_slice(&self.doi.to_be_bytes());
        out.extend_from_slice(&self.situation.to_be_bytes());
        for (i, proposal) in self.proposals.iter().enumerate() {
            let last = i.saturating_add(1) == self.proposals.len();
            let r = proposal.encode(last, out);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Proposal {
    fn encode(&self, last: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut result = Ok(());
        let start = out.len();
        out.push(if last { 0 } else { PayloadType::PROPOSAL.0 });
        out.extend_from_slice(&[0, 0, 0]);
        out.push(self.number);
        out.push(self.protocol_id.0);
        out.push(spi_size(&self.spi, &mut result));
        out.push(u8::try_from(self.transforms.len()).unwrap_or_else(|_| {
            keep_first(
                &mut result,
                EncodeError::TooMany {
                    part: Part::Transform,
                    count: self.transforms.len(),
                    limit: usize::from(u8::MAX),
                },
            );
            u8::MAX
        }));
        out.extend_from_slice(&self.spi);
        for (i, transform) in self.transforms.iter().enumerate() {
            let last = i.saturating_add(1) == self.transforms.len();
            let r = transform.encode(last, out);
            if result.is_ok() {
                result = r;
            }
        }
        let length = out.len().saturating_sub(start);
        let r = patch_u16(out, start.saturating_add(2), length, Part::Proposal);
        result.and(r)
    }
}

impl Transform {
    fn encode(&self, last: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut result = Ok(());
        let start = out.len();
        out.push(if last { 0 } else { PayloadType::TRANSFORM.0 });
        out.extend_from_slice(&[0, 0, 0]);
        out.push(self.number);
        out.push(self.transform_id);
        out.extend_from_slice(&[0, 0]);
        for attribute in &self.attributes {
            let r = attribute.encode(out);
            if result.is_ok() {
                result = r;
            }
        }
        let length = out.len().saturating_sub(start);
        let r = patch_u16(out, start.saturating_add(2), length, Part::Transform);
        result.and(r)
    }
}

impl Attribute {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let class = self.attribute_type & 0x7fff;
        match &self.value {
            AttributeValue::Basic(v) => {
                out.extend_from_slice(&(class | 0x8000).to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
                Ok(())
            }
            AttributeValue::Variable(bytes) => {
                out.extend_from_slice(&class.to_be_bytes());
                let at = out.len();
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(bytes);
                patch_u16(out, at, bytes.len(), Part::Attribute)
            }
        }
    }
}

/// Decodes one raw payload by its type.
pub(super) fn decode(raw: &RawPayload<'_>) -> Result<Payload, DecodeError> {
    let part = raw.part();
    let base = raw.offset.saturating_add(GENERIC_HEADER_LEN);
    let mut r = Reader::new(raw.body, base, part);
    let body = raw.body;

    let payload = match raw.payload_type {
        PayloadType::SA => Payload::Sa(decode_sa(&mut r, raw.offset)?),
        PayloadType::KEY_EXCHANGE => Payload::KeyExchange(body.to_vec()),
        PayloadType::IDENTIFICATION => Payload::Identification(IdPayload {
            id_type: IdType(r.u8()?),
            protocol: r.u8()?,
            port: r.u16()?,
            data: r.rest().to_vec(),
        }),
        PayloadType::CERTIFICATE => Payload::Certificate {
            encoding: r.u8()?,
            data: r.rest().to_vec(),
        },
        PayloadType::CERTIFICATE_REQUEST => Payload::CertificateRequest {
            cert_type: r.u8()?,
            authority: r.rest().to_vec(),
        },
        PayloadType::HASH => Payload::Hash(body.to_vec()),
        PayloadType::SIGNATURE => Payload::Signature(body.to_vec()),
        PayloadType::NONCE => Payload::Nonce(body.to_vec()),
        PayloadType::NOTIFICATION => {
            let doi = r.u32()?;
            let protocol_id = ProtocolId(r.u8()?);
            let spi_size = usize::from(r.u8()?);
            let notify_type = NotifyType(r.u16()?);
            let spi = r.take(spi_size)?.to_vec();
            Payload::Notification(NotifyPayload {
                doi,
                protocol_id,
                notify_type,
                spi,
                data: r.rest().to_vec(),
            })
        }
        PayloadType::DELETE => Payload::Delete(decode_delete(&mut r)?),
        PayloadType::VENDOR_ID => Payload::VendorId(body.to_vec()),
        PayloadType::NAT_D | PayloadType::NAT_D_DRAFT => Payload::NatD {
            payload_type: raw.payload_type,
            hash: body.to_vec(),
        },
        PayloadType::NAT_OA | PayloadType::NAT_OA_DRAFT => {
            let id_type = IdType(r.u8()?);
            r.reserved(3)?;
            Payload::NatOa {
                payload_type: raw.payload_type,
                id_type,
                address: r.rest().to_vec(),
            }
        }
        other => Payload::Unknown {
            payload_type: other,
            body: body.to_vec(),
        },
    };
    Ok(payload)
}

fn decode_delete(r: &mut Reader<'_>) -> Result<DeletePayload, DecodeError> {
    let doi = r.u32()?;
    let protocol_id = ProtocolId(r.u8()?);
    let spi_size = r.u8()?;
    let count = r.u16()?;
    let mut spis = Vec::with_capacity(usize::from(count).min(r.remaining()));
    for _ in 0..count {
        spis.push(r.take(usize::from(spi_size))?.to_vec());
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            part: r.part(),
            offset: r.offset(),
            extra: r.remaining(),
        });
    }
    Ok(DeletePayload {
        doi,
        protocol_id,
        spi_size,
        spis,
    })
}

/// Reads the SA body: DOI, situation, then a chain of proposals filling it exactly.
fn decode_sa(r: &mut Reader<'_>, payload_offset: usize) -> Result<SaPayload, DecodeError> {
    let doi = r.u32()?;
    let situation = r.u32()?;
    if doi == DOI_IPSEC && situation & !SIT_IDENTITY_ONLY != 0 {
        return Err(DecodeError::UnsupportedSituation {
            offset: payload_offset,
            situation,
        });
    }

    // RFC 2408 section 3.5: proposals chain with next payload 2, the last one has 0.
    let mut proposals = Vec::new();
    loop {
        let (proposal, next) = decode_proposal(r)?;
        proposals.push(proposal);
        if next == PayloadType::NONE {
            break;
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            part: Part::Proposal,
            offset: r.offset(),
            extra: r.remaining(),
        });
    }
    Ok(SaPayload {
        doi,
        situation,
        proposals,
    })
}

/// Reads a generic header of a sub-payload whose next payload may only be `same` or
/// NONE; returns the next type and a reader over the sub-payload's body.
fn sub_payload<'a>(
    r: &mut Reader<'a>,
    part: Part,
    same: PayloadType,
    fixed: usize,
) -> Result<(PayloadType, Reader<'a>), DecodeError> {
    let offset = r.offset();
    let mut h = r.with_part(part);
    let next = PayloadType(h.u8()?);
    h.reserved(1)?;
    let length = usize::from(h.u16()?);
    if next != PayloadType::NONE && next != same {
        return Err(DecodeError::UnexpectedPayload {
            part,
            offset,
            found: next,
        });
    }
    if length < fixed {
        return Err(DecodeError::LengthTooSmall {
            part,
            offset,
            declared: length,
            minimum: fixed,
        });
    }
    let available = r.remaining();
    let bytes = r.take(length).map_err(|_| DecodeError::LengthOverrun {
        part,
        offset,
        declared: length,
        available,
    })?;
    let body = bytes.get(GENERIC_HEADER_LEN..).unwrap_or(&[]);
    Ok((
        next,
        Reader::new(body, offset.saturating_add(GENERIC_HEADER_LEN), part),
    ))
}

fn decode_proposal(r: &mut Reader<'_>) -> Result<(Proposal, PayloadType), DecodeError> {
    let offset = r.offset();
    let (next, mut p) = sub_payload(r, Part::Proposal, PayloadType::PROPOSAL, 8)?;
    let number = p.u8()?;
    let protocol_id = ProtocolId(p.u8()?);
    let spi_size = usize::from(p.u8()?);
    let declared = p.u8()?;
    let spi = p.take(spi_size)?.to_vec();

    // RFC 2408 section 3.6: transforms chain with next payload 3, the last one has 0.
    // A proposal may carry no transform at all (then its body ends after the SPI);
    // otherwise the chain must end with a NONE next-payload, not with the body.
    let mut transforms = Vec::new();
    if p.remaining() != 0 {
        loop {
            let (transform, next) = decode_transform(&mut p)?;
            transforms.push(transform);
            if next == PayloadType::NONE {
                break;
            }
        }
    }
    if p.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            part: Part::Transform,
            offset: p.offset(),
            extra: p.remaining(),
        });
    }
    if transforms.len() != usize::from(declared) {
        return Err(DecodeError::TransformCountMismatch {
            offset,
            declared,
            found: transforms.len(),
        });
    }
    let proposal = Proposal {
        number,
        protocol_id,
        spi,
        transforms,
    };
    Ok((proposal, next))
}

fn decode_transform(r: &mut Reader<'_>) -> Result<(Transform, PayloadType), DecodeError> {
    let (next, mut t) = sub_payload(r, Part::Transform, PayloadType::TRANSFORM, 8)?;
    let number = t.u8()?;
    let transform_id = t.u8()?;
    t.reserved(2)?;

    let mut attributes = Vec::new();
    while t.remaining() != 0 {
        attributes.push(decode_attribute(&mut t)?);
    }
    let transform = Transform {
        number,
        transform_id,
        attributes,
    };
    Ok((transform, next))
}

/// RFC 2408 section 3.3: AF bit set means the second 16 bits are the value (TV),
/// clear means they are the length of the value that follows (TLV).
fn decode_attribute(t: &mut Reader<'_>) -> Result<Attribute, DecodeError> {
    let offset = t.offset();
    let mut a = t.with_part(Part::Attribute);
    let first = a.u16()?;
    let second = a.u16()?;
    let attribute_type = first & 0x7fff;
    let value = if first & 0x8000 != 0 {
        AttributeValue::Basic(second)
    } else {
        let length = usize::from(second);
        let available = a.remaining();
        let bytes = a.take(length).map_err(|_| DecodeError::LengthOverrun {
            part: Part::Attribute,
            offset,
            declared: length,
            available,
        })?;
        AttributeValue::Variable(bytes.to_vec())
    };

    *t = a.with_part(Part::Transform);
    Ok(Attribute {
        attribute_type,
        value,
    })
}
