//! Quick Mode (RFC 2409 section 5.5): one pair of ESP SAs per exchange, under the
//! protection of an established ISAKMP SA.
//!
//! ```text
//! Initiator                        Responder
//! HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]  -->
//!          <--  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, N(RESPONDER-LIFETIME)]
//! HDR*, HASH(3)                                -->
//! ```

#![expect(
    clippy::result_large_err,
    reason = "a rejected transition hands its state back by value, once per message"
)]

use std::time::{Duration, Instant};

use ipsec_crypto::ikev1;
use ipsec_crypto::{DhPrivateKey, SecretBytes};
use ipsec_proto::isakmp::{
    Flags, Message, NotifyPayload, NotifyType, Payload, PayloadType, ProtocolId, DOI_IPSEC,
};
use tracing::{debug, warn};

use super::config::TunnelConfig;
use super::error::{notify, FailureReason, PeerMisbehaved};
use super::ident::{selector, selector_payload};
use super::ike_sa::{ChildRecord, Contents, IkeSa, Rejected, Retransmission, Selectors, NONCE_LEN};
use super::message::{self, exchange, HashedChain};
use super::natt::NATT_PORT;
use super::proposal::{self, encap, Phase2Choice, PROTO_ESP};
use super::timer::{after, part_of, Timer};
use super::{Cx, Event, Transmit};
use crate::child::{ChildSaPair, Encapsulation, EspSaKeys, Lifetime};
use crate::selector::TrafficSelector;

/// Initiator, QM1 sent.
pub(super) struct ExpectQm2 {
    inbound_spi: u32,
    ni_b: Vec<u8>,
    dh: Option<DhPrivateKey>,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    /// Bodies of the IDci and IDcr we sent, which the responder must echo.
    id_bodies: [Vec<u8>; 2],
    encapsulation: u16,
    /// When QM1 went out, to recognise a rekey collision.
    started: Instant,
}

/// Responder, QM2 sent; the SA pair is ready to install once QM3 proves the initiator
/// saw our answer.
pub(super) struct ExpectQm3 {
    ni_b: Vec<u8>,
    nr_b: Vec<u8>,
    pair: ChildSaPair,
    /// When QM1 arrived, to recognise a rekey collision.
    started: Instant,
    /// The initiator set the commit bit: confirm QM3 with CONNECTED.
    commit: bool,
}

/// Initiator, QM3 sent with the commit bit in force: the pair is reported once the
/// responder's CONNECTED arrives (RFC 2408 section 3.1).
pub(super) struct ExpectConnected {
    pair: ChildSaPair,
    started: Instant,
}

enum QmState {
    ExpectQm2(ExpectQm2),
    ExpectQm3(ExpectQm3),
    ExpectConnected(ExpectConnected),
    /// Finished; kept to answer retransmissions.
    Done,
    /// Abandoned; kept to absorb retransmissions.
    Failed,
}

impl QmState {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectQm2(_) => "ExpectQm2",
            Self::ExpectQm3(_) => "ExpectQm3",
            Self::ExpectConnected(_) => "ExpectConnected",
            Self::Done => "Done",
            Self::Failed => "Failed",
        }
    }
}

/// One Quick Mode exchange, by message ID.
pub(super) struct QuickMode {
    pub(super) message_id: u32,
    state: QmState,
    last_in: Option<Vec<u8>>,
    last_out: Option<Transmit>,
    retransmission: Option<Retransmission>,
}

impl QuickMode {
    /// Our inbound SPI while the exchange has not handed it to an event.
    pub(super) fn inbound_spi_pending(&self) -> Option<u32> {
        match &self.state {
            QmState::ExpectQm2(s) => Some(s.inbound_spi),
            QmState::ExpectQm3(s) => Some(s.pair.inbound.spi),
            QmState::ExpectConnected(s) => Some(s.pair.inbound.spi),
            QmState::Done | QmState::Failed => None,
        }
    }

    pub(super) fn is_pending_initiator(&self) -> bool {
        matches!(self.state, QmState::ExpectQm2(_))
    }

    /// Gives up on the exchange and releases its SPI.
    pub(super) fn abandon(&mut self, cx: &mut Cx<'_>) {
        if let Some(spi) = self.inbound_spi_pending() {
            cx.spis.release(spi);
        }
        self.retransmission = None;
        self.set_state(QmState::Failed);
    }

    /// The single place a Quick Mode's state changes, traced.
    fn set_state(&mut self, next: QmState) {
        self.set_state_from(self.state.name(), next);
    }

    /// [`Self::set_state`] for a transition that took the old state out by value.
    fn set_state_from(&mut self, from: &'static str, next: QmState) {
        debug!(
            message_id = format_args!("{:08x}", self.message_id),
            from,
            to = next.name(),
            "Quick Mode state"
        );
        self.state = next;
    }
}

impl IkeSa {
    /// The encapsulation mode to propose or accept: UDP tunnel when a NAT was found
    /// (RFC 3947 section 5.1), else tunnel.
    fn wanted_encapsulation(&self) -> u16 {
        match self.nat_t {
            Some(v) if self.nat.any() => v.udp_tunnel_mode(),
            _ => encap::TUNNEL,
        }
    }

    /// Quick Modes still negotiating.
    pub(super) fn quick_modes_in_progress(&self) -> usize {
        self.quick_modes
            .iter()
            .filter(|q| {
                matches!(
                    q.state,
                    QmState::ExpectQm2(_) | QmState::ExpectQm3(_) | QmState::ExpectConnected(_)
                )
            })
            .count()
    }

    fn fresh_message_id(&self, cx: &mut Cx<'_>) -> u32 {
        loop {
            let m = u32::from_be_bytes(cx.random());
            if m != 0 && !self.quick_modes.iter().any(|q| q.message_id == m) {
                return m;
            }
        }
    }

    /// Whether a Quick Mode we started for `pair` is still running.
    pub(super) fn negotiating_pair(&self, pair: Selectors) -> bool {
        self.quick_modes.iter().any(|q| match &q.state {
            QmState::ExpectQm2(s) => (s.local_ts, s.remote_ts) == pair,
            QmState::ExpectConnected(s) => (s.pair.local_ts, s.pair.remote_ts) == pair,
            _ => false,
        })
    }

    /// Sends QM1 = HDR*, HASH(1), SA, Ni [, KE], IDci, IDcr (RFC 2409 section 5.5).
    pub(super) fn start_quick_mode(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        local_ts: TrafficSelector,
        remote_ts: TrafficSelector,
    ) {
        let Some(inbound_spi) = cx.allocate_spi() else {
            cx.event(Event::Failed {
                tunnel: self.tunnel,
                reason: FailureReason::NoSpiAvailable,
            });
            return;
        };
        let message_id = self.fresh_message_id(cx);
        let encapsulation = self.wanted_encapsulation();
        let p2 = &config.phase2;
        let ni_b = cx.random::<NONCE_LEN>().to_vec();
        let dh = p2.pfs_group.map(|g| DhPrivateKey::generate(g, &mut cx.rng));

        let sa = proposal::phase2_offer(
            &p2.proposals,
            p2.pfs_group,
            encapsulation,
            p2.lifetime,
            p2.lifetime_kilobytes,
            inbound_spi,
        );
        let idci = selector_payload(&local_ts);
        let idcr = selector_payload(&remote_ts);
        let id_bodies = [idci.to_body(), idcr.to_body()];
        let mut payloads = vec![Payload::Sa(sa), Payload::Nonce(ni_b.clone())];
        if let Some(dh) = &dh {
            payloads.push(Payload::KeyExchange(dh.public_key()));
        }
        payloads.push(Payload::Identification(idci));
        payloads.push(Payload::Identification(idcr));

        let Some(keys) = &mut self.keys else {
            return;
        };
        let chain = HashedChain::new(&payloads);
        // HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [ | KE ] [ | IDci | IDcr ])
        let hash = ikev1::qm_hash1(keys.prf, &keys.skeyid_a, message_id, &chain.rest);
        let bytes = match keys.seal(
            self.cky_i,
            self.cky_r,
            exchange::QUICK,
            message_id,
            PayloadType::HASH,
            &chain.with_hash(&hash),
            false,
        ) {
            Ok(b) => b,
            Err(error) => {
                warn!(%error, "cannot encrypt QM1");
                cx.spis.release(inbound_spi);
                return;
            }
        };
        let mut bytes = bytes;
        if p2.commit {
            // The flags are outside HASH(1) and the encryption (RFC 2408 section 3.1).
            if let Some(flags) = bytes.get_mut(FLAGS_OFFSET) {
                *flags |= Flags::COMMIT.0;
            }
        }
        debug!(tunnel = %self.tunnel, message_id = format_args!("{message_id:08x}"),
            commit = p2.commit, local_ts = %local_ts, remote_ts = %remote_ts, encapsulation,
            inbound_spi = format_args!("{inbound_spi:08x}"), "starting Quick Mode");

        let t = self.qm_transmit(bytes);
        cx.transmits.push_back(t.clone());
        self.timers.set(
            Timer::QuickModeRetransmit(message_id),
            after(cx.now, cx.config.retransmit.interval(1)),
        );
        self.quick_modes.push(QuickMode {
            message_id,
            state: QmState::ExpectQm2(ExpectQm2 {
                inbound_spi,
                ni_b,
                dh,
                local_ts,
                remote_ts,
                id_bodies,
                encapsulation,
                started: cx.now,
            }),
            last_in: None,
            last_out: None,
            retransmission: Some(Retransmission {
                transmit: t,
                sent: 1,
            }),
        });
    }

    fn qm_transmit(&self, payload: Vec<u8>) -> Transmit {
        Transmit {
            local: self.local,
            remote: self.remote,
            payload,
            non_esp_marker: self.floated,
        }
    }

    /// Routes a Quick Mode message by message ID: an answer to ours, a retransmission,
    /// or the peer's new QM1.
    pub(super) fn handle_quick_mode(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        msg: &Message<'_>,
        datagram: &[u8],
    ) {
        if !self.is_established() {
            if self.hold_early_quick_mode(datagram) {
                debug!(tunnel = %self.tunnel, "holding a Quick Mode message that overtook AM3");
            } else {
                debug!(tunnel = %self.tunnel, "dropping Quick Mode message: phase 1 not established");
            }
            return;
        }
        let m = msg.header.message_id;
        let Some(pos) = self.quick_modes.iter().position(|q| q.message_id == m) else {
            self.respond_quick_mode(cx, config, msg, datagram);
            return;
        };

        // A retransmitted message gets our last answer again.
        let Some(qm) = self.quick_modes.get_mut(pos) else {
            return;
        };
        if qm.last_in.as_deref() == Some(datagram) {
            if let Some(t) = qm.last_out.clone() {
                debug!(tunnel = %self.tunnel, message_id = format_args!("{m:08x}"),
                    "peer retransmitted; resending our last Quick Mode message");
                cx.transmits.push_back(t);
            }
            return;
        }

        let from = qm.state.name();
        let state = std::mem::replace(&mut qm.state, QmState::Failed);
        let result = match state {
            QmState::ExpectQm2(s) => self
                .on_qm2(cx, config, m, s, msg)
                .map_err(|(s, e)| (QmState::ExpectQm2(s), e)),
            QmState::ExpectQm3(s) => self
                .on_qm3(cx, m, s, msg)
                .map_err(|(s, e)| (QmState::ExpectQm3(s), e)),
            other => Err((
                other,
                Rejected::Ignore("Quick Mode message after the exchange ended".into()),
            )),
        };
        let linger = after(cx.now, cx.config.linger);
        if result.is_ok() {
            self.peer_confirmed_phase1();
        }
        let Some(qm) = self.quick_modes.iter_mut().find(|q| q.message_id == m) else {
            return;
        };
        match result {
            Ok((next, answer)) => {
                let awaiting_connected = matches!(next, QmState::ExpectConnected(_));
                qm.last_in = Some(datagram.to_vec());
                qm.retransmission = None;
                if awaiting_connected {
                    // QM3 is now the request: resent until CONNECTED answers it.
                    qm.retransmission = answer
                        .clone()
                        .map(|transmit| Retransmission { transmit, sent: 1 });
                }
                qm.last_out = answer;
                qm.set_state_from(from, next);
                self.timers.stop(Timer::QuickModeRetransmit(m));
                if awaiting_connected {
                    let wait = after(cx.now, cx.config.retransmit.interval(1));
                    self.timers.set(Timer::QuickModeRetransmit(m), wait);
                } else {
                    self.timers.set(Timer::QuickModeLinger(m), linger);
                }
                if let Some(keys) = &mut self.keys {
                    keys.forget(m);
                }
            }
            Err((state, Rejected::Ignore(why))) => {
                qm.state = state;
                debug!(tunnel = %self.tunnel, message_id = format_args!("{m:08x}"), %why,
                    "dropping Quick Mode message");
            }
            Err((state, Rejected::Fatal(reason))) => {
                qm.state = state;
                qm.abandon(cx);
                self.timers.stop(Timer::QuickModeRetransmit(m));
                self.timers.set(Timer::QuickModeLinger(m), linger);
                warn!(
                    tunnel = %self.tunnel,
                    message_id = format_args!("{m:08x}"),
                    %reason,
                    "Quick Mode failed",
                );
                if let FailureReason::Peer(e) = &reason {
                    self.send_protected_error(cx, e.notify_type(), Vec::new());
                }
                cx.event(Event::Failed {
                    tunnel: self.tunnel,
                    reason,
                });
            }
        }
    }

    /// Sends an error notification about a phase-2 negotiation, protected.
    fn send_protected_error(&mut self, cx: &mut Cx<'_>, notify_type: NotifyType, spi: Vec<u8>) {
        let n = NotifyPayload {
            doi: DOI_IPSEC,
            protocol_id: ProtocolId(PROTO_ESP),
            notify_type,
            spi,
            data: Vec::new(),
        };
        self.send_informational(cx, &[Payload::Notification(n)]);
    }

    /// Decrypts a Quick Mode message, checks HASH is first, and returns the plaintext
    /// with the IV that follows it.
    fn open_quick_mode(&self, msg: &Message<'_>) -> Result<(Vec<u8>, Vec<u8>), Rejected> {
        // Quick Mode is always encrypted (RFC 2409 section 5.5): a clear one is a replay
        // of something else or a forgery, dropped without ending anything.
        if !msg.header.is_encrypted() {
            return Err(Rejected::Ignore("unencrypted Quick Mode message".into()));
        }
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| Rejected::Ignore("no keys".into()))?;
        keys.open(msg.header.message_id, msg.body)
            .map_err(|e| Rejected::Ignore(format!("does not decrypt: {e}")))
    }

    /// QM2: verify HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci | IDcr ]),
    /// check the choice, derive KEYMAT, send QM3 and report the SA pair.
    fn on_qm2(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        m: u32,
        s: ExpectQm2,
        msg: &Message<'_>,
    ) -> Result<(QmState, Option<Transmit>), (ExpectQm2, Rejected)> {
        let (plain, next_iv) = match self.open_quick_mode(msg) {
            Ok(v) => v,
            Err(e) => return Err((s, e)),
        };
        let Some(keys) = &mut self.keys else {
            return Err((s, Rejected::Ignore("no keys".into())));
        };
        let raw = match message::payloads(msg.header.next_payload, &plain) {
            Ok(r) => r,
            Err(e) => return Err((s, Rejected::Ignore(e.to_string()))),
        };
        match raw.first() {
            Some(h) if h.payload_type == PayloadType::HASH => {
                let expected = ikev1::qm_hash2(
                    keys.prf,
                    &keys.skeyid_a,
                    m,
                    &s.ni_b,
                    message::after_first(&plain, &raw),
                );
                if !expected.ct_eq(h.body) {
                    warn!(
                        tunnel = %self.tunnel,
                        message_id = format_args!("{m:08x}"),
                        "QM2 HASH(2) did not verify",
                    );
                    return Err((s, Rejected::Ignore("HASH(2) did not verify".into())));
                }
            }
            _ => return Err((s, Rejected::Ignore("QM2 does not start with HASH".into()))),
        }
        let c = match Contents::decode(&raw) {
            Ok(c) => c,
            Err(e) => return Err((s, PeerMisbehaved::Malformed(e).into())),
        };
        keys.commit_iv(m, next_iv);

        // An authenticated error notification ends the exchange.
        if let Some(n) = c
            .notifies
            .iter()
            .find(|n| (1..=notify::LAST_ERROR).contains(&n.notify_type.0))
        {
            return Err((
                s,
                Rejected::Fatal(FailureReason::PeerNotified {
                    notify_type: n.notify_type.0,
                }),
            ));
        }
        let p2 = &config.phase2;
        let (Some(answer), Some(nr_b)) = (c.sa.as_ref(), c.nonce.clone()) else {
            return Err((
                s,
                PeerMisbehaved::MissingPayload {
                    message: "QM2",
                    payload: "SA or Nonce",
                }
                .into(),
            ));
        };
        let (outbound_spi, choice) = match proposal::check_phase2_answer(
            answer,
            &p2.proposals,
            p2.pfs_group,
            s.encapsulation,
        ) {
            Ok(v) => v,
            Err(e) => return Err((s, e.into())),
        };
        if !c.id_bodies.is_empty() && c.id_bodies.as_slice() != s.id_bodies.as_slice() {
            let e = PeerMisbehaved::SelectorsOutsidePolicy {
                proposed: c
                    .ids
                    .iter()
                    .map(|i| super::ident::ShowId(i).to_string())
                    .collect::<Vec<_>>()
                    .join(" / "),
                policy: format!("{} / {}", s.local_ts, s.remote_ts),
            };
            return Err((s, e.into()));
        }
        let g_qm_xy = match (&s.dh, &c.ke) {
            (None, _) => None,
            (Some(dh), Some(ke)) => match dh.shared_secret(ke) {
                Ok(k) => Some(k),
                Err(e) => {
                    return Err((
                        s,
                        PeerMisbehaved::InvalidKeyExchange {
                            detail: e.to_string(),
                        }
                        .into(),
                    ))
                }
            },
            (Some(_), None) => {
                return Err((
                    s,
                    PeerMisbehaved::MissingPayload {
                        message: "QM2",
                        payload: "KE (PFS)",
                    }
                    .into(),
                ))
            }
        };

        // RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1): the responder's shorter life wins.
        // The responder may shorten the life we proposed, never extend it.
        let ours = p2.lifetime.as_secs();
        let mut life_seconds = Some(choice.life_seconds.unwrap_or(ours).min(ours));
        let mut life_kilobytes = match p2.lifetime_kilobytes {
            Some(o) => Some(choice.life_kilobytes.unwrap_or(o).min(o)),
            None => choice.life_kilobytes,
        };
        for n in c
            .notifies
            .iter()
            .filter(|n| n.notify_type.0 == notify::RESPONDER_LIFETIME)
        {
            let (secs, kb) = responder_lifetime(&n.data);
            debug!(tunnel = %self.tunnel, ?secs, ?kb, "peer sent RESPONDER-LIFETIME");
            life_seconds = min_opt(life_seconds, secs);
            life_kilobytes = min_opt(life_kilobytes, kb);
        }

        // HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
        let hash3 = ikev1::qm_hash3(keys.prf, &keys.skeyid_a, m, &s.ni_b, &nr_b);
        let chain = HashedChain::new(&[]);
        let bytes = match keys.seal(
            self.cky_i,
            self.cky_r,
            exchange::QUICK,
            m,
            PayloadType::HASH,
            &chain.with_hash(&hash3),
            false,
        ) {
            Ok(b) => b,
            Err(e) => return Err((s, Rejected::Ignore(format!("cannot encrypt QM3: {e}")))),
        };
        let pair = self.child_pair(
            &choice,
            s.inbound_spi,
            outbound_spi,
            g_qm_xy.as_ref(),
            (&s.ni_b, &nr_b),
            (s.local_ts, s.remote_ts),
            Lifetime {
                seconds: life_seconds,
                kilobytes: life_kilobytes,
            },
        );
        let t = self.qm_transmit(bytes);
        cx.transmits.push_back(t.clone());
        // The commit bit, ours in QM1 or the responder's in QM2 (RFC 2408 section 3.1):
        // the pair waits for the responder's CONNECTED.
        if config.phase2.commit || msg.header.flags.contains(Flags::COMMIT) {
            debug!(tunnel = %self.tunnel, message_id = format_args!("{m:08x}"),
                "commit bit set: the pair waits for CONNECTED");
            let started = s.started;
            return Ok((
                QmState::ExpectConnected(ExpectConnected { pair, started }),
                Some(t),
            ));
        }
        self.report_child(cx, pair, true, s.started);
        Ok((QmState::Done, Some(t)))
    }

    /// The peer's QM1 on an established SA: choose, answer QM2, await QM3.
    fn respond_quick_mode(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        msg: &Message<'_>,
        datagram: &[u8],
    ) {
        let m = msg.header.message_id;
        match self.answer_qm1(cx, config, msg) {
            Ok((state, t)) => {
                self.peer_confirmed_phase1();
                let linger = after(cx.now, cx.config.retransmit.interval(1));
                self.timers.set(Timer::QuickModeRetransmit(m), linger);
                self.quick_modes.push(QuickMode {
                    message_id: m,
                    state: QmState::ExpectQm3(state),
                    last_in: Some(datagram.to_vec()),
                    last_out: Some(t.clone()),
                    retransmission: Some(Retransmission {
                        transmit: t,
                        sent: 1,
                    }),
                });
            }
            Err(Rejected::Ignore(why)) => {
                debug!(
                    tunnel = %self.tunnel,
                    message_id = format_args!("{m:08x}"),
                    %why,
                    "dropping QM1",
                );
            }
            Err(Rejected::Fatal(reason)) => {
                warn!(
                    tunnel = %self.tunnel,
                    message_id = format_args!("{m:08x}"),
                    %reason,
                    "refusing QM1",
                );
                if let FailureReason::Peer(e) = &reason {
                    self.send_protected_error(cx, e.notify_type(), Vec::new());
                }
                cx.event(Event::Failed {
                    tunnel: self.tunnel,
                    reason,
                });
                // Remember the message ID so retransmissions of this QM1 are absorbed.
                self.quick_modes.push(QuickMode {
                    message_id: m,
                    state: QmState::Failed,
                    last_in: Some(datagram.to_vec()),
                    last_out: None,
                    retransmission: None,
                });
                self.timers
                    .set(Timer::QuickModeLinger(m), after(cx.now, cx.config.linger));
            }
        }
    }

    /// QM1 processing for [`Self::respond_quick_mode`]; returns the next state and QM2.
    fn answer_qm1(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        msg: &Message<'_>,
    ) -> Result<(ExpectQm3, Transmit), Rejected> {
        let m = msg.header.message_id;
        let (plain, next_iv) = self.open_quick_mode(msg)?;
        let keys = self
            .keys
            .as_ref()
            .ok_or_else(|| Rejected::Ignore("no keys".into()))?;
        let raw = message::payloads(msg.header.next_payload, &plain)
            .map_err(|e| Rejected::Ignore(e.to_string()))?;
        match raw.first() {
            Some(h) if h.payload_type == PayloadType::HASH => {
                let expected = ikev1::qm_hash1(
                    keys.prf,
                    &keys.skeyid_a,
                    m,
                    message::after_first(&plain, &raw),
                );
                if !expected.ct_eq(h.body) {
                    warn!(
                        tunnel = %self.tunnel,
                        message_id = format_args!("{m:08x}"),
                        "QM1 HASH(1) did not verify",
                    );
                    return Err(Rejected::Ignore("HASH(1) did not verify".into()));
                }
            }
            _ => return Err(Rejected::Ignore("QM1 does not start with HASH".into())),
        }
        let c = Contents::decode(&raw).map_err(PeerMisbehaved::Malformed)?;
        let offer = Contents::require(c.sa.as_ref(), "QM1", "SA")?;
        let ni_b = Contents::require(c.nonce.clone(), "QM1", "Nonce")?;

        // Selectors: the peer's IDci is its side (our remote), IDcr ours; absent IDs mean
        // the two phase-1 addresses (RFC 2409 section 5.5).
        let (remote_ts, local_ts) = match (c.ids.first(), c.ids.get(1)) {
            (Some(ci), Some(cr)) => match (selector(ci), selector(cr)) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(PeerMisbehaved::SelectorsOutsidePolicy {
                        proposed: "ID types that name no addresses".into(),
                        policy: policy_text(config),
                    }
                    .into())
                }
            },
            _ => (
                TrafficSelector::from_addr(self.remote.ip()),
                TrafficSelector::from_addr(self.local.ip()),
            ),
        };
        let inside = config.remote_ts.iter().any(|t| t.covers(&remote_ts))
            && config.local_ts.iter().any(|t| t.covers(&local_ts));
        if !inside {
            return Err(PeerMisbehaved::SelectorsOutsidePolicy {
                proposed: format!("{remote_ts} / {local_ts}"),
                policy: policy_text(config),
            }
            .into());
        }

        let p2 = &config.phase2;
        let mut modes = vec![encap::TUNNEL];
        if let Some(v) = self.nat_t {
            modes.push(v.udp_tunnel_mode());
        }
        let (outbound_spi, mut choice) =
            proposal::choose_phase2(offer, &p2.proposals, p2.pfs_group, &modes)?;
        debug!(
            tunnel = %self.tunnel,
            chosen = %proposal::describe_p2(&choice.proposal, choice.group),
            encapsulation = choice.encapsulation,
            "QM1: choosing",
        );

        let dh = p2.pfs_group.map(|g| DhPrivateKey::generate(g, &mut cx.rng));
        let g_qm_xy = match (&dh, &c.ke) {
            (None, _) => None,
            (Some(dh), Some(ke)) => {
                Some(
                    dh.shared_secret(ke)
                        .map_err(|e| PeerMisbehaved::InvalidKeyExchange {
                            detail: e.to_string(),
                        })?,
                )
            }
            (Some(_), None) => {
                return Err(PeerMisbehaved::MissingPayload {
                    message: "QM1",
                    payload: "KE (PFS)",
                }
                .into())
            }
        };

        // Our lifetime caps the peer's; a longer offer is answered with
        // RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1).
        let ours = p2.lifetime.as_secs();
        let mut notify_lifetime = false;
        match choice.life_seconds {
            Some(s) if s <= ours => {}
            _ => {
                choice.life_seconds = Some(ours);
                notify_lifetime = true;
            }
        }
        if let Some(k) = p2.lifetime_kilobytes {
            if choice.life_kilobytes.is_none_or(|theirs| theirs > k) {
                choice.life_kilobytes = Some(k);
                notify_lifetime = true;
            }
        }

        let Some(inbound_spi) = cx.allocate_spi() else {
            return Err(Rejected::Fatal(FailureReason::NoSpiAvailable));
        };
        let nr_b = cx.random::<NONCE_LEN>().to_vec();
        let number = offer.proposals.first().map_or(1, |p| p.number);
        let mut sa = proposal::phase2_sa(vec![proposal::phase2_transform(1, &choice)], inbound_spi);
        if let Some(p) = sa.proposals.first_mut() {
            p.number = number;
        }
        let mut payloads = vec![Payload::Sa(sa), Payload::Nonce(nr_b.clone())];
        if let Some(dh) = &dh {
            payloads.push(Payload::KeyExchange(dh.public_key()));
        }
        for id in &c.ids {
            payloads.push(Payload::Identification(id.clone()));
        }
        if notify_lifetime {
            payloads.push(Payload::Notification(NotifyPayload {
                doi: DOI_IPSEC,
                protocol_id: ProtocolId(PROTO_ESP),
                notify_type: NotifyType(notify::RESPONDER_LIFETIME),
                spi: outbound_spi.to_be_bytes().to_vec(),
                data: lifetime_attributes(choice.life_seconds, choice.life_kilobytes),
            }));
        }

        let pair = self.child_pair(
            &choice,
            inbound_spi,
            outbound_spi,
            g_qm_xy.as_ref(),
            (&ni_b, &nr_b),
            (local_ts, remote_ts),
            Lifetime {
                seconds: choice.life_seconds,
                kilobytes: choice.life_kilobytes,
            },
        );
        let Some(keys) = &mut self.keys else {
            cx.spis.release(inbound_spi);
            return Err(Rejected::Ignore("no keys".into()));
        };
        keys.commit_iv(m, next_iv);
        let chain = HashedChain::new(&payloads);
        // HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci | IDcr ])
        let hash = ikev1::qm_hash2(keys.prf, &keys.skeyid_a, m, &ni_b, &chain.rest);
        let bytes = keys
            .seal(
                self.cky_i,
                self.cky_r,
                exchange::QUICK,
                m,
                PayloadType::HASH,
                &chain.with_hash(&hash),
                false,
            )
            .map_err(|e| Rejected::Ignore(format!("cannot encrypt QM2: {e}")))?;
        let t = self.qm_transmit(bytes);
        cx.transmits.push_back(t.clone());
        Ok((
            ExpectQm3 {
                ni_b,
                nr_b,
                pair,
                started: cx.now,
                commit: msg.header.flags.contains(Flags::COMMIT),
            },
            t,
        ))
    }

    /// QM3: verify HASH(3) and install.
    fn on_qm3(
        &mut self,
        cx: &mut Cx<'_>,
        m: u32,
        s: ExpectQm3,
        msg: &Message<'_>,
    ) -> Result<(QmState, Option<Transmit>), (ExpectQm3, Rejected)> {
        let (plain, next_iv) = match self.open_quick_mode(msg) {
            Ok(v) => v,
            Err(e) => return Err((s, e)),
        };
        let Some(keys) = &mut self.keys else {
            return Err((s, Rejected::Ignore("no keys".into())));
        };
        let raw = match message::payloads(msg.header.next_payload, &plain) {
            Ok(r) => r,
            Err(e) => return Err((s, Rejected::Ignore(e.to_string()))),
        };
        let expected = ikev1::qm_hash3(keys.prf, &keys.skeyid_a, m, &s.ni_b, &s.nr_b);
        match raw.first() {
            Some(h) if h.payload_type == PayloadType::HASH && expected.ct_eq(h.body) => {}
            _ => {
                warn!(
                    tunnel = %self.tunnel,
                    message_id = format_args!("{m:08x}"),
                    "QM3 HASH(3) did not verify",
                );
                return Err((s, Rejected::Ignore("HASH(3) did not verify".into())));
            }
        }
        keys.commit_iv(m, next_iv);
        let inbound = s.pair.inbound.spi;
        self.report_child(cx, s.pair, false, s.started);
        if !s.commit {
            return Ok((QmState::Done, None));
        }
        // RFC 2408 section 3.1: the initiator set the commit bit and waits for our
        // CONNECTED, sent again for each retransmitted QM3.
        debug!(tunnel = %self.tunnel, message_id = format_args!("{m:08x}"),
            "commit bit set: confirming QM3 with CONNECTED");
        let n = NotifyPayload {
            doi: DOI_IPSEC,
            protocol_id: ProtocolId(PROTO_ESP),
            notify_type: NotifyType(notify::CONNECTED),
            spi: inbound.to_be_bytes().to_vec(),
            data: Vec::new(),
        };
        let t = self.informational_transmit(cx, &[Payload::Notification(n)]);
        if let Some(t) = &t {
            cx.transmits.push_back(t.clone());
        }
        Ok((QmState::Done, t))
    }

    /// KEYMAT for both directions (RFC 2409 section 5.5), split into cipher and integrity
    /// keys, and the pair the data plane installs.
    #[expect(
        clippy::too_many_arguments,
        reason = "the inputs of RFC 2409 KEYMAT, each named"
    )]
    fn child_pair(
        &self,
        choice: &Phase2Choice,
        inbound_spi: u32,
        outbound_spi: u32,
        g_qm_xy: Option<&SecretBytes>,
        nonces: (&[u8], &[u8]),
        selectors: (TrafficSelector, TrafficSelector),
        hard_lifetime: Lifetime,
    ) -> ChildSaPair {
        let (ni_b, nr_b) = nonces;
        let p = choice.proposal;
        let (enc_len, int_len) = (p.encryption.key_len(), p.integrity.key_len());
        let keys_for = |spi: u32| {
            let (prf, d) = match &self.keys {
                Some(k) => (k.prf, &k.skeyid_d),
                None => return None,
            };
            // KEYMAT = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b), expanded
            let km = ikev1::keymat(
                prf,
                d,
                g_qm_xy.map(SecretBytes::expose),
                PROTO_ESP,
                spi,
                ni_b,
                nr_b,
                enc_len + int_len,
            );
            let (e, i) = km.expose().split_at(enc_len.min(km.len()));
            Some(EspSaKeys {
                spi,
                encryption: p.encryption,
                encryption_key: SecretBytes::from_slice(e),
                integrity: p.integrity,
                integrity_key: SecretBytes::from_slice(i),
            })
        };
        let empty = |spi| EspSaKeys {
            spi,
            encryption: p.encryption,
            encryption_key: SecretBytes::default(),
            integrity: p.integrity,
            integrity_key: SecretBytes::default(),
        };
        let udp = choice.encapsulation != encap::TUNNEL;
        let (mut local, remote) = (self.local, self.remote);
        if udp && local.port() != NATT_PORT {
            local.set_port(NATT_PORT);
        }
        ChildSaPair {
            local,
            remote,
            inbound: keys_for(inbound_spi).unwrap_or_else(|| empty(inbound_spi)),
            outbound: keys_for(outbound_spi).unwrap_or_else(|| empty(outbound_spi)),
            local_ts: selectors.0,
            remote_ts: selectors.1,
            encapsulation: if udp {
                Encapsulation::UdpTunnel
            } else {
                Encapsulation::Tunnel
            },
            hard_lifetime,
        }
    }

    fn report_child(
        &mut self,
        cx: &mut Cx<'_>,
        pair: ChildSaPair,
        initiated: bool,
        started: Instant,
    ) {
        debug!(tunnel = %self.tunnel, inbound_spi = format_args!("{:08x}", pair.inbound.spi),
            outbound_spi = format_args!("{:08x}", pair.outbound.spi), local_ts = %pair.local_ts,
            remote_ts = %pair.remote_ts, encapsulation = ?pair.encapsulation,
            cipher = ?pair.inbound.encryption, integrity = ?pair.inbound.integrity,
            "ESP SA pair established");

        // A newer pair for the same selectors replaces older ones: they no longer need a
        // replacement of their own. A pair for the same selectors that a Quick Mode in
        // the other direction established while this one ran is a rekey collision
        // instead (both ends started one at once): both ends keep the same one of the
        // two, the one with the larger `collision_key`, and delete the other.
        let new_key = collision_key(pair.inbound.spi, pair.outbound.spi);
        let mut new_lost = false;
        let mut to_delete = None;
        for old in self.children.iter_mut().filter(|old| {
            old.local_ts == pair.local_ts && old.remote_ts == pair.remote_ts && !old.superseded
        }) {
            let collision = old.established_at > started && old.initiated != initiated;
            if collision && new_key < collision_key(old.inbound, old.outbound) {
                debug!(tunnel = %self.tunnel, kept = format_args!("{:08x}", old.inbound),
                    dropped = format_args!("{:08x}", pair.inbound.spi),
                    "rekey collision: keeping the earlier pair");
                new_lost = true;
                continue;
            }
            if collision {
                debug!(tunnel = %self.tunnel, kept = format_args!("{:08x}", pair.inbound.spi),
                    dropped = format_args!("{:08x}", old.inbound),
                    "rekey collision: keeping the new pair");
                to_delete = Some(old.inbound);
            }
            old.superseded = true;
            self.timers.stop(Timer::ChildRekey(old.inbound));
        }

        // Rekey before the hard lifetime: the Quick Mode initiator at 90 %, the responder
        // at 95 % so that normally only one side starts the replacement.
        let mut rekey_at = None;
        if let Some(secs) = pair.hard_lifetime.seconds {
            let life = Duration::from_secs(secs);
            let fraction = if initiated { 0.90 } else { 0.95 };
            let at = after(cx.now, part_of(life, fraction));
            rekey_at = Some(at);
            if !new_lost {
                self.timers.set(Timer::ChildRekey(pair.inbound.spi), at);
            }
            self.timers
                .set(Timer::ChildExpire(pair.inbound.spi), after(cx.now, life));
        }
        if new_lost {
            to_delete = Some(pair.inbound.spi);
        }
        self.children.push(ChildRecord {
            inbound: pair.inbound.spi,
            outbound: pair.outbound.spi,
            local_ts: pair.local_ts,
            remote_ts: pair.remote_ts,
            established_at: cx.now,
            initiated,
            rekey_at,
            superseded: new_lost,
        });
        cx.event(Event::ChildSaEstablished {
            tunnel: self.tunnel,
            pair,
        });

        // The loser goes now, with a Delete: the peer may have judged the overlap a plain
        // renewal (reordering, or its Quick Mode started just after ours finished there)
        // and would otherwise keep it. When both ends saw the collision, each deletes it
        // and the second Delete names an SPI already gone, which is ignored.
        if let Some(spi) = to_delete {
            if let Some(pos) = self.children.iter().position(|c| c.inbound == spi) {
                self.drop_child(cx, pos, true);
            }
        }
    }

    /// The responder's CONNECTED (RFC 2408 section 3.1) for a Quick Mode of ours with the
    /// commit bit: the pair it names (by either SPI; the first waiting one if it names
    /// none) is ready. Returns whether one was waiting.
    pub(super) fn on_connected(&mut self, cx: &mut Cx<'_>, spi: &[u8]) -> bool {
        let named = <[u8; 4]>::try_from(spi).ok().map(u32::from_be_bytes);
        let Some(qm) = self.quick_modes.iter_mut().find(|q| match &q.state {
            QmState::ExpectConnected(s) => {
                named.is_none_or(|n| n == s.pair.outbound.spi || n == s.pair.inbound.spi)
            }
            _ => false,
        }) else {
            return false;
        };
        let m = qm.message_id;
        let from = qm.state.name();
        let QmState::ExpectConnected(s) = std::mem::replace(&mut qm.state, QmState::Done) else {
            return false;
        };
        qm.set_state_from(from, QmState::Done);
        qm.retransmission = None;
        self.timers.stop(Timer::QuickModeRetransmit(m));
        self.timers
            .set(Timer::QuickModeLinger(m), after(cx.now, cx.config.linger));
        self.report_child(cx, s.pair, true, s.started);
        true
    }

    /// Resends the Quick Mode message awaiting an answer, or gives up after
    /// `max_tries` resends with [`Event::Failed`] (`Timeout`).
    ///
    /// Giving up while awaiting CONNECTED (RFC 2408 section 3.1: the side that did not
    /// set the commit bit waits for it before using the SA) also sends a Delete for the
    /// pair (RFC 2408 section 3.15): the peer installed it when QM3 arrived, and without
    /// the Delete it would keep sending on an SA we never installed until its lifetime
    /// ends. A peer that never got QM3 ignores the Delete for an SPI it does not know.
    pub(super) fn retransmit_quick_mode(&mut self, cx: &mut Cx<'_>, m: u32) {
        let max = cx.config.retransmit.max_tries;
        let am3 = self.am3_to_resend();
        let Some(qm) = self.quick_modes.iter_mut().find(|q| q.message_id == m) else {
            return;
        };
        let Some(r) = &mut qm.retransmission else {
            return;
        };
        if r.sent > max {
            let sent = r.sent;
            let (awaiting, installed_by_peer) = match &qm.state {
                QmState::ExpectQm2(_) => ("QM2", None),
                QmState::ExpectConnected(s) => ("CONNECTED", Some(s.pair.inbound.spi)),
                _ => ("QM3", None),
            };
            qm.abandon(cx);
            self.timers
                .set(Timer::QuickModeLinger(m), after(cx.now, cx.config.linger));
            warn!(
                tunnel = %self.tunnel,
                message_id = format_args!("{m:08x}"),
                awaiting,
                "Quick Mode timed out",
            );
            if let Some(inbound) = installed_by_peer {
                self.send_esp_delete(cx, inbound);
            }
            cx.event(Event::Failed {
                tunnel: self.tunnel,
                reason: FailureReason::Timeout { awaiting, sent },
            });
            return;
        }
        r.sent += 1;
        debug!(
            tunnel = %self.tunnel,
            message_id = format_args!("{m:08x}"),
            sent = r.sent,
            "retransmitting Quick Mode",
        );
        let qm1 = r.transmit.clone();
        if let Some(am3) = am3 {
            debug!(tunnel = %self.tunnel, "no answer since AM3: sending AM3 again");
            cx.transmits.push_back(am3);
        }
        cx.transmits.push_back(qm1);
        let wait = cx.config.retransmit.interval(r.sent);
        self.timers
            .set(Timer::QuickModeRetransmit(m), after(cx.now, wait));
    }

    pub(super) fn forget_quick_mode(&mut self, m: u32) {
        self.quick_modes.retain(|q| q.message_id != m);
        if let Some(keys) = &mut self.keys {
            keys.forget(m);
        }
    }
}

fn policy_text(config: &TunnelConfig) -> String {
    let side = |v: &[TrafficSelector]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{} / {}", side(&config.remote_ts), side(&config.local_ts))
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Life type/duration attribute pairs of a RESPONDER-LIFETIME notification (RFC 2407
/// section 4.6.3.1), as (seconds, kilobytes). Attributes are basic (TV, AF bit set) or
/// variable (TLV) with a value of up to 8 bytes; anything malformed ends the list.
fn responder_lifetime(mut data: &[u8]) -> (Option<u64>, Option<u64>) {
    let (mut secs, mut kb, mut life_type) = (None, None, None);
    while let Some((&[t0, t1, l0, l1], rest)) = data.split_first_chunk::<4>() {
        let t = u16::from_be_bytes([t0, t1]);
        let (v, rest) = if t & 0x8000 != 0 {
            (u64::from(u16::from_be_bytes([l0, l1])), rest)
        } else {
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            let (Some(bytes), Some(rest)) = (rest.get(..len), rest.get(len..)) else {
                break;
            };
            if len > 8 {
                break;
            }
            (
                bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)),
                rest,
            )
        };
        data = rest;
        match (t & 0x7fff, life_type) {
            (1, _) => life_type = Some(v),
            (2, Some(1)) => secs = Some(v),
            (2, Some(2)) => kb = Some(v),
            _ => {}
        }
    }
    (secs, kb)
}

/// The data of our RESPONDER-LIFETIME: SA-Life-Type / SA-Life-Duration pairs (RFC 2407
/// section 4.5), each duration basic when it fits 16 bits, else a 4-byte variable one.
fn lifetime_attributes(secs: Option<u64>, kilobytes: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for (life_type, value) in [(1u8, secs), (2u8, kilobytes)] {
        let Some(v) = value else {
            continue;
        };
        out.extend_from_slice(&[0x80, 0x01, 0x00, life_type]);
        match u16::try_from(v) {
            Ok(v) => {
                out.extend_from_slice(&[0x80, 0x02]);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Err(_) => {
                out.extend_from_slice(&[0x00, 0x02, 0x00, 0x04]);
                out.extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
    }
    out
}

/// Orders the pairs of a rekey collision the same way at both ends: each end sees the
/// same two SPIs of a pair, only swapped between inbound and outbound.
fn collision_key(inbound: u32, outbound: u32) -> (u32, u32) {
    (inbound.min(outbound), inbound.max(outbound))
}

/// Offset of the flags octet in the ISAKMP header (RFC 2408 section 3.1).
const FLAGS_OFFSET: usize = 19;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_lifetime_attributes_round_trip() {
        assert_eq!(
            responder_lifetime(&lifetime_attributes(Some(1200), None)),
            (Some(1200), None)
        );
        assert_eq!(
            responder_lifetime(&[0x80, 1, 0, 2, 0x80, 2, 0x10, 0]),
            (None, Some(4096))
        );
        // A day in seconds needs the variable form; both kinds together.
        let both = lifetime_attributes(Some(86_400), Some(50_000));
        assert_eq!(
            hex::encode(&both),
            "80010001000200040001518080010002800 2c350".replace(' ', "")
        );
        assert_eq!(responder_lifetime(&both), (Some(86_400), Some(50_000)));
    }

    #[test]
    fn responder_lifetime_stops_at_malformed_attributes() {
        // A variable attribute longer than the data, then one longer than 8 bytes.
        assert_eq!(
            responder_lifetime(&[0x80, 1, 0, 1, 0, 2, 0, 9, 1]),
            (None, None)
        );
        let mut long = vec![0x80, 1, 0, 1, 0, 2, 0, 9];
        long.extend_from_slice(&[0; 9]);
        assert_eq!(responder_lifetime(&long), (None, None));
    }
}
