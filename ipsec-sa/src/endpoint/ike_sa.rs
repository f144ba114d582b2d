//! One ISAKMP SA: the Main Mode exchange that builds it (RFC 2409 section 5 with pre-shared
//! keys, RFC 3947 NAT traversal), then the Quick Mode and Informational exchanges that run
//! under its protection.
//!
//! Each phase-1 state is its own type, named after the message it awaits; a transition
//! consumes the state and returns the next one. Once the SA failed it stays failed.

#![expect(
    clippy::result_large_err,
    reason = "a rejected transition hands its state back by value, once per message"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipsec_crypto::ikev1::{self, Phase1Keys};
use ipsec_crypto::{DhPrivateKey, SecretBytes};
use ipsec_proto::isakmp::{
    DeletePayload, IdPayload, Message, NotifyPayload, NotifyType, Payload, PayloadType, ProtocolId,
    RawPayload, SaPayload, DOI_IPSEC,
};
use ipsec_proto::DecodeError;
use tracing::{debug, trace, warn};

use super::config::{DpdAction, TunnelConfig};
use super::error::{notify, FailureReason, PeerMisbehaved};
use super::ident::{identity_matches, identity_payload, ShowId};
use super::message::{self, exchange, HashedChain, IsakmpKeys};
use super::natt::{self, NatDetection, NatTVariant, NATT_PORT};
use super::proposal::{self, Phase1Choice, PROTO_ESP, PROTO_ISAKMP};
use super::quick_mode::QuickMode;
use super::timer::{after, part_of, Timer, TimerTable};
use super::{Cx, Event, Transmit, TunnelId};

mod aggressive;
mod informational;
mod main_mode;

use aggressive::{ExpectAm2, ExpectAm3};
use main_mode::{ExpectMm2, ExpectMm3, ExpectMm4, ExpectMm5, ExpectMm6};

/// How often we refresh our NAT mapping; RFC 3948 section 4 suggests 20 seconds.
const NAT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// Length of the nonces we send (RFC 2409 section 5 asks for 8 to 256 bytes).
pub(super) const NONCE_LEN: usize = 32;

/// Which side of phase 1 we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Initiator,
    Responder,
}

/// Phase 1 done.
pub(super) struct Established {
    pub(super) choice: Phase1Choice,
}

/// The phase-1 state.
pub(super) enum Phase1State {
    ExpectMm2(ExpectMm2),
    ExpectMm4(ExpectMm4),
    ExpectMm6(ExpectMm6),
    ExpectMm3(ExpectMm3),
    ExpectMm5(ExpectMm5),
    ExpectAm2(ExpectAm2),
    ExpectAm3(ExpectAm3),
    Established(Established),
    /// Failed or deleted; kept until its deadline only to absorb stray retransmissions.
    Closed,
}

impl Phase1State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectMm2(_) => "ExpectMm2",
            Self::ExpectMm4(_) => "ExpectMm4",
            Self::ExpectMm6(_) => "ExpectMm6",
            Self::ExpectMm3(_) => "ExpectMm3",
            Self::ExpectMm5(_) => "ExpectMm5",
            Self::ExpectAm2(_) => "ExpectAm2",
            Self::ExpectAm3(_) => "ExpectAm3",
            Self::Established(_) => "Established",
            Self::Closed => "Closed",
        }
    }

    /// The message this state waits for, for timeouts.
    fn awaiting(&self) -> &'static str {
        match self {
            Self::ExpectMm2(_) => "MM2",
            Self::ExpectMm4(_) => "MM4",
            Self::ExpectMm6(_) => "MM6",
            Self::ExpectMm3(_) => "MM3",
            Self::ExpectMm5(_) => "MM5",
            Self::ExpectAm2(_) => "AM2",
            Self::ExpectAm3(_) => "AM3",
            Self::Established(_) | Self::Closed => "nothing",
        }
    }
}

/// Why an input did not advance the state.
pub(super) enum Rejected {
    /// Dropped; the exchange continues (garbage, replays, forgeries we cannot tell apart
    /// from them).
    Ignore(String),
    /// The exchange is over.
    Fatal(FailureReason),
}

impl From<PeerMisbehaved> for Rejected {
    fn from(e: PeerMisbehaved) -> Self {
        Self::Fatal(FailureReason::Peer(e))
    }
}

/// A transition's result: the next state, or the unchanged state and why.
type Step<S> = Result<Phase1State, (S, Rejected)>;

/// A request we resend until it is answered.
#[derive(Clone, Debug)]
pub(super) struct Retransmission {
    pub(super) transmit: Transmit,
    pub(super) sent: u32,
}

/// The payloads of one message, decoded.
#[derive(Default)]
pub(super) struct Contents {
    pub(super) sa: Option<SaPayload>,
    /// Body of the first SA payload, as received.
    pub(super) sa_body: Vec<u8>,
    pub(super) ke: Option<Vec<u8>>,
    pub(super) nonce: Option<Vec<u8>>,
    pub(super) ids: Vec<IdPayload>,
    /// Bodies of the ID payloads, as received.
    pub(super) id_bodies: Vec<Vec<u8>>,
    pub(super) hash: Option<Vec<u8>>,
    pub(super) notifies: Vec<NotifyPayload>,
    pub(super) deletes: Vec<DeletePayload>,
    pub(super) vendor_ids: Vec<Vec<u8>>,
    pub(super) nat_d: Vec<Vec<u8>>,
}

impl Contents {
    pub(super) fn decode(raw: &[RawPayload<'_>]) -> Result<Self, DecodeError> {
        let mut c = Self::default();
        for r in raw {
            match r.decode()? {
                Payload::Sa(sa) => {
                    if c.sa.is_none() {
                        c.sa_body = r.body.to_vec();
                        c.sa = Some(sa);
                    }
                }
                Payload::KeyExchange(k) => c.ke = Some(k),
                Payload::Nonce(n) => c.nonce = Some(n),
                Payload::Identification(id) => {
                    c.id_bodies.push(r.body.to_vec());
                    c.ids.push(id);
                }
                Payload::Hash(h) => c.hash = Some(h),
                Payload::Notification(n) => c.notifies.push(n),
                Payload::Delete(d) => c.deletes.push(d),
                Payload::VendorId(v) => c.vendor_ids.push(v),
                Payload::NatD { hash, .. } => c.nat_d.push(hash),
                other => trace!(payload = other.payload_type().0, "ignoring payload"),
            }
        }
        Ok(c)
    }

    pub(super) fn require<T>(
        v: Option<T>,
        message: &'static str,
        payload: &'static str,
    ) -> Result<T, PeerMisbehaved> {
        v.ok_or(PeerMisbehaved::MissingPayload { message, payload })
    }
}

/// DPD bookkeeping (RFC 3706).
#[derive(Debug, Default)]
struct Dpd {
    /// Sequence number of our next R-U-THERE.
    next_seq: u32,
    /// The R-U-THERE we wait an ACK for, and since when we have been probing.
    outstanding: Option<(u32, Instant)>,
    /// Last sign of life from the peer.
    last_seen: Option<Instant>,
}

/// An established ESP SA pair, as its ISAKMP SA remembers it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChildRecord {
    /// The SPI we receive on.
    pub(super) inbound: u32,
    /// The SPI we send with.
    pub(super) outbound: u32,
    /// Our side's selector.
    pub(super) local_ts: crate::selector::TrafficSelector,
    /// The peer's side's selector.
    pub(super) remote_ts: crate::selector::TrafficSelector,
    /// When the pair was established, to tell a rekey collision from a renewal.
    pub(super) established_at: Instant,
    /// We were the Quick Mode initiator.
    pub(super) initiated: bool,
    /// When its time lifetime asks for a replacement.
    pub(super) rekey_at: Option<Instant>,
    /// A newer pair for the same selectors exists, or this one lost a rekey collision:
    /// it gets no replacement of its own and ends at its hard lifetime or by Delete.
    pub(super) superseded: bool,
}

/// Our side's and the peer's side's selector of one ESP SA pair.
pub(super) type Selectors = (
    crate::selector::TrafficSelector,
    crate::selector::TrafficSelector,
);

/// Every selector pair a tunnel protects: each local subnet with each remote one, one
/// Quick Mode each (IKEv1 client IDs name one subnet per side, RFC 2409 section 5.5).
pub(super) fn wanted_pairs(config: &TunnelConfig) -> Vec<Selectors> {
    config
        .local_ts
        .iter()
        .flat_map(|l| config.remote_ts.iter().map(move |r| (*l, *r)))
        .collect()
}

/// Something only the endpoint can do, asked for by an SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SaAction {
    /// Start Main Mode for the tunnel (rekeying, or renewing an ESP SA after phase 1
    /// ended), then Quick Modes for every missing pair if `with_child`.
    Initiate {
        /// Negotiate the tunnel's ESP SA pairs once phase 1 is up.
        with_child: bool,
    },
    /// An ESP SA pair nears its lifetime: run Quick Mode for its selectors on the
    /// tunnel's newest established ISAKMP SA, or Main Mode first if there is none.
    RenewChild(Selectors),
    /// The peer sent INITIAL-CONTACT: every other SA of the tunnel is stale (RFC 2407
    /// section 4.6.3.3).
    InitialContact,
    /// Tell the peer that the ESP SA pair with this inbound SPI is gone, through the
    /// tunnel's newest established ISAKMP SA: the SA that made the pair has ended (an
    /// Informational may travel under any ISAKMP SA with the peer, RFC 2408 section 3.15).
    SendEspDelete {
        /// Our inbound SPI of the pair.
        inbound: u32,
    },
    /// The peer deleted an ESP SPI this SA does not hold: look for it under the tunnel's
    /// other ISAKMP SAs (pairs outlive the ISAKMP SA that made them).
    PeerDeletedEsp {
        /// The SPI the peer named.
        spi: u32,
    },
}

/// One ISAKMP SA and its exchanges.
pub(super) struct IkeSa {
    pub(super) tunnel: TunnelId,
    pub(super) role: Role,
    pub(super) cky_i: [u8; 8],
    pub(super) cky_r: [u8; 8],
    /// Our address for IKE (port 4500 after a float).
    pub(super) local: SocketAddr,
    /// The peer's address for IKE as last seen.
    pub(super) remote: SocketAddr,
    /// IKE runs on port 4500 with the non-ESP marker.
    pub(super) floated: bool,
    pub(super) nat_t: Option<NatTVariant>,
    pub(super) nat: NatDetection,
    /// Pretend to be behind a NAT (`TunnelConfig::force_udp_encapsulation`).
    pub(super) force_encapsulation: bool,
    peer_dpd: bool,
    state: Phase1State,
    pub(super) keys: Option<IsakmpKeys>,
    pub(super) timers: TimerTable,
    retransmission: Option<Retransmission>,
    /// Last phase-1 message accepted from the peer and our answer to it, so a
    /// retransmitted request gets the same answer again.
    last_in: Option<Vec<u8>>,
    last_out: Option<Transmit>,
    pub(super) quick_modes: Vec<QuickMode>,
    /// Established ESP SA pairs.
    pub(super) children: Vec<ChildRecord>,
    /// Requests for the endpoint, drained after every input.
    pub(super) actions: Vec<SaAction>,
    /// The peer's first Quick Mode message when it arrived before AM3 (the initiator of
    /// Aggressive Mode is done after sending AM3 and may start Quick Mode at once, so a
    /// reordering or a lost AM3 lets QM1 overtake it).
    early_quick_mode: Option<Vec<u8>>,
    /// We sent AM3 and have heard nothing authenticated from the peer since: AM3 is the
    /// last message of Aggressive Mode, so if it was lost only we can send it again.
    am3_unconfirmed: bool,
    /// Quick Modes to start once phase 1 is up, by selector pair.
    pub(super) pending_children: Vec<Selectors>,
    /// Send INITIAL-CONTACT in MM5: this is our first SA with the peer since we started
    /// (or since every other one ended). Never on a renewal: the peer would drop the SAs
    /// still in use (RFC 2407 section 4.6.3.3).
    send_initial_contact: bool,
    dpd: Dpd,
    failure: Option<FailureReason>,
    /// Encrypted phase-1 messages that did not decrypt to valid payloads. One may be a
    /// forgery or corruption; a second (the peer's retransmission) means the keys differ.
    undecryptable: u32,
}

impl IkeSa {
    fn new(tunnel: TunnelId, role: Role, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            tunnel,
            role,
            cky_i: [0; 8],
            cky_r: [0; 8],
            local,
            remote,
            // A peer that already knows of a NAT may start on port 4500 (RFC 3947 section
            // 4); everything on that port carries the non-ESP marker.
            floated: local.port() == NATT_PORT,
            nat_t: None,
            nat: NatDetection::default(),
            force_encapsulation: false,
            peer_dpd: false,
            state: Phase1State::Closed,
            keys: None,
            timers: TimerTable::default(),
            retransmission: None,
            last_in: None,
            last_out: None,
            quick_modes: Vec::new(),
            children: Vec::new(),
            actions: Vec::new(),
            pending_children: Vec::new(),
            am3_unconfirmed: false,
            early_quick_mode: None,
            send_initial_contact: false,
            dpd: Dpd::default(),
            failure: None,
            undecryptable: 0,
        }
    }

    /// The cookie pair this SA is filed under.
    pub(super) fn cookies(&self) -> ([u8; 8], [u8; 8]) {
        (self.cky_i, self.cky_r)
    }

    pub(super) fn is_established(&self) -> bool {
        matches!(self.state, Phase1State::Established(_))
    }

    /// The negotiated phase-1 algorithms, once established.
    pub(super) fn phase1_choice(&self) -> Option<super::Phase1Proposal> {
        match &self.state {
            Phase1State::Established(e) => Some(e.choice.proposal),
            _ => None,
        }
    }

    /// Still negotiating phase 1.
    pub(super) fn is_negotiating(&self) -> bool {
        !matches!(
            self.state,
            Phase1State::Established(_) | Phase1State::Closed
        )
    }

    /// AM3 again, while the peer has not proven it received it: sent before each
    /// retransmission of our QM1, whose silence is the only sign of a lost AM3.
    pub(super) fn am3_to_resend(&self) -> Option<Transmit> {
        self.am3_unconfirmed
            .then(|| self.last_out.clone())
            .flatten()
    }

    /// The peer sent an authenticated message after phase 1: it has our AM3.
    pub(super) fn peer_confirmed_phase1(&mut self) {
        self.am3_unconfirmed = false;
    }

    /// Keeps a Quick Mode message that arrived while we still wait for AM3, to handle it
    /// once AM3 completes phase 1. Returns whether it was kept.
    pub(super) fn hold_early_quick_mode(&mut self, datagram: &[u8]) -> bool {
        if matches!(self.state, Phase1State::ExpectAm3(_)) {
            self.early_quick_mode = Some(datagram.to_vec());
            return true;
        }
        false
    }

    /// Established or still negotiating.
    pub(super) fn is_usable(&self) -> bool {
        !matches!(self.state, Phase1State::Closed)
    }

    /// A responder exchange that has not finished (counted against the half-open limit).
    pub(super) fn is_half_open(&self) -> bool {
        matches!(
            self.state,
            Phase1State::ExpectMm3(_) | Phase1State::ExpectMm5(_) | Phase1State::ExpectAm3(_)
        )
    }

    /// Whether this is our responder SA for a peer's MM1 with `cky_i` from `remote`.
    pub(super) fn is_responder_for(&self, cky_i: [u8; 8], remote: SocketAddr) -> bool {
        self.role == Role::Responder && self.cky_i == cky_i && self.remote.ip() == remote.ip()
    }

    /// Closed and past its linger deadline.
    pub(super) fn is_gone(&self) -> bool {
        matches!(self.state, Phase1State::Closed) && self.timers.next().is_none()
    }

    /// The single place phase-1 state changes, traced.
    fn set_state(&mut self, next: Phase1State) {
        self.set_state_from(self.state.name(), next);
    }

    /// [`Self::set_state`] for a transition that took the old state out by value.
    fn set_state_from(&mut self, from: &'static str, next: Phase1State) {
        if from != next.name() {
            debug!(tunnel = %self.tunnel, role = ?self.role, cky_i = %super::hex8(&self.cky_i),
                from, to = next.name(), "ISAKMP SA state");
        }
        self.state = next;
    }

    // ---------------------------------------------------------------------------------
    // Sending

    fn transmit(&self, payload: Vec<u8>) -> Transmit {
        Transmit {
            local: self.local,
            remote: self.remote,
            payload,
            non_esp_marker: self.floated,
        }
    }

    /// Sends a message that needs no answer, or answers a request (kept for replays).
    fn send_answer(&mut self, cx: &mut Cx<'_>, payload: Vec<u8>) {
        let t = self.transmit(payload);
        cx.transmits.push_back(t.clone());
        self.last_out = Some(t);
    }

    /// Sends a phase-1 request and schedules its retransmission.
    fn send_request(&mut self, cx: &mut Cx<'_>, payload: Vec<u8>) {
        let t = self.transmit(payload);
        cx.transmits.push_back(t.clone());
        self.retransmission = Some(Retransmission {
            transmit: t,
            sent: 1,
        });
        self.timers.set(
            Timer::Phase1Retransmit,
            after(cx.now, cx.config.retransmit.interval(1)),
        );
    }

    /// Sends an unencrypted Informational with one notification (RFC 2408 section 4.8),
    /// used while no keys are agreed or the peer could not read encrypted ones.
    fn send_plain_notify(&self, cx: &mut Cx<'_>, notify_type: NotifyType) {
        let mut spi = self.cky_i.to_vec();
        spi.extend_from_slice(&self.cky_r);
        let n = Payload::Notification(NotifyPayload {
            doi: DOI_IPSEC,
            protocol_id: ProtocolId(PROTO_ISAKMP),
            notify_type,
            spi,
            data: Vec::new(),
        });
        let bytes = message::plain(self.cky_i, self.cky_r, exchange::INFORMATIONAL, 0, &[n]);
        cx.transmits.push_back(self.transmit(bytes));
    }

    /// Sends a protected Informational exchange (RFC 2409 section 5.7):
    /// HDR*, HASH(1), N/D with HASH(1) = prf(SKEYID_a, M-ID | N/D).
    pub(super) fn send_informational(&mut self, cx: &mut Cx<'_>, payloads: &[Payload]) {
        if let Some(t) = self.informational_transmit(cx, payloads) {
            cx.transmits.push_back(t);
        }
    }

    /// Builds the message [`Self::send_informational`] sends, for a caller that keeps it
    /// to send again.
    pub(super) fn informational_transmit(
        &mut self,
        cx: &mut Cx<'_>,
        payloads: &[Payload],
    ) -> Option<Transmit> {
        let message_id = loop {
            let m = u32::from_be_bytes(cx.random());
            if m != 0 && !self.quick_modes.iter().any(|q| q.message_id == m) {
                break m;
            }
        };
        let keys = self.keys.as_mut()?;
        let chain = HashedChain::new(payloads);
        let hash = ikev1::informational_hash(keys.prf, &keys.skeyid_a, message_id, &chain.rest);
        let sealed = keys.seal(
            self.cky_i,
            self.cky_r,
            exchange::INFORMATIONAL,
            message_id,
            PayloadType::HASH,
            &chain.with_hash(&hash),
            true,
        );
        match sealed {
            Ok(bytes) => Some(self.transmit(bytes)),
            Err(error) => {
                warn!(%error, "cannot encrypt informational message");
                None
            }
        }
    }

    /// Ends the SA with `reason`: the first failure sticks, later ones are only logged.
    pub(super) fn fail(&mut self, cx: &mut Cx<'_>, reason: FailureReason) {
        if self.failure.is_some() {
            debug!(tunnel = %self.tunnel, %reason, "further failure after the SA already failed");
            return;
        }
        warn!(tunnel = %self.tunnel, state = self.state.name(), %reason, "phase 1 failed");
        cx.event(Event::Failed {
            tunnel: self.tunnel,
            reason: reason.clone(),
        });
        self.failure = Some(reason);
        self.close(cx);
    }

    /// Stops every exchange and keeps the SA only long enough to absorb stray messages.
    fn close(&mut self, cx: &mut Cx<'_>) {
        for qm in &self.quick_modes {
            if let Some(spi) = qm.inbound_spi_pending() {
                cx.spis.release(spi);
            }
        }
        self.quick_modes.clear();
        self.retransmission = None;
        self.timers.keep_only_child_timers();
        self.timers.set(
            Timer::Phase1Deadline,
            after(cx.now, Duration::from_secs(10)),
        );
        self.set_state(Phase1State::Closed);
    }

    // ---------------------------------------------------------------------------------
    // Dispatch

    /// Handles a message routed to this SA by its cookies.
    pub(super) fn handle(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &Message<'_>,
        datagram: &[u8],
    ) {
        match (msg.header.exchange_type.0, msg.header.message_id) {
            (t, 0) if aggressive::is_phase1_exchange(t) => {
                self.handle_phase1(cx, config, local, remote, msg, datagram)
            }
            (exchange::INFORMATIONAL, _) => self.handle_informational(cx, config, msg),
            (exchange::QUICK, m) if m != 0 => self.handle_quick_mode(cx, config, msg, datagram),
            (t, m) => debug!(tunnel = %self.tunnel, exchange = t, message_id = m,
                "dropping message: exchange type not supported"),
        }
    }

    fn handle_phase1(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &Message<'_>,
        datagram: &[u8],
    ) {
        // A retransmitted request gets our last answer again (RFC 2408 section 5).
        // `last_out` is only set by messages that answer one (MM2, MM4, MM6, AM2, AM3).
        if self.last_in.as_deref() == Some(datagram) {
            match self.last_out.clone() {
                Some(t) => {
                    debug!(tunnel = %self.tunnel, "peer retransmitted; resending our last answer");
                    cx.transmits.push_back(t);
                }
                None => debug!(tunnel = %self.tunnel, "dropping duplicate phase-1 message"),
            }
            return;
        }

        let from = self.state.name();
        let state = std::mem::replace(&mut self.state, Phase1State::Closed);
        let result = match state {
            Phase1State::ExpectMm2(s) => self
                .on_mm2(cx, config, s, msg)
                .map_err(|(s, e)| (Phase1State::ExpectMm2(s), e)),
            Phase1State::ExpectMm4(s) => self
                .on_mm4(cx, config, s, msg, local, remote)
                .map_err(|(s, e)| (Phase1State::ExpectMm4(s), e)),
            Phase1State::ExpectMm6(s) => self
                .on_mm6(config, s, msg)
                .map_err(|(s, e)| (Phase1State::ExpectMm6(s), e)),
            Phase1State::ExpectMm3(s) => self
                .on_mm3(cx, config, s, msg, local, remote)
                .map_err(|(s, e)| (Phase1State::ExpectMm3(s), e)),
            Phase1State::ExpectMm5(s) => self
                .on_mm5(cx, config, s, msg, local, remote)
                .map_err(|(s, e)| (Phase1State::ExpectMm5(s), e)),
            Phase1State::ExpectAm2(s) => self
                .on_am2(cx, config, s, msg, local, remote)
                .map_err(|(s, e)| (Phase1State::ExpectAm2(s), e)),
            Phase1State::ExpectAm3(s) => self
                .on_am3(s, msg, local, remote)
                .map_err(|(s, e)| (Phase1State::ExpectAm3(s), e)),
            other @ (Phase1State::Established(_) | Phase1State::Closed) => Err((
                other,
                Rejected::Ignore("phase-1 message after phase 1 ended".into()),
            )),
        };
        match result {
            Ok(next) => {
                self.last_in = Some(datagram.to_vec());
                if matches!(next, Phase1State::Established(_)) {
                    self.retransmission = None;
                    self.timers.stop(Timer::Phase1Retransmit);
                }
                let established = matches!(next, Phase1State::Established(_));
                self.set_state_from(from, next);
                if established {
                    self.on_established(cx, config);
                    // A QM1 that overtook AM3 (see `hold_early_quick_mode`) goes now.
                    if let Some(d) = self.early_quick_mode.take() {
                        if let Ok(early) = Message::parse(&d) {
                            self.handle_quick_mode(cx, config, &early, &d);
                        }
                    }
                }
            }
            Err((state, Rejected::Ignore(why))) => {
                self.state = state;
                debug!(
                    tunnel = %self.tunnel,
                    state = self.state.name(),
                    %why,
                    "dropping phase-1 message",
                );
            }
            Err((state, Rejected::Fatal(reason))) => {
                self.state = state;
                if let FailureReason::Peer(e) = &reason {
                    self.send_plain_notify(cx, e.notify_type());
                }
                self.fail(cx, reason);
            }
        }
    }

    fn on_established(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig) {
        let Phase1State::Established(e) = &self.state else {
            return;
        };
        let lifetime = e
            .choice
            .lifetime
            .unwrap_or(config.phase1.lifetime)
            .min(config.phase1.lifetime);
        self.timers.stop(Timer::Phase1Deadline);
        self.timers
            .set(Timer::Phase1Expire, after(cx.now, lifetime));
        if self.role == Role::Initiator {
            self.timers
                .set(Timer::Phase1Rekey, after(cx.now, part_of(lifetime, 0.9)));
        }
        self.dpd.last_seen = Some(cx.now);
        self.seed_dpd(cx);
        if let Some(dpd) = config.dpd {
            self.timers.set(Timer::Dpd, after(cx.now, dpd.delay));
        }
        if self.floated && self.nat.local_behind_nat {
            self.timers
                .set(Timer::NatKeepalive, after(cx.now, NAT_KEEPALIVE_INTERVAL));
        }
        debug!(tunnel = %self.tunnel, local = %self.local, remote = %self.remote,
            nat = self.nat.any(), lifetime_s = lifetime.as_secs(), "phase 1 established");
        cx.event(Event::Phase1Established {
            tunnel: self.tunnel,
            local: self.local,
            remote: self.remote,
            nat_detected: self.nat_t.is_some() && self.nat.any(),
            initiator_cookie: self.cky_i,
            responder_cookie: self.cky_r,
        });
        for (local_ts, remote_ts) in std::mem::take(&mut self.pending_children) {
            self.start_quick_mode(cx, config, local_ts, remote_ts);
        }
    }

    /// Asks for the tunnel's ESP SA pairs (one per selector pair): now if phase 1 is up,
    /// else once it is. Idempotent: a pair that exists or is being negotiated is skipped
    /// (rekeying goes through [`Self::renew_child`]).
    pub(super) fn request_child(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig) {
        for pair in wanted_pairs(config) {
            let have = self
                .children
                .iter()
                .any(|c| (c.local_ts, c.remote_ts) == pair);
            if have || self.negotiating_pair(pair) || self.pending_children.contains(&pair) {
                debug!(tunnel = %self.tunnel, local_ts = %pair.0, remote_ts = %pair.1,
                    "ESP SA pair exists or is being negotiated");
            } else {
                self.renew_child(cx, config, pair);
            }
        }
    }

    /// Negotiates a pair for `pair` regardless of existing ones: now if phase 1 is up,
    /// else once it is.
    pub(super) fn renew_child(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig, pair: Selectors) {
        if self.is_established() {
            self.start_quick_mode(cx, config, pair.0, pair.1);
        } else if !self.pending_children.contains(&pair) {
            self.pending_children.push(pair);
        }
    }

    // ---------------------------------------------------------------------------------
    // Timers

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub(super) fn handle_timeout(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig) {
        for timer in self.timers.expire(cx.now) {
            match timer {
                Timer::Phase1Retransmit => self.retransmit_phase1(cx),
                Timer::Phase1Deadline => {
                    if !matches!(self.state, Phase1State::Closed) {
                        let awaiting = self.state.awaiting();
                        self.fail(cx, FailureReason::Timeout { awaiting, sent: 1 });
                    }
                    // Closed: the SA is swept once no deadline remains.
                }
                Timer::QuickModeRetransmit(m) => self.retransmit_quick_mode(cx, m),
                Timer::QuickModeLinger(m) => self.forget_quick_mode(m),
                Timer::Dpd => self.dpd_timer(cx, config),
                Timer::NatKeepalive => {
                    if self.is_established() {
                        trace!(tunnel = %self.tunnel, "sending NAT-keepalive");
                        cx.transmits.push_back(Transmit {
                            local: self.local,
                            remote: self.remote,
                            payload: vec![0xff],
                            non_esp_marker: false,
                        });
                        self.timers
                            .set(Timer::NatKeepalive, after(cx.now, NAT_KEEPALIVE_INTERVAL));
                    }
                }
                Timer::Phase1Expire => self.expire_phase1(cx),
                Timer::Phase1Rekey => {
                    debug!(
                        tunnel = %self.tunnel,
                        "ISAKMP SA nears its lifetime: starting a new Main Mode",
                    );
                    self.actions.push(SaAction::Initiate { with_child: false });
                }
                Timer::ChildRekey(spi) => {
                    if self.owns_inbound_spi(spi) && !self.is_superseded(spi) {
                        debug!(tunnel = %self.tunnel, spi = format_args!("{spi:08x}"),
                            "ESP SA pair nears its lifetime: negotiating a replacement");
                        // The endpoint picks the newest ISAKMP SA of the tunnel.
                        if let Some(c) = self.children.iter().find(|c| c.inbound == spi) {
                            self.actions
                                .push(SaAction::RenewChild((c.local_ts, c.remote_ts)));
                        }
                    }
                }
                Timer::ChildExpire(spi) => {
                    if let Some(pos) = self.children.iter().position(|c| c.inbound == spi) {
                        debug!(
                            tunnel = %self.tunnel,
                            spi = format_args!("{spi:08x}"),
                            "ESP SA pair expired",
                        );
                        self.drop_child(cx, pos, true);
                    }
                }
            }
        }
    }

    fn retransmit_phase1(&mut self, cx: &mut Cx<'_>) {
        let Some(r) = &mut self.retransmission else {
            return;
        };
        if r.sent > cx.config.retransmit.max_tries {
            let sent = r.sent;
            let awaiting = self.state.awaiting();
            self.fail(cx, FailureReason::Timeout { awaiting, sent });
            return;
        }
        r.sent += 1;
        debug!(
            tunnel = %self.tunnel,
            awaiting = self.state.awaiting(),
            sent = r.sent,
            "retransmitting",
        );
        cx.transmits.push_back(r.transmit.clone());
        let wait = cx.config.retransmit.interval(r.sent);
        self.timers
            .set(Timer::Phase1Retransmit, after(cx.now, wait));
    }

    /// RFC 3706 section 5: probe after `delay` idle, declare dead after `timeout`.
    fn dpd_timer(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig) {
        let Some(dpd) = config.dpd else {
            return;
        };
        if !self.is_established() {
            return;
        }
        let idle_since = self.dpd.last_seen.unwrap_or(cx.now);
        match self.dpd.outstanding {
            Some((_, since)) if cx.now >= after(since, dpd.timeout) => {
                warn!(tunnel = %self.tunnel, "peer did not answer R-U-THERE: declaring it dead");
                cx.event(Event::PeerDead {
                    tunnel: self.tunnel,
                });
                while !self.children.is_empty() {
                    self.drop_child(cx, 0, false);
                }
                cx.event(Event::Phase1Deleted {
                    tunnel: self.tunnel,
                });
                if dpd.action == DpdAction::Restart {
                    debug!(tunnel = %self.tunnel, "DPD action restart: starting a new Main Mode");
                    self.actions.push(SaAction::Initiate { with_child: true });
                }
                self.close(cx);
            }
            outstanding if cx.now >= after(idle_since, dpd.delay) || outstanding.is_some() => {
                if !self.peer_dpd {
                    debug!(tunnel = %self.tunnel, "peer did not announce DPD; probing anyway");
                }
                let seq = self.dpd.next_seq;
                self.dpd.next_seq = seq.wrapping_add(1);
                let since = outstanding.map_or(cx.now, |(_, s)| s);
                self.dpd.outstanding = Some((seq, since));
                let n = self.isakmp_notify(notify::R_U_THERE, seq.to_be_bytes().to_vec());
                self.send_informational(cx, &[Payload::Notification(n)]);
                let retry = cx.config.retransmit.initial.max(Duration::from_secs(1));
                self.timers
                    .set(Timer::Dpd, after(cx.now, retry.min(dpd.delay)));
            }
            _ => self.timers.set(Timer::Dpd, after(idle_since, dpd.delay)),
        }
    }

    /// Whether the pair with inbound SPI `spi` has been replaced (see
    /// [`ChildRecord::superseded`]).
    pub(super) fn is_superseded(&self, spi: u32) -> bool {
        self.children
            .iter()
            .any(|c| c.inbound == spi && c.superseded)
    }

    pub(super) fn owns_inbound_spi(&self, spi: u32) -> bool {
        self.children.iter().any(|c| c.inbound == spi)
    }

    pub(super) fn traffic_seen(&mut self, now: Instant) {
        self.dpd.last_seen = Some(now);
        self.dpd.outstanding = None;
    }

    /// Seeds the DPD sequence at a random point (RFC 3706 section 7).
    fn seed_dpd(&mut self, cx: &mut Cx<'_>) {
        self.dpd.next_seq = u32::from_be_bytes(cx.random()) & 0x7fff_ffff;
    }
}

/// How long a responder waits for the initiator's next message before giving up: the
/// initiator's whole retransmission schedule, if it uses ours.
fn negotiation_budget(cx: &Cx<'_>) -> Duration {
    let r = cx.config.retransmit;
    (1..=r.max_tries.saturating_add(1).min(64))
        .map(|n| r.interval(n))
        .fold(Duration::ZERO, Duration::saturating_add)
}

fn nonzero_cookie(cx: &mut Cx<'_>) -> [u8; 8] {
    loop {
        let c = cx.random::<8>();
        if c != [0; 8] {
            return c;
        }
    }
}

/// Decodes an unencrypted phase-1 message.
fn plain_contents(msg: &Message<'_>) -> Result<Contents, Rejected> {
    if msg.header.is_encrypted() {
        return Err(Rejected::Ignore(
            "encrypted message where a clear one was expected".into(),
        ));
    }
    let raw = msg
        .payloads()
        .map_err(|e| Rejected::Ignore(e.to_string()))?;
    Contents::decode(&raw).map_err(|e| Rejected::Ignore(e.to_string()))
}

/// SKEYID and its descendants (RFC 2409 section 5), and the phase-1 cipher state.
#[expect(clippy::too_many_arguments, reason = "the RFC 2409 inputs, each named")]
fn derive_keys(
    config: &TunnelConfig,
    p: super::Phase1Proposal,
    ni_b: &[u8],
    nr_b: &[u8],
    g_xy: &SecretBytes,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    g_xi: &[u8],
    g_xr: &[u8],
) -> Result<IsakmpKeys, Rejected> {
    // SKEYID = prf(pre-shared-key, Ni_b | Nr_b)
    let skeyid = ikev1::skeyid_psk(p.hash, config.psk.expose(), ni_b, nr_b);
    let keys: Phase1Keys =
        ikev1::phase1_keys(p.hash, skeyid, g_xy.expose(), cky_i, cky_r, p.encryption);
    IsakmpKeys::new(p.hash, p.encryption, keys, g_xi, g_xr)
        .map_err(|e| Rejected::Ignore(format!("cannot key the phase-1 cipher: {e}")))
}

/// Encrypts a payload chain as a message of `exchange` (phase 1: MM5/MM6).
pub(super) fn seal_chain(
    keys: &mut IsakmpKeys,
    cky_i: [u8; 8],
    cky_r: [u8; 8],
    exchange: u8,
    message_id: u32,
    payloads: &[Payload],
) -> Result<Vec<u8>, Rejected> {
    let mut chain = Vec::new();
    let first = ipsec_proto::isakmp::encode_payloads(payloads, &mut chain);
    keys.seal(cky_i, cky_r, exchange, message_id, first, &chain, false)
        .map_err(|e| Rejected::Ignore(format!("cannot encrypt: {e}")))
}
