//! The gateway's TOML configuration: the fields of a cloud provider's site-to-site VPN form,
//! parsed with serde and then validated into typed settings.
//!
//! Parsing is two steps on purpose. serde reads the file into plain structs that mirror the
//! TOML (strings and numbers, unknown keys rejected); [`validate`] then turns them into typed
//! [`Tunnel`]s. Doing the checks by hand rather than with serde enums lets every error name
//! the tunnel, the field (with its index in a list) and what is allowed, which an operator
//! needs more than a TOML line number.
//!
//! Several proposals per phase: each phase lists its algorithms per field (encryption,
//! authentication, DH or PFS group) and the proposals are every combination, in the order
//! written, encryption varying slowest. This is how provider forms present the choice.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipsec_crypto::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::selector::TrafficSelector;
use serde::Deserialize;

/// Default name of the TUN device.
const DEFAULT_TUN_NAME: &str = "ipgw0";
/// Default TUN MTU: 1500 minus the worst ESP-in-UDP overhead we negotiate (outer IPv4 20, UDP 8,
/// ESP header 8, IV 16, padding up to 15, pad length and next header 2, ICV up to 32).
const DEFAULT_MTU: u16 = 1400;
/// Default path MTU towards the peers (outer packets): Ethernet's 1500, the usual Internet
/// path. With the default TUN MTU every inner packet fits, so the check only bites when a
/// smaller path is configured.
const DEFAULT_PATH_MTU: u16 = 1500;
/// Default number of data path threads (see [`Config::data_path_threads`]).
const DEFAULT_DATA_PATH_THREADS: u16 = 1;
/// The most data path threads: one outbound and one inbound task per local address need
/// no more on the machines a site-to-site gateway runs on.
const MAX_DATA_PATH_THREADS: u16 = 16;
/// Phase 1 lifetime bounds in seconds (RFC 2409 sets none; these catch typos such as
/// minutes written as seconds, and match the range providers accept).
const PHASE1_LIFETIME: (u64, u64) = (300, 86_400);
/// Phase 2 lifetime bounds in seconds. Values under two minutes only make sense in tests
/// (the interop tests rekey every few seconds).
const PHASE2_LIFETIME: (u64, u64) = (5, 86_400);

/// A configuration problem, naming where it is and what would be accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key or type the gateway does not know.
    #[error("{path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's description, with line and column.
        message: String,
    },
    /// A value of the `[gateway]` section is not acceptable.
    #[error("gateway.{field}: {problem}")]
    Gateway {
        /// The field.
        field: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// The file defines no tunnel.
    #[error("no [[tunnel]] defined; at least one is needed")]
    NoTunnel,
    /// A value of one tunnel is not acceptable.
    #[error("tunnel {tunnel:?}: {field}: {problem}")]
    Tunnel {
        /// The tunnel's name (or its index when the name itself is the problem).
        tunnel: String,
        /// The field, as written in the file (`phase1.encryption[1]`).
        field: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

// ------------------------------------------------------------------ the file --

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default, rename = "tunnel")]
    tunnels: Vec<RawTunnel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    tun_name: Option<String>,
    mtu: Option<u16>,
    path_mtu: Option<u16>,
    data_path_threads: Option<u16>,
    control_socket: Option<PathBuf>,
    retransmit: Option<RawRetransmit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetransmit {
    initial_ms: u64,
    max_interval_ms: u64,
    tries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: String,
    local_address: String,
    remote_address: String,
    #[serde(default)]
    initiate: Option<String>,
    local_subnets: Vec<String>,
    remote_subnets: Vec<String>,
    psk: RawPsk,
    phase1: RawPhase1,
    phase2: RawPhase2,
    #[serde(default)]
    dpd: Option<RawDpd>,
    #[serde(default)]
    static_nat: Option<RawStaticNat>,
}

/// Where the pre-shared key comes from: exactly one of the three.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with one of inline = \"KEY\", file = \"PATH\" or env = \"VARIABLE\""
)]
struct RawPsk {
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
}

impl fmt::Debug for RawPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print an inline key.
        f.debug_struct("RawPsk")
            .field("inline", &self.inline.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .field("env", &self.env)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase1 {
    #[serde(default)]
    mode: Option<String>,
    encryption: Vec<String>,
    authentication: Vec<String>,
    dh_group: Vec<u16>,
    lifetime_seconds: u64,
    #[serde(default)]
    local_id: Option<String>,
    #[serde(default)]
    remote_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase2 {
    encryption: Vec<String>,
    authentication: Vec<String>,
    /// A group number, or "none".
    pfs_group: RawPfs,
    lifetime_seconds: u64,
    #[serde(default)]
    lifetime_kilobytes: Option<u64>,
}

/// `pfs_group = 14` or `pfs_group = "none"`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a DH group number (1, 2, 5, 14-18, 22-24) or \"none\""
)]
enum RawPfs {
    Group(u16),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpd {
    delay_seconds: u64,
    timeout_seconds: u64,
    action: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticNat {
    subnets: Vec<String>,
    #[serde(default)]
    entries: Vec<RawNatEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNatEntry {
    name: String,
    local: String,
    remote: String,
}

// --------------------------------------------------------- validated settings --

/// The whole validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    /// Name of the TUN device the gateway creates.
    pub(crate) tun_name: String,
    /// MTU of the TUN device.
    pub(crate) mtu: u16,
    /// Path MTU towards the peers: an ESP packet (outer headers included) larger than this
    /// is not sent when its inner packet has DF set; the sender gets an ICMP "fragmentation
    /// needed" / ICMPv6 "packet too big" with the inner MTU instead (RFC 1191, RFC 4443).
    pub(crate) path_mtu: u16,
    /// Threads that run the ESP data path (the IKE loop has a thread of its own besides).
    /// With one, sealing and opening share it; with two or more, the outbound task and
    /// the inbound tasks can run on different cores at once.
    pub(crate) data_path_threads: u16,
    /// Where `ipsec-gateway status` connects; `None` disables the control socket.
    pub(crate) control_socket: Option<PathBuf>,
    /// IKE retransmission schedule; `None` keeps the endpoint's default.
    pub(crate) retransmit: Option<Retransmit>,
    /// The tunnels, in file order.
    pub(crate) tunnels: Vec<Tunnel>,
}

/// How IKE requests are resent: after `initial`, doubling up to `max_interval`, `tries`
/// times, then the exchange fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retransmit {
    /// First wait.
    pub(crate) initial: std::time::Duration,
    /// Longest wait.
    pub(crate) max_interval: std::time::Duration,
    /// Resends before giving up.
    pub(crate) tries: u32,
}

/// When a tunnel's SAs are negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Initiate {
    /// At startup (and again after the SAs go away).
    Start,
    /// When the first packet for the remote subnets arrives on the TUN device.
    OnTraffic,
    /// Never by us: we only respond.
    Wait,
}

impl fmt::Display for Initiate {
    /// The word the config file uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "start",
            Self::OnTraffic => "on-traffic",
            Self::Wait => "wait",
        })
    }
}

/// IKEv1 phase 1 exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase1Mode {
    /// Main Mode (identity protection, RFC 2409 section 5).
    Main,
    /// Aggressive Mode (RFC 2409 section 5): identities in clear, a PSK hash offline-attackable.
    Aggressive,
}

impl fmt::Display for Phase1Mode {
    /// The word the config file uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Main => "main",
            Self::Aggressive => "aggressive",
        })
    }
}

/// A phase 1 identity (RFC 2407 section 4.6.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// ID_IPV4_ADDR or ID_IPV6_ADDR.
    Address(IpAddr),
    /// ID_FQDN (written `@name` or as a bare host name).
    Fqdn(String),
    /// ID_USER_FQDN (written `user@domain`).
    UserFqdn(String),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(a) => write!(f, "{a}"),
            Self::Fqdn(n) => write!(f, "@{n}"),
            Self::UserFqdn(n) => write!(f, "{n}"),
        }
    }
}

/// One phase 1 proposal (one ISAKMP transform).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phase1Proposal {
    /// The CBC cipher.
    pub(crate) encryption: EncryptionAlgorithm,
    /// The hash (and the HMAC PRF built on it, RFC 2409 section 4).
    pub(crate) hash: HashAlgorithm,
    /// The Diffie-Hellman group.
    pub(crate) dh_group: DhGroup,
}

/// One phase 2 proposal (one ESP transform).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phase2Proposal {
    /// The CBC cipher.
    pub(crate) encryption: EncryptionAlgorithm,
    /// The ESP integrity algorithm.
    pub(crate) integrity: IntegrityAlgorithm,
}

/// Validated phase 1 settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Phase1 {
    /// Main or Aggressive Mode.
    pub(crate) mode: Phase1Mode,
    /// Proposals in preference order.
    pub(crate) proposals: Vec<Phase1Proposal>,
    /// ISAKMP SA lifetime in seconds.
    pub(crate) lifetime_seconds: u64,
    /// Our identity.
    pub(crate) local_id: Identity,
    /// The identity the peer must present.
    pub(crate) remote_id: Identity,
}

/// Validated phase 2 settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Phase2 {
    /// Proposals in preference order.
    pub(crate) proposals: Vec<Phase2Proposal>,
    /// The PFS group shared by every proposal, if any. One group only: the initiator's
    /// Quick Mode carries a single KE payload (RFC 2409 section 5.5), so its group is fixed.
    pub(crate) pfs_group: Option<DhGroup>,
    /// IPsec SA lifetime in seconds.
    pub(crate) lifetime_seconds: u64,
    /// IPsec SA lifetime in kilobytes, if limited.
    pub(crate) lifetime_kilobytes: Option<u64>,
}

/// What to do when DPD declares the peer dead (RFC 3706).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DpdAction {
    /// No dead peer detection: the peer is never probed.
    None,
    /// Delete the SAs and wait.
    Clear,
    /// Delete the SAs and negotiate again when traffic for the tunnel arrives (the
    /// tunnel's policies stay in place, so its packets are held back, never sent in clear).
    Hold,
    /// Delete the SAs and negotiate again at once.
    Restart,
}

impl fmt::Display for DpdAction {
    /// The word the config file uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Clear => "clear",
            Self::Hold => "hold",
            Self::Restart => "restart",
        })
    }
}

/// Dead peer detection settings (RFC 3706).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dpd {
    /// Idle seconds before we send R-U-THERE.
    pub(crate) delay_seconds: u64,
    /// Seconds without an answer before the peer is declared dead.
    pub(crate) timeout_seconds: u64,
    /// What happens then.
    pub(crate) action: DpdAction,
}

/// Static one-to-one NAT of a tunnel, as provider forms define it: local hosts reach a host
/// behind the peer through an address of a "static NAT subnet" assigned on our side. See the
/// `ipsec_nat` crate docs for the packet path.
#[derive(Debug)]
pub(crate) struct StaticNat {
    /// The assigned static NAT subnets (routed into the tunnel like the remote subnets).
    pub(crate) subnets: Vec<TrafficSelector>,
    /// The validated table of entries.
    pub(crate) table: std::sync::Arc<ipsec_nat::NatTable>,
}

/// Where the PSK comes from; the key itself is read by [`PskSource::load`] and never logged.
#[derive(Clone)]
pub(crate) enum PskSource {
    /// Written in the config file.
    Inline(SecretBytes),
    /// The whole content of a file (a single trailing newline is removed).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for PskSource {
    /// Where the key comes from, as the config file says it; never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("inline (in the config file)"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(var) => write!(f, "env {var}"),
        }
    }
}

impl fmt::Debug for PskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

impl PskSource {
    /// Reads the key. Errors name the source, never the key.
    pub(crate) fn load(&self) -> Result<SecretBytes, String> {
        let key = match self {
            Self::Inline(k) => k.clone(),
            Self::File(path) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read PSK file {}: {e}", path.display()))?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                SecretBytes::new(bytes)
            }
            Self::Env(var) => match std::env::var_os(var) {
                Some(v) => SecretBytes::new(v.into_encoded_bytes()),
                None => return Err(format!("environment variable {var} is not set")),
            },
        };
        if key.is_empty() {
            return Err("the pre-shared key is empty".into());
        }
        Ok(key)
    }
}

/// One validated tunnel.
#[derive(Clone, Debug)]
pub(crate) struct Tunnel {
    /// Unique name, used in logs and in `status`.
    pub(crate) name: String,
    /// Our outer address (the UDP sockets bind to it).
    pub(crate) local_address: IpAddr,
    /// The peer's outer address.
    pub(crate) remote_address: IpAddr,
    /// Who starts the negotiation, and when.
    pub(crate) initiate: Initiate,
    /// Our protected subnets (as the peer sees them, i.e. after static NAT).
    pub(crate) local_subnets: Vec<TrafficSelector>,
    /// The peer's protected subnets.
    pub(crate) remote_subnets: Vec<TrafficSelector>,
    /// The pre-shared key's source.
    pub(crate) psk: PskSource,
    /// Phase 1 settings.
    pub(crate) phase1: Phase1,
    /// Phase 2 settings.
    pub(crate) phase2: Phase2,
    /// Dead peer detection, if enabled.
    pub(crate) dpd: Option<Dpd>,
    /// Static one-to-one NAT, if configured.
    pub(crate) static_nat: Option<std::sync::Arc<StaticNat>>,
}

// ------------------------------------------------------------------ loading --

/// Reads and validates a config file.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// The control socket a config file names, without validating the rest (`status` needs
/// only this, and should not need the tunnels' keys). Syntax errors are still errors.
pub(crate) fn control_socket(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(raw.gateway.control_socket)
}

/// Parses and validates config text; `path` only labels errors.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    validate(raw)
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let tun_name = raw
        .gateway
        .tun_name
        .unwrap_or_else(|| DEFAULT_TUN_NAME.to_owned());
    // Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace.
    if tun_name.is_empty()
        || tun_name.len() > 15
        || tun_name.contains(|c: char| c == '/' || c.is_whitespace() || c == ':')
    {
        return Err(ConfigError::Gateway {
            field: "tun_name".into(),
            problem: format!(
                "{tun_name:?} is not a Linux interface name (1 to 15 characters, no '/', ':' or spaces)"
            ),
        });
    }
    let mtu = raw.gateway.mtu.unwrap_or(DEFAULT_MTU);
    if !(576..=9000).contains(&mtu) {
        return Err(ConfigError::Gateway {
            field: "mtu".into(),
            problem: format!("{mtu} is out of range; allowed 576 to 9000"),
        });
    }

    let path_mtu = raw.gateway.path_mtu.unwrap_or(DEFAULT_PATH_MTU);
    if !(576..=9000).contains(&path_mtu) {
        return Err(ConfigError::Gateway {
            field: "path_mtu".into(),
            problem: format!("{path_mtu} is out of range; allowed 576 to 9000"),
        });
    }

    let data_path_threads = raw
        .gateway
        .data_path_threads
        .unwrap_or(DEFAULT_DATA_PATH_THREADS);
    if !(1..=MAX_DATA_PATH_THREADS).contains(&data_path_threads) {
        return Err(ConfigError::Gateway {
            field: "data_path_threads".into(),
            problem: format!(
                "{data_path_threads} is out of range; allowed 1 to {MAX_DATA_PATH_THREADS}"
            ),
        });
    }

    if raw.tunnels.is_empty() {
        return Err(ConfigError::NoTunnel);
    }
    let mut tunnels: Vec<Tunnel> = Vec::with_capacity(raw.tunnels.len());
    for (index, rt) in raw.tunnels.into_iter().enumerate() {
        let tunnel = validate_tunnel(index, rt)?;
        check_against_others(&tunnel, &tunnels)?;
        tunnels.push(tunnel);
    }

    let retransmit = raw
        .gateway
        .retransmit
        .map(validate_retransmit)
        .transpose()?;
    Ok(Config {
        tun_name,
        mtu,
        path_mtu,
        data_path_threads,
        control_socket: raw.gateway.control_socket,
        retransmit,
        tunnels,
    })
}

fn validate_retransmit(r: RawRetransmit) -> Result<Retransmit, ConfigError> {
    let problem = |field: &str, p: String| ConfigError::Gateway {
        field: format!("retransmit.{field}"),
        problem: p,
    };
    if !(100..=60_000).contains(&r.initial_ms) {
        return Err(problem(
            "initial_ms",
            format!("{} is out of range; allowed 100 to 60000", r.initial_ms),
        ));
    }
    if r.max_interval_ms < r.initial_ms || r.max_interval_ms > 300_000 {
        return Err(problem(
            "max_interval_ms",
            format!(
                "{} is not allowed; from initial_ms ({}) to 300000",
                r.max_interval_ms, r.initial_ms
            ),
        ));
    }
    if !(1..=20).contains(&r.tries) {
        return Err(problem(
            "tries",
            format!("{} is out of range; allowed 1 to 20", r.tries),
        ));
    }
    Ok(Retransmit {
        initial: std::time::Duration::from_millis(r.initial_ms),
        max_interval: std::time::Duration::from_millis(r.max_interval_ms),
        tries: r.tries,
    })
}

/// Builds a [`ConfigError::Tunnel`].
fn bad(tunnel: &str, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Tunnel {
        tunnel: tunnel.to_owned(),
        field: field.into(),
        problem: problem.into(),
    }
}

fn validate_tunnel(index: usize, rt: RawTunnel) -> Result<Tunnel, ConfigError> {
    let name = rt.name;
    let valid_name = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(bad(
            &format!("#{}", index + 1),
            "name",
            format!("{name:?} is not allowed; use 1 to 32 of A-Z a-z 0-9 - _ ."),
        ));
    }
    let n = name.as_str();

    // Outer addresses.
    let local_address = parse_host_addr(n, "local_address", &rt.local_address)?;
    let remote_address = parse_host_addr(n, "remote_address", &rt.remote_address)?;
    if local_address.is_ipv4() != remote_address.is_ipv4() {
        return Err(bad(
            n,
            "remote_address",
            format!("{remote_address} is not of the same family as local_address {local_address}"),
        ));
    }
    if local_address == remote_address {
        return Err(bad(n, "remote_address", "must differ from local_address"));
    }

    let initiate = match rt.initiate.as_deref().unwrap_or("start") {
        "start" => Initiate::Start,
        "on-traffic" => Initiate::OnTraffic,
        "wait" => Initiate::Wait,
        other => {
            return Err(bad(
                n,
                "initiate",
                format!("{other:?} is not allowed; use start, on-traffic or wait"),
            ))
        }
    };

    // Protected subnets.
    let local_subnets = parse_subnets(n, "local_subnets", &rt.local_subnets)?;
    let remote_subnets = parse_subnets(n, "remote_subnets", &rt.remote_subnets)?;
    for (i, l) in local_subnets.iter().enumerate() {
        for r in &remote_subnets {
            if overlaps(l, r) {
                return Err(bad(
                    n,
                    format!("local_subnets[{i}]"),
                    format!("{l} overlaps remote subnet {r}; the two sides must be disjoint"),
                ));
            }
        }
    }

    let psk = validate_psk(n, rt.psk)?;
    let phase1 = validate_phase1(n, rt.phase1, local_address, remote_address)?;
    let phase2 = validate_phase2(n, rt.phase2)?;
    let dpd = rt.dpd.map(|d| validate_dpd(n, d)).transpose()?;
    let static_nat = rt
        .static_nat
        .map(|nat| validate_nat(n, nat, &local_subnets, &remote_subnets))
        .transpose()?
        .map(std::sync::Arc::new);

    Ok(Tunnel {
        name,
        local_address,
        remote_address,
        initiate,
        local_subnets,
        remote_subnets,
        psk,
        phase1,
        phase2,
        dpd,
        static_nat,
    })
}

/// Rules that involve more than one tunnel.
fn check_against_others(t: &Tunnel, earlier: &[Tunnel]) -> Result<(), ConfigError> {
    for o in earlier {
        if o.name == t.name {
            return Err(bad(
                &t.name,
                "name",
                "is used by an earlier tunnel; names must be unique",
            ));
        }
        // The IKE endpoint picks the tunnel of an incoming Main Mode by the peer's address.
        if o.remote_address == t.remote_address {
            return Err(bad(
                &t.name,
                "remote_address",
                format!(
                    "{} is already the peer of tunnel {:?}; one tunnel per peer address",
                    t.remote_address, o.name
                ),
            ));
        }

        // Outbound packets are routed by destination: remote subnets must not overlap.
        for (i, r) in t.remote_subnets.iter().enumerate() {
            if let Some(or) = o.remote_subnets.iter().find(|or| overlaps(r, or)) {
                return Err(bad(
                    &t.name,
                    format!("remote_subnets[{i}]"),
                    format!(
                        "{r} overlaps {or} of tunnel {:?}; routing would be ambiguous",
                        o.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn parse_host_addr(tunnel: &str, field: &str, text: &str) -> Result<IpAddr, ConfigError> {
    let addr: IpAddr = text.trim().parse().map_err(|_| {
        bad(
            tunnel,
            field,
            format!("{text:?} is not an IPv4 or IPv6 address"),
        )
    })?;
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(bad(
            tunnel,
            field,
            format!("{addr} is not a unicast host address"),
        ));
    }
    Ok(addr)
}

/// Parses `a.b.c.d/len` (or a bare address, meaning /32 or /128).
pub(crate) fn parse_cidr(text: &str) -> Result<TrafficSelector, String> {
    let text = text.trim();
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("{text:?} is not a subnet in CIDR form (like 10.1.0.0/24)"))?;
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= width)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {width}"))?,
        None => width,
    };
    let ts = TrafficSelector::from_cidr(addr, len).map_err(|e| format!("{text:?}: {e}"))?;
    if ts.start() != addr {
        return Err(format!(
            "{text:?} has host bits set; the subnet is {}/{len}",
            ts.start()
        ));
    }
    Ok(ts)
}

fn parse_subnets(
    tunnel: &str,
    field: &str,
    list: &[String],
) -> Result<Vec<TrafficSelector>, ConfigError> {
    if list.is_empty() {
        return Err(bad(tunnel, field, "is empty; list at least one subnet"));
    }
    let mut out: Vec<TrafficSelector> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let ts = parse_cidr(text).map_err(|p| bad(tunnel, format!("{field}[{i}]"), p))?;
        if let Some(prev) = out.iter().find(|p| overlaps(p, &ts)) {
            return Err(bad(
                tunnel,
                format!("{field}[{i}]"),
                format!("{ts} overlaps {prev} listed before it"),
            ));
        }
        out.push(ts);
    }
    Ok(out)
}

/// Whether two address ranges share an address.
fn overlaps(a: &TrafficSelector, b: &TrafficSelector) -> bool {
    a.contains_addr(b.start())
        || a.contains_addr(b.end())
        || b.contains_addr(a.start())
        || b.contains_addr(a.end())
}

fn validate_psk(tunnel: &str, raw: RawPsk) -> Result<PskSource, ConfigError> {
    let source = match (raw.inline, raw.file, raw.env) {
        (Some(k), None, None) => PskSource::Inline(SecretBytes::new(k.into_bytes())),
        (None, Some(p), None) => PskSource::File(p),
        (None, None, Some(v)) => PskSource::Env(v),
        _ => {
            return Err(bad(
                tunnel,
                "psk",
                "give exactly one of psk.inline, psk.file or psk.env",
            ))
        }
    };
    // Resolve it now so `check` finds a missing file or variable; the key is dropped here.
    source.load().map_err(|p| bad(tunnel, "psk", p))?;
    Ok(source)
}

/// Names accepted for ciphers, in the order they are listed in errors.
const CIPHERS: [(&str, EncryptionAlgorithm); 5] = [
    ("aes128", EncryptionAlgorithm::AesCbc128),
    ("aes192", EncryptionAlgorithm::AesCbc192),
    ("aes256", EncryptionAlgorithm::AesCbc256),
    ("3des", EncryptionAlgorithm::TripleDesCbc),
    ("des", EncryptionAlgorithm::DesCbc),
];
/// Names accepted for phase 1 hashes.
const HASHES: [(&str, HashAlgorithm); 5] = [
    ("sha1", HashAlgorithm::Sha1),
    ("sha256", HashAlgorithm::Sha256),
    ("sha384", HashAlgorithm::Sha384),
    ("sha512", HashAlgorithm::Sha512),
    ("md5", HashAlgorithm::Md5),
];
/// Names accepted for ESP integrity (providers write the hash name).
const INTEGRITY: [(&str, IntegrityAlgorithm); 5] = [
    ("sha1", IntegrityAlgorithm::HmacSha1_96),
    ("sha256", IntegrityAlgorithm::HmacSha256_128),
    ("sha384", IntegrityAlgorithm::HmacSha384_192),
    ("sha512", IntegrityAlgorithm::HmacSha512_256),
    ("md5", IntegrityAlgorithm::HmacMd5_96),
];

/// The config file's word for `value` in `table` (the reverse of [`lookup`]).
fn word<T: PartialEq>(table: &[(&'static str, T)], value: &T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| v == value)
        .map_or("?", |(w, _)| w)
}

fn lookup<T: Copy + PartialEq>(
    tunnel: &str,
    field: &str,
    table: &[(&str, T)],
    names: &[String],
) -> Result<Vec<T>, ConfigError> {
    if names.is_empty() {
        return Err(bad(tunnel, field, "is empty; list at least one algorithm"));
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let lower = name.trim().to_ascii_lowercase();
        let Some(&(_, value)) = table.iter().find(|(n, _)| *n == lower) else {
            let allowed: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            return Err(bad(
                tunnel,
                format!("{field}[{i}]"),
                format!("{name:?} is not supported; allowed: {}", allowed.join(", ")),
            ));
        };
        if out.contains(&value) {
            return Err(bad(
                tunnel,
                format!("{field}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        out.push(value);
    }
    Ok(out)
}

fn group_problem(id: u16) -> String {
    let allowed: Vec<String> = DhGroup::ALL.iter().map(|g| g.id().to_string()).collect();
    format!(
        "group {id} is not supported; allowed: {}",
        allowed.join(", ")
    )
}

fn groups(tunnel: &str, field: &str, ids: &[u16]) -> Result<Vec<DhGroup>, ConfigError> {
    let mut out = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let Some(g) = DhGroup::from_id(id) else {
            return Err(bad(tunnel, format!("{field}[{i}]"), group_problem(id)));
        };
        if out.contains(&g) {
            return Err(bad(
                tunnel,
                format!("{field}[{i}]"),
                format!("group {id} is listed twice"),
            ));
        }
        out.push(g);
    }
    Ok(out)
}

fn check_lifetime(
    tunnel: &str,
    field: &str,
    value: u64,
    (min, max): (u64, u64),
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(bad(
            tunnel,
            field,
            format!("{value} is out of range; allowed {min} to {max} seconds"),
        ))
    }
}

fn parse_identity(tunnel: &str, field: &str, text: &str) -> Result<Identity, ConfigError> {
    let text = text.trim();
    if let Ok(a) = text.parse::<IpAddr>() {
        return Ok(Identity::Address(a));
    }
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    };
    if let Some(fqdn) = text.strip_prefix('@') {
        if host_ok(fqdn) {
            return Ok(Identity::Fqdn(fqdn.to_owned()));
        }
    } else if let Some((user, domain)) = text.split_once('@') {
        if !user.is_empty() && host_ok(domain) {
            return Ok(Identity::UserFqdn(text.to_owned()));
        }
    } else if host_ok(text) {
        return Ok(Identity::Fqdn(text.to_owned()));
    }
    Err(bad(
        tunnel,
        field,
        format!("{text:?} is not an identity; use an IP address, @host.name or user@domain"),
    ))
}

fn validate_phase1(
    tunnel: &str,
    raw: RawPhase1,
    local: IpAddr,
    remote: IpAddr,
) -> Result<Phase1, ConfigError> {
    let mode = match raw.mode.as_deref().unwrap_or("main") {
        "main" => Phase1Mode::Main,
        "aggressive" => Phase1Mode::Aggressive,
        other => {
            return Err(bad(
                tunnel,
                "phase1.mode",
                format!("{other:?} is not allowed; use main or aggressive"),
            ))
        }
    };
    let ciphers = lookup(tunnel, "phase1.encryption", &CIPHERS, &raw.encryption)?;
    let hashes = lookup(
        tunnel,
        "phase1.authentication",
        &HASHES,
        &raw.authentication,
    )?;
    if raw.dh_group.is_empty() {
        return Err(bad(
            tunnel,
            "phase1.dh_group",
            "is empty; list at least one group",
        ));
    }
    let dh = groups(tunnel, "phase1.dh_group", &raw.dh_group)?;
    check_lifetime(
        tunnel,
        "phase1.lifetime_seconds",
        raw.lifetime_seconds,
        PHASE1_LIFETIME,
    )?;
    let local_id = match raw.local_id {
        Some(t) => parse_identity(tunnel, "phase1.local_id", &t)?,
        None => Identity::Address(local),
    };
    let remote_id = match raw.remote_id {
        Some(t) => parse_identity(tunnel, "phase1.remote_id", &t)?,
        None => Identity::Address(remote),
    };
    // RFC 2409 section 5.4: with a PSK in Main Mode the key is chosen before identities are
    // seen, by the peer's address; only Aggressive Mode can pick it by a name.
    if mode == Phase1Mode::Main && !matches!(remote_id, Identity::Address(_)) {
        tracing::debug!(
            tunnel,
            "main mode with a non-address remote_id: the key is still chosen by address"
        );
    }

    let mut proposals = Vec::new();
    for &encryption in &ciphers {
        for &hash in &hashes {
            for &dh_group in &dh {
                proposals.push(Phase1Proposal {
                    encryption,
                    hash,
                    dh_group,
                });
            }
        }
    }
    Ok(Phase1 {
        mode,
        proposals,
        lifetime_seconds: raw.lifetime_seconds,
        local_id,
        remote_id,
    })
}

fn validate_phase2(tunnel: &str, raw: RawPhase2) -> Result<Phase2, ConfigError> {
    let ciphers = lookup(tunnel, "phase2.encryption", &CIPHERS, &raw.encryption)?;
    let integrity = lookup(
        tunnel,
        "phase2.authentication",
        &INTEGRITY,
        &raw.authentication,
    )?;
    let pfs_group = match raw.pfs_group {
        RawPfs::Word(w) if w == "none" => None,
        RawPfs::Word(w) => {
            return Err(bad(
                tunnel,
                "phase2.pfs_group",
                format!("{w:?} is not allowed; use a group number or \"none\""),
            ))
        }
        RawPfs::Group(id) => Some(
            DhGroup::from_id(id)
                .ok_or_else(|| bad(tunnel, "phase2.pfs_group", group_problem(id)))?,
        ),
    };
    check_lifetime(
        tunnel,
        "phase2.lifetime_seconds",
        raw.lifetime_seconds,
        PHASE2_LIFETIME,
    )?;
    if raw.lifetime_kilobytes == Some(0) {
        return Err(bad(
            tunnel,
            "phase2.lifetime_kilobytes",
            "0 is not allowed; leave it out for no volume limit",
        ));
    }

    let mut proposals = Vec::new();
    for &encryption in &ciphers {
        for &integrity in &integrity {
            proposals.push(Phase2Proposal {
                encryption,
                integrity,
            });
        }
    }
    Ok(Phase2 {
        proposals,
        pfs_group,
        lifetime_seconds: raw.lifetime_seconds,
        lifetime_kilobytes: raw.lifetime_kilobytes,
    })
}

fn validate_dpd(tunnel: &str, raw: RawDpd) -> Result<Dpd, ConfigError> {
    if !(1..=3600).contains(&raw.delay_seconds) {
        return Err(bad(
            tunnel,
            "dpd.delay_seconds",
            format!("{} is out of range; allowed 1 to 3600", raw.delay_seconds),
        ));
    }
    if raw.timeout_seconds <= raw.delay_seconds || raw.timeout_seconds > 86_400 {
        return Err(bad(
            tunnel,
            "dpd.timeout_seconds",
            format!(
                "{} is not allowed; it must exceed dpd.delay_seconds ({}) and be at most 86400",
                raw.timeout_seconds, raw.delay_seconds
            ),
        ));
    }
    let action = match raw.action.as_str() {
        "none" => DpdAction::None,
        "clear" => DpdAction::Clear,
        "hold" => DpdAction::Hold,
        "restart" => DpdAction::Restart,
        other => {
            return Err(bad(
                tunnel,
                "dpd.action",
                format!("{other:?} is not allowed; use none, clear, hold or restart"),
            ))
        }
    };
    Ok(Dpd {
        delay_seconds: raw.delay_seconds,
        timeout_seconds: raw.timeout_seconds,
        action,
    })
}

/// Static NAT: the subnets are IPv4 and disjoint from both sides' protected subnets; the
/// entries are then checked as a whole by [`ipsec_nat::NatTable::new`] (names, local address
/// in a static NAT subnet, remote address in a remote subnet, one-to-one).
fn validate_nat(
    tunnel: &str,
    raw: RawStaticNat,
    local_subnets: &[TrafficSelector],
    remote_subnets: &[TrafficSelector],
) -> Result<StaticNat, ConfigError> {
    let subnets = parse_subnets(tunnel, "static_nat.subnets", &raw.subnets)?;
    let mut nat_v4 = Vec::with_capacity(subnets.len());
    for (i, s) in subnets.iter().enumerate() {
        let field = format!("static_nat.subnets[{i}]");
        let (IpAddr::V4(network), Some(len)) = (s.start(), s.prefix_len()) else {
            return Err(bad(tunnel, field, format!("{s}: static NAT is IPv4 only")));
        };
        if let Some(o) = local_subnets
            .iter()
            .chain(remote_subnets)
            .find(|o| overlaps(s, o))
        {
            return Err(bad(
                tunnel,
                field,
                format!("{s} overlaps protected subnet {o}; a static NAT subnet is an address range of its own"),
            ));
        }
        let v4 = ipsec_nat::Ipv4Subnet::new(network, len)
            .map_err(|e| bad(tunnel, format!("static_nat.subnets[{i}]"), e.to_string()))?;
        nat_v4.push(v4);
    }
    let remote_v4: Vec<ipsec_nat::Ipv4Subnet> = remote_subnets
        .iter()
        .filter_map(|r| match (r.start(), r.prefix_len()) {
            (IpAddr::V4(a), Some(len)) => ipsec_nat::Ipv4Subnet::new(a, len).ok(),
            _ => None,
        })
        .collect();

    let names: Vec<String> = raw.entries.iter().map(|e| e.name.clone()).collect();
    let mut entries = Vec::with_capacity(raw.entries.len());
    for (i, e) in raw.entries.into_iter().enumerate() {
        let addr = |which: &str, text: &str| -> Result<std::net::Ipv4Addr, ConfigError> {
            text.trim().parse().map_err(|_| {
                bad(
                    tunnel,
                    format!("static_nat.entries[{i}].{which}"),
                    format!("{text:?} is not an IPv4 address"),
                )
            })
        };
        let local = addr("local", &e.local)?;
        let remote = addr("remote", &e.remote)?;
        entries.push(ipsec_nat::NatEntry::new(e.name, local, remote));
    }
    let table = ipsec_nat::NatTable::new(entries, &nat_v4, &remote_v4)
        .map_err(|e| bad(tunnel, nat_entry_field(&e, &names), e.to_string()))?;
    Ok(StaticNat {
        subnets,
        table: std::sync::Arc::new(table),
    })
}

/// The field a static NAT table error points at, as written in the file
/// (`static_nat.entries[2].local`); `names` are the entries' names in file order.
fn nat_entry_field(e: &ipsec_nat::TableError, names: &[String]) -> String {
    use ipsec_nat::TableError as E;
    // For errors about a later entry that repeats an earlier one's name, the later one.
    let position = |name: &str| names.iter().rposition(|n| n == name);
    let (index, which) = match e {
        E::EmptyName { index } => (Some(*index), "name"),
        E::DuplicateName { second, .. } => (Some(*second), "name"),
        E::LocalOutsideStaticNatSubnets { name, .. } | E::DuplicateLocal { name, .. } => {
            (position(name), "local")
        }
        E::RemoteOutsideProtectedSubnets { name, .. } | E::DuplicateRemote { name, .. } => {
            (position(name), "remote")
        }
        _ => (None, ""),
    };
    match index {
        Some(i) => format!("static_nat.entries[{i}].{which}"),
        None => "static_nat.entries".to_owned(),
    }
}

/// Names of weak choices in a tunnel, for `check` and a startup warning.
pub(crate) fn weak_choices(t: &Tunnel) -> Vec<String> {
    let mut out = HashSet::new();
    for p in &t.phase1.proposals {
        if p.encryption.is_weak() {
            out.insert(format!("phase 1 cipher {:?}", p.encryption));
        }
        if p.hash == HashAlgorithm::Md5 {
            out.insert("phase 1 hash MD5".to_owned());
        }
        if p.dh_group.is_weak() {
            out.insert(format!("DH group {}", p.dh_group.id()));
        }
    }
    for p in &t.phase2.proposals {
        if p.encryption.is_weak() {
            out.insert(format!("phase 2 cipher {:?}", p.encryption));
        }
        if p.integrity.is_weak() {
            out.insert(format!("phase 2 integrity {:?}", p.integrity));
        }
    }
    if let Some(g) = t.phase2.pfs_group.filter(|g| g.is_weak()) {
        out.insert(format!("PFS group {}", g.id()));
    }
    if t.phase1.mode == Phase1Mode::Aggressive {
        out.insert("aggressive mode with a PSK (the key hash can be attacked offline)".to_owned());
    }
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort();
    v
}

/// A human-readable summary of a validated config (what `check` prints). No key material.
pub(crate) fn describe(cfg: &Config) -> String {
    use std::fmt::Write as _;

    let mut s = String::new();
    let socket = cfg
        .control_socket
        .as_ref()
        .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
    let _ = writeln!(
        s,
        "gateway: tun {} mtu {}, path mtu {}, {} data path thread(s), control socket {socket}",
        cfg.tun_name, cfg.mtu, cfg.path_mtu, cfg.data_path_threads
    );
    if let Some(r) = cfg.retransmit {
        let _ = writeln!(
            s,
            "  ike retransmit: first after {} ms, at most {} ms apart, {} tries",
            r.initial.as_millis(),
            r.max_interval.as_millis(),
            r.tries
        );
    }
    for t in &cfg.tunnels {
        let join = |v: &[TrafficSelector]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "tunnel {}: {} -> {}, initiate {}, {} mode, ids {} -> {}",
            t.name,
            t.local_address,
            t.remote_address,
            t.initiate,
            t.phase1.mode,
            t.phase1.local_id,
            t.phase1.remote_id
        );
        let _ = writeln!(
            s,
            "  subnets {} <-> {}",
            join(&t.local_subnets),
            join(&t.remote_subnets)
        );
        let _ = writeln!(s, "  psk from {}", t.psk);
        for p in &t.phase1.proposals {
            let _ = writeln!(
                s,
                "  phase 1: {} {} group {} lifetime {}s",
                word(&CIPHERS, &p.encryption),
                word(&HASHES, &p.hash),
                p.dh_group.id(),
                t.phase1.lifetime_seconds
            );
        }
        for p in &t.phase2.proposals {
            let pfs = t
                .phase2
                .pfs_group
                .map_or_else(|| "no PFS".to_owned(), |g| format!("PFS group {}", g.id()));
            let volume = t
                .phase2
                .lifetime_kilobytes
                .map_or_else(String::new, |kb| format!(" or {kb} KiB"));
            let _ = writeln!(
                s,
                "  phase 2: {} {} {pfs} lifetime {}s{volume}",
                word(&CIPHERS, &p.encryption),
                word(&INTEGRITY, &p.integrity),
                t.phase2.lifetime_seconds
            );
        }
        match t.dpd {
            Some(d) => {
                let _ = writeln!(
                    s,
                    "  dpd: delay {}s timeout {}s action {}",
                    d.delay_seconds, d.timeout_seconds, d.action
                );
            }
            None => {
                let _ = writeln!(s, "  dpd: off");
            }
        }
        if let Some(nat) = &t.static_nat {
            let _ = writeln!(s, "  static nat subnets: {}", join(&nat.subnets));
            for e in nat.table.entries() {
                let _ = writeln!(s, "  static nat: {} = {} -> {}", e.name, e.local, e.remote);
            }
        }
        for w in weak_choices(t) {
            let _ = writeln!(s, "  warning: weak choice: {w}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../site-to-site.toml");
    const ENV_PSK: &str = r#"psk = { env = "BRANCH_OFFICE_PSK" }"#;

    /// The shipped example with an inline key (tests must not depend on the environment).
    fn example() -> String {
        assert!(EXAMPLE.contains(ENV_PSK));
        EXAMPLE.replace(ENV_PSK, r#"psk = { inline = "example-key-123" }"#)
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    /// A minimal valid tunnel, to be edited by each negative test.
    const MINIMAL: &str = r#"
[[tunnel]]
name = "lab"
local_address = "192.0.2.1"
remote_address = "192.0.2.2"
local_subnets = ["10.1.0.0/24"]
remote_subnets = ["10.2.0.0/24"]
psk = { inline = "k" }
[tunnel.phase1]
encryption = ["aes128"]
authentication = ["sha1"]
dh_group = [14]
lifetime_seconds = 28800
[tunnel.phase2]
encryption = ["aes128"]
authentication = ["sha1"]
pfs_group = 14
lifetime_seconds = 3600
"#;

    fn minimal_with(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from:?} not in MINIMAL");
        MINIMAL.replacen(from, to, 1)
    }

    fn tunnel_error(text: &str) -> (String, String, String) {
        match parse_str(text) {
            Err(ConfigError::Tunnel {
                tunnel,
                field,
                problem,
            }) => (tunnel, field, problem),
            other => panic!("expected a tunnel error, got {other:?}"),
        }
    }

    #[test]
    fn example_file_parses_field_by_field() {
        let cfg = parse_str(&example()).unwrap();
        assert_eq!(cfg.tun_name, "ipgw0");
        assert_eq!(cfg.mtu, 1400);
        assert_eq!(cfg.path_mtu, 1500);
        assert_eq!(
            cfg.control_socket.as_deref(),
            Some(Path::new("/run/ipsec-gateway.sock"))
        );
        let [t] = cfg.tunnels.as_slice() else {
            panic!("one tunnel expected")
        };
        assert_eq!(t.name, "branch-office");
        assert_eq!(t.local_address, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(t.remote_address, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(t.initiate, Initiate::Start);
        assert_eq!(t.local_subnets, vec![parse_cidr("10.1.0.0/24").unwrap()]);
        assert_eq!(t.remote_subnets.len(), 2);
        assert_eq!(t.remote_subnets[1].to_string(), "10.3.0.0/24");
        assert_eq!(t.psk.load().unwrap().expose(), b"example-key-123");
        assert_eq!(t.phase1.mode, Phase1Mode::Main);
        assert_eq!(t.phase1.lifetime_seconds, 28800);
        assert_eq!(
            t.phase1.remote_id,
            Identity::Address("198.51.100.2".parse().unwrap())
        );
        assert_eq!(t.phase2.lifetime_seconds, 3600);
        assert_eq!(t.phase2.pfs_group, Some(DhGroup::Modp2048));
        assert_eq!(t.phase2.lifetime_kilobytes, None);
        assert_eq!(
            t.dpd,
            Some(Dpd {
                delay_seconds: 10,
                timeout_seconds: 30,
                action: DpdAction::Restart
            })
        );
        assert!(t.static_nat.is_none());
        assert!(weak_choices(t).is_empty());
    }

    #[test]
    fn proposals_are_every_combination_in_written_order() {
        let cfg = parse_str(&example()).unwrap();
        let t = &cfg.tunnels[0];
        let p1: Vec<_> = t
            .phase1
            .proposals
            .iter()
            .map(|p| (p.encryption, p.hash, p.dh_group))
            .collect();
        assert_eq!(
            p1,
            vec![
                (
                    EncryptionAlgorithm::AesCbc128,
                    HashAlgorithm::Sha1,
                    DhGroup::Modp2048
                ),
                (
                    EncryptionAlgorithm::AesCbc128,
                    HashAlgorithm::Sha256,
                    DhGroup::Modp2048
                ),
                (
                    EncryptionAlgorithm::AesCbc256,
                    HashAlgorithm::Sha1,
                    DhGroup::Modp2048
                ),
                (
                    EncryptionAlgorithm::AesCbc256,
                    HashAlgorithm::Sha256,
                    DhGroup::Modp2048
                ),
            ]
        );
        assert_eq!(t.phase2.proposals.len(), 4);
        assert_eq!(
            t.phase2.proposals[1],
            Phase2Proposal {
                encryption: EncryptionAlgorithm::AesCbc128,
                integrity: IntegrityAlgorithm::HmacSha256_128,
            }
        );
    }

    #[test]
    fn example_static_nat_block_is_valid_when_uncommented() {
        let text = example()
            .replace("# [tunnel.static_nat]", "[tunnel.static_nat]")
            .replace("# subnets = ", "subnets = ")
            .replace("# entries = ", "entries = ");
        let cfg = parse_str(&text).unwrap();
        let nat = cfg.tunnels[0].static_nat.as_ref().unwrap();
        assert_eq!(nat.subnets[0].to_string(), "10.1.255.88/29");
        let e: Vec<_> = nat.table.entries().collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "web");
        assert_eq!(e[0].local, std::net::Ipv4Addr::new(10, 1, 255, 92));
        assert_eq!(e[0].remote, std::net::Ipv4Addr::new(10, 2, 0, 15));
    }

    #[test]
    fn minimal_tunnel_gets_defaults() {
        let cfg = parse_str(MINIMAL).unwrap();
        assert_eq!(cfg.tun_name, DEFAULT_TUN_NAME);
        assert_eq!(cfg.control_socket, None);
        assert_eq!(cfg.retransmit, None);
        let t = &cfg.tunnels[0];
        assert_eq!(t.initiate, Initiate::Start);
        assert_eq!(t.phase1.mode, Phase1Mode::Main);
        assert_eq!(
            t.phase1.local_id,
            Identity::Address("192.0.2.1".parse().unwrap())
        );
        assert_eq!(t.dpd, None);
    }

    #[test]
    fn pfs_none_and_bad_pfs_values() {
        let cfg = parse_str(&minimal_with("pfs_group = 14", "pfs_group = \"none\"")).unwrap();
        assert_eq!(cfg.tunnels[0].phase2.pfs_group, None);
        let cfg = parse_str(MINIMAL).unwrap();
        assert_eq!(cfg.tunnels[0].phase2.pfs_group, Some(DhGroup::Modp2048));
        let (_, field, problem) =
            tunnel_error(&minimal_with("pfs_group = 14", "pfs_group = \"off\""));
        assert_eq!(field, "phase2.pfs_group");
        assert_eq!(
            problem,
            "\"off\" is not allowed; use a group number or \"none\""
        );
        let (_, field, problem) = tunnel_error(&minimal_with("pfs_group = 14", "pfs_group = 3"));
        assert_eq!(field, "phase2.pfs_group");
        assert!(problem.starts_with("group 3 is not supported"), "{problem}");
    }

    #[test]
    fn rejects_unknown_cipher_naming_tunnel_field_and_choices() {
        let (tunnel, field, problem) = tunnel_error(&minimal_with(
            "encryption = [\"aes128\"]",
            "encryption = [\"aes128\", \"aes999\"]",
        ));
        assert_eq!(tunnel, "lab");
        assert_eq!(field, "phase1.encryption[1]");
        assert_eq!(
            problem,
            "\"aes999\" is not supported; allowed: aes128, aes192, aes256, 3des, des"
        );
    }

    #[test]
    fn rejects_unsupported_dh_group() {
        let (_, field, problem) = tunnel_error(&minimal_with("dh_group = [14]", "dh_group = [19]"));
        assert_eq!(field, "phase1.dh_group[0]");
        assert!(problem.starts_with("group 19 is not supported; allowed: 1, 2, 5, 14"));
    }

    #[test]
    fn rejects_subnet_with_host_bits() {
        let (_, field, problem) = tunnel_error(&minimal_with(
            "local_subnets = [\"10.1.0.0/24\"]",
            "local_subnets = [\"10.1.0.1/24\"]",
        ));
        assert_eq!(field, "local_subnets[0]");
        assert_eq!(
            problem,
            "\"10.1.0.1/24\" has host bits set; the subnet is 10.1.0.0/24"
        );
    }

    #[test]
    fn rejects_overlapping_local_and_remote_subnets() {
        let (_, field, _) = tunnel_error(&minimal_with(
            "remote_subnets = [\"10.2.0.0/24\"]",
            "remote_subnets = [\"10.0.0.0/8\"]",
        ));
        assert_eq!(field, "local_subnets[0]");
    }

    #[test]
    fn rejects_two_psk_sources_and_empty_key() {
        let (_, field, problem) = tunnel_error(&minimal_with(
            "psk = { inline = \"k\" }",
            "psk = { inline = \"k\", env = \"X\" }",
        ));
        assert_eq!(field, "psk");
        assert_eq!(
            problem,
            "give exactly one of psk.inline, psk.file or psk.env"
        );
        let (_, _, problem) = tunnel_error(&minimal_with(
            "psk = { inline = \"k\" }",
            "psk = { inline = \"\" }",
        ));
        assert_eq!(problem, "the pre-shared key is empty");
    }

    #[test]
    fn rejects_unknown_keys_with_line_number() {
        let err = parse_str(&minimal_with(
            "lifetime_seconds = 3600",
            "lifetime_secs = 3600",
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml: "), "{text}");
        assert!(text.contains("unknown field `lifetime_secs`"), "{text}");
        assert!(text.contains("line 18"), "{text}");
    }

    #[test]
    fn rejects_bad_dpd_and_initiate() {
        let text = format!(
            "{MINIMAL}[tunnel.dpd]\ndelay_seconds = 30\ntimeout_seconds = 30\naction = \"clear\"\n"
        );
        let (_, field, _) = tunnel_error(&text);
        assert_eq!(field, "dpd.timeout_seconds");
        let text = text.replace("timeout_seconds = 30", "timeout_seconds = 60");
        assert!(parse_str(&text).is_ok());
        let config = parse_str(&text.replace("\"clear\"", "\"hold\"")).unwrap();
        let dpd = config.tunnels[0].dpd.unwrap();
        assert_eq!(dpd.action, DpdAction::Hold);
        let (_, field, problem) = tunnel_error(&text.replace("\"clear\"", "\"pause\""));
        assert_eq!(field, "dpd.action");
        assert_eq!(
            problem,
            "\"pause\" is not allowed; use none, clear, hold or restart"
        );
        let (_, field, _) = tunnel_error(&minimal_with(
            "name = \"lab\"",
            "name = \"lab\"\ninitiate = \"always\"",
        ));
        assert_eq!(field, "initiate");
    }

    #[test]
    fn rejects_lifetimes_out_of_range() {
        let (_, field, problem) = tunnel_error(&minimal_with(
            "lifetime_seconds = 28800",
            "lifetime_seconds = 8",
        ));
        assert_eq!(field, "phase1.lifetime_seconds");
        assert_eq!(problem, "8 is out of range; allowed 300 to 86400 seconds");
    }

    #[test]
    fn data_path_threads_default_to_one_and_reject_out_of_range() {
        assert_eq!(parse_str(MINIMAL).unwrap().data_path_threads, 1);
        let cfg = parse_str(&format!("[gateway]\ndata_path_threads = 2\n{MINIMAL}")).unwrap();
        assert_eq!(cfg.data_path_threads, 2);
        for bad in [0, 17] {
            match parse_str(&format!("[gateway]\ndata_path_threads = {bad}\n{MINIMAL}")) {
                Err(ConfigError::Gateway { field, problem }) => {
                    assert_eq!(field, "data_path_threads");
                    assert_eq!(problem, format!("{bad} is out of range; allowed 1 to 16"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn path_mtu_defaults_to_1500_and_rejects_out_of_range() {
        assert_eq!(parse_str(MINIMAL).unwrap().path_mtu, 1500);
        let cfg = parse_str(&format!("[gateway]\npath_mtu = 1400\n{MINIMAL}")).unwrap();
        assert_eq!(cfg.path_mtu, 1400);
        match parse_str(&format!("[gateway]\npath_mtu = 500\n{MINIMAL}")) {
            Err(ConfigError::Gateway { field, problem }) => {
                assert_eq!(field, "path_mtu");
                assert_eq!(problem, "500 is out of range; allowed 576 to 9000");
            }
            other => panic!("expected a gateway error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_duplicate_names_and_overlapping_remote_subnets_across_tunnels() {
        let second = MINIMAL.replace("192.0.2.2", "192.0.2.3");
        let (tunnel, field, _) = tunnel_error(&format!("{MINIMAL}{second}"));
        assert_eq!((tunnel.as_str(), field.as_str()), ("lab", "name"));
        let second = second.replace("name = \"lab\"", "name = \"lab2\"");
        let (tunnel, field, _) = tunnel_error(&format!("{MINIMAL}{second}"));
        assert_eq!(
            (tunnel.as_str(), field.as_str()),
            ("lab2", "remote_subnets[0]")
        );
        let second = second.replace("10.2.0.0/24", "10.3.0.0/24");
        assert_eq!(
            parse_str(&format!("{MINIMAL}{second}"))
                .unwrap()
                .tunnels
                .len(),
            2
        );
    }

    #[test]
    fn rejects_bad_tunnel_name_by_index() {
        let (tunnel, field, _) = tunnel_error(&minimal_with("name = \"lab\"", "name = \"a b\""));
        assert_eq!((tunnel.as_str(), field.as_str()), ("#1", "name"));
    }

    #[test]
    fn rejects_mixed_outer_families() {
        let (_, field, _) = tunnel_error(&minimal_with("\"192.0.2.2\"", "\"2001:db8::2\""));
        assert_eq!(field, "remote_address");
    }

    #[test]
    fn rejects_static_nat_overlap_and_entries_outside_their_subnets() {
        let nat = |subnets: &str, local: &str, remote: &str| {
            format!(
                "{MINIMAL}[tunnel.static_nat]\nsubnets = [{subnets:?}]\nentries = [{{ name = \"web\", local = {local:?}, remote = {remote:?} }}]\n"
            )
        };
        assert!(parse_str(&nat("10.9.0.0/29", "10.9.0.4", "10.2.0.15")).is_ok());

        let (_, field, problem) = tunnel_error(&nat("10.1.0.0/29", "10.1.0.4", "10.2.0.15"));
        assert_eq!(field, "static_nat.subnets[0]");
        assert!(
            problem.contains("overlaps protected subnet 10.1.0.0/24"),
            "{problem}"
        );

        let (_, field, problem) = tunnel_error(&nat("10.9.0.0/29", "10.9.0.9", "10.2.0.15"));
        assert_eq!(field, "static_nat.entries[0].local");
        assert!(
            problem.contains("10.9.0.9 lies in no assigned static NAT subnet"),
            "{problem}"
        );

        let (_, _, problem) = tunnel_error(&nat("10.9.0.0/29", "10.9.0.4", "10.3.0.15"));
        assert!(
            problem.contains("10.3.0.15 lies in no remote protected subnet"),
            "{problem}"
        );

        let (_, field, _) = tunnel_error(&nat("10.9.0.0/29", "10.9.0.4", "web"));
        assert_eq!(field, "static_nat.entries[0].remote");
    }

    #[test]
    fn identities_parse_by_form() {
        let id = |s: &str| parse_identity("t", "f", s);
        assert_eq!(
            id("192.0.2.9").unwrap(),
            Identity::Address("192.0.2.9".parse().unwrap())
        );
        assert_eq!(
            id("@vpn.example.com").unwrap(),
            Identity::Fqdn("vpn.example.com".into())
        );
        assert_eq!(
            id("vpn.example.com").unwrap(),
            Identity::Fqdn("vpn.example.com".into())
        );
        assert_eq!(
            id("ops@example.com").unwrap(),
            Identity::UserFqdn("ops@example.com".into())
        );
        assert!(id("bad id!").is_err());
        assert!(id("@").is_err());
    }

    #[test]
    fn psk_file_loses_one_trailing_newline_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.psk");
        std::fs::write(&path, "secret-psk-value\n").unwrap();
        let text = minimal_with(
            "psk = { inline = \"k\" }",
            &format!("psk = {{ file = {:?} }}", path.display().to_string()),
        );
        let cfg = parse_str(&text).unwrap();
        assert_eq!(
            cfg.tunnels[0].psk.load().unwrap().expose(),
            b"secret-psk-value"
        );
        assert!(!format!("{cfg:?}").contains("secret-psk-value"));

        let inline = parse_str(&minimal_with("\"k\"", "\"inline-secret-xyz\"")).unwrap();
        assert!(!format!("{inline:?}").contains("inline-secret-xyz"));
        assert!(!describe(&inline).contains("inline-secret-xyz"));
    }

    #[test]
    fn rejects_missing_psk_file() {
        let (_, field, problem) = tunnel_error(&minimal_with(
            "psk = { inline = \"k\" }",
            "psk = { file = \"/nonexistent/ipgw.psk\" }",
        ));
        assert_eq!(field, "psk");
        assert!(
            problem.starts_with("cannot read PSK file /nonexistent/ipgw.psk"),
            "{problem}"
        );
    }

    #[test]
    fn retransmit_schedule_parses_and_rejects_bad_values() {
        let text = format!(
            "[gateway]\nretransmit = {{ initial_ms = 500, max_interval_ms = 2000, tries = 3 }}\n{MINIMAL}"
        );
        let cfg = parse_str(&text).unwrap();
        assert_eq!(
            cfg.retransmit,
            Some(Retransmit {
                initial: std::time::Duration::from_millis(500),
                max_interval: std::time::Duration::from_millis(2000),
                tries: 3,
            })
        );
        let err = parse_str(&text.replace("max_interval_ms = 2000", "max_interval_ms = 100"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gateway.retransmit.max_interval_ms: 100 is not allowed; from initial_ms (500) to 300000"
        );
        let err = parse_str(&text.replace("tries = 3", "tries = 0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gateway.retransmit.tries: 0 is out of range; allowed 1 to 20"
        );
    }

    #[test]
    fn weak_choices_are_named() {
        let cfg = parse_str(&minimal_with("dh_group = [14]", "dh_group = [2]")).unwrap();
        assert_eq!(weak_choices(&cfg.tunnels[0]), vec!["DH group 2".to_owned()]);
    }

    /// Wrong types name the line (the TOML parser's error) and say what the field takes in
    /// the file's own words, not the name of a Rust type; an empty file says what is
    /// missing.
    #[test]
    fn type_errors_say_what_is_expected_in_the_files_words() {
        let cases = [
            (
                "psk = { inline = \"k\" }",
                "psk = \"k\"",
                "a table with one of inline = \"KEY\", file = \"PATH\" or env = \"VARIABLE\"",
            ),
            (
                "pfs_group = 14",
                "pfs_group = true",
                "a DH group number (1, 2, 5, 14-18, 22-24) or \"none\"",
            ),
        ];
        for (good, bad, expected) in cases {
            let e = parse_str(&minimal_with(good, bad)).unwrap_err().to_string();
            assert!(e.starts_with("test.toml: "), "{e}");
            assert!(e.contains(bad), "the line is quoted: {e}");
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains("Raw"), "{e}");
        }
        assert_eq!(
            parse_str("").unwrap_err().to_string(),
            "no [[tunnel]] defined; at least one is needed"
        );
    }

    /// A configuration with every field set, each one valid.
    const FULL: &str = r#"
[gateway]
tun_name = "ipgw7"
mtu = 1400
path_mtu = 1500
data_path_threads = 1
control_socket = "/run/test.sock"
retransmit = { initial_ms = 500, max_interval_ms = 4000, tries = 3 }

[[tunnel]]
name = "full"
local_address = "192.0.2.1"
remote_address = "192.0.2.2"
initiate = "start"
local_subnets = ["10.1.0.0/24"]
remote_subnets = ["10.2.0.0/24", "192.168.10.0/24"]
psk = { inline = "k" }
[tunnel.phase1]
mode = "main"
encryption = ["aes128"]
authentication = ["sha1"]
dh_group = [14]
lifetime_seconds = 28800
local_id = "192.0.2.1"
remote_id = "192.0.2.2"
[tunnel.phase2]
encryption = ["aes128"]
authentication = ["sha1"]
pfs_group = 14
lifetime_seconds = 3600
lifetime_kilobytes = 4000000
[tunnel.dpd]
delay_seconds = 10
timeout_seconds = 30
action = "restart"
[tunnel.static_nat]
subnets = ["10.1.255.88/29"]
entries = [{ name = "hr", local = "10.1.255.92", remote = "192.168.10.15" }]
"#;

    /// Every field wrong in turn gets an error that names it (and its tunnel), and
    /// nothing of the file is taken: `parse` returns the error, not a partial `Config`.
    #[test]
    fn every_field_wrong_in_turn_is_named() {
        parse_str(FULL).unwrap();
        // (the line as in FULL, a wrong version of it, what the error must start with)
        let cases: &[(&str, &str, &str)] = &[
            ("tun_name = \"ipgw7\"", "tun_name = \"a/b\"", "gateway.tun_name: "),
            ("mtu = 1400", "mtu = 100", "gateway.mtu: "),
            ("path_mtu = 1500", "path_mtu = 99999", "test.toml: "),
            ("path_mtu = 1500", "path_mtu = 100", "gateway.path_mtu: "),
            ("data_path_threads = 1", "data_path_threads = 0", "gateway.data_path_threads: "),
            ("initial_ms = 500", "initial_ms = 0", "gateway.retransmit"),
            ("tries = 3", "tries = 0", "gateway.retransmit"),
            ("name = \"full\"", "name = \"bad name\"", "tunnel \"#1\": name: "),
            ("local_address = \"192.0.2.1\"", "local_address = \"192.0.2\"", "tunnel \"full\": local_address: "),
            ("remote_address = \"192.0.2.2\"", "remote_address = \"x\"", "tunnel \"full\": remote_address: "),
            ("initiate = \"start\"", "initiate = \"now\"", "tunnel \"full\": initiate: "),
            ("local_subnets = [\"10.1.0.0/24\"]", "local_subnets = [\"10.1.0.1/24\"]", "tunnel \"full\": local_subnets[0]: "),
            ("remote_subnets = [\"10.2.0.0/24\", \"192.168.10.0/24\"]", "remote_subnets = []", "tunnel \"full\": remote_subnets: "),
            ("psk = { inline = \"k\" }", "psk = { inline = \"\" }", "tunnel \"full\": psk"),
            ("mode = \"main\"", "mode = \"quick\"", "tunnel \"full\": phase1.mode: "),
            ("encryption = [\"aes128\"]\nauthentication = [\"sha1\"]\ndh_group", "encryption = [\"aes999\"]\nauthentication = [\"sha1\"]\ndh_group", "tunnel \"full\": phase1.encryption[0]: "),
            ("authentication = [\"sha1\"]\ndh_group", "authentication = [\"sha3\"]\ndh_group", "tunnel \"full\": phase1.authentication[0]: "),
            ("dh_group = [14]", "dh_group = [3]", "tunnel \"full\": phase1.dh_group[0]: "),
            ("lifetime_seconds = 28800", "lifetime_seconds = 10", "tunnel \"full\": phase1.lifetime_seconds: "),
            ("local_id = \"192.0.2.1\"", "local_id = \"\"", "tunnel \"full\": phase1.local_id: "),
            ("remote_id = \"192.0.2.2\"", "remote_id = \"\"", "tunnel \"full\": phase1.remote_id: "),
            ("encryption = [\"aes128\"]\nauthentication = [\"sha1\"]\npfs_group", "encryption = [\"rc4\"]\nauthentication = [\"sha1\"]\npfs_group", "tunnel \"full\": phase2.encryption[0]: "),
            ("authentication = [\"sha1\"]\npfs_group", "authentication = [\"crc\"]\npfs_group", "tunnel \"full\": phase2.authentication[0]: "),
            ("pfs_group = 14", "pfs_group = 7", "tunnel \"full\": phase2.pfs_group: "),
            ("pfs_group = 14", "pfs_group = \"maybe\"", "tunnel \"full\": phase2.pfs_group: "),
            ("pfs_group = 14", "pfs_group = 99999", "test.toml: "),
            ("psk = { inline = \"k\" }", "psk = \"k\"", "test.toml: "),
            ("lifetime_seconds = 3600", "lifetime_seconds = 1", "tunnel \"full\": phase2.lifetime_seconds: "),
            ("lifetime_kilobytes = 4000000", "lifetime_kilobytes = 0", "tunnel \"full\": phase2.lifetime_kilobytes: "),
            ("delay_seconds = 10", "delay_seconds = 0", "tunnel \"full\": dpd."),
            ("timeout_seconds = 30", "timeout_seconds = 1", "tunnel \"full\": dpd."),
            ("action = \"restart\"", "action = \"panic\"", "tunnel \"full\": dpd.action: "),
            ("subnets = [\"10.1.255.88/29\"]", "subnets = [\"10.1.255.88/33\"]", "tunnel \"full\": static_nat.subnets[0]: "),
            ("name = \"hr\"", "name = \"\"", "tunnel \"full\": static_nat.entries[0].name: "),
            ("local = \"10.1.255.92\"", "local = \"10.9.9.9\"", "tunnel \"full\": static_nat.entries[0].local: "),
            ("remote = \"192.168.10.15\"", "remote = \"nowhere\"", "tunnel \"full\": static_nat.entries[0].remote: "),
            // A second entry repeating the first one's name, local or remote address.
            ("\"192.168.10.15\" }]", "\"192.168.10.15\" }, { name = \"hr\", local = \"10.1.255.93\", remote = \"192.168.10.16\" }]", "tunnel \"full\": static_nat.entries[1].name: "),
            ("\"192.168.10.15\" }]", "\"192.168.10.15\" }, { name = \"h2\", local = \"10.1.255.92\", remote = \"192.168.10.16\" }]", "tunnel \"full\": static_nat.entries[1].local: "),
            ("\"192.168.10.15\" }]", "\"192.168.10.15\" }, { name = \"h2\", local = \"10.1.255.93\", remote = \"192.168.10.15\" }]", "tunnel \"full\": static_nat.entries[1].remote: "),
        ];
        let mut wrong = Vec::new();
        for (good, bad, expected) in cases {
            assert!(FULL.contains(good), "{good:?} not in FULL");
            let text = FULL.replacen(good, bad, 1);
            match parse_str(&text) {
                Ok(_) => wrong.push(format!("{bad:?} was accepted")),
                Err(e) if !e.to_string().starts_with(expected) => {
                    wrong.push(format!("{bad:?}: {e} (expected {expected:?}...)"));
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
