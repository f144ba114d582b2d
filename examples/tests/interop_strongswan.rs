//! End to end: `ipsec-gateway` against a real strongSwan (charon with kernel-libipsec), in
//! network namespaces built by `scripts/lab.sh`:
//!
//! ```text
//! hl 10.1.0.10 -- [ours: ipsec-gateway] 192.0.2.1 == 192.0.2.2 [sw: charon] -- 10.2.0.10 hr
//! ```
//!
//! IKEv1 Main Mode with a PSK, AES-128/SHA1/MODP-2048, Quick Mode with PFS group 14; charon's
//! libipsec forces NAT-T, so IKE floats to UDP 4500 and ESP travels in UDP. Each case checks
//! a ping both ways between the hosts, what strongSwan reports about the SAs, our `status`,
//! and that SIGTERM makes the gateway delete its SAs and exit cleanly.
//!
//! Needs root, `ip netns`, strongSwan and ping (`scripts/install-deps.sh`), so the cases are
//! ignored by a plain `cargo test`; `scripts/test.sh` runs them.

#[cfg(test)]
mod common;

#[cfg(test)]
mod lab {
    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::common::{run, status_at, text, tshark_fields, wait_for, Lab, LAB_SH};

    /// The phase 1 exchange.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Mode {
        Main,
        Aggressive,
    }

    /// Who starts the negotiation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Initiator {
        Gateway,
        StrongSwan,
    }

    /// Static NAT (10.1.255.92 stands for hr's 10.2.0.10) and `--wireshark-keys`: hl pings
    /// the NAT address; tshark decrypts ESP and Quick Mode with the files the gateway wrote,
    /// and the decrypted packets carry the translated address.
    pub(crate) fn static_nat_and_wireshark_keys() {
        // The example of the static NAT issue: 10.1.255.92, from our assigned static NAT
        // subnet 10.1.255.88/29, stands for the remote customer address 192.168.10.15 (hr's
        // second address, in a second network that strongSwan protects).
        let mut lab = Lab::up_with("n", &[("LAB_SW_SUBNETS", "10.2.0.0/24,192.168.10.0/24")]);
        let pcap = lab.capture("NS_OURS", "wan0");
        let keys = lab.dir().join("keys");
        let nat = "\n[tunnel.static_nat]\nsubnets = [\"10.1.255.88/29\"]\n\
                   entries = [{ name = \"hr\", local = \"10.1.255.92\", remote = \"192.168.10.15\" }]\n";
        let keys_arg = keys.display().to_string();
        lab.start_gateway("start", nat, &["--wireshark-keys", &keys_arg]);
        // One ESP pair per remote network.
        let up = wait_for(Duration::from_secs(30), || {
            lab.list_sas().matches("INSTALLED").count() >= 2
        });
        assert!(
            up,
            "two CHILD_SAs not installed on strongSwan within 30 s:\n{}",
            lab.list_sas()
        );

        // hl reaches hr through the address of our static NAT subnet, and the replies come
        // back from that address.
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "3", "-W", "2", "10.1.255.92"]);
        let out = text(&ping.stdout);
        assert!(
            ping.status.success(),
            "ping hl -> 10.1.255.92 failed:\n{out}"
        );
        assert!(out.contains("bytes from 10.1.255.92"), "{out}");
        let status = text(&lab.status().stdout);
        assert!(
            status.contains(
                "static nat hr: 10.1.255.92 -> 192.168.10.15, out 3 packets, in 3 packets"
            ),
            "{status}"
        );

        // An address without a NAT entry passes unchanged: hr's own 10.2.0.10 answers as
        // itself, and the entry's counters do not move.
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "2", "-W", "2", "10.2.0.10"]);
        let out = text(&ping.stdout);
        assert!(ping.status.success(), "ping hl -> 10.2.0.10 failed:\n{out}");
        assert!(out.contains("bytes from 10.2.0.10"), "{out}");
        let status = text(&lab.status().stdout);
        assert!(
            status.contains(
                "static nat hr: 10.1.255.92 -> 192.168.10.15, out 3 packets, in 3 packets"
            ),
            "{status}"
        );
        lab.stop_captures();

        // The key files: two ESP SAs, one ISAKMP SA.
        let esp_sa = std::fs::read_to_string(keys.join("esp_sa")).unwrap();
        let ike = std::fs::read_to_string(keys.join("ikev1_decryption_table")).unwrap();
        assert_eq!(esp_sa.lines().count(), 4, "two ESP pairs: {esp_sa}");
        assert_eq!(ike.lines().count(), 1, "{ike}");

        // tshark decrypts the ESP with them: 3 requests to the real 192.168.10.15 and 3
        // replies, then the 2 untranslated echoes to 10.2.0.10 and their replies.
        let mut options = vec!["esp.enable_encryption_decode:TRUE".to_owned()];
        options.extend(esp_sa.lines().map(|l| format!("uat:esp_sa:{l}")));
        let inner = tshark_fields(&pcap, &options, "esp && icmp", "ip.dst");
        let to_customer = inner
            .iter()
            .filter(|d| d.ends_with("192.168.10.15"))
            .count();
        let to_hr = inner.iter().filter(|d| d.ends_with("10.2.0.10")).count();
        let to_hl = inner.iter().filter(|d| d.ends_with("10.1.0.10")).count();
        assert_eq!(
            (to_customer, to_hr, to_hl),
            (3, 2, 5),
            "decrypted inner destinations: {inner:?}"
        );

        // And the Quick Mode with the ISAKMP key: both of its SA payloads (QM1 and QM2).
        let mut options = Vec::new();
        options.extend(
            ike.lines()
                .map(|l| format!("uat:ikev1_decryption_table:{l}")),
        );
        let qm_sa = tshark_fields(
            &pcap,
            &options,
            "isakmp.exchangetype == 32 && isakmp.sa.doi == 1",
            "isakmp.sa.doi",
        );
        assert!(
            qm_sa.len() >= 2,
            "Quick Mode not decrypted with the written Ka: {qm_sa:?}"
        );
    }

    /// `initiate = "on-traffic"`: nothing is negotiated until hl sends to hr; the first
    /// packet starts Main Mode and the following ones go through.
    pub(crate) fn on_traffic() {
        let mut lab = Lab::up("t");
        lab.start_gateway("on-traffic", "", &[]);
        assert!(
            lab.gateway_ready(),
            "the gateway did not come up within 10 s"
        );

        // Idle: no SA anywhere after two seconds.
        std::thread::sleep(Duration::from_secs(2));
        assert!(!lab.list_sas().contains("lab: #"), "{}", lab.list_sas());
        let status = text(&lab.status().stdout);
        assert!(status.contains("tunnel lab: down"), "{status}");

        // The first echo request starts the tunnel (and is dropped); later ones arrive.
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "4", "-W", "2", "10.2.0.10"]);
        let out = text(&ping.stdout);
        assert!(ping.status.success(), "ping hl -> hr failed:\n{out}");
        assert!(out.contains("icmp_seq=4"), "{out}");
        assert!(
            lab.list_sas().contains("INSTALLED, TUNNEL-in-UDP"),
            "{}",
            lab.list_sas()
        );
        let status = text(&lab.status().stdout);
        assert!(status.contains("tunnel lab: up"), "{status}");
    }

    /// A wrong pre-shared key: strongSwan cannot decrypt our MM5 and drops it, so nothing
    /// is installed on either side, and after its retransmissions the gateway reports that
    /// the peer never answered MM5 (the symptom of a PSK mismatch in Main Mode), and keeps
    /// running to try again.
    pub(crate) fn wrong_psk() {
        let mut lab = Lab::up("w");
        // The inline key overrides nothing else; the config is otherwise the lab's.
        let config =
            run(Command::new(LAB_SH).args(["gateway-config", lab.var("LAB_DIR"), "start"]));
        let good = text(&config.stdout);
        let psk_line = good
            .lines()
            .find(|l| l.starts_with("psk = "))
            .unwrap_or_else(|| panic!("no psk line in {good}"))
            .to_owned();
        lab.start_gateway_with(
            &good.replace(&psk_line, "psk = { inline = \"not-the-lab-key\" }"),
            &[],
        );

        // The lab config resends after 0.5, 1 and 2 s, then gives up: about 5.5 s.
        let failed = wait_for(Duration::from_secs(20), || {
            text(&lab.status().stdout).contains("last error: no answer from peer: waited for MM6")
        });
        let status = text(&lab.status().stdout);
        assert!(failed, "no MM6 timeout reported within 20 s:\n{status}");
        assert!(!status.contains("tunnel lab: up"), "{status}");
        assert!(!lab.list_sas().contains("INSTALLED"), "{}", lab.list_sas());
        let charon = std::fs::read_to_string(lab.var("CHARON_LOG")).unwrap_or_default();
        assert!(
            !charon.contains("IKE_SA lab[1] established"),
            "strongSwan accepted a wrong key"
        );
    }

    /// Pings from hl every second, 14 times, across CHILD_SA changes; returns how many
    /// were answered, and the gateway log.
    fn ping_across_rekeys(lab: &Lab) -> (usize, String, String) {
        // -W 3: a reply may be late (a debug build computes the PFS exchange of a rekey on
        // the loop's thread, slowly under load); what counts is that none is lost.
        let ping = lab.in_ns(
            "NS_HL",
            &["ping", "-c", "14", "-i", "1", "-W", "3", "10.2.0.10"],
        );
        let out = text(&ping.stdout);
        let answered = out
            .lines()
            .filter(|l| l.contains("bytes from 10.2.0.10"))
            .count();
        let log = std::fs::read_to_string(lab.gateway_log()).unwrap_or_default();
        (answered, log, out)
    }

    /// Starts the gateway with the lab config, its phase 2 lifetime set to `seconds`.
    fn start_gateway_with_lifetime(lab: &mut Lab, initiate: &str, seconds: u32) {
        let out = run(Command::new(LAB_SH).args(["gateway-config", lab.var("LAB_DIR"), initiate]));
        let config = text(&out.stdout);
        assert!(config.contains("lifetime_seconds = 3600"), "{config}");
        let config = config.replace(
            "lifetime_seconds = 3600",
            &format!("lifetime_seconds = {seconds}"),
        );
        lab.start_gateway_with(&config, &[]);
    }

    /// Rekeying as deployments set it up, compressed: `initiator` starts the tunnel and
    /// replaces each ESP SA pair well before it expires. strongSwan rekeys at 6 s of a 12 s
    /// life; we rekey at 90 % of a 6 s lifetime while strongSwan would only at 6 s. So one
    /// side starts each replacement and the old pair is still valid meanwhile: a ping every
    /// second across two rekeys loses nothing, and the gateway installs each new pair and
    /// removes the old one when it is deleted. (When both sides' timers fire within the
    /// same moment under heavy load, a ping can be lost: the lifetimes here avoid that race.)
    pub(crate) fn rekey(initiator: Initiator) {
        let case = if initiator == Initiator::Gateway {
            "k"
        } else {
            "r"
        };
        let mut lab = Lab::up_with(
            case,
            &[
                ("LAB_CHILD_REKEY_TIME", "6s"),
                ("LAB_CHILD_LIFE_TIME", "12s"),
            ],
        );
        match initiator {
            Initiator::Gateway => start_gateway_with_lifetime(&mut lab, "start", 6),
            Initiator::StrongSwan => start_gateway_with_lifetime(&mut lab, "wait", 12),
        }
        assert!(
            lab.gateway_ready(),
            "the gateway did not come up within 10 s"
        );
        if initiator == Initiator::StrongSwan {
            lab.swan_initiate("20").unwrap();
        }
        let up = wait_for(Duration::from_secs(20), || {
            lab.list_sas().contains("INSTALLED")
        });
        assert!(
            up,
            "no CHILD_SA installed on strongSwan within 20 s:\n{}",
            lab.list_sas()
        );

        let (answered, log, out) = ping_across_rekeys(&lab);
        assert_eq!(answered, 14, "pings lost across rekeys:\n{out}");
        let established = log
            .matches("ipsec_gateway::gateway: ESP SA pair established")
            .count();
        let deleted = log
            .matches("ipsec_gateway::gateway: ESP SA pair deleted")
            .count();
        assert!(
            established >= 3,
            "expected the first pair and two rekeys, saw {established}"
        );
        assert!(deleted >= 1, "no old pair was deleted after a rekey");
        if initiator == Initiator::Gateway {
            assert!(
                log.contains("ESP SA pair nears its lifetime"),
                "we did not rekey"
            );
        }
        let status = text(&lab.status().stdout);
        assert!(status.contains("tunnel lab: up"), "{status}");
    }

    /// We negotiated the CHILD_SA; strongSwan, as Quick Mode responder with a 6 s lifetime
    /// of its own, does not rekey but deletes the pair when it expires. The gateway then
    /// negotiates a new pair on the same ISAKMP SA at once: at most the ping in flight at
    /// that moment is lost, twice.
    pub(crate) fn peer_expiry_renegotiated() {
        let mut lab = Lab::up_with("e", &[("LAB_CHILD_REKEY_TIME", "6s")]);
        lab.start_gateway("start", "", &[]);
        let up = wait_for(Duration::from_secs(20), || {
            lab.list_sas().contains("INSTALLED")
        });
        assert!(
            up,
            "no CHILD_SA installed on strongSwan within 20 s:\n{}",
            lab.list_sas()
        );

        let (answered, log, out) = ping_across_rekeys(&lab);
        assert!(
            answered >= 12,
            "only {answered} of 14 pings answered across peer expiries:\n{out}"
        );
        assert!(
            log.contains("no ESP SA left: negotiating a new pair"),
            "no renegotiation"
        );
        let established = log
            .matches("ipsec_gateway::gateway: ESP SA pair established")
            .count();
        assert!(
            established >= 3,
            "expected the first pair and two new ones, saw {established}"
        );
        let status = text(&lab.status().stdout);
        assert!(status.contains("tunnel lab: up"), "{status}");
    }

    /// Dead peer detection (RFC 3706) with a 2 s delay and 6 s timeout: charon is killed
    /// (SIGKILL, so it sends no Delete); the gateway's R-U-THERE probes go unanswered, it
    /// declares the peer dead, clears the SAs and says so in `status`.
    pub(crate) fn dead_peer() {
        let mut lab = Lab::up("d");
        let out = run(Command::new(LAB_SH).args(["gateway-config", lab.var("LAB_DIR"), "start"]));
        let config = text(&out.stdout);
        let dpd = "delay_seconds = 10\ntimeout_seconds = 30\naction = \"restart\"";
        assert!(config.contains(dpd), "{config}");
        let config = config.replace(
            dpd,
            "delay_seconds = 2\ntimeout_seconds = 6\naction = \"clear\"",
        );
        lab.start_gateway_with(&config, &[]);
        let up = wait_for(Duration::from_secs(20), || {
            lab.list_sas().contains("INSTALLED")
        });
        assert!(
            up,
            "no CHILD_SA installed on strongSwan within 20 s:\n{}",
            lab.list_sas()
        );
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "1", "-W", "2", "10.2.0.10"]);
        assert!(ping.status.success(), "{}", text(&ping.stdout));

        let charon = lab.var("CHARON_PID").to_owned();
        let killed = run(Command::new("kill").args(["-KILL", &charon]));
        assert!(killed.status.success(), "could not kill charon {charon}");
        let started = Instant::now();
        let dead = wait_for(Duration::from_secs(20), || {
            text(&lab.status().stdout).contains("last error: peer declared dead by DPD")
        });
        let status = text(&lab.status().stdout);
        assert!(
            dead,
            "the gateway did not declare the peer dead within 20 s:\n{status}"
        );
        // Idle 2 s, then probes for 6 s: dead after about 8 s, not before the timeout.
        assert!(
            started.elapsed() >= Duration::from_secs(5),
            "declared dead too early"
        );
        assert!(status.contains("tunnel lab: down"), "{status}");
        assert!(status.contains("ike: no ISAKMP SA"), "{status}");
        let log = std::fs::read_to_string(lab.gateway_log()).unwrap_or_default();
        assert!(
            log.contains("ESP SA pair deleted"),
            "the ESP SAs were not cleared"
        );
    }

    /// Two ipsec-gateways, no strongSwan: ours initiates, a mirror-image gateway in the sw
    /// namespace answers. With no NAT between them NAT-T does not float, so ESP travels as
    /// IP protocol 50 over the raw sockets; pings go both ways and the capture shows ESP
    /// outside UDP only.
    pub(crate) fn two_gateways_raw_esp() {
        let mut lab = Lab::up_with("2", &[("LAB_NO_CHARON", "1")]);
        let out = run(Command::new(LAB_SH).args(["gateway-config", lab.var("LAB_DIR"), "start"]));
        let ours = text(&out.stdout);
        // The peer's config: addresses, subnets and socket swapped, and it only answers.
        let peer = ours
            .replace("192.0.2.1", "@A@")
            .replace("192.0.2.2", "192.0.2.1")
            .replace("@A@", "192.0.2.2")
            .replace("10.1.0.0/24", "@L@")
            .replace("10.2.0.0/24", "10.1.0.0/24")
            .replace("@L@", "10.2.0.0/24")
            .replace("ipsec-gateway.sock", "peer-gateway.sock")
            .replace("initiate = \"start\"", "initiate = \"wait\"");
        let peer_config = lab.dir().join("peer.toml");
        std::fs::write(&peer_config, peer).unwrap();
        let peer_child = lab.spawn_gateway("NS_SW", &peer_config, &lab.dir().join("peer.log"), &[]);
        lab.extra_children.push(peer_child);
        let peer_socket = lab.dir().join("peer-gateway.sock");
        let peer_status = || status_at(&peer_socket);
        let ready = wait_for(Duration::from_secs(10), || peer_status().status.success());
        assert!(ready, "the peer gateway did not come up within 10 s");

        let pcap = lab.capture("NS_OURS", "wan0");
        lab.start_gateway_with(&ours, &[]);
        let up = wait_for(Duration::from_secs(20), || {
            text(&lab.status().stdout).contains("tunnel lab: up")
        });
        assert!(
            up,
            "tunnel not up within 20 s:\n{}",
            text(&lab.status().stdout)
        );

        for (ns, dst) in [("NS_HL", "10.2.0.10"), ("NS_HR", "10.1.0.10")] {
            let ping = lab.in_ns(ns, &["ping", "-c", "3", "-W", "2", dst]);
            assert!(
                ping.status.success(),
                "ping to {dst}:\n{}",
                text(&ping.stdout)
            );
        }
        lab.stop_captures();

        let status = text(&lab.status().stdout);
        assert!(status.contains("nat-t no"), "{status}");
        assert!(
            status.contains("esp: in ") && status.contains(", Tunnel, 10.1.0.0/24 <-> 10.2.0.0/24"),
            "{status}"
        );
        let peer = text(&peer_status().stdout);
        assert!(peer.contains("tunnel lab: up"), "{peer}");
        assert!(
            peer.contains("Tunnel, 10.2.0.0/24 <-> 10.1.0.0/24"),
            "{peer}"
        );

        let raw = tshark_fields(&pcap, &[], "esp && !udp", "esp.spi");
        let in_udp = tshark_fields(&pcap, &[], "udp.port == 4500", "frame.number");
        assert!(
            raw.len() >= 12,
            "expected 12 ESP packets over IP, saw {}",
            raw.len()
        );
        assert!(
            in_udp.is_empty(),
            "unexpected UDP 4500 traffic: {} packets",
            in_udp.len()
        );
    }

    /// strongSwan accepts only AES-256/SHA2-256 for ESP while we offer AES-128/SHA1: Main
    /// Mode completes, each Quick Mode gets NO-PROPOSAL-CHOSEN, `status` says so in words,
    /// and the gateway tries again with growing delays (2 s, then 4 s).
    pub(crate) fn esp_proposal_mismatch() {
        let mut lab = Lab::up_with("p", &[("LAB_ESP_PROPOSALS", "aes256-sha256-modp2048")]);
        lab.start_gateway("start", "", &[]);
        let backing_off = wait_for(Duration::from_secs(15), || {
            std::fs::read_to_string(lab.gateway_log())
                .is_ok_and(|l| l.contains("will initiate again tunnel=lab delay_s=4"))
        });
        assert!(
            backing_off,
            "no second retry with a longer delay within 15 s"
        );
        let status = text(&lab.status().stdout);
        assert!(status.contains("tunnel lab: phase1-up"), "{status}");
        assert!(
            status.contains(
                "last error: peer reported NO-PROPOSAL-CHOSEN (14): none of our proposals is acceptable to the peer"
            ),
            "{status}"
        );
        assert!(!lab.list_sas().contains("INSTALLED"), "{}", lab.list_sas());
    }

    /// Receives one TCP stream on `ip:port` and prints its length and SHA-256 (python3:
    /// present on Debian 12, see scripts/install-deps.sh). Every socket call has a timeout.
    const TCP_SINK: &str = "import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(120)
print('listening', flush=True)
c, _ = s.accept()
c.settimeout(120)
h = hashlib.sha256()
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d)
    n += len(d)
print(n, h.hexdigest(), flush=True)
";

    /// Sends the file `argv[3]` over one TCP connection to `argv[1]:argv[2]`.
    const TCP_SOURCE: &str = "import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=120)
c.sendall(open(sys.argv[3], 'rb').read())
c.shutdown(socket.SHUT_WR)
c.settimeout(120)
c.recv(1)
";

    /// Sends `file` over TCP from a host in `client_ns` to `server_ip` (a host in
    /// `server_ns`) through the tunnel; returns what the receiver counted: "LEN SHA256".
    fn tcp_transfer(
        lab: &mut Lab,
        server_ns: &str,
        server_ip: &str,
        client_ns: &str,
        file: &Path,
    ) -> String {
        let out_path = lab.dir().join(format!("sink-{server_ns}.out"));
        let sink = Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.var(server_ns),
                "python3",
                "-c",
                TCP_SINK,
            ])
            .args([server_ip, "5001"])
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(lab.dir().join(format!("sink-{server_ns}.err"))).unwrap())
            .spawn()
            .unwrap();
        lab.extra_children.push(sink);
        let listening = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&out_path).is_ok_and(|t| t.contains("listening"))
        });
        assert!(listening, "the TCP receiver in {server_ns} did not start");

        let started = Instant::now();
        let client = lab.in_ns(
            client_ns,
            &[
                "timeout",
                "180",
                "python3",
                "-c",
                TCP_SOURCE,
                server_ip,
                "5001",
                &file.display().to_string(),
            ],
        );
        assert!(
            client.status.success(),
            "TCP sender in {client_ns} failed: {}",
            text(&client.stderr)
        );
        let mut result = String::new();
        let done = wait_for(Duration::from_secs(60), || {
            result = std::fs::read_to_string(&out_path)
                .unwrap_or_default()
                .lines()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            !result.is_empty()
        });
        assert!(done, "the TCP receiver in {server_ns} printed no result");
        eprintln!(
            "{client_ns} -> {server_ip}: {result} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        result
    }

    /// A file of `len` random bytes in the lab directory and its "LEN SHA256" line.
    fn random_file(lab: &Lab, len: usize) -> (PathBuf, String) {
        let mut data = vec![0u8; len];
        let mut urandom = File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut urandom, &mut data).unwrap();
        let path = lab.dir().join("random.bin");
        std::fs::write(&path, &data).unwrap();
        let sum = run(Command::new("sha256sum").arg(&path));
        let hash = text(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(hash.len(), 64, "sha256sum: {}", text(&sum.stderr));
        (path, format!("{len} {hash}"))
    }

    /// Bulk TCP through the tunnel, both ways, with the SHA-256 of 4 MiB of random data
    /// compared at the receiver. `strong`: the whole run with AES-256 / SHA-256 / MODP-2048
    /// and PFS (phase 1 and 2) instead of the default AES-128 / SHA-1, and strongSwan must
    /// report those algorithms.
    pub(crate) fn bulk_transfer(strong: bool) {
        let suite = "aes256-sha256-modp2048";
        let env: &[(&str, &str)] = if strong {
            &[("LAB_IKE_PROPOSALS", suite), ("LAB_ESP_PROPOSALS", suite)]
        } else {
            &[]
        };
        let mut lab = Lab::up_with(if strong { "t256" } else { "t" }, env);
        let out = run(Command::new(LAB_SH).args(["gateway-config", lab.var("LAB_DIR"), "start"]));
        let mut toml = text(&out.stdout);
        if strong {
            toml = toml
                .replace("encryption = [\"aes128\"]", "encryption = [\"aes256\"]")
                .replace(
                    "authentication = [\"sha1\"]",
                    "authentication = [\"sha256\"]",
                );
            assert_eq!(toml.matches("\"aes256\"").count(), 2, "{toml}");
            assert_eq!(toml.matches("\"sha256\"").count(), 2, "{toml}");
        }
        lab.start_gateway_with(&toml, &[]);
        let up = wait_for(Duration::from_secs(30), || {
            lab.list_sas().contains("INSTALLED")
        });
        assert!(up, "no CHILD_SA within 30 s:\n{}", lab.list_sas());

        let sas = lab.list_sas();
        if strong {
            assert!(
                sas.contains("AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"),
                "{sas}"
            );
            assert!(
                sas.contains("ESP:AES_CBC-256/HMAC_SHA2_256_128/MODP_2048"),
                "{sas}"
            );
        } else {
            assert!(
                sas.contains("ESP:AES_CBC-128/HMAC_SHA1_96/MODP_2048"),
                "{sas}"
            );
        }
        let (file, expected) = random_file(&lab, 4 << 20);
        let got = tcp_transfer(&mut lab, "NS_HR", "10.2.0.10", "NS_HL", &file);
        assert_eq!(
            got, expected,
            "hl -> hr: what arrived differs from what was sent"
        );
        let got = tcp_transfer(&mut lab, "NS_HL", "10.1.0.10", "NS_HR", &file);
        assert_eq!(
            got, expected,
            "hr -> hl: what arrived differs from what was sent"
        );

        // Both directions went through our ESP SA: 8 MiB in total were counted.
        let status = text(&lab.status().stdout);
        let bytes: Vec<u64> = status
            .lines()
            .find(|l| l.trim_start().starts_with("in ") && l.contains(" packets "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.trim_end_matches(',').parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // "in P packets B bytes, out P packets B bytes, D dropped"
        assert!(
            bytes.len() == 5 && bytes[1] > 4 << 20 && bytes[3] > 4 << 20,
            "{status}"
        );
        if strong {
            assert!(status.contains("tunnel lab: up"), "{status}");
        }
    }

    /// Packets that reach the gateway but lie outside the tunnel's selectors do not enter
    /// the tunnel: hl sends from an address outside local_subnets (10.5.0.10) to hr. The
    /// route puts them into the TUN device, but no policy covers them: the data plane counts
    /// them as `no-policy`, the SA's outbound counter does not move and no ESP leaves
    /// (strongSwan's inbound byte counter stays put too). A ping from inside the subnet then
    /// still passes.
    pub(crate) fn outside_selectors_stay_out() {
        let mut lab = Lab::up("o");
        lab.start_gateway("start", "", &[]);
        let up = wait_for(Duration::from_secs(30), || {
            text(&lab.status().stdout).contains("tunnel lab: up")
        });
        assert!(
            up,
            "tunnel not up within 30 s:\n{}",
            text(&lab.status().stdout)
        );
        let add = lab.in_ns(
            "NS_HL",
            &["ip", "addr", "add", "10.5.0.10/32", "dev", "eth0"],
        );
        assert!(add.status.success(), "{}", text(&add.stderr));
        let before = text(&lab.status().stdout);
        let (_, out_before) = packet_counts(&before).expect("counters in status");

        let ping = lab.in_ns(
            "NS_HL",
            &[
                "ping",
                "-c",
                "3",
                "-i",
                "0.3",
                "-W",
                "1",
                "-I",
                "10.5.0.10",
                "10.2.0.10",
            ],
        );
        assert!(!ping.status.success(), "{}", text(&ping.stdout));
        let after = text(&lab.status().stdout);
        let (_, out_after) = packet_counts(&after).expect("counters in status");
        assert_eq!(out_after, out_before, "{before}\n{after}");
        let no_policy = |status: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("drops: "))
                .and_then(|d| d.split(", ").find_map(|r| r.strip_prefix("no-policy ")))
                .map_or(0, |n| n.parse::<u64>().unwrap_or(0))
        };
        assert_eq!(
            no_policy(&after) - no_policy(&before),
            3,
            "{before}\n{after}"
        );

        let ping = lab.in_ns("NS_HL", &["ping", "-c", "2", "-W", "2", "10.2.0.10"]);
        assert!(ping.status.success(), "{}", text(&ping.stdout));
        let (_, out_last) = packet_counts(&text(&lab.status().stdout)).expect("counters");
        assert_eq!(out_last, out_before + 2);
    }

    /// The "esp: in 0x... out 0x..." lines of `status` (the SPIs of every pair).
    fn esp_lines(status: &str) -> Vec<String> {
        status
            .lines()
            .filter(|l| l.trim_start().starts_with("esp: in "))
            .map(str::to_owned)
            .collect()
    }

    /// SIGHUP with a changed static NAT entry: the new mapping works at once, the old one
    /// is gone, the ESP SAs are the same (same SPIs in `status`), and a changed DPD setting
    /// is reported as needing a restart.
    pub(crate) fn sighup_reloads_static_nat() {
        let mut lab = Lab::up("h");
        let nat = "\n[tunnel.static_nat]\nsubnets = [\"10.1.255.88/29\"]\n\
                   entries = [{ name = \"hr\", local = \"10.1.255.92\", remote = \"10.2.0.10\" }]\n";
        lab.start_gateway("start", nat, &[]);
        let up = wait_for(Duration::from_secs(30), || {
            text(&lab.status().stdout).contains("tunnel lab: up")
        });
        assert!(
            up,
            "tunnel not up within 30 s:\n{}",
            text(&lab.status().stdout)
        );
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "2", "-W", "2", "10.1.255.92"]);
        assert!(ping.status.success(), "{}", text(&ping.stdout));
        let before = esp_lines(&text(&lab.status().stdout));
        assert_eq!(before.len(), 1, "{before:?}");

        let config = lab.dir().join("gateway.toml");
        let old = std::fs::read_to_string(&config).unwrap();
        let new = old
            .replace("local = \"10.1.255.92\"", "local = \"10.1.255.93\"")
            .replace("delay_seconds = 10", "delay_seconds = 11");
        assert_ne!(old, new);
        std::fs::write(&config, new).unwrap();
        let pid = lab.gateway_pid().unwrap();
        let hup = run(Command::new("kill").args(["-HUP", &pid.to_string()]));
        assert!(hup.status.success());
        let reloaded = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(lab.gateway_log())
                .is_ok_and(|l| l.contains("static NAT table replaced"))
        });
        assert!(reloaded, "no reload in the log within 10 s");
        let log = std::fs::read_to_string(lab.gateway_log()).unwrap();
        assert!(
            log.contains("changed settings need a restart to apply: dpd"),
            "no restart warning for the DPD change"
        );

        let ping = lab.in_ns("NS_HL", &["ping", "-c", "2", "-W", "2", "10.1.255.93"]);
        let out = text(&ping.stdout);
        assert!(ping.status.success(), "new mapping: {out}");
        assert!(out.contains("bytes from 10.1.255.93"), "{out}");
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "1", "-W", "1", "10.1.255.92"]);
        assert!(!ping.status.success(), "old mapping still answers");

        let status = text(&lab.status().stdout);
        assert_eq!(esp_lines(&status), before, "{status}");
        assert!(
            status.contains("static nat hr: 10.1.255.93 -> 10.2.0.10"),
            "{status}"
        );
        assert!(lab.list_sas().contains("INSTALLED"), "{}", lab.list_sas());
    }

    /// Path MTU through the tunnel: with `path_mtu = 1400` an inner packet of 1400 bytes
    /// with DF set cannot be sealed (AES-128/SHA-1 in UDP leaves 1326 bytes), so hl gets an
    /// ICMP "fragmentation needed" with MTU 1326 from the gateway; 1326 bytes then pass.
    pub(crate) fn path_mtu_frag_needed() {
        let mut lab = Lab::up("m");
        let out = run(Command::new(LAB_SH).args(["gateway-config", lab.var("LAB_DIR"), "start"]));
        let toml = text(&out.stdout).replace("[gateway]\n", "[gateway]\npath_mtu = 1400\n");
        lab.start_gateway_with(&toml, &[]);
        let up = wait_for(Duration::from_secs(30), || {
            text(&lab.status().stdout).contains("tunnel lab: up")
        });
        assert!(
            up,
            "tunnel not up within 30 s:\n{}",
            text(&lab.status().stdout)
        );

        let ping = lab.in_ns(
            "NS_HL",
            &[
                "ping",
                "-M",
                "do",
                "-s",
                "1372",
                "-c",
                "1",
                "-W",
                "2",
                "10.2.0.10",
            ],
        );
        let out = text(&ping.stdout);
        assert!(!ping.status.success(), "{out}");
        assert!(
            out.contains("Frag needed and DF set (mtu = 1326)"),
            "no fragmentation-needed with MTU 1326:\n{out}{}",
            text(&ping.stderr)
        );
        // hl now knows the path MTU: the same size fails locally, 1326 bytes pass.
        let ping = lab.in_ns(
            "NS_HL",
            &[
                "ping",
                "-M",
                "do",
                "-s",
                "1372",
                "-c",
                "1",
                "-W",
                "2",
                "10.2.0.10",
            ],
        );
        let all = format!("{}{}", text(&ping.stdout), text(&ping.stderr));
        assert!(
            all.contains("mtu=1326") || all.contains("mtu = 1326"),
            "{all}"
        );
        let ping = lab.in_ns(
            "NS_HL",
            &[
                "ping",
                "-M",
                "do",
                "-s",
                "1298",
                "-c",
                "2",
                "-W",
                "2",
                "10.2.0.10",
            ],
        );
        assert!(ping.status.success(), "{}", text(&ping.stdout));
        let status = text(&lab.status().stdout);
        assert!(status.contains("packet-too-big 1"), "{status}");
    }

    /// Counters from `status`: the numbers after "in" and "out" on the packets line.
    pub(crate) fn packet_counts(status: &str) -> Option<(u64, u64)> {
        let line = status
            .lines()
            .find(|l| l.contains(" packets ") && l.trim_start().starts_with("in "))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let inbound = words.get(1)?.parse().ok()?;
        let pos = words.iter().position(|w| *w == "out")?;
        let outbound = words.get(pos + 1)?.parse().ok()?;
        Some((inbound, outbound))
    }

    /// The whole scenario for one initiator.
    pub(crate) fn scenario(initiator: Initiator, mode: Mode) {
        let case = match (initiator, mode) {
            (Initiator::Gateway, Mode::Main) => "g",
            (Initiator::StrongSwan, Mode::Main) => "s",
            (Initiator::Gateway, Mode::Aggressive) => "ag",
            (Initiator::StrongSwan, Mode::Aggressive) => "as",
        };
        let aggressive = if mode == Mode::Aggressive {
            "yes"
        } else {
            "no"
        };
        let mut lab = Lab::up_with(case, &[("LAB_AGGRESSIVE", aggressive)]);
        lab.start_gateway(
            match initiator {
                Initiator::Gateway => "start",
                Initiator::StrongSwan => "wait",
            },
            "",
            &[],
        );

        // The gateway is ready when its control socket answers.
        assert!(
            lab.gateway_ready(),
            "the gateway did not come up within 10 s"
        );

        if initiator == Initiator::StrongSwan {
            lab.swan_initiate("20").unwrap();
        }
        let up = wait_for(Duration::from_secs(20), || {
            lab.list_sas().contains("INSTALLED")
        });
        assert!(
            up,
            "no CHILD_SA installed on strongSwan within 20 s:\n{}",
            lab.list_sas()
        );

        // Host behind us to host behind strongSwan, through the tunnel.
        let ping = lab.in_ns("NS_HL", &["ping", "-c", "3", "-W", "2", "10.2.0.10"]);
        assert!(
            ping.status.success(),
            "ping hl -> hr failed:\n{}",
            text(&ping.stdout)
        );

        // strongSwan's view of the SAs.
        let sas = lab.list_sas();
        assert!(sas.contains("lab: #"), "{sas}");
        assert!(sas.contains("ESTABLISHED, IKEv1"), "{sas}");
        assert!(sas.contains("INSTALLED, TUNNEL-in-UDP"), "{sas}");
        assert!(
            sas.contains("ESP:AES_CBC-128/HMAC_SHA1_96/MODP_2048"),
            "{sas}"
        );
        assert!(
            sas.contains("AES_CBC-128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048"),
            "{sas}"
        );
        assert!(
            sas.contains("local  10.2.0.0/24") && sas.contains("remote 10.1.0.0/24"),
            "{sas}"
        );

        // The phase 1 exchange strongSwan saw (its log at ike level 4 names each message).
        let charon = std::fs::read_to_string(lab.var("CHARON_LOG")).unwrap_or_default();
        let (ours, other) = match mode {
            Mode::Main => ("ID_PROT", "AGGRESSIVE"),
            Mode::Aggressive => ("AGGRESSIVE", "ID_PROT"),
        };
        assert!(
            charon.contains(&format!("parsed {ours} ")),
            "no {ours} exchange in charon's log"
        );
        assert!(
            !charon.contains(&format!("parsed {other} ")),
            "unexpected {other} exchange"
        );

        // And back: host behind strongSwan to host behind us.
        let ping = lab.in_ns("NS_HR", &["ping", "-c", "3", "-W", "2", "10.1.0.10"]);
        assert!(
            ping.status.success(),
            "ping hr -> hl failed:\n{}",
            text(&ping.stdout)
        );

        // Our own view: tunnel up, ESP in UDP, and every ping counted both ways.
        let status = lab.status();
        assert!(status.status.success());
        let status = text(&status.stdout);
        assert!(status.contains("tunnel lab: up"), "{status}");
        assert!(status.contains("nat-t yes"), "{status}");
        assert!(
            status.contains("UdpTunnel, 10.1.0.0/24 <-> 10.2.0.0/24"),
            "{status}"
        );
        let (inbound, outbound) = packet_counts(&status)
            .unwrap_or_else(|| panic!("no packet counters in status:\n{status}"));
        assert!(inbound >= 6 && outbound >= 6, "{status}");

        // SIGTERM: Delete for every SA, then a clean exit; strongSwan forgets the SAs.
        let exit = lab.stop_gateway(Duration::from_secs(5));
        assert!(
            exit.is_some_and(|s| s.success()),
            "the gateway did not exit cleanly within 5 s after SIGTERM: {exit:?}"
        );
        let gone = wait_for(Duration::from_secs(5), || {
            !lab.list_sas().contains("lab: #")
        });
        assert!(
            gone,
            "strongSwan still lists the SAs after our Delete:\n{}",
            lab.list_sas()
        );
    }
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn gateway_initiates_to_strongswan_and_hosts_ping_both_ways() {
    lab::scenario(lab::Initiator::Gateway, lab::Mode::Main);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn strongswan_initiates_to_gateway_and_hosts_ping_both_ways() {
    lab::scenario(lab::Initiator::StrongSwan, lab::Mode::Main);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn static_nat_reaches_remote_host_and_wireshark_keys_decrypt_the_capture() {
    lab::static_nat_and_wireshark_keys();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn on_traffic_tunnel_starts_with_the_first_packet() {
    lab::on_traffic();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rejects_wrong_psk_without_installing_anything() {
    lab::wrong_psk();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn survives_child_sa_rekeys_started_by_strongswan_without_loss() {
    lab::rekey(lab::Initiator::StrongSwan);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rekeys_its_child_sas_before_they_expire_without_loss() {
    lab::rekey(lab::Initiator::Gateway);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn renegotiates_when_strongswan_expires_the_child_sa() {
    lab::peer_expiry_renegotiated();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn aggressive_mode_gateway_initiates_and_hosts_ping_both_ways() {
    lab::scenario(lab::Initiator::Gateway, lab::Mode::Aggressive);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn aggressive_mode_strongswan_initiates_and_hosts_ping_both_ways() {
    lab::scenario(lab::Initiator::StrongSwan, lab::Mode::Aggressive);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn dead_peer_detection_clears_the_tunnel_when_strongswan_dies() {
    lab::dead_peer();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn two_gateways_carry_esp_over_ip_without_nat() {
    lab::two_gateways_raw_esp();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rejects_mismatched_esp_proposals_and_reports_no_proposal_chosen() {
    lab::esp_proposal_mismatch();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn tcp_transfers_four_megabytes_each_way_intact() {
    lab::bulk_transfer(false);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn aes256_sha256_with_pfs_carries_tcp_both_ways() {
    lab::bulk_transfer(true);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn traffic_outside_the_selectors_does_not_enter_the_tunnel() {
    lab::outside_selectors_stay_out();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn sighup_applies_a_static_nat_change_without_dropping_the_tunnel() {
    lab::sighup_reloads_static_nat();
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn too_big_inner_packet_with_df_gets_fragmentation_needed() {
    lab::path_mtu_frag_needed();
}
