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
use tracing::{debug, info, trace, warn};

use super::config::{DpdAction, TunnelConfig};
use super::error::{notify, FailureReason, PeerMisbehaved};
use super::ident::{identity_matches, identity_payload, ShowId};
use super::message::{self, exchange, HashedChain, IsakmpKeys};
use super::natt::{self, NatDetection, NatTVariant, NATT_PORT};
use super::proposal::{self, Phase1Choice, PROTO_ESP, PROTO_ISAKMP};
use super::quick_mode::QuickMode;
use super::timer::{Timer, TimerTable};
use super::{Cx, Event, Transmit, TunnelId};

mod aggressive;

use aggressive::{ExpectAm2, ExpectAm3};

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

/// Initiator, MM1 sent.
pub(super) struct ExpectMm2 {
    /// Body of our SA payload (SAi_b of RFC 2409 section 5).
    sai_b: Vec<u8>,
}

/// Initiator, MM3 sent.
pub(super) struct ExpectMm4 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    dh: DhPrivateKey,
    ni_b: Vec<u8>,
}

/// Initiator, MM5 sent.
pub(super) struct ExpectMm6 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    g_xi: Vec<u8>,
    g_xr: Vec<u8>,
}

/// Responder, MM2 sent.
pub(super) struct ExpectMm3 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
}

/// Responder, MM4 sent.
pub(super) struct ExpectMm5 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    g_xi: Vec<u8>,
    g_xr: Vec<u8>,
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
}

/// Something only the endpoint can do, asked for by an SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SaAction {
    /// Start Main Mode for the tunnel (rekeying, or renewing an ESP SA after phase 1
    /// ended), then Quick Mode if `with_child`.
    Initiate {
        /// Negotiate an ESP SA pair once phase 1 is up.
        with_child: bool,
    },
    /// The peer sent INITIAL-CONTACT: every other SA of the tunnel is stale (RFC 2407
    /// section 4.6.3.3).
    InitialContact,
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
    /// Quick Modes to start once phase 1 is up.
    pending_children: u32,
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
            floated: false,
            nat_t: None,
            nat: NatDetection::default(),
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
            pending_children: 0,
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

    /// Still negotiating phase 1.
    pub(super) fn is_negotiating(&self) -> bool {
        !matches!(
            self.state,
            Phase1State::Established(_) | Phase1State::Closed
        )
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
            info!(tunnel = %self.tunnel, role = ?self.role, cky_i = %super::hex8(&self.cky_i),
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
            cx.now + cx.config.retransmit.interval(1),
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
        let message_id = loop {
            let m = u32::from_be_bytes(cx.random());
            if m != 0 && !self.quick_modes.iter().any(|q| q.message_id == m) {
                break m;
            }
        };
        let Some(keys) = &mut self.keys else {
            return;
        };
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
            Ok(bytes) => cx.transmits.push_back(self.transmit(bytes)),
            Err(error) => warn!(%error, "cannot encrypt informational message"),
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
        self.timers.keep_only_child_expiry();
        self.timers
            .set(Timer::Phase1Deadline, cx.now + Duration::from_secs(10));
        self.set_state(Phase1State::Closed);
    }

    // ---------------------------------------------------------------------------------
    // Phase 1, initiator

    /// Starts Main Mode: MM1 = HDR, SA, VID... (RFC 2409 section 5, RFC 3947 section 3.1).
    pub(super) fn initiate(
        cx: &mut Cx<'_>,
        tunnel: TunnelId,
        config: &TunnelConfig,
        children: u32,
    ) -> Self {
        let mut sa = Self::new(
            tunnel,
            Role::Initiator,
            config.local_addr,
            config.remote_addr,
        );
        sa.cky_i = nonzero_cookie(cx);
        sa.pending_children = children;
        if config.phase1.mode == super::Phase1Mode::Aggressive {
            let next = sa.send_am1(cx, config);
            sa.set_state(next);
            return sa;
        }

        let offer = proposal::phase1_offer(&config.phase1.proposals, config.phase1.lifetime);
        let sa_payload = Payload::Sa(offer);
        let sai_b = sa_payload.body_bytes();
        let mut payloads = vec![sa_payload];
        if config.nat_traversal {
            for vid in [natt::VID_RFC3947, natt::VID_DRAFT_02_N, natt::VID_DRAFT_02] {
                payloads.push(Payload::VendorId(vid.to_vec()));
            }
        }
        payloads.push(Payload::VendorId(natt::VID_DPD.to_vec()));
        debug!(%tunnel, remote = %sa.remote, proposals = config.phase1.proposals.len(),
            "sending MM1");

        let bytes = message::plain(sa.cky_i, [0; 8], exchange::MAIN, 0, &payloads);
        sa.send_request(cx, bytes);
        sa.set_state(Phase1State::ExpectMm2(ExpectMm2 { sai_b }));
        sa
    }

    /// MM2 = HDR, SA, VID...: the responder's choice (RFC 2409 section 5).
    fn on_mm2(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        s: ExpectMm2,
        msg: &Message<'_>,
    ) -> Step<ExpectMm2> {
        if msg.header.responder_cookie == [0; 8] {
            return Err((
                s,
                Rejected::Ignore("MM2 with a zero responder cookie".into()),
            ));
        }
        let c = match plain_contents(msg) {
            Ok(c) => c,
            Err(e) => return Err((s, e)),
        };
        let answer = match Contents::require(c.sa, "MM2", "SA") {
            Ok(a) => a,
            Err(e) => return Err((s, e.into())),
        };
        let choice = match proposal::check_phase1_answer(&answer, &config.phase1.proposals) {
            Ok(c) => c,
            Err(e) => return Err((s, e.into())),
        };
        self.cky_r = msg.header.responder_cookie;
        self.nat_t = if config.nat_traversal {
            NatTVariant::from_vendor_ids(c.vendor_ids.iter().map(Vec::as_slice))
        } else {
            None
        };
        self.peer_dpd = natt::has_dpd_vendor_id(c.vendor_ids.iter().map(Vec::as_slice));
        debug!(tunnel = %self.tunnel, chosen = %proposal::describe_p1(&choice.proposal),
            nat_t = ?self.nat_t, peer_dpd = self.peer_dpd, "MM2: peer chose");

        // MM3 = HDR, KE, Ni [, NAT-D, NAT-D] (RFC 3947 section 3.2: the first NAT-D is
        // the hash of the destination, the second of our own address).
        let dh = DhPrivateKey::generate(choice.proposal.group, &mut cx.rng);
        let ni_b = cx.random::<NONCE_LEN>().to_vec();
        let mut payloads = vec![
            Payload::KeyExchange(dh.public_key()),
            Payload::Nonce(ni_b.clone()),
        ];
        self.push_nat_d(&mut payloads, choice.proposal.hash);
        let bytes = message::plain(self.cky_i, self.cky_r, exchange::MAIN, 0, &payloads);
        self.send_request(cx, bytes);
        Ok(Phase1State::ExpectMm4(ExpectMm4 {
            sai_b: s.sai_b,
            choice,
            dh,
            ni_b,
        }))
    }

    fn push_nat_d(&self, payloads: &mut Vec<Payload>, hash: ipsec_crypto::HashAlgorithm) {
        if let Some(v) = self.nat_t {
            for addr in [self.remote, self.local] {
                payloads.push(Payload::NatD {
                    payload_type: PayloadType(v.nat_d_payload_type()),
                    hash: natt::nat_d_hash(hash, &self.cky_i, &self.cky_r, addr),
                });
            }
        }
    }

    /// Compares the peer's NAT-D payloads with the addresses of the datagram.
    fn detect_nat(
        &mut self,
        c: &Contents,
        hash: ipsec_crypto::HashAlgorithm,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        if self.nat_t.is_none() {
            return;
        }
        match NatDetection::compare(hash, &self.cky_i, &self.cky_r, local, remote, &c.nat_d) {
            Some(d) => {
                debug!(tunnel = %self.tunnel, local_behind_nat = d.local_behind_nat,
                    remote_behind_nat = d.remote_behind_nat, "NAT detection");
                self.nat = d;
            }
            None => {
                debug!(tunnel = %self.tunnel, "peer sent no NAT-D payloads: NAT-T not used");
                self.nat_t = None;
            }
        }
    }

    /// MM4 = HDR, KE, Nr [, NAT-D, NAT-D]; we derive the keys and send MM5 =
    /// HDR*, IDii, HASH_I [, N(INITIAL-CONTACT)], on port 4500 if a NAT was found.
    fn on_mm4(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        s: ExpectMm4,
        msg: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Step<ExpectMm4> {
        let c = match plain_contents(msg) {
            Ok(c) => c,
            Err(e) => return Err((s, e)),
        };
        let (g_xr, nr_b) = match (c.ke.clone(), c.nonce.clone()) {
            (Some(k), Some(n)) => (k, n),
            (None, _) => {
                return Err((
                    s,
                    PeerMisbehaved::MissingPayload {
                        message: "MM4",
                        payload: "KE",
                    }
                    .into(),
                ))
            }
            (_, None) => {
                return Err((
                    s,
                    PeerMisbehaved::MissingPayload {
                        message: "MM4",
                        payload: "Nonce",
                    }
                    .into(),
                ))
            }
        };
        let g_xy = match s.dh.shared_secret(&g_xr) {
            Ok(k) => k,
            Err(e) => {
                return Err((
                    s,
                    PeerMisbehaved::InvalidKeyExchange {
                        detail: e.to_string(),
                    }
                    .into(),
                ))
            }
        };
        let p = s.choice.proposal;
        let g_xi = s.dh.public_key();
        let keys = match derive_keys(
            config,
            p,
            &s.ni_b,
            &nr_b,
            &g_xy,
            &self.cky_i,
            &self.cky_r,
            &g_xi,
            &g_xr,
        ) {
            Ok(k) => k,
            Err(e) => return Err((s, e)),
        };
        self.detect_nat(&c, p.hash, local, remote);

        // RFC 3947 section 4: with a NAT in the path the initiator moves to port 4500.
        if self.nat_t.is_some() && self.nat.any() {
            self.local.set_port(NATT_PORT);
            self.remote.set_port(NATT_PORT);
            self.floated = true;
            debug!(tunnel = %self.tunnel, local = %self.local, remote = %self.remote,
                "floating IKE to UDP 4500");
        }

        let id = identity_payload(&config.local_identity());
        let idii_b = id.to_body();
        let hash_i = ikev1::hash_i(
            p.hash,
            &keys.skeyid,
            &g_xi,
            &g_xr,
            &self.cky_i,
            &self.cky_r,
            &s.sai_b,
            &idii_b,
        );
        let mut payloads = vec![
            Payload::Identification(id),
            Payload::Hash(hash_i.as_bytes().to_vec()),
        ];
        if config.initial_contact {
            payloads.push(Payload::Notification(
                self.isakmp_notify(notify::INITIAL_CONTACT, Vec::new()),
            ));
        }
        let mut keys = keys;
        let bytes = match seal_chain(
            &mut keys,
            self.cky_i,
            self.cky_r,
            exchange::MAIN,
            0,
            &payloads,
        ) {
            Ok(b) => b,
            Err(e) => return Err((s, e)),
        };
        self.keys = Some(keys);
        self.send_request(cx, bytes);
        Ok(Phase1State::ExpectMm6(ExpectMm6 {
            sai_b: s.sai_b,
            choice: s.choice,
            g_xi,
            g_xr,
        }))
    }

    /// A notification about this ISAKMP SA: SPI = CKY-I | CKY-R (RFC 2408 section 3.14).
    pub(super) fn isakmp_notify(&self, notify_type: u16, data: Vec<u8>) -> NotifyPayload {
        let mut spi = self.cky_i.to_vec();
        spi.extend_from_slice(&self.cky_r);
        NotifyPayload {
            doi: DOI_IPSEC,
            protocol_id: ProtocolId(PROTO_ISAKMP),
            notify_type: NotifyType(notify_type),
            spi,
            data,
        }
    }

    /// MM6 = HDR*, IDir, HASH_R: verify and finish.
    fn on_mm6(
        &mut self,
        config: &TunnelConfig,
        s: ExpectMm6,
        msg: &Message<'_>,
    ) -> Step<ExpectMm6> {
        let (c, next_iv) = match self.open_phase1(msg, "MM6") {
            Ok(v) => v,
            Err(e) => return Err((s, e)),
        };
        let (Some(id), Some(idir_b), Some(hash)) =
            (c.ids.first(), c.id_bodies.first(), c.hash.as_ref())
        else {
            return Err((
                s,
                PeerMisbehaved::MissingPayload {
                    message: "MM6",
                    payload: "ID or HASH",
                }
                .into(),
            ));
        };
        if self.keys.is_none() {
            return Err((s, Rejected::Ignore("MM6 without keys".into())));
        }
        let p = s.choice.proposal;
        let Some(keys) = &self.keys else {
            return Err((s, Rejected::Ignore("MM6 without keys".into())));
        };
        let expected = ikev1::hash_r(
            p.hash,
            &keys.skeyid,
            &s.g_xr,
            &s.g_xi,
            &self.cky_r,
            &self.cky_i,
            &s.sai_b,
            idir_b,
        );
        if !expected.ct_eq(hash) {
            let e =
                self.authentication_failed(PeerMisbehaved::Phase1HashMismatch { message: "MM6" });
            return Err((s, e));
        }
        let want = config.remote_identity();
        if !identity_matches(&want, id) {
            return Err((
                s,
                PeerMisbehaved::UnexpectedIdentity {
                    expected: want.to_string(),
                    got: ShowId(id).to_string(),
                }
                .into(),
            ));
        }
        if let Some(keys) = &mut self.keys {
            keys.commit_iv(0, next_iv);
        }
        Ok(Phase1State::Established(Established { choice: s.choice }))
    }

    // ---------------------------------------------------------------------------------
    // Phase 1, responder

    /// Answers an unsolicited MM1 for `config`'s tunnel with MM2, or refuses it with
    /// NO-PROPOSAL-CHOSEN (RFC 2408 section 5.4). Returns the new SA if one was created.
    pub(super) fn respond(
        cx: &mut Cx<'_>,
        tunnel: TunnelId,
        config: &TunnelConfig,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &Message<'_>,
        datagram: &[u8],
    ) -> Option<Self> {
        if msg.header.exchange_type.0 == exchange::AGGRESSIVE {
            return Self::respond_aggressive(cx, tunnel, config, local, remote, msg, datagram);
        }
        if config.phase1.mode != super::Phase1Mode::Main {
            warn!(
                %tunnel,
                %remote,
                "refusing Main Mode: the tunnel is configured for Aggressive Mode",
            );
            return None;
        }
        let mut sa = Self::new(tunnel, Role::Responder, local, remote);
        sa.cky_i = msg.header.initiator_cookie;
        let c = match plain_contents(msg) {
            Ok(c) => c,
            Err(Rejected::Ignore(why)) => {
                debug!(%remote, %why, "dropping MM1");
                return None;
            }
            Err(Rejected::Fatal(reason)) => {
                debug!(%remote, %reason, "dropping MM1");
                return None;
            }
        };
        let Some(offer) = c.sa.as_ref() else {
            debug!(%remote, "dropping MM1: no SA payload");
            return None;
        };
        sa.cky_r = nonzero_cookie(cx);
        let (transform, choice) = match proposal::choose_phase1(offer, &config.phase1.proposals) {
            Ok(v) => v,
            Err(e) => {
                let reason = FailureReason::Peer(e);
                warn!(%tunnel, %remote, %reason, "refusing MM1");
                sa.send_plain_notify(cx, NotifyType(notify::NO_PROPOSAL_CHOSEN));
                cx.event(Event::Failed { tunnel, reason });
                return None;
            }
        };
        sa.nat_t = if config.nat_traversal {
            NatTVariant::from_vendor_ids(c.vendor_ids.iter().map(Vec::as_slice))
        } else {
            None
        };
        sa.peer_dpd = natt::has_dpd_vendor_id(c.vendor_ids.iter().map(Vec::as_slice));
        debug!(%tunnel, %remote, chosen = %proposal::describe_p1(&choice.proposal),
            nat_t = ?sa.nat_t, peer_dpd = sa.peer_dpd, "MM1: choosing");

        // MM2 = HDR, SA (the chosen transform in the peer's proposal), VID...
        let number = offer.proposals.first().map_or(1, |p| p.number);
        let answer = SaPayload {
            doi: offer.doi,
            situation: offer.situation,
            proposals: vec![ipsec_proto::isakmp::Proposal {
                number,
                protocol_id: ProtocolId(PROTO_ISAKMP),
                spi: Vec::new(),
                transforms: vec![transform],
            }],
        };
        let mut payloads = vec![Payload::Sa(answer)];
        if let Some(v) = sa.nat_t {
            payloads.push(Payload::VendorId(v.vendor_id().to_vec()));
        }
        payloads.push(Payload::VendorId(natt::VID_DPD.to_vec()));
        let bytes = message::plain(sa.cky_i, sa.cky_r, exchange::MAIN, 0, &payloads);
        sa.last_in = Some(datagram.to_vec());
        sa.send_answer(cx, bytes);
        sa.timers
            .set(Timer::Phase1Deadline, cx.now + negotiation_budget(cx));
        sa.set_state(Phase1State::ExpectMm3(ExpectMm3 {
            sai_b: c.sa_body,
            choice,
        }));
        Some(sa)
    }

    /// MM3 = HDR, KE, Ni [, NAT-D...]; answer MM4 = HDR, KE, Nr [, NAT-D, NAT-D].
    fn on_mm3(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        s: ExpectMm3,
        msg: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Step<ExpectMm3> {
        let c = match plain_contents(msg) {
            Ok(c) => c,
            Err(e) => return Err((s, e)),
        };
        let (g_xi, ni_b) = match (c.ke.clone(), c.nonce.clone()) {
            (Some(k), Some(n)) => (k, n),
            (None, _) => {
                return Err((
                    s,
                    PeerMisbehaved::MissingPayload {
                        message: "MM3",
                        payload: "KE",
                    }
                    .into(),
                ))
            }
            (_, None) => {
                return Err((
                    s,
                    PeerMisbehaved::MissingPayload {
                        message: "MM3",
                        payload: "Nonce",
                    }
                    .into(),
                ))
            }
        };
        let p = s.choice.proposal;
        let dh = DhPrivateKey::generate(p.group, &mut cx.rng);
        let g_xy = match dh.shared_secret(&g_xi) {
            Ok(k) => k,
            Err(e) => {
                return Err((
                    s,
                    PeerMisbehaved::InvalidKeyExchange {
                        detail: e.to_string(),
                    }
                    .into(),
                ))
            }
        };
        let g_xr = dh.public_key();
        let nr_b = cx.random::<NONCE_LEN>().to_vec();
        let keys = match derive_keys(
            config,
            p,
            &ni_b,
            &nr_b,
            &g_xy,
            &self.cky_i,
            &self.cky_r,
            &g_xi,
            &g_xr,
        ) {
            Ok(k) => k,
            Err(e) => return Err((s, e)),
        };
        self.detect_nat(&c, p.hash, local, remote);

        let mut payloads = vec![Payload::KeyExchange(g_xr.clone()), Payload::Nonce(nr_b)];
        self.push_nat_d(&mut payloads, p.hash);
        let bytes = message::plain(self.cky_i, self.cky_r, exchange::MAIN, 0, &payloads);
        self.keys = Some(keys);
        self.send_answer(cx, bytes);
        Ok(Phase1State::ExpectMm5(ExpectMm5 {
            sai_b: s.sai_b,
            choice: s.choice,
            g_xi,
            g_xr,
        }))
    }

    /// MM5 = HDR*, IDii, HASH_I [, N]; answer MM6 = HDR*, IDir, HASH_R.
    fn on_mm5(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        s: ExpectMm5,
        msg: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Step<ExpectMm5> {
        let (c, next_iv) = match self.open_phase1(msg, "MM5") {
            Ok(v) => v,
            Err(e) => return Err((s, e)),
        };
        let (Some(id), Some(idii_b), Some(hash)) =
            (c.ids.first(), c.id_bodies.first(), c.hash.as_ref())
        else {
            return Err((
                s,
                PeerMisbehaved::MissingPayload {
                    message: "MM5",
                    payload: "ID or HASH",
                }
                .into(),
            ));
        };
        if self.keys.is_none() {
            return Err((s, Rejected::Ignore("MM5 without keys".into())));
        }
        let p = s.choice.proposal;
        let Some(keys) = &self.keys else {
            return Err((s, Rejected::Ignore("MM5 without keys".into())));
        };
        let expected = ikev1::hash_i(
            p.hash,
            &keys.skeyid,
            &s.g_xi,
            &s.g_xr,
            &self.cky_i,
            &self.cky_r,
            &s.sai_b,
            idii_b,
        );
        if !expected.ct_eq(hash) {
            let e =
                self.authentication_failed(PeerMisbehaved::Phase1HashMismatch { message: "MM5" });
            return Err((s, e));
        }
        let want = config.remote_identity();
        if !identity_matches(&want, id) {
            return Err((
                s,
                PeerMisbehaved::UnexpectedIdentity {
                    expected: want.to_string(),
                    got: ShowId(id).to_string(),
                }
                .into(),
            ));
        }
        if let Some(keys) = &mut self.keys {
            keys.commit_iv(0, next_iv);
        }
        if c.notifies
            .iter()
            .any(|n| n.notify_type.0 == notify::INITIAL_CONTACT)
        {
            debug!(tunnel = %self.tunnel, "peer sent INITIAL-CONTACT");
            self.actions.push(SaAction::InitialContact);
        }

        // The peer floated (RFC 3947 section 4): answer where MM5 came from.
        if local.port() == NATT_PORT {
            self.floated = true;
        }
        self.local = local;
        self.remote = remote;

        let id = identity_payload(&config.local_identity());
        let idir_b = id.to_body();
        let Some(keys) = &mut self.keys else {
            return Err((s, Rejected::Ignore("MM5 without keys".into())));
        };
        let hash_r = ikev1::hash_r(
            p.hash,
            &keys.skeyid,
            &s.g_xr,
            &s.g_xi,
            &self.cky_r,
            &self.cky_i,
            &s.sai_b,
            &idir_b,
        );
        let payloads = [
            Payload::Identification(id),
            Payload::Hash(hash_r.as_bytes().to_vec()),
        ];
        let bytes = match seal_chain(keys, self.cky_i, self.cky_r, exchange::MAIN, 0, &payloads) {
            Ok(b) => b,
            Err(e) => return Err((s, e)),
        };
        self.send_answer(cx, bytes);
        Ok(Phase1State::Established(Established { choice: s.choice }))
    }

    /// Decrypts a phase-1 message after the key exchange. Garbage here means the two
    /// sides hold different keys: with pre-shared keys, different keys.
    fn open_phase1(
        &mut self,
        msg: &Message<'_>,
        which: &'static str,
    ) -> Result<(Contents, Vec<u8>), Rejected> {
        if !msg.header.is_encrypted() {
            return Err(PeerMisbehaved::WrongEncryptionFlag { message: which }.into());
        }
        let Some(keys) = &self.keys else {
            return Err(Rejected::Ignore(format!("{which} before keys")));
        };
        let (plain, next_iv) = keys
            .open(0, msg.body)
            .map_err(|e| Rejected::Ignore(format!("{which} does not decrypt: {e}")))?;
        match message::payloads(msg.header.next_payload, &plain)
            .and_then(|raw| Contents::decode(&raw))
        {
            Ok(contents) => Ok((contents, next_iv)),
            Err(error) => {
                debug!(tunnel = %self.tunnel, %error, "{which} did not decrypt to valid payloads");
                Err(
                    self.authentication_failed(PeerMisbehaved::UndecryptableAfterKeyExchange {
                        message: which,
                    }),
                )
            }
        }
    }

    /// MM5/MM6 failed authentication. Neither message carries a MAC over its ciphertext,
    /// so one failure may be a corrupted or forged copy: it is dropped and the peer's
    /// retransmission decides. A second failure means the keys differ.
    fn authentication_failed(&mut self, e: PeerMisbehaved) -> Rejected {
        self.undecryptable += 1;
        if self.undecryptable == 1 {
            warn!(
                tunnel = %self.tunnel,
                error = %e,
                "dropping message; waiting for a retransmission",
            );
            Rejected::Ignore(e.to_string())
        } else {
            e.into()
        }
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
        if self.last_in.as_deref() == Some(datagram) {
            if self.role == Role::Responder {
                if let Some(t) = self.last_out.clone() {
                    debug!(tunnel = %self.tunnel, "peer retransmitted; resending our last answer");
                    cx.transmits.push_back(t);
                }
            } else {
                debug!(tunnel = %self.tunnel, "dropping duplicate phase-1 message");
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
                if self.role == Role::Initiator && matches!(next, Phase1State::Established(_)) {
                    self.retransmission = None;
                    self.timers.stop(Timer::Phase1Retransmit);
                }
                let established = matches!(next, Phase1State::Established(_));
                self.set_state_from(from, next);
                if established {
                    self.on_established(cx, config);
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
        self.timers.set(Timer::Phase1Expire, cx.now + lifetime);
        if self.role == Role::Initiator {
            self.timers
                .set(Timer::Phase1Rekey, cx.now + lifetime.mul_f64(0.9));
        }
        self.dpd.last_seen = Some(cx.now);
        self.seed_dpd(cx);
        if let Some(dpd) = config.dpd {
            self.timers.set(Timer::Dpd, cx.now + dpd.delay);
        }
        if self.floated && self.nat.local_behind_nat {
            self.timers
                .set(Timer::NatKeepalive, cx.now + NAT_KEEPALIVE_INTERVAL);
        }
        info!(tunnel = %self.tunnel, local = %self.local, remote = %self.remote,
            nat = self.nat.any(), lifetime_s = lifetime.as_secs(), "phase 1 established");
        cx.event(Event::Phase1Established {
            tunnel: self.tunnel,
            local: self.local,
            remote: self.remote,
            nat_detected: self.nat_t.is_some() && self.nat.any(),
            initiator_cookie: self.cky_i,
            responder_cookie: self.cky_r,
        });
        while self.pending_children > 0 {
            self.pending_children -= 1;
            self.start_quick_mode(cx, config);
        }
    }

    /// Asks for another ESP SA pair: now if phase 1 is up, else once it is.
    /// Idempotent: nothing happens while a pair for the tunnel's selectors exists or is
    /// being negotiated (rekeying starts its Quick Modes directly).
    pub(super) fn request_child(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig) {
        let wanted = (config.local_ts.first(), config.remote_ts.first());
        let have = self
            .children
            .iter()
            .any(|c| (Some(&c.local_ts), Some(&c.remote_ts)) == wanted);
        if have || self.quick_modes_in_progress() > 0 {
            debug!(tunnel = %self.tunnel, have, "ESP SA pair exists or is being negotiated");
        } else if self.is_established() {
            self.start_quick_mode(cx, config);
        } else {
            self.pending_children = 1;
        }
    }

    // ---------------------------------------------------------------------------------
    // Informational (RFC 2409 section 5.7)

    fn handle_informational(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig, msg: &Message<'_>) {
        let c = if msg.header.is_encrypted() {
            match self.open_informational(msg) {
                Ok(c) => c,
                Err(why) => {
                    debug!(tunnel = %self.tunnel, %why, "dropping informational message");
                    return;
                }
            }
        } else {
            // Unprotected notifications are only believed while no keys protect the
            // exchange, and only to end a negotiation early (RFC 2408 section 5.5).
            if self.is_established() {
                debug!(tunnel = %self.tunnel, "dropping unprotected informational after phase 1");
                return;
            }
            match message::payloads(msg.header.next_payload, msg.body)
                .and_then(|r| Contents::decode(&r))
            {
                Ok(c) => c,
                Err(error) => {
                    debug!(
                        tunnel = %self.tunnel,
                        %error,
                        "dropping malformed informational message",
                    );
                    return;
                }
            }
        };
        self.dpd.last_seen = Some(cx.now);

        for n in &c.notifies {
            self.on_notify(cx, config, n, msg.header.is_encrypted());
        }
        for d in &c.deletes {
            self.on_delete(cx, d);
        }
    }

    /// Decrypts and authenticates an Informational: HASH(1) = prf(SKEYID_a, M-ID | N/D).
    fn open_informational(&self, msg: &Message<'_>) -> Result<Contents, String> {
        let keys = self.keys.as_ref().ok_or("no keys yet")?;
        if !self.is_established() {
            return Err("encrypted informational before phase 1 finished".into());
        }
        let m = msg.header.message_id;
        let (plain, _) = keys.open(m, msg.body).map_err(|e| e.to_string())?;
        let raw = message::payloads(msg.header.next_payload, &plain).map_err(|e| e.to_string())?;
        let first = raw.first().ok_or("empty informational")?;
        if first.payload_type != PayloadType::HASH {
            return Err("informational does not start with HASH".into());
        }
        let expected = ikev1::informational_hash(
            keys.prf,
            &keys.skeyid_a,
            m,
            message::after_first(&plain, &raw),
        );
        if !expected.ct_eq(first.body) {
            warn!(tunnel = %self.tunnel, message_id = m, "informational HASH did not verify");
            return Err("HASH did not verify".into());
        }
        Contents::decode(&raw).map_err(|e| e.to_string())
    }

    fn on_notify(
        &mut self,
        cx: &mut Cx<'_>,
        _config: &TunnelConfig,
        n: &NotifyPayload,
        protected: bool,
    ) {
        let t = n.notify_type.0;
        match t {
            notify::R_U_THERE if protected => {
                debug!(tunnel = %self.tunnel, seq = ?n.data, "answering R-U-THERE");
                let ack = self.isakmp_notify(notify::R_U_THERE_ACK, n.data.clone());
                self.send_informational(cx, &[Payload::Notification(ack)]);
            }
            notify::R_U_THERE_ACK if protected => {
                let seq = <[u8; 4]>::try_from(n.data.as_slice())
                    .map(u32::from_be_bytes)
                    .ok();
                // Any of our recent probes may be the one answered (RFC 3706 section 7).
                let recent =
                    seq.is_some_and(|s| self.dpd.next_seq.wrapping_sub(s).wrapping_sub(1) < 16);
                if recent {
                    self.dpd.outstanding = None;
                } else {
                    debug!(
                        tunnel = %self.tunnel,
                        ?seq,
                        "ignoring R-U-THERE-ACK for no probe of ours",
                    );
                }
            }
            notify::INITIAL_CONTACT => debug!(tunnel = %self.tunnel, "peer sent INITIAL-CONTACT"),
            notify::RESPONDER_LIFETIME => {
                debug!(tunnel = %self.tunnel, "ignoring RESPONDER-LIFETIME outside Quick Mode")
            }
            1..=notify::LAST_ERROR => {
                warn!(tunnel = %self.tunnel, notify = notify::name(t), code = t, protected,
                    "peer reported an error");
                let reason = FailureReason::PeerNotified { notify_type: t };
                if self.is_established() {
                    // An error about a Quick Mode: fail the ones still waiting.
                    let mut failed = false;
                    for qm in &mut self.quick_modes {
                        if qm.is_pending_initiator() {
                            qm.abandon(cx);
                            failed = true;
                        }
                    }
                    if failed {
                        cx.event(Event::Failed {
                            tunnel: self.tunnel,
                            reason,
                        });
                    }
                } else {
                    self.fail(cx, reason);
                }
            }
            _ => {
                debug!(
                    tunnel = %self.tunnel,
                    notify = notify::name(t),
                    code = t,
                    "ignoring notification",
                )
            }
        }
    }

    fn on_delete(&mut self, cx: &mut Cx<'_>, d: &DeletePayload) {
        match d.protocol_id.0 {
            PROTO_ISAKMP => {
                info!(tunnel = %self.tunnel, "peer deleted the ISAKMP SA");
                cx.event(Event::Phase1Deleted {
                    tunnel: self.tunnel,
                });
                self.close(cx);
            }
            PROTO_ESP => {
                for spi in &d.spis {
                    let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                        continue;
                    };
                    let spi = u32::from_be_bytes(b);
                    // The peer names its inbound SPI (our outbound); accept either.
                    let Some(pos) = self
                        .children
                        .iter()
                        .position(|c| c.outbound == spi || c.inbound == spi)
                    else {
                        debug!(
                            tunnel = %self.tunnel,
                            spi = format_args!("{spi:08x}"),
                            "Delete for an unknown SPI",
                        );
                        continue;
                    };
                    info!(
                        tunnel = %self.tunnel,
                        spi = format_args!("{spi:08x}"),
                        "peer deleted an ESP SA pair",
                    );
                    self.drop_child(cx, pos, false);
                }
            }
            p => {
                debug!(tunnel = %self.tunnel, protocol = p, "ignoring Delete for another protocol")
            }
        }
    }

    /// Forgets the ESP SA pair at `pos` and reports it; with `send_delete`, tells the peer
    /// with a Delete naming our inbound SPI (RFC 2408 section 3.15).
    fn drop_child(&mut self, cx: &mut Cx<'_>, pos: usize, send_delete: bool) {
        if pos >= self.children.len() {
            return;
        }
        let c = self.children.remove(pos);
        if send_delete && self.is_established() {
            let d = DeletePayload {
                doi: DOI_IPSEC,
                protocol_id: ProtocolId(PROTO_ESP),
                spi_size: 4,
                spis: vec![c.inbound.to_be_bytes().to_vec()],
            };
            self.send_informational(cx, &[Payload::Delete(d)]);
        }
        self.timers.stop(Timer::ChildRekey(c.inbound));
        self.timers.stop(Timer::ChildExpire(c.inbound));
        cx.spis.release(c.inbound);
        cx.event(Event::ChildSaDeleted {
            tunnel: self.tunnel,
            inbound_spi: c.inbound,
            outbound_spi: c.outbound,
        });
    }

    /// The ISAKMP SA's lifetime ended: tell the peer and stop, leaving the ESP SAs to
    /// their own lifetimes (RFC 2409 section 5.5 keeps them independent).
    fn expire_phase1(&mut self, cx: &mut Cx<'_>) {
        info!(tunnel = %self.tunnel, children = self.children.len(), "ISAKMP SA lifetime ended");
        if self.is_established() {
            let mut spi = self.cky_i.to_vec();
            spi.extend_from_slice(&self.cky_r);
            let d = DeletePayload {
                doi: DOI_IPSEC,
                protocol_id: ProtocolId(PROTO_ISAKMP),
                spi_size: 16,
                spis: vec![spi],
            };
            self.send_informational(cx, &[Payload::Delete(d)]);
            cx.event(Event::Phase1Deleted {
                tunnel: self.tunnel,
            });
        }
        self.close(cx);
    }

    /// The peer restarted (INITIAL-CONTACT on a newer SA): forget this SA and its ESP SAs
    /// without telling the peer, which no longer knows them.
    pub(super) fn forget_stale(&mut self, cx: &mut Cx<'_>) {
        info!(tunnel = %self.tunnel, children = self.children.len(),
            "peer sent INITIAL-CONTACT on a new SA: dropping this older one");
        while !self.children.is_empty() {
            self.drop_child(cx, 0, false);
        }
        if self.is_established() {
            cx.event(Event::Phase1Deleted {
                tunnel: self.tunnel,
            });
        }
        self.close(cx);
    }

    /// Deletes every ESP SA and then the ISAKMP SA (RFC 2408 section 3.15).
    pub(super) fn delete(&mut self, cx: &mut Cx<'_>) {
        if self.is_established() {
            while !self.children.is_empty() {
                self.drop_child(cx, 0, true);
            }
            let mut spi = self.cky_i.to_vec();
            spi.extend_from_slice(&self.cky_r);
            let d = DeletePayload {
                doi: DOI_IPSEC,
                protocol_id: ProtocolId(PROTO_ISAKMP),
                spi_size: 16,
                spis: vec![spi],
            };
            self.send_informational(cx, &[Payload::Delete(d)]);
            cx.event(Event::Phase1Deleted {
                tunnel: self.tunnel,
            });
        }
        self.close(cx);
        self.timers = TimerTable::default();
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
                            .set(Timer::NatKeepalive, cx.now + NAT_KEEPALIVE_INTERVAL);
                    }
                }
                Timer::Phase1Expire => self.expire_phase1(cx),
                Timer::Phase1Rekey => {
                    info!(
                        tunnel = %self.tunnel,
                        "ISAKMP SA nears its lifetime: starting a new Main Mode",
                    );
                    self.actions.push(SaAction::Initiate { with_child: false });
                }
                Timer::ChildRekey(spi) => {
                    if self.owns_inbound_spi(spi) {
                        info!(tunnel = %self.tunnel, spi = format_args!("{spi:08x}"),
                            "ESP SA pair nears its lifetime: negotiating a replacement");
                        if self.is_established() {
                            self.start_quick_mode(cx, config);
                        } else {
                            self.actions.push(SaAction::Initiate { with_child: true });
                        }
                    }
                }
                Timer::ChildExpire(spi) => {
                    if let Some(pos) = self.children.iter().position(|c| c.inbound == spi) {
                        info!(
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
        self.timers.set(Timer::Phase1Retransmit, cx.now + wait);
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
            Some((_, since)) if cx.now >= since + dpd.timeout => {
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
                    info!(tunnel = %self.tunnel, "DPD action restart: starting a new Main Mode");
                    self.actions.push(SaAction::Initiate { with_child: true });
                }
                self.close(cx);
            }
            outstanding if cx.now >= idle_since + dpd.delay || outstanding.is_some() => {
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
                self.timers.set(Timer::Dpd, cx.now + retry.min(dpd.delay));
            }
            _ => self.timers.set(Timer::Dpd, idle_since + dpd.delay),
        }
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
    (1..=r.max_tries + 1).map(|n| r.interval(n)).sum()
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
