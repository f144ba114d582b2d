//! The per-packet transform: address rewrite and checksum maintenance.

use std::fmt;
use std::net::Ipv4Addr;

use tracing::{debug, trace};

use crate::checksum::Delta;
use crate::table::{EntryIndex, NatTable};

/// IPv4 protocol numbers the translator looks inside (IANA "Assigned Internet Protocol
/// Numbers").
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Length of an IPv4 header without options (RFC 791 section 3.1).
const IPV4_MIN_HEADER: usize = 20;
/// Offset of the header checksum in the IPv4 header (RFC 791 section 3.1).
const IPV4_CHECKSUM: usize = 10;
/// Offset of the checksum in a TCP header (RFC 9293 section 3.1).
const TCP_CHECKSUM: usize = 16;
/// Offset of the checksum in a UDP header (RFC 768).
const UDP_CHECKSUM: usize = 6;
/// Offset of the checksum in an ICMP header (RFC 792).
const ICMP_CHECKSUM: usize = 2;
/// Length of the ICMP header before an error message's embedded datagram (RFC 792: type,
/// code, checksum, and four bytes that are unused or type-specific).
const ICMP_HEADER: usize = 8;

/// Which way a packet crosses the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a local host towards the tunnel: the destination is translated local -> remote,
    /// before the gateway's SPD lookup (so the policy sees the real remote address).
    Outbound,
    /// From the tunnel towards a local host: the source is translated remote -> local, after
    /// the ESP SA's selector check (so the check sees the address the peer really sent).
    Inbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        })
    }
}

/// The header a [`NatError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The packet's own IPv4 header.
    Ipv4,
    /// Its TCP header.
    Tcp,
    /// Its UDP header.
    Udp,
    /// Its ICMP header.
    Icmp,
    /// The IPv4 header embedded in an ICMP error message.
    EmbeddedIpv4,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4 header",
            Self::Tcp => "TCP header",
            Self::Udp => "UDP header",
            Self::Icmp => "ICMP header",
            Self::EmbeddedIpv4 => "IPv4 header embedded in the ICMP error",
        })
    }
}

/// Why a packet could not be translated. The packet is left unmodified when this is
/// returned; the gateway should drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatError {
    /// A header ends before a field the translator must read or rewrite.
    #[error("{layer} truncated: need {needed} bytes at offset {offset}, have {available}")]
    Truncated {
        /// The header that is cut short.
        layer: Layer,
        /// Offset of that header from the start of the packet.
        offset: usize,
        /// Bytes the translator needs from that offset.
        needed: usize,
        /// Bytes present from that offset.
        available: usize,
    },
    /// The version field is not 4.
    #[error("{layer} has version {version}, not 4")]
    NotIpv4 {
        /// The header concerned.
        layer: Layer,
        /// The version found.
        version: u8,
    },
    /// The IHL field is under 5 words (RFC 791 section 3.1: the minimum header is 20 bytes).
    #[error("{layer} has IHL {ihl}, under the minimum of 5")]
    HeaderLengthTooSmall {
        /// The header concerned.
        layer: Layer,
        /// The IHL found, in 32-bit words.
        ihl: u8,
    },
    /// The total length field is shorter than the header or longer than the buffer.
    #[error("IPv4 total length {total_length} does not fit header length {header_length} and buffer length {buffer_length}")]
    BadTotalLength {
        /// The total length field.
        total_length: u16,
        /// The header length from IHL, in bytes.
        header_length: usize,
        /// The bytes handed to the translator.
        buffer_length: usize,
    },
}

/// What [`NatTable::translate`] did to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Translation {
    outer: Option<EntryIndex>,
    embedded: Option<EntryIndex>,
}

impl Translation {
    /// Nothing matched: the packet is unchanged.
    pub const NOT_TRANSLATED: Self = Self {
        outer: None,
        embedded: None,
    };

    /// Whether any address was rewritten.
    pub fn is_translated(&self) -> bool {
        self.outer.is_some() || self.embedded.is_some()
    }

    /// The entry that rewrote the packet's own address (destination outbound, source
    /// inbound), if one did.
    pub fn outer_entry(&self) -> Option<EntryIndex> {
        self.outer
    }

    /// For an ICMP error message, the entry that rewrote the embedded datagram's opposite
    /// address (its source outbound, its destination inbound), if one did.
    pub fn embedded_entry(&self) -> Option<EntryIndex> {
        self.embedded
    }

    /// The entry the packet is counted against: the outer one, else the embedded one.
    pub fn entry(&self) -> Option<EntryIndex> {
        self.outer.or(self.embedded)
    }
}

/// Which address field a rule rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Source,
    Destination,
}

impl Field {
    /// Offset in the IPv4 header (RFC 791 section 3.1).
    fn offset(self) -> usize {
        match self {
            Self::Source => 12,
            Self::Destination => 16,
        }
    }

    /// An ICMP error travels opposite to the datagram it quotes, so the quoted datagram's
    /// source plays the role of the error's destination and the other way round.
    fn opposite(self) -> Self {
        match self {
            Self::Source => Self::Destination,
            Self::Destination => Self::Source,
        }
    }
}

/// Which side of the table an address is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    LocalToRemote,
    RemoteToLocal,
}

/// A field and a mapping: one of the four rewrites the table can perform.
#[derive(Debug, Clone, Copy)]
struct Rule {
    field: Field,
    mapping: Mapping,
}

impl Rule {
    fn forward(direction: Direction) -> Self {
        match direction {
            Direction::Outbound => Self {
                field: Field::Destination,
                mapping: Mapping::LocalToRemote,
            },
            Direction::Inbound => Self {
                field: Field::Source,
                mapping: Mapping::RemoteToLocal,
            },
        }
    }

    fn reverse(direction: Direction) -> Self {
        let Self { field, mapping } = Self::forward(direction);
        let mapping = match mapping {
            Mapping::LocalToRemote => Mapping::RemoteToLocal,
            Mapping::RemoteToLocal => Mapping::LocalToRemote,
        };
        Self { field, mapping }
    }
}

/// Where a checksum that must follow an address change sits, and how it treats zero.
#[derive(Debug, Clone, Copy)]
struct ChecksumField {
    offset: usize,
    /// UDP: 0 means "no checksum" and stays 0; a computed 0 is sent as 0xFFFF (RFC 768).
    udp: bool,
}

/// An address rewrite decided during parsing and applied once everything is validated.
#[derive(Debug, Clone, Copy)]
struct Planned {
    entry: EntryIndex,
    old: u32,
    new: u32,
}

impl NatTable {
    /// Translates `packet` in place for `direction` and counts it against its entry.
    ///
    /// `packet` is one IPv4 datagram starting at its header; bytes past the IPv4 total
    /// length (link padding) are ignored and left alone. Outbound, a destination that is an
    /// entry's local address becomes its remote address; inbound, a source that is an
    /// entry's remote address becomes its local address. Checksums follow (RFC 1624), and
    /// an ICMP error message has the datagram it quotes translated the opposite way.
    /// Packets no entry matches pass unchanged with [`Translation::NOT_TRANSLATED`].
    ///
    /// Does not allocate. On error the packet is left unmodified.
    pub fn translate(
        &self,
        direction: Direction,
        packet: &mut [u8],
    ) -> Result<Translation, NatError> {
        match self.rewrite(Rule::forward(direction), packet) {
            Ok((t, total_length)) => {
                if let Some(entry) = t.entry() {
                    self.count(entry, direction == Direction::Outbound, total_length);
                } else {
                    trace!(%direction, total_length, "not translated");
                }
                Ok(t)
            }
            Err(error) => {
                debug!(%direction, %error, "static NAT rejected packet");
                Err(error)
            }
        }
    }

    /// [`NatTable::translate`] with [`Direction::Outbound`]: destination local -> remote.
    pub fn translate_outbound(&self, packet: &mut [u8]) -> Result<Translation, NatError> {
        self.translate(Direction::Outbound, packet)
    }

    /// [`NatTable::translate`] with [`Direction::Inbound`]: source remote -> local.
    pub fn translate_inbound(&self, packet: &mut [u8]) -> Result<Translation, NatError> {
        self.translate(Direction::Inbound, packet)
    }

    /// Undoes [`NatTable::translate`] for `direction` (outbound: destination remote ->
    /// local; inbound: source local -> remote) without touching the counters.
    ///
    /// Meant for diagnostics (showing a packet as the local host sent it) and for tests.
    /// The round trip restores the original bytes whenever the original checksums were
    /// computed in full (RFC 1071); a checksum field holding 0xFFFF where a full
    /// computation would give 0x0000 (possible only in a forged or damaged packet) comes
    /// back as 0x0000, the same ones'-complement value.
    pub fn reverse(
        &self,
        direction: Direction,
        packet: &mut [u8],
    ) -> Result<Translation, NatError> {
        self.rewrite(Rule::reverse(direction), packet)
            .map(|(t, _)| t)
    }

    fn lookup(&self, mapping: Mapping, addr: u32) -> Option<(EntryIndex, u32)> {
        match mapping {
            Mapping::LocalToRemote => self.lookup_local(addr),
            Mapping::RemoteToLocal => self.lookup_remote(addr),
        }
    }

    /// Validates everything the rewrite touches, then rewrites. Returns what was done and
    /// the IPv4 total length.
    fn rewrite(&self, rule: Rule, packet: &mut [u8]) -> Result<(Translation, usize), NatError> {
        // RFC 791 section 3.1: the total length bounds the datagram inside the buffer.
        let header_length = ipv4_header_length(packet, Layer::Ipv4, 0)?;
        let total_length = be16(packet, 2).unwrap_or(0);
        let total = usize::from(total_length);
        if total < header_length || total > packet.len() {
            return Err(NatError::BadTotalLength {
                total_length,
                header_length,
                buffer_length: packet.len(),
            });
        }
        let datagram = packet.get_mut(..total).ok_or(NatError::BadTotalLength {
            total_length,
            header_length,
            buffer_length: 0,
        })?;
        let protocol = datagram.get(9).copied().unwrap_or(0);
        let first_fragment = is_first_fragment(datagram);

        // The packet's own address.
        let old = be32(datagram, rule.field.offset()).unwrap_or(0);
        let outer = self
            .lookup(rule.mapping, old)
            .map(|(entry, new)| Planned { entry, old, new });

        // Its transport checksum covers the address through the pseudo-header (RFC 9293
        // section 3.1, RFC 768); only the first fragment carries the transport header.
        let transport = match outer {
            Some(_) if first_fragment => {
                transport_checksum(protocol, datagram, header_length, true)?
            }
            _ => None,
        };

        // An ICMP error quotes a datagram that travelled the other way (RFC 792).
        let icmp_error = if protocol == PROTO_ICMP && first_fragment {
            self.plan_icmp_error(rule, datagram, header_length)?
        } else {
            None
        };

        // Everything is validated: apply.
        if let Some(p) = outer {
            apply_address(datagram, 0, rule.field, p, transport)?;
            trace!(
                entry = self.entry_name(p.entry),
                field = ?rule.field,
                from = %Ipv4Addr::from(p.old),
                to = %Ipv4Addr::from(p.new),
                total_length = total,
                fragment = !first_fragment,
                "translated"
            );
        }
        let embedded = match icmp_error {
            Some((p, inner_transport)) => {
                let inner = header_length + ICMP_HEADER;
                let words =
                    apply_address(datagram, inner, rule.field.opposite(), p, inner_transport)?;
                // RFC 792: the ICMP checksum covers the whole ICMP message, quoted datagram
                // included, so every word changed in it moves the ICMP checksum too.
                update_checksum(datagram, header_length + ICMP_CHECKSUM, words, false)?;
                trace!(
                    entry = self.entry_name(p.entry),
                    field = ?rule.field.opposite(),
                    from = %Ipv4Addr::from(p.old),
                    to = %Ipv4Addr::from(p.new),
                    "translated datagram quoted in ICMP error"
                );
                Some(p.entry)
            }
            None => None,
        };

        Ok((
            Translation {
                outer: outer.map(|p| p.entry),
                embedded,
            },
            total,
        ))
    }

    /// For an ICMP error message, finds whether the quoted datagram's opposite address has
    /// an entry, and where its checksums sit. `None` for other ICMP messages (echo and the
    /// rest carry no addresses their checksum covers) and when nothing matches.
    fn plan_icmp_error(
        &self,
        rule: Rule,
        datagram: &[u8],
        header_length: usize,
    ) -> Result<Option<(Planned, Option<ChecksumField>)>, NatError> {
        let available = datagram.len().saturating_sub(header_length);
        if available < ICMP_HEADER {
            return Err(NatError::Truncated {
                layer: Layer::Icmp,
                offset: header_length,
                needed: ICMP_HEADER,
                available,
            });
        }
        let icmp_type = datagram.get(header_length).copied().unwrap_or(0);
        // RFC 792 / RFC 1812 section 4.3.2.3: destination unreachable (3), source quench
        // (4), redirect (5), time exceeded (11) and parameter problem (12) quote the
        // offending datagram's header and at least its first 8 data bytes.
        if !matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
            return Ok(None);
        }

        let inner = header_length + ICMP_HEADER;
        let quoted = datagram.get(inner..).unwrap_or_default();
        let inner_header = ipv4_header_length(quoted, Layer::EmbeddedIpv4, inner)?;
        let field = rule.field.opposite();
        let old = be32(quoted, field.offset()).unwrap_or(0);
        let Some((entry, new)) = self.lookup(rule.mapping, old) else {
            return Ok(None);
        };

        // The quoted transport header may be cut short; its checksum is updated when it is
        // there and left alone when it is not, since then it is not in the message.
        let checksum = if is_first_fragment(quoted) {
            let protocol = quoted.get(9).copied().unwrap_or(0);
            transport_checksum(protocol, quoted, inner_header, false)?
        } else {
            None
        };
        Ok(Some((Planned { entry, old, new }, checksum)))
    }
}

/// Checks an IPv4 header starting `offset` bytes into the packet (`bytes` starts there)
/// and returns its length in bytes (RFC 791 section 3.1).
fn ipv4_header_length(bytes: &[u8], layer: Layer, offset: usize) -> Result<usize, NatError> {
    let truncated = |needed| NatError::Truncated {
        layer,
        offset,
        needed,
        available: bytes.len(),
    };
    let first = *bytes.first().ok_or(truncated(IPV4_MIN_HEADER))?;
    let version = first >> 4;
    if version != 4 {
        return Err(NatError::NotIpv4 { layer, version });
    }
    let ihl = first & 0x0F;
    if ihl < 5 {
        return Err(NatError::HeaderLengthTooSmall { layer, ihl });
    }
    let length = usize::from(ihl) * 4;
    if bytes.len() < length {
        return Err(truncated(length));
    }
    Ok(length)
}

/// Whether the datagram is unfragmented or the first fragment: fragment offset zero
/// (RFC 791 section 3.1). Later fragments hold no transport header to update.
fn is_first_fragment(header: &[u8]) -> bool {
    be16(header, 6).is_some_and(|v| v & 0x1FFF == 0)
}

/// Where the transport checksum of `protocol` sits (from the start of `datagram`) when the
/// datagram's address changes. With `required`, a header too short to hold its checksum is
/// an error; without (a datagram quoted in an ICMP error), it just has no checksum to fix.
fn transport_checksum(
    protocol: u8,
    datagram: &[u8],
    header_length: usize,
    required: bool,
) -> Result<Option<ChecksumField>, NatError> {
    let (layer, offset, udp) = match protocol {
        PROTO_TCP => (Layer::Tcp, TCP_CHECKSUM, false),
        PROTO_UDP => (Layer::Udp, UDP_CHECKSUM, true),
        // ICMP's checksum does not cover the IP header (RFC 792); other protocols are
        // passed through as opaque payload.
        _ => return Ok(None),
    };
    let available = datagram.len().saturating_sub(header_length);
    if available < offset + 2 {
        if !required {
            return Ok(None);
        }
        return Err(NatError::Truncated {
            layer,
            offset: header_length,
            needed: offset + 2,
            available,
        });
    }
    Ok(Some(ChecksumField {
        offset: header_length + offset,
        udp,
    }))
}

/// Rewrites the address `field` of the IPv4 header at `at` from `p.old` to `p.new`, fixes
/// that header's checksum and the transport checksum, and returns the net change to the
/// ones'-complement sum of the bytes touched, for an enclosing ICMP checksum.
fn apply_address(
    datagram: &mut [u8],
    at: usize,
    field: Field,
    p: Planned,
    transport: Option<ChecksumField>,
) -> Result<Delta, NatError> {
    let mut delta = Delta::default();
    let mut enclosing = Delta::default();
    delta.address(p.old, p.new);
    enclosing.address(p.old, p.new);

    set32(datagram, at + field.offset(), p.new)?;
    // RFC 791 section 3.1: the header checksum covers the header, addresses included.
    let (old, new) = update_checksum(datagram, at + IPV4_CHECKSUM, delta, false)?;
    enclosing.word(old, new);
    if let Some(c) = transport {
        let (old, new) = update_checksum(datagram, at + c.offset, delta, c.udp)?;
        enclosing.word(old, new);
    }
    Ok(enclosing)
}

/// Applies `delta` to the checksum at `offset` and returns the old and new field values.
/// For UDP a zero field (no checksum) stays zero and a computed zero becomes 0xFFFF
/// (RFC 768).
fn update_checksum(
    datagram: &mut [u8],
    offset: usize,
    delta: Delta,
    udp: bool,
) -> Result<(u16, u16), NatError> {
    let old = be16(datagram, offset).ok_or(internal_truncation(offset, datagram.len()))?;
    if udp && old == 0 {
        return Ok((0, 0));
    }
    let mut new = delta.apply(old);
    if udp && new == 0 {
        new = 0xFFFF;
    }
    set16(datagram, offset, new)?;
    Ok((old, new))
}

/// The error for a write past the end after validation said it fits; unreachable by
/// construction, reported rather than panicking.
fn internal_truncation(offset: usize, len: usize) -> NatError {
    NatError::Truncated {
        layer: Layer::Ipv4,
        offset,
        needed: 2,
        available: len.saturating_sub(offset),
    }
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    let b: [u8; 2] = bytes.get(offset..offset + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(offset..offset + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn set16(bytes: &mut [u8], offset: usize, value: u16) -> Result<(), NatError> {
    let len = bytes.len();
    bytes
        .get_mut(offset..offset + 2)
        .ok_or(internal_truncation(offset, len))?
        .copy_from_slice(&value.to_be_bytes());
    Ok(())
}

fn set32(bytes: &mut [u8], offset: usize, value: u32) -> Result<(), NatError> {
    let len = bytes.len();
    bytes
        .get_mut(offset..offset + 4)
        .ok_or(internal_truncation(offset, len))?
        .copy_from_slice(&value.to_be_bytes());
    Ok(())
}
