//! Informational exchanges (RFC 2409 section 5.7): notifications (errors, INITIAL-CONTACT,
//! DPD R-U-THERE / R-U-THERE-ACK of RFC 3706) and Delete, received and sent, and the
//! lifetime ends they lead to.

use super::*;

impl IkeSa {
    // ---------------------------------------------------------------------------------
    // Informational (RFC 2409 section 5.7)

    pub(in crate::endpoint) fn handle_informational(
        &mut self,
        cx: &mut Cx<'_>,
        config: &TunnelConfig,
        msg: &Message<'_>,
    ) {
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
        let protected = msg.header.is_encrypted();
        if protected {
            self.peer_confirmed_phase1();
        }

        for n in &c.notifies {
            self.on_notify(cx, config, n, protected);
        }
        // A Delete must be authenticated: a clear one could come from anyone.
        if !protected && !c.deletes.is_empty() {
            debug!(tunnel = %self.tunnel, "ignoring unprotected Delete");
            return;
        }
        for d in &c.deletes {
            self.on_delete(cx, d);
        }
    }

    /// Decrypts and authenticates an Informational: HASH(1) = prf(SKEYID_a, M-ID | N/D).
    pub(in crate::endpoint) fn open_informational(
        &self,
        msg: &Message<'_>,
    ) -> Result<Contents, String> {
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

    pub(in crate::endpoint) fn on_notify(
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
            notify::CONNECTED if protected => {
                if !self.on_connected(cx, &n.spi) {
                    debug!(tunnel = %self.tunnel, spi = ?n.spi,
                        "ignoring CONNECTED: no Quick Mode of ours waits for it");
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

    pub(in crate::endpoint) fn on_delete(&mut self, cx: &mut Cx<'_>, d: &DeletePayload) {
        match d.protocol_id.0 {
            PROTO_ISAKMP => {
                debug!(tunnel = %self.tunnel, "peer deleted the ISAKMP SA");
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
                            "Delete for an SPI this ISAKMP SA does not hold: asking the others",
                        );
                        self.actions.push(SaAction::PeerDeletedEsp { spi });
                        continue;
                    };
                    debug!(
                        tunnel = %self.tunnel,
                        spi = format_args!("{spi:08x}"),
                        "peer deleted an ESP SA pair",
                    );
                    self.drop_child(cx, pos, false);
                    self.revive_replaced(cx);
                }
            }
            p => {
                debug!(tunnel = %self.tunnel, protocol = p, "ignoring Delete for another protocol")
            }
        }
    }

    /// Forgets the ESP SA pair at `pos` and reports it; with `send_delete`, tells the peer
    /// with a Delete naming our inbound SPI (RFC 2408 section 3.15).
    pub(in crate::endpoint) fn drop_child(
        &mut self,
        cx: &mut Cx<'_>,
        pos: usize,
        send_delete: bool,
    ) {
        if pos >= self.children.len() {
            return;
        }
        let c = self.children.remove(pos);
        if send_delete {
            if self.is_established() {
                self.send_esp_delete(cx, c.inbound);
            } else {
                // This ISAKMP SA has ended; the endpoint sends the Delete under a newer one.
                self.actions
                    .push(SaAction::SendEspDelete { inbound: c.inbound });
            }
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

    /// Sends a Delete naming our inbound SPI of an ESP SA pair (RFC 2408 section 3.15).
    pub(in crate::endpoint) fn send_esp_delete(&mut self, cx: &mut Cx<'_>, inbound: u32) {
        debug!(tunnel = %self.tunnel, spi = format_args!("{inbound:08x}"),
            "sending Delete for an ESP SA pair");
        let d = DeletePayload {
            doi: DOI_IPSEC,
            protocol_id: ProtocolId(PROTO_ESP),
            spi_size: 4,
            spis: vec![inbound.to_be_bytes().to_vec()],
        };
        self.send_informational(cx, &[Payload::Delete(d)]);
    }

    /// Forgets the pair that has `spi` as either SPI, if this SA holds it (the peer
    /// deleted it). Returns whether it did.
    pub(in crate::endpoint) fn peer_deleted_child(&mut self, cx: &mut Cx<'_>, spi: u32) -> bool {
        let Some(pos) = self
            .children
            .iter()
            .position(|c| c.outbound == spi || c.inbound == spi)
        else {
            return false;
        };
        debug!(tunnel = %self.tunnel, spi = format_args!("{spi:08x}"),
            "peer deleted an ESP SA pair made under an earlier ISAKMP SA");
        self.drop_child(cx, pos, false);
        self.revive_replaced(cx);
        true
    }

    /// After the peer deleted a pair: if every pair left for its selectors counts as
    /// replaced, the newest of them is the current one again and gets its replacement
    /// timer back. This happens when the two ends judged a rekey collision differently
    /// (messages reordered so that one end saw a renewal): without it, no one would
    /// renew the survivor.
    fn revive_replaced(&mut self, cx: &mut Cx<'_>) {
        let mut revived: Vec<Selectors> = Vec::new();
        for i in (0..self.children.len()).rev() {
            let Some(c) = self.children.get(i).copied() else {
                continue;
            };
            let selectors = (c.local_ts, c.remote_ts);
            let mut siblings = self
                .children
                .iter()
                .filter(|o| (o.local_ts, o.remote_ts) == selectors);
            let all_replaced = siblings.clone().all(|o| o.superseded);
            let newest = siblings.all(|o| o.established_at <= c.established_at);
            if !all_replaced || !newest || revived.contains(&selectors) {
                continue;
            }
            revived.push(selectors);
            debug!(tunnel = %self.tunnel, spi = format_args!("{:08x}", c.inbound),
                "the pair the peer deleted had replaced this one: it is current again");
            if let Some(r) = self.children.get_mut(i) {
                r.superseded = false;
            }
            if let Some(at) = c.rekey_at {
                self.timers
                    .set(Timer::ChildRekey(c.inbound), at.max(cx.now));
            }
        }
    }

    /// The data plane reports that the pair with inbound SPI `spi` crossed its soft
    /// traffic limit: negotiate a replacement now, unless one exists. Returns whether
    /// this SA holds the pair.
    pub(in crate::endpoint) fn child_soft_limit(&mut self, spi: u32) -> bool {
        let Some(c) = self.children.iter().find(|c| c.inbound == spi) else {
            return false;
        };
        if c.superseded {
            debug!(tunnel = %self.tunnel, spi = format_args!("{spi:08x}"),
                "soft traffic limit of a pair already replaced: nothing to do");
            return true;
        }
        debug!(tunnel = %self.tunnel, spi = format_args!("{spi:08x}"),
            "ESP SA pair nears its traffic lifetime: negotiating a replacement");
        let selectors = (c.local_ts, c.remote_ts);
        self.timers.stop(Timer::ChildRekey(spi));
        self.actions.push(SaAction::RenewChild(selectors));
        true
    }

    /// The data plane reports that the pair with inbound SPI `spi` reached its hard
    /// traffic limit: delete it here and at the peer. Returns whether this SA held it.
    pub(in crate::endpoint) fn child_hard_limit(&mut self, cx: &mut Cx<'_>, spi: u32) -> bool {
        let Some(pos) = self.children.iter().position(|c| c.inbound == spi) else {
            return false;
        };
        debug!(tunnel = %self.tunnel, spi = format_args!("{spi:08x}"),
            "ESP SA pair reached its traffic lifetime");
        self.drop_child(cx, pos, true);
        true
    }

    /// The ISAKMP SA's lifetime ended: tell the peer and stop, leaving the ESP SAs to
    /// their own lifetimes (RFC 2409 section 5.5 keeps them independent).
    pub(in crate::endpoint) fn expire_phase1(&mut self, cx: &mut Cx<'_>) {
        debug!(tunnel = %self.tunnel, children = self.children.len(), "ISAKMP SA lifetime ended");
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
    pub(in crate::endpoint) fn forget_stale(&mut self, cx: &mut Cx<'_>) {
        debug!(tunnel = %self.tunnel, children = self.children.len(),
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
    pub(in crate::endpoint) fn delete(&mut self, cx: &mut Cx<'_>) {
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
}
