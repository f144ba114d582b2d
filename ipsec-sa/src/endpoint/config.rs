//! What the caller tells the endpoint: endpoint-wide settings and one [`TunnelConfig`] per
//! peer.
//!
//! Every field has a default matching the first milestone (Main Mode, PSK, AES-128/SHA1/MODP
//! 2048, ESP AES-128/HMAC-SHA1 with PFS group 14) so a tunnel needs only addresses, a key and
//! selectors.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipsec_crypto::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm, SecretBytes};

use crate::selector::TrafficSelector;

/// Settings shared by every tunnel of an [`Endpoint`](super::Endpoint).
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Retransmission schedule of every request we send.
    pub retransmit: RetransmitConfig,
    /// How many phase-1 exchanges started by peers may be unfinished at once; further
    /// first messages are dropped (a cheap guard against floods of MM1).
    pub max_half_open: usize,
    /// The same limit per peer address, so that a flood spoofing one configured peer
    /// cannot lock the others out.
    pub max_half_open_per_peer: usize,
    /// How long an exchange that was answered completely is kept, so that a retransmitted
    /// request still gets our last response (RFC 2409 section 5, "retransmission").
    pub linger: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            retransmit: RetransmitConfig::default(),
            max_half_open: 64,
            max_half_open_per_peer: 8,
            linger: Duration::from_secs(30),
        }
    }
}

/// Retransmission with exponential back-off: the n-th resend waits `initial * 2^n`, capped
/// at `max_interval`; after `max_tries` resends without an answer the exchange fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// Wait before the first resend.
    pub initial: Duration,
    /// Upper bound on any single wait.
    pub max_interval: Duration,
    /// Resends before giving up.
    pub max_tries: u32,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(16),
            max_tries: 5,
        }
    }
}

impl RetransmitConfig {
    /// The wait after the `sent`-th transmission (1 = the original).
    pub(crate) fn interval(&self, sent: u32) -> Duration {
        let shift = sent.saturating_sub(1).min(16);
        self.initial
            .saturating_mul(1u32 << shift)
            .min(self.max_interval)
    }
}

/// Phase-1 exchange mode (RFC 2409 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase1Mode {
    /// Main Mode (Identity Protection, six messages): identities are encrypted.
    Main,
    /// Aggressive Mode (three messages): identities in clear, and an observer can test
    /// guesses of the pre-shared key offline. For peers that need it only.
    Aggressive,
}

/// One phase-1 transform we offer or accept (authentication is always pre-shared key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase1Proposal {
    /// Cipher for phase-1 and phase-2 messages.
    pub encryption: EncryptionAlgorithm,
    /// Hash for the PRF (HMAC), IVs and NAT-D.
    pub hash: HashAlgorithm,
    /// Diffie-Hellman group of the phase-1 exchange.
    pub group: DhGroup,
}

impl Default for Phase1Proposal {
    fn default() -> Self {
        Self {
            encryption: EncryptionAlgorithm::AesCbc128,
            hash: HashAlgorithm::Sha1,
            group: DhGroup::Modp2048,
        }
    }
}

/// One ESP transform we offer or accept in Quick Mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase2Proposal {
    /// ESP cipher.
    pub encryption: EncryptionAlgorithm,
    /// ESP integrity algorithm.
    pub integrity: IntegrityAlgorithm,
}

impl Default for Phase2Proposal {
    fn default() -> Self {
        Self {
            encryption: EncryptionAlgorithm::AesCbc128,
            integrity: IntegrityAlgorithm::HmacSha1_96,
        }
    }
}

/// A phase-1 identity (RFC 2407 section 4.6.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// ID_IPV4_ADDR or ID_IPV6_ADDR, by the address's family.
    Address(IpAddr),
    /// ID_FQDN, a fully qualified domain name.
    Fqdn(String),
    /// ID_USER_FQDN, an e-mail style name.
    UserFqdn(String),
    /// ID_KEY_ID, opaque bytes.
    KeyId(Vec<u8>),
}

/// Phase-1 settings of a tunnel.
#[derive(Clone, Debug)]
pub struct Phase1Config {
    /// Exchange mode, as initiator and the only one accepted as responder.
    pub mode: Phase1Mode,
    /// Transforms in order of preference; as responder, the first of the peer's transforms
    /// that matches one of these is chosen.
    pub proposals: Vec<Phase1Proposal>,
    /// Our identity; `None` sends our outer address (ID_IPV4_ADDR / ID_IPV6_ADDR).
    pub local_id: Option<Identity>,
    /// The identity the peer must present; `None` expects the peer's outer address.
    pub remote_id: Option<Identity>,
    /// Lifetime we propose for the ISAKMP SA.
    pub lifetime: Duration,
}

impl Default for Phase1Config {
    fn default() -> Self {
        Self {
            mode: Phase1Mode::Main,
            proposals: vec![Phase1Proposal::default()],
            local_id: None,
            remote_id: None,
            lifetime: Duration::from_secs(28_800),
        }
    }
}

/// Phase-2 (Quick Mode) settings of a tunnel.
#[derive(Clone, Debug)]
pub struct Phase2Config {
    /// ESP transforms in order of preference.
    pub proposals: Vec<Phase2Proposal>,
    /// PFS group: a fresh Diffie-Hellman exchange in every Quick Mode (RFC 2409 section
    /// 5.5); `None` derives ESP keys from SKEYID_d alone.
    pub pfs_group: Option<DhGroup>,
    /// Lifetime we propose for the ESP SAs.
    pub lifetime: Duration,
    /// Traffic limit we propose for the ESP SAs, in kilobytes (RFC 2407 section 4.5, SA
    /// Life Type kilobytes); `None` proposes none. The data plane enforces it through
    /// `ChildSaPair::hard_lifetime` and reports its soft and hard limits, which the caller
    /// forwards to `Endpoint::soft_lifetime_reached` (rekey) and
    /// `Endpoint::hard_lifetime_reached` (delete).
    pub lifetime_kilobytes: Option<u64>,
    /// Set the commit bit in our QM1 (RFC 2408 section 3.1): the responder then confirms
    /// QM3 with a CONNECTED notification and we report the pair only once it arrives, so
    /// the data plane never sends on a pair the peer has not installed. We honour the
    /// bit when the peer sets it, whatever this says.
    pub commit: bool,
}

impl Default for Phase2Config {
    fn default() -> Self {
        Self {
            proposals: vec![Phase2Proposal::default()],
            pfs_group: Some(DhGroup::Modp2048),
            lifetime: Duration::from_secs(3_600),
            lifetime_kilobytes: None,
            commit: false,
        }
    }
}

/// What to do when dead peer detection declares the peer dead (RFC 3706).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpdAction {
    /// Delete the SAs and report [`Event::PeerDead`](super::Event::PeerDead).
    Clear,
    /// Delete the SAs, report, and start a new Main Mode (and Quick Mode) at once; it
    /// retransmits and fails like any other until the peer is back.
    Restart,
}

/// Dead peer detection (RFC 3706): after `delay` without traffic from the peer we send
/// R-U-THERE; if nothing comes back within `timeout` the peer is declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpdConfig {
    /// Idle time before we probe.
    pub delay: Duration,
    /// How long we keep probing before giving up.
    pub timeout: Duration,
    /// What happens then.
    pub action: DpdAction,
}

/// One site-to-site tunnel: a peer, a key, and the traffic it protects.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// A name for logs and events.
    pub name: String,
    /// Our outer address; port 500 normally. After a NAT-T float we use the same IP with
    /// port 4500.
    pub local_addr: SocketAddr,
    /// The peer's outer address, port 500 normally.
    pub remote_addr: SocketAddr,
    /// The pre-shared key (RFC 2409 section 5.4).
    pub psk: SecretBytes,
    /// Phase-1 settings.
    pub phase1: Phase1Config,
    /// Phase-2 settings.
    pub phase2: Phase2Config,
    /// Inner addresses on our side. Quick Mode proposes the first entry.
    pub local_ts: Vec<TrafficSelector>,
    /// Inner addresses on the peer's side. Quick Mode proposes the first entry.
    pub remote_ts: Vec<TrafficSelector>,
    /// Dead peer detection; `None` only answers the peer's probes.
    pub dpd: Option<DpdConfig>,
    /// Offer NAT traversal (RFC 3947 and the draft-02 variant) in phase 1.
    pub nat_traversal: bool,
    /// Send INITIAL-CONTACT in MM5 (RFC 2407 section 4.6.3.3) so the peer drops stale SAs.
    pub initial_contact: bool,
    /// Use UDP encapsulation even without a NAT: our NAT-D hash for our own address is
    /// computed over 0.0.0.0:0, so it cannot match and the peer concludes we are behind a
    /// NAT (RFC 3947 section 3.2 detects a NAT by exactly that mismatch); we act as if we
    /// were, so IKE floats to UDP 4500 and ESP travels in UDP (RFC 3948). For paths that
    /// pass UDP but not IP protocol 50. Needs `nat_traversal`.
    pub force_udp_encapsulation: bool,
}

impl TunnelConfig {
    /// A tunnel with the milestone defaults (see the module docs).
    pub fn new(
        name: impl Into<String>,
        local_addr: SocketAddr,
        remote_addr: SocketAddr,
        psk: SecretBytes,
        local_ts: TrafficSelector,
        remote_ts: TrafficSelector,
    ) -> Self {
        Self {
            name: name.into(),
            local_addr,
            remote_addr,
            psk,
            phase1: Phase1Config::default(),
            phase2: Phase2Config::default(),
            local_ts: vec![local_ts],
            remote_ts: vec![remote_ts],
            dpd: None,
            nat_traversal: true,
            initial_contact: true,
            force_udp_encapsulation: false,
        }
    }

    /// Our phase-1 identity: the configured one or our outer address.
    pub(crate) fn local_identity(&self) -> Identity {
        self.phase1
            .local_id
            .clone()
            .unwrap_or(Identity::Address(self.local_addr.ip()))
    }

    /// The identity the peer must present: the configured one or its outer address.
    pub(crate) fn remote_identity(&self) -> Identity {
        self.phase1
            .remote_id
            .clone()
            .unwrap_or(Identity::Address(self.remote_addr.ip()))
    }
}

/// Why a tunnel configuration was refused by [`Endpoint::add_tunnel`](super::Endpoint::add_tunnel).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `phase1.proposals` is empty.
    #[error("tunnel {tunnel:?}: phase1.proposals is empty")]
    NoPhase1Proposal {
        /// The tunnel name.
        tunnel: String,
    },
    /// `phase2.proposals` is empty.
    #[error("tunnel {tunnel:?}: phase2.proposals is empty")]
    NoPhase2Proposal {
        /// The tunnel name.
        tunnel: String,
    },
    /// `local_ts` or `remote_ts` is empty.
    #[error("tunnel {tunnel:?}: local_ts and remote_ts need at least one selector each")]
    NoTrafficSelector {
        /// The tunnel name.
        tunnel: String,
    },
    /// The pre-shared key is empty.
    #[error("tunnel {tunnel:?}: the pre-shared key is empty")]
    EmptyPsk {
        /// The tunnel name.
        tunnel: String,
    },
    /// Local and remote outer addresses are of different families.
    #[error(
        "tunnel {tunnel:?}: local_addr {local} and remote_addr {remote} are of different families"
    )]
    AddressFamilyMismatch {
        /// The tunnel name.
        tunnel: String,
        /// `local_addr`.
        local: SocketAddr,
        /// `remote_addr`.
        remote: SocketAddr,
    },
    /// Another tunnel already uses this remote address; as responder we could not tell
    /// them apart (policy is found by the peer's address, or, when every tunnel to the
    /// address uses Aggressive Mode with its own `remote_id`, by the identity in AM1).
    #[error("tunnel {tunnel:?}: remote_addr {remote} is already used by tunnel {other:?}")]
    DuplicateRemote {
        /// The tunnel name.
        tunnel: String,
        /// The shared address.
        remote: SocketAddr,
        /// The tunnel that has it.
        other: String,
    },
}

impl TunnelConfig {
    /// Checks what can be checked without a peer.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let tunnel = self.name.clone();
        if self.phase1.proposals.is_empty() {
            return Err(ConfigError::NoPhase1Proposal { tunnel });
        }
        if self.phase2.proposals.is_empty() {
            return Err(ConfigError::NoPhase2Proposal { tunnel });
        }
        if self.local_ts.is_empty() || self.remote_ts.is_empty() {
            return Err(ConfigError::NoTrafficSelector { tunnel });
        }
        if self.psk.is_empty() {
            return Err(ConfigError::EmptyPsk { tunnel });
        }
        if self.local_addr.is_ipv4() != self.remote_addr.is_ipv4() {
            return Err(ConfigError::AddressFamilyMismatch {
                tunnel,
                local: self.local_addr,
                remote: self.remote_addr,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_interval_doubles_and_caps() {
        let r = RetransmitConfig::default();
        assert_eq!(r.interval(1), Duration::from_secs(1));
        assert_eq!(r.interval(2), Duration::from_secs(2));
        assert_eq!(r.interval(4), Duration::from_secs(8));
        assert_eq!(r.interval(6), Duration::from_secs(16));
        assert_eq!(r.interval(60), Duration::from_secs(16));
    }
}
