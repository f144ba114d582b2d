//! The per-packet half of IPsec: SPD, SAD, the ESP tunnel-mode transform, anti-replay and
//! NAT-T framing (RFC 4301, RFC 4303, RFC 3948), sans-IO and allocation-free per packet.
//!
//! # API
//!
//! One [`DataPlane`] holds the Security Policy Database ([`spd::Spd`]), the SA database
//! (SA pairs by inbound SPI, and by policy for outbound), drop counters and an event queue.
//!
//! Setup, at configuration time and whenever the control plane reports:
//! - [`DataPlane::new`]`(`[`DataPlaneConfig`]`)`.
//! - [`DataPlane::add_policy`]`(`[`Policy`]`) -> `[`PolicyId`], [`DataPlane::remove_policy`]:
//!   PROTECT / BYPASS / DISCARD entries with local and remote traffic selectors and a
//!   priority (lower first). Lookup cost: see [`spd`].
//! - [`DataPlane::install`]`(&`[`ChildSaPair`]`) -> Result<PolicyId, InstallError>` on
//!   `ChildSaEstablished`: attaches the pair to the first PROTECT policy whose selectors
//!   cover the pair's ([`DataPlane::install_on`] names the policy). A newer pair on the same
//!   policy takes over outbound traffic at once; older pairs keep accepting inbound packets
//!   until removed, so a rekey loses nothing in flight.
//! - [`DataPlane::remove_pair`]`(inbound_spi)` on `ChildSaDeleted` or expiry.
//! - [`DataPlane::set_path_mtu`], [`DataPlane::set_remote`] (NAT mapping changed).
//!
//! Per packet, on a caller buffer (no allocation, no clock, no entropy of our own):
//! - Outbound: put the inner IP packet at `buf[inner]` with at least [`MAX_HEADROOM`] bytes
//!   before it and [`MAX_TAILROOM`] after it, and call
//!   [`DataPlane::encapsulate`]`(buf, inner, rng)`. It looks up the SPD, picks the SA,
//!   encrypts in place, and returns [`Outbound::Protected`] with an [`EspTransmit`]: the ESP
//!   packet's range in `buf` (the UDP payload for [`Encapsulation::UdpTunnel`], the IP
//!   payload for protocol 50) and where to send it; or [`Outbound::Bypass`] (send the inner
//!   packet in clear). The IV comes from `rng` (rand_core 0.6 `CryptoRngCore`).
//! - Outbound, many at once: [`DataPlane::encapsulate_batch`]`(packets, rng, results)` gives
//!   each packet the result and bytes `encapsulate` would, but frames them all first and
//!   then encrypts the packets of one SA up to eight side by side (CBC encryption is a
//!   chain of blocks per packet; several chains fill the AES-NI pipeline), about half the
//!   time per packet for a burst of full-size packets.
//! - Inbound: hand the ESP packet (for UDP 4500, after [`natt::classify`] said ESP) to
//!   [`DataPlane::decapsulate`]`(packet)`. It finds the SA by SPI, checks anti-replay, the
//!   ICV (constant time, before decryption), updates the window, decrypts in place, checks
//!   padding and next header, and checks the inner addresses against the SA's selectors
//!   (remote selector as source, local selector as destination). It returns [`Inbound`]
//!   with the inner packet's range within `packet`.
//! - [`DataPlane::check_inbound_cleartext`] applies the SPD to a packet that arrived
//!   without ESP (RFC 4301 section 5.2: refuse it if a PROTECT policy covers it).
//! - Every refusal is a [`DropError`] naming the SPI, sequence number or policy; it is
//!   counted by [`DropReason`] in [`DataPlane::drop_counters`] and logged at debug.
//!
//! Observation:
//! - [`DataPlane::pair_stats`] / [`DataPlane::pairs`]: packets and bytes per SA and
//!   direction, per-SA drops, sequence numbers, lifetime state.
//! - [`DataPlane::poll_event`]: [`Event::SoftLifetime`] (rekey now: kilobyte soft limit or
//!   sequence numbers running low) and [`Event::HardLifetime`] (the SA refuses traffic).
//!   Seconds lifetimes are the control plane's timers, not ours.
//!
//! Two threads, one per direction: [`split`] has the same data plane as two halves,
//! [`OutboundPlane`] (SPD, outbound SAs, `encapsulate`) and [`InboundPlane`] (inbound SAs,
//! replay windows, `decapsulate`), each with its own counters and events, so that a gateway
//! can seal on one thread and open on another with a lock per half. `DataPlane` is their
//! single-threaded composition (it reports each pair's events once and retires both
//! directions at a hard limit).
//!
//! Standalone pieces: [`sa::OutboundSa`] / [`sa::InboundSa`] (the ESP transform of one SA),
//! [`replay::ReplayWindow`], [`packet::PacketInfo`], [`spd::Spd`], [`natt`].
//!
//! # Known limits
//! - No extended sequence numbers (IKEv1 does not negotiate them): an SA carries at most
//!   2^32 - 1 packets, then [`DropError::SequenceExhausted`].
//! - Tunnel mode only; transport mode framing works in [`sa`] but is not routed here.
//! - Non-first fragments have no ports (RFC 4301 section 4.4.1.1 "OPAQUE"); a selector that
//!   names ports never matches them. ICMP type and code are not used as port selectors.
//! - Kilobyte lifetimes count inner (plaintext IP) bytes, per direction; reaching the hard
//!   limit in either direction retires the whole pair.
//! - The event queue starts with room for 16 events and grows (allocates) only if more
//!   lifetime events pile up unpolled; events happen at most twice per pair.
//! - Drops are logged at debug, not warn, even for peer anomalies such as bad ICVs or
//!   selector violations: a hostile peer could otherwise flood the log. The counters
//!   (global and per pair) are the place to watch them.

pub mod drop;
pub mod natt;
pub mod packet;
pub mod replay;
pub mod sa;
pub mod spd;
pub mod split;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;

use rand_core::CryptoRngCore;

use crate::child::{ChildSaPair, Encapsulation};
use crate::selector::TrafficSelector;

pub use drop::{DropCounters, DropError, DropReason};
pub use sa::{EspOverhead, SaCounters, SaKeyError};
use spd::Spd;
pub use spd::{Direction, Policy, PolicyAction, PolicyId};
pub use split::{InboundPlane, OutboundPlane};

/// Headroom every outbound buffer needs before the inner packet: ESP header (8) plus the
/// largest IV (16, AES). Add [`UDP_HEADER_LEN`] if you also build the UDP header in place.
pub const MAX_HEADROOM: usize = 8 + 16;

/// Tailroom every outbound buffer needs after the inner packet: up to 15 bytes of padding,
/// pad length, next header, and the largest ICV (32, HMAC-SHA2-512-256).
pub const MAX_TAILROOM: usize = 15 + 2 + 32;

/// Length of the UDP header of ESP-in-UDP (RFC 3948 section 2.1).
pub const UDP_HEADER_LEN: usize = 8;

/// Tunables of a [`DataPlane`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// Anti-replay window size for every inbound SA (RFC 4303 section 3.4.3; 32..=65536).
    pub replay_window: u32,
    /// Soft kilobyte limit as a percentage of the hard one (1..=100).
    pub soft_lifetime_percent: u8,
    /// Outbound sequence number at which to ask for a rekey.
    pub sequence_soft_limit: u32,
    /// Path MTU applied to newly installed pairs (see [`DataPlane::set_path_mtu`]).
    pub default_path_mtu: Option<usize>,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            replay_window: replay::ReplayWindow::DEFAULT_SIZE,
            soft_lifetime_percent: 90,
            sequence_soft_limit: u32::MAX - (1 << 24),
            default_path_mtu: None,
        }
    }
}

/// Why [`DataPlane::install`] refused a pair.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// No PROTECT policy covers the pair's selectors.
    #[error("no PROTECT policy covers {local} <-> {remote}")]
    NoPolicy {
        /// The pair's local selector.
        local: TrafficSelector,
        /// The pair's remote selector.
        remote: TrafficSelector,
    },
    /// The named policy does not exist.
    #[error("{0} does not exist")]
    UnknownPolicy(PolicyId),
    /// The named policy is not PROTECT, or does not cover the pair's selectors.
    #[error("{0} is not a PROTECT policy covering the pair's selectors")]
    PolicyMismatch(PolicyId),
    /// A pair with this inbound SPI is already installed.
    #[error("inbound SPI {0:#010x} is already installed")]
    DuplicateSpi(u32),
    /// A key or the window size was refused.
    #[error(transparent)]
    Key(#[from] SaKeyError),
}

/// Which limit an [`Event`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Kilobytes of inner traffic in one direction (the IKEv1 kilobyte lifetime).
    Kilobytes,
    /// Outbound sequence numbers (2^32 - 1 per SA without ESN, RFC 4303 section 3.3.3).
    SequenceNumbers,
}

/// Something the control plane should act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A soft limit was crossed: negotiate a replacement now. Reported once per pair.
    SoftLifetime {
        /// The pair's policy.
        policy: PolicyId,
        /// The pair's inbound SPI (its handle here).
        inbound_spi: u32,
        /// The pair's outbound SPI.
        outbound_spi: u32,
        /// Which limit.
        limit: LimitKind,
    },
    /// A hard limit was reached: the pair refuses traffic from now on; delete it.
    /// Reported once per pair.
    HardLifetime {
        /// The pair's policy.
        policy: PolicyId,
        /// The pair's inbound SPI.
        inbound_spi: u32,
        /// The pair's outbound SPI.
        outbound_spi: u32,
        /// Which limit.
        limit: LimitKind,
    },
}

/// Result of [`DataPlane::encapsulate`] for a packet that was not dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Outbound {
    /// Send `buf[transmit.packet]` to `transmit.remote`.
    Protected(EspTransmit),
    /// The policy says BYPASS: forward the inner packet unprotected.
    Bypass {
        /// The covering policy.
        policy: PolicyId,
    },
}

/// An ESP packet ready in the caller's buffer, and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspTransmit {
    /// The ESP packet (SPI through ICV) within the buffer: the UDP payload for
    /// [`Encapsulation::UdpTunnel`], the IP payload (protocol 50) for [`Encapsulation::Tunnel`].
    pub packet: Range<usize>,
    /// Our outer address and port (send from here).
    pub local: SocketAddr,
    /// The peer's outer address and port (send to here).
    pub remote: SocketAddr,
    /// ESP in UDP or directly over IP.
    pub encapsulation: Encapsulation,
    /// The outbound SPI used.
    pub spi: u32,
    /// The sequence number used.
    pub sequence: u32,
    /// The policy that selected the SA.
    pub policy: PolicyId,
}

/// A packet that passed every inbound check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The inner IP packet within the buffer given to [`DataPlane::decapsulate`]
    /// (any TFC padding after it excluded).
    pub inner: Range<usize>,
    /// 4 or 6.
    pub ip_version: u8,
    /// The inbound SPI.
    pub spi: u32,
    /// The packet's sequence number.
    pub sequence: u32,
    /// The policy of the SA.
    pub policy: PolicyId,
}

/// Counters and state of one installed pair, for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaPairStats {
    /// The pair's policy.
    pub policy: PolicyId,
    /// Inbound SPI.
    pub inbound_spi: u32,
    /// Outbound SPI.
    pub outbound_spi: u32,
    /// Our outer endpoint.
    pub local: SocketAddr,
    /// The peer's outer endpoint.
    pub remote: SocketAddr,
    /// ESP in UDP or over IP.
    pub encapsulation: Encapsulation,
    /// The pair's local selector.
    pub local_ts: TrafficSelector,
    /// The pair's remote selector.
    pub remote_ts: TrafficSelector,
    /// Inbound packets and bytes delivered.
    pub inbound: SaCounters,
    /// Outbound packets and bytes sent.
    pub outbound: SaCounters,
    /// Inbound drops attributed to this pair (replay, bad ICV, padding, selectors...).
    pub drops: DropCounters,
    /// The last outbound sequence number.
    pub last_outbound_sequence: u32,
    /// The highest inbound sequence number accepted.
    pub highest_inbound_sequence: u32,
    /// Whether a soft limit was crossed.
    pub soft_expired: bool,
    /// Whether a hard limit was reached.
    pub hard_expired: bool,
    /// The path MTU in force, if any.
    pub path_mtu: Option<usize>,
}

/// SPD, SAD and counters: see the module docs for the API.
///
/// The single-threaded composition of the two halves in [`split`]: an
/// [`split::OutboundPlane`] (SPD, outbound SAs) and an [`split::InboundPlane`] (inbound SAs,
/// replay windows). On top of them it reports each pair's lifetime events once (whichever
/// direction crosses a limit first) and retires both directions when either reaches a hard
/// limit, and it keeps one set of drop counters for both directions.
#[derive(Debug)]
pub struct DataPlane {
    out: OutboundPlane,
    inb: InboundPlane,
    /// Drops of both directions (each half also counts its own).
    drops: DropCounters,
    events: VecDeque<Event>,
}

impl DataPlane {
    /// An empty data plane: no policies (so every packet is dropped as [`DropReason::NoPolicy`]).
    pub fn new(config: DataPlaneConfig) -> Self {
        Self {
            out: OutboundPlane::new(config),
            inb: InboundPlane::new(config),
            drops: DropCounters::default(),
            events: VecDeque::with_capacity(16),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DataPlaneConfig {
        self.out.config()
    }

    /// The policy database.
    pub fn spd(&self) -> &Spd {
        self.out.spd()
    }

    /// Adds an SPD entry.
    pub fn add_policy(&mut self, policy: Policy) -> PolicyId {
        self.out.add_policy(policy)
    }

    /// Adds many SPD entries at once (the index is rebuilt once, not per entry).
    pub fn add_policies(&mut self, policies: impl IntoIterator<Item = Policy>) -> Vec<PolicyId> {
        self.out.add_policies(policies)
    }

    /// Removes an SPD entry and every SA pair attached to it.
    pub fn remove_policy(&mut self, id: PolicyId) -> Option<Policy> {
        let (policy, spis) = self.out.remove_policy(id)?;
        for spi in spis {
            self.inb.remove_pair(spi);
        }
        Some(policy)
    }

    /// Installs a negotiated pair under the first PROTECT policy whose selectors cover
    /// the pair's; returns that policy.
    pub fn install(&mut self, pair: &ChildSaPair) -> Result<PolicyId, InstallError> {
        let policy = self.out.find_policy(pair)?;
        self.install_on(policy, pair)?;
        Ok(policy)
    }

    /// Installs a negotiated pair under `policy`, which must be PROTECT and cover the
    /// pair's selectors. The new pair becomes the policy's outbound SA at once (RFC 4301
    /// section 4.5: traffic moves to the new SA); older pairs keep receiving.
    pub fn install_on(&mut self, policy: PolicyId, pair: &ChildSaPair) -> Result<(), InstallError> {
        self.out.check_policy(policy, pair)?;
        let spi = pair.inbound.spi;
        if self.out.contains(spi) || self.inb.contains(spi) {
            return Err(InstallError::DuplicateSpi(spi));
        }
        self.inb.install(policy, pair)?;
        if let Err(e) = self.out.install_on(policy, pair) {
            self.inb.remove_pair(spi);
            return Err(e);
        }
        tracing::debug!(%policy, inbound_spi = format_args!("{spi:#010x}"),
            outbound_spi = format_args!("{:#010x}", pair.outbound.spi),
            local_ts = %pair.local_ts, remote_ts = %pair.remote_ts,
            remote = %pair.remote, "ESP SA pair installed");
        Ok(())
    }

    /// Removes the pair with this inbound SPI; returns whether it was installed.
    pub fn remove_pair(&mut self, inbound_spi: u32) -> bool {
        let outbound_spi = self.out.pairs.get(&inbound_spi).map(|p| p.sa.spi());
        let removed_out = self.out.remove_pair(inbound_spi);
        let removed_in = self.inb.remove_pair(inbound_spi);
        if removed_out || removed_in {
            tracing::debug!(
                inbound_spi = format_args!("{inbound_spi:#010x}"),
                outbound_spi = format_args!("{:#010x}", outbound_spi.unwrap_or(0)),
                "ESP SA pair removed"
            );
        }
        removed_out || removed_in
    }

    /// Sets the path MTU (outer IP packet size) for a pair; `None` disables the check.
    /// Returns whether the pair exists.
    pub fn set_path_mtu(&mut self, inbound_spi: u32, mtu: Option<usize>) -> bool {
        self.out.set_path_mtu(inbound_spi, mtu)
    }

    /// Changes where a pair's packets are sent, e.g. after the peer's NAT mapping moved
    /// (RFC 3947 section 5.2 lets the control plane follow it). Returns whether the pair exists.
    pub fn set_remote(&mut self, inbound_spi: u32, remote: SocketAddr) -> bool {
        self.out.set_remote(inbound_spi, remote)
    }

    /// Drops counted so far, by reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// Counters and state of the pair with this inbound SPI.
    pub fn pair_stats(&self, inbound_spi: u32) -> Option<SaPairStats> {
        split::pair_stats(&self.out, &self.inb, inbound_spi)
    }

    /// Counters and state of every installed pair, by ascending inbound SPI.
    pub fn pairs(&self) -> impl Iterator<Item = SaPairStats> + '_ {
        self.inb
            .pairs
            .keys()
            .filter_map(|&spi| split::pair_stats(&self.out, &self.inb, spi))
    }

    /// The next lifetime event, if any. Call after packets have been processed, until
    /// it returns `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Protects the inner packet at `buf[inner]` according to the SPD, in place.
    ///
    /// `buf` needs [`MAX_HEADROOM`] bytes before `inner.start` and [`MAX_TAILROOM`] after
    /// `inner.end` (the exact need of an SA is in [`EspOverhead`]). On success with
    /// [`Outbound::Protected`], `buf[transmit.packet]` is the ESP packet; the bytes of
    /// the inner packet have been overwritten by ciphertext. On error the inner packet's
    /// bytes are unchanged (tailroom may have been written), so the caller can still
    /// quote it in an ICMP error after [`DropError::PacketTooBig`].
    pub fn encapsulate<R: CryptoRngCore + ?Sized>(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        rng: &mut R,
    ) -> Result<Outbound, DropError> {
        let result = self.out.encapsulate(buf, inner, rng);
        if let Err(e) = &result {
            self.drops.count(e.reason());
        }
        while let Some(e) = self.out.events.pop_front() {
            self.merge_event(e, true);
        }
        result
    }

    /// Protects a batch of inner packets in place, `results[i]` for `packets[i]`: the same
    /// results and bytes as [`DataPlane::encapsulate`] on each in turn, with the CBC
    /// encryption of packets of one SA run side by side (see
    /// [`OutboundPlane::encapsulate_batch`]).
    pub fn encapsulate_batch<B: AsMut<[u8]>, R: CryptoRngCore + ?Sized>(
        &mut self,
        packets: &mut [(B, Range<usize>)],
        rng: &mut R,
        results: &mut Vec<Result<Outbound, DropError>>,
    ) {
        self.out.encapsulate_batch(packets, rng, results);
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            self.drops.count(e.reason());
        }
        while let Some(e) = self.out.events.pop_front() {
            self.merge_event(e, true);
        }
    }

    /// Checks and decrypts the ESP packet that fills `packet` (for UDP 4500: the UDP
    /// payload after [`natt::classify`]; for protocol 50: the IP payload), in place.
    ///
    /// Order (RFC 4303 section 3.4, RFC 4301 section 5.2): SA by SPI, anti-replay
    /// check, ICV in constant time, window update, decryption, padding, next header
    /// (4 or 41; 59 is a dummy packet), then the inner packet must lie within the SA's
    /// selectors. On success `packet[inbound.inner]` is the inner IP packet.
    pub fn decapsulate(&mut self, packet: &mut [u8]) -> Result<Inbound, DropError> {
        let result = self.inb.decapsulate(packet);
        if let Err(e) = &result {
            self.drops.count(e.reason());
        }
        while let Some(e) = self.inb.events.pop_front() {
            self.merge_event(e, false);
        }
        result
    }

    /// Applies the SPD to an inbound packet that arrived in clear (RFC 4301 section 5.2):
    /// allowed only under a BYPASS policy. Returns that policy.
    pub fn check_inbound_cleartext(&mut self, packet: &[u8]) -> Result<PolicyId, DropError> {
        let result = self.out.check_inbound_cleartext(packet);
        if let Err(e) = &result {
            self.drops.count(e.reason());
        }
        result
    }

    /// Passes on a half's event unless the other half already reported the same kind for
    /// the pair, and marks the other half: a pair is reported once per kind, and a hard
    /// limit in one direction retires both.
    fn merge_event(&mut self, event: Event, from_outbound: bool) {
        let (spi, hard) = match event {
            Event::SoftLifetime { inbound_spi, .. } => (inbound_spi, None),
            Event::HardLifetime {
                inbound_spi, limit, ..
            } => (inbound_spi, Some(limit)),
        };
        let other = if from_outbound {
            self.inb.pairs.get_mut(&spi).map(|p| &mut p.limits)
        } else {
            self.out.pairs.get_mut(&spi).map(|p| &mut p.limits)
        };
        let reported = other.map(|limits| match hard {
            Some(limit) => {
                let was = limits.hard_expired;
                limits.retire(limit);
                was
            }
            None => std::mem::replace(&mut limits.soft_expired, true),
        });
        if reported != Some(true) {
            self.events.push_back(event);
        }
    }
}

/// The SPI of an ESP packet, if it is long enough to have a header.
fn esp_spi(packet: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = packet.get(..4)?.try_into().ok()?;
    (packet.len() >= 8).then(|| u32::from_be_bytes(bytes))
}

/// Bytes of outer headers before the ESP packet: IPv4 (20, no options) or IPv6 (40),
/// plus the UDP header for ESP in UDP.
pub fn outer_header_len(remote: SocketAddr, encapsulation: Encapsulation) -> usize {
    let ip = if remote.is_ipv4() { 20 } else { 40 };
    let udp = match encapsulation {
        Encapsulation::UdpTunnel => UDP_HEADER_LEN,
        Encapsulation::Tunnel => 0,
    };
    ip + udp
}

/// The largest inner packet that fits a path MTU with these algorithms and encapsulation
/// (what to report in ICMP "fragmentation needed" / "packet too big").
pub fn inner_mtu(
    overhead: EspOverhead,
    remote: SocketAddr,
    encapsulation: Encapsulation,
    path_mtu: usize,
) -> Option<usize> {
    overhead.max_payload(path_mtu.checked_sub(outer_header_len(remote, encapsulation))?)
}

#[cfg(test)]
mod tests;
