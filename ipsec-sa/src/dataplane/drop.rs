//! Why a packet was dropped: a detailed error per packet and a counter per reason.

use core::fmt;
use std::net::IpAddr;

use super::packet::PacketError;
use super::replay::ReplayError;
use super::spd::PolicyId;

/// The reason classes we count (one counter each in [`DropCounters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No SA: unknown inbound SPI, or a PROTECT policy with no usable outbound SA yet.
    NoSa,
    /// No SPD entry covers the packet (RFC 4301 section 5.1: such packets are discarded).
    NoPolicy,
    /// The covering policy says DISCARD.
    PolicyDiscard,
    /// A clear-text inbound packet that a PROTECT policy covers (RFC 4301 section 5.2).
    CleartextNotAllowed,
    /// Anti-replay refused the sequence number (RFC 4303 section 3.4.3).
    Replay,
    /// The ICV did not verify (RFC 4303 section 3.4.4).
    BadIcv,
    /// The padding bytes or pad length are wrong (RFC 4303 section 2.4).
    BadPadding,
    /// The next-header field is not an IP packet (tunnel mode carries 4 or 41).
    BadNextHeader,
    /// A TFC dummy packet (next header 59), which RFC 4303 section 2.6 says to discard.
    DummyPacket,
    /// The decrypted inner packet is outside the SA's selectors (RFC 4301 section 5.2).
    SelectorMismatch,
    /// The outbound SA has used its last sequence number (RFC 4303 section 3.3.3).
    SequenceExhausted,
    /// The SA has passed its hard kilobyte lifetime.
    LifetimeExpired,
    /// Bytes that are not a well-formed ESP packet or inner IP packet.
    Malformed,
    /// The packet would exceed the path MTU and may not be fragmented.
    PacketTooBig,
    /// The caller's buffer lacks the head- or tailroom the packet needs.
    BufferTooSmall,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 15;

    /// Every reason, in counter order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::NoSa,
        Self::NoPolicy,
        Self::PolicyDiscard,
        Self::CleartextNotAllowed,
        Self::Replay,
        Self::BadIcv,
        Self::BadPadding,
        Self::BadNextHeader,
        Self::DummyPacket,
        Self::SelectorMismatch,
        Self::SequenceExhausted,
        Self::LifetimeExpired,
        Self::Malformed,
        Self::PacketTooBig,
        Self::BufferTooSmall,
    ];

    /// A short stable name, for counters shown by the gateway.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoSa => "no-sa",
            Self::NoPolicy => "no-policy",
            Self::PolicyDiscard => "policy-discard",
            Self::CleartextNotAllowed => "cleartext-not-allowed",
            Self::Replay => "replay",
            Self::BadIcv => "bad-icv",
            Self::BadPadding => "bad-padding",
            Self::BadNextHeader => "bad-next-header",
            Self::DummyPacket => "dummy-packet",
            Self::SelectorMismatch => "selector-mismatch",
            Self::SequenceExhausted => "sequence-exhausted",
            Self::LifetimeExpired => "lifetime-expired",
            Self::Malformed => "malformed",
            Self::PacketTooBig => "packet-too-big",
            Self::BufferTooSmall => "buffer-too-small",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl DropCounters {
    /// Packets dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts.get(reason.index()).copied().unwrap_or(0)
    }

    /// Every reason with its count, in [`DropReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }

    /// Packets dropped for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    pub(crate) fn count(&mut self, reason: DropReason) {
        if let Some(c) = self.counts.get_mut(reason.index()) {
            *c = c.saturating_add(1);
        }
    }
}

/// A dropped packet: what was wrong, with the SPI, sequence number or policy involved.
///
/// Every variant maps to one [`DropReason`] through [`DropError::reason`]. None carries
/// packet bytes or key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// An ESP packet for an SPI we have no inbound SA for.
    #[error("no inbound SA for SPI {spi:#010x}")]
    NoInboundSa {
        /// The SPI in the packet.
        spi: u32,
    },
    /// A PROTECT policy covers the packet but has no usable outbound SA (negotiate one).
    #[error("{policy} protects this packet but has no usable outbound SA")]
    NoOutboundSa {
        /// The covering policy.
        policy: PolicyId,
    },
    /// No SPD entry covers the packet.
    #[error("no policy covers {src} -> {dst}")]
    NoPolicy {
        /// Inner source address.
        src: IpAddr,
        /// Inner destination address.
        dst: IpAddr,
    },
    /// The covering policy says DISCARD.
    #[error("{policy} discards this packet")]
    Discarded {
        /// The covering policy.
        policy: PolicyId,
    },
    /// A clear-text packet arrived that a PROTECT policy says must come through ESP.
    #[error("clear-text packet is covered by {policy}, which requires protection")]
    CleartextNotAllowed {
        /// The covering policy.
        policy: PolicyId,
    },
    /// Anti-replay refused the sequence number.
    #[error("SA {spi:#010x}: {cause}")]
    Replay {
        /// The inbound SPI.
        spi: u32,
        /// What the window said.
        cause: ReplayError,
    },
    /// The ICV did not verify.
    #[error("SA {spi:#010x}: ICV of packet {sequence} does not verify")]
    BadIcv {
        /// The inbound SPI.
        spi: u32,
        /// The (unauthenticated) sequence number in the header.
        sequence: u32,
    },
    /// Padding not 1, 2, 3, ... or pad length beyond the payload.
    #[error("SA {spi:#010x}: bad padding in packet {sequence}")]
    BadPadding {
        /// The inbound SPI.
        spi: u32,
        /// The sequence number.
        sequence: u32,
    },
    /// Next header other than 4 (IPv4) or 41 (IPv6), or disagreeing with the packet.
    #[error("SA {spi:#010x}: next header {next_header} is not a tunnelled IP packet")]
    BadNextHeader {
        /// The inbound SPI.
        spi: u32,
        /// The next-header byte.
        next_header: u8,
    },
    /// Next header 59: a traffic-flow-confidentiality dummy packet, discarded by design.
    #[error("SA {spi:#010x}: dummy packet (next header 59) discarded")]
    DummyPacket {
        /// The inbound SPI.
        spi: u32,
    },
    /// The inner packet's addresses or ports are outside the SA's selectors.
    #[error("SA {spi:#010x}: inner packet {src} -> {dst} is outside the SA's selectors")]
    SelectorMismatch {
        /// The SPI of the SA.
        spi: u32,
        /// Inner source.
        src: IpAddr,
        /// Inner destination.
        dst: IpAddr,
    },
    /// The outbound SA has sent sequence number 2^32 - 1: it must be rekeyed.
    #[error("SA {spi:#010x}: sequence numbers exhausted, rekey needed")]
    SequenceExhausted {
        /// The outbound SPI.
        spi: u32,
    },
    /// The SA has passed its hard kilobyte lifetime.
    #[error("SA {spi:#010x}: hard lifetime of {kilobytes} KiB reached")]
    LifetimeExpired {
        /// The SPI.
        spi: u32,
        /// The limit.
        kilobytes: u64,
    },
    /// Not a well-formed ESP packet.
    #[error("malformed ESP packet ({len} bytes) for SPI {spi:#010x}: {what}")]
    MalformedEsp {
        /// The SPI (0 if the packet is too short to hold one).
        spi: u32,
        /// Length of the packet.
        len: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The inner packet (outbound: as given; inbound: after decryption) is not valid IP.
    #[error("inner packet: {error}")]
    MalformedInner {
        /// The SPI for inbound packets, 0 for outbound lookups.
        spi: u32,
        /// What is wrong.
        error: PacketError,
    },
    /// The ESP packet would exceed the path MTU and the inner packet may not be
    /// fragmented (IPv4 with DF set, or IPv6). Send ICMP "fragmentation needed"
    /// (RFC 792, RFC 1191) or ICMPv6 "packet too big" (RFC 4443) with `inner_mtu`.
    #[error("SA {spi:#010x}: {inner_len}-byte packet exceeds inner MTU {inner_mtu} (path MTU {path_mtu})")]
    PacketTooBig {
        /// The outbound SPI.
        spi: u32,
        /// Length of the inner packet.
        inner_len: usize,
        /// The largest inner packet that fits: the MTU to report back.
        inner_mtu: usize,
        /// The path MTU the caller set.
        path_mtu: usize,
    },
    /// The caller's buffer lacks head- or tailroom (a caller bug, not a peer's).
    #[error("buffer needs {headroom} bytes headroom and {tailroom} bytes tailroom")]
    BufferTooSmall {
        /// Headroom needed before the inner packet.
        headroom: usize,
        /// Tailroom needed after it.
        tailroom: usize,
    },
}

impl DropError {
    /// The counter this drop belongs to.
    pub fn reason(&self) -> DropReason {
        match self {
            Self::NoInboundSa { .. } | Self::NoOutboundSa { .. } => DropReason::NoSa,
            Self::NoPolicy { .. } => DropReason::NoPolicy,
            Self::Discarded { .. } => DropReason::PolicyDiscard,
            Self::CleartextNotAllowed { .. } => DropReason::CleartextNotAllowed,
            Self::Replay { .. } => DropReason::Replay,
            Self::BadIcv { .. } => DropReason::BadIcv,
            Self::BadPadding { .. } => DropReason::BadPadding,
            Self::BadNextHeader { .. } => DropReason::BadNextHeader,
            Self::DummyPacket { .. } => DropReason::DummyPacket,
            Self::SelectorMismatch { .. } => DropReason::SelectorMismatch,
            Self::SequenceExhausted { .. } => DropReason::SequenceExhausted,
            Self::LifetimeExpired { .. } => DropReason::LifetimeExpired,
            Self::MalformedEsp { .. } | Self::MalformedInner { .. } => DropReason::Malformed,
            Self::PacketTooBig { .. } => DropReason::PacketTooBig,
            Self::BufferTooSmall { .. } => DropReason::BufferTooSmall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        let mut c = DropCounters::default();
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            for _ in 0..=i {
                c.count(r);
            }
        }
        for (i, (r, n)) in c.iter().enumerate() {
            assert_eq!(DropReason::ALL[i], r);
            assert_eq!(n, i as u64 + 1);
        }
        assert_eq!(c.total(), (1..=15).sum::<u64>());
        assert_eq!(DropReason::BadIcv.to_string(), "bad-icv");
    }
}
