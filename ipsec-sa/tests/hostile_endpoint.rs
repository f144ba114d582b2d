//! Hostile and broken peers against `ipsec_sa::endpoint::Endpoint`: floods of first
//! messages, replayed, truncated, duplicated and late messages at every step of Main,
//! Aggressive and Quick Mode, unauthenticated notifications and deletes, and absurd payload
//! structures. Virtual time, seeded RNGs.
//!
//! The harness (`tests/common`) runs in lockstep here: each run delivers every message in
//! flight before the next timer, so these tests see every message by its position in the
//! exchange, and it captures the endpoints' drop reasons from their `tracing` events.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test harness: a failed step should stop the test with its message"
)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{addr, failures, tunnels as base_tunnels, Net, Side, Wire};
use ipsec_crypto::DhGroup;
use ipsec_proto::isakmp::{self, Header, Message, Payload};
use ipsec_sa::endpoint::{
    Endpoint, EndpointConfig, Event, Phase1Mode, Phase1Proposal, TunnelConfig, TunnelState,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

// -------------------------------------------------------------------------------------
// Harness

/// Left 192.0.2.1 (10.1.0.0/24) initiates to right 192.0.2.2 (10.2.0.0/24). Group 2 in
/// both phases keeps the debug-build DH fast.
fn tunnels(mode: Phase1Mode) -> (TunnelConfig, TunnelConfig) {
    let (mut l, mut r) = base_tunnels("hostile-test-psk", "hostile-test-psk");
    for t in [&mut l, &mut r] {
        t.phase1.mode = mode;
        t.phase1.proposals = vec![Phase1Proposal {
            group: DhGroup::Modp1024,
            ..Phase1Proposal::default()
        }];
        t.phase2.pfs_group = Some(DhGroup::Modp1024);
    }
    (l, r)
}

/// The lockstep harness with captured logs.
fn net(l: TunnelConfig, r: TunnelConfig, seed: u64, config: EndpointConfig) -> Net {
    Net::lockstep(l, r, seed, config)
}

fn pairs(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::ChildSaEstablished { .. }))
        .count()
}

/// How many ISAKMP SAs the endpoint holds (its Debug output says so).
fn sa_count(ep: &Endpoint) -> usize {
    let d = format!("{ep:?}");
    let at = d.find("sas: ").unwrap() + 5;
    d[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Both sides have phase 1 up and one ESP pair, nothing negotiating.
fn assert_both_up(net: &Net) {
    assert_eq!(
        (net.state(Side::Left), net.state(Side::Right)),
        (UP_ONE, UP_ONE)
    );
}

const UP_ONE: TunnelState = TunnelState::Phase1Up {
    child_sas: 1,
    quick_modes_in_progress: 0,
};

// -------------------------------------------------------------------------------------
// Faults at every step of the exchange

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The message arrives twice.
    Duplicate,
    /// Truncated copies (some with the header length patched to match) arrive first.
    Truncated,
    /// After the message, the sender's previous message arrives again.
    ReplayPrevious,
    /// The message is lost at first and its original arrives after the exchange ended.
    Late,
}

/// Truncations of `d`: cut datagrams (header length no longer matches) and forged ones
/// whose header length was patched to the cut (only an attacker produces those).
fn truncations(d: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [0, 1, 20, 27, 28, 29, d.len() / 2, d.len() - 1]
        .into_iter()
        .map(|n| d[..n].to_vec())
        .collect();
    let mut forged = d[..d.len() - 1].to_vec();
    isakmp::patch_length(&mut forged, d.len() - 1);
    out.push(forged);
    out
}

struct Outcome {
    left_sent: usize,
    right_sent: usize,
    left_pairs: usize,
    right_pairs: usize,
    failures: Vec<String>,
    states: (TunnelState, TunnelState),
}

fn run_with_fault(mode: Phase1Mode, victim: usize, fault: Fault) -> (Outcome, Vec<String>) {
    let (l, r) = tunnels(mode);
    let mut net = net(l, r, 7, EndpointConfig::default());
    let late: Arc<Mutex<Wire>> = Arc::default();
    let late_in = late.clone();
    net.filter = Box::new(move |n, side, d, wire| {
        if n != victim {
            return vec![d.to_vec()];
        }
        match fault {
            Duplicate => vec![d.to_vec(), d.to_vec()],
            Truncated => {
                let mut v = truncations(d);
                v.push(d.to_vec());
                v
            }
            ReplayPrevious => {
                let previous = wire.0[..n - 1].iter().rev().find(|(s, _)| *s == side);
                let mut v = vec![d.to_vec()];
                v.extend(previous.map(|(_, p)| p.clone()));
                v
            }
            Late => {
                late_in.lock().unwrap().0.push((side, d.to_vec()));
                vec![]
            }
        }
    });
    net.initiate();
    net.run_for(Duration::from_secs(20));
    for (side, d) in std::mem::take(&mut late.lock().unwrap().0) {
        net.deliver(side.other(), &d);
    }
    net.run_for(Duration::from_secs(5));
    let logs = net.logs.take();
    let states = (net.state(Side::Left), net.state(Side::Right));
    let mut failures = failures(&net.left.events);
    failures.extend(common::failures(&net.right.events));
    (
        Outcome {
            left_sent: net.left.sent.len(),
            right_sent: net.right.sent.len(),
            left_pairs: pairs(&net.left.events),
            right_pairs: pairs(&net.right.events),
            failures,
            states,
        },
        logs,
    )
}

use Fault::{Duplicate, Late, ReplayPrevious, Truncated};

/// (mode, n-th message of the whole exchange, fault) -> messages sent by (left, right).
/// Undisturbed, Main Mode + Quick Mode is 5/4 (MM1 MM3 MM5 QM1 QM3 / MM2 MM4 MM6 QM2) and
/// Aggressive Mode + Quick Mode 4/2 (AM1 AM3 QM1 QM3 / AM2 QM2). One more means a
/// retransmission answered (a duplicate request gets the cached answer; a duplicate AM2
/// gets AM3 again and a duplicate QM2 QM3, since those last messages have no answer that
/// could prompt a resend) or a timer-driven resend of the lost message. A duplicate of a
/// last message (AM3, QM3) is dropped.
const EXPECTED: &[(Phase1Mode, usize, Fault, (usize, usize))] = &[
    (Phase1Mode::Main, 1, Duplicate, (5, 5)),
    (Phase1Mode::Main, 1, Truncated, (5, 4)),
    (Phase1Mode::Main, 1, Late, (6, 4)),
    (Phase1Mode::Main, 2, Duplicate, (5, 4)),
    (Phase1Mode::Main, 2, Truncated, (5, 4)),
    (Phase1Mode::Main, 2, Late, (6, 5)),
    (Phase1Mode::Main, 3, Duplicate, (5, 5)),
    (Phase1Mode::Main, 3, Truncated, (5, 4)),
    (Phase1Mode::Main, 3, ReplayPrevious, (5, 4)),
    (Phase1Mode::Main, 3, Late, (6, 4)),
    (Phase1Mode::Main, 4, Duplicate, (5, 4)),
    (Phase1Mode::Main, 4, Truncated, (5, 4)),
    (Phase1Mode::Main, 4, ReplayPrevious, (5, 4)),
    (Phase1Mode::Main, 4, Late, (6, 5)),
    (Phase1Mode::Main, 5, Duplicate, (5, 5)),
    (Phase1Mode::Main, 5, Truncated, (5, 4)),
    (Phase1Mode::Main, 5, ReplayPrevious, (5, 4)),
    (Phase1Mode::Main, 5, Late, (6, 5)),
    (Phase1Mode::Main, 6, Duplicate, (5, 4)),
    (Phase1Mode::Main, 6, Truncated, (5, 4)),
    (Phase1Mode::Main, 6, ReplayPrevious, (5, 4)),
    (Phase1Mode::Main, 6, Late, (6, 5)),
    (Phase1Mode::Main, 7, Duplicate, (6, 5)),
    (Phase1Mode::Main, 7, Truncated, (5, 4)),
    (Phase1Mode::Main, 7, ReplayPrevious, (5, 5)),
    (Phase1Mode::Main, 7, Late, (6, 4)),
    (Phase1Mode::Main, 8, Duplicate, (6, 4)),
    (Phase1Mode::Main, 8, Truncated, (5, 4)),
    (Phase1Mode::Main, 8, ReplayPrevious, (5, 4)),
    (Phase1Mode::Main, 8, Late, (8, 6)),
    (Phase1Mode::Main, 9, Duplicate, (5, 4)),
    (Phase1Mode::Main, 9, Truncated, (5, 4)),
    (Phase1Mode::Main, 9, ReplayPrevious, (5, 4)),
    (Phase1Mode::Main, 9, Late, (6, 5)),
    (Phase1Mode::Aggressive, 1, Duplicate, (5, 3)),
    (Phase1Mode::Aggressive, 1, Truncated, (4, 2)),
    (Phase1Mode::Aggressive, 1, Late, (5, 2)),
    (Phase1Mode::Aggressive, 2, Duplicate, (5, 2)),
    (Phase1Mode::Aggressive, 2, Truncated, (4, 2)),
    (Phase1Mode::Aggressive, 2, Late, (6, 3)),
    (Phase1Mode::Aggressive, 3, Duplicate, (4, 2)),
    (Phase1Mode::Aggressive, 3, Truncated, (4, 2)),
    (Phase1Mode::Aggressive, 3, ReplayPrevious, (4, 2)),
    (Phase1Mode::Aggressive, 3, Late, (7, 3)),
    (Phase1Mode::Aggressive, 4, Duplicate, (5, 3)),
    (Phase1Mode::Aggressive, 4, Truncated, (4, 2)),
    (Phase1Mode::Aggressive, 4, ReplayPrevious, (4, 2)),
    (Phase1Mode::Aggressive, 4, Late, (6, 2)),
    (Phase1Mode::Aggressive, 5, Duplicate, (5, 2)),
    (Phase1Mode::Aggressive, 5, Truncated, (4, 2)),
    (Phase1Mode::Aggressive, 5, ReplayPrevious, (5, 2)),
    (Phase1Mode::Aggressive, 5, Late, (8, 4)),
    (Phase1Mode::Aggressive, 6, Duplicate, (4, 2)),
    (Phase1Mode::Aggressive, 6, Truncated, (4, 2)),
    (Phase1Mode::Aggressive, 6, ReplayPrevious, (4, 2)),
    (Phase1Mode::Aggressive, 6, Late, (5, 3)),
];

fn assert_completes(mode: Phase1Mode, victim: usize, fault: Fault) -> (Outcome, Vec<String>) {
    let (o, logs) = run_with_fault(mode, victim, fault);
    let case = format!("{mode:?} message {victim} {fault:?}");
    assert_eq!(o.states, (UP_ONE, UP_ONE), "{case}: {logs:#?}");
    assert_eq!((o.left_pairs, o.right_pairs), (1, 1), "{case}");
    assert!(o.failures.is_empty(), "{case}: {:?}", o.failures);
    (o, logs)
}

#[test]
fn faults_at_every_step_are_dropped_or_answered_and_the_exchange_completes() {
    let mut wrong = Vec::new();
    for &(mode, victim, fault, sent) in EXPECTED {
        let (o, logs) = assert_completes(mode, victim, fault);
        let case = format!("{mode:?} message {victim} {fault:?}");
        if (o.left_sent, o.right_sent) != sent {
            wrong.push(format!(
                "{case}: sent {:?}, expected {sent:?}",
                (o.left_sent, o.right_sent)
            ));
            continue;
        }
        let drops = logs.iter().filter(|l| l.contains("dropping")).count();
        let resends = logs
            .iter()
            .filter(|l| l.contains("resending our last"))
            .count();
        match fault {
            // Each of the nine truncations is dropped with a reason, nothing is answered.
            Truncated => assert_eq!((drops, resends), (9, 0), "{case}: {logs:#?}"),
            // Every extra message we see is a logged answer to a retransmission.
            Duplicate => assert_eq!(
                resends,
                o.left_sent + o.right_sent - sent_undisturbed(mode),
                "{case}: {logs:#?}"
            ),
            ReplayPrevious | Late => assert!(drops + resends >= 1, "{case}: {logs:#?}"),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn sent_undisturbed(mode: Phase1Mode) -> usize {
    match mode {
        Phase1Mode::Main => 9,
        _ => 6,
    }
}

/// A retransmitted MM1 that the network delivers after MM3 (the initiator resent MM1
/// before MM2 arrived) is a harmless duplicate. Until 4859fff it ended the exchange on both
/// sides (clear message where an encrypted one was due was fatal).
#[test]
fn late_mm1_after_mm3_is_dropped_and_main_mode_completes() {
    let (o, _) = assert_completes(Phase1Mode::Main, 3, ReplayPrevious);
    assert_eq!((o.left_sent, o.right_sent), (5, 4));
}

/// The same with MM2 arriving again after MM4 at the initiator.
#[test]
fn late_mm2_after_mm4_is_dropped_and_main_mode_completes() {
    let (o, _) = assert_completes(Phase1Mode::Main, 4, ReplayPrevious);
    assert_eq!((o.left_sent, o.right_sent), (5, 4));
}

/// AM3 lost: the initiator thinks phase 1 is up and sends QM1, which the responder
/// (still awaiting AM3) drops; until 3ef85d5 nobody resent AM3 and the tunnel never came up.
#[test]
fn lost_am3_is_recovered() {
    let (l, r) = tunnels(Phase1Mode::Aggressive);
    let mut net = net(l, r, 7, EndpointConfig::default());
    net.filter = Box::new(|n, _, d, _| if n == 3 { vec![] } else { vec![d.to_vec()] });
    net.initiate();
    net.run_for(Duration::from_secs(120));
    assert_both_up(&net);
}

// -------------------------------------------------------------------------------------
// Floods of first messages

/// A first message as `mode`'s initiator sends it (MM1 or AM1), from a throwaway endpoint.
fn first_message(mode: Phase1Mode) -> Vec<u8> {
    let (l, _) = tunnels(mode);
    let mut ep = Endpoint::new(
        EndpointConfig::default(),
        Box::new(ChaCha20Rng::seed_from_u64(1)),
    );
    let t = ep.add_tunnel(l).unwrap();
    ep.initiate(t, Instant::now()).unwrap();
    ep.poll_transmit().unwrap().payload
}

/// `count` first messages with fresh initiator cookies from `source(i)`; returns how many
/// the right side answered.
fn flood(
    net: &mut Net,
    template: &[u8],
    count: u32,
    mut source: impl FnMut(u32) -> SocketAddr,
) -> usize {
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(count));
    let local = net.right.addr;
    let mut answered = 0;
    for i in 0..count {
        let mut m = template.to_vec();
        rng.fill_bytes(&mut m[..8]);
        net.right.ep.handle_datagram(net.now, local, source(i), &m);
        while net.right.ep.poll_transmit().is_some() {
            answered += 1;
        }
    }
    answered
}

fn stranger(i: u32) -> SocketAddr {
    let [a, b, c, d] = (0x0a00_0000 | i).to_be_bytes();
    SocketAddr::from(([a, b, c, d], 500))
}

#[test]
fn first_message_floods_from_unknown_addresses_leave_no_state() {
    for mode in [Phase1Mode::Main, Phase1Mode::Aggressive] {
        let (l, r) = tunnels(mode);
        let mut net = net(l, r, 30, EndpointConfig::default());
        let template = first_message(mode);
        assert_eq!(flood(&mut net, &template, 20_000, stranger), 0, "{mode:?}");
        assert_eq!(sa_count(&net.right.ep), 0, "{mode:?}");
        assert_eq!(net.right.ep.poll_timeout(), None);
        let dropped = net
            .logs
            .take()
            .iter()
            .filter(|l| l.starts_with("DEBUG") && l.contains("no tunnel is configured"))
            .count();
        assert_eq!(dropped, 20_000, "one debug line per dropped datagram");

        // The real peer is not held up at all.
        net.initiate();
        net.run_for(Duration::from_secs(5));
        assert_both_up(&net);
    }
}

#[test]
fn spoofed_first_message_flood_is_bounded_by_the_half_open_limit_and_expires() {
    for mode in [Phase1Mode::Main, Phase1Mode::Aggressive] {
        let (l, r) = tunnels(mode);
        let config = EndpointConfig {
            max_half_open: 16,
            max_half_open_per_peer: 4,
            ..EndpointConfig::default()
        };
        let mut net = net(l, r, 31, config);
        let template = first_message(mode);
        let peer = net.left.addr;
        // Each answer costs the responder a nonce (and in Aggressive Mode a DH key pair
        // and shared secret): the limit bounds that work and the state, not the time.
        let answered = flood(&mut net, &template, 2_000, |_| peer);
        // The per-peer cap (below the global limit) bounds answers and SAs alike.
        assert_eq!(answered, 4, "{mode:?}");
        assert_eq!(sa_count(&net.right.ep), 4, "{mode:?}");
        let dropped = net
            .logs
            .take()
            .iter()
            .filter(|l| l.contains("too many half-open"))
            .count();
        assert_eq!(dropped, 2_000 - 4, "{mode:?}");

        // The responder does not retransmit for them (no amplification), and forgets them
        // once the initiator's whole retransmission schedule would have passed.
        net.run_for(Duration::from_secs(120));
        assert!(net.right.sent.is_empty(), "{mode:?}");
        assert_eq!(sa_count(&net.right.ep), 0, "{mode:?}");
        assert_eq!(net.right.ep.poll_timeout(), None, "{mode:?}");

        net.initiate();
        net.run_for(Duration::from_secs(5));
        assert_both_up(&net);
    }
}

/// A flood spoofing one configured peer's address must not lock the other peers out
/// (until 3ef85d5 the half-open limit was only global, and it did).
#[test]
fn spoofed_flood_for_one_peer_does_not_lock_out_another() {
    let (l, r) = tunnels(Phase1Mode::Main);
    let config = EndpointConfig {
        max_half_open: 16,
        ..EndpointConfig::default()
    };
    let mut net = net(l, r, 32, config);
    let mut other = tunnels(Phase1Mode::Main).1;
    other.name = "other".into();
    other.remote_addr = addr("198.51.100.7:500");
    net.right.ep.add_tunnel(other).unwrap();
    let template = first_message(Phase1Mode::Main);
    let answered = flood(&mut net, &template, 100, |_| addr("198.51.100.7:500"));
    assert_eq!(answered, 8, "the default per-peer cap");
    assert_eq!(sa_count(&net.right.ep), 8);
    net.initiate();
    net.run_for(Duration::from_secs(5));
    assert_both_up(&net);
}

// -------------------------------------------------------------------------------------
// Unauthenticated notifications and deletes

/// Both sides up with one ESP pair; returns (CKY-I, CKY-R, right's inbound SPI, left's).
fn established_net(seed: u64) -> (Net, [u8; 8], [u8; 8], u32, u32) {
    let (l, r) = tunnels(Phase1Mode::Main);
    let mut net = net(l, r, seed, EndpointConfig::default());
    net.initiate();
    net.run_for(Duration::from_secs(5));
    assert_both_up(&net);
    let spi = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::ChildSaEstablished { pair, .. } => Some(pair.inbound.spi),
                _ => None,
            })
            .unwrap()
    };
    let (r_spi, l_spi) = (spi(&net.right.events), spi(&net.left.events));
    let mm2 = &net.right.sent[0].payload;
    let (cky_i, cky_r) = (mm2[..8].try_into().unwrap(), mm2[8..16].try_into().unwrap());
    net.left.events.clear();
    net.right.events.clear();
    net.logs.take();
    (net, cky_i, cky_r, r_spi, l_spi)
}

/// Delete for both ESP SPIs and the ISAKMP SA, and two error notifications.
fn teardown_payloads(cky_i: [u8; 8], cky_r: [u8; 8], spis: [u32; 2]) -> Vec<Payload> {
    let mut cookies = cky_i.to_vec();
    cookies.extend_from_slice(&cky_r);
    let notify = |t: isakmp::NotifyType| {
        Payload::Notification(isakmp::NotifyPayload {
            doi: isakmp::DOI_IPSEC,
            protocol_id: isakmp::ProtocolId(1),
            notify_type: t,
            spi: cookies.clone(),
            data: Vec::new(),
        })
    };
    vec![
        Payload::Delete(isakmp::DeletePayload {
            doi: isakmp::DOI_IPSEC,
            protocol_id: isakmp::ProtocolId(3),
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }),
        Payload::Delete(isakmp::DeletePayload {
            doi: isakmp::DOI_IPSEC,
            protocol_id: isakmp::ProtocolId(1),
            spi_size: 16,
            spis: vec![cookies.clone()],
        }),
        notify(isakmp::NotifyType::INVALID_SPI),
        notify(isakmp::NotifyType::NO_PROPOSAL_CHOSEN),
    ]
}

fn header(cky_i: [u8; 8], cky_r: [u8; 8], message_id: u32, flags: u8) -> Header {
    Header {
        initiator_cookie: cky_i,
        responder_cookie: cky_r,
        next_payload: isakmp::PayloadType::NONE,
        version: 0x10,
        exchange_type: isakmp::ExchangeType::INFORMATIONAL,
        flags: isakmp::Flags(flags),
        message_id,
        length: 0,
    }
}

fn nothing_happened(net: &mut Net) {
    net.run_for(Duration::from_secs(1));
    assert!(net.left.events.is_empty(), "{:?}", net.left.events);
    assert!(net.right.events.is_empty(), "{:?}", net.right.events);
    assert_both_up(net);
}

#[test]
fn clear_text_deletes_and_error_notifications_after_phase1_tear_nothing_down() {
    let (mut net, cky_i, cky_r, r_spi, l_spi) = established_net(40);
    let payloads = teardown_payloads(cky_i, cky_r, [r_spi, l_spi]);
    for message_id in [0, 1, 0xdead_beef] {
        let mut m = Vec::new();
        isakmp::encode_message(&header(cky_i, cky_r, message_id, 0), &payloads, &mut m);
        assert!(Message::parse(&m).is_ok());
        net.deliver(Side::Right, &m);
        net.deliver(Side::Left, &m);
    }
    nothing_happened(&mut net);
    let logs = net.logs.take();
    let dropped = logs
        .iter()
        .filter(|l| l.contains("dropping unprotected informational after phase 1"))
        .count();
    assert_eq!(dropped, 6, "{logs:#?}");
    assert!(
        net.right.sent.len() == 4 && net.left.sent.len() == 5,
        "no answers"
    );
}

/// A message as a peer holding Ka would encrypt it: AES-128-CBC with the phase-2 IV of
/// RFC 2409 Appendix B, hash(last phase-1 CBC block | M-ID) (SHA-1 here).
fn encrypted(h: Header, chain: &[Payload], last_block: &[u8], ka: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    isakmp::encode_message(&h, chain, &mut m);
    let mut body = m.split_off(Header::LEN);
    body.resize(body.len().div_ceil(16) * 16, 0);
    let iv = ipsec_crypto::ikev1::phase2_iv(
        ipsec_crypto::HashAlgorithm::Sha1,
        last_block,
        h.message_id,
        16,
    );
    ipsec_crypto::Cipher::new(ipsec_crypto::EncryptionAlgorithm::AesCbc128, ka)
        .unwrap()
        .encrypt_cbc(&iv, &mut body)
        .unwrap();
    m.extend_from_slice(&body);
    let len = m.len();
    isakmp::patch_length(&mut m, len);
    m
}

#[test]
fn encrypted_informational_with_a_bad_hash_tears_nothing_down() {
    let (mut net, cky_i, cky_r, r_spi, l_spi) = established_net(41);
    // The phase-2 IV of RFC 2409 Appendix B: hash(last CBC block of phase 1 | M-ID); the
    // last phase-1 block is the end of MM6, which both sides saw.
    let mm6 = net.right.sent[2].payload.clone();
    let last_block = &mm6[mm6.len() - 16..];
    let (cky, ka) = net.left.ep.phase1_encryption_key(net.left.tunnel).unwrap();
    assert_eq!(cky, cky_i);

    for (n, message_id) in (1u8..).zip([7u32, 0x1234_5678, 0x8000_0001]) {
        let mut chain = vec![Payload::Hash(vec![n; 20])];
        chain.extend(teardown_payloads(cky_i, cky_r, [r_spi, l_spi]));
        let h = header(cky_i, cky_r, message_id, 1);
        let m = encrypted(h, &chain, last_block, ka.expose());
        net.deliver(Side::Right, &m);
        net.deliver(Side::Left, &m);
    }
    nothing_happened(&mut net);
    // The message decrypted (else the payloads would not parse and the reason would
    // differ): it is the HASH check that refused it, on both sides, every time.
    let logs = net.logs.take();
    let refused = logs
        .iter()
        .filter(|l| l.contains("informational HASH did not verify"))
        .count();
    assert_eq!(refused, 6, "{logs:#?}");
}

// -------------------------------------------------------------------------------------
// Absurd payload structures in a first message

/// MM1 of the left side with its payloads passed through `edit`, re-encoded.
fn edited_mm1(edit: impl FnOnce(&mut Vec<Payload>)) -> Vec<u8> {
    let mm1 = first_message(Phase1Mode::Main);
    let msg = Message::parse(&mm1).unwrap();
    let mut payloads: Vec<Payload> = msg
        .payloads()
        .unwrap()
        .iter()
        .map(|r| r.decode().unwrap())
        .collect();
    edit(&mut payloads);
    let mut out = Vec::new();
    isakmp::encode_message(&msg.header, &payloads, &mut out);
    out
}

fn sa_of(payloads: &mut [Payload]) -> &mut isakmp::SaPayload {
    payloads
        .iter_mut()
        .find_map(|p| match p {
            Payload::Sa(sa) => Some(sa),
            _ => None,
        })
        .unwrap()
}

/// Hands `m` to a fresh responder as MM1 from its peer; returns what it sent back.
fn respond_to(m: &[u8]) -> (Vec<Vec<u8>>, usize, Vec<String>) {
    let (l, r) = tunnels(Phase1Mode::Main);
    let mut net = net(l, r, 50, EndpointConfig::default());
    let local = net.right.addr;
    let peer = net.left.addr;
    let started = Instant::now();
    net.right.ep.handle_datagram(net.now, local, peer, m);
    assert!(started.elapsed() < Duration::from_secs(20), "call returned");
    let mut sent = Vec::new();
    while let Some(t) = net.right.ep.poll_transmit() {
        sent.push(t.payload);
    }
    (sent, sa_count(&net.right.ep), net.logs.take())
}

#[test]
fn hundreds_of_transforms_are_answered_with_the_one_acceptable() {
    // 6 proposals x 255 transforms (u8 counts allow no more), the acceptable one last.
    let mm1 = edited_mm1(|p| {
        let sa = sa_of(p);
        let good = sa.proposals[0].transforms[0].clone();
        let mut bad = good.clone();
        for a in &mut bad.attributes {
            if a.attribute_type == 2 {
                a.value = isakmp::AttributeValue::Basic(3); // Tiger: not ours
            }
        }
        let template = sa.proposals[0].clone();
        sa.proposals = (1..=6u8)
            .map(|n| {
                let mut p = template.clone();
                p.number = n;
                p.transforms = (1..=255u8)
                    .map(|t| {
                        let mut x = if n == 6 && t == 255 {
                            good.clone()
                        } else {
                            bad.clone()
                        };
                        x.number = t;
                        x
                    })
                    .collect();
                p
            })
            .collect();
    });
    assert!(mm1.len() > 30_000, "{}", mm1.len());
    let (sent, sas, logs) = respond_to(&mm1);
    assert_eq!(sent.len(), 1, "{logs:#?}");
    assert_eq!(sas, 1);
    let mm2 = Message::parse(&sent[0]).unwrap();
    let chosen = mm2
        .payloads()
        .unwrap()
        .iter()
        .find_map(|r| match r.decode().unwrap() {
            Payload::Sa(sa) => Some(sa),
            _ => None,
        })
        .unwrap();
    assert_eq!(chosen.proposals.len(), 1);
    assert_eq!(chosen.proposals[0].transforms.len(), 1);
    assert_eq!(chosen.proposals[0].transforms[0].number, 255);
}

#[test]
fn hundreds_of_unacceptable_transforms_leave_no_state() {
    let mm1 = edited_mm1(|p| {
        let sa = sa_of(p);
        let mut bad = sa.proposals[0].transforms[0].clone();
        for a in &mut bad.attributes {
            if a.attribute_type == 1 {
                a.value = isakmp::AttributeValue::Basic(2); // IDEA
            }
        }
        sa.proposals[0].transforms = (1..=255u8)
            .map(|t| {
                let mut x = bad.clone();
                x.number = t;
                x
            })
            .collect();
    });
    let (sent, sas, logs) = respond_to(&mm1);
    assert_eq!(sas, 0, "{logs:#?}");
    // At most a clear NO-PROPOSAL-CHOSEN (RFC 2408 section 5.1 allows telling the peer).
    assert!(sent.len() <= 1, "{sent:?}");
    for s in &sent {
        assert_eq!(s[18], 5, "an Informational");
        assert!(s.windows(2).any(|w| w == [0, 14]), "NO-PROPOSAL-CHOSEN");
    }
}

#[test]
fn ten_thousand_empty_vendor_ids_cost_one_answer() {
    let mm1 = edited_mm1(|p| p.extend((0..10_000).map(|_| Payload::VendorId(Vec::new()))));
    assert!(mm1.len() > 40_000);
    let (sent, sas, logs) = respond_to(&mm1);
    assert!(sent.len() <= 1 && sas <= 1, "{logs:#?}");
    assert_eq!(sent.len(), sas);
}

#[test]
fn rejects_broken_payload_lengths_and_structures_without_state() {
    let mm1 = first_message(Phase1Mode::Main);
    // Offsets: header 28 bytes, then the SA payload's generic header (next, reserved,
    // length), its DOI and situation, then the proposal header (next, reserved, length,
    // number, protocol, SPI size, transform count) at 40.
    let sa_len = usize::from(u16::from_be_bytes([mm1[30], mm1[31]]));
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut set16 = |name, at: usize, v: u16| {
        let mut m = mm1.clone();
        m[at..at + 2].copy_from_slice(&v.to_be_bytes());
        cases.push((name, m));
    };
    set16("SA length 0", 30, 0);
    set16("SA length 3", 30, 3);
    set16("SA length past the end", 30, 0xffff);
    set16("proposal length 0", 42, 0);
    set16(
        "proposal length past the SA",
        42,
        u16::try_from(sa_len).unwrap(),
    );
    let mut m = mm1.clone();
    m[47] = 255;
    cases.push(("transform count 255, one present", m));
    let mut m = mm1.clone();
    m[47] = 0;
    cases.push(("transform count 0", m));
    // An unknown payload type first: the SA is not where the chain says.
    let mut m = mm1.clone();
    m[16] = 77;
    cases.push(("unknown payload type", m));
    // No proposals at all.
    cases.push((
        "SA without proposals",
        edited_mm1(|p| sa_of(p).proposals.clear()),
    ));

    for (name, m) in cases {
        let (sent, sas, logs) = respond_to(&m);
        assert_eq!(sas, 0, "{name}: {logs:#?}");
        assert!(sent.is_empty(), "{name}: {sent:?}");
        assert!(
            logs.iter()
                .any(|l| l.starts_with("DEBUG") && l.contains("dropping")),
            "{name}: {logs:#?}"
        );
    }
}

/// Main Mode held after MM2 (left awaits MM4, right awaits MM3); `m` is delivered to
/// `to`, then the exchange is let go. Returns the net after 60 s.
fn during_main_mode(to: Side, build: impl Fn([u8; 8], [u8; 8]) -> Vec<u8>) -> Net {
    let (l, r) = tunnels(Phase1Mode::Main);
    let mut net = net(l, r, 42, EndpointConfig::default());
    let held: Arc<Mutex<Wire>> = Arc::default();
    let held_in = held.clone();
    net.filter = Box::new(move |n, side, d, _| {
        if n >= 3 {
            held_in.lock().unwrap().0.push((side, d.to_vec()));
            return vec![];
        }
        vec![d.to_vec()]
    });
    net.initiate();
    net.run_for(Duration::from_millis(10));
    let mm2 = net.right.sent[0].payload.clone();
    let m = build(mm2[..8].try_into().unwrap(), mm2[8..16].try_into().unwrap());
    net.deliver(to, &m);
    net.filter = Box::new(|_, _, d, _| vec![d.to_vec()]);
    for (side, d) in std::mem::take(&mut held.lock().unwrap().0) {
        net.deliver(side.other(), &d);
    }
    net.run_for(Duration::from_secs(60));
    net
}

/// One clear Delete from anyone who saw MM1/MM2 must not end the negotiation (until
/// 3ef85d5 the receiver closed the SA silently and reported Phase1Deleted for it).
#[test]
fn clear_text_delete_during_main_mode_does_not_end_it() {
    for to in [Side::Left, Side::Right] {
        let net = during_main_mode(to, |cky_i, cky_r| {
            let mut m = Vec::new();
            let delete = teardown_payloads(cky_i, cky_r, [0x1000, 0x2000]).remove(1);
            isakmp::encode_message(&header(cky_i, cky_r, 0, 0), &[delete], &mut m);
            m
        });
        assert_eq!(
            (net.state(Side::Left), net.state(Side::Right)),
            (UP_ONE, UP_ONE),
            "Delete to {to:?}: {:?} {:?}",
            net.left.events,
            net.right.events
        );
    }
}

#[test]
fn quick_mode_with_a_bad_hash_gets_no_answer_and_changes_nothing() {
    let (mut net, _, _, _, _) = established_net(43);
    let mm6 = net.right.sent[2].payload.clone();
    let last_block = mm6[mm6.len() - 16..].to_vec();
    let (_, ka) = net.left.ep.phase1_encryption_key(net.left.tunnel).unwrap();
    // The genuine QM1's payloads behind a wrong HASH(1), under a fresh message ID: what
    // an attacker holding Ka but not SKEYID_a could send (a peer with the wrong PSK
    // cannot even get this far).
    let qm1 = net.left.sent[3].payload.clone();
    let mut h = Header::parse(&qm1).unwrap();
    h.message_id ^= 0x0101_0101;
    let chain = vec![
        Payload::Hash(vec![0; 20]),
        Payload::Nonce(vec![7; 32]),
        Payload::Identification(isakmp::IdPayload {
            id_type: isakmp::IdType::IPV4_ADDR_SUBNET,
            protocol: 0,
            port: 0,
            data: vec![10, 1, 0, 0, 255, 255, 255, 0],
        }),
    ];
    for to in [Side::Right, Side::Left] {
        let m = encrypted(h, &chain, &last_block, ka.expose());
        net.deliver(to, &m);
    }
    nothing_happened(&mut net);
    assert_eq!(
        (net.left.sent.len(), net.right.sent.len()),
        (5, 4),
        "no answer"
    );
    let logs = net.logs.take();
    assert!(
        logs.iter()
            .any(|l| l.contains("HASH(1) did not verify") || l.contains("does not start with HASH")),
        "{logs:#?}"
    );
}
