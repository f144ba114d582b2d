//! The IKE loop: the UDP 500/4500 sockets' IKE traffic, timers, signals and the control
//! socket on one side, the sans-IO [`Endpoint`] (IKE) on the other; it installs and removes
//! the SA pairs the ESP data path ([`crate::datapath`]) uses.
//!
//! Why tokio: the gateway waits on several sockets, a TUN device, timers, signals and a
//! control socket at once. tokio gives all of them (tun-rs has a tokio device,
//! `tokio::signal` handles SIGTERM, `UnixListener` serves `status`) with one `select!` and no
//! hand-written poll set. The [`Endpoint`] is owned by this loop, with no locks; reader tasks
//! only move IKE datagrams into a bounded channel. ESP never passes through this loop: the
//! data path tasks, on the runtime's worker threads, read the TUN device and the sockets in
//! batches and share the data plane with the loop, one mutex per direction
//! ([`crate::datapath::DataShared`]), telling the loop what it must act on (no SA yet,
//! traffic seen, lifetime events) through the same channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use std::sync::Mutex;

use ipsec_sa::child::ChildSaPair;
use ipsec_sa::dataplane::natt as dp_natt;
use ipsec_sa::dataplane::{
    DataPlaneConfig, InboundPlane, OutboundPlane, Policy, PolicyAction, PolicyId,
};
use ipsec_sa::endpoint::{self, Endpoint, EndpointConfig, Event, TunnelId};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng as _};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use crate::config::{self, Config, Initiate, StaticNat};
use crate::datapath::{self, DataShared, InState, Input, OutState, Shared, MAX_PACKET};
use crate::keys::KeyLog;
use crate::net::{self, OuterSockets, NATT_PORT};

/// Depth of the channel from reader tasks to the loop; readers wait when it is full.
const CHANNEL_DEPTH: usize = 1024;
/// First wait before a tunnel with `initiate = "start"` tries again after a failure.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between such retries.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a tunnel started by traffic waits before traffic may start it again.
const ON_TRAFFIC_HOLDOFF: Duration = Duration::from_secs(5);
/// How long SIGTERM waits for Delete messages to leave before exiting.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Runs the gateway until SIGTERM or SIGINT.
///
/// The IKE loop ([`Gateway::run`]) runs on the calling thread (`block_on`), the data path
/// tasks it spawns on the runtime's `data_path_threads` worker threads, so a
/// Diffie-Hellman computation of the loop never holds packets back, and with two or more
/// workers the two directions are sealed and opened on different cores at once.
pub(crate) fn run(config_path: &Path, wireshark_keys: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cfg.data_path_threads))
        .thread_name("ipsec-data")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(cfg, config_path.to_owned(), wireshark_keys))
}

/// Where a tunnel stands, for logs and `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No SA and nothing under way.
    Down,
    /// Phase 1 is being negotiated.
    Connecting,
    /// The ISAKMP SA is up; no ESP SA yet.
    IsakmpUp,
    /// At least one ESP SA pair is installed.
    Up,
}

/// The gateway's view of one configured tunnel.
#[derive(Debug)]
struct TunnelState {
    cfg: config::Tunnel,
    id: TunnelId,
    phase: Phase,
    since: Instant,
    /// Installed pairs as (inbound SPI, outbound SPI).
    pairs: Vec<(u32, u32)>,
    /// The ISAKMP endpoints once phase 1 is up, and whether a NAT was detected.
    ike_path: Option<(SocketAddr, SocketAddr, bool)>,
    /// When to initiate again, for `initiate = "start"` after a failure.
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// For `initiate = "on-traffic"`: no new start before this time.
    holdoff_until: Option<Instant>,
    /// DPD declared the peer dead: no automatic restart or retry until a pair is installed
    /// again (the endpoint itself restarts when the DPD action is "restart"; "clear" means
    /// wait for the peer, as strongSwan's dpd_action=clear does; "hold" waits for traffic).
    dead_peer_hold: bool,
    last_error: Option<String>,
}

impl TunnelState {
    fn set_phase(&mut self, phase: Phase, now: Instant) {
        if self.phase != phase {
            info!(tunnel = %self.cfg.name, from = ?self.phase, to = ?phase, "tunnel state changed");
            self.phase = phase;
            self.since = now;
        }
    }
}

/// Everything the loop owns.
struct Gateway {
    endpoint: Endpoint,
    /// The data plane and what the data path tasks share with the loop.
    data: Shared,
    sockets: HashMap<IpAddr, OuterSockets>,
    tun: Arc<tun_rs::AsyncDevice>,
    tun_name: String,
    tunnels: Vec<TunnelState>,
    by_id: HashMap<TunnelId, usize>,
    by_policy: HashMap<PolicyId, usize>,
    keys: Option<KeyLog>,
    started: Instant,
    /// Set on SIGTERM: no more retries.
    stopping: bool,
    /// The file SIGHUP reloads.
    config_path: PathBuf,
    /// The `[gateway]` section the gateway started with.
    settings: GatewaySettings,
}

async fn run_async(
    cfg: Config,
    config_path: PathBuf,
    wireshark_keys: Option<PathBuf>,
) -> anyhow::Result<()> {
    let keys = match &wireshark_keys {
        Some(dir) => {
            warn!(dir = %dir.display(), "writing ESP and IKE keys for Wireshark: debugging only");
            Some(KeyLog::new(dir).with_context(|| format!("creating {}", dir.display()))?)
        }
        None => None,
    };
    let mut gw = Gateway::new(&cfg, keys, Instant::now())?;
    gw.config_path = config_path;

    let (tx, rx) = mpsc::channel::<Input>(CHANNEL_DEPTH);
    gw.spawn_readers(&tx);
    drop(tx);
    let status_rx = match &cfg.control_socket {
        Some(path) => Some(start_control(path)?),
        None => None,
    };
    let sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    info!(tunnels = gw.tunnels.len(), "ipsec-gateway running");

    for i in 0..gw.tunnels.len() {
        if gw
            .tunnels
            .get(i)
            .is_some_and(|t| t.cfg.initiate == Initiate::Start)
        {
            gw.initiate(i, Instant::now());
        }
    }
    let signals = Signals {
        term: sigterm,
        int: sigint,
        hup: sighup,
    };
    let signal_name = gw.run(rx, status_rx, signals).await?;

    info!("{signal_name}: deleting SAs and shutting down");
    gw.shutdown().await;
    if let Some(path) = &cfg.control_socket {
        let _ = std::fs::remove_file(path);
    }
    info!("ipsec-gateway stopped");
    Ok(())
}

/// The signals the loop acts on.
struct Signals {
    /// SIGTERM: delete every SA and exit.
    term: tokio::signal::unix::Signal,
    /// SIGINT: as SIGTERM.
    int: tokio::signal::unix::Signal,
    /// SIGHUP: reload the configuration ([`Gateway::reload`]).
    hup: tokio::signal::unix::Signal,
}

/// The `[gateway]` settings that are read only at startup, to tell on SIGHUP whether they
/// changed.
#[derive(Debug, PartialEq, Eq)]
struct GatewaySettings {
    tun_name: String,
    mtu: u16,
    path_mtu: u16,
    data_path_threads: u16,
    control_socket: Option<PathBuf>,
    retransmit: Option<config::Retransmit>,
}

impl GatewaySettings {
    fn of(cfg: &Config) -> Self {
        Self {
            tun_name: cfg.tun_name.clone(),
            mtu: cfg.mtu,
            path_mtu: cfg.path_mtu,
            data_path_threads: cfg.data_path_threads,
            control_socket: cfg.control_socket.clone(),
            retransmit: cfg.retransmit,
        }
    }
}

/// Binds the control socket and serves it; returns the channel of status requests.
fn start_control(path: &Path) -> anyhow::Result<mpsc::Receiver<oneshot::Sender<String>>> {
    let (status_tx, status_rx) = mpsc::channel::<oneshot::Sender<String>>(8);
    let listener = crate::control::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    tokio::spawn(crate::control::serve(listener, status_tx));
    info!(socket = %path.display(), "control socket ready");
    Ok(status_rx)
}

impl Gateway {
    /// Sets everything up: the endpoint with one tunnel per configured one, a PROTECT
    /// policy per subnet pair, the outer sockets, the TUN device and its routes.
    fn new(cfg: &Config, keys: Option<KeyLog>, now: Instant) -> anyhow::Result<Self> {
        let mut endpoint_config = EndpointConfig::default();
        if let Some(r) = cfg.retransmit {
            endpoint_config.retransmit = endpoint::RetransmitConfig {
                initial: r.initial,
                max_interval: r.max_interval,
                max_tries: r.tries,
            };
        }
        let mut endpoint = Endpoint::new(endpoint_config, Box::new(OsRng));
        let dp_config = DataPlaneConfig {
            default_path_mtu: Some(usize::from(cfg.path_mtu)),
            ..DataPlaneConfig::default()
        };
        let mut outbound = OutboundPlane::new(dp_config);

        let mut tunnels = Vec::with_capacity(cfg.tunnels.len());
        let mut by_id = HashMap::new();
        let mut by_policy = HashMap::new();
        for (index, t) in cfg.tunnels.iter().enumerate() {
            let tc =
                to_endpoint_config(t).map_err(|e| anyhow::anyhow!("tunnel {:?}: {e}", t.name))?;
            let id = endpoint
                .add_tunnel(tc)
                .with_context(|| format!("tunnel {:?} refused by the IKE endpoint", t.name))?;
            for local in &t.local_subnets {
                for remote in &t.remote_subnets {
                    let p = outbound.add_policy(Policy {
                        local: *local,
                        remote: *remote,
                        action: PolicyAction::Protect,
                        priority: 100,
                    });
                    by_policy.insert(p, index);
                }
            }
            for w in config::weak_choices(t) {
                warn!(tunnel = %t.name, "weak choice configured: {w}");
            }
            by_id.insert(id, index);
            tunnels.push(TunnelState {
                cfg: t.clone(),
                id,
                phase: Phase::Down,
                since: now,
                pairs: Vec::new(),
                ike_path: None,
                retry_at: None,
                retry_delay: RETRY_FIRST,
                holdoff_until: None,
                dead_peer_hold: false,
                last_error: None,
            });
        }

        // Outer sockets, one set per distinct local address.
        let mut sockets = HashMap::new();
        for t in &cfg.tunnels {
            if let std::collections::hash_map::Entry::Vacant(slot) = sockets.entry(t.local_address)
            {
                slot.insert(OuterSockets::bind(t.local_address)?);
            }
        }

        // The TUN device and the routes into it (they vanish with the device on exit).
        let tun = Arc::new(net::create_tun(&cfg.tun_name, cfg.mtu)?);
        for t in &cfg.tunnels {
            let src = net::host_address_in(&t.local_subnets);
            let routed: Vec<String> = routed_subnets(t).map(ToString::to_string).collect();
            for r in routed_subnets(t) {
                net::add_route(&cfg.tun_name, r, src)?;
            }
            info!(tunnel = %t.name, tun = %cfg.tun_name, subnets = ?routed, source = ?src,
                "routes installed");
        }

        let rng = ChaCha20Rng::from_rng(OsRng).context("seeding the IV generator")?;
        let static_nat: Vec<_> = tunnels.iter().map(|t| t.cfg.static_nat.clone()).collect();
        let data = DataShared {
            out: Mutex::new(OutState {
                plane: outbound,
                rng,
                static_nat: static_nat.clone(),
            }),
            inb: Mutex::new(InState {
                plane: InboundPlane::new(dp_config),
                esp_peers: HashMap::new(),
                static_nat,
                by_policy: by_policy.clone(),
            }),
        };
        Ok(Self {
            endpoint,
            data: Arc::new(data),
            sockets,
            tun,
            tun_name: cfg.tun_name.clone(),
            tunnels,
            by_id,
            by_policy,
            keys,
            started: now,
            stopping: false,
            config_path: PathBuf::new(),
            settings: GatewaySettings::of(cfg),
        })
    }

    /// One IKE reader per UDP 500 socket, the data path tasks (one inbound task per UDP
    /// 4500 and raw ESP socket, one outbound task for the TUN device), all feeding `tx`.
    fn spawn_readers(&self, tx: &mpsc::Sender<Input>) {
        for s in self.sockets.values() {
            tokio::spawn(read_ike(Arc::clone(&s.ike), s.addr, tx.clone()));
            tokio::spawn(datapath::inbound_udp(
                Arc::clone(&s.natt),
                s.addr,
                Arc::clone(&self.tun),
                Arc::clone(&self.data),
                tx.clone(),
            ));
            if let Some(esp) = &s.esp {
                tokio::spawn(datapath::inbound_raw(
                    Arc::clone(esp),
                    Arc::clone(&self.tun),
                    Arc::clone(&self.data),
                    tx.clone(),
                ));
            }
        }
        tokio::spawn(datapath::outbound(
            Arc::clone(&self.tun),
            Arc::clone(&self.data),
            self.sockets.clone(),
            tx.clone(),
        ));
    }

    /// The event loop, until a signal; returns the signal's name.
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Input>,
        mut status_rx: Option<mpsc::Receiver<oneshot::Sender<String>>>,
        mut signals: Signals,
    ) -> anyhow::Result<&'static str> {
        loop {
            self.drain().await;
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            let status_request = async {
                match &mut status_rx {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signals.term.recv() => return Ok("SIGTERM"),
                _ = signals.int.recv() => return Ok("SIGINT"),
                _ = signals.hup.recv() => self.reload(),
                input = rx.recv() => match input {
                    Some(input) => self.handle_input(input),
                    None => bail!("every reader task has stopped"),
                },
                Some(reply) = status_request => {
                    let _ = reply.send(self.status(Instant::now()));
                }
                () = tokio::time::sleep_until(deadline) => self.handle_timeout(Instant::now()),
            }
        }
    }

    /// SIGTERM: Delete for every SA (RFC 2408 section 3.15), a moment for the datagrams to
    /// leave, then the routes.
    async fn shutdown(&mut self) {
        self.stopping = true;
        self.endpoint.shutdown(Instant::now());
        self.drain().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        for t in &self.tunnels {
            for r in routed_subnets(&t.cfg) {
                net::remove_route(&self.tun_name, r);
            }
        }
    }

    /// Starts (or restarts) negotiation for tunnel `index`.
    fn initiate(&mut self, index: usize, now: Instant) {
        let Some(t) = self.tunnels.get_mut(index) else {
            return;
        };
        t.retry_at = None;
        match self.endpoint.initiate(t.id, now) {
            Ok(()) => {
                if t.phase == Phase::Down {
                    t.set_phase(Phase::Connecting, now);
                }
                info!(tunnel = %t.cfg.name, remote = %t.cfg.remote_address, "initiating");
            }
            Err(e) => {
                warn!(tunnel = %t.cfg.name, "cannot initiate: {e}");
                t.last_error = Some(e.to_string());
            }
        }
    }

    /// Sends what the endpoint queued and acts on its events, until both queues are empty
    /// (handling an event can queue datagrams, e.g. a new Quick Mode). Bounded: a few
    /// rounds always suffice; the cap only guards against a bug. (The data plane's events
    /// come from the data path tasks as [`Input::Lifetime`].)
    async fn drain(&mut self) {
        let now = Instant::now();
        for _ in 0..64 {
            let mut busy = false;
            while let Some(t) = self.endpoint.poll_transmit() {
                self.send_ike(t).await;
                busy = true;
            }
            while let Some(e) = self.endpoint.poll_event() {
                self.handle_event(e, now);
                busy = true;
            }
            if !busy {
                return;
            }
        }
        warn!("endpoint kept producing output for 64 rounds; continuing later");
    }

    async fn send_ike(&mut self, t: endpoint::Transmit) {
        let Some(s) = self.sockets.get(&t.local.ip()) else {
            warn!(local = %t.local, "no socket for IKE source address; datagram dropped");
            return;
        };
        let socket = if t.local.port() == NATT_PORT {
            &s.natt
        } else {
            &s.ike
        };
        let result = if t.non_esp_marker {
            let mut framed = Vec::with_capacity(t.payload.len() + 4);
            framed.extend_from_slice(&dp_natt::NON_ESP_MARKER);
            framed.extend_from_slice(&t.payload);
            socket.send_to(&framed, t.remote).await
        } else {
            socket.send_to(&t.payload, t.remote).await
        };
        match result {
            Ok(_) => {
                trace!(local = %t.local, remote = %t.remote, len = t.payload.len(), "IKE sent");
            }
            Err(e) => warn!(remote = %t.remote, "sending IKE failed: {e}"),
        }
    }

    fn handle_event(&mut self, event: Event, now: Instant) {
        let tunnel_of = |id: &TunnelId| self.by_id.get(id).copied();
        match event {
            Event::Phase1Established {
                tunnel,
                local,
                remote,
                nat_detected,
                initiator_cookie,
                responder_cookie,
            } => {
                let Some(i) = tunnel_of(&tunnel) else { return };
                if let Some(keys) = &self.keys {
                    if let Some((cky_i, ka)) = self.endpoint.phase1_encryption_key(tunnel) {
                        if let Err(e) = keys.ike_sa(&cky_i, ka.expose()) {
                            warn!("writing Wireshark IKE keys: {e}");
                        }
                    }
                }
                let Some(t) = self.tunnels.get_mut(i) else {
                    return;
                };
                info!(tunnel = %t.cfg.name, %local, %remote, nat_detected,
                    cky_i = %hex::encode(initiator_cookie), cky_r = %hex::encode(responder_cookie),
                    "phase 1 established");
                t.ike_path = Some((local, remote, nat_detected));
                if t.phase != Phase::Up {
                    t.set_phase(Phase::IsakmpUp, now);
                }
            }
            Event::ChildSaEstablished { tunnel, pair } => {
                let Some(i) = tunnel_of(&tunnel) else { return };
                self.install(i, &pair, now);
            }
            Event::ChildSaDeleted {
                tunnel,
                inbound_spi,
                outbound_spi,
            } => {
                let removed = self.data.remove_pair(inbound_spi);
                let Some(i) = tunnel_of(&tunnel) else { return };
                let Some(t) = self.tunnels.get_mut(i) else {
                    return;
                };
                t.pairs.retain(|&(spi, _)| spi != inbound_spi);
                info!(tunnel = %t.cfg.name, inbound_spi = format_args!("{inbound_spi:#010x}"),
                    outbound_spi = format_args!("{outbound_spi:#010x}"), removed, "ESP SA pair deleted");
                let mut restart = false;
                if t.pairs.is_empty() {
                    let next = if t.ike_path.is_some() {
                        Phase::IsakmpUp
                    } else {
                        Phase::Down
                    };
                    t.set_phase(next, now);
                    // The peer deleted the last pair (expiry on its side, or an operator):
                    // a tunnel that should always be up negotiates a new one at once.
                    restart =
                        t.cfg.initiate == Initiate::Start && !self.stopping && !t.dead_peer_hold;
                }
                if restart {
                    info!(tunnel = %t.cfg.name, "no ESP SA left: negotiating a new pair");
                    self.initiate(i, now);
                }
            }
            Event::Phase1Deleted { tunnel } => {
                let Some(i) = tunnel_of(&tunnel) else { return };
                let Some(t) = self.tunnels.get_mut(i) else {
                    return;
                };
                info!(tunnel = %t.cfg.name, "phase 1 SA deleted");
                t.ike_path = None;
                if t.pairs.is_empty() {
                    t.set_phase(Phase::Down, now);
                    if !self.stopping {
                        schedule_retry(t, now);
                    }
                }
            }
            Event::Failed { tunnel, reason } => {
                let Some(i) = tunnel_of(&tunnel) else { return };
                let Some(t) = self.tunnels.get_mut(i) else {
                    return;
                };
                warn!(tunnel = %t.cfg.name, "negotiation failed: {reason}");
                t.last_error = Some(reason.to_string());
                if t.phase == Phase::Connecting {
                    t.set_phase(Phase::Down, now);
                }
                // Main Mode or Quick Mode failed and nothing carries traffic: try again
                // later (a Quick Mode again on the ISAKMP SA if that is still up).
                if t.pairs.is_empty() && !self.stopping {
                    schedule_retry(t, now);
                }
            }
            Event::PeerDead { tunnel } => {
                let Some(i) = tunnel_of(&tunnel) else { return };
                let Some(t) = self.tunnels.get_mut(i) else {
                    return;
                };
                warn!(tunnel = %t.cfg.name, "dead peer detection: peer declared dead");
                t.last_error = Some("peer declared dead by DPD".into());
                // "restart": the endpoint starts again, and our retries back it up.
                t.dead_peer_hold = t
                    .cfg
                    .dpd
                    .is_some_and(|d| d.action != config::DpdAction::Restart);
            }
            other => debug!(event = ?other, "endpoint event not handled by the gateway"),
        }
    }

    /// Installs a pair in the data plane (ChildSaEstablished).
    fn install(&mut self, index: usize, pair: &ChildSaPair, now: Instant) {
        let Some(t) = self.tunnels.get_mut(index) else {
            return;
        };
        // A fresh IV generator for each new pair (see `OutState::rng`).
        let reseed = ChaCha20Rng::from_rng(OsRng)
            .inspect_err(|e| warn!("IV generator not reseeded, keeping the current one: {e}"))
            .ok();
        match self.data.install(pair, reseed) {
            Ok(policy) => {
                info!(tunnel = %t.cfg.name, %policy,
                    inbound_spi = format_args!("{:#010x}", pair.inbound.spi),
                    outbound_spi = format_args!("{:#010x}", pair.outbound.spi),
                    encryption = ?pair.outbound.encryption, integrity = ?pair.outbound.integrity,
                    encapsulation = ?pair.encapsulation, local_ts = %pair.local_ts,
                    remote_ts = %pair.remote_ts, remote = %pair.remote, "ESP SA pair established");
                t.pairs.push((pair.inbound.spi, pair.outbound.spi));
                t.retry_delay = RETRY_FIRST;
                t.last_error = None;
                t.dead_peer_hold = false;
                t.set_phase(Phase::Up, now);
                if let Some(keys) = &self.keys {
                    if let Err(e) = keys.child_sa(pair) {
                        warn!("writing Wireshark ESP keys: {e}");
                    }
                }
            }
            Err(e) => {
                warn!(tunnel = %t.cfg.name, "negotiated ESP SA pair not installed: {e}");
                t.last_error = Some(e.to_string());
            }
        }
    }

    /// The data plane's traffic limits (kilobytes, sequence numbers) go to the endpoint,
    /// which negotiates a replacement at the soft limit and deletes the pair (here and at
    /// the peer) at the hard one.
    fn handle_dataplane_event(&mut self, event: ipsec_sa::dataplane::Event, now: Instant) {
        use ipsec_sa::dataplane::Event as Dp;
        match event {
            Dp::SoftLifetime {
                inbound_spi, limit, ..
            } => {
                info!(
                    inbound_spi = format_args!("{inbound_spi:#010x}"),
                    ?limit,
                    "ESP SA near its traffic limit: negotiating a replacement"
                );
                self.endpoint.soft_lifetime_reached(inbound_spi, now);
            }
            Dp::HardLifetime {
                inbound_spi, limit, ..
            } => {
                warn!(
                    inbound_spi = format_args!("{inbound_spi:#010x}"),
                    ?limit,
                    "ESP SA reached its hard traffic limit: deleting it"
                );
                self.endpoint.hard_lifetime_reached(inbound_spi, now);
            }
        }
    }

    fn handle_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Ike {
                local,
                remote,
                data,
            } => self.endpoint.handle_datagram(now, local, remote, &data),
            Input::NoOutboundSa(policy) => self.on_traffic(policy, now),
            Input::TrafficSeen(spi) => self.endpoint.traffic_seen(spi, now),
            Input::Lifetime(event) => self.handle_dataplane_event(event, now),
        }
    }

    /// SIGHUP: reads the configuration file again and applies what can change while
    /// tunnels stay up: each tunnel's static NAT (entries and subnets; the table is
    /// swapped and the counters of unchanged entries carry over, and routes follow the
    /// subnets). Every other change is reported at warn with what needs a restart; an
    /// invalid file changes nothing.
    fn reload(&mut self) {
        let cfg = match config::load(&self.config_path) {
            Ok(cfg) => cfg,
            Err(e) => {
                warn!("SIGHUP: configuration not reloaded, the running one stays: {e}");
                return;
            }
        };
        info!(path = %self.config_path.display(), "SIGHUP: reloading the configuration");
        if GatewaySettings::of(&cfg) != self.settings {
            warn!("SIGHUP: the [gateway] section changed; it applies only after a restart");
        }
        for old in &self.tunnels {
            if !cfg.tunnels.iter().any(|n| n.name == old.cfg.name) {
                warn!(tunnel = %old.cfg.name,
                    "SIGHUP: tunnel removed from the configuration keeps running until a restart");
            }
        }
        for new in &cfg.tunnels {
            let Some(t) = self.tunnels.iter_mut().find(|t| t.cfg.name == new.name) else {
                warn!(tunnel = %new.name, "SIGHUP: new tunnel not started: adding a tunnel needs a restart");
                continue;
            };
            let changed = restart_needed(&t.cfg, new);
            if !changed.is_empty() {
                warn!(tunnel = %new.name, "SIGHUP: changed settings need a restart to apply: {}",
                    changed.join(", "));
            }
            if same_static_nat(t.cfg.static_nat.as_deref(), new.static_nat.as_deref()) {
                continue;
            }
            if let (Some(old), Some(next)) =
                (t.cfg.static_nat.as_deref(), new.static_nat.as_deref())
            {
                next.table.carry_counters_from(&old.table);
            }
            let old_subnets = nat_subnets(t.cfg.static_nat.as_deref());
            let new_subnets = nat_subnets(new.static_nat.as_deref());
            for gone in old_subnets.iter().filter(|s| !new_subnets.contains(s)) {
                net::remove_route(&self.tun_name, gone);
            }
            let src = net::host_address_in(&t.cfg.local_subnets);
            for added in new_subnets.iter().filter(|s| !old_subnets.contains(s)) {
                if let Err(e) = net::add_route(&self.tun_name, added, src) {
                    warn!(tunnel = %new.name, subnet = %added, "SIGHUP: route for a static NAT subnet not added: {e:#}");
                }
            }
            t.cfg.static_nat = new.static_nat.clone();
            if let Some(i) = self.by_id.get(&t.id) {
                self.data.set_static_nat(*i, new.static_nat.as_ref());
            }
            info!(tunnel = %new.name,
                entries = new.static_nat.as_deref().map_or(0, |n| n.table.entries().len()),
                "SIGHUP: static NAT table replaced; SAs unchanged");
        }
    }

    /// A packet found its policy without an SA: start the tunnel if it starts on traffic.
    fn on_traffic(&mut self, policy: PolicyId, now: Instant) {
        let Some(&i) = self.by_policy.get(&policy) else {
            return;
        };
        let Some(t) = self.tunnels.get_mut(i) else {
            return;
        };
        let idle = t.phase == Phase::Down || t.phase == Phase::IsakmpUp;
        let held = t.holdoff_until.is_some_and(|h| now < h);
        // DPD action "hold" (RFC 3706 leaves the action to policy): after the peer was
        // declared dead, traffic brings the tunnel back as it does for "on-traffic".
        let on_demand = t.cfg.initiate == Initiate::OnTraffic
            || (t.dead_peer_hold
                && t.cfg
                    .dpd
                    .is_some_and(|d| d.action == config::DpdAction::Hold));
        if on_demand && idle && !held {
            t.holdoff_until = Some(now + ON_TRAFFIC_HOLDOFF);
            info!(tunnel = %t.cfg.name, "traffic for the tunnel: initiating");
            self.initiate(i, now);
        }
    }

    /// Timers: the endpoint's (retransmissions, DPD, rekeying, NAT-keepalives, expiry)
    /// and our retries of tunnels that should always be up.
    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        let due: Vec<usize> = self
            .tunnels
            .iter()
            .enumerate()
            .filter(|(_, t)| t.retry_at.is_some_and(|r| now >= r))
            .map(|(i, _)| i)
            .collect();
        for i in due {
            self.initiate(i, now);
        }
    }

    /// The earliest of the endpoint's timers and our retries (an hour away if none).
    fn next_deadline(&self) -> Instant {
        let retries = self.tunnels.iter().filter_map(|t| t.retry_at);
        self.endpoint
            .poll_timeout()
            .into_iter()
            .chain(retries)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// The text `ipsec-gateway status` prints.
    fn status(&self, now: Instant) -> String {
        use std::fmt::Write as _;

        let mut s = String::new();
        let _ = writeln!(
            s,
            "ipsec-gateway: up {}s, {} tunnel(s), TUN {}",
            now.duration_since(self.started).as_secs(),
            self.tunnels.len(),
            self.tun_name
        );
        for t in &self.tunnels {
            let _ = writeln!(
                s,
                "tunnel {}: {} ({}s), {} -> {}, initiate {}",
                t.cfg.name,
                phase_name(t.phase),
                now.duration_since(t.since).as_secs(),
                t.cfg.local_address,
                t.cfg.remote_address,
                t.cfg.initiate
            );
            match self.endpoint.tunnel_state(t.id) {
                endpoint::TunnelState::Idle => {
                    let _ = writeln!(s, "  ike: no ISAKMP SA");
                }
                endpoint::TunnelState::Phase1InProgress => {
                    let _ = writeln!(s, "  ike: main mode in progress");
                }
                endpoint::TunnelState::Phase1Up {
                    child_sas,
                    quick_modes_in_progress,
                } => {
                    let (local, remote, nat) = t.ike_path.map_or_else(
                        || ("?".to_owned(), "?".to_owned(), false),
                        |(l, r, n)| (l.to_string(), r.to_string(), n),
                    );
                    let _ = writeln!(
                        s,
                        "  ike: established, {local} <-> {remote}, nat-t {}, {child_sas} child SA(s), {quick_modes_in_progress} quick mode(s) running",
                        if nat { "yes" } else { "no" }
                    );
                }
                other => {
                    let _ = writeln!(s, "  ike: {other:?}");
                }
            }
            for &(inbound, _) in &t.pairs {
                if let Some(p) = self.data.pair_stats(inbound) {
                    let _ = writeln!(
                        s,
                        "  esp: in {:#010x} out {:#010x}, {:?}, {} <-> {}",
                        p.inbound_spi, p.outbound_spi, p.encapsulation, p.local_ts, p.remote_ts
                    );
                    let _ = writeln!(
                        s,
                        "       in {} packets {} bytes, out {} packets {} bytes, {} dropped",
                        p.inbound.packets,
                        p.inbound.bytes,
                        p.outbound.packets,
                        p.outbound.bytes,
                        p.drops.total()
                    );
                }
            }
            if let Some(nat) = t.cfg.static_nat.as_deref() {
                for e in nat.table.entries() {
                    let c = nat.table.counters_by_name(&e.name).unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "  static nat {}: {} -> {}, out {} packets, in {} packets",
                        e.name, e.local, e.remote, c.outbound_packets, c.inbound_packets
                    );
                }
            }
            if let Some(e) = &t.last_error {
                let _ = writeln!(s, "  last error: {e}");
            }
        }
        let drops: Vec<String> = self
            .data
            .drops()
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        if !drops.is_empty() {
            let _ = writeln!(s, "drops: {}", drops.join(", "));
        }
        s
    }
}

/// The subnets routed into the TUN device for a tunnel: the remote protected subnets and
/// the static NAT subnets (whose addresses stand for remote hosts).
fn routed_subnets(
    t: &config::Tunnel,
) -> impl Iterator<Item = &ipsec_sa::selector::TrafficSelector> {
    let nat = t
        .static_nat
        .as_deref()
        .map(|n| n.subnets.as_slice())
        .unwrap_or_default();
    t.remote_subnets.iter().chain(nat)
}

/// A tunnel's static NAT subnets.
fn nat_subnets(nat: Option<&StaticNat>) -> Vec<ipsec_sa::selector::TrafficSelector> {
    nat.map(|n| n.subnets.clone()).unwrap_or_default()
}

/// Whether two static NAT settings have the same subnets and the same entries.
fn same_static_nat(a: Option<&StaticNat>, b: Option<&StaticNat>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.subnets == b.subnets && a.table.entries().eq(b.table.entries()),
        _ => false,
    }
}

/// The settings of a tunnel that changed from `old` to `new` and that the running gateway
/// cannot apply (they are the IKE endpoint's and the data plane's configuration, fixed when
/// the tunnel was added): their names, for the SIGHUP warning.
fn restart_needed(old: &config::Tunnel, new: &config::Tunnel) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |same: bool, name| {
        if !same {
            out.push(name);
        }
    };
    check(old.local_address == new.local_address, "local_address");
    check(old.remote_address == new.remote_address, "remote_address");
    check(old.initiate == new.initiate, "initiate");
    check(old.local_subnets == new.local_subnets, "local_subnets");
    check(old.remote_subnets == new.remote_subnets, "remote_subnets");
    check(same_psk_source(&old.psk, &new.psk), "psk");
    check(old.phase1 == new.phase1, "phase1");
    check(old.phase2 == new.phase2, "phase2");
    check(old.dpd == new.dpd, "dpd");
    out
}

/// Whether two PSK sources are the same; inline keys are compared in constant time.
fn same_psk_source(a: &config::PskSource, b: &config::PskSource) -> bool {
    use config::PskSource::{Env, File, Inline};
    use subtle::ConstantTimeEq as _;
    match (a, b) {
        (Inline(a), Inline(b)) => bool::from(a.expose().ct_eq(b.expose())),
        (File(a), File(b)) => a == b,
        (Env(a), Env(b)) => a == b,
        _ => false,
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Down => "down",
        Phase::Connecting => "connecting",
        Phase::IsakmpUp => "phase1-up",
        Phase::Up => "up",
    }
}

/// After a failure, a tunnel that should always be up tries again with back-off.
fn schedule_retry(t: &mut TunnelState, now: Instant) {
    if t.cfg.initiate == Initiate::Start && t.retry_at.is_none() && !t.dead_peer_hold {
        t.retry_at = Some(now + t.retry_delay);
        info!(tunnel = %t.cfg.name, delay_s = t.retry_delay.as_secs(), "will initiate again");
        t.retry_delay = (t.retry_delay * 2).min(RETRY_MAX);
    }
}

/// Translates a validated tunnel into the endpoint's configuration (loads the PSK).
pub(crate) fn to_endpoint_config(t: &config::Tunnel) -> Result<endpoint::TunnelConfig, String> {
    use config::{DpdAction, Identity, Phase1Mode};

    let psk = t.psk.load()?;
    let ike_local = SocketAddr::new(t.local_address, net::IKE_PORT);
    let ike_remote = SocketAddr::new(t.remote_address, net::IKE_PORT);
    let (Some(&local_ts), Some(&remote_ts)) = (t.local_subnets.first(), t.remote_subnets.first())
    else {
        return Err("local_subnets and remote_subnets must not be empty".into());
    };
    let mut tc =
        endpoint::TunnelConfig::new(&t.name, ike_local, ike_remote, psk, local_ts, remote_ts);

    tc.phase1.mode = match t.phase1.mode {
        Phase1Mode::Main => endpoint::Phase1Mode::Main,
        Phase1Mode::Aggressive => endpoint::Phase1Mode::Aggressive,
    };
    tc.phase1.proposals = t
        .phase1
        .proposals
        .iter()
        .map(|p| endpoint::Phase1Proposal {
            encryption: p.encryption,
            hash: p.hash,
            group: p.dh_group,
        })
        .collect();
    let id = |i: &Identity| match i {
        Identity::Address(a) => endpoint::Identity::Address(*a),
        Identity::Fqdn(n) => endpoint::Identity::Fqdn(n.clone()),
        Identity::UserFqdn(n) => endpoint::Identity::UserFqdn(n.clone()),
    };
    tc.phase1.local_id = Some(id(&t.phase1.local_id));
    tc.phase1.remote_id = Some(id(&t.phase1.remote_id));
    tc.phase1.lifetime = Duration::from_secs(t.phase1.lifetime_seconds);

    tc.phase2.proposals = t
        .phase2
        .proposals
        .iter()
        .map(|p| endpoint::Phase2Proposal {
            encryption: p.encryption,
            integrity: p.integrity,
        })
        .collect();
    tc.phase2.pfs_group = t.phase2.pfs_group;
    tc.phase2.lifetime = Duration::from_secs(t.phase2.lifetime_seconds);
    tc.phase2.lifetime_kilobytes = t.phase2.lifetime_kilobytes;

    // Every configured subnet: the endpoint negotiates one ESP pair per local x remote pair.
    tc.local_ts = t.local_subnets.clone();
    tc.remote_ts = t.remote_subnets.clone();
    tc.dpd = t.dpd.and_then(|d| {
        let action = match d.action {
            DpdAction::None => return None,
            // "hold" is the gateway's policy on top of the endpoint's "clear": the SAs go,
            // and the next packet for the tunnel starts it again (see `on_traffic`).
            DpdAction::Clear | DpdAction::Hold => endpoint::DpdAction::Clear,
            DpdAction::Restart => endpoint::DpdAction::Restart,
        };
        Some(endpoint::DpdConfig {
            delay: Duration::from_secs(d.delay_seconds),
            timeout: Duration::from_secs(d.timeout_seconds),
            action,
        })
    });
    Ok(tc)
}

// ------------------------------------------------------------------ readers --

/// The reader of one UDP 500 socket: IKE only (ESP never uses port 500).
async fn read_ike(socket: Arc<tokio::net::UdpSocket>, addr: IpAddr, tx: mpsc::Sender<Input>) {
    let local = SocketAddr::new(addr, net::IKE_PORT);
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, remote)) => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                let input = Input::Ike {
                    local,
                    remote,
                    data,
                };
                if tx.send(input).await.is_err() {
                    return;
                }
            }
            Err(e) => datapath::recv_error("UDP 500", &e).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsec_crypto::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm};

    const TUNNEL: &str = r#"
[[tunnel]]
name = "lab"
local_address = "192.0.2.1"
remote_address = "192.0.2.2"
local_subnets = ["10.1.0.0/24"]
remote_subnets = ["10.2.0.0/24", "10.3.0.0/24"]
psk = { inline = "lab-key" }
[tunnel.phase1]
encryption = ["aes256", "aes128"]
authentication = ["sha256"]
dh_group = [14, 15]
lifetime_seconds = 3600
remote_id = "@peer.example"
[tunnel.phase2]
encryption = ["aes128"]
authentication = ["sha1", "sha256"]
pfs_group = 15
lifetime_seconds = 1200
[tunnel.dpd]
delay_seconds = 5
timeout_seconds = 20
action = "clear"
[tunnel.static_nat]
subnets = ["10.1.255.88/29"]
entries = [{ name = "web", local = "10.1.255.92", remote = "10.2.0.15" }]
"#;

    fn tunnel(text: &str) -> config::Tunnel {
        let cfg = config::parse(text, Path::new("t.toml")).unwrap();
        cfg.tunnels.into_iter().next().unwrap()
    }

    #[test]
    fn endpoint_config_carries_every_setting() {
        let tc = to_endpoint_config(&tunnel(TUNNEL)).unwrap();
        assert_eq!(tc.name, "lab");
        assert_eq!(tc.local_addr, "192.0.2.1:500".parse().unwrap());
        assert_eq!(tc.remote_addr, "192.0.2.2:500".parse().unwrap());
        assert_eq!(tc.psk.expose(), b"lab-key");
        assert_eq!(tc.phase1.proposals.len(), 4);
        assert_eq!(
            tc.phase1.proposals[1],
            endpoint::Phase1Proposal {
                encryption: EncryptionAlgorithm::AesCbc256,
                hash: HashAlgorithm::Sha256,
                group: DhGroup::Modp3072,
            }
        );
        assert_eq!(
            tc.phase1.local_id,
            Some(endpoint::Identity::Address("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            tc.phase1.remote_id,
            Some(endpoint::Identity::Fqdn("peer.example".into()))
        );
        assert_eq!(tc.phase1.lifetime, Duration::from_secs(3600));
        assert_eq!(
            tc.phase2.proposals,
            vec![
                endpoint::Phase2Proposal {
                    encryption: EncryptionAlgorithm::AesCbc128,
                    integrity: IntegrityAlgorithm::HmacSha1_96
                },
                endpoint::Phase2Proposal {
                    encryption: EncryptionAlgorithm::AesCbc128,
                    integrity: IntegrityAlgorithm::HmacSha256_128
                },
            ]
        );
        assert_eq!(tc.phase2.pfs_group, Some(DhGroup::Modp3072));
        assert_eq!(tc.phase2.lifetime, Duration::from_secs(1200));
        assert_eq!(tc.local_ts.len(), 1);
        assert_eq!(tc.remote_ts.len(), 2);
        assert_eq!(
            tc.dpd,
            Some(endpoint::DpdConfig {
                delay: Duration::from_secs(5),
                timeout: Duration::from_secs(20),
                action: endpoint::DpdAction::Clear,
            })
        );
        assert!(tc.nat_traversal);
    }

    #[test]
    fn dpd_action_none_only_answers_probes() {
        let tc = to_endpoint_config(&tunnel(&TUNNEL.replace("\"clear\"", "\"none\""))).unwrap();
        assert_eq!(tc.dpd, None);
    }

    #[test]
    fn aggressive_mode_is_passed_on() {
        let text = TUNNEL.replace(
            "[tunnel.phase1]\n",
            "[tunnel.phase1]\nmode = \"aggressive\"\n",
        );
        let tc = to_endpoint_config(&tunnel(&text)).unwrap();
        assert_eq!(tc.phase1.mode, endpoint::Phase1Mode::Aggressive);
        let tc = to_endpoint_config(&tunnel(TUNNEL)).unwrap();
        assert_eq!(tc.phase1.mode, endpoint::Phase1Mode::Main);
    }

    #[test]
    fn phase2_kilobyte_lifetime_is_proposed() {
        let text = TUNNEL.replace(
            "lifetime_seconds = 1200\n",
            "lifetime_seconds = 1200\nlifetime_kilobytes = 102400\n",
        );
        let tc = to_endpoint_config(&tunnel(&text)).unwrap();
        assert_eq!(tc.phase2.lifetime_kilobytes, Some(102_400));
        let tc = to_endpoint_config(&tunnel(TUNNEL)).unwrap();
        assert_eq!(tc.phase2.lifetime_kilobytes, None);
    }

    #[test]
    fn routes_cover_remote_and_static_nat_subnets() {
        let t = tunnel(TUNNEL);
        let routed: Vec<String> = routed_subnets(&t).map(ToString::to_string).collect();
        assert_eq!(routed, vec!["10.2.0.0/24", "10.3.0.0/24", "10.1.255.88/29"]);
    }

    #[test]
    fn reload_names_settings_that_need_a_restart() {
        let old = tunnel(TUNNEL);
        assert!(restart_needed(&old, &tunnel(TUNNEL)).is_empty());
        let changed = TUNNEL
            .replace("pfs_group = 15", "pfs_group = 14")
            .replace("delay_seconds = 5", "delay_seconds = 6")
            .replace("\"lab-key\"", "\"other-key\"");
        assert_eq!(
            restart_needed(&old, &tunnel(&changed)),
            vec!["psk", "phase2", "dpd"]
        );
        // A static NAT change alone needs no restart, and is seen as a change.
        let nat_changed = TUNNEL.replace("local = \"10.1.255.92\"", "local = \"10.1.255.93\"");
        let new = tunnel(&nat_changed);
        assert!(restart_needed(&old, &new).is_empty());
        assert!(!same_static_nat(
            old.static_nat.as_deref(),
            new.static_nat.as_deref()
        ));
        assert!(same_static_nat(
            old.static_nat.as_deref(),
            tunnel(TUNNEL).static_nat.as_deref()
        ));
        assert!(!same_static_nat(old.static_nat.as_deref(), None));
    }
}
