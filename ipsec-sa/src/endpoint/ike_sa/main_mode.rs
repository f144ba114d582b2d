//! Main Mode with pre-shared keys (RFC 2409 section 5), both roles, with NAT traversal
//! (RFC 3947):
//!
//! ```text
//! Initiator                          Responder
//! HDR, SA, VID...                -->
//!                                <--  HDR, SA, VID...
//! HDR, KE, Ni [, NAT-D, NAT-D]   -->
//!                                <--  HDR, KE, Nr [, NAT-D, NAT-D]
//! HDR*, IDii, HASH_I [, N]       -->      (UDP 4500 from here when a NAT was found)
//!                                <--  HDR*, IDir, HASH_R
//! ```

use super::*;

/// Initiator, MM1 sent.
pub(in crate::endpoint) struct ExpectMm2 {
    /// Body of our SA payload (SAi_b of RFC 2409 section 5).
    sai_b: Vec<u8>,
}

/// Initiator, MM3 sent.
pub(in crate::endpoint) struct ExpectMm4 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    dh: DhPrivateKey,
    ni_b: Vec<u8>,
}

/// Initiator, MM5 sent.
pub(in crate::endpoint) struct ExpectMm6 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    g_xi: Vec<u8>,
    g_xr: Vec<u8>,
}

/// Responder, MM2 sent.
pub(in crate::endpoint) struct ExpectMm3 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
}

/// Responder, MM4 sent.
pub(in crate::endpoint) struct ExpectMm5 {
    sai_b: Vec<u8>,
    choice: Phase1Choice,
    g_xi: Vec<u8>,
    g_xr: Vec<u8>,
}

impl IkeSa {
    // ---------------------------------------------------------------------------------
    // Phase 1, initiator

    /// Starts Main Mode: MM1 = HDR, SA, VID... (RFC 2409 section 5, RFC 3947 section 3.1).
    pub(in crate::endpoint) fn initiate(
        cx: &mut Cx<'_>,
        tunnel: TunnelId,
        config: &TunnelConfig,
        with_children: bool,
        first_contact: bool,
    ) -> Self {
        let mut sa = Self::new(
            tunnel,
            Role::Initiator,
            config.local_addr,
            config.remote_addr,
        );
        sa.force_encapsulation = config.force_udp_encapsulation;
        sa.cky_i = nonzero_cookie(cx);
        if with_children {
            sa.pending_children = wanted_pairs(config);
        }
        sa.send_initial_contact = first_contact && config.initial_contact;
        if config.phase1.mode == crate::endpoint::Phase1Mode::Aggressive {
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
    pub(in crate::endpoint) fn on_mm2(
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

    pub(in crate::endpoint) fn push_nat_d(
        &self,
        payloads: &mut Vec<Payload>,
        hash: ipsec_crypto::HashAlgorithm,
    ) {
        if let Some(v) = self.nat_t {
            // Forcing encapsulation: our own address is hashed as 0.0.0.0:0, which the
            // peer cannot match, so it sees a NAT in front of us.
            let ours = if self.force_encapsulation {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                self.local
            };
            for addr in [self.remote, ours] {
                payloads.push(Payload::NatD {
                    payload_type: PayloadType(v.nat_d_payload_type()),
                    hash: natt::nat_d_hash(hash, &self.cky_i, &self.cky_r, addr),
                });
            }
        }
    }

    /// Compares the peer's NAT-D payloads with the addresses of the datagram.
    pub(in crate::endpoint) fn detect_nat(
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
            Some(mut d) => {
                debug!(tunnel = %self.tunnel, local_behind_nat = d.local_behind_nat,
                    remote_behind_nat = d.remote_behind_nat,
                    forced = self.force_encapsulation, "NAT detection");
                // We told the peer we are behind a NAT: act on it the same way.
                d.local_behind_nat |= self.force_encapsulation;
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
    pub(in crate::endpoint) fn on_mm4(
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
        let (g_xr, nr_b) = match key_exchange_and_nonce(&c, "MM4") {
            Ok(v) => v,
            Err(e) => return Err((s, e)),
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
        if self.send_initial_contact {
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
    pub(in crate::endpoint) fn isakmp_notify(
        &self,
        notify_type: u16,
        data: Vec<u8>,
    ) -> NotifyPayload {
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
    pub(in crate::endpoint) fn on_mm6(
        &mut self,
        config: &TunnelConfig,
        s: ExpectMm6,
        msg: &Message<'_>,
    ) -> Step<ExpectMm6> {
        // RFC 2409 section 5.4: HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b).
        let (cky_i, cky_r) = (self.cky_i, self.cky_r);
        let verified = self.authenticate_peer(config, msg, "MM6", |skeyid, idir_b| {
            let p = s.choice.proposal;
            ikev1::hash_r(
                p.hash, skeyid, &s.g_xr, &s.g_xi, &cky_r, &cky_i, &s.sai_b, idir_b,
            )
        });
        if let Err(e) = verified {
            return Err((s, e));
        }
        Ok(Phase1State::Established(Established { choice: s.choice }))
    }

    // ---------------------------------------------------------------------------------
    // Phase 1, responder

    /// Answers an unsolicited MM1 for `config`'s tunnel with MM2, or refuses it with
    /// NO-PROPOSAL-CHOSEN (RFC 2408 section 5.4). Returns the new SA if one was created.
    pub(in crate::endpoint) fn respond(
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
        if config.phase1.mode != crate::endpoint::Phase1Mode::Main {
            warn!(
                %tunnel,
                %remote,
                "refusing Main Mode: the tunnel is configured for Aggressive Mode",
            );
            return None;
        }
        let mut sa = Self::new(tunnel, Role::Responder, local, remote);
        sa.force_encapsulation = config.force_udp_encapsulation;
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
            .set(Timer::Phase1Deadline, after(cx.now, negotiation_budget(cx)));
        sa.set_state(Phase1State::ExpectMm3(ExpectMm3 {
            sai_b: c.sa_body,
            choice,
        }));
        Some(sa)
    }

    /// MM3 = HDR, KE, Ni [, NAT-D...]; answer MM4 = HDR, KE, Nr [, NAT-D, NAT-D].
    pub(in crate::endpoint) fn on_mm3(
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
        let (g_xi, ni_b) = match key_exchange_and_nonce(&c, "MM3") {
            Ok(v) => v,
            Err(e) => return Err((s, e)),
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
    pub(in crate::endpoint) fn on_mm5(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        s: ExpectMm5,
        msg: &Message<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Step<ExpectMm5> {
        // RFC 2409 section 5.4: HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b).
        let (cky_i, cky_r) = (self.cky_i, self.cky_r);
        let c = match self.authenticate_peer(config, msg, "MM5", |skeyid, idii_b| {
            let p = s.choice.proposal;
            ikev1::hash_i(
                p.hash, skeyid, &s.g_xi, &s.g_xr, &cky_i, &cky_r, &s.sai_b, idii_b,
            )
        }) {
            Ok(c) => c,
            Err(e) => return Err((s, e)),
        };
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
            s.choice.proposal.hash,
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

    /// The part MM5 and MM6 share (RFC 2409 section 5.4): decrypt the message, find the
    /// peer's ID and HASH, check the HASH against `expected_hash(SKEYID, ID body)` in
    /// constant time and the identity against the configuration, and only then move the
    /// IV chain forward. Returns the decrypted contents.
    fn authenticate_peer(
        &mut self,
        config: &TunnelConfig,
        msg: &Message<'_>,
        message: &'static str,
        expected_hash: impl FnOnce(&SecretBytes, &[u8]) -> ipsec_crypto::Digest,
    ) -> Result<Contents, Rejected> {
        let (c, next_iv) = self.open_phase1(msg, message)?;
        let (Some(id), Some(id_body), Some(hash)) =
            (c.ids.first(), c.id_bodies.first(), c.hash.as_ref())
        else {
            return Err(PeerMisbehaved::MissingPayload {
                message,
                payload: "ID or HASH",
            }
            .into());
        };
        let Some(keys) = &self.keys else {
            return Err(Rejected::Ignore(format!("{message} without keys")));
        };
        if !expected_hash(&keys.skeyid, id_body).ct_eq(hash) {
            return Err(self.authentication_failed(PeerMisbehaved::Phase1HashMismatch { message }));
        }
        let want = config.remote_identity();
        if !identity_matches(&want, id) {
            return Err(PeerMisbehaved::UnexpectedIdentity {
                expected: want.to_string(),
                got: ShowId(id).to_string(),
            }
            .into());
        }
        if let Some(keys) = &mut self.keys {
            keys.commit_iv(0, next_iv);
        }
        Ok(c)
    }

    /// Decrypts a phase-1 message after the key exchange. Garbage here means the two
    /// sides hold different keys: with pre-shared keys, different keys.
    pub(in crate::endpoint) fn open_phase1(
        &mut self,
        msg: &Message<'_>,
        which: &'static str,
    ) -> Result<(Contents, Vec<u8>), Rejected> {
        // A clear message here is a late copy of an earlier one (or a forgery): dropping
        // it keeps a replay from ending the exchange.
        if !msg.header.is_encrypted() {
            return Err(Rejected::Ignore(format!(
                "{which} expected, got a clear message"
            )));
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
    pub(in crate::endpoint) fn authentication_failed(&mut self, e: PeerMisbehaved) -> Rejected {
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
}

/// The KE and Nonce payload bodies of MM3 or MM4 (RFC 2409 section 5: both are required),
/// or which one is missing.
fn key_exchange_and_nonce(
    c: &Contents,
    message: &'static str,
) -> Result<(Vec<u8>, Vec<u8>), Rejected> {
    let missing = |payload| Rejected::from(PeerMisbehaved::MissingPayload { message, payload });
    let ke = c.ke.clone().ok_or_else(|| missing("KE"))?;
    let nonce = c.nonce.clone().ok_or_else(|| missing("Nonce"))?;
    Ok((ke, nonce))
}
