//! Shared helpers for the benchmarks under `benches/benches/`: fixture paths, an in-memory
//! network of [`Endpoint`]s on virtual time, ESP test material, and a counting allocator.
//!
//! The benchmarks read real messages from the interop fixtures beside the repository
//! (`../shared/fixtures`), so that what is measured is what peers actually send. How to run
//! each benchmark and the latest figures are in `benches/README.md`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::child::{ChildSaPair, Encapsulation, EspSaKeys, Lifetime};
use ipsec_sa::endpoint::{Endpoint, Event};
use ipsec_sa::selector::{SelectorError, TrafficSelector};

pub mod alloc;
pub mod esp;
pub mod handshake;
pub mod paired;

/// The fixture directory: `$IPSEC_FIXTURES`, or `../shared/fixtures` beside the workspace.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IPSEC_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// One datagram on its way: to which node, and the addresses as the receiver sees them.
struct Flight {
    to: usize,
    local: SocketAddr,
    remote: SocketAddr,
    payload: Vec<u8>,
}

/// A lossless, zero-latency network of endpoints, one per outer IP address.
///
/// Time stands still while datagrams are delivered (the caller moves it with
/// [`Network::set_now`]), so no retransmission fires during a handshake: what is measured
/// is the protocol work alone. Datagrams go out in the order the endpoints emit them.
pub struct Network {
    now: Instant,
    nodes: Vec<Endpoint>,
    by_ip: HashMap<IpAddr, usize>,
    queue: VecDeque<Flight>,
    undeliverable: usize,
}

impl Network {
    /// An empty network whose clock reads `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            now,
            nodes: Vec::new(),
            by_ip: HashMap::new(),
            queue: VecDeque::new(),
            undeliverable: 0,
        }
    }

    /// Attaches `endpoint` at `ip` and returns its node number.
    pub fn add(&mut self, ip: IpAddr, endpoint: Endpoint) -> usize {
        let node = self.nodes.len();
        self.nodes.push(endpoint);
        self.by_ip.insert(ip, node);
        node
    }

    /// The endpoint of `node`, if it exists.
    pub fn endpoint_mut(&mut self, node: usize) -> Option<&mut Endpoint> {
        self.nodes.get_mut(node)
    }

    /// Takes every endpoint out of the network (so the caller can measure or drop them).
    pub fn into_endpoints(self) -> Vec<Endpoint> {
        self.nodes
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves the clock to `now` and lets every endpoint run its due timers.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        for ep in &mut self.nodes {
            ep.handle_timeout(now);
        }
        for node in 0..self.nodes.len() {
            self.collect(node, &mut |_, _| {});
        }
    }

    /// Datagrams addressed to an IP no node has (should stay 0).
    pub fn undeliverable(&self) -> usize {
        self.undeliverable
    }

    /// Queues what `node` wants to send and hands its events to `on_event`.
    pub fn collect(&mut self, node: usize, on_event: &mut impl FnMut(usize, Event)) {
        let Some(ep) = self.nodes.get_mut(node) else {
            return;
        };
        while let Some(t) = ep.poll_transmit() {
            match self.by_ip.get(&t.remote.ip()) {
                Some(&to) => self.queue.push_back(Flight {
                    to,
                    local: t.remote,
                    remote: t.local,
                    payload: t.payload,
                }),
                None => self.undeliverable += 1,
            }
        }
        while let Some(e) = ep.poll_event() {
            on_event(node, e);
        }
    }

    /// Delivers datagrams until none is in flight or `max` were delivered, passing each
    /// event to `on_event(node, event)`. Returns how many datagrams were delivered.
    pub fn run(&mut self, max: usize, mut on_event: impl FnMut(usize, Event)) -> usize {
        let mut delivered = 0;
        while delivered < max {
            let Some(f) = self.queue.pop_front() else {
                break;
            };
            let now = self.now;
            if let Some(ep) = self.nodes.get_mut(f.to) {
                ep.handle_datagram(now, f.local, f.remote, &f.payload);
            }
            delivered += 1;
            self.collect(f.to, &mut on_event);
        }
        delivered
    }
}

/// The three ESP suites the benchmarks and the README report on.
pub const ESP_SUITES: [(EncryptionAlgorithm, IntegrityAlgorithm); 3] = [
    (
        EncryptionAlgorithm::AesCbc128,
        IntegrityAlgorithm::HmacSha1_96,
    ),
    (
        EncryptionAlgorithm::AesCbc256,
        IntegrityAlgorithm::HmacSha256_128,
    ),
    (
        EncryptionAlgorithm::TripleDesCbc,
        IntegrityAlgorithm::HmacMd5_96,
    ),
];

/// A short name for a suite, e.g. `AesCbc128+HmacSha1_96`.
pub fn suite_name(suite: (EncryptionAlgorithm, IntegrityAlgorithm)) -> String {
    format!("{:?}+{:?}", suite.0, suite.1)
}

/// Key bytes with distinct values per position (never a weak DES key), varied by `salt`.
pub fn key_bytes(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let i = u8::try_from(i % 251).unwrap_or(0);
            i.wrapping_mul(37).wrapping_add(salt).wrapping_add(11)
        })
        .collect()
}

fn sa_keys(spi: u32, suite: (EncryptionAlgorithm, IntegrityAlgorithm)) -> EspSaKeys {
    let salt = spi.to_be_bytes()[3];
    EspSaKeys {
        spi,
        encryption: suite.0,
        encryption_key: SecretBytes::new(key_bytes(suite.0.key_len(), salt)),
        integrity: suite.1,
        integrity_key: SecretBytes::new(key_bytes(suite.1.key_len(), salt ^ 0x5a)),
    }
}

/// The two halves of one tunnel with fixed keys: A protects 10.1.0.0/24 (SPI in 0x1001),
/// B protects 10.2.0.0/24 (SPI in 0x2002), ESP in UDP 4500 as in the lab.
pub fn esp_pairs(
    suite: (EncryptionAlgorithm, IntegrityAlgorithm),
) -> Result<(ChildSaPair, ChildSaPair), SelectorError> {
    let net_a = subnet([10, 1, 0, 0], 24)?;
    let net_b = subnet([10, 2, 0, 0], 24)?;
    let addr_a = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 4500);
    let addr_b = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 4500);
    let lifetime = Lifetime {
        seconds: None,
        kilobytes: None,
    };
    let a = ChildSaPair {
        local: addr_a,
        remote: addr_b,
        inbound: sa_keys(0x1001, suite),
        outbound: sa_keys(0x2002, suite),
        local_ts: net_a,
        remote_ts: net_b,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: lifetime,
    };
    let b = ChildSaPair {
        local: addr_b,
        remote: addr_a,
        inbound: sa_keys(0x2002, suite),
        outbound: sa_keys(0x1001, suite),
        local_ts: net_b,
        remote_ts: net_a,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: lifetime,
    };
    Ok((a, b))
}

/// `a.b.c.d/len` as a selector (any protocol and port).
pub fn subnet(a: [u8; 4], len: u8) -> Result<TrafficSelector, SelectorError> {
    TrafficSelector::from_cidr(IpAddr::V4(a.into()), len)
}

/// An IPv4/UDP packet of `len` bytes (at least 28) from 10.1.0.1 to 10.2.0.1, header
/// checksum filled in, payload bytes 0xab.
pub fn ipv4_udp_packet(len: usize) -> Vec<u8> {
    let len = len.max(28);
    let total = u16::try_from(len).unwrap_or(u16::MAX);
    let mut p = vec![0xab; len];
    let header = [
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
    ];
    p[..20].copy_from_slice(&header);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum: u32 = 0;
    for pair in p[..20].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !u16::try_from(sum).unwrap_or(0);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    // UDP 5001 -> 5201, length, no checksum (allowed in IPv4).
    let udp_len = u16::try_from(len - 20).unwrap_or(u16::MAX);
    p[20..22].copy_from_slice(&5001u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..26].copy_from_slice(&udp_len.to_be_bytes());
    p[26..28].copy_from_slice(&[0, 0]);
    p
}

/// Bytes ESP encrypts for an inner packet of `inner_len` (RFC 4303 section 2.4: payload,
/// padding, pad length and next header, a whole number of cipher blocks).
pub fn esp_encrypted_len(inner_len: usize, block_len: usize) -> usize {
    let block = block_len.max(4);
    (inner_len + 2).div_ceil(block) * block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp_packet_has_length_and_valid_header_checksum() {
        let p = ipv4_udp_packet(64);
        assert_eq!(p.len(), 64);
        assert_eq!(&p[2..4], &[0, 64]);
        assert_eq!(&p[12..20], &[10, 1, 0, 1, 10, 2, 0, 1]);
        assert_eq!(&p[24..26], &[0, 44], "UDP length");
        // RFC 1071: the one's complement sum over a correct header is 0xffff.
        let mut sum: u32 = p[..20]
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn esp_encrypted_len_covers_trailer_and_whole_blocks() {
        assert_eq!(esp_encrypted_len(1400, 16), 1408);
        assert_eq!(esp_encrypted_len(62, 16), 64);
        assert_eq!(esp_encrypted_len(63, 16), 80);
        assert_eq!(esp_encrypted_len(64, 8), 72);
    }

    #[test]
    fn bare_work_covers_the_bytes_the_data_plane_sends() {
        for suite in ESP_SUITES {
            for size in [64, 512, 1400] {
                let mut bench = esp::Bench::new(suite, size).unwrap();
                let mut bare = esp::Bare::new(suite, size).unwrap();
                let icv_len = suite.1.icv_len();
                let block = suite.0.block_len();
                // SPI, sequence number, IV, ciphertext, ICV (RFC 4303 section 2).
                let expected = 8 + block + esp_encrypted_len(size, block) + icv_len;
                assert_eq!(
                    bench.encapsulate(),
                    expected,
                    "{} {size}",
                    suite_name(suite)
                );
                bare.encrypt_and_mac();
                assert!(bare.verify_and_decrypt(), "the bare ICV verifies once");
                assert!(!bare.verify_and_decrypt(), "not after decryption in place");
            }
        }
    }

    #[test]
    fn rejects_a_replayed_packet_so_each_decapsulation_needs_a_fresh_one() {
        let mut bench = esp::Bench::new(ESP_SUITES[0], 512).unwrap();
        let p = bench.fresh_packet();
        let mut first = p.clone();
        let mut again = p;
        assert_eq!(bench.decapsulate(&mut first), 512);
        assert_eq!(bench.decapsulate(&mut again), 0);
    }

    #[test]
    fn handshake_takes_nine_datagrams_and_fails_on_psk_mismatch() {
        let g = ipsec_crypto::DhGroup::Modp1024;
        let (net, lt) = handshake::pair(g, 5).unwrap();
        assert_eq!(handshake::run(net, lt).unwrap(), 9);

        let (mut net, lt) = handshake::pair(g, 5).unwrap();
        // Replace the responder with one whose tunnel has another key.
        let mut right = Endpoint::new(
            ipsec_sa::endpoint::EndpointConfig::default(),
            Box::new(<rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(6)),
        );
        let mut t = handshake::tunnel(
            "r",
            "192.0.2.2:500".parse().unwrap(),
            "192.0.2.1:500".parse().unwrap(),
            subnet([10, 2, 0, 0], 24).unwrap(),
            subnet([10, 1, 0, 0], 24).unwrap(),
            g,
        );
        t.psk = SecretBytes::from_slice(b"another key");
        right.add_tunnel(t).unwrap();
        net.add("192.0.2.2".parse().unwrap(), right);
        assert!(matches!(
            handshake::run(net, lt),
            Err(handshake::HandshakeError::Unfinished {
                children: [0, 0],
                ..
            })
        ));
    }
}
