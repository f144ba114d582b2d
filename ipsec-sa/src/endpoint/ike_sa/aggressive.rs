//! Aggressive Mode with pre-shared keys (RFC 2409 section 5.4), both roles:
//!
//! ```text
//! Initiator                                Responder
//! HDR, SA, KE, Ni, IDii, VID...          -->
//!        <--  HDR, SA, KE, Nr, IDir, VID..., NAT-D, NAT-D, HASH_R
//! HDR*, HASH_I [, NAT-D, NAT-D]          -->
//! ```
//!
//! Three messages instead of six, at a price: the identities travel in clear and a
//! passive observer of AM2 can test guesses of the pre-shared key offline against HASH_R.
//! We therefore answer Aggressive Mode only for tunnels configured for it. The last
//! message is sent encrypted, as strongSwan does (RFC 2408 section 3.1 allows it).

use std::net::SocketAddr;

use ipsec_crypto::{ikev1, DhGroup, DhPrivateKey};
use ipsec_proto::isakmp::{Message, Payload, ProtocolId, SaPayload};
use tracing::{debug, warn};

use super::super::config::{Phase1Mode, TunnelConfig};
use super::super::error::{FailureReason, PeerMisbehaved};
use super::super::ident::{identity_matches, identity_payload, ShowId};
use super::super::message::{self, exchange};
use super::super::natt::{self, NatTVariant, NATT_PORT};
use super::super::proposal::{self, Phase1Choice, PROTO_ISAKMP};
use super::super::timer::{after, Timer};
use super::super::{Cx, Event, TunnelId};
use super::{
    derive_keys, negotiation_budget, nonzero_cookie, plain_contents, seal_chain, Established,
    IkeSa, Phase1State, Rejected, Role, Step, NONCE_LEN,
};

/// Initiator, AM1 sent.
pub(in crate::endpoint) struct ExpectAm2 {
    sai_b: Vec<u8>,
    dh: DhPrivateKey,
    ni_b: Vec<u8>,
    idii_b: Vec<u8>,
}

/// Responder, AM2 sent.
pub(in crate::endpoint) struct ExpectAm3 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    g_xi: Vec<u8>,
    g_xr: Vec<u8>,
    idii_b: Vec<u8>,
    /// The addresses AM1 travelled between, which AM3's NAT-D hashes describe.
    am1_addrs: (SocketAddr, SocketAddr),
}

impl IkeSa {
    /// Builds and sends AM1. Aggressive Mode carries the KE in its first message, so only
    /// the proposals with the first proposal's group are offered.
    pub(super) fn send_am1(&mut self, cx: &mut Cx<'_>, config: &TunnelConfig) -> Phase1State {
        let group = config
            .phase1
            .proposals
            .first()
            .map_or(DhGroup::Modp2048, |p| p.group);
        let proposals: Vec<_> = config
            .phase1
            .proposals
            .iter()
            .copied()
            .filter(|p| p.group == group)
            .collect();
        let offer = proposal::phase1_offer(&proposals, config.phase1.lifetime);
        let sa_payload = Payload::Sa(offer);
        let sai_b = sa_payload.body_bytes();
        let dh = DhPrivateKey::generate(group, &mut cx.rng);
        let ni_b = cx.random::<NONCE_LEN>().to_vec();
        let id = identity_payload(&config.local_identity());
        let idii_b = id.to_body();

        let mut payloads = vec![
            sa_payload,
            Payload::KeyExchange(dh.public_key()),
            Payload::Nonce(ni_b.clone()),
            Payload::Identification(id),
        ];
        if config.nat_traversal {
            for vid in [natt::VID_RFC3947, natt::VID_DRAFT_02_N, natt::VID_DRAFT_02] {
                payloads.push(Payload::VendorId(vid.to_vec()));
            }
        }
        payloads.push(Payload::VendorId(natt::VID_DPD.to_vec()));
        debug!(tunnel = %self.tunnel, remote = %self.remote, group = group.id(), "sending AM1");
        let bytes = message::plain(self.cky_i, [0; 8], exchange::AGGRESSIVE, 0, &payloads);
        self.send_request(cx, bytes);
        Phase1State::ExpectAm2(ExpectAm2 {
            sai_b,
            dh,
            ni_b,
            idii_b,
        })
    }

    /// AM2: check the choice and HASH_R, derive keys, send AM3 and finish.
    pub(super) fn on_am2(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        s: ExpectAm2,
        msg: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Step<ExpectAm2> {
        let cky_r = msg.header.responder_cookie;
        if cky_r == [0; 8] {
            return Err((
                s,
                Rejected::Ignore("AM2 with a zero responder cookie".into()),
            ));
        }
        let c = match plain_contents(msg) {
            Ok(c) => c,
            Err(e) => return Err((s, e)),
        };
        let missing = |payload| PeerMisbehaved::MissingPayload {
            message: "AM2",
            payload,
        };
        let (Some(answer), Some(g_xr), Some(nr_b), Some(id), Some(idir_b), Some(hash)) = (
            c.sa.as_ref(),
            c.ke.as_ref(),
            c.nonce.as_ref(),
            c.ids.first(),
            c.id_bodies.first(),
            c.hash.as_ref(),
        ) else {
            return Err((s, missing("SA, KE, Nonce, ID or HASH").into()));
        };
        let choice = match proposal::check_phase1_answer(answer, &config.phase1.proposals) {
            Ok(c) if c.proposal.group == s.dh.group() => c,
            Ok(c) => {
                let e = PeerMisbehaved::ChoseUnofferedTransform {
                    what: "phase 1",
                    detail: format!("group {} in Aggressive Mode", c.proposal.group.id()),
                };
                return Err((s, e.into()));
            }
            Err(e) => return Err((s, e.into())),
        };
        let g_xy = match s.dh.shared_secret(g_xr) {
            Ok(k) => k,
            Err(e) => {
                let e = PeerMisbehaved::InvalidKeyExchange {
                    detail: e.to_string(),
                };
                return Err((s, e.into()));
            }
        };
        let p = choice.proposal;
        let g_xi = s.dh.public_key();
        let keys = match derive_keys(
            config,
            p,
            &s.ni_b,
            nr_b,
            &g_xy,
            &self.cky_i,
            &cky_r,
            &g_xi,
            g_xr,
        ) {
            Ok(k) => k,
            Err(e) => return Err((s, e)),
        };

        // HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)
        let expected = ikev1::hash_r(
            p.hash,
            &keys.skeyid,
            g_xr,
            &g_xi,
            &cky_r,
            &self.cky_i,
            &s.sai_b,
            idir_b,
        );
        if !expected.ct_eq(hash) {
            return Err((
                s,
                PeerMisbehaved::Phase1HashMismatch { message: "AM2" }.into(),
            ));
        }
        let want = config.remote_identity();
        if !identity_matches(&want, id) {
            let e = PeerMisbehaved::UnexpectedIdentity {
                expected: want.to_string(),
                got: ShowId(id).to_string(),
            };
            return Err((s, e.into()));
        }

        // Accepted: from here on the SA is keyed by both cookies.
        self.cky_r = cky_r;
        self.nat_t = if config.nat_traversal {
            NatTVariant::from_vendor_ids(c.vendor_ids.iter().map(Vec::as_slice))
        } else {
            None
        };
        self.peer_dpd = natt::has_dpd_vendor_id(c.vendor_ids.iter().map(Vec::as_slice));
        self.detect_nat(&c, p.hash, local, remote);

        // AM3 = HDR*, HASH_I [, NAT-D, NAT-D]; the NAT-D hashes describe the addresses of
        // AM1/AM2, so they are computed before the float (RFC 3947 section 3.2).
        let hash_i = ikev1::hash_i(
            p.hash,
            &keys.skeyid,
            &g_xi,
            g_xr,
            &self.cky_i,
            &self.cky_r,
            &s.sai_b,
            &s.idii_b,
        );
        let mut payloads = vec![Payload::Hash(hash_i.as_bytes().to_vec())];
        self.push_nat_d(&mut payloads, p.hash);
        if self.nat_t.is_some() && self.nat.any() {
            self.local.set_port(NATT_PORT);
            self.remote.set_port(NATT_PORT);
            self.floated = true;
            debug!(tunnel = %self.tunnel, local = %self.local, remote = %self.remote,
                "floating IKE to UDP 4500");
        }
        let mut keys = keys;
        let bytes = match seal_chain(
            &mut keys,
            self.cky_i,
            self.cky_r,
            exchange::AGGRESSIVE,
            0,
            &payloads,
        ) {
            Ok(b) => b,
            Err(e) => return Err((s, e)),
        };
        self.keys = Some(keys);
        self.send_answer(cx, bytes);
        self.am3_unconfirmed = true;
        Ok(Phase1State::Established(Established { choice }))
    }

    /// Answers an unsolicited AM1 with AM2, if the tunnel is configured for Aggressive Mode.
    pub(super) fn respond_aggressive(
        cx: &mut Cx<'_>,
        tunnel: TunnelId,
        config: &TunnelConfig,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &Message<'_>,
        datagram: &[u8],
    ) -> Option<Self> {
        if config.phase1.mode != Phase1Mode::Aggressive {
            warn!(%tunnel, %remote,
                "refusing Aggressive Mode: the tunnel is configured for Main Mode");
            return None;
        }
        let mut sa = Self::new(tunnel, Role::Responder, local, remote);
        sa.force_encapsulation = config.force_udp_encapsulation;
        sa.cky_i = msg.header.initiator_cookie;
        let Ok(c) = plain_contents(msg) else {
            debug!(%remote, "dropping AM1: malformed");
            return None;
        };
        let (Some(offer), Some(g_xi), Some(ni_b), Some(id), Some(idii_b)) = (
            c.sa.as_ref(),
            c.ke.clone(),
            c.nonce.clone(),
            c.ids.first(),
            c.id_bodies.first().cloned(),
        ) else {
            debug!(%remote, "dropping AM1: SA, KE, Nonce or ID missing");
            return None;
        };
        sa.cky_r = nonzero_cookie(cx);

        // Refusals go back in clear (no keys yet) and are reported.
        let refuse = |sa: &Self, cx: &mut Cx<'_>, e: PeerMisbehaved| {
            warn!(%tunnel, %remote, reason = %e, "refusing AM1");
            sa.send_plain_notify(cx, e.notify_type());
            cx.event(Event::Failed {
                tunnel,
                reason: FailureReason::Peer(e),
            });
        };
        let (transform, choice) = match proposal::choose_phase1(offer, &config.phase1.proposals) {
            Ok(v) => v,
            Err(e) => {
                refuse(&sa, cx, e);
                return None;
            }
        };
        let want = config.remote_identity();
        if !identity_matches(&want, id) {
            let e = PeerMisbehaved::UnexpectedIdentity {
                expected: want.to_string(),
                got: ShowId(id).to_string(),
            };
            refuse(&sa, cx, e);
            return None;
        }
        let p = choice.proposal;
        let dh = DhPrivateKey::generate(p.group, &mut cx.rng);
        let g_xy = match dh.shared_secret(&g_xi) {
            Ok(k) => k,
            Err(e) => {
                refuse(
                    &sa,
                    cx,
                    PeerMisbehaved::InvalidKeyExchange {
                        detail: e.to_string(),
                    },
                );
                return None;
            }
        };
        let g_xr = dh.public_key();
        let nr_b = cx.random::<NONCE_LEN>().to_vec();
        let keys = derive_keys(
            config, p, &ni_b, &nr_b, &g_xy, &sa.cky_i, &sa.cky_r, &g_xi, &g_xr,
        )
        .ok()?;
        sa.nat_t = if config.nat_traversal {
            NatTVariant::from_vendor_ids(c.vendor_ids.iter().map(Vec::as_slice))
        } else {
            None
        };
        sa.peer_dpd = natt::has_dpd_vendor_id(c.vendor_ids.iter().map(Vec::as_slice));
        debug!(%tunnel, %remote, chosen = %proposal::describe_p1(&p), nat_t = ?sa.nat_t,
            "AM1: choosing");

        // AM2 = HDR, SA, KE, Nr, IDir, VID... [, NAT-D, NAT-D], HASH_R
        let my_id = identity_payload(&config.local_identity());
        let idir_b = my_id.to_body();
        let sai_b = c.sa_body.clone();
        let hash_r = ikev1::hash_r(
            p.hash,
            &keys.skeyid,
            &g_xr,
            &g_xi,
            &sa.cky_r,
            &sa.cky_i,
            &sai_b,
            &idir_b,
        );
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
        let mut payloads = vec![
            Payload::Sa(answer),
            Payload::KeyExchange(g_xr.clone()),
            Payload::Nonce(nr_b),
            Payload::Identification(my_id),
        ];
        if let Some(v) = sa.nat_t {
            payloads.push(Payload::VendorId(v.vendor_id().to_vec()));
        }
        payloads.push(Payload::VendorId(natt::VID_DPD.to_vec()));
        sa.push_nat_d(&mut payloads, p.hash);
        payloads.push(Payload::Hash(hash_r.as_bytes().to_vec()));
        let bytes = message::plain(sa.cky_i, sa.cky_r, exchange::AGGRESSIVE, 0, &payloads);

        sa.keys = Some(keys);
        sa.last_in = Some(datagram.to_vec());
        // Sent once: a responder that retransmitted for spoofed AM1s would amplify them.
        // A lost AM3 is recovered by the initiator (see `IkeSa::am3_to_resend`).
        sa.send_answer(cx, bytes);
        sa.timers
            .set(Timer::Phase1Deadline, after(cx.now, negotiation_budget(cx)));
        sa.set_state(Phase1State::ExpectAm3(ExpectAm3 {
            sai_b,
            choice,
            g_xi,
            g_xr,
            idii_b,
            am1_addrs: (local, remote),
        }));
        Some(sa)
    }

    /// AM3: verify HASH_I, note NAT-D and the float, finish.
    pub(super) fn on_am3(
        &mut self,
        s: ExpectAm3,
        msg: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Step<ExpectAm3> {
        let (c, next_iv) = if msg.header.is_encrypted() {
            match self.open_phase1(msg, "AM3") {
                Ok((c, iv)) => (c, Some(iv)),
                Err(e) => return Err((s, e)),
            }
        } else {
            match plain_contents(msg) {
                Ok(c) => (c, None),
                Err(e) => return Err((s, e)),
            }
        };
        let Some(hash) = c.hash.as_ref() else {
            let e = PeerMisbehaved::MissingPayload {
                message: "AM3",
                payload: "HASH",
            };
            return Err((s, e.into()));
        };
        let Some(keys) = &self.keys else {
            return Err((s, Rejected::Ignore("AM3 without keys".into())));
        };
        let p = s.choice.proposal;
        // HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
        let expected = ikev1::hash_i(
            p.hash,
            &keys.skeyid,
            &s.g_xi,
            &s.g_xr,
            &self.cky_i,
            &self.cky_r,
            &s.sai_b,
            &s.idii_b,
        );
        if !expected.ct_eq(hash) {
            let e =
                self.authentication_failed(PeerMisbehaved::Phase1HashMismatch { message: "AM3" });
            return Err((s, e));
        }
        self.detect_nat(&c, p.hash, s.am1_addrs.0, s.am1_addrs.1);
        if let (Some(iv), Some(keys)) = (next_iv, &mut self.keys) {
            keys.commit_iv(0, iv);
        }
        if local.port() == NATT_PORT {
            self.floated = true;
        }
        self.local = local;
        self.remote = remote;
        // AM3 ends the exchange and gets no answer: a repeated AM3 must not make us send
        // AM2 again, or the initiator's answer to that (AM3 again) would ping-pong forever.
        self.last_out = None;
        Ok(Phase1State::Established(Established { choice: s.choice }))
    }
}

/// Exchange-type check used by the dispatcher.
pub(super) fn is_phase1_exchange(exchange_type: u8) -> bool {
    exchange_type == exchange::MAIN || exchange_type == exchange::AGGRESSIVE
}
