//! What a finished Quick Mode hands to the data plane: one ESP SA in each direction.
//!
//! IKEv1 negotiates ESP SAs in pairs (RFC 2409 section 5.5): each side picks the SPI it
//! wants to receive on, and KEYMAT is derived separately for each direction's SPI. This
//! module is the contract between the control plane (phase 2 exchanges) and the data
//! plane (SAD, ESP transform); neither depends on the other's internals.

use std::net::SocketAddr;

use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm, SecretBytes};

use crate::selector::TrafficSelector;

/// Keys and algorithms of one unidirectional ESP SA.
#[derive(Clone, Debug)]
pub struct EspSaKeys {
    /// The SPI carried in this direction's ESP headers (chosen by the receiver).
    pub spi: u32,
    /// The CBC cipher.
    pub encryption: EncryptionAlgorithm,
    /// The cipher key, `encryption.key_len()` bytes.
    pub encryption_key: SecretBytes,
    /// The integrity algorithm.
    pub integrity: IntegrityAlgorithm,
    /// The integrity key, `integrity.key_len()` bytes.
    pub integrity_key: SecretBytes,
}

/// How ESP packets travel between the two gateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encapsulation {
    /// ESP directly over IP (protocol 50), tunnel mode (RFC 4303).
    Tunnel,
    /// ESP inside UDP, tunnel mode (RFC 3948), after NAT traversal negotiated it.
    UdpTunnel,
}

/// Lifetime limits of an SA; `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Seconds after installation.
    pub seconds: Option<u64>,
    /// Kilobytes (1024 bytes) of protected traffic.
    pub kilobytes: Option<u64>,
}

/// A negotiated pair of ESP SAs, ready for the data plane.
#[derive(Clone, Debug)]
pub struct ChildSaPair {
    /// Our outer address and port (the port matters only for [`Encapsulation::UdpTunnel`]).
    pub local: SocketAddr,
    /// The peer's outer address and port as last seen (after any NAT).
    pub remote: SocketAddr,
    /// Packets we receive: SPI chosen by us.
    pub inbound: EspSaKeys,
    /// Packets we send: SPI chosen by the peer.
    pub outbound: EspSaKeys,
    /// Inner sources we may send from / inner destinations the peer may send to.
    pub local_ts: TrafficSelector,
    /// Inner destinations we send to / inner sources the peer may send from.
    pub remote_ts: TrafficSelector,
    /// ESP over IP or ESP in UDP.
    pub encapsulation: Encapsulation,
    /// Hard limits after which the SAs must no longer be used.
    pub hard_lifetime: Lifetime,
}
