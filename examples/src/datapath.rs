//! The ESP data path: tasks that move packets between the TUN device and the outer sockets in
//! batches, apart from the IKE loop in [`crate::gateway`].
//!
//! # Design
//!
//! * **Outbound** ([`outbound`], one task): the TUN device is opened with offloads
//!   (`IFF_VNET_HDR`, TSO4/TSO6/checksum), so the kernel hands over a whole TCP super-packet
//!   (up to 64 KiB) in one read; tun-rs splits it into MTU-sized packets with their headers
//!   and checksums. The data plane seals the whole read in place in one batch (AES-CBC of
//!   up to eight packets side by side, `encapsulate_batch`), then the ESP packets go out in
//!   as few system calls as possible: consecutive ESP-in-UDP packets to the same peer that
//!   have the same length (the last one may be shorter) leave in one `sendmsg` with
//!   `UDP_SEGMENT` (UDP GSO, Linux 4.18+), the kernel cutting them into datagrams; a run
//!   of raw ESP packets (IP protocol 50) leaves in one `sendmmsg`.
//! * **Inbound** ([`inbound_udp`] per UDP 4500 socket, [`inbound_raw`] per raw ESP socket):
//!   UDP 4500 is read with `UDP_GRO`, so one `recvmsg` returns a run of datagrams of one
//!   flow with their segment size (raw ESP: one `recvmmsg` takes up to 64 packets); each
//!   datagram is classified by the RFC 3948 rule
//!   (non-ESP marker: IKE, handed to the IKE loop; 0xFF: NAT-keepalive; otherwise ESP) and
//!   ESP is opened in place. After the first read, the task keeps reading without waiting
//!   until the socket is empty or a batch is full. Decrypted packets are copied into
//!   per-task write buffers and written to the TUN device with tun-rs' GRO: TCP segments
//!   of one flow are coalesced back into one super-packet (one `write` for up to 64 KiB),
//!   other packets are written one by one with an empty virtio header.
//! * **Threads**: the tasks run on the worker threads of a multi-threaded tokio runtime
//!   (`[gateway] data_path_threads`, default 1; see [`crate::gateway::run`]) while the IKE
//!   loop has the main thread to itself, so a Diffie-Hellman computation of the IKE loop
//!   holds no packet back, and with two or more workers sealing and opening proceed on
//!   different cores at once.
//! * **Shared state** ([`DataShared`]), one `Mutex` per direction so that the two
//!   directions never wait for each other: [`OutState`] (the SPD and outbound SAs, the IV
//!   generator, the static NAT tables) for the outbound task, [`InState`] (inbound SAs and
//!   replay windows, where each pair's ESP comes from, the static NAT tables) for the
//!   inbound tasks. A task locks its half once per batch (one TUN read, one GRO receive);
//!   the IKE loop locks them briefly to install and remove pairs, reseed the IVs, reload
//!   static NAT and print `status`. Lock order: `inb` before `out` wherever both are held
//!   (the IKE loop, and an inbound task following a NAT rebinding); the outbound task
//!   holds only `out`. What the IKE loop must act on (no SA for a policy, traffic seen for
//!   DPD, lifetime events, IKE on port 4500) goes to it through its input channel as
//!   [`Input`] values; the tasks never block on it for ESP.
//!
//! Per packet there is no allocation: buffers are allocated once per task. Per batch there
//! are a few small ones: the list of buffers handed to the data plane and to `sendmmsg` /
//! `recvmmsg`, and the `nix` crate's message headers and control-message buffer.
//!
//! Known limits: an ICMP error for a packet too big is built in a fresh buffer (rare);
//! UDP GSO is switched off for the rest of the run after repeated send errors with it
//! (kernels or devices without it), falling back to one datagram per `sendto`. Datagrams
//! larger than the route's MTU (inner packets without DF that only IP fragmentation can
//! carry) cannot go with GSO (EMSGSIZE): runs of that size go one by one, without
//! counting as GSO failures.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ipsec_sa::child::ChildSaPair;
use ipsec_sa::child::Encapsulation;
use ipsec_sa::dataplane::natt::{self as dp_natt, Udp4500};
use ipsec_sa::dataplane::split::{self, InboundPlane, OutboundPlane};
use ipsec_sa::dataplane::{
    DropError, DropReason, Event as DpEvent, InstallError, Outbound, PolicyId, SaPairStats,
    MAX_HEADROOM, MAX_TAILROOM,
};
use rand_chacha::ChaCha20Rng;
use tokio::sync::mpsc;
use tracing::{debug, info, trace};
use tun_rs::{AsyncDevice, GROTable, VIRTIO_NET_HDR_LEN};

use crate::config::StaticNat;
use crate::net::{self, OuterSockets, NATT_PORT};

/// The largest IP datagram.
pub(crate) const MAX_PACKET: usize = 65_535;
/// Packets per batch: at most one 64 KiB TCP super-packet cut at the smallest MTU we
/// accept (576 bytes) fits in this many.
const BATCH: usize = 128;
/// The kernel's cap on segments in one UDP GSO send (`UDP_MAX_SEGMENTS`, 64 before Linux
/// 6.9).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes of UDP payload one GSO send may carry (the IP length field allows 65,535 minus
/// the IPv4 and UDP headers; we keep a margin for IPv6).
const GSO_MAX_BYTES: usize = 65_000;
/// Consecutive failed GSO sends after which GSO is switched off.
const GSO_MAX_FAILURES: u32 = 8;
/// Distinct inbound SPIs per batch reported to the IKE loop for DPD.
const SPIS_PER_BATCH: usize = 8;

/// What the data path tasks (and the IKE readers) hand to the IKE loop.
#[derive(Debug)]
pub(crate) enum Input {
    /// An ISAKMP message (on port 4500 without its non-ESP marker).
    Ike {
        /// Our address and port it arrived on.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// The message.
        data: Vec<u8>,
    },
    /// An outbound packet matched a PROTECT policy that has no SA yet.
    NoOutboundSa(PolicyId),
    /// ESP arrived and passed every check on this inbound SPI (for DPD).
    TrafficSeen(u32),
    /// A lifetime event of the data plane.
    Lifetime(DpEvent),
}

/// The state the data path tasks and the IKE loop share, one lock per direction (see the
/// module docs for the lock order).
#[derive(Debug)]
pub(crate) struct DataShared {
    /// The outbound task's half.
    pub(crate) out: Mutex<OutState>,
    /// The inbound tasks' half.
    pub(crate) inb: Mutex<InState>,
}

/// The shared state as the tasks hold it.
pub(crate) type Shared = Arc<DataShared>;

/// What sealing needs.
#[derive(Debug)]
pub(crate) struct OutState {
    /// SPD, outbound SAs, outbound counters.
    pub(crate) plane: OutboundPlane,
    /// IVs for ESP: a ChaCha20 CSPRNG seeded from the OS, so that sealing a packet costs no
    /// system call; reseeded from the OS whenever a pair is installed. RFC 4303 section
    /// 3.2 (via RFC 3602 section 3) asks for unpredictable CBC IVs, which it gives.
    pub(crate) rng: ChaCha20Rng,
    /// Each tunnel's static NAT (by tunnel index), replaced on SIGHUP.
    pub(crate) static_nat: Vec<Option<Arc<StaticNat>>>,
}

/// What opening needs.
#[derive(Debug)]
pub(crate) struct InState {
    /// Inbound SAs, replay windows, inbound counters.
    pub(crate) plane: InboundPlane,
    /// Where each installed pair's ESP goes and how it travels (by inbound SPI), to check
    /// how a packet arrived and to notice a NAT rebinding.
    pub(crate) esp_peers: HashMap<u32, EspPeer>,
    /// Each tunnel's static NAT (by tunnel index), replaced on SIGHUP (the same tables as
    /// [`OutState::static_nat`]).
    pub(crate) static_nat: Vec<Option<Arc<StaticNat>>>,
    /// The tunnel index of each policy.
    pub(crate) by_policy: HashMap<PolicyId, usize>,
}

/// The far end of an installed pair, as the inbound side checks packets against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EspPeer {
    /// Where the pair's ESP goes (the outbound half holds the same).
    pub(crate) addr: SocketAddr,
    /// ESP in UDP 4500 or raw protocol 50, as negotiated.
    pub(crate) encapsulation: Encapsulation,
}

/// Locks one half of the shared state. A panic while it was held (a bug) leaves it
/// usable: the data plane's invariants do not depend on a half-finished call.
pub(crate) fn lock<T>(half: &Mutex<T>) -> MutexGuard<'_, T> {
    half.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DataShared {
    /// Installs a negotiated pair in both halves, the inbound one first so that the
    /// peer's first packets on it can be opened as soon as we send on it, and puts in the
    /// `reseed` IV generator if there is one; returns the policy the pair went under.
    pub(crate) fn install(
        &self,
        pair: &ChildSaPair,
        reseed: Option<ChaCha20Rng>,
    ) -> Result<PolicyId, InstallError> {
        let mut inb = lock(&self.inb);
        let mut out = lock(&self.out);
        let policy = out.plane.find_policy(pair)?;
        inb.plane.install(policy, pair)?;
        if let Err(e) = out.plane.install_on(policy, pair) {
            inb.plane.remove_pair(pair.inbound.spi);
            return Err(e);
        }
        inb.esp_peers.insert(
            pair.inbound.spi,
            EspPeer {
                addr: pair.remote,
                encapsulation: pair.encapsulation,
            },
        );
        if let Some(rng) = reseed {
            out.rng = rng;
        }
        Ok(policy)
    }

    /// Removes a pair from both halves; returns whether either held it.
    pub(crate) fn remove_pair(&self, inbound_spi: u32) -> bool {
        let mut inb = lock(&self.inb);
        inb.esp_peers.remove(&inbound_spi);
        let removed_in = inb.plane.remove_pair(inbound_spi);
        let removed_out = lock(&self.out).plane.remove_pair(inbound_spi);
        removed_in || removed_out
    }

    /// Both halves' view of a pair, for `status`.
    pub(crate) fn pair_stats(&self, inbound_spi: u32) -> Option<SaPairStats> {
        let inb = lock(&self.inb);
        let out = lock(&self.out);
        split::pair_stats(&out.plane, &inb.plane, inbound_spi)
    }

    /// Drops of both directions by reason, the reasons with none left out.
    pub(crate) fn drops(&self) -> Vec<(DropReason, u64)> {
        let inb = lock(&self.inb);
        let out = lock(&self.out);
        let outbound = out.plane.drop_counters();
        inb.plane
            .drop_counters()
            .iter()
            .map(|(reason, n)| (reason, n.saturating_add(outbound.get(reason))))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Swaps tunnel `index`'s static NAT table in both directions (SIGHUP).
    pub(crate) fn set_static_nat(&self, index: usize, nat: Option<&Arc<StaticNat>>) {
        if let Some(slot) = lock(&self.inb).static_nat.get_mut(index) {
            *slot = nat.cloned();
        }
        if let Some(slot) = lock(&self.out).static_nat.get_mut(index) {
            *slot = nat.cloned();
        }
    }
}

/// What became of one packet read from the TUN device.
#[derive(Debug)]
enum Verdict {
    /// Send `buf[packet]` to `remote` from `local`.
    Send {
        packet: Range<usize>,
        local: SocketAddr,
        remote: SocketAddr,
        encapsulation: Encapsulation,
    },
    /// The policy has no SA yet: tell the IKE loop.
    NoSa(PolicyId),
    /// Too big for the path MTU: ICMP error to the sender; `nat` translated it on the way.
    TooBig {
        inner_mtu: usize,
        nat: Option<Arc<StaticNat>>,
    },
    /// Dropped (counted and logged by the data plane or here).
    Dropped,
    /// Passed static NAT (`nat`, if it translated) and waits for its batch to be sealed;
    /// no packet is left in this state once [`OutState::seal_batch`] returns.
    Sealing { nat: Option<Arc<StaticNat>> },
}

impl Verdict {
    /// The verdict on a packet from the data plane's result; `nat` translated it.
    fn of(result: Result<Outbound, DropError>, nat: Option<Arc<StaticNat>>) -> Self {
        match result {
            Ok(Outbound::Protected(t)) => Self::Send {
                packet: t.packet,
                local: t.local,
                remote: t.remote,
                encapsulation: t.encapsulation,
            },
            Ok(Outbound::Bypass { policy }) => {
                debug!(%policy, "bypass packet on the TUN device dropped: it was routed here by mistake");
                Self::Dropped
            }
            Err(DropError::NoOutboundSa { policy }) => Self::NoSa(policy),
            // The inner packet is unchanged after this error.
            Err(DropError::PacketTooBig { inner_mtu, .. }) => Self::TooBig { inner_mtu, nat },
            Err(_) => Self::Dropped, // counted and logged at debug by the data plane
        }
    }
}

/// What outbound static NAT did with a packet.
enum NatOutcome {
    /// No static NAT subnet covers the destination.
    Untouched,
    /// Translated by this tunnel's table.
    Translated(Arc<StaticNat>),
    /// In a static NAT subnet without an entry, or refused: drop it.
    Drop,
}

impl OutState {
    /// Applies outbound static NAT to each inner packet `bufs[i][MAX_HEADROOM..][..sizes[i]]`
    /// and seals them all in one [`OutboundPlane::encapsulate_batch`]; `verdicts[i]`
    /// (cleared first) is what became of packet `i`. `results` is scratch space kept by
    /// the caller so that a batch does not allocate it.
    fn seal_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &[usize],
        results: &mut Vec<Result<Outbound, DropError>>,
        verdicts: &mut Vec<Verdict>,
    ) {
        verdicts.clear();
        let mut batch: Vec<(&mut [u8], Range<usize>)> = Vec::with_capacity(sizes.len());
        for (buf, &len) in bufs.iter_mut().zip(sizes) {
            let inner = MAX_HEADROOM..MAX_HEADROOM + len;
            // Static NAT first (destination local -> remote), so the SPD sees the real
            // remote host.
            let nat = match buf.get_mut(inner.clone()) {
                Some(packet) => self.static_nat_outbound(packet),
                None => NatOutcome::Drop,
            };
            let nat = match nat {
                NatOutcome::Drop => {
                    verdicts.push(Verdict::Dropped);
                    continue;
                }
                NatOutcome::Untouched => None,
                NatOutcome::Translated(nat) => Some(nat),
            };
            verdicts.push(Verdict::Sealing { nat });
            batch.push((buf.as_mut_slice(), inner));
        }
        self.plane
            .encapsulate_batch(&mut batch, &mut self.rng, results);
        // One result per packet that went into the batch, in order.
        let mut results = results.drain(..);
        for v in verdicts.iter_mut() {
            let Verdict::Sealing { nat } = v else {
                continue;
            };
            let nat = nat.take();
            *v = match results.next() {
                Some(result) => Verdict::of(result, nat),
                None => Verdict::Dropped,
            };
        }
    }

    /// Outbound static NAT of a packet read from the TUN device.
    fn static_nat_outbound(&self, packet: &mut [u8]) -> NatOutcome {
        let Some(dst) = ipv4_destination(packet) else {
            return NatOutcome::Untouched;
        };
        let nat = self
            .static_nat
            .iter()
            .flatten()
            .find(|nat| nat.subnets.iter().any(|s| s.contains_addr(dst)));
        let Some(nat) = nat else {
            return NatOutcome::Untouched;
        };
        match nat.table.translate(ipsec_nat::Direction::Outbound, packet) {
            Ok(t) if t.is_translated() => NatOutcome::Translated(Arc::clone(nat)),
            Ok(_) => {
                debug!(%dst, "no static NAT entry for this destination; packet dropped");
                NatOutcome::Drop
            }
            Err(e) => {
                debug!(%dst, "static NAT refused the packet: {e}");
                NatOutcome::Drop
            }
        }
    }

    /// Moves the outbound half's pending lifetime events into `out` (see [`take_events`]).
    fn take_events(&mut self, out: &mut Vec<DpEvent>) {
        take_events(|| self.plane.poll_event(), out);
    }
}

impl InState {
    /// Inbound static NAT of a decrypted packet of `policy`'s tunnel; false means drop it.
    fn static_nat_inbound(&self, policy: PolicyId, packet: &mut [u8]) -> bool {
        let nat = self
            .by_policy
            .get(&policy)
            .and_then(|&i| self.static_nat.get(i))
            .and_then(Option::as_deref);
        let Some(nat) = nat else { return true };
        if ipv4_destination(packet).is_none() {
            return true;
        }
        match nat.table.translate(ipsec_nat::Direction::Inbound, packet) {
            Ok(_) => true,
            Err(e) => {
                debug!("static NAT refused an inbound packet: {e}");
                false
            }
        }
    }

    /// Checks how an authenticated ESP packet of the pair with `inbound_spi` arrived
    /// (`remote` is the UDP sender, or the raw sender with port 0); false means drop it.
    ///
    /// A pair carries ESP the way it was negotiated (RFC 3947 section 5: encapsulation
    /// mode 3 or 61443 for ESP in UDP, 1 for plain tunnel): a packet in the other
    /// encapsulation is dropped, so that a copy of the peer's traffic raced into UDP 4500
    /// by someone on the path cannot move a raw ESP pair. For ESP in UDP from another
    /// address or port than the pair sends to, the peer's NAT mapping changed: send there
    /// from now on (RFC 3948 section 2.2 leaves following it to the implementation; only
    /// packets that passed the ICV and replay checks get here, so a forged one cannot).
    fn check_arrival(
        &mut self,
        out: &Mutex<OutState>,
        inbound_spi: u32,
        remote: SocketAddr,
    ) -> bool {
        // Raw ESP has no port (we record port 0).
        let via_udp = remote.port() != 0;
        let Some(known) = self.esp_peers.get_mut(&inbound_spi) else {
            return true;
        };
        match (known.encapsulation, via_udp) {
            (Encapsulation::UdpTunnel, true) => {
                if known.addr != remote && lock(out).plane.set_remote(inbound_spi, remote) {
                    info!(inbound_spi = format_args!("{inbound_spi:#010x}"), from = %known.addr,
                        to = %remote, "peer's NAT mapping moved; ESP now goes to the new address");
                    known.addr = remote;
                }
                true
            }
            (Encapsulation::Tunnel, false) => true,
            (negotiated, _) => {
                debug!(inbound_spi = format_args!("{inbound_spi:#010x}"), %remote, ?negotiated,
                    via_udp, "ESP arrived in another encapsulation than its pair's; dropped");
                false
            }
        }
    }

    /// Moves the inbound half's pending lifetime events into `out` (see [`take_events`]).
    fn take_events(&mut self, out: &mut Vec<DpEvent>) {
        take_events(|| self.plane.poll_event(), out);
    }
}

/// Moves a half's pending lifetime events into `out`, bounded by its capacity (the rest
/// stay queued for the next batch). Each half reports its own direction, so a pair whose
/// two directions both cross a limit is reported twice; the endpoint acts once.
fn take_events(mut poll: impl FnMut() -> Option<DpEvent>, out: &mut Vec<DpEvent>) {
    while out.len() < out.capacity() {
        match poll() {
            Some(e) => out.push(e),
            None => break,
        }
    }
}

/// The destination of an IPv4 packet, if it is one.
pub(crate) fn ipv4_destination(packet: &[u8]) -> Option<IpAddr> {
    if packet.first().map(|b| b >> 4) != Some(4) {
        return None;
    }
    let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    Some(IpAddr::from(d))
}

/// Hands lifetime events to the IKE loop.
async fn forward_events(events: &mut Vec<DpEvent>, tx: &mpsc::Sender<Input>) {
    for e in events.drain(..) {
        if tx.send(Input::Lifetime(e)).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------- outbound --

/// The outbound task: TUN -> static NAT -> ESP -> sockets, a TUN read at a time.
pub(crate) async fn outbound(
    tun: Arc<AsyncDevice>,
    shared: Shared,
    sockets: HashMap<IpAddr, OuterSockets>,
    tx: mpsc::Sender<Input>,
) {
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    // vec! of zeroes is calloc: pages no packet reaches are never touched.
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| vec![0u8; MAX_HEADROOM + MAX_PACKET + MAX_TAILROOM])
        .collect();
    let mut sizes = vec![0usize; BATCH];
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(BATCH);
    let mut results = Vec::with_capacity(BATCH);
    let mut events: Vec<DpEvent> = Vec::with_capacity(16);
    let mut sender = EspSender::new(sockets);
    loop {
        let n = match tun
            .recv_multiple(&mut original, &mut bufs, &mut sizes, MAX_HEADROOM)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                recv_error("TUN", &e).await;
                continue;
            }
        };
        verdicts.clear();
        {
            let mut state = lock(&shared.out);
            let (bufs, sizes) = (
                bufs.get_mut(..n).unwrap_or_default(),
                sizes.get(..n).unwrap_or_default(),
            );
            state.seal_batch(bufs, sizes, &mut results, &mut verdicts);
            state.take_events(&mut events);
        }
        sender.send_batch(&bufs, &verdicts).await;
        let mut no_sa: Option<PolicyId> = None;
        for (i, v) in verdicts.iter().enumerate() {
            match v {
                Verdict::NoSa(policy) if no_sa != Some(*policy) => {
                    no_sa = Some(*policy);
                    // Lossy on purpose: a burst without an SA needs one start, not one
                    // message per packet.
                    let _ = tx.try_send(Input::NoOutboundSa(*policy));
                }
                Verdict::TooBig { inner_mtu, nat } => {
                    let len = sizes.get(i).copied().unwrap_or(0);
                    if let Some(packet) = bufs
                        .get(i)
                        .and_then(|b| b.get(MAX_HEADROOM..MAX_HEADROOM + len))
                    {
                        packet_too_big(&tun, packet, *inner_mtu, nat.as_deref()).await;
                    }
                }
                _ => {}
            }
        }
        forward_events(&mut events, &tx).await;
    }
}

/// Sends sealed ESP packets, grouping ESP in UDP for GSO.
struct EspSender {
    sockets: HashMap<IpAddr, OuterSockets>,
    gso: bool,
    gso_failures: u32,
    /// The smallest segment size the kernel refused to send with GSO as too large
    /// (EMSGSIZE: a datagram above the route's MTU, which only fragmentation can carry);
    /// runs of that size or more go one datagram per send, and such refusals do not
    /// count towards switching GSO off.
    gso_too_big: usize,
}

impl EspSender {
    fn new(sockets: HashMap<IpAddr, OuterSockets>) -> Self {
        Self {
            sockets,
            gso: true,
            gso_failures: 0,
            gso_too_big: usize::MAX,
        }
    }

    /// Sends every [`Verdict::Send`] of a batch, in order.
    async fn send_batch(&mut self, bufs: &[Vec<u8>], verdicts: &[Verdict]) {
        let mut i = 0;
        while let Some(v) = verdicts.get(i) {
            let Verdict::Send {
                packet,
                local,
                remote,
                encapsulation,
            } = v
            else {
                i += 1;
                continue;
            };
            let Some(first) = bufs.get(i).and_then(|b| b.get(packet.clone())) else {
                i += 1;
                continue;
            };
            let Some(s) = self.sockets.get(&local.ip()) else {
                debug!(%local, "no socket for ESP source address; packet dropped");
                i += 1;
                continue;
            };
            match encapsulation {
                Encapsulation::Tunnel => {
                    // The run of raw ESP packets from this address (to any peer) goes in
                    // one `sendmmsg`.
                    let mut run: Vec<(&[u8], IpAddr)> =
                        Vec::with_capacity(verdicts.len().saturating_sub(i));
                    let mut j = i;
                    while let Some(Verdict::Send {
                        packet: p,
                        local: l,
                        remote: r,
                        encapsulation: Encapsulation::Tunnel,
                    }) = verdicts.get(j)
                    {
                        if l.ip() != local.ip() {
                            break;
                        }
                        if let Some(data) = bufs.get(j).and_then(|b| b.get(p.clone())) {
                            run.push((data, r.ip()));
                        }
                        j += 1;
                    }
                    match &s.esp {
                        Some(raw) => raw.send_many(&run).await,
                        None => debug!(%remote, packets = run.len(),
                            "raw ESP socket unavailable; packets dropped"),
                    }
                    i = j.max(i + 1);
                }
                Encapsulation::UdpTunnel => {
                    // The run of packets that can share one GSO send: same path, same
                    // length, except that the last may be shorter.
                    let segment = first.len();
                    let mut iov = [IoSlice::new(&[]); GSO_MAX_SEGMENTS];
                    let mut count = 0;
                    let mut total = 0;
                    let mut j = i;
                    while self.gso && segment < self.gso_too_big && count < GSO_MAX_SEGMENTS {
                        let Some(Verdict::Send {
                            packet: p,
                            local: l,
                            remote: r,
                            encapsulation: Encapsulation::UdpTunnel,
                        }) = verdicts.get(j)
                        else {
                            break;
                        };
                        let Some(data) = bufs.get(j).and_then(|b| b.get(p.clone())) else {
                            break;
                        };
                        if l != local || r != remote || data.len() > segment {
                            break;
                        }
                        if total + data.len() > GSO_MAX_BYTES {
                            break;
                        }
                        if let Some(slot) = iov.get_mut(count) {
                            *slot = IoSlice::new(data);
                        }
                        count += 1;
                        total += data.len();
                        j += 1;
                        if data.len() < segment {
                            break;
                        }
                    }
                    if count <= 1 {
                        if let Err(e) = s.natt.send_to(first, *remote).await {
                            debug!(%remote, "sending ESP failed: {e}");
                        }
                        i += 1;
                        continue;
                    }
                    let iov = iov.get(..count).unwrap_or_default();
                    match net::send_gso(&s.natt, iov, segment, *remote).await {
                        Ok(_) => self.gso_failures = 0,
                        Err(e) if e.raw_os_error() == Some(nix::libc::EMSGSIZE) => {
                            self.gso_too_big = self.gso_too_big.min(segment);
                            debug!(%remote, segments = count, segment,
                                "UDP GSO refused this segment size; such runs go one by one: {e}");
                            for data in iov {
                                if let Err(e) = s.natt.send_to(data, *remote).await {
                                    debug!(%remote, "sending ESP failed: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            self.gso_failures += 1;
                            debug!(%remote, segments = count, segment,
                                "UDP GSO send failed, sending one by one: {e}");
                            if self.gso_failures >= GSO_MAX_FAILURES {
                                info!("UDP GSO keeps failing ({e}); ESP in UDP goes one datagram per send from now on");
                                self.gso = false;
                            }
                            for data in iov {
                                if let Err(e) = s.natt.send_to(data, *remote).await {
                                    debug!(%remote, "sending ESP failed: {e}");
                                }
                            }
                        }
                    }
                    i = j;
                }
            }
        }
    }
}

/// Path MTU discovery through the tunnel: `packet` (an inner packet with DF set, or
/// IPv6) does not fit the path MTU once sealed, so the sender gets an ICMP
/// "fragmentation needed" (RFC 1191) or ICMPv6 "packet too big" (RFC 4443) with
/// `inner_mtu`, written into the TUN device ([`crate::icmp`]). When outbound static
/// NAT translated the packet, the error is translated back the way a reply would be.
async fn packet_too_big(
    tun: &AsyncDevice,
    packet: &[u8],
    inner_mtu: usize,
    nat: Option<&StaticNat>,
) {
    let error = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let mtu = u16::try_from(inner_mtu).unwrap_or(u16::MAX);
            crate::icmp::frag_needed_v4(packet, mtu)
        }
        Some(6) => {
            // RFC 8200 section 5: IPv6 links carry at least 1280 bytes.
            let mtu = u32::try_from(inner_mtu).unwrap_or(u32::MAX).max(1280);
            crate::icmp::packet_too_big_v6(packet, mtu)
        }
        _ => None,
    };
    let Some(mut error) = error else {
        return;
    };
    if let Some(nat) = nat {
        if let Err(e) = nat
            .table
            .translate(ipsec_nat::Direction::Inbound, &mut error)
        {
            debug!("static NAT refused our ICMP error; not sent: {e}");
            return;
        }
    }
    debug!(
        inner_mtu,
        "inner packet too big for the path MTU: ICMP error to its sender"
    );
    if let Err(e) = send_tun_one(tun, &error).await {
        debug!("TUN write of the ICMP error failed: {e}");
    }
}

/// Writes one packet to the TUN device, behind the empty virtio header the device expects
/// (no offload asked for that packet).
pub(crate) async fn send_tun_one(tun: &AsyncDevice, packet: &[u8]) -> std::io::Result<usize> {
    let mut framed = vec![0u8; VIRTIO_NET_HDR_LEN];
    framed.extend_from_slice(packet);
    tun.send(&framed).await
}

// ----------------------------------------------------------------------------- inbound --

/// Decrypted packets waiting for one batched write to the TUN device.
struct TunWriter {
    /// Each holds a virtio header's room, then one packet (after GRO: a coalesced one).
    bufs: Vec<Vec<u8>>,
    count: usize,
    gro: GROTable,
    /// Inbound SPIs that carried traffic in this batch (for DPD), without repeats.
    spis: [u32; SPIS_PER_BATCH],
    spi_count: usize,
    events: Vec<DpEvent>,
}

impl TunWriter {
    fn new() -> Self {
        Self {
            // Room for GRO to coalesce up to 64 KiB behind the first packet of a flow.
            bufs: (0..BATCH)
                .map(|_| Vec::with_capacity(2 * VIRTIO_NET_HDR_LEN + MAX_PACKET))
                .collect(),
            count: 0,
            gro: GROTable::new(),
            spis: [0; SPIS_PER_BATCH],
            spi_count: 0,
            events: Vec::with_capacity(16),
        }
    }

    /// Whether another receive could overflow the batch (a GRO receive holds up to 64
    /// datagrams).
    fn nearly_full(&self) -> bool {
        self.count + GSO_MAX_SEGMENTS > BATCH
    }

    /// Opens the ESP packet `esp` from `remote`; a packet that passes every check joins the
    /// batch.
    fn push(
        &mut self,
        state: &mut InState,
        out: &Mutex<OutState>,
        esp: &mut [u8],
        remote: SocketAddr,
    ) {
        let inbound = match state.plane.decapsulate(esp) {
            Ok(inbound) => inbound,
            // Counted and logged at debug by the data plane.
            Err(e) => {
                trace!(%remote, "ESP dropped: {e}");
                return;
            }
        };
        if !state.check_arrival(out, inbound.spi, remote) {
            return;
        }
        let seen = self.spis.get(..self.spi_count).unwrap_or_default();
        if !seen.contains(&inbound.spi) {
            if let Some(slot) = self.spis.get_mut(self.spi_count) {
                *slot = inbound.spi;
                self.spi_count += 1;
            }
        }
        let Some(inner) = esp.get(inbound.inner) else {
            return;
        };
        let Some(buf) = self.bufs.get_mut(self.count) else {
            return;
        };
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(inner);
        // Static NAT after the selector check (source remote -> local).
        let Some(packet) = buf.get_mut(VIRTIO_NET_HDR_LEN..) else {
            return;
        };
        if state.static_nat_inbound(inbound.policy, packet) {
            self.count += 1;
        }
    }

    /// Writes the batch to the TUN device and reports to the IKE loop.
    async fn flush(&mut self, tun: &AsyncDevice, tx: &mpsc::Sender<Input>) {
        if self.count > 0 {
            let bufs = self.bufs.get_mut(..self.count).unwrap_or_default();
            if let Err(e) = tun
                .send_multiple(&mut self.gro, bufs, VIRTIO_NET_HDR_LEN)
                .await
            {
                debug!("TUN write failed: {e}");
            }
            self.count = 0;
        }
        for &spi in self.spis.get(..self.spi_count).unwrap_or_default() {
            // Lossy on purpose: DPD needs to hear of traffic now and then, not per batch.
            let _ = tx.try_send(Input::TrafficSeen(spi));
        }
        self.spi_count = 0;
        forward_events(&mut self.events, tx).await;
    }
}

/// The inbound task of one UDP 4500 socket: GRO receive, RFC 3948 classification, ESP
/// opened into the TUN device, IKE to the loop.
pub(crate) async fn inbound_udp(
    socket: Arc<tokio::net::UdpSocket>,
    addr: IpAddr,
    tun: Arc<AsyncDevice>,
    shared: Shared,
    tx: mpsc::Sender<Input>,
) {
    let local = SocketAddr::new(addr, NATT_PORT);
    net::enable_gro(&socket);
    let mut buf = vec![0u8; MAX_PACKET];
    let mut receiver = net::GroReceiver::new();
    let mut writer = TunWriter::new();
    let mut ike: Vec<Input> = Vec::with_capacity(4);
    loop {
        // Wait for the first read of a batch, then take what is already queued.
        let mut got = match receiver.recv(&socket, &mut buf).await {
            Ok(got) => Some(got),
            Err(e) => {
                recv_error("UDP 4500", &e).await;
                continue;
            }
        };
        while let Some((len, stride, remote)) = got {
            {
                let mut state = lock(&shared.inb);
                let datagrams = buf.get_mut(..len).unwrap_or_default();
                for datagram in datagrams.chunks_mut(stride.max(1)) {
                    // RFC 3948 section 2: marker -> IKE, 0xFF -> keepalive, else ESP.
                    match dp_natt::classify(datagram) {
                        Ok(Udp4500::Esp(_)) => {
                            // The ESP packet is the whole datagram (classify only looked).
                            writer.push(&mut state, &shared.out, datagram, remote);
                        }
                        Ok(Udp4500::Ike(message)) => ike.push(Input::Ike {
                            local,
                            remote,
                            data: message.to_vec(),
                        }),
                        Ok(Udp4500::Keepalive) => trace!(%remote, "NAT-keepalive received"),
                        Err(e) => {
                            debug!(%remote, len = datagram.len(), "UDP 4500 datagram dropped: {e}");
                        }
                    }
                }
                state.take_events(&mut writer.events);
            }
            for input in ike.drain(..) {
                if tx.send(input).await.is_err() {
                    return;
                }
            }
            got = if writer.nearly_full() {
                None
            } else {
                receiver.try_recv(&socket, &mut buf).ok()
            };
        }
        writer.flush(&tun, &tx).await;
    }
}

/// The inbound task of one raw ESP socket: up to a GRO receive's worth of packets per
/// `recvmmsg`, opened into the TUN device, written in batches of what was queued.
pub(crate) async fn inbound_raw(
    socket: Arc<net::RawEsp>,
    tun: Arc<AsyncDevice>,
    shared: Shared,
    tx: mpsc::Sender<Input>,
) {
    // As many buffers as a UDP GRO receive holds datagrams, so that `TunWriter`'s batch
    // bound works alike for both. vec! of zeroes is calloc: pages no packet reaches are
    // never touched.
    let mut bufs: Vec<Vec<u8>> = (0..GSO_MAX_SEGMENTS)
        .map(|_| vec![0u8; MAX_PACKET])
        .collect();
    let mut got: Vec<net::RawReceived> = Vec::with_capacity(GSO_MAX_SEGMENTS);
    let mut writer = TunWriter::new();
    loop {
        let mut received = match socket.recv_many(&mut bufs, &mut got).await {
            Ok(n) => n,
            Err(e) => {
                recv_error("raw ESP", &e).await;
                continue;
            }
        };
        loop {
            {
                let mut state = lock(&shared.inb);
                for r in &got {
                    if let Some(esp) = bufs.get_mut(r.index).and_then(|b| b.get_mut(r.esp.clone()))
                    {
                        writer.push(&mut state, &shared.out, esp, SocketAddr::new(r.from, 0));
                    }
                }
                state.take_events(&mut writer.events);
            }
            // A full read means more may be queued: take it before writing, unless the
            // batch could overflow.
            if received < bufs.len() || writer.nearly_full() {
                break;
            }
            match socket.try_recv_many(&mut bufs, &mut got) {
                Ok(n) if n > 0 => received = n,
                _ => break,
            }
        }
        writer.flush(&tun, &tx).await;
    }
}

/// A receive error: logged, then a short pause so a persistent error cannot spin the CPU.
pub(crate) async fn recv_error(what: &str, e: &std::io::Error) {
    debug!("{what} receive error: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm, SecretBytes};
    use ipsec_sa::child::{EspSaKeys, Lifetime};
    use ipsec_sa::dataplane::{DataPlane, DataPlaneConfig, Policy, PolicyAction};
    use ipsec_sa::selector::TrafficSelector;
    use rand_core::SeedableRng as _;

    fn cidr(a: [u8; 4], len: u8) -> TrafficSelector {
        TrafficSelector::from_cidr(IpAddr::from(a), len).unwrap()
    }

    fn esp_keys(spi: u32, seed: u8) -> EspSaKeys {
        EspSaKeys {
            spi,
            encryption: EncryptionAlgorithm::AesCbc128,
            encryption_key: SecretBytes::new((0..16u8).map(|i| i ^ seed).collect()),
            integrity: IntegrityAlgorithm::HmacSha1_96,
            integrity_key: SecretBytes::new((0..20u8).map(|i| i ^ seed ^ 0x55).collect()),
        }
    }

    /// Our pair for 10.1/24 <-> 10.2/24 in UDP with these SPIs, AES-128/SHA-1.
    fn test_pair(inbound_spi: u32, outbound_spi: u32) -> ChildSaPair {
        ChildSaPair {
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "192.0.2.2:4500".parse().unwrap(),
            inbound: esp_keys(inbound_spi, 1),
            outbound: esp_keys(outbound_spi, 2),
            local_ts: cidr([10, 1, 0, 0], 24),
            remote_ts: cidr([10, 2, 0, 0], 24),
            encapsulation: Encapsulation::UdpTunnel,
            hard_lifetime: Lifetime::default(),
        }
    }

    /// The peer's data plane holding the mirror image of `pair`.
    fn peer_of(pair: &ChildSaPair) -> DataPlane {
        let mut peer = DataPlane::new(DataPlaneConfig::default());
        peer.add_policy(Policy {
            local: pair.remote_ts,
            remote: pair.local_ts,
            action: PolicyAction::Protect,
            priority: 10,
        });
        let mirror = ChildSaPair {
            local: pair.remote,
            remote: pair.local,
            inbound: pair.outbound.clone(),
            outbound: pair.inbound.clone(),
            local_ts: pair.remote_ts,
            remote_ts: pair.local_ts,
            encapsulation: pair.encapsulation,
            hard_lifetime: Lifetime::default(),
        };
        peer.install(&mirror).unwrap();
        peer
    }

    /// An IPv4 UDP packet of `len` bytes from 10.1.0.10 to `dst`, DF set.
    fn udp(dst: [u8; 4], len: usize) -> Vec<u8> {
        udp_from([10, 1, 0, 10], dst, len)
    }

    /// An IPv4 UDP packet of `len` bytes from `src` to `dst`, DF set.
    fn udp_from(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 0, 0, 0]);
        p.resize(len, 0x5a);
        let total = u16::try_from(len).unwrap().to_be_bytes();
        p[2..4].copy_from_slice(&total);
        let udp_len = u16::try_from(len - 20).unwrap().to_be_bytes();
        p[24..26].copy_from_slice(&udp_len);
        let mut sum = 0u32;
        for w in p[..20].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let check = !u16::try_from(sum).unwrap();
        p[10..12].copy_from_slice(&check.to_be_bytes());
        p
    }

    /// The outbound task's sealing of one TUN read: static NAT drops and translations, no
    /// policy, no SA, too big for the path MTU (with and without NAT) and sealed packets
    /// mixed in one batch each get their own verdict, in order, and what is sent opens at
    /// the peer into the (translated) packet.
    #[test]
    fn seal_batch_gives_each_packet_its_own_verdict() {
        let config = DataPlaneConfig {
            default_path_mtu: Some(1500),
            ..DataPlaneConfig::default()
        };
        let pair = test_pair(0xc000_0001, 0xd000_0001);
        let mut plane = OutboundPlane::new(config);
        let protected = |remote| Policy {
            local: cidr([10, 1, 0, 0], 24),
            remote,
            action: PolicyAction::Protect,
            priority: 10,
        };
        plane.add_policy(protected(cidr([10, 2, 0, 0], 24)));
        let no_sa_policy = plane.add_policy(protected(cidr([10, 3, 0, 0], 24)));
        plane.install(&pair).unwrap();
        let nat_subnet = ipsec_nat::Ipv4Subnet::new([10, 1, 255, 88].into(), 29).unwrap();
        let remote_subnet = ipsec_nat::Ipv4Subnet::new([10, 2, 0, 0].into(), 24).unwrap();
        let table = ipsec_nat::NatTable::new(
            vec![ipsec_nat::NatEntry::new(
                "web",
                [10, 1, 255, 92].into(),
                [10, 2, 0, 15].into(),
            )],
            &[nat_subnet],
            &[remote_subnet],
        )
        .unwrap();
        let nat = Arc::new(StaticNat {
            subnets: vec![cidr([10, 1, 255, 88], 29)],
            table: Arc::new(table),
        });
        let mut state = OutState {
            plane,
            rng: ChaCha20Rng::seed_from_u64(1),
            static_nat: vec![Some(Arc::clone(&nat))],
        };

        // AES-128/SHA-1 in UDP under a 1500-byte path: inner packets up to 1422 bytes.
        let inners = [
            udp([10, 2, 0, 5], 100),     // 0: sealed
            udp([10, 1, 255, 90], 100),  // 1: static NAT subnet, no entry: dropped
            udp([10, 1, 255, 92], 300),  // 2: translated to 10.2.0.15, sealed
            udp([10, 3, 0, 1], 100),     // 3: policy without SA
            udp([10, 2, 0, 6], 1423),    // 4: too big
            udp([10, 1, 255, 92], 1423), // 5: translated, too big
            udp([10, 7, 0, 1], 100),     // 6: no policy: dropped
            udp([10, 2, 0, 7], 1422),    // 7: sealed, just fits
        ];
        let mut bufs: Vec<Vec<u8>> = inners
            .iter()
            .map(|p| {
                let mut b = vec![0u8; MAX_HEADROOM + 1500 + MAX_TAILROOM];
                b[MAX_HEADROOM..MAX_HEADROOM + p.len()].copy_from_slice(p);
                b
            })
            .collect();
        let sizes: Vec<usize> = inners.iter().map(Vec::len).collect();
        let mut results = Vec::new();
        let mut verdicts: Vec<Verdict> = (0..3).map(|_| Verdict::Dropped).collect();
        state.seal_batch(&mut bufs, &sizes, &mut results, &mut verdicts);

        let kinds: Vec<String> = verdicts
            .iter()
            .map(|v| match v {
                Verdict::Send { .. } => "send".to_owned(),
                Verdict::NoSa(p) => format!("no-sa {p}"),
                Verdict::TooBig { inner_mtu, nat } => {
                    format!("too-big {inner_mtu} nat={}", nat.is_some())
                }
                Verdict::Dropped => "dropped".to_owned(),
                Verdict::Sealing { .. } => "sealing".to_owned(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "send".to_owned(),
                "dropped".to_owned(),
                "send".to_owned(),
                format!("no-sa {no_sa_policy}"),
                "too-big 1422 nat=false".to_owned(),
                "too-big 1422 nat=true".to_owned(),
                "dropped".to_owned(),
                "send".to_owned(),
            ]
        );
        assert_eq!(state.plane.drop_counters().total(), 4);

        let mut peer = peer_of(&pair);
        let mut opened = Vec::new();
        for (i, v) in verdicts.iter().enumerate() {
            let Verdict::Send {
                packet,
                local,
                remote,
                encapsulation,
            } = v
            else {
                continue;
            };
            assert_eq!(
                (*local, *remote, *encapsulation),
                (pair.local, pair.remote, Encapsulation::UdpTunnel)
            );
            let mut esp = bufs[i][packet.clone()].to_vec();
            let inbound = peer.decapsulate(&mut esp).unwrap();
            let inner = esp[inbound.inner].to_vec();
            opened.push((i, inner[16..20].to_vec(), inner.len()));
        }
        assert_eq!(
            opened,
            vec![
                (0, vec![10, 2, 0, 5], 100),
                (2, vec![10, 2, 0, 15], 300),
                (7, vec![10, 2, 0, 7], 1422)
            ]
        );
        // The too-big packets are still in place, translated, for the ICMP error.
        assert_eq!(
            bufs[5][MAX_HEADROOM + 16..MAX_HEADROOM + 20],
            [10, 2, 0, 15]
        );
        assert_eq!(bufs[4][MAX_HEADROOM..MAX_HEADROOM + 1423], inners[4][..]);
    }

    #[test]
    fn ipv4_destination_reads_the_header() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        assert_eq!(ipv4_destination(&p), Some(IpAddr::from([10, 2, 0, 10])));
        p[0] = 0x60;
        assert_eq!(ipv4_destination(&p), None);
        assert_eq!(ipv4_destination(&p[..10]), None);
    }

    /// Shared state with a PROTECT policy for 10.1/24 <-> 10.2/24 and `pair` installed.
    fn shared_with(pair: &ChildSaPair) -> Shared {
        let mut plane = OutboundPlane::new(DataPlaneConfig::default());
        plane.add_policy(Policy {
            local: cidr([10, 1, 0, 0], 24),
            remote: cidr([10, 2, 0, 0], 24),
            action: PolicyAction::Protect,
            priority: 10,
        });
        let shared: Shared = Arc::new(DataShared {
            out: Mutex::new(OutState {
                plane,
                rng: ChaCha20Rng::seed_from_u64(2),
                static_nat: vec![None],
            }),
            inb: Mutex::new(InState {
                plane: InboundPlane::new(DataPlaneConfig::default()),
                esp_peers: HashMap::new(),
                static_nat: vec![None],
                by_policy: HashMap::new(),
            }),
        });
        shared.install(pair, None).unwrap();
        shared
    }

    /// ESP the peer sealed for `pair`, `count` packets.
    fn from_peer(pair: &ChildSaPair, count: usize) -> Vec<Vec<u8>> {
        let mut peer = peer_of(pair);
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        (0..count)
            .map(|_| {
                let inner = udp_from([10, 2, 0, 10], [10, 1, 0, 10], 100);
                let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
                buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(&inner);
                let range = MAX_HEADROOM..MAX_HEADROOM + inner.len();
                let Ok(Outbound::Protected(t)) = peer.encapsulate(&mut buf, range, &mut rng) else {
                    panic!("peer could not seal");
                };
                buf[t.packet].to_vec()
            })
            .collect()
    }

    /// A pair takes ESP only in the encapsulation it was negotiated with: a raw ESP pair
    /// ignores (and is not moved by) an authentic packet that arrives in UDP 4500 from
    /// elsewhere, an ESP-in-UDP pair ignores one that arrives as protocol 50, and each
    /// accepts its own kind; an ESP-in-UDP pair follows a new source port.
    #[test]
    fn esp_in_the_wrong_encapsulation_is_dropped_and_moves_nothing() {
        let elsewhere = SocketAddr::new(IpAddr::from([203, 0, 113, 9]), 4500);
        let raw_from_peer = SocketAddr::new(IpAddr::from([192, 0, 2, 2]), 0);
        for encapsulation in [Encapsulation::Tunnel, Encapsulation::UdpTunnel] {
            let mut pair = test_pair(0xc000_0001, 0xd000_0001);
            pair.encapsulation = encapsulation;
            let shared = shared_with(&pair);
            let mut esp = from_peer(&pair, 3).into_iter();
            let (wrong, right) = match encapsulation {
                Encapsulation::Tunnel => (elsewhere, raw_from_peer),
                Encapsulation::UdpTunnel => (raw_from_peer, elsewhere),
            };
            let mut writer = TunWriter::new();
            let mut push = |packet: &mut Vec<u8>, from: SocketAddr| {
                let mut state = lock(&shared.inb);
                writer.push(&mut state, &shared.out, packet, from);
                std::mem::replace(&mut writer.count, 0)
            };
            assert_eq!(
                push(&mut esp.next().unwrap(), wrong),
                0,
                "{encapsulation:?}"
            );
            let remote = shared.pair_stats(0xc000_0001).unwrap().remote;
            assert_eq!(
                remote, pair.remote,
                "{encapsulation:?}: moved by the wrong kind"
            );
            assert_eq!(
                push(&mut esp.next().unwrap(), right),
                1,
                "{encapsulation:?}"
            );
            let remote = shared.pair_stats(0xc000_0001).unwrap().remote;
            let expected = match encapsulation {
                Encapsulation::Tunnel => pair.remote,
                Encapsulation::UdpTunnel => elsewhere,
            };
            assert_eq!(remote, expected, "{encapsulation:?}");
        }
    }

    /// The IKE loop, the outbound task and an inbound task following a NAT rebinding on
    /// every packet (so it takes `out` while holding `inb`) work on one `DataShared` from
    /// three threads at once, the IKE side installing and removing pairs and reading
    /// status all the while: nobody deadlocks, and every packet is accounted for.
    #[test]
    fn lock_order_holds_under_three_threads() {
        const ROUNDS: u32 = 300;
        let pair = test_pair(0xc000_0001, 0xd000_0001);
        let shared = shared_with(&pair);

        // What the peer sends us, sealed beforehand.
        let inbound = from_peer(&pair, ROUNDS as usize);

        let (done_tx, done_rx) = std::sync::mpsc::channel::<&'static str>();
        let outbound_task = {
            let shared = Arc::clone(&shared);
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let mut bufs: Vec<Vec<u8>> = (0..16)
                    .map(|_| vec![0u8; MAX_HEADROOM + 300 + MAX_TAILROOM])
                    .collect();
                let inner = udp([10, 2, 0, 5], 200);
                let sizes = vec![inner.len(); 16];
                let mut results = Vec::new();
                let mut verdicts = Vec::new();
                let mut sent = 0u64;
                for _ in 0..ROUNDS {
                    for b in &mut bufs {
                        b[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(&inner);
                    }
                    lock(&shared.out).seal_batch(&mut bufs, &sizes, &mut results, &mut verdicts);
                    sent += verdicts
                        .iter()
                        .filter(|v| matches!(v, Verdict::Send { .. }))
                        .count() as u64;
                }
                let _ = done.send("outbound");
                sent
            })
        };
        let inbound_task = {
            let shared = Arc::clone(&shared);
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let mut writer = TunWriter::new();
                for (i, mut esp) in inbound.into_iter().enumerate() {
                    // A new source port on every packet: a rebinding each time.
                    let port = 40_000 + u16::try_from(i % 2).unwrap();
                    let remote = SocketAddr::new(IpAddr::from([192, 0, 2, 2]), port);
                    let mut state = lock(&shared.inb);
                    writer.push(&mut state, &shared.out, &mut esp, remote);
                    drop(state);
                    writer.count = 0;
                }
                let _ = done.send("inbound");
            })
        };
        let ike = {
            let shared = Arc::clone(&shared);
            let done = done_tx;
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let fresh = test_pair(0xc100_0000 + i, 0xd100_0000 + i);
                    shared.install(&fresh, None).unwrap();
                    assert!(shared.pair_stats(0xc100_0000 + i).is_some());
                    let _ = shared.drops();
                    shared.set_static_nat(0, None);
                    assert!(shared.remove_pair(0xc100_0000 + i));
                }
                let _ = done.send("ike");
            })
        };
        let mut finished = Vec::new();
        for _ in 0..3 {
            match done_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(who) => finished.push(who),
                Err(_) => panic!("deadlock: only {finished:?} finished"),
            }
        }
        ike.join().unwrap();
        inbound_task.join().unwrap();
        let sent = outbound_task.join().unwrap();
        assert_eq!(sent, u64::from(ROUNDS) * 16);

        let stats = shared.pair_stats(0xc000_0001).unwrap();
        assert_eq!(stats.inbound.packets, u64::from(ROUNDS));
        assert_eq!(stats.drops.total(), 0);
        // The last rebinding stands in both halves.
        let last = SocketAddr::new(IpAddr::from([192, 0, 2, 2]), 40_001);
        assert_eq!(stats.remote, last);
        assert_eq!(
            lock(&shared.inb)
                .esp_peers
                .get(&0xc000_0001)
                .map(|p| p.addr),
            Some(last)
        );
        // The pairs the IKE side added and removed left nothing behind in either half.
        assert!(lock(&shared.out).plane.contains(0xc000_0001));
        assert!((0..ROUNDS).all(|i| {
            !lock(&shared.inb).plane.contains(0xc100_0000 + i)
                && !lock(&shared.out).plane.contains(0xc100_0000 + i)
        }));
        assert!(shared.drops().is_empty());
    }
}
