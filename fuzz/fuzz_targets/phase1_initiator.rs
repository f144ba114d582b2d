//! Our phase-1 INITIATOR (and the Quick Mode after it) against our own responder, with
//! the fuzzer's datagrams slipped in between the valid ones, its mutations applied to
//! valid ones, and time advanced by its choice. Time and randomness are fixed per input,
//! so a crash replays exactly.
//!
//! Input: byte 0 picks Main (even) or Aggressive (odd) Mode, then operations:
//! - `0bxxxxxx00`: deliver the next message in flight (either direction);
//! - `0bxxxxxx01`: inject a datagram (2-byte length, bytes) into the initiator; bit 7 set:
//!   with the cookie pair of the exchange pasted over its first 16 bytes, so it reaches
//!   the ISAKMP SA; bit 6: on port 4500 instead of 500;
//! - `0bxxxxxx10`: flip bits in the next message in flight (2-byte offset, 1-byte mask),
//!   then deliver it;
//! - `0bxxxxxx11`: advance the clock by `op >> 2` seconds and fire the timers.
//!
//! Nothing may panic, and any ESP pair both sides established must mirror key for key.

#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipsec_crypto::{DhGroup, SecretBytes};
use ipsec_sa::child::ChildSaPair;
use ipsec_sa::endpoint::{
    Endpoint, EndpointConfig, Event, Phase1Mode, Phase1Proposal, TunnelConfig,
};
use ipsec_sa::selector::TrafficSelector;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

static START: OnceLock<Instant> = OnceLock::new();

fn tunnel(name: &str, local: [u8; 4], remote: [u8; 4], mode: Phase1Mode) -> Option<TunnelConfig> {
    let net = |a: [u8; 4]| TrafficSelector::from_cidr([10, a[3], 0, 0].into(), 24).ok();
    let mut t = TunnelConfig::new(
        name,
        SocketAddr::from((local, 500)),
        SocketAddr::from((remote, 500)),
        SecretBytes::from_slice(b"fuzz-psk"),
        net(local)?,
        net(remote)?,
    );
    t.phase1.mode = mode;
    // Group 2 keeps each run to a few milliseconds.
    t.phase1.proposals = vec![Phase1Proposal {
        group: DhGroup::Modp1024,
        ..Phase1Proposal::default()
    }];
    t.phase2.pfs_group = None;
    Some(t)
}

struct Side {
    ep: Endpoint,
    addr: SocketAddr,
    pairs: Vec<ChildSaPair>,
}

fn drain(from: &mut Side, to_left: bool, queue: &mut VecDeque<(bool, Vec<u8>)>) {
    while let Some(t) = from.ep.poll_transmit() {
        queue.push_back((to_left, t.payload));
    }
    while let Some(e) = from.ep.poll_event() {
        if let Event::ChildSaEstablished { pair, .. } = e {
            from.pairs.push(pair);
        }
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mode = if mode % 2 == 0 {
        Phase1Mode::Main
    } else {
        Phase1Mode::Aggressive
    };
    let (Some(l), Some(r)) = (
        tunnel("left", [192, 0, 2, 1], [192, 0, 2, 2], mode),
        tunnel("right", [192, 0, 2, 2], [192, 0, 2, 1], mode),
    ) else {
        return;
    };
    let mut now = *START.get_or_init(Instant::now);
    let mk = |seed| {
        Endpoint::new(
            EndpointConfig::default(),
            Box::new(ChaCha20Rng::seed_from_u64(seed)),
        )
    };
    let mut left = Side {
        ep: mk(1),
        addr: l.local_addr,
        pairs: Vec::new(),
    };
    let mut right = Side {
        ep: mk(2),
        addr: r.local_addr,
        pairs: Vec::new(),
    };
    let (Ok(lt), Ok(_)) = (left.ep.add_tunnel(l), right.ep.add_tunnel(r)) else {
        return;
    };
    if left.ep.initiate(lt, now).is_err() {
        return;
    }

    // (to the left side?, datagram)
    let mut queue: VecDeque<(bool, Vec<u8>)> = VecDeque::new();
    let mut cookies = [0u8; 16];
    drain(&mut left, false, &mut queue);
    for _ in 0..64 {
        let Some(&[op]) = take(&mut rest, 1) else {
            break;
        };
        match op & 3 {
            0 | 2 => {
                let Some((to_left, mut d)) = queue.pop_front() else {
                    continue;
                };
                if op & 3 == 2 {
                    let Some(&[hi, lo, mask]) = take(&mut rest, 3) else {
                        break;
                    };
                    let at = usize::from(u16::from_be_bytes([hi, lo]));
                    let at = at % d.len().max(1);
                    if let Some(b) = d.get_mut(at) {
                        *b ^= mask;
                    }
                }
                if let Some(c) = d.get(..16) {
                    cookies.copy_from_slice(c);
                }
                let (to, from) = if to_left {
                    (&mut left, right.addr)
                } else {
                    (&mut right, left.addr)
                };
                to.ep.handle_datagram(now, to.addr, from, &d);
            }
            1 => {
                let Some(&[hi, lo]) = take(&mut rest, 2) else {
                    break;
                };
                let len = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
                let Some(bytes) = take(&mut rest, len) else {
                    break;
                };
                let mut d = bytes.to_vec();
                if op & 0x80 != 0 {
                    let n = d.len().min(16);
                    d[..n].copy_from_slice(&cookies[..n]);
                }
                let port = if op & 0x40 != 0 { 4500 } else { 500 };
                let local = SocketAddr::new(left.addr.ip(), port);
                let remote = SocketAddr::new(right.addr.ip(), port);
                left.ep.handle_datagram(now, local, remote, &d);
            }
            _ => {
                now += Duration::from_secs(u64::from(op >> 2));
                left.ep.handle_timeout(now);
                right.ep.handle_timeout(now);
            }
        }
        drain(&mut left, false, &mut queue);
        drain(&mut right, true, &mut queue);
    }

    // Whatever both sides agree on must be the same keys (mirrored).
    for a in &left.pairs {
        for b in right
            .pairs
            .iter()
            .filter(|b| b.inbound.spi == a.outbound.spi)
        {
            assert_eq!(a.inbound.spi, b.outbound.spi, "SPIs mirror");
            assert!(a
                .outbound
                .encryption_key
                .ct_eq(b.inbound.encryption_key.expose()));
            assert!(a
                .outbound
                .integrity_key
                .ct_eq(b.inbound.integrity_key.expose()));
        }
    }
    now += Duration::from_secs(7200);
    left.ep.handle_timeout(now);
    right.ep.handle_timeout(now);
    left.ep.shutdown(now);
    drain(&mut left, false, &mut queue);
});
