//! Translations per second for TCP, UDP and ICMP echo packets of 64 and 1400 bytes, beside
//! a plain copy of the same packet measured in the same run.
//!
//! Each iteration copies the original packet into a buffer (so every translation sees an
//! untranslated packet); `copy` is that copy alone, `copy+translate` adds the outbound
//! translation, and the difference is the translation's own cost. `translate+reverse`
//! rewrites the packet and undoes it in place, with no copy, and counts two translations
//! per iteration.

#![expect(
    clippy::unwrap_used,
    missing_docs,
    reason = "benchmark harness: setup failures should stop the run"
)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etherparse::PacketBuilder;
use ipsec_nat::{Direction, Ipv4Subnet, NatEntry, NatTable};

const HOST: [u8; 4] = [10, 20, 30, 40];
const LOCAL: [u8; 4] = [10, 1, 255, 92];

fn table() -> NatTable {
    // 64 entries, so the hash map holds more than one address.
    let entries = (0..64u8)
        .map(|i| {
            NatEntry::new(
                format!("e{i}"),
                Ipv4Addr::new(10, 1, 255, 64 + i),
                Ipv4Addr::new(192, 168, 10, 1 + i),
            )
        })
        .collect();
    NatTable::new(
        entries,
        &[Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 0), 24).unwrap()],
        &[Ipv4Subnet::new(Ipv4Addr::new(192, 168, 10, 0), 24).unwrap()],
    )
    .unwrap()
}

/// A packet of `total` bytes (IPv4 header included) of `proto` from HOST to LOCAL.
fn packet(proto: &str, total: usize) -> Vec<u8> {
    let ip = PacketBuilder::ipv4(HOST, LOCAL, 64);
    let mut out = Vec::with_capacity(total);
    match proto {
        "tcp" => {
            let b = ip.tcp(40000, 443, 1, 64240).ack(2);
            b.write(&mut out, &vec![0x5a; total - 40]).unwrap();
        }
        "udp" => {
            let b = ip.udp(40000, 53);
            b.write(&mut out, &vec![0x5a; total - 28]).unwrap();
        }
        _ => {
            let b = ip.icmpv4_echo_request(1, 1);
            b.write(&mut out, &vec![0x5a; total - 28]).unwrap();
        }
    }
    assert_eq!(out.len(), total);
    out
}

fn bench(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("nat");
    group.throughput(Throughput::Elements(1));
    for proto in ["tcp", "udp", "icmp"] {
        for size in [64usize, 1400] {
            let original = packet(proto, size);
            let mut buf = vec![0u8; size];
            let id = format!("{proto}/{size}");

            group.bench_function(BenchmarkId::new("copy", &id), |b| {
                b.iter(|| {
                    buf.copy_from_slice(black_box(&original));
                    black_box(&mut buf);
                });
            });
            group.bench_function(BenchmarkId::new("copy+translate", &id), |b| {
                b.iter(|| {
                    buf.copy_from_slice(black_box(&original));
                    let t = table.translate(Direction::Outbound, black_box(&mut buf));
                    black_box(t).unwrap()
                });
            });
            // No copy: translate and undo in place, two rewrites per iteration.
            buf.copy_from_slice(&original);
            group.throughput(Throughput::Elements(2));
            group.bench_function(BenchmarkId::new("translate+reverse", &id), |b| {
                b.iter(|| {
                    let t = table.translate(Direction::Outbound, black_box(&mut buf));
                    let r = table.reverse(Direction::Outbound, black_box(&mut buf));
                    black_box((t, r))
                });
            });
            group.throughput(Throughput::Elements(1));
            assert_eq!(buf, original);
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
