//! Demultiplexing of UDP port 4500 (RFC 3948 section 2): IKE behind a non-ESP marker,
//! NAT-keepalives, and ESP.

use crate::error::{DecodeError, Part};
use crate::esp::EspHeader;

/// The non-ESP marker: four zero bytes where ESP would have its SPI (RFC 3948
/// section 2.2). An IKE message on port 4500 follows it.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// The single byte of a NAT-keepalive (RFC 3948 section 2.3).
pub const KEEPALIVE: u8 = 0xff;

/// What a UDP-4500 payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Udp4500<'a> {
    /// An ISAKMP message; the non-ESP marker is already removed.
    Ike(&'a [u8]),
    /// A NAT-keepalive, to be dropped (RFC 3948 section 2.3).
    Keepalive,
    /// An ESP packet starting with its SPI (RFC 3948 section 2.1).
    Esp(&'a [u8]),
}

/// Sorts a UDP-4500 payload (RFC 3948 section 2): a leading zero SPI is the non-ESP
/// marker, a single 0xff byte is a keepalive, anything else must be at least as long
/// as an ESP header.
pub fn classify(udp_payload: &[u8]) -> Result<Udp4500<'_>, DecodeError> {
    if udp_payload == [KEEPALIVE] {
        return Ok(Udp4500::Keepalive);
    }
    if let Some(ike) = udp_payload.strip_prefix(&NON_ESP_MARKER) {
        return Ok(Udp4500::Ike(ike));
    }
    if udp_payload.len() < EspHeader::LEN {
        return Err(DecodeError::Truncated {
            part: Part::UdpEncapsulation,
            offset: 0,
            needed: EspHeader::LEN,
            available: udp_payload.len(),
        });
    }
    Ok(Udp4500::Esp(udp_payload))
}

/// Appends the non-ESP marker and `message` to `out`, the form of an IKE message sent
/// on port 4500 (RFC 3948 section 2.2).
pub fn encode_ike(message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&NON_ESP_MARKER);
    out.extend_from_slice(message);
}
