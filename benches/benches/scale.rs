//! Tunnel scale: one hub gateway (an [`Endpoint`] and a [`DataPlane`]) establishes 1,000
//! tunnels with 1,000 spoke endpoints in memory (ours against ours, Main Mode + Quick Mode,
//! AES-128 / SHA-1, DH group 14 with PFS), on virtual time. Reports the time per tunnel
//! beside the DH work each tunnel needs (measured in the same run), and the heap bytes the
//! hub keeps per idle tunnel, from a counting global allocator: the drop in live bytes when
//! the hub's endpoint and data plane are freed, divided by the tunnels.
//! Target: under 20 KiB per idle tunnel.
//!
//! `cargo bench -p ipsec-benches --bench scale` (`-- 200` for fewer tunnels).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark binary: a failed setup step should stop the run with its message"
)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipsec_benches::alloc::{allocation_calls, live_bytes, Counting};
use ipsec_benches::handshake::{dh_work, tunnel};
use ipsec_benches::paired::machine_line;
use ipsec_benches::{subnet, Network};
use ipsec_crypto::{DhGroup, DhPrivateKey};
use ipsec_sa::dataplane::{DataPlane, DataPlaneConfig, Policy, PolicyAction};
use ipsec_sa::endpoint::{Endpoint, EndpointConfig, Event, TunnelId};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GROUP: DhGroup = DhGroup::Modp2048;
/// Spokes that start Main Mode at once (the hub's default half-open limit is 64).
const WAVE: usize = 32;

/// Outer addresses from the IPv6 documentation prefix: the hub is 2001:db8::1, spoke `i`
/// is 2001:db8:1::i (the IPv4 documentation ranges hold fewer than 1,000 addresses).
fn hub_ip() -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
}

fn spoke_ip(i: usize) -> IpAddr {
    let i = u16::try_from(i + 1).unwrap();
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i))
}

/// Spoke `i` protects 10.(i / 256).(i % 256).0/24; the hub protects 172.16.0.0/16.
fn spoke_net(i: usize) -> [u8; 4] {
    [
        10,
        u8::try_from(i / 256).unwrap(),
        u8::try_from(i % 256).unwrap(),
        0,
    ]
}

/// Mean time of the DH work of one tunnel over 20 runs.
fn dh_per_tunnel() -> Duration {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let peer = DhPrivateKey::generate(GROUP, &mut rng).public_key();
    let runs = 20;
    let t = Instant::now();
    for _ in 0..runs {
        dh_work(GROUP, &mut rng, &peer).unwrap();
    }
    t.elapsed() / runs
}

fn kib(bytes: usize, per: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / per.max(1) as f64 / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench -p ipsec-benches --bench scale`");
        return;
    }
    let tunnels: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1020);
    let hub_net = subnet([172, 16, 0, 0], 16).unwrap();
    let start = Instant::now();
    let before = live_bytes();

    // The hub: one endpoint with a tunnel per spoke, and a data plane with a PROTECT
    // policy per spoke network.
    let mut hub = Endpoint::new(
        EndpointConfig::default(),
        Box::new(ChaCha20Rng::seed_from_u64(1)),
    );
    let mut hub_dp = DataPlane::new(DataPlaneConfig::default());
    let hub_addr = SocketAddr::new(hub_ip(), 500);
    for i in 0..tunnels {
        let remote = SocketAddr::new(spoke_ip(i), 500);
        let net = subnet(spoke_net(i), 24).unwrap();
        hub.add_tunnel(tunnel(
            &format!("spoke{i}"),
            hub_addr,
            remote,
            hub_net,
            net,
            GROUP,
        ))
        .unwrap();
        hub_dp.add_policy(Policy {
            local: hub_net,
            remote: net,
            action: PolicyAction::Protect,
            priority: 10,
        });
    }
    let configured = live_bytes() - before;

    let mut net = Network::new(start);
    net.add(hub_ip(), hub);
    let mut spoke_tunnels: Vec<TunnelId> = Vec::with_capacity(tunnels);
    for i in 0..tunnels {
        let mut ep = Endpoint::new(
            EndpointConfig::default(),
            Box::new(ChaCha20Rng::seed_from_u64(1000 + i as u64)),
        );
        let local = SocketAddr::new(spoke_ip(i), 500);
        let own = subnet(spoke_net(i), 24).unwrap();
        spoke_tunnels.push(
            ep.add_tunnel(tunnel("hub", local, hub_addr, own, hub_net, GROUP))
                .unwrap(),
        );
        net.add(spoke_ip(i), ep);
    }

    let dh_before = dh_per_tunnel();

    // Waves of spokes initiate; the hub installs every pair it gets in its data plane.
    let calls_before = allocation_calls();
    let wall = Instant::now();
    let mut hub_children = 0usize;
    let mut spoke_children = 0usize;
    let mut datagrams = 0usize;
    for wave in (0..tunnels).collect::<Vec<_>>().chunks(WAVE) {
        for &i in wave {
            let now = net.now();
            net.endpoint_mut(i + 1)
                .unwrap()
                .initiate(spoke_tunnels[i], now)
                .unwrap();
            net.collect(i + 1, &mut |_, _| {});
        }
        datagrams += net.run(usize::MAX, |node, e| match e {
            Event::ChildSaEstablished { pair, .. } if node == 0 => {
                hub_dp.install(&pair).unwrap();
                hub_children += 1;
            }
            Event::ChildSaEstablished { .. } => spoke_children += 1,
            Event::Failed { tunnel, reason } => panic!("node {node} {tunnel}: {reason}"),
            _ => {}
        });
    }
    let elapsed = wall.elapsed();
    let calls = allocation_calls() - calls_before;
    assert_eq!((hub_children, spoke_children), (tunnels, tunnels));
    assert_eq!(net.undeliverable(), 0);

    // Idle for a minute of virtual time: finished exchanges past their linger are freed.
    let established = live_bytes() - before;
    net.set_now(start + Duration::from_secs(60));
    datagrams += net.run(usize::MAX, |_, _| {});
    let idle = live_bytes() - before;

    // Who holds what: free the hub's parts one at a time.
    let mut endpoints = net.into_endpoints();
    let hub = endpoints.remove(0);
    let l0 = live_bytes();
    drop(hub);
    let hub_endpoint = l0 - live_bytes();
    let l1 = live_bytes();
    drop(hub_dp);
    let hub_dataplane = l1 - live_bytes();
    let l2 = live_bytes();
    drop(endpoints);
    let spokes = l2 - live_bytes();

    // DH work of one tunnel (both sides), in the same run: before and after establishment,
    // averaged, so a change of load during the run shows as a spread.
    let dh = (dh_before + dh_per_tunnel()) / 2;

    let per_tunnel = elapsed / u32::try_from(tunnels).unwrap();
    println!("### Tunnel scale: {tunnels} tunnels, hub against spokes (group 14, PFS)\n");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| time per tunnel (both sides' work, one thread) | {:.2} ms |",
        per_tunnel.as_secs_f64() * 1e3
    );
    println!(
        "| DH work per tunnel (4 key pairs + 4 shared secrets), same run | {:.2} ms |",
        dh.as_secs_f64() * 1e3
    );
    println!(
        "| ratio | {:.2} |",
        per_tunnel.as_secs_f64() / dh.as_secs_f64()
    );
    println!(
        "| datagrams | {datagrams} ({:.1} per tunnel) |",
        datagrams as f64 / tunnels as f64
    );
    println!(
        "| heap allocations during establishment, per tunnel | {} |",
        calls / tunnels
    );
    println!(
        "| hub configured, before negotiating (per tunnel) | {} |",
        kib(configured, tunnels)
    );
    println!(
        "| all live bytes right after establishment (hub + spokes + network, per tunnel) | {} |",
        kib(established, tunnels)
    );
    println!(
        "| all live bytes after 60 s idle (per tunnel) | {} |",
        kib(idle, tunnels)
    );
    println!(
        "| **hub endpoint, idle (per tunnel)** | {} |",
        kib(hub_endpoint, tunnels)
    );
    println!(
        "| **hub data plane, idle (per tunnel)** | {} |",
        kib(hub_dataplane, tunnels)
    );
    println!(
        "| **hub total, idle (per tunnel); target < 20 KiB** | {} |",
        kib(hub_endpoint + hub_dataplane, tunnels)
    );
    println!(
        "| one spoke (endpoint with one tunnel, no data plane) | {} |",
        kib(spokes, tunnels)
    );
    println!("\nBytes are the sizes requested from the allocator (malloc overhead not included).");
    println!("{}\n", machine_line());
}
