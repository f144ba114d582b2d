//! Proves that the ESP fast path performs no heap allocation in steady state: a counting
//! global allocator watches encapsulate, decapsulate and the common drop paths.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed step should stop the test with its message"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::child::{ChildSaPair, Encapsulation, EspSaKeys, Lifetime};
use ipsec_sa::dataplane::{
    DataPlane, DataPlaneConfig, DropReason, Outbound, Policy, PolicyAction, MAX_HEADROOM,
    MAX_TAILROOM,
};
use ipsec_sa::selector::TrafficSelector;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Counts allocations made by the thread that switched counting on.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

#[expect(
    unsafe_code,
    reason = "a GlobalAlloc impl is unsafe by definition; it only forwards to System"
)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn keys(spi: u32, salt: u8) -> EspSaKeys {
    EspSaKeys {
        spi,
        encryption: EncryptionAlgorithm::AesCbc128,
        encryption_key: SecretBytes::new((0..16).map(|i| i * 7 + salt).collect()),
        integrity: IntegrityAlgorithm::HmacSha1_96,
        integrity_key: SecretBytes::new((0..20).map(|i| i * 3 + salt).collect()),
    }
}

fn cidr(a: [u8; 4], len: u8) -> TrafficSelector {
    TrafficSelector::from_cidr(a.into(), len).unwrap()
}

fn plane(
    local: TrafficSelector,
    remote: TrafficSelector,
    inbound: u32,
    outbound: u32,
) -> DataPlane {
    let mut dp = DataPlane::new(DataPlaneConfig::default());
    dp.add_policy(Policy {
        local,
        remote,
        action: PolicyAction::Protect,
        priority: 1,
    });
    let addr: SocketAddr = "192.0.2.1:4500".parse().unwrap();
    dp.install(&ChildSaPair {
        local: addr,
        remote: addr,
        inbound: keys(inbound, inbound.to_be_bytes()[3]),
        outbound: keys(outbound, outbound.to_be_bytes()[3]),
        local_ts: local,
        remote_ts: remote,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: Lifetime {
            seconds: None,
            kilobytes: Some(1 << 30),
        },
    })
    .unwrap();
    dp
}

#[test]
fn steady_state_encapsulate_and_decapsulate_do_not_allocate() {
    // The counter works: a Vec allocation is seen.
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);

    let net_a = cidr([10, 1, 0, 0], 24);
    let net_b = cidr([10, 2, 0, 0], 24);
    let mut a = plane(net_a, net_b, 0x1001, 0x2002);
    let mut b = plane(net_b, net_a, 0x2002, 0x1001);
    let mut rng = ChaCha20Rng::seed_from_u64(3);

    // An ICMP echo of 1000 bytes, 10.1.0.1 -> 10.2.0.1.
    let mut inner = vec![
        0x45, 0, 0x03, 0xe8, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
    ];
    inner.resize(1000, 0xab);
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    let mut received = vec![0u8; buf.len()];

    // Warm-up: tracing call sites register themselves on first use.
    for _ in 0..4 {
        send_receive_and_drops(&mut a, &mut b, &mut rng, &inner, &mut buf, &mut received);
    }

    let n = allocations_in(|| {
        for _ in 0..1000 {
            send_receive_and_drops(&mut a, &mut b, &mut rng, &inner, &mut buf, &mut received);
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in 1000 steady-state rounds");
    assert_eq!(b.pair_stats(0x2002).unwrap().inbound.packets, 1004);
    assert_eq!(b.drop_counters().get(DropReason::Replay), 1004);
    assert_eq!(b.drop_counters().get(DropReason::BadIcv), 1004);
}

/// One packet A -> B, then the same packet replayed and a corrupted copy.
fn send_receive_and_drops(
    a: &mut DataPlane,
    b: &mut DataPlane,
    rng: &mut ChaCha20Rng,
    inner: &[u8],
    buf: &mut [u8],
    received: &mut [u8],
) {
    let range = MAX_HEADROOM..MAX_HEADROOM + inner.len();
    buf[range.clone()].copy_from_slice(inner);
    let Ok(Outbound::Protected(t)) = a.encapsulate(buf, range, rng) else {
        panic!("encapsulation failed")
    };
    let len = t.packet.len();
    received[..len].copy_from_slice(&buf[t.packet.clone()]);
    let r = b.decapsulate(&mut received[..len]).unwrap();
    assert_eq!(&received[r.inner], inner);

    received[..len].copy_from_slice(&buf[t.packet.clone()]);
    assert_eq!(
        b.decapsulate(&mut received[..len]).unwrap_err().reason(),
        DropReason::Replay
    );
    received[..len].copy_from_slice(&buf[t.packet]);
    // A sequence number never seen passes the replay check, so the ICV check runs (and fails).
    received[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        b.decapsulate(&mut received[..len]).unwrap_err().reason(),
        DropReason::BadIcv
    );
}

/// `encapsulate_batch` is allocation-free too once its result list and the plane's scratch
/// list have grown to the batch size: 100 batches of 44 packets (a 64 KiB TCP burst cut at
/// 1400 bytes, the gateway's common case), each opened at B.
#[test]
fn steady_state_batch_encapsulation_does_not_allocate() {
    let net_a = cidr([10, 1, 0, 0], 24);
    let net_b = cidr([10, 2, 0, 0], 24);
    let mut a = plane(net_a, net_b, 0x1001, 0x2002);
    let mut b = plane(net_b, net_a, 0x2002, 0x1001);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut inner = vec![
        0x45, 0, 0x05, 0x78, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
    ];
    inner.resize(1400, 0xcd);
    let range = MAX_HEADROOM..MAX_HEADROOM + inner.len();
    let mut packets: Vec<(Vec<u8>, std::ops::Range<usize>)> = (0..44)
        .map(|_| {
            (
                vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM],
                range.clone(),
            )
        })
        .collect();
    let mut results = Vec::new();
    let mut batch = |a: &mut DataPlane, b: &mut DataPlane, rng: &mut ChaCha20Rng| {
        for (buf, r) in packets.iter_mut() {
            buf[r.clone()].copy_from_slice(&inner);
        }
        a.encapsulate_batch(&mut packets, rng, &mut results);
        for ((buf, _), result) in packets.iter_mut().zip(&results) {
            let Ok(Outbound::Protected(t)) = result else {
                panic!("not protected: {result:?}");
            };
            let opened = b.decapsulate(&mut buf[t.packet.clone()]).unwrap();
            assert_eq!(opened.inner.len(), 1400);
        }
    };
    for _ in 0..2 {
        batch(&mut a, &mut b, &mut rng);
    }
    let n = allocations_in(|| {
        for _ in 0..100 {
            batch(&mut a, &mut b, &mut rng);
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in 100 steady-state batches");
    assert_eq!(b.pair_stats(0x2002).unwrap().inbound.packets, 102 * 44);
}
