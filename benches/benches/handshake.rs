//! A complete Main Mode + Quick Mode (PSK, PFS) between our initiator and our responder in
//! memory, for DH groups 2, 14 and 16, beside the Diffie-Hellman work the same handshake
//! must do (two key pairs and two shared secrets per side: phase 1 and PFS), measured in
//! the same run. Target: handshake <= 1.3 x its DH work. The `report` bench
//! gives the same ratio from interleaved rounds, which holds up better on a loaded machine.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    reason = "benchmark binary: criterion's macros generate undocumented items, and a failed \
              setup step should stop the run with its message"
)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipsec_benches::handshake::{dh_work, pair, run};
use ipsec_crypto::{DhGroup, DhPrivateKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const GROUPS: [DhGroup; 3] = [DhGroup::Modp1024, DhGroup::Modp2048, DhGroup::Modp4096];

fn bench_handshake(c: &mut Criterion) {
    for g in GROUPS {
        let mut group = c.benchmark_group(format!("handshake_group{}", g.id()));
        group.sample_size(if g == DhGroup::Modp4096 { 10 } else { 20 });

        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let peer = DhPrivateKey::generate(g, &mut rng).public_key();
        group.bench_function("dh_work_4x", |b| {
            b.iter(|| dh_work(g, &mut rng, &peer).unwrap())
        });

        let (net, lt) = pair(g, 1).unwrap();
        assert_eq!(
            run(net, lt).unwrap(),
            9,
            "six Main Mode and three Quick Mode messages"
        );
        group.bench_function("main_mode_quick_mode", |b| {
            b.iter_batched(
                || pair(g, 1).unwrap(),
                |(net, lt)| run(net, lt).unwrap(),
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
