//! Two endpoints talking to each other over a simulated network with virtual time:
//! our initiator against our responder, with loss, duplication, garbage and NAT.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step should stop the test with its message"
)]

mod common;

use std::time::Duration;

use common::{
    addr, assert_mirrored, children, drop_when, established, failures, subnet, tunnels, Filter,
    Net, Peer, Side, LATENCY,
};
use ipsec_crypto::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::child::Encapsulation;
use ipsec_sa::endpoint::{
    DpdAction, DpdConfig, Endpoint, EndpointConfig, Event, FailureReason, Identity, Phase1Mode,
    Phase1Proposal, Phase2Proposal, TunnelConfig, TunnelState,
};
use ipsec_sa::selector::TrafficSelector;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What the initiator reports when the responder refuses every proposal.
const NO_PROPOSAL_CHOSEN: &str =
    "peer reported NO-PROPOSAL-CHOSEN (14): none of our proposals is acceptable to the peer";

#[test]
fn main_mode_and_quick_mode_aes128_sha1_modp2048() {
    let (l, r) = tunnels("interop-test-psk-0123456789", "interop-test-psk-0123456789");
    let mut net = Net::new(l, r, 1);
    net.initiate();
    net.run_until(Duration::from_secs(5));

    let (lp, rp) = established(&net);
    assert_eq!(lp.encapsulation, Encapsulation::Tunnel);
    assert_eq!(lp.local, addr("192.0.2.1:500"));
    assert_eq!(lp.remote, addr("192.0.2.2:500"));
    assert_eq!(rp.local, addr("192.0.2.2:500"));
    assert_eq!(lp.inbound.encryption, EncryptionAlgorithm::AesCbc128);
    assert_eq!(lp.inbound.integrity, IntegrityAlgorithm::HmacSha1_96);
    assert_eq!(lp.local_ts, subnet("10.1.0.0", 24));
    assert_eq!(lp.remote_ts, subnet("10.2.0.0", 24));
    assert_eq!(lp.hard_lifetime.seconds, Some(3600));
    assert!(failures(&net.left.events).is_empty());
    assert!(failures(&net.right.events).is_empty());

    // Six Main Mode messages and three Quick Mode messages, no retransmissions; MM5 on
    // are encrypted (flags bit 0 at offset 19).
    assert_eq!(net.left.sent.len(), 5);
    assert_eq!(net.right.sent.len(), 4);
    let flags: Vec<u8> = net.left.sent.iter().map(|s| s.payload[19]).collect();
    assert_eq!(flags, vec![0, 0, 1, 1, 1]);
    // Main Mode first message: exchange type 2, SA then four vendor IDs.
    assert_eq!(net.left.sent[0].payload[18], 2);
    assert_eq!(net.left.sent[0].payload[16], 1);
    let phase1_up = net
        .left
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Phase1Established {
                    nat_detected: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(phase1_up, 1);

    // Status and the debugging key: both sides hold the same Ka under the same CKY-I.
    let up = TunnelState::Phase1Up {
        child_sas: 1,
        quick_modes_in_progress: 0,
    };
    assert_eq!(net.left.ep.tunnel_state(net.left.tunnel), up);
    assert_eq!(net.right.ep.tunnel_state(net.right.tunnel), up);
    let (cky_l, ka_l) = net.left.ep.phase1_encryption_key(net.left.tunnel).unwrap();
    let (cky_r, ka_r) = net
        .right
        .ep
        .phase1_encryption_key(net.right.tunnel)
        .unwrap();
    assert_eq!(cky_l, cky_r);
    assert_eq!(ka_l.len(), 16);
    assert!(ka_l.ct_eq(ka_r.expose()));
    assert_eq!(&net.left.sent[0].payload[..8], &cky_l);
}

#[test]
fn nat_in_front_of_initiator_floats_to_4500_and_uses_udp_encapsulation() {
    let (l, mut r) = tunnels("k", "k");
    // The right side sees the left one as 198.51.100.254 (the NAT's address).
    r.remote_addr = addr("198.51.100.254:500");
    r.phase1.remote_id = Some(Identity::Address("192.0.2.1".parse().unwrap()));
    let mut net = Net::new(l, r, 2);
    net.nat_in_front_of_left();
    net.initiate();
    net.run_until(Duration::from_secs(5));

    let (lp, rp) = established(&net);
    assert_eq!(lp.encapsulation, Encapsulation::UdpTunnel);
    assert_eq!(lp.local, addr("192.0.2.1:4500"));
    assert_eq!(lp.remote, addr("192.0.2.2:4500"));
    // The responder answers the NAT's mapped port.
    assert_eq!(rp.remote, addr("198.51.100.254:40002"));
    assert_eq!(rp.local, addr("192.0.2.2:4500"));
    // MM1 and MM3 on 500, MM5 on from 4500 with the marker.
    let ports: Vec<(u16, bool)> = net
        .left
        .sent
        .iter()
        .map(|s| (s.local.port(), s.non_esp_marker))
        .collect();
    assert_eq!(
        ports,
        vec![
            (500, false),
            (500, false),
            (4500, true),
            (4500, true),
            (4500, true)
        ]
    );

    // Behind the NAT, the left side keeps its mapping open every 20 s (RFC 3948).
    net.run_until(Duration::from_secs(65));
    let keepalives: Vec<(u16, bool)> = net
        .left
        .sent
        .iter()
        .filter(|s| s.payload == [0xff])
        .map(|s| (s.local.port(), s.non_esp_marker))
        .collect();
    assert_eq!(keepalives, vec![(4500, false); 3]);
    assert!(!net.right.sent.iter().any(|s| s.payload == [0xff]));
}

#[test]
fn every_phase1_cipher_and_hash_with_groups_2_and_14() {
    let mut seed = 10usize;
    for encryption in EncryptionAlgorithm::ALL {
        for hash in HashAlgorithm::ALL {
            for group in [DhGroup::Modp1024, DhGroup::Modp2048] {
                let (mut l, mut r) = tunnels("matrix", "matrix");
                let p = Phase1Proposal {
                    encryption,
                    hash,
                    group,
                };
                l.phase1.proposals = vec![p];
                r.phase1.proposals = vec![Phase1Proposal::default(), p];
                let p2 = Phase2Proposal {
                    encryption,
                    integrity: IntegrityAlgorithm::ALL[seed % 5],
                };
                l.phase2.proposals = vec![p2];
                r.phase2.proposals = vec![p2];
                l.phase2.pfs_group = Some(DhGroup::Modp1024);
                r.phase2.pfs_group = Some(DhGroup::Modp1024);
                seed += 1;
                let mut net = Net::new(l, r, seed as u64);
                net.initiate();
                net.run_until(Duration::from_secs(5));
                let (lp, _) = established(&net);
                assert_eq!(lp.inbound.encryption, encryption, "{p:?}");
                assert_eq!(lp.inbound.integrity, p2.integrity, "{p:?}");
            }
        }
    }
}

/// Issue 4's form offers these phase-1 hashes.
const FORM_HASHES: [HashAlgorithm; 3] = [
    HashAlgorithm::Md5,
    HashAlgorithm::Sha1,
    HashAlgorithm::Sha256,
];

/// Our initiator against our responder for every cipher x form hash x `groups` in
/// `mode`: the responder also accepts a default transform first, so it has to pick the
/// offered one. Each run asserts that both sides hold the same phase-1 algorithms, the
/// same Ka under the same cookie, and mirrored ESP keys. Phase 2 runs without PFS (its
/// DH is covered elsewhere) to keep the matrix's time on the phase-1 groups.
fn phase1_matrix(mode: Phase1Mode, groups: &[DhGroup], seed: u64) -> usize {
    let mut runs = 0;
    for encryption in EncryptionAlgorithm::ALL {
        for hash in FORM_HASHES {
            for &group in groups {
                let (mut l, mut r) = tunnels("matrix", "matrix");
                let p = Phase1Proposal {
                    encryption,
                    hash,
                    group,
                };
                for t in [&mut l, &mut r] {
                    t.phase1.mode = mode;
                    t.phase2.pfs_group = None;
                }
                l.phase1.proposals = vec![p];
                r.phase1.proposals = vec![Phase1Proposal::default(), p];
                let mut net = Net::new(l, r, seed + runs as u64);
                net.initiate();
                net.run_until(Duration::from_secs(5));

                let what = format!("{mode:?} {p:?}");
                assert!(failures(&net.left.events).is_empty(), "{what}");
                assert!(failures(&net.right.events).is_empty(), "{what}");
                established(&net);
                let (lt, rt) = (net.left.tunnel, net.right.tunnel);
                assert_eq!(net.left.ep.phase1_algorithms(lt), Some(p), "{what}");
                assert_eq!(net.right.ep.phase1_algorithms(rt), Some(p), "{what}");
                let (cky_l, ka_l) = net.left.ep.phase1_encryption_key(lt).unwrap();
                let (cky_r, ka_r) = net.right.ep.phase1_encryption_key(rt).unwrap();
                assert_eq!(cky_l, cky_r, "{what}");
                assert_eq!(ka_l.len(), encryption.key_len(), "{what}");
                assert!(ka_l.ct_eq(ka_r.expose()), "{what}");
                runs += 1;
            }
        }
    }
    runs
}

/// Every group up to 4096 bits (1, 2, 5, 14, 15, 16, 22, 23, 24).
const GROUPS_UP_TO_4096: [DhGroup; 9] = [
    DhGroup::Modp768,
    DhGroup::Modp1024,
    DhGroup::Modp1536,
    DhGroup::Modp2048,
    DhGroup::Modp3072,
    DhGroup::Modp4096,
    DhGroup::Modp1024S160,
    DhGroup::Modp2048S224,
    DhGroup::Modp2048S256,
];

/// Groups 17 (6144 bits) and 18 (8192 bits), in tests of their own.
const BIG_GROUPS: [DhGroup; 2] = [DhGroup::Modp6144, DhGroup::Modp8192];

/// Issue 4, Main Mode: the full product of 5 ciphers x 3 hashes x the 9 groups up to
/// 4096 bits (135 negotiations). Groups 17 and 18 complete the product in
/// [`main_mode_every_cipher_and_hash_with_big_groups`]: their 6144- and 8192-bit
/// exponentiations are most of the matrix's time, so they run as separate tests that the
/// harness can schedule in parallel.
#[test]
fn main_mode_every_cipher_hash_and_group() {
    assert_eq!(
        phase1_matrix(Phase1Mode::Main, &GROUPS_UP_TO_4096, 100),
        135
    );
}

/// Issue 4, Aggressive Mode: the same 135 combinations as
/// [`main_mode_every_cipher_hash_and_group`].
#[test]
fn aggressive_mode_every_cipher_hash_and_group() {
    assert_eq!(
        phase1_matrix(Phase1Mode::Aggressive, &GROUPS_UP_TO_4096, 400),
        135
    );
}

/// Issue 4, Main Mode, groups 17 and 18 with every cipher and form hash: 30 negotiations.
#[test]
fn main_mode_every_cipher_and_hash_with_big_groups() {
    assert_eq!(phase1_matrix(Phase1Mode::Main, &BIG_GROUPS, 700), 30);
}

/// Issue 4, Aggressive Mode, groups 17 and 18 with every cipher and form hash: 30
/// negotiations.
#[test]
fn aggressive_mode_every_cipher_and_hash_with_big_groups() {
    assert_eq!(phase1_matrix(Phase1Mode::Aggressive, &BIG_GROUPS, 800), 30);
}

#[test]
fn without_pfs_keys_still_mirror() {
    let (mut l, mut r) = tunnels("k", "k");
    l.phase2.pfs_group = None;
    r.phase2.pfs_group = None;
    let mut net = Net::new(l, r, 3);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    established(&net);
}

#[test]
fn rejects_phase1_proposal_mismatch_with_no_proposal_chosen() {
    let (mut l, r) = tunnels("k", "k");
    l.phase1.proposals = vec![Phase1Proposal {
        encryption: EncryptionAlgorithm::AesCbc256,
        ..Phase1Proposal::default()
    }];
    let mut net = Net::new(l, r, 4);
    net.initiate();
    net.run_until(Duration::from_secs(60));

    assert!(children(&net.left.events).is_empty());
    let right = failures(&net.right.events);
    assert_eq!(right.len(), 1, "{right:?}");
    assert!(
        right[0].starts_with("no acceptable proposal: peer offered AES-256-CBC/SHA1/group 14"),
        "{}",
        right[0]
    );
    assert_eq!(failures(&net.left.events), vec![NO_PROPOSAL_CHOSEN]);
}

#[test]
fn rejects_phase2_proposal_mismatch() {
    let (mut l, r) = tunnels("k", "k");
    l.phase2.proposals = vec![Phase2Proposal {
        encryption: EncryptionAlgorithm::TripleDesCbc,
        integrity: IntegrityAlgorithm::HmacMd5_96,
    }];
    let mut net = Net::new(l, r, 5);
    net.initiate();
    net.run_until(Duration::from_secs(60));

    assert!(children(&net.left.events).is_empty());
    assert!(children(&net.right.events).is_empty());
    let right = failures(&net.right.events);
    assert_eq!(right.len(), 1, "{right:?}");
    assert!(right[0].contains("phase 2"), "{}", right[0]);
    assert_eq!(failures(&net.left.events), vec![NO_PROPOSAL_CHOSEN]);
}

#[test]
fn rejects_wrong_psk_and_says_so() {
    let (l, r) = tunnels("left-secret", "right-secret");
    let mut net = Net::new(l, r, 6);
    net.initiate();
    net.run_until(Duration::from_secs(60));

    assert!(children(&net.left.events).is_empty());
    let right = failures(&net.right.events);
    assert_eq!(right.len(), 1, "{right:?}");
    assert!(
        right[0].starts_with("pre-shared key mismatch: peer's"),
        "{}",
        right[0]
    );
    assert_eq!(
        failures(&net.left.events),
        vec![
            "peer reported AUTHENTICATION-FAILED (24): the peer rejected our authentication \
         (pre-shared key mismatch, or its policy refuses this mode, e.g. Aggressive Mode with PSK)"
        ]
    );
}

#[test]
fn lost_messages_are_retransmitted() {
    // Counting retransmissions: drop right's 1st datagram (MM2) and left's 3rd (MM3),
    // 5th (the first MM5) and 8th (QM3).
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 7);
    net.filter =
        drop_when(|side, k| matches!((side, k), (Side::Right, 1) | (Side::Left, 3 | 5 | 8)));
    net.initiate();
    net.run_until(Duration::from_secs(30));
    established(&net);
    // MM1, MM3 and MM5 twice each, QM1, QM3 twice (after the responder resent QM2).
    assert_eq!(net.left.sent.len(), 9);
    // MM2 twice, MM4, MM6, QM2 twice.
    assert_eq!(net.right.sent.len(), 6);
    assert!(failures(&net.left.events).is_empty());
    assert!(failures(&net.right.events).is_empty());
}

#[test]
fn duplicated_messages_get_the_same_answer_and_change_nothing() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 8);
    net.filter = Box::new(|_, _, d, _| vec![d.to_vec(), d.to_vec()]);
    net.initiate();
    net.run_until(Duration::from_secs(30));
    established(&net);
    // Each of right's answers is sent again for the duplicate request (MM2, MM4, MM6, QM2).
    let right: Vec<&Vec<u8>> = net.right.sent.iter().map(|s| &s.payload).collect();
    assert_eq!(right.len(), 8, "{}", right.len());
    assert_eq!(right[0], right[1]);
    assert_eq!(right[6], right[7]);
}

#[test]
fn garbage_between_valid_messages_is_ignored() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 9);
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    net.filter = Box::new(move |_, _, d, _| {
        let mut random = vec![0u8; 60];
        rng.fill_bytes(&mut random);
        // Random bytes, a truncated copy (same cookies), then the real message; for
        // encrypted messages also a copy with a corrupted first block first.
        let truncated = d[..d.len() / 2].to_vec();
        let mut out = vec![random, truncated];
        if d[19] & 1 == 1 {
            let mut corrupt = d.to_vec();
            corrupt[28] ^= 0x55;
            out.push(corrupt);
        }
        out.push(d.to_vec());
        out
    });
    net.initiate();
    net.run_until(Duration::from_secs(30));
    established(&net);
}

#[test]
fn shutdown_deletes_child_and_isakmp_sa_at_the_peer() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 11);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, _) = established(&net);
    let now = net.now;
    net.left.ep.shutdown(now);
    net.run_until(Duration::from_secs(10));

    let deleted: Vec<(u32, u32)> = net
        .right
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted {
                inbound_spi,
                outbound_spi,
                ..
            } => Some((*inbound_spi, *outbound_spi)),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![(lp.outbound.spi, lp.inbound.spi)]);
    assert!(net
        .right
        .events
        .iter()
        .any(|e| matches!(e, Event::Phase1Deleted { .. })));
    assert!(net
        .left
        .events
        .iter()
        .any(|e| matches!(e, Event::Phase1Deleted { .. })));
}

#[test]
fn dpd_probes_are_answered_and_a_silent_peer_is_declared_dead() {
    let (mut l, r) = tunnels("k", "k");
    l.dpd = Some(DpdConfig {
        delay: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        action: DpdAction::Clear,
    });
    let mut net = Net::new(l, r, 12);
    net.initiate();
    net.run_until(Duration::from_secs(60));
    established(&net);
    assert!(!net
        .left
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerDead { .. })));
    let probes = net.left.sent.len() - 5;
    assert!(probes >= 4, "R-U-THERE sent {probes} times");
    assert_eq!(net.right.sent.len() - 4, probes, "every probe answered");

    // Now the right side goes silent.
    net.filter = drop_when(|side, _| side == Side::Right);
    net.run_until(Duration::from_secs(150));
    assert!(net
        .left
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerDead { .. })));
    assert_eq!(
        count(&net.left.events, |e| matches!(
            e,
            Event::ChildSaDeleted { .. }
        )),
        1
    );
    assert_eq!(net.left.ep.tunnel_state(net.left.tunnel), TunnelState::Idle);
}

#[test]
fn dpd_restart_renegotiates_when_the_peer_comes_back() {
    let (mut l, r) = tunnels("k", "k");
    l.dpd = Some(DpdConfig {
        delay: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        action: DpdAction::Restart,
    });
    let mut net = Net::new(l, r, 21);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    established(&net);

    // The right side is unreachable for a while, then back.
    net.filter = drop_when(|side, _| side == Side::Right);
    net.run_until(Duration::from_secs(60));
    assert!(net
        .left
        .events
        .iter()
        .any(|e| matches!(e, Event::PeerDead { .. })));
    net.filter = Box::new(|_, _, d, _| vec![d.to_vec()]);
    net.run_until(Duration::from_secs(100));
    assert_eq!(children(&net.left.events).len(), 2);
    assert!(matches!(
        net.left.ep.tunnel_state(net.left.tunnel),
        TunnelState::Phase1Up { child_sas: 1, .. }
    ));
}

#[test]
fn quick_mode_timeout_is_reported() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 13);
    // Drop everything the right side sends after MM6 (its 4th message).
    net.filter = drop_when(|side, k| side == Side::Right && k > 3);
    net.initiate();
    net.run_until(Duration::from_secs(120));
    assert_eq!(
        failures(&net.left.events),
        vec!["no answer from peer: waited for QM2 after sending our last message 6 times"]
    );
    let _ = FailureReason::NoSpiAvailable;
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

#[test]
fn child_sa_is_rekeyed_before_expiry_and_the_old_pair_deleted() {
    let (mut l, mut r) = tunnels("k", "k");
    l.phase2.lifetime = Duration::from_secs(100);
    r.phase2.lifetime = Duration::from_secs(100);
    let mut net = Net::new(l, r, 14);
    net.initiate();
    net.run_until(Duration::from_secs(150));

    // The initiator replaces the pair at 90 s; both sides drop the first one at 100 s.
    let l_pairs = children(&net.left.events);
    let r_pairs = children(&net.right.events);
    assert_eq!((l_pairs.len(), r_pairs.len()), (2, 2));
    assert_mirrored(l_pairs[1], r_pairs[1]);
    let deleted: Vec<u32> = net
        .left
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted { inbound_spi, .. } => Some(*inbound_spi),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![l_pairs[0].inbound.spi]);
    assert_eq!(
        count(&net.right.events, |e| matches!(
            e,
            Event::ChildSaDeleted { .. }
        )),
        1
    );
    assert_eq!(
        net.left.ep.tunnel_state(net.left.tunnel),
        TunnelState::Phase1Up {
            child_sas: 1,
            quick_modes_in_progress: 0
        }
    );
}

#[test]
fn phase1_is_renewed_before_expiry_and_esp_sas_survive() {
    let (mut l, r) = tunnels("k", "k");
    l.phase1.lifetime = Duration::from_secs(200);
    let mut net = Net::new(l, r, 15);
    net.initiate();
    net.run_until(Duration::from_secs(250));

    let up = |e: &Event| matches!(e, Event::Phase1Established { .. });
    let down = |e: &Event| matches!(e, Event::Phase1Deleted { .. });
    assert_eq!(count(&net.left.events, up), 2);
    assert_eq!(count(&net.left.events, down), 1);
    assert_eq!(count(&net.right.events, up), 2);
    assert_eq!(count(&net.right.events, down), 1);
    // The ESP pair made under the first ISAKMP SA is still there.
    assert_eq!(children(&net.left.events).len(), 1);
    assert_eq!(
        count(&net.left.events, |e| matches!(
            e,
            Event::ChildSaDeleted { .. }
        )),
        0
    );
    assert_eq!(
        net.left.ep.tunnel_state(net.left.tunnel),
        TunnelState::Phase1Up {
            child_sas: 1,
            quick_modes_in_progress: 0
        }
    );
    // The renewal sent no INITIAL-CONTACT: the responder kept the pair too.
    assert_eq!(
        count(&net.right.events, |e| matches!(
            e,
            Event::ChildSaDeleted { .. }
        )),
        0
    );

    // The pair's replacement runs on the newer ISAKMP SA.
    net.run_until(Duration::from_secs(3_300));
    assert_eq!(children(&net.left.events).len(), 2);
    assert_eq!(children(&net.right.events).len(), 2);
    assert_mirrored(
        children(&net.left.events)[1],
        children(&net.right.events)[1],
    );
}

#[test]
fn initial_contact_from_a_restarted_peer_drops_stale_sas() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l.clone(), r, 16);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (_, old_right) = established(&net);

    // The left gateway restarts: new endpoint, same tunnel, INITIAL-CONTACT in MM5.
    net.replace_endpoint(Side::Left, l, 77);
    net.initiate();
    net.run_until(Duration::from_secs(10));

    let deleted: Vec<u32> = net
        .right
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted { inbound_spi, .. } => Some(*inbound_spi),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![old_right.inbound.spi]);
    assert_eq!(
        count(&net.right.events, |e| matches!(
            e,
            Event::Phase1Deleted { .. }
        )),
        1
    );
    assert_eq!(children(&net.right.events).len(), 2);
    assert_eq!(children(&net.left.events).len(), 1);
    assert_mirrored(
        children(&net.left.events)[0],
        children(&net.right.events)[1],
    );
}

mod corruption {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any one message of the exchange corrupted (a flipped byte, cut short, or
        /// padded with garbage): no panic, and whatever gets established mirrors.
        #[test]
        fn one_corrupted_message_never_breaks_the_outcome(
            victim in 1usize..10,
            position in 0usize..2000,
            xor in 1u8..=255,
            mode in 0u8..3,
            seed in 0u64..1000,
        ) {
            let (mut l, mut r) = tunnels("k", "k");
            for t in [&mut l, &mut r] {
                t.phase1.proposals = vec![Phase1Proposal {
                    group: DhGroup::Modp1024,
                    ..Phase1Proposal::default()
                }];
                t.phase2.pfs_group = Some(DhGroup::Modp1024);
            }
            let mut net = Net::new(l, r, seed);
            net.filter = Box::new(move |n, _, d, _| {
                if n != victim {
                    return vec![d.to_vec()];
                }
                let mut bad = d.to_vec();
                match mode {
                    0 => {
                        let i = position % bad.len();
                        bad[i] ^= xor;
                    }
                    1 => bad.truncate(position % bad.len()),
                    _ => bad.extend(std::iter::repeat_n(xor, position % 64 + 1)),
                }
                vec![bad]
            });
            net.initiate();
            net.run_until(Duration::from_secs(120));
            let lc = children(&net.left.events);
            let rc = children(&net.right.events);
            prop_assert!(lc.len() <= 1 && rc.len() <= 2);
            if let (Some(a), Some(b)) = (lc.first(), rc.last()) {
                assert_mirrored(a, b);
            }
        }
    }
}

#[test]
fn aggressive_mode_with_fqdn_identities_and_nat() {
    let (mut l, mut r) = tunnels("am-key", "am-key");
    for t in [&mut l, &mut r] {
        t.phase1.mode = Phase1Mode::Aggressive;
        t.phase1.proposals = vec![Phase1Proposal {
            encryption: EncryptionAlgorithm::AesCbc256,
            hash: HashAlgorithm::Sha256,
            group: DhGroup::Modp2048,
        }];
        t.phase2.pfs_group = None;
    }
    l.phase1.local_id = Some(Identity::Fqdn("left.example".into()));
    r.phase1.remote_id = Some(Identity::Fqdn("left.example".into()));
    r.phase1.local_id = Some(Identity::Fqdn("right.example".into()));
    l.phase1.remote_id = Some(Identity::Fqdn("right.example".into()));
    r.remote_addr = addr("198.51.100.254:500");
    let mut net = Net::new(l, r, 17);
    net.nat_in_front_of_left();
    net.initiate();
    net.run_until(Duration::from_secs(5));

    let (lp, rp) = established(&net);
    assert_eq!(lp.encapsulation, Encapsulation::UdpTunnel);
    assert_eq!(rp.remote, addr("198.51.100.254:40002"));
    // AM1 on 500 (exchange type 4), AM3 encrypted on 4500, then QM1 and QM3.
    let sent: Vec<(u16, u8, u8)> = net
        .left
        .sent
        .iter()
        .filter(|s| s.payload.len() > 1)
        .map(|s| (s.local.port(), s.payload[18], s.payload[19]))
        .collect();
    assert_eq!(
        sent,
        vec![(500, 4, 0), (4500, 4, 1), (4500, 32, 1), (4500, 32, 1)]
    );
}

#[test]
fn rejects_aggressive_mode_when_main_mode_is_configured() {
    let (mut l, r) = tunnels("k", "k");
    l.phase1.mode = Phase1Mode::Aggressive;
    let mut net = Net::new(l, r, 18);
    net.initiate();
    net.run_until(Duration::from_secs(60));
    assert!(children(&net.left.events).is_empty());
    assert!(net.right.sent.is_empty(), "the responder never answers AM1");
    assert_eq!(
        failures(&net.left.events),
        vec!["no answer from peer: waited for AM2 after sending our last message 6 times"]
    );
}

#[test]
fn initiate_is_idempotent_while_a_pair_exists_or_is_negotiated() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 19);
    net.initiate();
    net.initiate();
    net.run_until(Duration::from_secs(5));
    net.initiate();
    net.run_until(Duration::from_secs(10));
    established(&net);
    assert_eq!(net.left.sent.len(), 5, "one Main Mode, one Quick Mode");
}

#[test]
fn half_open_limit_drops_further_first_messages() {
    let (l, r) = tunnels("k", "k");
    let config = EndpointConfig {
        max_half_open: 1,
        ..EndpointConfig::default()
    };
    let mut net = Net::with_config(l, r, 20, config);
    // Hold back everything after MM1, then replay MM1 with a different initiator cookie.
    net.filter = Box::new(|n, _, d, _| if n == 1 { vec![d.to_vec()] } else { vec![] });
    net.initiate();
    net.run_until(Duration::from_millis(20));
    let mm1 = net.left.sent[0].payload.clone();
    let mut other = mm1.clone();
    other[0] ^= 1;
    let now = net.now;
    net.right
        .ep
        .handle_datagram(now, addr("192.0.2.2:500"), addr("192.0.2.1:500"), &other);
    assert_eq!(net.right.sent.len(), 1, "MM2 for the first MM1");
    assert!(
        net.right.ep.poll_transmit().is_none(),
        "no answer to the second MM1"
    );
}

#[test]
fn a_peer_starting_on_port_4500_is_answered_there_with_the_marker() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 22);
    net.filter = Box::new(|_, _, _, _| vec![]);
    net.initiate();
    net.run_until(Duration::from_millis(1));
    let mm1 = net.left.sent[0].payload.clone();
    let now = net.now;
    net.right
        .ep
        .handle_datagram(now, addr("192.0.2.2:4500"), addr("192.0.2.1:4500"), &mm1);
    let t = net.right.ep.poll_transmit().unwrap();
    assert_eq!(
        (t.local, t.remote),
        (addr("192.0.2.2:4500"), addr("192.0.2.1:4500"))
    );
    assert!(t.non_esp_marker);
}

#[test]
fn draft_nat_t_peer_gets_draft_code_points() {
    // The right side only sees the draft vendor IDs (RFC 3947's is blanked in MM1), so
    // both use NAT-D payload 130 and encapsulation mode 61443.
    const RFC3947: [u8; 16] = [
        0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45,
        0x2f,
    ];
    let (l, mut r) = tunnels("k", "k");
    r.remote_addr = addr("198.51.100.254:500");
    r.phase1.remote_id = Some(Identity::Address("192.0.2.1".parse().unwrap()));
    let mut net = Net::new(l, r, 23);
    net.nat_in_front_of_left();
    net.filter = Box::new(|n, _, d, _| {
        let mut d = d.to_vec();
        if n == 1 {
            let at = d.windows(16).position(|w| w == RFC3947).unwrap();
            d[at..at + 16].fill(0x11);
        }
        vec![d]
    });
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, rp) = established(&net);
    assert_eq!(lp.encapsulation, Encapsulation::UdpTunnel);
    assert_eq!(rp.remote, addr("198.51.100.254:40002"));

    // MM3's payload chain: KE, Nonce, then two NAT-D payloads of the draft's type 130.
    let mm3 = &net.left.sent[1].payload;
    let msg = ipsec_proto::isakmp::Message::parse(mm3).unwrap();
    let types: Vec<u8> = msg
        .payloads()
        .unwrap()
        .iter()
        .map(|p| p.payload_type.0)
        .collect();
    assert_eq!(types, vec![4, 10, 130, 130]);
}

#[test]
fn ipv6_outer_and_inner_addresses() {
    let sub6 = |s: &str| TrafficSelector::from_cidr(s.parse().unwrap(), 64).unwrap();
    let l = TunnelConfig::new(
        "left6",
        addr("[2001:db8::1]:500"),
        addr("[2001:db8::2]:500"),
        SecretBytes::from_slice(b"v6"),
        sub6("2001:db8:1::"),
        sub6("2001:db8:2::"),
    );
    let r = TunnelConfig::new(
        "right6",
        addr("[2001:db8::2]:500"),
        addr("[2001:db8::1]:500"),
        SecretBytes::from_slice(b"v6"),
        sub6("2001:db8:2::"),
        sub6("2001:db8:1::"),
    );
    let mut net = Net::new(l, r, 24);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, _) = established(&net);
    assert_eq!(lp.local_ts, sub6("2001:db8:1::"));
    assert_eq!(lp.remote, addr("[2001:db8::2]:500"));
    assert_eq!(lp.encapsulation, Encapsulation::Tunnel);
}

#[test]
fn one_pair_per_subnet_combination_each_rekeyed_on_its_own() {
    let (mut l, mut r) = tunnels("k", "k");
    l.local_ts.push(subnet("10.3.0.0", 24));
    r.remote_ts.push(subnet("10.3.0.0", 24));
    l.phase2.lifetime = Duration::from_secs(100);
    r.phase2.lifetime = Duration::from_secs(100);
    let mut net = Net::new(l, r, 25);
    net.initiate();
    net.run_until(Duration::from_secs(5));

    let selectors = |events: &[Event]| -> Vec<String> {
        children(events)
            .iter()
            .map(|p| format!("{} > {}", p.local_ts, p.remote_ts))
            .collect()
    };
    assert_eq!(
        selectors(&net.left.events),
        vec!["10.1.0.0/24 > 10.2.0.0/24", "10.3.0.0/24 > 10.2.0.0/24"]
    );
    let l_pairs = children(&net.left.events);
    let r_pairs = children(&net.right.events);
    assert_eq!(r_pairs.len(), 2);
    assert_mirrored(l_pairs[0], r_pairs[0]);
    assert_mirrored(l_pairs[1], r_pairs[1]);

    // Each pair is replaced for its own selectors.
    net.run_until(Duration::from_secs(150));
    assert_eq!(
        selectors(&net.left.events),
        vec![
            "10.1.0.0/24 > 10.2.0.0/24",
            "10.3.0.0/24 > 10.2.0.0/24",
            "10.1.0.0/24 > 10.2.0.0/24",
            "10.3.0.0/24 > 10.2.0.0/24"
        ]
    );
    assert_eq!(
        count(&net.left.events, |e| matches!(
            e,
            Event::ChildSaDeleted { .. }
        )),
        2
    );
    assert_eq!(
        net.left.ep.tunnel_state(net.left.tunnel),
        TunnelState::Phase1Up {
            child_sas: 2,
            quick_modes_in_progress: 0
        }
    );
}

#[test]
fn a_replayed_clear_message_does_not_end_main_mode() {
    // Before MM5 the responder gets MM1 again, before MM6 the initiator gets MM2 again:
    // both late clear copies are dropped.
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 26);
    let mut first: [Option<Vec<u8>>; 2] = [None, None];
    net.filter = Box::new(move |_, side, d, _| {
        let i = usize::from(side == Side::Right);
        let encrypted = d[19] & 1 == 1;
        match (&first[i], encrypted) {
            (None, _) => {
                first[i] = Some(d.to_vec());
                vec![d.to_vec()]
            }
            (Some(old), true) if d[18] == 2 => vec![old.clone(), d.to_vec()],
            _ => vec![d.to_vec()],
        }
    });
    net.initiate();
    net.run_until(Duration::from_secs(10));
    established(&net);
    assert!(failures(&net.left.events).is_empty());
    assert!(failures(&net.right.events).is_empty());
}

#[test]
fn quick_mode_overtaking_am3_is_held_until_am3_arrives() {
    let (mut l, mut r) = tunnels("k", "k");
    for t in [&mut l, &mut r] {
        t.phase1.mode = Phase1Mode::Aggressive;
    }
    let mut net = Net::new(l, r, 27);
    // Hold AM3 (the left side's 2nd datagram) and deliver it right after QM1.
    let mut held: Option<Vec<u8>> = None;
    let mut n = 0;
    net.filter = Box::new(move |_, side, d, _| {
        if side == Side::Right {
            return vec![d.to_vec()];
        }
        n += 1;
        match n {
            2 => {
                held = Some(d.to_vec());
                vec![]
            }
            3 => vec![d.to_vec(), held.take().unwrap()],
            _ => vec![d.to_vec()],
        }
    });
    net.initiate();
    net.run_until(Duration::from_millis(900));
    established(&net);
    // Answered before any retransmission of QM1.
    assert_eq!(net.left.sent.len(), 4);
}

/// Hands out 0x1000, 0x1001, ... and records releases.
struct CountingSpis {
    next: u32,
    released: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
}

impl ipsec_sa::endpoint::SpiAllocator for CountingSpis {
    fn allocate(&mut self) -> Option<u32> {
        self.next += 1;
        Some(self.next - 1)
    }

    fn release(&mut self, spi: u32) {
        self.released.lock().unwrap().push(spi);
    }
}

#[test]
fn inbound_spis_come_from_the_allocator_and_go_back_to_it() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 28);
    let released = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    net.left.ep.set_spi_allocator(Box::new(CountingSpis {
        next: 0x1000,
        released: released.clone(),
    }));
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, rp) = established(&net);
    assert_eq!(lp.inbound.spi, 0x1000);
    assert_eq!(rp.outbound.spi, 0x1000);

    let now = net.now;
    net.left.ep.shutdown(now);
    net.run_until(Duration::from_secs(10));
    assert_eq!(*released.lock().unwrap(), vec![0x1000]);
}

#[test]
fn lost_am3_is_sent_again_with_the_qm1_retransmission() {
    let (mut l, mut r) = tunnels("k", "k");
    for t in [&mut l, &mut r] {
        t.phase1.mode = Phase1Mode::Aggressive;
    }
    let mut net = Net::new(l, r, 29);
    // AM3 is the left side's 2nd datagram; it is lost for good.
    net.filter = drop_when(|side, k| side == Side::Left && k == 2);
    net.initiate();
    net.run_until(Duration::from_secs(10));
    established(&net);
    // The responder sent AM2 once (no retransmission: no amplification of spoofed AM1s);
    // the initiator sent AM3 again in front of its QM1 retransmission.
    let am = |sent: &[common::Sent]| sent.iter().filter(|s| s.payload[18] == 4).count();
    assert_eq!(am(&net.right.sent), 1);
    assert_eq!(am(&net.left.sent), 3);
}

#[test]
fn a_flood_spoofing_one_peer_does_not_lock_out_another() {
    let (l, r) = tunnels("k", "k");
    let config = EndpointConfig {
        max_half_open: 16,
        max_half_open_per_peer: 4,
        ..EndpointConfig::default()
    };
    let mut net = Net::with_config(l, r.clone(), 30, config);
    let mut other = r;
    other.name = "other".into();
    other.remote_addr = addr("198.51.100.7:500");
    net.right.ep.add_tunnel(other).unwrap();

    // 50 MM1s "from" the other peer, each with its own cookie: 4 are answered.
    net.filter = Box::new(|_, _, _, _| vec![]);
    net.initiate();
    net.run_until(Duration::from_millis(1));
    let template = net.left.sent[0].payload.clone();
    let now = net.now;
    let mut answered = 0;
    for i in 0u8..50 {
        let mut mm1 = template.clone();
        mm1[0] = i;
        mm1[1] = 0xee;
        let spoofed = addr("198.51.100.7:500");
        net.right
            .ep
            .handle_datagram(now, addr("192.0.2.2:500"), spoofed, &mm1);
        while net.right.ep.poll_transmit().is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 4);

    // The real peer still gets through.
    net.filter = Box::new(|_, _, d, _| vec![d.to_vec()]);
    net.run_until(Duration::from_secs(10));
    established(&net);
}

#[test]
fn the_shorter_traffic_and_time_limits_win_through_responder_lifetime() {
    let (mut l, mut r) = tunnels("k", "k");
    l.phase2.lifetime_kilobytes = Some(100_000);
    r.phase2.lifetime_kilobytes = Some(50_000);
    l.phase2.lifetime = Duration::from_secs(86_400);
    r.phase2.lifetime = Duration::from_secs(7_200);
    let mut net = Net::new(l, r, 31);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, _) = established(&net);
    assert_eq!(lp.hard_lifetime.seconds, Some(7_200));
    assert_eq!(lp.hard_lifetime.kilobytes, Some(50_000));
}

#[test]
fn duplicated_aggressive_mode_messages_do_not_ping_pong() {
    let (mut l, mut r) = tunnels("k", "k");
    for t in [&mut l, &mut r] {
        t.phase1.mode = Phase1Mode::Aggressive;
    }
    let mut net = Net::new(l, r, 32);
    net.filter = Box::new(|_, _, d, _| vec![d.to_vec(), d.to_vec()]);
    net.initiate();
    net.run_until(Duration::from_secs(30));
    established(&net);
    // Every copy of a request gets one answer and no more: the right side's AM2 and QM2
    // each arrive 4 times (sent twice, each copy duplicated), so AM3 and QM3 go out 4
    // times each, besides AM1 and QM1; repeated AM3s and QM3s get no answer at all.
    assert_eq!(net.left.sent.len(), 10);
    // AM2 and QM2, each again for the duplicated AM1 and QM1.
    assert_eq!(net.right.sent.len(), 4);
}

/// The pairs a side holds according to its events: established and not deleted, as
/// (inbound SPI, outbound SPI), oldest first.
fn live_pairs(events: &[Event]) -> Vec<(u32, u32)> {
    let mut live = Vec::new();
    for e in events {
        match e {
            Event::ChildSaEstablished { pair, .. } => {
                live.push((pair.inbound.spi, pair.outbound.spi))
            }
            Event::ChildSaDeleted { inbound_spi, .. } => live.retain(|p| p.0 != *inbound_spi),
            _ => {}
        }
    }
    live
}

/// Whether some pair is live at both ends: my inbound is your outbound and back.
fn usable_pair(net: &Net) -> bool {
    let r = live_pairs(&net.right.events);
    live_pairs(&net.left.events)
        .iter()
        .any(|(i, o)| r.contains(&(*o, *i)))
}

#[test]
fn rekey_collision_ends_with_one_pair_at_both_ends() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 30);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, rp) = established(&net);

    // Both data planes report the soft traffic limit at the same instant: each end
    // starts a Quick Mode for the same selectors.
    let now = net.now;
    net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
    net.right.ep.soft_lifetime_reached(rp.inbound.spi, now);
    net.run_until(Duration::from_secs(15));

    // Two Quick Modes completed at each end; the loser was deleted, the old pair stays
    // until its hard lifetime.
    assert_eq!(children(&net.left.events).len(), 3);
    assert_eq!(children(&net.right.events).len(), 3);
    assert!(failures(&net.left.events).is_empty());
    assert!(failures(&net.right.events).is_empty());
    let l_live = live_pairs(&net.left.events);
    let r_live = live_pairs(&net.right.events);
    assert_eq!(l_live.len(), 2, "{l_live:?}");
    assert_eq!(r_live.len(), 2, "{r_live:?}");
    assert_eq!(l_live[0], (lp.inbound.spi, lp.outbound.spi));
    // The same new pair survives at both ends.
    assert_eq!(l_live[1], (r_live[1].1, r_live[1].0));
    assert_eq!(net.left.ep.sa_count(), (1, 2));
    assert_eq!(net.right.ep.sa_count(), (1, 2));

    // The survivor alone is renewed later: after the old pair's hour, one pair per end,
    // and exactly one more Quick Mode happened (at 90 % of the survivor's life).
    net.run_until(Duration::from_secs(3_600 + 5));
    assert_eq!(live_pairs(&net.left.events).len(), 1);
    assert_eq!(live_pairs(&net.right.events).len(), 1);
    assert_eq!(children(&net.left.events).len(), 4);
    assert!(usable_pair(&net));
}

#[test]
fn traffic_limits_rekey_then_delete_at_both_ends() {
    let (mut l, mut r) = tunnels("k", "k");
    l.phase2.lifetime_kilobytes = Some(1_000);
    r.phase2.lifetime_kilobytes = Some(1_000);
    let mut net = Net::new(l, r, 31);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, _) = established(&net);
    assert_eq!(lp.hard_lifetime.kilobytes, Some(1_000));

    // Soft limit at the left: a replacement is negotiated at once.
    let now = net.now;
    net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
    net.run_until(Duration::from_secs(10));
    assert_eq!(children(&net.left.events).len(), 2);
    assert_eq!(children(&net.right.events).len(), 2);
    assert_mirrored(
        children(&net.left.events)[1],
        children(&net.right.events)[1],
    );

    // A second report changes nothing; the hard limit deletes the old pair at both ends.
    let now = net.now;
    net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
    net.left.ep.hard_lifetime_reached(lp.inbound.spi, now);
    net.run_until(Duration::from_secs(15));
    assert_eq!(children(&net.left.events).len(), 2);
    assert_eq!(live_pairs(&net.left.events).len(), 1);
    assert_eq!(live_pairs(&net.right.events).len(), 1);
    assert!(usable_pair(&net));
    // An SPI nobody holds is ignored.
    let now = net.now;
    net.left.ep.hard_lifetime_reached(lp.inbound.spi, now);
    net.left.ep.soft_lifetime_reached(1, now);
    assert!(net.left.ep.poll_transmit().is_none());
}

/// A data plane split by direction reports a soft limit once per direction, so the
/// endpoint may hear of it twice before the replacement is negotiated: one Quick Mode
/// starts, not two. A report after the replacement failed starts another one.
#[test]
fn soft_limit_reported_twice_while_renewing_starts_one_quick_mode() {
    let (mut l, mut r) = tunnels("k", "k");
    l.phase2.lifetime_kilobytes = Some(1_000);
    r.phase2.lifetime_kilobytes = Some(1_000);
    let mut net = Net::new(l, r, 33);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, _) = established(&net);

    // Everything the left side sends is lost until `blackhole` is cleared.
    let blackhole = std::rc::Rc::new(std::cell::Cell::new(true));
    let lost = std::rc::Rc::clone(&blackhole);
    net.filter = Box::new(move |_, side, d, _| {
        if side == Side::Left && lost.get() {
            vec![]
        } else {
            vec![d.to_vec()]
        }
    });
    let sent = net.left.sent.len();
    let now = net.now;
    net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
    net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.left.sent.len(), sent + 1, "one QM1 for two reports");

    // The QM1 and its retransmissions are lost: the replacement fails.
    net.run_until(Duration::from_secs(120));
    assert_eq!(children(&net.left.events).len(), 1, "no replacement yet");
    assert!(
        failures(&net.left.events).iter().any(|f| f.contains("QM2")),
        "{:?}",
        failures(&net.left.events)
    );

    // With the path back, a new report starts a new Quick Mode, which succeeds.
    blackhole.set(false);
    let now = net.now;
    net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
    net.run_until(Duration::from_secs(130));
    assert_eq!(children(&net.left.events).len(), 2);
    assert_eq!(children(&net.right.events).len(), 2);
    assert_mirrored(
        children(&net.left.events)[1],
        children(&net.right.events)[1],
    );
}

#[test]
fn esp_pair_outliving_its_isakmp_sa_is_deleted_under_the_newer_one() {
    let (mut l, mut r) = tunnels("k", "k");
    l.phase1.lifetime = Duration::from_secs(60);
    r.phase1.lifetime = Duration::from_secs(60);
    let mut net = Net::new(l, r, 32);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (lp, rp) = established(&net);

    // The ISAKMP SA is renewed at 54 s and the first one expires at 60 s; the ESP pair
    // made under it lives on (RFC 2409 section 5.5: their lifetimes are independent).
    net.run_until(Duration::from_secs(70));
    assert_eq!(
        count(&net.left.events, |e| matches!(
            e,
            Event::Phase1Established { .. }
        )),
        2
    );
    assert_eq!(
        live_pairs(&net.left.events),
        vec![(lp.inbound.spi, lp.outbound.spi)]
    );
    assert_eq!(net.left.ep.sa_count(), (2, 1));

    // Its traffic limit is reached: the Delete goes under the new ISAKMP SA and the
    // peer finds the pair under the old one.
    let now = net.now;
    net.left.ep.hard_lifetime_reached(lp.inbound.spi, now);
    net.run_until(Duration::from_secs(72));
    assert!(net.right.events.iter().any(|e| matches!(
        e,
        Event::ChildSaDeleted { inbound_spi, .. } if *inbound_spi == rp.inbound.spi
    )));
    assert!(live_pairs(&net.right.events).is_empty());
    // The closed ISAKMP SA held only that pair: it is gone at both ends.
    assert_eq!(net.left.ep.sa_count(), (1, 0));
    assert_eq!(net.right.ep.sa_count(), (1, 0));
}

#[test]
fn dpd_recovers_from_a_peer_that_restarted_without_initiating() {
    let (mut l, r) = tunnels("k", "k");
    l.dpd = Some(DpdConfig {
        delay: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        action: DpdAction::Restart,
    });
    let mut net = Net::new(l, r.clone(), 33);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    established(&net);

    // The right gateway restarts and waits as a responder: our ESP now goes to SPIs it
    // does not know, nothing comes back, so DPD probes; the probes name cookies it does
    // not know either.
    net.replace_endpoint(Side::Right, r, 78);
    net.run_until(Duration::from_secs(120));

    // The left side declared the peer dead, dropped its stale pair and negotiated a new
    // one with the restarted peer without anyone restarting it by hand.
    assert_eq!(
        count(&net.left.events, |e| matches!(e, Event::PeerDead { .. })),
        1
    );
    let l = children(&net.left.events);
    let r = children(&net.right.events);
    assert_eq!((l.len(), r.len()), (2, 1));
    assert_mirrored(l[1], r[0]);
    assert_eq!(live_pairs(&net.left.events).len(), 1);
    assert!(usable_pair(&net));
    assert_eq!(net.left.ep.sa_count().1, 1);
}

/// Follows one side's pairs from its events without rescanning the whole log.
#[derive(Default)]
struct PairTracker {
    seen: usize,
    live: Vec<(u32, u32)>,
    established: usize,
    deleted: usize,
}

impl PairTracker {
    fn update(&mut self, events: &[Event]) {
        for e in &events[self.seen..] {
            match e {
                Event::ChildSaEstablished { pair, .. } => {
                    self.established += 1;
                    self.live.push((pair.inbound.spi, pair.outbound.spi));
                }
                Event::ChildSaDeleted { inbound_spi, .. } => {
                    self.deleted += 1;
                    self.live.retain(|p| p.0 != *inbound_spi);
                }
                other => assert!(
                    !matches!(other, Event::Failed { .. } | Event::PeerDead { .. }),
                    "{other:?}"
                ),
            }
        }
        self.seen = events.len();
    }
}

/// A full day of SA life with short lifetimes (phase 1: 10 min, phase 2: 2 min), DPD on
/// both sides, and a traffic model: ESP flows both ways every second on the newest pair
/// (reported to DPD), one side's data plane reports the soft kilobyte limit every 7
/// minutes (alternating sides), and both at once every 47 minutes (rekey collisions).
/// Checked every virtual second: both ends hold a common pair. At the end: no failure,
/// every rekey came before expiry, and the SA tables are back to one ISAKMP SA and one
/// pair per end once the forced rekeys stop. Phase 2 runs without PFS so the ~1,000 Quick
/// Modes cost hashing only.
#[test]
fn a_full_day_of_rekeys_never_leaves_the_tunnel_without_a_pair() {
    const DAY: u64 = 24 * 3_600;
    let (mut l, mut r) = tunnels("k", "k");
    for t in [&mut l, &mut r] {
        t.phase1.lifetime = Duration::from_secs(600);
        t.phase2.lifetime = Duration::from_secs(120);
        t.phase2.pfs_group = None;
        t.phase2.lifetime_kilobytes = Some(50_000);
        t.dpd = Some(DpdConfig {
            delay: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
            action: DpdAction::Restart,
        });
    }
    let mut net = Net::new(l, r, 34);
    net.initiate();
    net.run_until(Duration::from_secs(2));
    let (mut lt, mut rt) = (PairTracker::default(), PairTracker::default());
    let mut max_counts = ((0, 0), (0, 0));

    for second in 3..=DAY {
        net.run_until(Duration::from_secs(second));
        lt.update(&net.left.events);
        rt.update(&net.right.events);
        assert!(
            lt.live.iter().any(|(i, o)| rt.live.contains(&(*o, *i))),
            "no common pair at {second} s: left {:?} right {:?}",
            lt.live,
            rt.live
        );

        // ESP both ways on the newest pair.
        let now = net.now;
        let (l_new, r_new) = (*lt.live.last().unwrap(), *rt.live.last().unwrap());
        net.left.ep.traffic_seen(l_new.0, now);
        net.right.ep.traffic_seen(r_new.0, now);
        if second % 420 == 0 {
            if (second / 420) % 2 == 0 {
                net.left.ep.soft_lifetime_reached(l_new.0, now);
            } else {
                net.right.ep.soft_lifetime_reached(r_new.0, now);
            }
        }
        if second % 2_820 == 0 {
            net.left.ep.soft_lifetime_reached(l_new.0, now);
            net.right.ep.soft_lifetime_reached(r_new.0, now);
        }
        let (lc, rc) = (net.left.ep.sa_count(), net.right.ep.sa_count());
        max_counts.0 = (max_counts.0 .0.max(lc.0), max_counts.0 .1.max(lc.1));
        max_counts.1 = (max_counts.1 .0.max(rc.0), max_counts.1 .1.max(rc.1));
    }
    // Phase 1: the first at 0 s, then a renewal every 540 s (90 % of 600 s), the last
    // just after the day ends.
    for events in [&net.left.events, &net.right.events] {
        assert_eq!(
            count(events, |e| matches!(e, Event::Phase1Established { .. })),
            160
        );
    }
    // Phase 2: a renewal at least every 108 s (90 % of 120 s) plus the forced ones, each
    // pair deleted once; both ends agree on every pair.
    assert_eq!(lt.established, rt.established);
    assert!(
        lt.established >= 800 && lt.established <= 1_100,
        "{}",
        lt.established
    );
    assert_eq!(lt.established - lt.deleted, lt.live.len());
    // At most: the current pair, the one it replaced (until its hard lifetime), and the
    // two of a collision; the closed ISAKMP SA lingers while its last pair lives.
    assert_eq!(max_counts, ((2, 4), (2, 4)));

    // One more phase-1 lifetime with traffic but no forced rekeys: the tables settle.
    for second in DAY + 1..=DAY + 600 {
        net.run_until(Duration::from_secs(second));
        lt.update(&net.left.events);
        rt.update(&net.right.events);
        assert!(lt.live.iter().any(|(i, o)| rt.live.contains(&(*o, *i))));
        let now = net.now;
        let (l_new, r_new) = (*lt.live.last().unwrap(), *rt.live.last().unwrap());
        net.left.ep.traffic_seen(l_new.0, now);
        net.right.ep.traffic_seen(r_new.0, now);
    }
    // Back to the steady state: the current pair and the one it replaces, the same at
    // both ends and the same as the endpoints count.
    assert_eq!(lt.live.len(), 2);
    assert_eq!(rt.live.len(), 2);
    assert_eq!(net.left.ep.sa_count().1, 2);
    assert_eq!(net.right.ep.sa_count().1, 2);
    assert!(net.left.ep.sa_count().0 <= 2 && net.right.ep.sa_count().0 <= 2);
}

#[test]
fn commit_bit_holds_the_pair_until_connected_even_when_connected_is_lost() {
    let (mut l, r) = tunnels("k", "k");
    l.phase2.commit = true;
    let mut net = Net::new(l, r, 35);
    // The right side's datagrams: MM2, MM4, MM6, QM2, CONNECTED. The first CONNECTED is
    // lost.
    net.filter = drop_when(|side, k| side == Side::Right && k == 5);
    net.initiate();
    net.run_until(Duration::from_millis(500));

    // QM1 carries the commit bit beside the encryption bit; the responder installed its
    // pair at QM3 and confirmed with an Informational; the initiator still waits.
    let qm1 = &net.left.sent[3].payload;
    assert_eq!((qm1[18], qm1[19]), (32, 0x03));
    assert_eq!(
        net.right.sent[4].payload[18], 5,
        "CONNECTED travels in an Informational"
    );
    assert_eq!(children(&net.left.events).len(), 0);
    assert_eq!(children(&net.right.events).len(), 1);
    assert_eq!(
        net.left.ep.tunnel_state(net.left.tunnel),
        TunnelState::Phase1Up {
            child_sas: 0,
            quick_modes_in_progress: 1
        }
    );

    // QM3 is resent, the responder answers it with CONNECTED again, the pair is ready.
    net.run_until(Duration::from_secs(10));
    established(&net);
    assert_eq!(net.left.sent.len(), 6, "MM1, MM3, MM5, QM1, QM3 twice");
    assert_eq!(net.left.sent[4].payload, net.left.sent[5].payload);
    assert_eq!(net.right.sent.len(), 6);
    assert_eq!(net.right.sent[5].payload[18], 5);
    assert!(failures(&net.left.events).is_empty());
}

/// Aggressive Mode tunnels of one site, each with its own identity, PSK and subnet.
fn am_site(name: &str, psk: &str, subnet_right: &str) -> (TunnelConfig, TunnelConfig) {
    let (mut l, mut r) = tunnels(psk, psk);
    l.remote_ts = vec![subnet(subnet_right, 24)];
    r.local_ts = vec![subnet(subnet_right, 24)];
    for t in [&mut l, &mut r] {
        t.phase1.mode = Phase1Mode::Aggressive;
        t.phase2.pfs_group = None;
    }
    l.phase1.local_id = Some(Identity::Fqdn(format!("{name}.example")));
    r.phase1.remote_id = Some(Identity::Fqdn(format!("{name}.example")));
    r.name = format!("right-{name}");
    (l, r)
}

#[test]
fn two_aggressive_mode_tunnels_to_one_peer_address_are_told_apart_by_identity() {
    let (la, ra) = am_site("a", "key-a", "10.2.0.0");
    let (lb, rb) = am_site("b", "key-b", "10.3.0.0");
    let mut net = Net::new(la, ra, 36);
    let rb_id = net.right.ep.add_tunnel(rb.clone()).unwrap();
    net.initiate();
    net.run_until(Duration::from_secs(5));
    let (_, right_a) = established(&net);

    // A second gateway at the same address (e.g. behind the same NAT) with identity b.
    net.replace_endpoint(Side::Left, lb, 79);
    net.initiate();
    net.run_until(Duration::from_secs(10));

    // The right side chose tunnel b (its PSK and subnet) for the second peer and kept a.
    let l = children(&net.left.events);
    let r = children(&net.right.events);
    assert_eq!((l.len(), r.len()), (1, 2));
    assert_mirrored(l[0], r[1]);
    assert_eq!(r[1].local_ts, subnet("10.3.0.0", 24));
    assert!(net.right.events.iter().any(|e| matches!(
        e,
        Event::ChildSaEstablished { tunnel, .. } if *tunnel == rb_id
    )));
    assert_eq!(
        live_pairs(&net.right.events).first(),
        Some(&(right_a.inbound.spi, right_a.outbound.spi))
    );
    assert!(failures(&net.right.events).is_empty());

    // An identity no tunnel expects is dropped without an answer.
    let (mut lc, _) = am_site("c", "key-a", "10.2.0.0");
    lc.phase1.local_id = Some(Identity::Fqdn("c.example".into()));
    net.replace_endpoint(Side::Left, lc, 80);
    let answers = net.right.sent.len();
    net.initiate();
    net.run_until(Duration::from_secs(12));
    assert_eq!(net.right.sent.len(), answers);
    assert!(children(&net.left.events).is_empty());
}

#[test]
fn rejects_a_second_tunnel_to_one_peer_address_unless_both_use_aggressive_mode_identities() {
    let mut ep = Endpoint::new(
        EndpointConfig::default(),
        Box::new(ChaCha20Rng::seed_from_u64(81)),
    );
    let (_, ra) = am_site("a", "k", "10.2.0.0");
    let (_, rb) = am_site("b", "k", "10.3.0.0");
    let (_, main) = tunnels("k", "k");
    ep.add_tunnel(ra.clone()).unwrap();
    ep.add_tunnel(rb).unwrap();
    // Main Mode to the same address: refused.
    assert!(ep.add_tunnel(main).is_err());
    // The same identity again: refused.
    let mut again = ra;
    again.name = "again".into();
    let err = ep.add_tunnel(again).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tunnel \"again\": remote_addr 192.0.2.1:500 is already used by tunnel \"right-a\""
    );
}

/// Rekey collisions at every offset between the two ends' starts, from simultaneous to
/// well after the first Quick Mode finished (latency 5 ms each way; at 10 ms one end sees
/// a collision and the other a plain renewal): every time both ends end up with the old
/// pair and one common new pair, and one lifetime later with exactly one, the same.
#[test]
fn rekey_collisions_at_any_offset_converge_on_one_pair() {
    for offset_ms in 0..=25u64 {
        let (mut l, mut r) = tunnels("k", "k");
        for t in [&mut l, &mut r] {
            t.phase2.lifetime = Duration::from_secs(600);
            t.phase2.pfs_group = None;
        }
        let mut net = Net::new(l, r, 500 + offset_ms);
        net.initiate();
        net.run_until(Duration::from_secs(5));
        let (lp, rp) = established(&net);

        // A second after the pair was made (the network is idle until then).
        net.now += Duration::from_secs(1);
        let now = net.now;
        net.left.ep.soft_lifetime_reached(lp.inbound.spi, now);
        let start = net.now - net.start;
        net.run_until(start + Duration::from_millis(offset_ms));
        let now = net.now;
        net.right.ep.soft_lifetime_reached(rp.inbound.spi, now);
        net.run_until(start + Duration::from_secs(10));
        assert!(usable_pair(&net), "offset {offset_ms} ms");
        // The old pair and one new one, the same at both ends: no duplicate survives.
        let (ll, rl) = (live_pairs(&net.left.events), live_pairs(&net.right.events));
        assert_eq!(ll.len(), 2, "offset {offset_ms} ms: {ll:?} {rl:?}");
        assert_eq!(rl, vec![(ll[0].1, ll[0].0), (ll[1].1, ll[1].0)]);
        assert!(failures(&net.left.events).is_empty());
        assert!(failures(&net.right.events).is_empty());

        // After the old pairs' lifetime, and with renewals running: one pair per end.
        net.run_until(start + Duration::from_secs(600 + 10));
        let (ll, rl) = (live_pairs(&net.left.events), live_pairs(&net.right.events));
        assert_eq!(ll.len(), 1, "offset {offset_ms} ms: {ll:?} {rl:?}");
        assert_eq!(rl, vec![(ll[0].1, ll[0].0)], "offset {offset_ms} ms");
    }
}

#[test]
fn forced_udp_encapsulation_without_a_nat_floats_and_encapsulates() {
    for (force_left, mode) in [
        (true, Phase1Mode::Main),
        (false, Phase1Mode::Main),
        (true, Phase1Mode::Aggressive),
    ] {
        let (mut l, mut r) = tunnels("k", "k");
        l.phase1.mode = mode;
        r.phase1.mode = mode;
        if force_left {
            l.force_udp_encapsulation = true;
        } else {
            r.force_udp_encapsulation = true;
        }
        let mut net = Net::new(l, r, 37);
        net.initiate();
        net.run_until(Duration::from_secs(5));

        let (lp, rp) = established(&net);
        let what = format!("force at left: {force_left}, {mode:?}");
        assert_eq!(lp.encapsulation, Encapsulation::UdpTunnel, "{what}");
        assert_eq!(lp.local, addr("192.0.2.1:4500"), "{what}");
        assert_eq!(lp.remote, addr("192.0.2.2:4500"), "{what}");
        assert_eq!(rp.remote, addr("192.0.2.1:4500"), "{what}");
        // The last Quick Mode message travelled on 4500 with the marker.
        let last = net.left.sent.last().unwrap();
        assert_eq!(
            (last.local.port(), last.non_esp_marker),
            (4500, true),
            "{what}"
        );
    }

    // Without the option and without a NAT: plain ESP.
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 38);
    net.initiate();
    net.run_until(Duration::from_secs(5));
    assert_eq!(established(&net).0.encapsulation, Encapsulation::Tunnel);
}

/// Sets the commit bit (RFC 2408 section 3.1, flags bit 1 at offset 19) in the first
/// Quick Mode message each side sends. The flags are outside HASH(1) and HASH(2), so
/// this is what a peer that sets the bit itself puts on the wire: our responder, seeing
/// it in QM1, confirms QM3 with CONNECTED, and our initiator, seeing it in QM2, must wait
/// for that CONNECTED although it did not ask for it.
fn peer_sets_commit_bit(drop_connected: bool) -> Filter {
    let mut flipped = [false, false];
    Box::new(move |_, side, d, _| {
        let mut d = d.to_vec();
        let quick = d.get(18) == Some(&32);
        let informational = d.get(18) == Some(&5);
        let i = usize::from(side == Side::Right);
        if quick && !flipped[i] {
            flipped[i] = true;
            d[19] |= 0x02;
        }
        if drop_connected && informational && side == Side::Right && flipped[1] {
            return vec![];
        }
        vec![d]
    })
}

/// The exchange types of what one side sent, with the flags byte (offset 19).
fn sent_types_and_flags(peer: &Peer) -> Vec<(u8, u8)> {
    peer.sent
        .iter()
        .map(|s| (s.payload[18], s.payload[19]))
        .collect()
}

#[test]
fn peer_commit_bit_in_qm2_holds_our_pair_until_connected() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 37);
    net.filter = peer_sets_commit_bit(false);
    net.initiate();

    // Nine one-way trips: MM1..MM6, QM1, QM2, QM3. QM3 has reached the responder, which
    // installed its pair and sent CONNECTED; our initiator, which did not ask for the
    // commit bit, holds its pair back although it has every key.
    net.run_until(9 * LATENCY + Duration::from_millis(1));
    assert_eq!(children(&net.left.events).len(), 0);
    assert_eq!(children(&net.right.events).len(), 1);
    assert_eq!(
        net.left.ep.tunnel_state(net.left.tunnel),
        TunnelState::Phase1Up {
            child_sas: 0,
            quick_modes_in_progress: 1
        }
    );

    // CONNECTED arrives one trip later: the pair is reported, keys mirrored.
    net.run_until(10 * LATENCY + Duration::from_millis(1));
    let (lp, _) = established(&net);
    assert!(matches!(
        net.left.events.as_slice(),
        [Event::Phase1Established { .. }, Event::ChildSaEstablished { pair, .. }]
            if pair.inbound.spi == lp.inbound.spi && pair.outbound.spi == lp.outbound.spi
    ));
    assert!(matches!(
        net.right.events.as_slice(),
        [
            Event::Phase1Established { .. },
            Event::ChildSaEstablished { .. }
        ]
    ));
    // We sent QM1 without the commit bit; QM3 went once, nothing was retransmitted.
    assert_eq!(
        sent_types_and_flags(&net.left),
        vec![(2, 0), (2, 0), (2, 1), (32, 1), (32, 1)]
    );
    assert_eq!(
        sent_types_and_flags(&net.right),
        vec![(2, 0), (2, 0), (2, 1), (32, 1), (5, 1)]
    );
    net.run_until(Duration::from_secs(60));
    assert_eq!(net.left.events.len(), 2, "{:?}", net.left.events);
    assert_eq!(net.left.sent.len(), 5);
}

#[test]
fn peer_commit_bit_in_qm2_without_connected_times_out_and_deletes_the_peers_pair() {
    let (l, r) = tunnels("k", "k");
    let mut net = Net::new(l, r, 38);
    net.filter = peer_sets_commit_bit(true);
    net.initiate();
    net.run_until(Duration::from_secs(120));

    // QM3 is our request while CONNECTED is awaited: sent at 0 s and resent after 1, 3,
    // 7, 15 and 31 s (back-off 1 s doubling, 5 resends), each answered by a CONNECTED
    // that is lost, except the last: the responder forgot the exchange 30 s after QM3
    // (linger). 16 s after the last resend we give up and delete the pair the responder
    // installed at QM3.
    assert_eq!(
        sent_types_and_flags(&net.left),
        [(2, 0), (2, 0), (2, 1), (32, 1)]
            .into_iter()
            .chain([(32, 1); 6])
            .chain([(5, 1)])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sent_types_and_flags(&net.right),
        [(2, 0), (2, 0), (2, 1), (32, 1)]
            .into_iter()
            .chain([(5, 1); 5])
            .collect::<Vec<_>>()
    );
    assert!(
        matches!(
            net.left.events.as_slice(),
            [
                Event::Phase1Established { .. },
                Event::Failed {
                    reason: FailureReason::Timeout {
                        awaiting: "CONNECTED",
                        sent: 6
                    },
                    ..
                }
            ]
        ),
        "{:?}",
        net.left.events
    );
    let installed = children(&net.right.events)[0].clone();
    assert!(
        matches!(
            net.right.events.as_slice(),
            [
                Event::Phase1Established { .. },
                Event::ChildSaEstablished { .. },
                Event::ChildSaDeleted { inbound_spi, outbound_spi, .. }
            ] if *inbound_spi == installed.inbound.spi && *outbound_spi == installed.outbound.spi
        ),
        "{:?}",
        net.right.events
    );
    for peer in [&net.left, &net.right] {
        assert_eq!(
            peer.ep.tunnel_state(peer.tunnel),
            TunnelState::Phase1Up {
                child_sas: 0,
                quick_modes_in_progress: 0
            }
        );
    }
}
