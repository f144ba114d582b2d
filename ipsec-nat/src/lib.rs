//! Static one-to-one NAT for the inner IPv4 packets of a site-to-site tunnel.
//!
//! The provider assigns a local "static NAT subnet" and maps each of its addresses onto a
//! host behind the remote peer, so local hosts reach remote hosts without route changes.
//! With the entry 10.1.255.92 <-> 192.168.10.15 (10.1.255.92 taken from the assigned
//! 10.1.255.88/29), a local host sends to 10.1.255.92; the gateway rewrites the destination
//! to 192.168.10.15 before its SPD lookup and sends the packet through the tunnel. The reply
//! from 192.168.10.15 comes out of the tunnel, passes the ESP SA's selector check, and has
//! its source rewritten to 10.1.255.92 before it reaches the local host.
//!
//! This crate is a pure packet transform: it rewrites addresses and keeps the IPv4 header,
//! TCP, UDP and ICMP checksums right with incremental updates (RFC 1624), and knows nothing
//! of SAs, sockets, threads or clocks. [`NatTable::translate`] works in place and does not
//! allocate; the table is immutable apart from atomic per-entry counters, so the gateway
//! shares it as `Arc<NatTable>` and swaps the `Arc` to replace it (see [`NatTable`]).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use ipsec_nat::{Direction, Ipv4Subnet, NatEntry, NatTable};
//!
//! let table = NatTable::new(
//!     vec![NatEntry::new("web", Ipv4Addr::new(10, 1, 255, 92), Ipv4Addr::new(192, 168, 10, 15))],
//!     &[Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 88), 29)?],
//!     &[Ipv4Subnet::new(Ipv4Addr::new(192, 168, 10, 0), 24)?],
//! )?;
//!
//! // An ICMP echo request from 10.77.0.2 to 10.1.255.92, header and ICMP checksums correct.
//! let mut packet = [
//!     0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x67, 0x34,
//!     10, 77, 0, 2, 10, 1, 255, 92,
//!     0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00,
//! ];
//! let t = table.translate(Direction::Outbound, &mut packet)?;
//! assert!(t.is_translated());
//! assert_eq!(packet[16..20], [192, 168, 10, 15]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Known limits, each deliberate:
//! * IPv4 only; an IPv6 packet is rejected with [`NatError::NotIpv4`].
//! * Addresses inside IP options (source routes, record route) and the gateway address of
//!   an ICMP redirect are not rewritten: they name routers, not the mapped hosts.
//! * Incoming checksums are not verified: the incremental update keeps a wrong checksum
//!   wrong, so the receiving host still discards the packet (RFC 1624 section 3).
//! * Application payloads that carry addresses (FTP, SIP) are not rewritten.

#![forbid(unsafe_code)]

mod checksum;
pub mod fuzz_support;
mod subnet;
mod table;
mod translate;

pub use subnet::{Ipv4Subnet, SubnetError};
pub use table::{CounterSnapshot, EntryIndex, NatEntry, NatTable, TableError};
pub use translate::{Direction, Layer, NatError, Translation};
