//! Wire formats of IKEv1 (ISAKMP, RFC 2408/2407/2409, NAT-T RFC 3947, DPD RFC 3706) and
//! ESP (RFC 4303, UDP encapsulation RFC 3948).
//!
//! This crate knows bytes and nothing else: no cryptography, no state, no time, no I/O.
//! Encrypted ISAKMP messages parse up to their header; whoever holds the keys decrypts
//! the body and hands the plaintext back to the payload-chain parser.
//!
//! Parsing is strict and cannot panic: every length is checked against its enclosing
//! buffer, RESERVED fields must be zero, and anything that is accepted re-encodes to the
//! same bytes. Code points (payload, exchange, notify, ID types...) are open newtypes,
//! so unknown values are carried, not rejected; policy decides later.
//!
//! ```
//! use ipsec_proto::isakmp::{Message, PayloadType, Payload};
//! # fn main() -> Result<(), ipsec_proto::DecodeError> {
//! // A Main Mode message with one Vendor ID payload.
//! let mut datagram = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0,
//!     13, 0x10, 2, 0, 0, 0, 0, 0, 0, 0, 0, 36, 0, 0, 0, 8, 0xaa, 0xbb, 0xcc, 0xdd];
//! let message = Message::parse(&datagram)?;
//! let payloads = message.payloads()?;
//! assert_eq!(payloads[0].payload_type, PayloadType::VENDOR_ID);
//! assert_eq!(payloads[0].decode()?, Payload::VendorId(vec![0xaa, 0xbb, 0xcc, 0xdd]));
//! # datagram.clear();
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

#[macro_use]
mod codepoint;
mod error;
mod reader;

pub mod esp;
pub mod isakmp;
pub mod natt;

pub use error::{DecodeError, EncodeError, Part};
