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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;

use ipsec_proto::esp::{NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NO_NEXT};
use rand_core::CryptoRngCore;

use crate::child::{ChildSaPair, Encapsulation};
use crate::selector::TrafficSelector;

pub use drop::{DropCounters, DropError, DropReason};
use packet::PacketInfo;
pub use sa::{EspOverhead, SaCounters, SaKeyError};
use sa::{InboundSa, OutboundSa};
use spd::Spd;
pub use spd::{Direction, Policy, PolicyAction, PolicyId};

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

/// An installed SA pair with what the data plane needs beyond the two transforms.
#[derive(Debug)]
struct PairState {
    policy: PolicyId,
    local: SocketAddr,
    remote: SocketAddr,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    encapsulation: Encapsulation,
    inbound: InboundSa,
    outbound: OutboundSa,
    /// Hard and soft byte limits per direction, from the hard kilobyte lifetime.
    hard_bytes: Option<u64>,
    soft_bytes: Option<u64>,
    soft_expired: bool,
    hard_expired: bool,
    path_mtu: Option<usize>,
    drops: DropCounters,
}

impl PairState {
    fn stats(&self, inbound_spi: u32) -> SaPairStats {
        SaPairStats {
            policy: self.policy,
            inbound_spi,
            outbound_spi: self.outbound.spi(),
            local: self.local,
            remote: self.remote,
            encapsulation: self.encapsulation,
            local_ts: self.local_ts,
            remote_ts: self.remote_ts,
            inbound: self.inbound.counters(),
            outbound: self.outbound.counters(),
            drops: self.drops.clone(),
            last_outbound_sequence: self.outbound.last_sequence(),
            highest_inbound_sequence: self.inbound.window().newest(),
            soft_expired: self.soft_expired,
            hard_expired: self.hard_expired,
            path_mtu: self.path_mtu,
        }
    }

    /// Whether `bytes` more would pass the hard byte limit of a direction that has
    /// carried `so_far`.
    fn over_hard(&self, so_far: u64, bytes: usize) -> bool {
        self.hard_bytes.is_some_and(|hard| {
            so_far.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX)) > hard
        })
    }

    /// Whether `so_far` bytes have reached the soft byte limit.
    fn over_soft(&self, so_far: u64) -> bool {
        self.soft_bytes.is_some_and(|soft| so_far >= soft)
    }

    /// The refusal for a pair past its hard limit, naming `spi` (of the direction used).
    fn expired(&self, spi: u32) -> DropError {
        DropError::LifetimeExpired {
            spi,
            kilobytes: self.hard_bytes.unwrap_or(0) / 1024,
        }
    }

    /// Retires the pair after a hard limit; queues the event the first time only.
    fn retire(&mut self, limit: LimitKind, events: &mut VecDeque<Event>) {
        if !self.hard_expired {
            self.hard_expired = true;
            events.push_back(Event::HardLifetime {
                policy: self.policy,
                inbound_spi: self.inbound.spi(),
                outbound_spi: self.outbound.spi(),
                limit,
            });
        }
    }

    /// Notes a soft limit; queues the event the first time only.
    fn warn_soft(&mut self, limit: LimitKind, events: &mut VecDeque<Event>) {
        if !self.soft_expired {
            self.soft_expired = true;
            events.push_back(Event::SoftLifetime {
                policy: self.policy,
                inbound_spi: self.inbound.spi(),
                outbound_spi: self.outbound.spi(),
                limit,
            });
        }
    }

    /// Whether the pair's own (possibly narrowed) selectors cover an outbound packet.
    fn covers_outbound(&self, info: &PacketInfo) -> bool {
        self.local_ts
            .matches(info.src, info.protocol, info.src_port)
            && self
                .remote_ts
                .matches(info.dst, info.protocol, info.dst_port)
    }

    /// RFC 4301 section 5.2 step 4: whether a decrypted packet is one this SA carries.
    fn covers_inbound(&self, info: &PacketInfo) -> bool {
        self.remote_ts
            .matches(info.src, info.protocol, info.src_port)
            && self
                .local_ts
                .matches(info.dst, info.protocol, info.dst_port)
    }

    /// Path MTU (RFC 4301 section 8.2): refuses a packet whose ESP form would not fit
    /// and which may not be fragmented (IPv4 with DF, or IPv6).
    fn check_path_mtu(&self, info: &PacketInfo) -> Result<(), DropError> {
        let Some(path_mtu) = self.path_mtu else {
            return Ok(());
        };
        let overhead = self.outbound.overhead();
        let esp_space = path_mtu.saturating_sub(outer_header_len(self.remote, self.encapsulation));
        if overhead.esp_len(info.total_len) <= esp_space || !info.dont_fragment {
            return Ok(());
        }
        Err(DropError::PacketTooBig {
            spi: self.outbound.spi(),
            inner_len: info.total_len,
            inner_mtu: overhead.max_payload(esp_space).unwrap_or(0),
            path_mtu,
        })
    }
}

/// SPD, SAD and counters: see the module docs for the API.
#[derive(Debug)]
pub struct DataPlane {
    config: DataPlaneConfig,
    spd: Spd,
    /// Installed pairs by inbound SPI (which we chose, so it is unique). A B-tree rather
    /// than a hash map: O(log n) lookups that never allocate, a deterministic iteration
    /// order, and no hash keys drawn from the OS (this crate takes no entropy of its own).
    pairs: BTreeMap<u32, PairState>,
    /// Inbound SPIs of each policy's pairs, newest first.
    by_policy: BTreeMap<PolicyId, Vec<u32>>,
    drops: DropCounters,
    events: VecDeque<Event>,
}

impl DataPlane {
    /// An empty data plane: no policies (so every packet is dropped as [`DropReason::NoPolicy`]).
    pub fn new(config: DataPlaneConfig) -> Self {
        Self {
            config,
            spd: Spd::new(),
            pairs: BTreeMap::new(),
            by_policy: BTreeMap::new(),
            drops: DropCounters::default(),
            events: VecDeque::with_capacity(16),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DataPlaneConfig {
        &self.config
    }

    /// The policy database.
    pub fn spd(&self) -> &Spd {
        &self.spd
    }

    /// Adds an SPD entry.
    pub fn add_policy(&mut self, policy: Policy) -> PolicyId {
        let id = self.spd.insert(policy);
        tracing::debug!(%id, local = %policy.local, remote = %policy.remote,
            action = ?policy.action, priority = policy.priority, "policy added");
        id
    }

    /// Adds many SPD entries at once (the index is rebuilt once, not per entry).
    pub fn add_policies(&mut self, policies: impl IntoIterator<Item = Policy>) -> Vec<PolicyId> {
        let ids = self.spd.insert_all(policies);
        tracing::debug!(count = ids.len(), "policies added");
        ids
    }

    /// Removes an SPD entry and every SA pair attached to it.
    pub fn remove_policy(&mut self, id: PolicyId) -> Option<Policy> {
        let policy = self.spd.remove(id)?;
        for spi in self.by_policy.remove(&id).unwrap_or_default() {
            self.pairs.remove(&spi);
        }
        tracing::debug!(%id, "policy removed with its SAs");
        Some(policy)
    }

    /// Installs a negotiated pair under the first PROTECT policy whose selectors cover
    /// the pair's; returns that policy.
    pub fn install(&mut self, pair: &ChildSaPair) -> Result<PolicyId, InstallError> {
        let policy = self
            .spd
            .find_protect(&pair.local_ts, &pair.remote_ts)
            .ok_or(InstallError::NoPolicy {
                local: pair.local_ts,
                remote: pair.remote_ts,
            })?;
        self.install_on(policy, pair)?;
        Ok(policy)
    }

    /// Installs a negotiated pair under `policy`, which must be PROTECT and cover the
    /// pair's selectors. The new pair becomes the policy's outbound SA at once (RFC 4301
    /// section 4.5: traffic moves to the new SA); older pairs keep receiving.
    pub fn install_on(&mut self, policy: PolicyId, pair: &ChildSaPair) -> Result<(), InstallError> {
        let p = self
            .spd
            .get(policy)
            .ok_or(InstallError::UnknownPolicy(policy))?;
        if p.action != PolicyAction::Protect
            || !p.local.covers(&pair.local_ts)
            || !p.remote.covers(&pair.remote_ts)
        {
            return Err(InstallError::PolicyMismatch(policy));
        }
        let spi = pair.inbound.spi;
        if self.pairs.contains_key(&spi) {
            return Err(InstallError::DuplicateSpi(spi));
        }
        let inbound = InboundSa::new(&pair.inbound, self.config.replay_window)?;
        let outbound = OutboundSa::new(&pair.outbound)?;

        let hard_bytes = pair
            .hard_lifetime
            .kilobytes
            .map(|kb| kb.saturating_mul(1024));
        let percent = u64::from(self.config.soft_lifetime_percent.clamp(1, 100));
        let soft_bytes = hard_bytes.map(|b| b / 100 * percent + b % 100 * percent / 100);
        self.pairs.insert(
            spi,
            PairState {
                policy,
                local: pair.local,
                remote: pair.remote,
                local_ts: pair.local_ts,
                remote_ts: pair.remote_ts,
                encapsulation: pair.encapsulation,
                inbound,
                outbound,
                hard_bytes,
                soft_bytes,
                soft_expired: false,
                hard_expired: false,
                path_mtu: self.config.default_path_mtu,
                drops: DropCounters::default(),
            },
        );
        self.by_policy.entry(policy).or_default().insert(0, spi);
        tracing::info!(%policy, inbound_spi = format_args!("{spi:#010x}"),
            outbound_spi = format_args!("{:#010x}", pair.outbound.spi),
            local_ts = %pair.local_ts, remote_ts = %pair.remote_ts,
            remote = %pair.remote, "ESP SA pair installed");
        Ok(())
    }

    /// Removes the pair with this inbound SPI; returns whether it was installed.
    pub fn remove_pair(&mut self, inbound_spi: u32) -> bool {
        let Some(state) = self.pairs.remove(&inbound_spi) else {
            return false;
        };
        if let Some(list) = self.by_policy.get_mut(&state.policy) {
            list.retain(|&s| s != inbound_spi);
        }
        tracing::info!(
            inbound_spi = format_args!("{inbound_spi:#010x}"),
            outbound_spi = format_args!("{:#010x}", state.outbound.spi()),
            "ESP SA pair removed"
        );
        true
    }

    /// Sets the path MTU (outer IP packet size) for a pair; `None` disables the check.
    /// Returns whether the pair exists.
    pub fn set_path_mtu(&mut self, inbound_spi: u32, mtu: Option<usize>) -> bool {
        self.pairs
            .get_mut(&inbound_spi)
            .map(|p| p.path_mtu = mtu)
            .is_some()
    }

    /// Changes where a pair's packets are sent, e.g. after the peer's NAT mapping moved
    /// (RFC 3947 section 5.2 lets the control plane follow it). Returns whether the pair exists.
    pub fn set_remote(&mut self, inbound_spi: u32, remote: SocketAddr) -> bool {
        self.pairs
            .get_mut(&inbound_spi)
            .map(|p| p.remote = remote)
            .is_some()
    }

    /// Drops counted so far, by reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// Counters and state of the pair with this inbound SPI.
    pub fn pair_stats(&self, inbound_spi: u32) -> Option<SaPairStats> {
        self.pairs.get(&inbound_spi).map(|p| p.stats(inbound_spi))
    }

    /// Counters and state of every installed pair, by ascending inbound SPI.
    pub fn pairs(&self) -> impl Iterator<Item = SaPairStats> + '_ {
        self.pairs.iter().map(|(&spi, p)| p.stats(spi))
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
        let result = self.encapsulate_inner(buf, inner, rng);
        if let Err(e) = &result {
            self.drops.count(e.reason());
            tracing::debug!(reason = %e.reason(), error = %e, "outbound packet dropped");
        }
        result
    }

    fn encapsulate_inner<R: CryptoRngCore + ?Sized>(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        rng: &mut R,
    ) -> Result<Outbound, DropError> {
        let too_small = DropError::BufferTooSmall {
            headroom: MAX_HEADROOM,
            tailroom: MAX_TAILROOM,
        };
        let packet = buf.get(inner.clone()).ok_or(too_small)?;
        let info = PacketInfo::parse(packet)
            .map_err(|error| DropError::MalformedInner { spi: 0, error })?;

        // RFC 4301 section 5.1: the first matching SPD entry decides.
        let (policy_id, policy) =
            self.spd
                .lookup(&info, Direction::Outbound)
                .ok_or(DropError::NoPolicy {
                    src: info.src,
                    dst: info.dst,
                })?;
        match policy.action {
            PolicyAction::Discard => return Err(DropError::Discarded { policy: policy_id }),
            PolicyAction::Bypass => return Ok(Outbound::Bypass { policy: policy_id }),
            PolicyAction::Protect => {}
        }

        // The newest pair of the policy whose (possibly narrower) selectors cover the packet.
        let pair = self
            .by_policy
            .get(&policy_id)
            .and_then(|spis| {
                spis.iter().find(|spi| {
                    self.pairs
                        .get(spi)
                        .is_some_and(|p| p.covers_outbound(&info))
                })
            })
            .copied()
            .and_then(|spi| self.pairs.get_mut(&spi))
            .ok_or(DropError::NoOutboundSa { policy: policy_id })?;
        let out_spi = pair.outbound.spi();

        // Hard kilobyte lifetime, then the path MTU.
        if pair.hard_expired || pair.over_hard(pair.outbound.counters().bytes, info.total_len) {
            pair.retire(LimitKind::Kilobytes, &mut self.events);
            return Err(pair.expired(out_spi));
        }
        pair.check_path_mtu(&info)?;

        // RFC 4303 section 2.6: next header names the tunnelled IP version.
        let next_header = if info.version() == 4 {
            NEXT_HEADER_IPV4
        } else {
            NEXT_HEADER_IPV6
        };
        let payload = inner.start..inner.start + info.total_len;
        let sealed = pair
            .outbound
            .seal(buf, payload, next_header, rng)
            .inspect_err(|e| {
                if matches!(e, DropError::SequenceExhausted { .. }) {
                    pair.retire(LimitKind::SequenceNumbers, &mut self.events);
                }
            })?;
        tracing::trace!(
            spi = out_spi,
            sequence = sealed.sequence,
            len = info.total_len,
            "ESP sealed"
        );

        // Soft limits: sequence numbers running low, or kilobytes.
        if sealed.sequence >= self.config.sequence_soft_limit {
            pair.warn_soft(LimitKind::SequenceNumbers, &mut self.events);
        } else if pair.over_soft(pair.outbound.counters().bytes) {
            pair.warn_soft(LimitKind::Kilobytes, &mut self.events);
        }

        Ok(Outbound::Protected(EspTransmit {
            packet: sealed.packet,
            local: pair.local,
            remote: pair.remote,
            encapsulation: pair.encapsulation,
            spi: out_spi,
            sequence: sealed.sequence,
            policy: policy_id,
        }))
    }

    /// Checks and decrypts the ESP packet that fills `packet` (for UDP 4500: the UDP
    /// payload after [`natt::classify`]; for protocol 50: the IP payload), in place.
    ///
    /// Order (RFC 4303 section 3.4, RFC 4301 section 5.2): SA by SPI, anti-replay
    /// check, ICV in constant time, window update, decryption, padding, next header
    /// (4 or 41; 59 is a dummy packet), then the inner packet must lie within the SA's
    /// selectors. On success `packet[inbound.inner]` is the inner IP packet.
    pub fn decapsulate(&mut self, packet: &mut [u8]) -> Result<Inbound, DropError> {
        let result = self.decapsulate_inner(packet);
        if let Err(e) = &result {
            let reason = e.reason();
            self.drops.count(reason);
            if let Some(spi) = esp_spi(packet) {
                if let Some(pair) = self.pairs.get_mut(&spi) {
                    pair.drops.count(reason);
                }
            }
            tracing::debug!(reason = %reason, error = %e, "inbound packet dropped");
        }
        result
    }

    fn decapsulate_inner(&mut self, packet: &mut [u8]) -> Result<Inbound, DropError> {
        let spi = esp_spi(packet).ok_or(DropError::MalformedEsp {
            spi: 0,
            len: packet.len(),
            what: "shorter than ESP header",
        })?;
        let pair = self
            .pairs
            .get_mut(&spi)
            .ok_or(DropError::NoInboundSa { spi })?;
        if pair.hard_expired {
            return Err(pair.expired(spi));
        }

        // Replay, ICV, window, decryption, padding (RFC 4303 section 3.4).
        let opened = pair.inbound.open(packet)?;

        // RFC 4303 section 2.6: tunnel mode carries IPv4 (4) or IPv6 (41); 59 is a dummy.
        let expected_version = match opened.next_header {
            NEXT_HEADER_IPV4 => 4,
            NEXT_HEADER_IPV6 => 6,
            NEXT_HEADER_NO_NEXT => return Err(DropError::DummyPacket { spi }),
            next_header => return Err(DropError::BadNextHeader { spi, next_header }),
        };
        let payload = packet.get(opened.payload.clone()).unwrap_or_default();
        let info =
            PacketInfo::parse(payload).map_err(|error| DropError::MalformedInner { spi, error })?;
        if info.version() != expected_version {
            return Err(DropError::BadNextHeader {
                spi,
                next_header: opened.next_header,
            });
        }

        // RFC 4301 section 5.2 step 4: the packet must be one the SA was negotiated for.
        if !pair.covers_inbound(&info) {
            return Err(DropError::SelectorMismatch {
                spi,
                src: info.src,
                dst: info.dst,
            });
        }

        // Kilobyte lifetime of the inbound direction.
        if pair.over_hard(pair.inbound.counters().bytes, info.total_len) {
            pair.retire(LimitKind::Kilobytes, &mut self.events);
            return Err(pair.expired(spi));
        }
        pair.inbound.count_delivered(info.total_len);
        if pair.over_soft(pair.inbound.counters().bytes) {
            pair.warn_soft(LimitKind::Kilobytes, &mut self.events);
        }
        tracing::trace!(
            spi,
            sequence = opened.sequence,
            len = info.total_len,
            "ESP opened"
        );

        let start = opened.payload.start;
        Ok(Inbound {
            inner: start..start + info.total_len,
            ip_version: info.version(),
            spi,
            sequence: opened.sequence,
            policy: pair.policy,
        })
    }

    /// Applies the SPD to an inbound packet that arrived in clear (RFC 4301 section 5.2):
    /// allowed only under a BYPASS policy. Returns that policy.
    pub fn check_inbound_cleartext(&mut self, packet: &[u8]) -> Result<PolicyId, DropError> {
        let result = self.check_cleartext_inner(packet);
        if let Err(e) = &result {
            self.drops.count(e.reason());
            tracing::debug!(reason = %e.reason(), error = %e, "clear-text packet dropped");
        }
        result
    }

    fn check_cleartext_inner(&self, packet: &[u8]) -> Result<PolicyId, DropError> {
        let info = PacketInfo::parse(packet)
            .map_err(|error| DropError::MalformedInner { spi: 0, error })?;
        let (policy, p) =
            self.spd
                .lookup(&info, Direction::Inbound)
                .ok_or(DropError::NoPolicy {
                    src: info.src,
                    dst: info.dst,
                })?;
        match p.action {
            PolicyAction::Bypass => Ok(policy),
            PolicyAction::Discard => Err(DropError::Discarded { policy }),
            PolicyAction::Protect => Err(DropError::CleartextNotAllowed { policy }),
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
