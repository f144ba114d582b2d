//! The data plane in two halves, one per direction, for a data path that seals on one
//! thread and opens on another.
//!
//! * [`OutboundPlane`]: the SPD, the outbound SA of every pair (sequence numbers, outbound
//!   kilobytes, path MTU, where to send), [`OutboundPlane::encapsulate`], and the clear-text
//!   check of inbound packets (it needs the SPD).
//! * [`InboundPlane`]: the inbound SA of every pair by SPI (replay windows, inbound
//!   kilobytes, the pair's selectors for the RFC 4301 section 5.2 check), and
//!   [`InboundPlane::decapsulate`].
//!
//! Neither half refers to the other, so each can sit behind its own lock (or be owned by
//! its thread) and a packet in one direction never waits for the other direction. The
//! control plane installs a pair in both: [`OutboundPlane::install`] picks the policy,
//! then [`InboundPlane::install`] takes that policy; [`OutboundPlane::remove_pair`] and
//! [`InboundPlane::remove_pair`] on deletion. [`pair_stats`] joins both halves' view of a
//! pair for display. [`crate::dataplane::DataPlane`] is the single-threaded composition of
//! the two and keeps its whole API.
//!
//! Lifetimes: each half counts its own direction's kilobytes (as `DataPlane` does) and
//! reports its own [`Event`]s from its own `poll_event`. So a pair can be reported twice
//! (once per half) when both directions cross a limit; the events carry the inbound SPI,
//! and [`crate::endpoint::Endpoint`] acts once however often it hears of a pair (a second
//! soft report while the replacement is negotiated starts no second Quick Mode, a second
//! hard report finds the pair gone). A half that reached a hard limit refuses traffic in
//! its direction only; the other direction stops when the control plane removes the pair,
//! which it does on [`Event::HardLifetime`]. `DataPlane` hides both differences: it
//! reports each pair once and retires both directions at once.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;

use ipsec_crypto::CBC_LANES;
use ipsec_proto::esp::{NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NO_NEXT};
use rand_core::CryptoRngCore;

use super::packet::PacketInfo;
use super::sa::{Framed, InboundSa, OutboundSa};
use super::spd::Spd;
use super::{
    esp_spi, outer_header_len, DataPlaneConfig, Direction, DropCounters, DropError, EspTransmit,
    Event, Inbound, InstallError, LimitKind, Outbound, Policy, PolicyAction, PolicyId, SaPairStats,
    MAX_HEADROOM, MAX_TAILROOM,
};
use crate::child::{ChildSaPair, Encapsulation};
use crate::selector::TrafficSelector;

/// Kilobyte limits and expiry state of one direction of a pair.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Hard and soft byte limits, from the hard kilobyte lifetime.
    hard_bytes: Option<u64>,
    soft_bytes: Option<u64>,
    pub(super) soft_expired: bool,
    pub(super) hard_expired: bool,
    /// Which limit retired the pair, for the refusals that follow.
    pub(super) retired_by: Option<LimitKind>,
}

impl Limits {
    fn new(config: &DataPlaneConfig, pair: &ChildSaPair) -> Self {
        let hard_bytes = pair
            .hard_lifetime
            .kilobytes
            .map(|kb| kb.saturating_mul(1024));
        let percent = u64::from(config.soft_lifetime_percent.clamp(1, 100));
        let soft_bytes = hard_bytes.map(|b| b / 100 * percent + b % 100 * percent / 100);
        Self {
            hard_bytes,
            soft_bytes,
            soft_expired: false,
            hard_expired: false,
            retired_by: None,
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

    /// Marks the direction retired by `limit` (the first limit reached stays the reason).
    pub(super) fn retire(&mut self, limit: LimitKind) {
        self.hard_expired = true;
        self.retired_by.get_or_insert(limit);
    }

    /// The refusal for a direction past its hard limit, naming `spi` and the limit that
    /// retired it: the sequence numbers ran out, or the kilobytes.
    fn expired(&self, spi: u32) -> DropError {
        match self.retired_by {
            Some(LimitKind::SequenceNumbers) => DropError::SequenceExhausted { spi },
            _ => DropError::LifetimeExpired {
                spi,
                kilobytes: self.hard_bytes.unwrap_or(0) / 1024,
            },
        }
    }
}

/// Who a pair's events name.
#[derive(Clone, Copy, Debug)]
struct PairIds {
    policy: PolicyId,
    inbound_spi: u32,
    outbound_spi: u32,
}

impl PairIds {
    /// Marks the limits hard-expired; queues the event the first time only.
    fn retire(self, limits: &mut Limits, limit: LimitKind, events: &mut VecDeque<Event>) {
        if !limits.hard_expired {
            limits.retire(limit);
            events.push_back(Event::HardLifetime {
                policy: self.policy,
                inbound_spi: self.inbound_spi,
                outbound_spi: self.outbound_spi,
                limit,
            });
        }
    }

    /// Marks the limits soft-expired; queues the event the first time only.
    fn warn_soft(self, limits: &mut Limits, limit: LimitKind, events: &mut VecDeque<Event>) {
        if !limits.soft_expired {
            limits.soft_expired = true;
            events.push_back(Event::SoftLifetime {
                policy: self.policy,
                inbound_spi: self.inbound_spi,
                outbound_spi: self.outbound_spi,
                limit,
            });
        }
    }
}

// ------------------------------------------------------------------------------ outbound --

/// The outbound direction of an installed pair.
#[derive(Debug)]
pub(super) struct OutboundPair {
    ids: PairIds,
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) local_ts: TrafficSelector,
    pub(super) remote_ts: TrafficSelector,
    pub(super) encapsulation: Encapsulation,
    pub(super) sa: OutboundSa,
    pub(super) limits: Limits,
    pub(super) path_mtu: Option<usize>,
}

impl OutboundPair {
    /// Whether the pair's own (possibly narrowed) selectors cover an outbound packet.
    fn covers(&self, info: &PacketInfo) -> bool {
        self.local_ts
            .matches(info.src, info.protocol, info.src_port)
            && self
                .remote_ts
                .matches(info.dst, info.protocol, info.dst_port)
    }

    /// Path MTU (RFC 4301 section 8.2): refuses a packet whose ESP form would not fit
    /// and which may not be fragmented (IPv4 with DF, or IPv6).
    fn check_path_mtu(&self, info: &PacketInfo) -> Result<(), DropError> {
        let Some(path_mtu) = self.path_mtu else {
            return Ok(());
        };
        let overhead = self.sa.overhead();
        let esp_space = path_mtu.saturating_sub(outer_header_len(self.remote, self.encapsulation));
        if overhead.esp_len(info.total_len) <= esp_space || !info.dont_fragment {
            return Ok(());
        }
        Err(DropError::PacketTooBig {
            spi: self.sa.spi(),
            inner_len: info.total_len,
            inner_mtu: overhead.max_payload(esp_space).unwrap_or(0),
            path_mtu,
        })
    }
}

/// The outbound half: SPD, outbound SAs, drop counters and events of this direction.
#[derive(Debug)]
pub struct OutboundPlane {
    config: DataPlaneConfig,
    spd: Spd,
    /// Installed pairs by inbound SPI (the pair's handle on both halves).
    pub(super) pairs: BTreeMap<u32, OutboundPair>,
    /// Inbound SPIs of each policy's pairs, newest first.
    by_policy: BTreeMap<PolicyId, Vec<u32>>,
    drops: DropCounters,
    pub(super) events: VecDeque<Event>,
    /// Packets of the current [`OutboundPlane::encapsulate_batch`] framed and waiting for
    /// encryption (kept between calls so that a batch does not allocate).
    pending: Vec<PendingSeal>,
}

/// A framed packet of a batch: where it is, which pair's SA framed it.
#[derive(Debug)]
struct PendingSeal {
    index: usize,
    pair: u32,
    framed: Framed,
}

/// What framing one outbound packet came to.
enum Step {
    Bypass(PolicyId),
    /// Framed by the SA of `pair` (its inbound SPI); `transmit` once it is protected.
    Framed {
        pair: u32,
        framed: Framed,
        transmit: EspTransmit,
    },
}

impl OutboundPlane {
    /// An empty outbound half: no policies, so every packet is dropped as
    /// [`super::DropReason::NoPolicy`].
    pub fn new(config: DataPlaneConfig) -> Self {
        Self {
            config,
            spd: Spd::new(),
            pairs: BTreeMap::new(),
            by_policy: BTreeMap::new(),
            drops: DropCounters::default(),
            events: VecDeque::with_capacity(16),
            pending: Vec::new(),
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

    /// Removes an SPD entry and the outbound SAs attached to it; returns the policy and
    /// the inbound SPIs of the removed pairs (to remove from the [`InboundPlane`] too).
    pub fn remove_policy(&mut self, id: PolicyId) -> Option<(Policy, Vec<u32>)> {
        let policy = self.spd.remove(id)?;
        let spis = self.by_policy.remove(&id).unwrap_or_default();
        for spi in &spis {
            self.pairs.remove(spi);
        }
        tracing::debug!(%id, "policy removed with its SAs");
        Some((policy, spis))
    }

    /// The first PROTECT policy whose selectors cover the pair's: where
    /// [`OutboundPlane::install`] would put it. A caller that installs the inbound half
    /// first (so that the peer's first packets on the new pair can be opened as soon as
    /// we send on it) asks here, then calls [`InboundPlane::install`] and
    /// [`OutboundPlane::install_on`] with the answer.
    pub fn find_policy(&self, pair: &ChildSaPair) -> Result<PolicyId, InstallError> {
        self.spd
            .find_protect(&pair.local_ts, &pair.remote_ts)
            .ok_or(InstallError::NoPolicy {
                local: pair.local_ts,
                remote: pair.remote_ts,
            })
    }

    /// Checks that `policy` exists, is PROTECT and covers the pair's selectors.
    pub(super) fn check_policy(
        &self,
        policy: PolicyId,
        pair: &ChildSaPair,
    ) -> Result<(), InstallError> {
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
        Ok(())
    }

    /// Whether a pair with this inbound SPI is installed.
    pub fn contains(&self, inbound_spi: u32) -> bool {
        self.pairs.contains_key(&inbound_spi)
    }

    /// Installs the outbound SA of a negotiated pair under the first PROTECT policy whose
    /// selectors cover the pair's; returns that policy (give it to
    /// [`InboundPlane::install`]).
    pub fn install(&mut self, pair: &ChildSaPair) -> Result<PolicyId, InstallError> {
        let policy = self.find_policy(pair)?;
        self.install_on(policy, pair)?;
        Ok(policy)
    }

    /// Installs the outbound SA of a pair under `policy`, which must be PROTECT and cover
    /// the pair's selectors. It becomes the policy's outbound SA at once (RFC 4301 section
    /// 4.5: traffic moves to the new SA).
    pub fn install_on(&mut self, policy: PolicyId, pair: &ChildSaPair) -> Result<(), InstallError> {
        self.check_policy(policy, pair)?;
        let spi = pair.inbound.spi;
        if self.pairs.contains_key(&spi) {
            return Err(InstallError::DuplicateSpi(spi));
        }
        let sa = OutboundSa::new(&pair.outbound)?;
        self.pairs.insert(
            spi,
            OutboundPair {
                ids: PairIds {
                    policy,
                    inbound_spi: spi,
                    outbound_spi: pair.outbound.spi,
                },
                local: pair.local,
                remote: pair.remote,
                local_ts: pair.local_ts,
                remote_ts: pair.remote_ts,
                encapsulation: pair.encapsulation,
                sa,
                limits: Limits::new(&self.config, pair),
                path_mtu: self.config.default_path_mtu,
            },
        );
        self.by_policy.entry(policy).or_default().insert(0, spi);
        tracing::debug!(%policy, inbound_spi = format_args!("{spi:#010x}"),
            outbound_spi = format_args!("{:#010x}", pair.outbound.spi), "outbound SA installed");
        Ok(())
    }

    /// Removes the outbound SA of the pair with this inbound SPI; returns whether it was
    /// installed.
    pub fn remove_pair(&mut self, inbound_spi: u32) -> bool {
        let Some(state) = self.pairs.remove(&inbound_spi) else {
            return false;
        };
        if let Some(list) = self.by_policy.get_mut(&state.ids.policy) {
            list.retain(|&s| s != inbound_spi);
        }
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

    /// Changes where a pair's packets are sent (RFC 3947 section 5.2: the peer's NAT
    /// mapping moved). Returns whether the pair exists.
    pub fn set_remote(&mut self, inbound_spi: u32, remote: SocketAddr) -> bool {
        self.pairs
            .get_mut(&inbound_spi)
            .map(|p| p.remote = remote)
            .is_some()
    }

    /// Outbound drops counted so far, by reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// The next lifetime event of the outbound direction, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Protects the inner packet at `buf[inner]` according to the SPD, in place: as
    /// [`super::DataPlane::encapsulate`] (same buffer rules, same results).
    pub fn encapsulate<R: CryptoRngCore + ?Sized>(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        rng: &mut R,
    ) -> Result<Outbound, DropError> {
        let result = self.frame_one(buf, inner, rng).and_then(|step| match step {
            Step::Bypass(policy) => Ok(Outbound::Bypass { policy }),
            Step::Framed {
                pair,
                framed,
                transmit,
            } => {
                let sa = self.pairs.get(&pair).map(|p| &p.sa);
                protect(sa, pair, &mut [(buf, &framed)])?;
                Ok(Outbound::Protected(transmit))
            }
        });
        if let Err(e) = &result {
            self.count_drop(e);
        }
        result
    }

    /// Protects a batch of inner packets, each `packets[i].0[packets[i].1]` in place with
    /// the same buffer rules as [`OutboundPlane::encapsulate`]; `results[i]` (cleared
    /// first) is what `encapsulate` would have returned for packet `i` called in the same
    /// order, with the same bytes on the wire for the same random numbers.
    ///
    /// The difference is speed: every packet is framed first (SPD, SA, limits, header,
    /// IV, trailer), then the packets of one SA that follow each other are encrypted up to
    /// [`CBC_LANES`] at a time side by side (see [`ipsec_crypto::Cipher::encrypt_cbc_many`])
    /// and authenticated. For a TUN read of a TCP burst that is most of the AES work.
    /// Allocation-free once `results` and the plane's own scratch list have grown to the
    /// batch size. `B::as_mut` is called twice per packet (framing, then encryption) and
    /// must give the same buffer both times, as `Vec<u8>` and `&mut [u8]` do; a packet
    /// whose buffer changed in between is refused as an internal error, never sent in
    /// clear.
    pub fn encapsulate_batch<B: AsMut<[u8]>, R: CryptoRngCore + ?Sized>(
        &mut self,
        packets: &mut [(B, Range<usize>)],
        rng: &mut R,
        results: &mut Vec<Result<Outbound, DropError>>,
    ) {
        results.clear();
        let mut pending = core::mem::take(&mut self.pending);
        pending.clear();
        for (index, (buf, inner)) in packets.iter_mut().enumerate() {
            let result = match self.frame_one(buf.as_mut(), inner.clone(), rng) {
                Ok(Step::Bypass(policy)) => Ok(Outbound::Bypass { policy }),
                Ok(Step::Framed {
                    pair,
                    framed,
                    transmit,
                }) => {
                    pending.push(PendingSeal {
                        index,
                        pair,
                        framed,
                    });
                    Ok(Outbound::Protected(transmit))
                }
                Err(e) => {
                    self.count_drop(&e);
                    Err(e)
                }
            };
            results.push(result);
        }

        // Runs of up to CBC_LANES pending packets of one pair, in order. Indices grow
        // along `pending`, so one pass over `packets` hands out the buffers.
        let mut bufs = packets.iter_mut().enumerate();
        let mut start = 0;
        while let Some(first) = pending.get(start) {
            let run = pending
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take(CBC_LANES)
                .take_while(|p| p.pair == first.pair)
                .count()
                .max(1);
            let group = pending.get(start..start + run).unwrap_or_default();
            start += run;
            let mut jobs: [(&mut [u8], &Framed); CBC_LANES] =
                core::array::from_fn(|_| (Default::default(), &EMPTY_FRAME));
            let mut n = 0;
            for (p, job) in group.iter().zip(jobs.iter_mut()) {
                let Some((_, (buf, _))) = bufs.find(|(i, _)| *i == p.index) else {
                    break;
                };
                *job = (buf.as_mut(), &p.framed);
                n += 1;
            }
            let sa = self.pairs.get(&first.pair).map(|p| &p.sa);
            let protected = match jobs.get_mut(..n) {
                Some(jobs) if n == group.len() => protect(sa, first.pair, jobs),
                _ => Err(super::sa::internal(0, "batch lost track of its buffers")),
            };
            if let Err(e) = protected {
                for p in group {
                    self.count_drop(&e);
                    if let Some(slot) = results.get_mut(p.index) {
                        *slot = Err(e);
                    }
                }
            }
        }
        self.pending = pending;
    }

    /// Counts and logs an outbound drop.
    fn count_drop(&mut self, e: &DropError) {
        self.drops.count(e.reason());
        tracing::debug!(reason = %e.reason(), error = %e, "outbound packet dropped");
    }

    /// Everything [`OutboundPlane::encapsulate`] does to a packet except encrypting it and
    /// writing its ICV: the SPD decides, the pair's limits and path MTU are checked, the
    /// packet is framed, the soft limits report.
    fn frame_one<R: CryptoRngCore + ?Sized>(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        rng: &mut R,
    ) -> Result<Step, DropError> {
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
            PolicyAction::Bypass => return Ok(Step::Bypass(policy_id)),
            PolicyAction::Protect => {}
        }

        // The newest pair of the policy whose (possibly narrower) selectors cover the packet.
        let pair_spi = self
            .by_policy
            .get(&policy_id)
            .and_then(|spis| {
                spis.iter()
                    .find(|spi| self.pairs.get(spi).is_some_and(|p| p.covers(&info)))
            })
            .copied()
            .ok_or(DropError::NoOutboundSa { policy: policy_id })?;
        let pair = self
            .pairs
            .get_mut(&pair_spi)
            .ok_or(DropError::NoOutboundSa { policy: policy_id })?;
        let out_spi = pair.sa.spi();
        let ids = pair.ids;

        // Hard kilobyte lifetime, then the path MTU.
        if pair.limits.hard_expired
            || pair
                .limits
                .over_hard(pair.sa.counters().bytes, info.total_len)
        {
            ids.retire(&mut pair.limits, LimitKind::Kilobytes, &mut self.events);
            return Err(pair.limits.expired(out_spi));
        }
        pair.check_path_mtu(&info)?;

        // RFC 4303 section 2.6: next header names the tunnelled IP version.
        let next_header = if info.version() == 4 {
            NEXT_HEADER_IPV4
        } else {
            NEXT_HEADER_IPV6
        };
        let payload = inner.start..inner.start + info.total_len;
        let framed = match pair.sa.frame(buf, payload, next_header, rng) {
            Ok(framed) => framed,
            Err(e) => {
                if matches!(e, DropError::SequenceExhausted { .. }) {
                    ids.retire(
                        &mut pair.limits,
                        LimitKind::SequenceNumbers,
                        &mut self.events,
                    );
                }
                return Err(e);
            }
        };
        tracing::trace!(
            spi = out_spi,
            sequence = framed.sequence,
            len = info.total_len,
            "ESP sealed"
        );

        // Soft limits: sequence numbers running low, or kilobytes.
        if framed.sequence >= self.config.sequence_soft_limit {
            ids.warn_soft(
                &mut pair.limits,
                LimitKind::SequenceNumbers,
                &mut self.events,
            );
        } else if pair.limits.over_soft(pair.sa.counters().bytes) {
            ids.warn_soft(&mut pair.limits, LimitKind::Kilobytes, &mut self.events);
        }

        let transmit = EspTransmit {
            packet: framed.packet.clone(),
            local: pair.local,
            remote: pair.remote,
            encapsulation: pair.encapsulation,
            spi: out_spi,
            sequence: framed.sequence,
            policy: policy_id,
        };
        Ok(Step::Framed {
            pair: pair_spi,
            framed,
            transmit,
        })
    }

    /// Applies the SPD to an inbound packet that arrived in clear (RFC 4301 section 5.2):
    /// allowed only under a BYPASS policy. Returns that policy. (Here because the SPD is.)
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

// ------------------------------------------------------------------------------- inbound --

/// The inbound direction of an installed pair.
#[derive(Debug)]
pub(super) struct InboundPair {
    ids: PairIds,
    pub(super) local_ts: TrafficSelector,
    pub(super) remote_ts: TrafficSelector,
    pub(super) sa: InboundSa,
    pub(super) limits: Limits,
    /// Inbound drops attributed to this pair.
    pub(super) drops: DropCounters,
}

impl InboundPair {
    /// RFC 4301 section 5.2 step 4: whether a decrypted packet is one this SA carries.
    fn covers(&self, info: &PacketInfo) -> bool {
        self.remote_ts
            .matches(info.src, info.protocol, info.src_port)
            && self
                .local_ts
                .matches(info.dst, info.protocol, info.dst_port)
    }
}

/// The inbound half: inbound SAs by SPI with their replay windows, drop counters and
/// events of this direction.
#[derive(Debug)]
pub struct InboundPlane {
    config: DataPlaneConfig,
    /// Installed pairs by inbound SPI (which we chose, so it is unique). A B-tree: O(log n)
    /// lookups that never allocate and no hash keys drawn from the OS.
    pub(super) pairs: BTreeMap<u32, InboundPair>,
    drops: DropCounters,
    pub(super) events: VecDeque<Event>,
}

impl InboundPlane {
    /// An empty inbound half: every ESP packet is dropped as
    /// [`super::DropReason::NoSa`].
    pub fn new(config: DataPlaneConfig) -> Self {
        Self {
            config,
            pairs: BTreeMap::new(),
            drops: DropCounters::default(),
            events: VecDeque::with_capacity(16),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DataPlaneConfig {
        &self.config
    }

    /// Whether a pair with this inbound SPI is installed.
    pub fn contains(&self, inbound_spi: u32) -> bool {
        self.pairs.contains_key(&inbound_spi)
    }

    /// Installs the inbound SA of a negotiated pair, under the policy that
    /// [`OutboundPlane::install`] chose for it (reported in [`Inbound::policy`] and in
    /// events). Older pairs of the policy keep receiving until removed, so a rekey loses
    /// nothing in flight.
    pub fn install(&mut self, policy: PolicyId, pair: &ChildSaPair) -> Result<(), InstallError> {
        let spi = pair.inbound.spi;
        if self.pairs.contains_key(&spi) {
            return Err(InstallError::DuplicateSpi(spi));
        }
        let sa = InboundSa::new(&pair.inbound, self.config.replay_window)?;
        self.pairs.insert(
            spi,
            InboundPair {
                ids: PairIds {
                    policy,
                    inbound_spi: spi,
                    outbound_spi: pair.outbound.spi,
                },
                local_ts: pair.local_ts,
                remote_ts: pair.remote_ts,
                sa,
                limits: Limits::new(&self.config, pair),
                drops: DropCounters::default(),
            },
        );
        tracing::debug!(%policy, inbound_spi = format_args!("{spi:#010x}"), "inbound SA installed");
        Ok(())
    }

    /// Removes the inbound SA with this SPI; returns whether it was installed.
    pub fn remove_pair(&mut self, inbound_spi: u32) -> bool {
        self.pairs.remove(&inbound_spi).is_some()
    }

    /// Inbound drops counted so far, by reason.
    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    /// The next lifetime event of the inbound direction, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Checks and decrypts the ESP packet that fills `packet`, in place: as
    /// [`super::DataPlane::decapsulate`] (same order of checks, same results).
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
        if pair.limits.hard_expired {
            return Err(pair.limits.expired(spi));
        }

        // Replay, ICV, window, decryption, padding (RFC 4303 section 3.4).
        let opened = pair.sa.open(packet)?;

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
        if !pair.covers(&info) {
            return Err(DropError::SelectorMismatch {
                spi,
                src: info.src,
                dst: info.dst,
            });
        }

        // Kilobyte lifetime of the inbound direction.
        let ids = pair.ids;
        if pair
            .limits
            .over_hard(pair.sa.counters().bytes, info.total_len)
        {
            ids.retire(&mut pair.limits, LimitKind::Kilobytes, &mut self.events);
            return Err(pair.limits.expired(spi));
        }
        pair.sa.count_delivered(info.total_len);
        if pair.limits.over_soft(pair.sa.counters().bytes) {
            ids.warn_soft(&mut pair.limits, LimitKind::Kilobytes, &mut self.events);
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
            policy: ids.policy,
        })
    }
}

/// A placeholder for unused slots of a stack array of jobs.
const EMPTY_FRAME: Framed = Framed {
    packet: 0..0,
    encrypted: 0..0,
    sequence: 0,
};

/// Encrypts and authenticates packets the SA of pair `pair` framed (`sa` is that SA, if
/// the pair is still installed, which it is within one call).
fn protect(
    sa: Option<&OutboundSa>,
    pair: u32,
    packets: &mut [(&mut [u8], &Framed)],
) -> Result<(), DropError> {
    match sa {
        Some(sa) => sa.protect_many(packets),
        None => Err(super::sa::internal(pair, "framing SA vanished")),
    }
}

/// Both halves' view of the pair with this inbound SPI, for display; `None` unless both
/// hold it. A limit counts as crossed when either direction crossed it.
pub fn pair_stats(
    outbound: &OutboundPlane,
    inbound: &InboundPlane,
    inbound_spi: u32,
) -> Option<SaPairStats> {
    let o = outbound.pairs.get(&inbound_spi)?;
    let i = inbound.pairs.get(&inbound_spi)?;
    Some(SaPairStats {
        policy: o.ids.policy,
        inbound_spi,
        outbound_spi: o.sa.spi(),
        local: o.local,
        remote: o.remote,
        encapsulation: o.encapsulation,
        local_ts: o.local_ts,
        remote_ts: o.remote_ts,
        inbound: i.sa.counters(),
        outbound: o.sa.counters(),
        drops: i.drops.clone(),
        last_outbound_sequence: o.sa.last_sequence(),
        highest_inbound_sequence: i.sa.window().newest(),
        soft_expired: o.limits.soft_expired || i.limits.soft_expired,
        hard_expired: o.limits.hard_expired || i.limits.hard_expired,
        path_mtu: o.path_mtu,
    })
}
