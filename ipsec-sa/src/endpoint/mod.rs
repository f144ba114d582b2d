//! The IKEv1 control plane as a sans-IO state machine: datagrams in; datagrams, timers and
//! events out; time and randomness passed in.
//!
//! An [`Endpoint`] holds the configured tunnels and every ISAKMP SA. It routes each
//! incoming ISAKMP message by its cookie pair (RFC 2408 section 3.1) to the SA, and inside
//! the SA by message ID to the phase-1 exchange (ID 0), a Quick Mode (RFC 2409 section
//! 5.5) or an Informational exchange (section 5.7). An unsolicited first Main Mode message
//! is matched to a tunnel by the peer's address; nothing else creates state.
//!
//! Supported, in both roles: Main Mode and Aggressive Mode with pre-shared keys (RFC 2409
//! section 5.4), NAT traversal (RFC 3947 and draft-ietf-ipsec-nat-t-ike-02) including the
//! float to UDP 4500 and NAT-keepalives (RFC 3948), Quick Mode with or without PFS,
//! RESPONDER-LIFETIME, Delete in both directions, INITIAL-CONTACT, dead peer detection
//! (RFC 3706: answering and probing), retransmission with back-off, ESP SA rekeying
//! before expiry (by time, and by traffic when the caller forwards the data plane's
//! limits to [`Endpoint::soft_lifetime_reached`] / [`Endpoint::hard_lifetime_reached`]),
//! rekey collisions (both ends keep the same pair), ISAKMP SA renewal, and the commit bit
//! with CONNECTED (RFC 2408 section 3.1; sent as a protected Informational naming the
//! responder's inbound SPI), and forced UDP encapsulation without a NAT
//! ([`TunnelConfig::force_udp_encapsulation`]). Not supported: certificates and
//! signatures, XAUTH/mode config; IPv6 outer addresses have had no interop test.
//!
//! # Lifetimes of ESP SAs and their ISAKMP SA
//!
//! An ESP SA pair outlives the ISAKMP SA that negotiated it (RFC 2409 section 5.5 makes
//! no link between their lifetimes, and peers such as strongSwan keep them too): it
//! ends at its own lifetime, when it is replaced, or when the peer deletes it. Its
//! Delete then travels under the tunnel's newest established ISAKMP SA, and a Delete
//! the peer sends under a newer ISAKMP SA finds the pair under the older one. If no
//! ISAKMP SA is left at that moment, no Delete is sent: both ends hold the same
//! negotiated lifetime, so the peer's own timer ends its copy at the same time.
//!
//! # Several tunnels to one peer address
//!
//! As responder, the only thing that names the tunnel in Main Mode's first message is
//! the peer's address: its identity arrives encrypted in MM5, after SKEYID was derived
//! with one tunnel's pre-shared key (RFC 2409 section 5.4), so Main Mode allows one
//! tunnel per peer address (configure several local and remote subnets in it instead:
//! one ESP pair per combination). Aggressive Mode sends IDii in the clear in its first
//! message, so tunnels to one address are allowed when all of them use Aggressive Mode
//! and each expects a different `remote_id`; the responder picks the tunnel by it.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     handle_datagram(now, local, remote, bytes)   for each ISAKMP message received
//!     handle_timeout(now)                          when poll_timeout() has passed
//!     while let Some(t) = poll_transmit() { send t.payload, after 4 zero bytes if non_esp_marker }
//!     while let Some(e) = poll_event()    { install / remove SAs, log }
//! }
//! ```

mod config;
mod error;
#[cfg(test)]
mod fixture_tests;
mod ident;
mod ike_sa;
mod message;
mod natt;
mod proposal;
mod quick_mode;
mod timer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use ipsec_crypto::SecretBytes;
use ipsec_proto::isakmp::Message;
use rand_core::CryptoRngCore;
use tracing::{debug, trace};

pub use config::{
    ConfigError, DpdAction, DpdConfig, EndpointConfig, Identity, Phase1Config, Phase1Mode,
    Phase1Proposal, Phase2Config, Phase2Proposal, RetransmitConfig, TunnelConfig,
};
pub use error::{FailureReason, InitiateError, PeerMisbehaved};

use crate::child::ChildSaPair;
use ike_sa::{IkeSa, SaAction};

/// Identifies a tunnel added with [`Endpoint::add_tunnel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(usize);

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tunnel#{}", self.0)
    }
}

/// A datagram to send.
#[must_use = "a Transmit is a datagram that should be sent"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Source address and port (port 4500 after a NAT-T float).
    pub local: SocketAddr,
    /// Destination address and port.
    pub remote: SocketAddr,
    /// The ISAKMP message, or the single byte 0xff of a NAT-keepalive (RFC 3948 section
    /// 2.3, sent on port 4500 without the marker when we are behind a NAT).
    pub payload: Vec<u8>,
    /// Prepend the four zero bytes of the non-ESP marker (RFC 3948 section 2.2): set for
    /// every ISAKMP message on port 4500.
    pub non_esp_marker: bool,
}

/// Something the caller should act on.
#[derive(Clone, Debug)]
#[non_exhaustive]
#[expect(
    clippy::large_enum_variant,
    reason = "events are rare and drained at once; the pair is moved to the data plane as is"
)]
pub enum Event {
    /// An ISAKMP SA is ready (RFC 2409 section 5: Main Mode finished).
    Phase1Established {
        /// The tunnel.
        tunnel: TunnelId,
        /// Our address and port for IKE from now on.
        local: SocketAddr,
        /// The peer's.
        remote: SocketAddr,
        /// Whether NAT-D found a NAT (or a peer faking one), so ESP goes in UDP 4500.
        nat_detected: bool,
        /// CKY-I, which names the ISAKMP SA (e.g. for Wireshark's IKEv1 decryption table).
        initiator_cookie: [u8; 8],
        /// CKY-R.
        responder_cookie: [u8; 8],
    },
    /// A pair of ESP SAs is ready for the data plane.
    ChildSaEstablished {
        /// The tunnel.
        tunnel: TunnelId,
        /// Keys, SPIs, selectors, addresses.
        pair: ChildSaPair,
    },
    /// A pair of ESP SAs must be removed (the peer deleted it, or it expired).
    ChildSaDeleted {
        /// The tunnel.
        tunnel: TunnelId,
        /// The SPI we receive on.
        inbound_spi: u32,
        /// The SPI we send with.
        outbound_spi: u32,
    },
    /// The ISAKMP SA is gone (deleted by the peer, expired, or shut down).
    Phase1Deleted {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// An exchange failed; the text of `reason` says what to fix.
    Failed {
        /// The tunnel.
        tunnel: TunnelId,
        /// Why.
        reason: FailureReason,
    },
    /// Dead peer detection gave up on the peer (RFC 3706).
    PeerDead {
        /// The tunnel.
        tunnel: TunnelId,
    },
}

/// Where a tunnel stands, for status displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelState {
    /// No ISAKMP SA.
    Idle,
    /// Main Mode is running.
    Phase1InProgress,
    /// An ISAKMP SA is established.
    Phase1Up {
        /// ESP SA pairs negotiated under it and not deleted.
        child_sas: usize,
        /// Quick Modes running.
        quick_modes_in_progress: usize,
    },
}

/// Hands out SPIs for the SAs we receive on, so they can be unique across several
/// endpoints or match a data plane's table. Without one, the endpoint draws SPIs from its
/// RNG and avoids the ones it has in use.
pub trait SpiAllocator {
    /// A fresh SPI, at least 256 (RFC 4303 section 2.1 reserves 1..=255), or `None` when
    /// none is free.
    fn allocate(&mut self) -> Option<u32>;
    /// The SPI is no longer used.
    fn release(&mut self, spi: u32) {
        let _ = spi;
    }
}

/// The endpoint's inbound SPIs.
struct SpiPool {
    allocator: Option<Box<dyn SpiAllocator + Send>>,
    in_use: HashSet<u32>,
}

impl SpiPool {
    fn allocate(&mut self, rng: &mut dyn CryptoRngCore) -> Option<u32> {
        let spi = match &mut self.allocator {
            Some(a) => a.allocate().filter(|s| *s >= 256)?,
            None => loop {
                let s = rng.next_u32();
                if s >= 256 && !self.in_use.contains(&s) {
                    break s;
                }
            },
        };
        self.in_use.insert(spi);
        Some(spi)
    }

    fn release(&mut self, spi: u32) {
        if self.in_use.remove(&spi) {
            if let Some(a) = &mut self.allocator {
                a.release(spi);
            }
        }
    }
}

/// Builds the [`Cx`] for one call from the endpoint's own fields, borrowing each field
/// separately so that `sas` and `tunnels` stay usable beside it (a method taking
/// `&mut self` would lock the whole endpoint).
macro_rules! cx {
    ($endpoint:expr, $now:expr) => {
        Cx {
            now: $now,
            config: &$endpoint.config,
            rng: &mut *$endpoint.rng,
            spis: &mut $endpoint.spis,
            transmits: &mut $endpoint.transmits,
            events: &mut $endpoint.events,
        }
    };
}

/// What an SA needs from the endpoint while it handles an input.
struct Cx<'a> {
    now: Instant,
    config: &'a EndpointConfig,
    rng: &'a mut (dyn CryptoRngCore + Send),
    spis: &'a mut SpiPool,
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<Event>,
}

impl Cx<'_> {
    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill_bytes(&mut b);
        b
    }

    fn allocate_spi(&mut self) -> Option<u32> {
        self.spis.allocate(&mut *self.rng)
    }

    fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }
}

/// Identifies an ISAKMP SA inside the endpoint.
type SaId = u64;

/// The IKEv1 SA manager. See the module docs.
pub struct Endpoint {
    config: EndpointConfig,
    rng: Box<dyn CryptoRngCore + Send>,
    spis: SpiPool,
    tunnels: Vec<TunnelConfig>,
    sas: HashMap<SaId, IkeSa>,
    /// Cookie pair -> SA. An SA we initiated is filed under (CKY-I, 0) until MM2 names the
    /// responder cookie.
    by_cookies: HashMap<([u8; 8], [u8; 8]), SaId>,
    next_sa: SaId,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("tunnels", &self.tunnels.len())
            .field("sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no tunnels. `rng` supplies cookies, nonces, DH secrets, message
    /// IDs and SPIs; a seeded RNG makes runs reproducible.
    pub fn new(config: EndpointConfig, rng: Box<dyn CryptoRngCore + Send>) -> Self {
        Self {
            config,
            rng,
            spis: SpiPool {
                allocator: None,
                in_use: HashSet::new(),
            },
            tunnels: Vec::new(),
            sas: HashMap::new(),
            by_cookies: HashMap::new(),
            next_sa: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Uses `allocator` for inbound SPIs from now on.
    pub fn set_spi_allocator(&mut self, allocator: Box<dyn SpiAllocator + Send>) {
        self.spis.allocator = Some(allocator);
    }

    /// Adds a tunnel. As responder, a peer is matched to its tunnel by its IP address.
    /// Several tunnels may share a peer address only if all of them use Aggressive Mode
    /// and each names a different `remote_id`: the responder then picks the tunnel by the
    /// identity in AM1, which travels in the clear (RFC 2409 section 5.4). Main Mode
    /// cannot choose (see the module docs, "Several tunnels to one peer address").
    pub fn add_tunnel(&mut self, tunnel: TunnelConfig) -> Result<TunnelId, ConfigError> {
        tunnel.validate()?;
        let by_identity = |t: &TunnelConfig| t.phase1.mode == Phase1Mode::Aggressive;
        if let Some(other) = self.tunnels.iter().find(|t| {
            t.remote_addr.ip() == tunnel.remote_addr.ip()
                && !(by_identity(t)
                    && by_identity(&tunnel)
                    && t.phase1.remote_id.is_some()
                    && tunnel.phase1.remote_id.is_some()
                    && t.phase1.remote_id != tunnel.phase1.remote_id)
        }) {
            return Err(ConfigError::DuplicateRemote {
                tunnel: tunnel.name.clone(),
                remote: tunnel.remote_addr,
                other: other.name.clone(),
            });
        }
        self.tunnels.push(tunnel);
        Ok(TunnelId(self.tunnels.len() - 1))
    }

    /// The configuration of `tunnel`.
    pub fn tunnel(&self, tunnel: TunnelId) -> Option<&TunnelConfig> {
        self.tunnels.get(tunnel.0)
    }

    /// Where `tunnel` stands (the most advanced of its ISAKMP SAs).
    pub fn tunnel_state(&self, tunnel: TunnelId) -> TunnelState {
        let mut state = TunnelState::Idle;
        // ESP SAs outlive the ISAKMP SA that made them (RFC 2409 section 5.5): count all.
        let child_sas = self
            .sas
            .values()
            .filter(|sa| sa.tunnel == tunnel)
            .map(|sa| sa.children.len())
            .sum();
        for sa in self.sas.values().filter(|sa| sa.tunnel == tunnel) {
            if sa.is_established() {
                return TunnelState::Phase1Up {
                    child_sas,
                    quick_modes_in_progress: sa.quick_modes_in_progress(),
                };
            }
            if sa.is_negotiating() {
                state = TunnelState::Phase1InProgress;
            }
        }
        state
    }

    /// A debugging aid: CKY-I and Ka (the phase-1 cipher key, RFC 2409 Appendix B) of the
    /// tunnel's established ISAKMP SA, for Wireshark's IKEv1 decryption table. Ka decrypts
    /// every phase-1 and phase-2 message of the SA: hand it only to a trusted debugging
    /// sink, never to a log.
    pub fn phase1_encryption_key(&self, tunnel: TunnelId) -> Option<([u8; 8], SecretBytes)> {
        self.sas
            .values()
            .filter(|sa| sa.tunnel == tunnel && sa.is_established())
            .find_map(|sa| Some((sa.cky_i, sa.keys.as_ref()?.encryption_key.clone())))
    }

    /// How many ISAKMP SAs (in any state, including closed ones kept for their ESP SAs or
    /// to absorb stray retransmissions) and ESP SA pairs the endpoint holds, for
    /// monitoring that state does not grow.
    pub fn sa_count(&self) -> (usize, usize) {
        let pairs = self.sas.values().map(|sa| sa.children.len()).sum();
        (self.sas.len(), pairs)
    }

    /// The phase-1 algorithms negotiated for the tunnel's newest established ISAKMP SA,
    /// for status displays and tests (RFC 2409 section 5: the responder picked one of the
    /// initiator's transforms).
    pub fn phase1_algorithms(&self, tunnel: TunnelId) -> Option<Phase1Proposal> {
        self.sas
            .iter()
            .filter(|(_, sa)| sa.tunnel == tunnel)
            .filter_map(|(id, sa)| Some((*id, sa.phase1_choice()?)))
            .max_by_key(|(id, _)| *id)
            .map(|(_, p)| p)
    }

    /// Fuzzing only: SKEYID_a of the tunnel's established ISAKMP SA, so a fuzz target can
    /// compute valid Quick Mode and Informational HASH payloads and reach the code behind
    /// them. Behind the `fuzzing` feature, which no production build may enable.
    #[cfg(feature = "fuzzing")]
    pub fn fuzzing_skeyid_a(&self, tunnel: TunnelId) -> Option<SecretBytes> {
        self.sas
            .values()
            .filter(|sa| sa.tunnel == tunnel && sa.is_established())
            .find_map(|sa| Some(sa.keys.as_ref()?.skeyid_a.clone()))
    }

    /// Starts negotiating a pair of ESP SAs for `tunnel`: Quick Mode on an established
    /// ISAKMP SA, or Main Mode first when there is none. Results arrive as events.
    pub fn initiate(&mut self, tunnel: TunnelId, now: Instant) -> Result<(), InitiateError> {
        let config = self
            .tunnels
            .get(tunnel.0)
            .ok_or(InitiateError::UnknownTunnel(tunnel))?;
        let mut cx = cx!(self, now);

        // Prefer an established SA, then one being negotiated.
        let existing = self
            .sas
            .values_mut()
            .filter(|sa| sa.tunnel == tunnel && sa.is_usable())
            .max_by_key(|sa| sa.is_established());
        if let Some(sa) = existing {
            sa.request_child(&mut cx, config);
            return Ok(());
        }

        let first_contact = !self
            .sas
            .values()
            .any(|sa| sa.tunnel == tunnel && sa.is_usable());
        let sa = IkeSa::initiate(&mut cx, tunnel, config, true, first_contact);
        self.insert(sa);
        Ok(())
    }

    fn insert(&mut self, sa: IkeSa) -> SaId {
        let id = self.next_sa;
        self.next_sa += 1;
        self.by_cookies.insert(sa.cookies(), id);
        self.sas.insert(id, sa);
        id
    }

    /// Carries out what SAs asked for while handling an input.
    fn run_actions(&mut self, now: Instant) {
        let mut todo = Vec::new();
        for (id, sa) in &mut self.sas {
            todo.extend(sa.actions.drain(..).map(|a| (*id, sa.tunnel, a)));
        }
        for (from, tunnel, action) in todo {
            let Some(config) = self.tunnels.get(tunnel.0) else {
                continue;
            };
            let mut cx = cx!(self, now);
            match action {
                SaAction::Initiate { with_child } => {
                    // Reuse another ISAKMP SA of the tunnel: an established one, else one
                    // being negotiated.
                    let other = self
                        .sas
                        .iter_mut()
                        .filter(|(id, sa)| **id != from && sa.tunnel == tunnel && sa.is_usable())
                        .max_by_key(|(_, sa)| sa.is_established());
                    if let Some((_, sa)) = other {
                        if with_child {
                            sa.request_child(&mut cx, config);
                        }
                        continue;
                    }
                    // The SA asking counts: renewing its own replacement is no first contact.
                    let first_contact = !self
                        .sas
                        .values()
                        .any(|sa| sa.tunnel == tunnel && sa.is_usable());
                    let sa = IkeSa::initiate(&mut cx, tunnel, config, with_child, first_contact);
                    self.insert(sa);
                }
                SaAction::RenewChild(pair) => {
                    // One replacement at a time: the rekey timer and a traffic limit, or a
                    // data plane split by direction reporting its limit once per direction,
                    // can ask twice while the first Quick Mode still runs. One that failed
                    // no longer counts, so a later request tries again.
                    let under_way = self.sas.values().any(|sa| {
                        sa.tunnel == tunnel
                            && (sa.negotiating_pair(pair) || sa.pending_children.contains(&pair))
                    });
                    if under_way {
                        debug!(%tunnel, local_ts = %pair.0, remote_ts = %pair.1,
                            "replacement of an ESP SA pair asked for again while one is \
                             being negotiated: nothing to do");
                        continue;
                    }
                    // The newest established ISAKMP SA, else one being negotiated.
                    let usable = self
                        .sas
                        .iter_mut()
                        .filter(|(_, sa)| sa.tunnel == tunnel && sa.is_usable())
                        .max_by_key(|(id, sa)| (sa.is_established(), **id));
                    if let Some((_, sa)) = usable {
                        sa.renew_child(&mut cx, config, pair);
                        continue;
                    }
                    let mut sa = IkeSa::initiate(&mut cx, tunnel, config, false, true);
                    sa.renew_child(&mut cx, config, pair);
                    self.insert(sa);
                }
                SaAction::SendEspDelete { inbound } => {
                    let newest = self
                        .sas
                        .iter_mut()
                        .filter(|(_, sa)| sa.tunnel == tunnel && sa.is_established())
                        .max_by_key(|(id, _)| **id);
                    match newest {
                        Some((_, sa)) => sa.send_esp_delete(&mut cx, inbound),
                        None => debug!(%tunnel, spi = format_args!("{inbound:08x}"),
                            "no ISAKMP SA to carry the Delete: the peer's own lifetime of \
                             the pair ends it (both ends hold the same negotiated lifetime)"),
                    }
                }
                SaAction::PeerDeletedEsp { spi } => {
                    let found = self
                        .sas
                        .iter_mut()
                        .filter(|(id, sa)| **id != from && sa.tunnel == tunnel)
                        .any(|(_, sa)| sa.peer_deleted_child(&mut cx, spi));
                    if !found {
                        debug!(%tunnel, spi = format_args!("{spi:08x}"),
                            "ignoring Delete for an SPI no ISAKMP SA holds");
                    }
                }
                SaAction::InitialContact => {
                    for (id, sa) in &mut self.sas {
                        if *id != from && sa.tunnel == tunnel && sa.is_usable() {
                            sa.forget_stale(&mut cx);
                        }
                    }
                }
            }
        }
    }

    /// Handles one ISAKMP message received from `remote` on `local`. On port 4500 the
    /// caller has removed the non-ESP marker. Anything that does not parse or belongs to
    /// no SA is dropped (logged at debug).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(error) => {
                debug!(%remote, %error, "dropping datagram: not an ISAKMP message");
                return;
            }
        };
        let h = &msg.header;
        trace!(%remote, exchange = h.exchange_type.0, message_id = h.message_id,
            len = datagram.len(), "ISAKMP message received");
        if h.major_version() != 1 {
            debug!(%remote, version = h.version, "dropping message: not ISAKMP version 1");
            return;
        }

        let key = (h.initiator_cookie, h.responder_cookie);
        let id = match self.by_cookies.get(&key) {
            Some(id) => *id,
            None => match self.route_new(now, key, local, remote, &msg, datagram) {
                Some(id) => id,
                None => return,
            },
        };
        let mut cx = cx!(self, now);

        if let Some(sa) = self.sas.get_mut(&id) {
            let Some(tunnel) = self.tunnels.get(sa.tunnel.0) else {
                return;
            };
            let before = sa.cookies();
            sa.handle(&mut cx, tunnel, local, remote, &msg, datagram);
            let after = sa.cookies();
            if before != after {
                self.by_cookies.remove(&before);
                self.by_cookies.insert(after, id);
            }
        }
        self.run_actions(now);
        self.sweep();
    }

    /// Finds the SA for a message whose cookie pair is not filed: an answer to our MM1
    /// (filed under CKY-I alone), or a retransmitted MM1. A new MM1 from a peer is
    /// answered here; `None` means the message was dropped or fully handled.
    fn route_new(
        &mut self,
        now: Instant,
        key: ([u8; 8], [u8; 8]),
        local: SocketAddr,
        remote: SocketAddr,
        msg: &Message<'_>,
        datagram: &[u8],
    ) -> Option<SaId> {
        if key.1 != [0; 8] {
            let found = self.by_cookies.get(&(key.0, [0; 8])).copied();
            if found.is_none() {
                debug!(%remote, cky_i = %hex8(&key.0), cky_r = %hex8(&key.1),
                    "dropping message: no SA with these cookies");
            }
            return found;
        }
        let first = matches!(
            msg.header.exchange_type.0,
            message::exchange::MAIN | message::exchange::AGGRESSIVE
        );
        if !first || msg.header.message_id != 0 {
            debug!(%remote, "dropping message: zero responder cookie outside MM1");
            return None;
        }

        // A retransmitted MM1: the responder SA we made for it answers again.
        if let Some((id, _)) = self
            .sas
            .iter()
            .find(|(_, sa)| sa.is_responder_for(key.0, remote))
        {
            return Some(*id);
        }

        // A new MM1: policy is the tunnel configured for this peer address.
        let tunnel = self.tunnel_for(remote, msg)?;
        let half_open = self.sas.values().filter(|sa| sa.is_half_open()).count();
        if half_open >= self.config.max_half_open {
            debug!(%remote, half_open, "dropping MM1: too many half-open phase-1 exchanges");
            return None;
        }
        let from_peer = self
            .sas
            .values()
            .filter(|sa| sa.is_half_open() && sa.remote.ip() == remote.ip())
            .count();
        if from_peer >= self.config.max_half_open_per_peer {
            debug!(%remote, from_peer,
                "dropping MM1: too many half-open phase-1 exchanges from this peer");
            return None;
        }
        let config = self.tunnels.get(tunnel)?;
        let mut cx = cx!(self, now);
        let sa = IkeSa::respond(
            &mut cx,
            TunnelId(tunnel),
            config,
            local,
            remote,
            msg,
            datagram,
        )?;
        self.insert(sa);
        None
    }

    /// The tunnel a peer's first message belongs to: the one configured for its address,
    /// or, when several share it (Aggressive Mode only, see [`Self::add_tunnel`]), the
    /// one whose `remote_id` names the identity in AM1.
    fn tunnel_for(&self, remote: SocketAddr, msg: &Message<'_>) -> Option<usize> {
        let candidates: Vec<usize> = self
            .tunnels
            .iter()
            .enumerate()
            .filter(|(_, t)| t.remote_addr.ip() == remote.ip())
            .map(|(i, _)| i)
            .collect();
        match candidates.as_slice() {
            [] => {
                debug!(%remote, "dropping MM1: no tunnel is configured for this peer");
                return None;
            }
            [only] => return Some(*only),
            _ => {}
        }
        let id = message::payloads(msg.header.next_payload, msg.body)
            .ok()
            .and_then(|raw| {
                raw.iter().find_map(|r| match r.decode() {
                    Ok(ipsec_proto::isakmp::Payload::Identification(id)) => Some(id),
                    _ => None,
                })
            });
        let Some(id) = id else {
            debug!(%remote, "dropping first message: several tunnels share this peer \
                address and the message names no identity (Main Mode cannot choose)");
            return None;
        };
        let found = candidates.into_iter().find(|i| {
            self.tunnels.get(*i).is_some_and(|t| {
                t.phase1
                    .remote_id
                    .as_ref()
                    .is_some_and(|want| ident::identity_matches(want, &id))
            })
        });
        if found.is_none() {
            debug!(%remote, id = %ident::ShowId(&id),
                "dropping AM1: no tunnel to this peer address expects this identity");
        }
        found
    }

    /// Removes SAs that are finished.
    fn sweep(&mut self) {
        let dead: Vec<SaId> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.is_gone())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(sa) = self.sas.remove(&id) {
                self.by_cookies.remove(&sa.cookies());
                trace!(sa = id, "ISAKMP SA forgotten");
            }
        }
    }

    /// The next datagram to send, if any. Call until it returns `None` after every
    /// `handle_*`, `initiate` or `shutdown` call.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any. Call until it returns `None` after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(IkeSa::next_timeout).min()
    }

    /// Fires every timer due at `now`. Calling early or twice does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut cx = cx!(self, now);
        for sa in self.sas.values_mut() {
            if let Some(tunnel) = self.tunnels.get(sa.tunnel.0) {
                sa.handle_timeout(&mut cx, tunnel);
            }
        }
        self.run_actions(now);
        self.sweep();
    }

    /// Tells DPD that an ESP packet arrived on `inbound_spi` (RFC 3706 section 5.5:
    /// traffic is proof of liveness).
    pub fn traffic_seen(&mut self, inbound_spi: u32, now: Instant) {
        for sa in self.sas.values_mut() {
            if sa.owns_inbound_spi(inbound_spi) {
                sa.traffic_seen(now);
            }
        }
    }

    /// Tells the endpoint that the data plane's pair with `inbound_spi` crossed a soft
    /// limit on traffic (kilobytes, RFC 2407 section 4.5 SA Life Type 2) or on sequence
    /// numbers: a replacement is negotiated now, the way the time lifetime's soft limit
    /// does. Forward `dataplane::Event::SoftLifetime` here. If both ends do so at once,
    /// the rekey collision ends with one pair (the other is deleted). Calling again while
    /// the replacement is negotiated, or after it is established, does nothing.
    pub fn soft_lifetime_reached(&mut self, inbound_spi: u32, now: Instant) {
        let mut found = false;
        for sa in self.sas.values_mut() {
            found = found || sa.child_soft_limit(inbound_spi);
        }
        if !found {
            debug!(
                spi = format_args!("{inbound_spi:08x}"),
                "soft lifetime reported for a pair the endpoint does not hold"
            );
        }
        self.run_actions(now);
        self.sweep();
    }

    /// Tells the endpoint that the data plane's pair with `inbound_spi` reached a hard
    /// limit on traffic: the pair is deleted here (`Event::ChildSaDeleted`) and at the
    /// peer (Delete, RFC 2408 section 3.15). Forward `dataplane::Event::HardLifetime` here.
    pub fn hard_lifetime_reached(&mut self, inbound_spi: u32, now: Instant) {
        let mut cx = cx!(self, now);
        let mut found = false;
        for sa in self.sas.values_mut() {
            found = found || sa.child_hard_limit(&mut cx, inbound_spi);
        }
        if !found {
            debug!(
                spi = format_args!("{inbound_spi:08x}"),
                "hard lifetime reported for a pair the endpoint does not hold"
            );
        }
        self.run_actions(now);
        self.sweep();
    }

    /// Sends Delete for every ESP and ISAKMP SA (RFC 2408 section 3.15) and forgets them.
    pub fn shutdown(&mut self, now: Instant) {
        let mut cx = cx!(self, now);
        for sa in self.sas.values_mut() {
            sa.delete(&mut cx);
        }
        self.sweep();
    }
}

/// Hex of a cookie, for logs.
fn hex8(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
