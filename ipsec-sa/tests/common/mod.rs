//! The two-peer harness of the endpoint tests: two `Endpoint`s with seeded RNGs (left at
//! 192.0.2.1 initiates, right at 192.0.2.2 answers) joined by a simulated network in
//! virtual time: a fixed one-way latency (zero for lockstep), an optional NAT in front of
//! the left side, and a filter that may drop, duplicate, corrupt or add datagrams by their
//! sequence number. Optionally it captures the endpoints' `tracing` output, where every
//! dropped input is reported with its reason.
//!
//! Each test file compiles this module on its own (`mod common;`) and uses part of it.

#![allow(
    dead_code,
    reason = "each test file that includes this module uses a different part of it"
)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipsec_crypto::SecretBytes;
use ipsec_sa::child::ChildSaPair;
use ipsec_sa::endpoint::{Endpoint, EndpointConfig, Event, TunnelConfig, TunnelId, TunnelState};
use ipsec_sa::selector::TrafficSelector;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// One-way latency of [`Net::new`] and [`Net::with_config`].
pub(crate) const LATENCY: Duration = Duration::from_millis(5);

/// Datagrams one run may deliver: a message storm (two endpoints answering each other
/// forever) fails the test in about a second instead of eating the machine's memory.
const MAX_DATAGRAMS_PER_RUN: usize = 10_000;

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn subnet(s: &str, len: u8) -> TrafficSelector {
    TrafficSelector::from_cidr(s.parse().unwrap(), len).unwrap()
}

/// Left: 192.0.2.1, protects 10.1.0.0/24. Right: 192.0.2.2, protects 10.2.0.0/24.
pub(crate) fn tunnels(psk_left: &str, psk_right: &str) -> (TunnelConfig, TunnelConfig) {
    let left = TunnelConfig::new(
        "left",
        addr("192.0.2.1:500"),
        addr("192.0.2.2:500"),
        SecretBytes::from_slice(psk_left.as_bytes()),
        subnet("10.1.0.0", 24),
        subnet("10.2.0.0", 24),
    );
    let right = TunnelConfig::new(
        "right",
        addr("192.0.2.2:500"),
        addr("192.0.2.1:500"),
        SecretBytes::from_slice(psk_right.as_bytes()),
        subnet("10.2.0.0", 24),
        subnet("10.1.0.0", 24),
    );
    (left, right)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

impl Side {
    pub(crate) fn other(self) -> Self {
        match self {
            Self::Left => Self::Right,
            Self::Right => Self::Left,
        }
    }
}

/// A datagram as its sender handed it over (before the NAT).
pub(crate) struct Sent {
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) non_esp_marker: bool,
    pub(crate) payload: Vec<u8>,
}

pub(crate) struct Peer {
    pub(crate) ep: Endpoint,
    pub(crate) tunnel: TunnelId,
    /// The tunnel's configured local address.
    pub(crate) addr: SocketAddr,
    pub(crate) events: Vec<Event>,
    pub(crate) sent: Vec<Sent>,
}

impl Peer {
    fn new(config: &EndpointConfig, tunnel: TunnelConfig, seed: u64) -> Self {
        let addr = tunnel.local_addr;
        let mut ep = Endpoint::new(config.clone(), Box::new(ChaCha20Rng::seed_from_u64(seed)));
        let tunnel = ep.add_tunnel(tunnel).unwrap();
        Self {
            ep,
            tunnel,
            addr,
            events: Vec::new(),
            sent: Vec::new(),
        }
    }

    pub(crate) fn state(&self) -> TunnelState {
        self.ep.tunnel_state(self.tunnel)
    }
}

/// Every datagram sent so far, in order, with its sender.
#[derive(Default)]
pub(crate) struct Wire(pub(crate) Vec<(Side, Vec<u8>)>);

/// Decides what the network delivers for the n-th datagram (1-based, both directions):
/// nothing, it, copies, or others; it sees what went on the wire before.
pub(crate) type Filter = Box<dyn FnMut(usize, Side, &[u8], &Wire) -> Vec<Vec<u8>>>;

/// A filter that drops a datagram when `rule(sender, k)` holds, `k` counting the sender's
/// datagrams from 1, and delivers the others once.
pub(crate) fn drop_when(rule: impl Fn(Side, usize) -> bool + 'static) -> Filter {
    Box::new(move |_, side, d, wire| {
        let k = wire.0.iter().filter(|(s, _)| *s == side).count();
        if rule(side, k) {
            vec![]
        } else {
            vec![d.to_vec()]
        }
    })
}

/// Private and public addresses of a NAT in front of the left side: (private 500, public
/// 500, private 4500, public 4500).
pub(crate) type Nat = (SocketAddr, SocketAddr, SocketAddr, SocketAddr);

struct Datagram {
    at: Instant,
    to: Side,
    /// As the receiver sees them.
    local: SocketAddr,
    remote: SocketAddr,
    payload: Vec<u8>,
}

pub(crate) struct Net {
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) left: Peer,
    pub(crate) right: Peer,
    latency: Duration,
    queue: VecDeque<Datagram>,
    /// A NAT in front of the left side.
    pub(crate) nat: Option<Nat>,
    pub(crate) wire: Wire,
    pub(crate) filter: Filter,
    /// What the endpoints logged, if [`Net::lockstep`] made this net.
    pub(crate) logs: Logs,
    _guard: Option<tracing::subscriber::DefaultGuard>,
}

impl Net {
    /// Default endpoint configuration, [`LATENCY`] each way, logs not captured.
    pub(crate) fn new(left: TunnelConfig, right: TunnelConfig, seed: u64) -> Self {
        Self::with_config(left, right, seed, EndpointConfig::default())
    }

    pub(crate) fn with_config(
        left: TunnelConfig,
        right: TunnelConfig,
        seed: u64,
        config: EndpointConfig,
    ) -> Self {
        Self::build(left, right, seed, &config, LATENCY, None)
    }

    /// Messages arrive at once (each run delivers everything in flight before the next
    /// timer), and the endpoints' `tracing` events are captured in [`Net::logs`] while
    /// the net lives.
    pub(crate) fn lockstep(
        left: TunnelConfig,
        right: TunnelConfig,
        seed: u64,
        config: EndpointConfig,
    ) -> Self {
        let logs = Logs::default();
        let guard = tracing::subscriber::set_default(logs.clone());
        let mut net = Self::build(left, right, seed, &config, Duration::ZERO, Some(guard));
        net.logs = logs;
        net
    }

    /// The left side's RNG is seeded with `seed`, the right side's with `seed + 1000`.
    fn build(
        left: TunnelConfig,
        right: TunnelConfig,
        seed: u64,
        config: &EndpointConfig,
        latency: Duration,
        guard: Option<tracing::subscriber::DefaultGuard>,
    ) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            left: Peer::new(config, left, seed),
            right: Peer::new(config, right, seed + 1000),
            latency,
            queue: VecDeque::new(),
            nat: None,
            wire: Wire::default(),
            filter: Box::new(|_, _, d, _| vec![d.to_vec()]),
            logs: Logs::default(),
            _guard: guard,
        }
    }

    /// Puts the left side behind a NAT at 198.51.100.254 that maps its ports 500 and 4500
    /// to 40001 and 40002. The right side's tunnel must name 198.51.100.254:500 as its
    /// remote address.
    pub(crate) fn nat_in_front_of_left(&mut self) {
        self.nat = Some((
            addr("192.0.2.1:500"),
            addr("198.51.100.254:40001"),
            addr("192.0.2.1:4500"),
            addr("198.51.100.254:40002"),
        ));
    }

    pub(crate) fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        }
    }

    pub(crate) fn state(&self, side: Side) -> TunnelState {
        match side {
            Side::Left => self.left.state(),
            Side::Right => self.right.state(),
        }
    }

    /// Moves every pending transmit into the network (through the NAT and the filter)
    /// and every event into the log.
    fn collect(&mut self) {
        for side in [Side::Left, Side::Right] {
            while let Some(t) = self.peer(side).ep.poll_transmit() {
                let keepalive = t.payload == [0xff];
                assert_eq!(
                    t.non_esp_marker,
                    t.local.port() == 4500 && !keepalive,
                    "the non-ESP marker goes with IKE on port 4500"
                );
                let (mut src, dst) = (t.local, t.remote);
                let mut dst_seen = dst;
                if let Some((private500, public500, private4500, public4500)) = self.nat {
                    match side {
                        Side::Left if src == private500 => src = public500,
                        Side::Left if src == private4500 => src = public4500,
                        Side::Right if dst == public500 => dst_seen = private500,
                        Side::Right if dst == public4500 => dst_seen = private4500,
                        _ => {}
                    }
                }
                self.wire.0.push((side, t.payload.clone()));
                let n = self.wire.0.len();
                for payload in (self.filter)(n, side, &t.payload, &self.wire) {
                    self.queue.push_back(Datagram {
                        at: self.now + self.latency,
                        to: side.other(),
                        local: dst_seen,
                        remote: src,
                        payload,
                    });
                }
                self.peer(side).sent.push(Sent {
                    local: t.local,
                    remote: t.remote,
                    non_esp_marker: t.non_esp_marker,
                    payload: t.payload,
                });
            }
            while let Some(e) = self.peer(side).ep.poll_event() {
                self.peer(side).events.push(e);
            }
        }
    }

    /// Delivers `datagram` to `to` now, as if the other side sent it from its
    /// configured address.
    pub(crate) fn deliver(&mut self, to: Side, datagram: &[u8]) {
        let from = self.peer(to.other()).addr;
        let (now, local) = (self.now, self.peer(to).addr);
        self.peer(to).ep.handle_datagram(now, local, from, datagram);
    }

    /// Delivers datagrams when they arrive and fires timers when due, until nothing is
    /// in flight and no timer is due by `end`; `now` stays at the last thing that happened.
    fn run_to(&mut self, end: Instant) {
        let mut budget = MAX_DATAGRAMS_PER_RUN;
        loop {
            self.collect();
            let timer = [self.left.ep.poll_timeout(), self.right.ep.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next_packet = self.queue.front().map(|d| d.at);
            let next = match (next_packet, timer) {
                (Some(p), Some(t)) => p.min(t),
                (Some(p), None) => p,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if next_packet == Some(next) {
                budget -= 1;
                assert!(
                    budget > 0,
                    "message storm: {MAX_DATAGRAMS_PER_RUN} datagrams in one run"
                );
                let d = self.queue.pop_front().unwrap();
                self.peer(d.to)
                    .ep
                    .handle_datagram(now, d.local, d.remote, &d.payload);
            } else {
                self.left.ep.handle_timeout(now);
                self.right.ep.handle_timeout(now);
            }
        }
    }

    /// Runs until `since_start` after the net was made (see [`Net::run_to`]).
    pub(crate) fn run_until(&mut self, since_start: Duration) {
        self.run_to(self.start + since_start);
    }

    /// Runs for `limit` from now; `now` ends at now + `limit`.
    pub(crate) fn run_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        self.run_to(end);
        self.now = end;
    }

    /// `side` gets a new endpoint (default configuration, RNG seeded with `seed`) with
    /// just `tunnel`: the gateway restarted, or another one took its address. Its events
    /// start anew; what it sent before stays in `sent`.
    pub(crate) fn replace_endpoint(&mut self, side: Side, tunnel: TunnelConfig, seed: u64) {
        let fresh = Peer::new(&EndpointConfig::default(), tunnel, seed);
        let peer = self.peer(side);
        peer.ep = fresh.ep;
        peer.tunnel = fresh.tunnel;
        peer.addr = fresh.addr;
        peer.events.clear();
    }

    /// The left side initiates its tunnel now.
    pub(crate) fn initiate(&mut self) {
        let (now, t) = (self.now, self.left.tunnel);
        self.left.ep.initiate(t, now).unwrap();
    }
}

pub(crate) fn children(events: &[Event]) -> Vec<&ChildSaPair> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaEstablished { pair, .. } => Some(pair),
            _ => None,
        })
        .collect()
}

pub(crate) fn failures(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .collect()
}

/// Both sides' pairs mirror each other: my inbound is your outbound, key for key.
pub(crate) fn assert_mirrored(a: &ChildSaPair, b: &ChildSaPair) {
    assert_eq!(a.inbound.spi, b.outbound.spi);
    assert_eq!(a.outbound.spi, b.inbound.spi);
    assert_ne!(a.inbound.spi, a.outbound.spi);
    assert!(a
        .inbound
        .encryption_key
        .ct_eq(b.outbound.encryption_key.expose()));
    assert!(a
        .inbound
        .integrity_key
        .ct_eq(b.outbound.integrity_key.expose()));
    assert!(a
        .outbound
        .encryption_key
        .ct_eq(b.inbound.encryption_key.expose()));
    assert!(a
        .outbound
        .integrity_key
        .ct_eq(b.inbound.integrity_key.expose()));
    assert!(!a
        .inbound
        .encryption_key
        .ct_eq(a.outbound.encryption_key.expose()));
    assert_eq!(
        a.inbound.encryption_key.len(),
        a.inbound.encryption.key_len()
    );
    assert_eq!(a.inbound.integrity_key.len(), a.inbound.integrity.key_len());
    assert_eq!(a.local_ts, b.remote_ts);
    assert_eq!(a.remote_ts, b.local_ts);
    assert_eq!(a.encapsulation, b.encapsulation);
    assert_eq!(a.hard_lifetime, b.hard_lifetime);
}

/// Exactly one pair at each side, mirrored.
pub(crate) fn established(net: &Net) -> (ChildSaPair, ChildSaPair) {
    let l = children(&net.left.events);
    let r = children(&net.right.events);
    assert_eq!(l.len(), 1, "left events: {:?}", net.left.events);
    assert_eq!(r.len(), 1, "right events: {:?}", net.right.events);
    assert_mirrored(l[0], r[0]);
    (l[0].clone(), r[0].clone())
}

// -------------------------------------------------------------------------------------
// Log capture: the endpoint reports every dropped input at debug with its reason. A
// minimal `tracing` subscriber, no extra dependency.

/// One line per event: level, then `field=value` pairs.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
