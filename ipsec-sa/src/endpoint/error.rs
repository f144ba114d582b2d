//! Errors, in the three kinds of DESIGN.md: bytes that do not parse (`DecodeError` from
//! `ipsec-proto`, wrapped), a peer that misbehaves ([`PeerMisbehaved`], each mapped to the
//! RFC 2408 section 3.14.1 notification we send back), and misuse by our caller
//! ([`InitiateError`], [`ConfigError`](super::ConfigError)).

use core::fmt;

use ipsec_proto::isakmp::NotifyType;
use ipsec_proto::DecodeError;

use super::TunnelId;

/// RFC 2408 section 3.14.1 and RFC 2407 section 4.6.3 notify message types we send or act on.
pub(crate) mod notify {

    pub(crate) const INVALID_SPI: u16 = 11;
    pub(crate) const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub(crate) const PAYLOAD_MALFORMED: u16 = 16;
    pub(crate) const INVALID_KEY_INFORMATION: u16 = 17;
    pub(crate) const INVALID_ID_INFORMATION: u16 = 18;
    pub(crate) const INVALID_HASH_INFORMATION: u16 = 23;
    pub(crate) const AUTHENTICATION_FAILED: u16 = 24;
    /// Error types are 1..=8191 (RFC 2408 section 3.14.1); status types above.
    pub(crate) const LAST_ERROR: u16 = 8191;
    /// The Quick Mode responder saw QM3 of an exchange with the commit bit (RFC 2408
    /// section 3.1, section 3.14.1 status types).
    pub(crate) const CONNECTED: u16 = 16384;
    pub(crate) const RESPONDER_LIFETIME: u16 = 24576;
    pub(crate) const INITIAL_CONTACT: u16 = 24578;
    pub(crate) const R_U_THERE: u16 = 36136;
    pub(crate) const R_U_THERE_ACK: u16 = 36137;

    /// A readable name for a notify type, for logs and failure messages.
    pub(crate) fn name(t: u16) -> &'static str {
        match t {
            1 => "INVALID-PAYLOAD-TYPE",
            2 => "DOI-NOT-SUPPORTED",
            3 => "SITUATION-NOT-SUPPORTED",
            4 => "INVALID-COOKIE",
            5 => "INVALID-MAJOR-VERSION",
            6 => "INVALID-MINOR-VERSION",
            7 => "INVALID-EXCHANGE-TYPE",
            8 => "INVALID-FLAGS",
            9 => "INVALID-MESSAGE-ID",
            10 => "INVALID-PROTOCOL-ID",
            11 => "INVALID-SPI",
            12 => "INVALID-TRANSFORM-ID",
            13 => "ATTRIBUTES-NOT-SUPPORTED",
            14 => "NO-PROPOSAL-CHOSEN",
            15 => "BAD-PROPOSAL-SYNTAX",
            16 => "PAYLOAD-MALFORMED",
            17 => "INVALID-KEY-INFORMATION",
            18 => "INVALID-ID-INFORMATION",
            19 => "INVALID-CERT-ENCODING",
            20 => "INVALID-CERTIFICATE",
            21 => "CERT-TYPE-UNSUPPORTED",
            22 => "INVALID-CERT-AUTHORITY",
            23 => "INVALID-HASH-INFORMATION",
            24 => "AUTHENTICATION-FAILED",
            25 => "INVALID-SIGNATURE",
            26 => "ADDRESS-NOTIFICATION",
            27 => "NOTIFY-SA-LIFETIME",
            28 => "CERTIFICATE-UNAVAILABLE",
            29 => "UNSUPPORTED-EXCHANGE-TYPE",
            30 => "UNEQUAL-PAYLOAD-LENGTHS",
            24576 => "RESPONDER-LIFETIME",
            24577 => "REPLAY-STATUS",
            24578 => "INITIAL-CONTACT",
            36136 => "R-U-THERE",
            36137 => "R-U-THERE-ACK",
            _ => "unknown notify type",
        }
    }
}

/// Something the peer sent that breaks the protocol, named as the fact we observed.
///
/// Each variant maps to the notification that goes back on the wire (RFC 2408 section
/// 3.14.1) through [`PeerMisbehaved::notify_type`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A payload did not parse.
    #[error("malformed message from peer: {0}")]
    Malformed(#[from] DecodeError),
    /// The first encrypted phase-1 message did not decrypt to valid payloads: the two sides
    /// derived different keys, which with pre-shared keys means the keys differ.
    #[error("pre-shared key mismatch: peer's {message} did not decrypt to valid payloads")]
    UndecryptableAfterKeyExchange {
        /// Which message, e.g. "MM5".
        message: &'static str,
    },
    /// HASH_I or HASH_R did not verify (RFC 2409 section 5.4).
    #[error("pre-shared key mismatch: peer's HASH did not verify ({message})")]
    Phase1HashMismatch {
        /// Which message, e.g. "MM6".
        message: &'static str,
    },
    /// A Quick Mode or Informational HASH did not verify (RFC 2409 sections 5.5, 5.7).
    #[error("peer's {message} HASH did not verify")]
    HashMismatch {
        /// Which message, e.g. "QM2 HASH(2)".
        message: &'static str,
    },
    /// A payload the exchange requires is absent.
    #[error("peer's {message} lacks the {payload} payload")]
    MissingPayload {
        /// Which message.
        message: &'static str,
        /// Which payload.
        payload: &'static str,
    },
    /// None of the peer's transforms is acceptable to us.
    #[error("no acceptable proposal: peer offered {offered} ({what}); we accept {accepted}")]
    NoAcceptableProposal {
        /// "phase 1" or "phase 2".
        what: &'static str,
        /// The peer's transforms, readable.
        offered: String,
        /// Ours, readable.
        accepted: String,
    },
    /// The responder chose something we did not offer, or answered with more than one
    /// proposal or transform.
    #[error("peer chose a transform we did not offer ({what}): {detail}")]
    ChoseUnofferedTransform {
        /// "phase 1" or "phase 2".
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A key exchange value has the wrong length or is outside 2..p-2.
    #[error("peer's key exchange value is invalid: {detail}")]
    InvalidKeyExchange {
        /// The crypto layer's explanation.
        detail: String,
    },
    /// The peer's phase-1 identity is not the one configured.
    #[error("peer identified as {got}, expected {expected}")]
    UnexpectedIdentity {
        /// What the tunnel expects.
        expected: String,
        /// What the peer sent.
        got: String,
    },
    /// The peer's Quick Mode client identities are not inside our policy.
    #[error("peer proposed traffic selectors {proposed} outside our policy {policy}")]
    SelectorsOutsidePolicy {
        /// The peer's IDci/IDcr, readable.
        proposed: String,
        /// Ours.
        policy: String,
    },

    /// An SPI is not 4 bytes, or is in the reserved range 0..=255 (RFC 4303 section 2.1).
    #[error("peer chose an invalid SPI {spi:02x?}")]
    InvalidSpi {
        /// The bytes.
        spi: Vec<u8>,
    },
}

impl PeerMisbehaved {
    /// The notify type we send back (RFC 2408 section 3.14.1).
    pub fn notify_type(&self) -> NotifyType {
        NotifyType(match self {
            Self::Malformed(_) => notify::PAYLOAD_MALFORMED,
            Self::UndecryptableAfterKeyExchange { .. } | Self::Phase1HashMismatch { .. } => {
                notify::AUTHENTICATION_FAILED
            }
            Self::HashMismatch { .. } => notify::INVALID_HASH_INFORMATION,
            Self::MissingPayload { .. } => notify::PAYLOAD_MALFORMED,
            Self::NoAcceptableProposal { .. } | Self::ChoseUnofferedTransform { .. } => {
                notify::NO_PROPOSAL_CHOSEN
            }
            Self::InvalidKeyExchange { .. } => notify::INVALID_KEY_INFORMATION,
            Self::UnexpectedIdentity { .. } | Self::SelectorsOutsidePolicy { .. } => {
                notify::INVALID_ID_INFORMATION
            }

            Self::InvalidSpi { .. } => notify::INVALID_SPI,
        })
    }
}

impl From<&PeerMisbehaved> for NotifyType {
    fn from(e: &PeerMisbehaved) -> Self {
        e.notify_type()
    }
}

/// Why an exchange or a tunnel failed, as reported in [`Event::Failed`](super::Event::Failed).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// The peer broke the protocol.
    Peer(PeerMisbehaved),
    /// The peer sent an error notification (RFC 2408 section 3.14.1).
    PeerNotified {
        /// The notify message type.
        notify_type: u16,
    },
    /// No answer after every retransmission.
    Timeout {
        /// The message we were waiting for, e.g. "MM2".
        awaiting: &'static str,
        /// How many times we sent our last message.
        sent: u32,
    },
    /// We could not allocate an inbound SPI.
    NoSpiAvailable,
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(e) => write!(f, "{e}"),
            Self::PeerNotified { notify_type } => {
                write!(
                    f,
                    "peer reported {} ({notify_type})",
                    notify::name(*notify_type)
                )?;
                match *notify_type {
                    notify::NO_PROPOSAL_CHOSEN => {
                        write!(f, ": none of our proposals is acceptable to the peer")
                    }
                    notify::AUTHENTICATION_FAILED => write!(
                        f,
                        ": the peer rejected our authentication (pre-shared key mismatch, \
                         or its policy refuses this mode, e.g. Aggressive Mode with PSK)"
                    ),
                    notify::INVALID_HASH_INFORMATION => {
                        write!(f, ": pre-shared key mismatch likely")
                    }
                    notify::INVALID_ID_INFORMATION => {
                        write!(f, ": the peer rejects our identity or traffic selectors")
                    }
                    _ => Ok(()),
                }
            }
            Self::Timeout { awaiting, sent } => {
                let times = if *sent == 1 { "time" } else { "times" };
                write!(
                    f,
                    "no answer from peer: waited for {awaiting} \
                     after sending our last message {sent} {times}"
                )?;
                // A peer whose key differs cannot decrypt MM5; strongSwan then answers with
                // an encrypted notification we cannot read either, or not at all.
                if *awaiting == "MM6" {
                    write!(
                        f,
                        " (the peer got MM5 but did not answer: check the pre-shared key)"
                    )?;
                }
                Ok(())
            }
            Self::NoSpiAvailable => write!(f, "the SPI allocator has no free inbound SPI"),
        }
    }
}

/// Why [`Endpoint::initiate`](super::Endpoint::initiate) refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitiateError {
    /// No tunnel has this id.
    #[error("no tunnel with id {0:?}")]
    UnknownTunnel(TunnelId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_mismatch_is_named_and_maps_to_authentication_failed() {
        let e = PeerMisbehaved::Phase1HashMismatch { message: "MM5" };
        assert_eq!(
            e.to_string(),
            "pre-shared key mismatch: peer's HASH did not verify (MM5)"
        );
        assert_eq!(e.notify_type(), NotifyType(24));
    }

    #[test]
    fn silence_after_mm5_points_at_the_key() {
        let r = FailureReason::Timeout {
            awaiting: "MM6",
            sent: 6,
        };
        assert_eq!(
            r.to_string(),
            "no answer from peer: waited for MM6 after sending our last message 6 times \
             (the peer got MM5 but did not answer: check the pre-shared key)"
        );
    }

    #[test]
    fn notified_failure_explains_no_proposal_chosen() {
        let r = FailureReason::PeerNotified { notify_type: 14 };
        assert_eq!(
            r.to_string(),
            "peer reported NO-PROPOSAL-CHOSEN (14): none of our proposals is acceptable to the peer"
        );
    }
}
