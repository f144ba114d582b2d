//! A bare IKE peer over real UDP sockets, for debugging the control plane against
//! strongSwan or libreswan: no data plane, no TUN, just the [`Endpoint`] on ports 500 and
//! 4500, printing every event.
//!
//! ```text
//! udp_peer LOCAL_IP REMOTE_IP PSK_FILE LOCAL_SUBNET REMOTE_SUBNET [options]
//!   --respond            wait for the peer instead of initiating
//!   --aggressive         Aggressive Mode instead of Main Mode
//!   --ike CIPHER-HASH-GROUP   phase-1 proposal, e.g. aes256-sha256-modp3072
//!   --esp CIPHER-HASH[-GROUP] phase-2 proposal and PFS group, e.g. 3des-md5-modp1024
//!   --p1-life SECS       ISAKMP SA lifetime (default 28800)
//!   --p2-life SECS       ESP SA lifetime (default 3600)
//!   --dpd SECS           probe after SECS idle (timeout 3 x SECS)
//!   --run SECS           stop (sending Deletes) after SECS (default 30)
//! ```
//!
//! Seeds its RNG from /dev/urandom; a debugging tool, not a gateway.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a command-line debugging tool: failing loudly is the point"
)]

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ipsec_crypto::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::endpoint::{
    DpdAction, DpdConfig, Endpoint, EndpointConfig, Event, Phase1Mode, Phase1Proposal,
    Phase2Proposal, TunnelConfig, TunnelId,
};
use ipsec_sa::selector::TrafficSelector;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn subnet(s: &str) -> TrafficSelector {
    let (a, l) = s.split_once('/').expect("subnet as ADDR/LEN");
    TrafficSelector::from_cidr(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: udp_peer LOCAL_IP REMOTE_IP PSK_FILE LOCAL_SUBNET REMOTE_SUBNET [--respond] [--p1-life S] [--p2-life S] [--dpd S] [--run S]");
        std::process::exit(2);
    }
    let local: IpAddr = args[1].parse().unwrap();
    let remote: IpAddr = args[2].parse().unwrap();
    let psk = std::fs::read(&args[3]).unwrap();
    let psk = String::from_utf8(psk)
        .unwrap()
        .trim_end()
        .as_bytes()
        .to_vec();
    let mut config = TunnelConfig::new(
        "udp-peer",
        SocketAddr::new(local, 500),
        SocketAddr::new(remote, 500),
        SecretBytes::new(psk),
        subnet(&args[4]),
        subnet(&args[5]),
    );
    let (mut respond, mut run) = (false, 30u64);
    let mut rest = args[6..].iter();
    while let Some(a) = rest.next() {
        let mut num = || -> u64 { rest.next().expect("a number").parse().unwrap() };
        match a.as_str() {
            "--respond" => respond = true,
            "--aggressive" => config.phase1.mode = Phase1Mode::Aggressive,
            "--p1-life" => config.phase1.lifetime = Duration::from_secs(num()),
            "--p2-life" => config.phase2.lifetime = Duration::from_secs(num()),
            "--dpd" => {
                let d = num();
                config.dpd = Some(DpdConfig {
                    delay: Duration::from_secs(d),
                    timeout: Duration::from_secs(3 * d),
                    action: DpdAction::Restart,
                });
            }
            "--run" => run = num(),
            "--ike" => {
                let spec = rest.next().expect("a proposal");
                let (encryption, hash, group) = parse_proposal(spec);
                config.phase1.proposals = vec![Phase1Proposal {
                    encryption,
                    hash,
                    group: group.expect("a DH group in --ike"),
                }];
            }
            "--esp" => {
                let spec = rest.next().expect("a proposal");
                let (encryption, hash, group) = parse_proposal(spec);
                let integrity = IntegrityAlgorithm::ALL
                    .into_iter()
                    .find(|i| i.hash() == hash)
                    .unwrap();
                config.phase2.proposals = vec![Phase2Proposal {
                    encryption,
                    integrity,
                }];
                config.phase2.pfs_group = group;
            }
            other => panic!("unknown option {other}"),
        }
    }

    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut seed)
        .unwrap();
    let mut ep = Endpoint::new(
        EndpointConfig::default(),
        Box::new(ChaCha20Rng::from_seed(seed)),
    );
    let tunnel = ep.add_tunnel(config).unwrap();
    let s500 = UdpSocket::bind(SocketAddr::new(local, 500)).unwrap();
    let s4500 = UdpSocket::bind(SocketAddr::new(local, 4500)).unwrap();
    s500.set_nonblocking(true).unwrap();
    s4500.set_nonblocking(true).unwrap();

    let start = Instant::now();
    if !respond {
        ep.initiate(tunnel, start).unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    let mut shut = false;
    loop {
        let now = Instant::now();
        for (sock, port) in [(&s500, 500u16), (&s4500, 4500)] {
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let data = &buf[..n];
                        let ike = if port == 4500 {
                            match data {
                                [0, 0, 0, 0, rest @ ..] => rest,
                                _ => continue, // ESP or keepalive: no data plane here
                            }
                        } else {
                            data
                        };
                        ep.handle_datagram(now, SocketAddr::new(local, port), from, ike);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                }
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        if !shut && now.duration_since(start) >= Duration::from_secs(run) {
            println!("{:7.2}s shutting down", start.elapsed().as_secs_f64());
            ep.shutdown(now);
            shut = true;
        }
        while let Some(t) = ep.poll_transmit() {
            let sock = if t.local.port() == 4500 {
                &s4500
            } else {
                &s500
            };
            let mut out = Vec::with_capacity(t.payload.len() + 4);
            if t.non_esp_marker {
                out.extend_from_slice(&[0; 4]);
            }
            out.extend_from_slice(&t.payload);
            sock.send_to(&out, t.remote).unwrap();
        }
        while let Some(e) = ep.poll_event() {
            report(start, tunnel, &e);
        }
        if shut {
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// "aes128-sha1-modp2048" style names, as strongSwan writes them.
fn parse_proposal(spec: &str) -> (EncryptionAlgorithm, HashAlgorithm, Option<DhGroup>) {
    let mut parts = spec.split('-');
    let encryption = match parts.next() {
        Some("des") => EncryptionAlgorithm::DesCbc,
        Some("3des") => EncryptionAlgorithm::TripleDesCbc,
        Some("aes128") => EncryptionAlgorithm::AesCbc128,
        Some("aes192") => EncryptionAlgorithm::AesCbc192,
        Some("aes256") => EncryptionAlgorithm::AesCbc256,
        other => panic!("cipher {other:?}"),
    };
    let hash = match parts.next() {
        Some("md5") => HashAlgorithm::Md5,
        Some("sha1") => HashAlgorithm::Sha1,
        Some("sha256") => HashAlgorithm::Sha256,
        Some("sha384") => HashAlgorithm::Sha384,
        Some("sha512") => HashAlgorithm::Sha512,
        other => panic!("hash {other:?}"),
    };
    let group = parts.next().map(|g| {
        let bits: u16 = g.trim_start_matches("modp").parse().unwrap();
        let id = match bits {
            768 => 1,
            1024 => 2,
            1536 => 5,
            2048 => 14,
            3072 => 15,
            4096 => 16,
            6144 => 17,
            8192 => 18,
            _ => panic!("group {g}"),
        };
        DhGroup::from_id(id).unwrap()
    });
    (encryption, hash, group)
}

fn report(start: Instant, _tunnel: TunnelId, e: &Event) {
    let t = start.elapsed().as_secs_f64();
    match e {
        Event::ChildSaEstablished { pair, .. } => println!(
            "{t:7.2}s CHILD UP in={:08x} out={:08x} {} <-> {} {:?} {:?} life={:?} local={} remote={}",
            pair.inbound.spi,
            pair.outbound.spi,
            pair.local_ts,
            pair.remote_ts,
            pair.encapsulation,
            pair.inbound.encryption,
            pair.hard_lifetime.seconds,
            pair.local,
            pair.remote
        ),
        Event::ChildSaDeleted {
            inbound_spi,
            outbound_spi,
            ..
        } => println!("{t:7.2}s CHILD DOWN in={inbound_spi:08x} out={outbound_spi:08x}"),
        Event::Failed { reason, .. } => println!("{t:7.2}s FAILED {reason}"),
        other => println!("{t:7.2}s {other:?}"),
    }
}
