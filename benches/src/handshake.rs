//! Two of our endpoints negotiating Main Mode + Quick Mode (PSK, AES-128, SHA-1, PFS in the
//! phase-1 group) on a [`Network`], and the Diffie-Hellman work the same handshake needs.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use ipsec_crypto::{
    CryptoError, DhGroup, DhPrivateKey, EncryptionAlgorithm, HashAlgorithm, SecretBytes,
};
use ipsec_sa::endpoint::{
    ConfigError, Endpoint, EndpointConfig, Event, InitiateError, Phase1Proposal, TunnelConfig,
    TunnelId,
};
use ipsec_sa::selector::TrafficSelector;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};

use crate::{subnet, Network};

/// Why a handshake could not be set up or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// A selector could not be built.
    #[error("selector: {0}")]
    Selector(#[from] ipsec_sa::selector::SelectorError),
    /// The endpoint refused a tunnel.
    #[error("tunnel config: {0}")]
    Config(#[from] ConfigError),
    /// The endpoint refused to initiate.
    #[error("initiate: {0}")]
    Initiate(#[from] InitiateError),
    /// A DH operation failed.
    #[error("dh: {0}")]
    Crypto(#[from] CryptoError),
    /// The exchange ended without an ESP SA pair on both sides.
    #[error("after {datagrams} datagrams: {children:?} ESP SA pairs (left, right), wanted 1 each")]
    Unfinished {
        /// Datagrams delivered.
        datagrams: usize,
        /// ChildSaEstablished events per side.
        children: [usize; 2],
    },
}

/// The pre-shared key of every benchmark tunnel.
pub const PSK: &[u8] = b"perf-bench-psk-0123456789";

/// A tunnel offering only AES-128 / SHA-1 / `group` in phase 1 and `group` as PFS group.
pub fn tunnel(
    name: &str,
    local: SocketAddr,
    remote: SocketAddr,
    local_ts: TrafficSelector,
    remote_ts: TrafficSelector,
    group: DhGroup,
) -> TunnelConfig {
    let mut t = TunnelConfig::new(
        name,
        local,
        remote,
        SecretBytes::from_slice(PSK),
        local_ts,
        remote_ts,
    );
    t.phase1.proposals = vec![Phase1Proposal {
        encryption: EncryptionAlgorithm::AesCbc128,
        hash: HashAlgorithm::Sha1,
        group,
    }];
    t.phase2.pfs_group = Some(group);
    t
}

/// Left (192.0.2.1, 10.1.0.0/24) and right (192.0.2.2, 10.2.0.0/24) on a fresh network,
/// with the left tunnel's id; rngs seeded from `seed`.
pub fn pair(group: DhGroup, seed: u64) -> Result<(Network, TunnelId), HandshakeError> {
    let ip_l = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let ip_r = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let net_l = subnet([10, 1, 0, 0], 24)?;
    let net_r = subnet([10, 2, 0, 0], 24)?;
    let rng_l = ChaCha20Rng::seed_from_u64(seed);
    let rng_r = ChaCha20Rng::seed_from_u64(seed.wrapping_add(1));
    let mut left = Endpoint::new(EndpointConfig::default(), Box::new(rng_l));
    let mut right = Endpoint::new(EndpointConfig::default(), Box::new(rng_r));
    let (addr_l, addr_r) = (SocketAddr::new(ip_l, 500), SocketAddr::new(ip_r, 500));
    let lt = left.add_tunnel(tunnel("l", addr_l, addr_r, net_l, net_r, group))?;
    right.add_tunnel(tunnel("r", addr_r, addr_l, net_r, net_l, group))?;

    let mut net = Network::new(Instant::now());
    net.add(ip_l, left);
    net.add(ip_r, right);
    Ok((net, lt))
}

/// Node 0 initiates `tunnel`; delivers datagrams until both nodes have an ESP SA pair.
/// Returns the number of datagrams exchanged (9 without retransmissions).
pub fn run(mut net: Network, tunnel: TunnelId) -> Result<usize, HandshakeError> {
    let now = net.now();
    if let Some(ep) = net.endpoint_mut(0) {
        ep.initiate(tunnel, now)?;
    }
    net.collect(0, &mut |_, _| {});
    let mut children = [0usize; 2];
    let datagrams = net.run(64, |node, e| {
        if let Event::ChildSaEstablished { pair, .. } = e {
            if let Some(c) = children.get_mut(node) {
                *c += 1;
            }
            black_box(pair);
        }
    });
    if children == [1, 1] {
        Ok(datagrams)
    } else {
        Err(HandshakeError::Unfinished {
            datagrams,
            children,
        })
    }
}

/// The Diffie-Hellman work of one handshake with PFS: four key pairs and four shared
/// secrets (each side: phase 1 and Quick Mode), against a fixed valid peer value.
pub fn dh_work(
    group: DhGroup,
    rng: &mut impl CryptoRngCore,
    peer: &[u8],
) -> Result<(), CryptoError> {
    for _ in 0..4 {
        let key = DhPrivateKey::generate(group, rng);
        let public = key.public_key();
        let shared = key.shared_secret(black_box(peer))?;
        black_box((public, shared));
    }
    Ok(())
}
