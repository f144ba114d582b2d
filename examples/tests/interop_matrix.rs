//! The interop matrix: what the gateway's configuration offers (every phase 1 and phase 2
//! cipher, integrity algorithm and DH group, Main and Aggressive Mode, PFS on and off, either
//! side initiating) against strongSwan (charon with kernel-libipsec, so every case ends with a
//! ping through the tunnel) and libreswan (pluto, unpacked from its .deb: phase 1 in both roles
//! and Quick Mode up to pluto's SA installation, which fails here because this kernel has no
//! ESP and pluto has no userspace ESP). Then scenarios with strongSwan: NAT traversal through a
//! masquerading namespace (we are behind it; the peer is behind it), dead peer detection with
//! the "restart" action, and misconfigurations that must keep the tunnel down with a reason an
//! engineer can act on.
//!
//! The cases are combined pairwise: every pair of values of two different fields appears in at
//! least one case (`pairwise_tables_cover_every_pair_of_values` checks the generated tables).
//! A choice the peer refuses is a skip with the peer's own reason, never a pass. Each matrix
//! prints one line per case (case, peer, result, time to establish) when it ends.
//!
//! Labs come from `scripts/lab.sh` and `scripts/matrix.sh` (namespaces named `mx<pid><case>`,
//! torn down on drop). Needs root, `ip netns`, strongSwan, libreswan's .deb and ping
//! (`scripts/install-deps.sh`), so these cases are ignored by a plain `cargo test`.

#[cfg(test)]
mod common;

#[cfg(test)]
mod matrix {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use crate::common::{run, text, tshark_fields, wait_for, Lab, Up, LAB_SH, MATRIX_SH};

    /// Bound on establishing one case (generous for a loaded 2-core machine).
    const ESTABLISH: Duration = Duration::from_secs(30);

    // ------------------------------------------------------------------ pairwise --

    /// Builds a pairwise-covering table over fields with `sizes[i]` values each: every pair
    /// (field a = x, field b = y) with a != b appears in at least one row. Deterministic greedy
    /// construction: each row starts from the first uncovered pair, then every other field takes
    /// the value covering most uncovered pairs with the fields already set (ties: the value
    /// used least so far, then the lowest index).
    pub(crate) fn pairwise(sizes: &[usize]) -> Vec<Vec<usize>> {
        let n = sizes.len();
        let mut uncovered: BTreeSet<(usize, usize, usize, usize)> = BTreeSet::new();
        for a in 0..n {
            for b in a + 1..n {
                for x in 0..sizes[a] {
                    for y in 0..sizes[b] {
                        uncovered.insert((a, x, b, y));
                    }
                }
            }
        }
        let mut used: Vec<Vec<usize>> = sizes.iter().map(|&s| vec![0; s]).collect();
        let mut rows = Vec::new();
        while let Some(&(a, x, b, y)) = uncovered.iter().next() {
            let mut row: Vec<Option<usize>> = vec![None; n];
            row[a] = Some(x);
            row[b] = Some(y);
            for f in 0..n {
                if row[f].is_some() {
                    continue;
                }
                let gain = |v: usize| {
                    row.iter()
                        .enumerate()
                        .filter_map(|(g, val)| val.map(|w| (g, w)))
                        .filter(|&(g, w)| {
                            let key = if g < f { (g, w, f, v) } else { (f, v, g, w) };
                            uncovered.contains(&key)
                        })
                        .count()
                };
                let best = (0..sizes[f])
                    .max_by(|&v, &w| {
                        gain(v)
                            .cmp(&gain(w))
                            .then(used[f][w].cmp(&used[f][v]))
                            .then(w.cmp(&v))
                    })
                    .unwrap();
                row[f] = Some(best);
            }
            let row: Vec<usize> = row.into_iter().map(Option::unwrap).collect();
            for (f, &v) in row.iter().enumerate() {
                used[f][v] += 1;
            }
            for a in 0..n {
                for b in a + 1..n {
                    uncovered.remove(&(a, row[a], b, row[b]));
                }
            }
            rows.push(row);
        }
        rows
    }

    /// The pairs of values a table misses (empty when it is pairwise-complete).
    pub(crate) fn missing_pairs(
        sizes: &[usize],
        rows: &[Vec<usize>],
    ) -> Vec<(usize, usize, usize, usize)> {
        let mut missing = Vec::new();
        for a in 0..sizes.len() {
            for b in a + 1..sizes.len() {
                for x in 0..sizes[a] {
                    for y in 0..sizes[b] {
                        if !rows.iter().any(|r| r[a] == x && r[b] == y) {
                            missing.push((a, x, b, y));
                        }
                    }
                }
            }
        }
        missing
    }

    // -------------------------------------------------------------- the values --

    /// One algorithm as the gateway's config, strongSwan, libreswan and their logs name it.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Alg {
        /// Our config (`encryption = ["aes128"]`).
        pub(crate) ours: &'static str,
        /// strongSwan's proposal keyword.
        pub(crate) swan: &'static str,
        /// libreswan's ike=/esp= keyword.
        pub(crate) pluto: &'static str,
        /// How `swanctl --list-sas` shows it (for integrity: the ESP/IKE integrity name).
        pub(crate) swan_shows: &'static str,
        /// How pluto's "IKE SA established" line shows it.
        pub(crate) pluto_shows: &'static str,
    }

    const fn alg(
        ours: &'static str,
        swan: &'static str,
        pluto: &'static str,
        swan_shows: &'static str,
        pluto_shows: &'static str,
    ) -> Alg {
        Alg {
            ours,
            swan,
            pluto,
            swan_shows,
            pluto_shows,
        }
    }

    /// Every cipher the config offers (examples/site-to-site.toml).
    pub(crate) const CIPHERS: [Alg; 5] = [
        alg("des", "des", "des", "DES_CBC", "DES_CBC"),
        alg("3des", "3des", "3des", "3DES_CBC", "3DES_CBC"),
        alg("aes128", "aes128", "aes128", "AES_CBC-128", "AES_CBC_128"),
        alg("aes192", "aes192", "aes192", "AES_CBC-192", "AES_CBC_192"),
        alg("aes256", "aes256", "aes256", "AES_CBC-256", "AES_CBC_256"),
    ];

    /// Every integrity/hash algorithm the config offers.
    pub(crate) const HASHES: [Alg; 5] = [
        alg("md5", "md5", "md5", "HMAC_MD5_96", "HMAC_MD5"),
        alg("sha1", "sha1", "sha1", "HMAC_SHA1_96", "HMAC_SHA1"),
        alg(
            "sha256",
            "sha256",
            "sha2_256",
            "HMAC_SHA2_256_128",
            "HMAC_SHA2_256",
        ),
        alg(
            "sha384",
            "sha384",
            "sha2_384",
            "HMAC_SHA2_384_192",
            "HMAC_SHA2_384",
        ),
        alg(
            "sha512",
            "sha512",
            "sha2_512",
            "HMAC_SHA2_512_256",
            "HMAC_SHA2_512",
        ),
    ];

    /// strongSwan's PRF name for each entry of [`HASHES`] (IKE SA line of `--list-sas`).
    const SWAN_PRF: [&str; 5] = [
        "PRF_HMAC_MD5",
        "PRF_HMAC_SHA1",
        "PRF_HMAC_SHA2_256",
        "PRF_HMAC_SHA2_384",
        "PRF_HMAC_SHA2_512",
    ];

    /// Every DH group the config offers: (number, strongSwan keyword, strongSwan's name for it,
    /// libreswan keyword, libreswan's name for it).
    pub(crate) const GROUPS: [(u16, &str, &str, &str, &str); 11] = [
        (1, "modp768", "MODP_768", "modp768", "MODP768"),
        (2, "modp1024", "MODP_1024", "modp1024", "MODP1024"),
        (5, "modp1536", "MODP_1536", "modp1536", "MODP1536"),
        (14, "modp2048", "MODP_2048", "modp2048", "MODP2048"),
        (15, "modp3072", "MODP_3072", "modp3072", "MODP3072"),
        (16, "modp4096", "MODP_4096", "modp4096", "MODP4096"),
        (17, "modp6144", "MODP_6144", "modp6144", "MODP6144"),
        (18, "modp8192", "MODP_8192", "modp8192", "MODP8192"),
        (22, "modp1024s160", "MODP_1024_160", "dh22", "DH22"),
        (23, "modp2048s224", "MODP_2048_224", "dh23", "DH23"),
        (24, "modp2048s256", "MODP_2048_256", "dh24", "DH24"),
    ];

    /// The peer under test.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Peer {
        StrongSwan,
        Libreswan,
    }

    impl Peer {
        fn name(self) -> &'static str {
            match self {
                Self::StrongSwan => "strongswan",
                Self::Libreswan => "libreswan",
            }
        }

        /// Indices into CIPHERS / HASHES / GROUPS of what this peer supports, so the pairwise
        /// table is built over them. strongSwan 5.9.8 (openssl, gmp plugins): everything.
        /// libreswan 4.10 lists no DES and, of the MODP groups, only 1536 to 8192 among its
        /// IKEv1 algorithms (its startup log); [`refused_choices`] runs the others as cases
        /// that must end as skips with pluto's reason.
        fn supported(self) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
            match self {
                Self::StrongSwan => ((0..5).collect(), (0..5).collect(), (0..11).collect()),
                Self::Libreswan => ((1..5).collect(), (0..5).collect(), (2..8).collect()),
            }
        }
    }

    /// One case of a matrix.
    #[derive(Clone, Debug)]
    pub(crate) struct Case {
        pub(crate) p1_cipher: usize,
        pub(crate) p1_hash: usize,
        pub(crate) group: usize,
        pub(crate) aggressive: bool,
        pub(crate) peer_initiates: bool,
        pub(crate) p2_cipher: usize,
        pub(crate) p2_hash: usize,
        /// PFS on: Quick Mode uses the phase 1 group ([`Case::group`]) again.
        pub(crate) pfs: bool,
    }

    impl Case {
        fn label(&self) -> String {
            format!(
                "{} {}-{}-g{} / {}-{} pfs={} {}",
                if self.aggressive { "AM" } else { "MM" },
                CIPHERS[self.p1_cipher].ours,
                HASHES[self.p1_hash].ours,
                GROUPS[self.group].0,
                CIPHERS[self.p2_cipher].ours,
                HASHES[self.p2_hash].ours,
                if self.pfs { "on" } else { "off" },
                if self.peer_initiates {
                    "peer-init"
                } else {
                    "we-init"
                },
            )
        }
    }

    /// Field sizes of a peer's table: phase 1 cipher, hash, group, mode, initiator, phase 2
    /// cipher, hash, PFS.
    pub(crate) fn field_sizes(peer: Peer) -> Vec<usize> {
        let (c, h, g) = peer.supported();
        vec![c.len(), h.len(), g.len(), 2, 2, c.len(), h.len(), 2]
    }

    /// The pairwise table of a peer as cases.
    pub(crate) fn cases(peer: Peer) -> Vec<Case> {
        let (c, h, g) = peer.supported();
        pairwise(&field_sizes(peer))
            .into_iter()
            .map(|r| Case {
                p1_cipher: c[r[0]],
                p1_hash: h[r[1]],
                group: g[r[2]],
                aggressive: r[3] == 1,
                peer_initiates: r[4] == 1,
                p2_cipher: c[r[5]],
                p2_hash: h[r[6]],
                pfs: r[7] == 1,
            })
            .collect()
    }

    /// The offered choices a peer does not support, each as one case that must be refused.
    pub(crate) fn refused_choices(peer: Peer) -> Vec<Case> {
        let base = Case {
            p1_cipher: 2,
            p1_hash: 1,
            group: 3,
            aggressive: false,
            peer_initiates: false,
            p2_cipher: 2,
            p2_hash: 1,
            pfs: false,
        };
        let (c, _, g) = peer.supported();
        let mut out = Vec::new();
        for i in (0..CIPHERS.len()).filter(|i| !c.contains(i)) {
            out.push(Case {
                p1_cipher: i,
                ..base.clone()
            });
            out.push(Case {
                p2_cipher: i,
                ..base.clone()
            });
        }
        for i in (0..GROUPS.len()).filter(|i| !g.contains(i)) {
            out.push(Case {
                group: i,
                ..base.clone()
            });
        }
        out
    }

    // ------------------------------------------------------------------ the lab --

    /// `script ARGS...` (lab.sh or matrix.sh) with `env`, prefix `mx<pid><case>`.
    fn lab_up(script: &str, args: &[&str], case: &str, env: &[(&str, String)]) -> Up {
        let prefix = format!("mx{}{case}", std::process::id());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Lab::launch(script, args, &prefix, &env)
    }

    /// The gateway's config for a case. `remote` is the peer's address as we reach it,
    /// `remote_id` its identity.
    pub(crate) fn gateway_toml(
        lab: &Lab,
        case: &Case,
        remote: &str,
        remote_id: &str,
        remote_subnet: &str,
        dpd: &str,
    ) -> String {
        let dir = lab.var("LAB_DIR");
        let pfs = if case.pfs {
            GROUPS[case.group].0.to_string()
        } else {
            "\"none\"".to_owned()
        };
        format!(
            "[gateway]\n\
             tun_name = \"ipgw0\"\n\
             control_socket = \"{dir}/ipsec-gateway.sock\"\n\
             retransmit = {{ initial_ms = 1000, max_interval_ms = 4000, tries = 4 }}\n\
             [[tunnel]]\n\
             name = \"lab\"\n\
             local_address = \"192.0.2.1\"\n\
             remote_address = \"{remote}\"\n\
             initiate = \"{initiate}\"\n\
             local_subnets = [\"10.1.0.0/24\"]\n\
             remote_subnets = [\"{remote_subnet}\"]\n\
             psk = {{ file = \"{dir}/psk\" }}\n\
             [tunnel.phase1]\n\
             mode = \"{mode}\"\n\
             encryption = [\"{c1}\"]\n\
             authentication = [\"{h1}\"]\n\
             dh_group = [{g}]\n\
             lifetime_seconds = 28800\n\
             local_id = \"192.0.2.1\"\n\
             remote_id = \"{remote_id}\"\n\
             [tunnel.phase2]\n\
             encryption = [\"{c2}\"]\n\
             authentication = [\"{h2}\"]\n\
             pfs_group = {pfs}\n\
             lifetime_seconds = 3600\n\
             {dpd}",
            initiate = if case.peer_initiates { "wait" } else { "start" },
            mode = if case.aggressive {
                "aggressive"
            } else {
                "main"
            },
            c1 = CIPHERS[case.p1_cipher].ours,
            h1 = HASHES[case.p1_hash].ours,
            g = GROUPS[case.group].0,
            c2 = CIPHERS[case.p2_cipher].ours,
            h2 = HASHES[case.p2_hash].ours,
        )
    }

    /// strongSwan's proposals for a case: (IKE, ESP).
    fn swan_proposals(case: &Case) -> (String, String) {
        let g = GROUPS[case.group].1;
        let ike = format!(
            "{}-{}-{g}",
            CIPHERS[case.p1_cipher].swan, HASHES[case.p1_hash].swan
        );
        let mut esp = format!(
            "{}-{}",
            CIPHERS[case.p2_cipher].swan, HASHES[case.p2_hash].swan
        );
        if case.pfs {
            esp.push('-');
            esp.push_str(g);
        }
        (ike, esp)
    }

    // ------------------------------------------------------------- the outcome --

    /// What happened to one case.
    #[derive(Debug)]
    pub(crate) enum Outcome {
        Pass(Duration),
        Skip(String),
        Fail(String),
    }

    /// One row of the summary.
    pub(crate) struct Row {
        pub(crate) case: String,
        pub(crate) peer: Peer,
        pub(crate) outcome: Outcome,
    }

    /// Prints the summary table and fails the test if any case failed.
    pub(crate) fn report(title: &str, rows: &[Row]) {
        let mut out = format!("\n==== {title}: one line per case ====\n");
        let _ = writeln!(
            out,
            "{:<4} {:<56} {:<10} {:<6} {:>8}  detail",
            "#", "case", "peer", "result", "time"
        );
        for (i, r) in rows.iter().enumerate() {
            let (result, time, detail) = match &r.outcome {
                Outcome::Pass(d) => ("pass", format!("{:.2}s", d.as_secs_f64()), String::new()),
                Outcome::Skip(why) => ("skip", "-".to_owned(), why.clone()),
                Outcome::Fail(why) => ("FAIL", "-".to_owned(), why.clone()),
            };
            let detail: String = detail.replace('\n', " | ").chars().take(160).collect();
            let _ = writeln!(
                out,
                "{:<4} {:<56} {:<10} {:<6} {:>8}  {detail}",
                i + 1,
                r.case,
                r.peer.name(),
                result,
                time
            );
        }
        let pass = rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Pass(_)))
            .count();
        let skip = rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skip(_)))
            .count();
        let fail = rows.len() - pass - skip;
        let _ = writeln!(out, "{title}: {pass} pass, {skip} skip, {fail} fail");
        // Shown with --nocapture (or on failure); always kept in the target's tmp dir.
        eprintln!("{out}");
        let file =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.txt", title.replace(' ', "-")));
        let _ = std::fs::write(&file, &out);
        eprintln!("(summary written to {})", file.display());
        assert_eq!(fail, 0, "{fail} case(s) failed: see the table above");
    }

    // ---------------------------------------------------------- strongSwan cases --

    /// One strongSwan case: the lab with the case's proposals, our gateway with the same
    /// single proposal, establishment, what strongSwan negotiated, and a ping host to host.
    pub(crate) fn strongswan_case(n: usize, case: &Case) -> Outcome {
        let (ike, esp) = swan_proposals(case);
        let env = [
            ("LAB_IKE_PROPOSALS", ike),
            ("LAB_ESP_PROPOSALS", esp),
            (
                "LAB_AGGRESSIVE",
                if case.aggressive { "yes" } else { "no" }.to_owned(),
            ),
        ];
        let mut lab = match lab_up(LAB_SH, &["up"], &format!("s{n}"), &env) {
            Up::Ready(lab) => lab,
            Up::Refused(why) => return Outcome::Skip(why),
        };
        let toml = gateway_toml(&lab, case, "192.0.2.2", "192.0.2.2", "10.2.0.0/24", "");
        let outcome = strongswan_establish_and_ping(&mut lab, case, &toml);
        if matches!(outcome, Outcome::Fail(_)) {
            lab.keep_logs = true;
        }
        outcome
    }

    fn strongswan_establish_and_ping(lab: &mut Lab, case: &Case, toml: &str) -> Outcome {
        let start = Instant::now();
        if let Err(e) = lab.try_start_gateway(toml, &[]) {
            return Outcome::Fail(e);
        }
        if case.peer_initiates {
            if !lab.gateway_ready() {
                return Outcome::Fail("gateway's control socket did not answer in 10 s".into());
            }
            if let Err(e) = lab.swan_initiate("30") {
                return Outcome::Fail(e);
            }
        }
        let up = wait_for(ESTABLISH, || {
            lab.list_sas().contains("INSTALLED") && lab.status_text().contains("tunnel lab: up")
        });
        let took = start.elapsed();
        if !up {
            return Outcome::Fail(format!(
                "not established within {ESTABLISH:?}; status: {}",
                lab.status_text()
            ));
        }
        // What strongSwan negotiated is exactly the case's choice.
        let sas = lab.list_sas();
        let g = GROUPS[case.group].2;
        let ike = format!(
            "{}/{}/{}/{g}",
            CIPHERS[case.p1_cipher].swan_shows,
            HASHES[case.p1_hash].swan_shows,
            SWAN_PRF[case.p1_hash]
        );
        let mut esp = format!(
            "ESP:{}/{}",
            CIPHERS[case.p2_cipher].swan_shows, HASHES[case.p2_hash].swan_shows
        );
        if case.pfs {
            esp.push('/');
            esp.push_str(g);
        }
        let esp_ok = sas
            .lines()
            .any(|l| l.contains(&esp) && (case.pfs || !l.contains(&format!("{esp}/"))));
        if !sas.contains(&ike) || !esp_ok {
            return Outcome::Fail(format!("expected {ike} and {esp}, strongSwan lists: {sas}"));
        }
        if let Err(e) = lab.ping("NS_HL", "10.2.0.10", "2") {
            return Outcome::Fail(e);
        }
        Outcome::Pass(took)
    }

    // ----------------------------------------------------------- libreswan cases --

    /// One libreswan case: pluto with the case's ike=/esp=/pfs=, our gateway with the same
    /// proposal; pluto's log must show phase 1 established with the case's algorithms and the
    /// Quick Mode carried as far as installing the SA (which fails here: no kernel ESP).
    pub(crate) fn libreswan_case(n: usize, case: &Case) -> Outcome {
        let g = GROUPS[case.group].3;
        let env = [
            (
                "PLUTO_IKE",
                format!(
                    "{}-{};{g}",
                    CIPHERS[case.p1_cipher].pluto, HASHES[case.p1_hash].pluto
                ),
            ),
            (
                "PLUTO_ESP",
                if case.pfs {
                    format!(
                        "{}-{};{g}",
                        CIPHERS[case.p2_cipher].pluto, HASHES[case.p2_hash].pluto
                    )
                } else {
                    format!(
                        "{}-{}",
                        CIPHERS[case.p2_cipher].pluto, HASHES[case.p2_hash].pluto
                    )
                },
            ),
            ("PLUTO_PFS", if case.pfs { "yes" } else { "no" }.to_owned()),
            (
                "LAB_AGGRESSIVE",
                if case.aggressive { "yes" } else { "no" }.to_owned(),
            ),
        ];
        let mut lab = match lab_up(MATRIX_SH, &["pluto-up"], &format!("l{n}"), &env) {
            Up::Ready(lab) => lab,
            Up::Refused(why) => return Outcome::Skip(why),
        };
        let toml = gateway_toml(&lab, case, "192.0.2.2", "192.0.2.2", "10.2.0.0/24", "");
        let outcome = libreswan_establish(&mut lab, case, &toml);
        if matches!(outcome, Outcome::Fail(_)) {
            lab.keep_logs = true;
        }
        outcome
    }

    fn libreswan_establish(lab: &mut Lab, case: &Case, toml: &str) -> Outcome {
        let start = Instant::now();
        if let Err(e) = lab.try_start_gateway(toml, &[]) {
            return Outcome::Fail(e);
        }
        if case.peer_initiates {
            if !lab.gateway_ready() {
                return Outcome::Fail("gateway's control socket did not answer in 10 s".into());
            }
            let out = run(Command::new(MATRIX_SH).args(["pluto-initiate", lab.var("LAB_DIR")]));
            if !out.status.success() {
                return Outcome::Fail(format!("whack --initiate: {}", text(&out.stderr)));
            }
        }
        let established = wait_for(ESTABLISH, || lab.peer_log().contains("IKE SA established"));
        let took = start.elapsed();
        if !established {
            return Outcome::Fail(format!(
                "pluto logged no 'IKE SA established' within {ESTABLISH:?}"
            ));
        }
        let log = lab.peer_log();
        let line = log
            .lines()
            .find(|l| l.contains("IKE SA established"))
            .unwrap_or_default()
            .to_owned();
        let want = [
            format!("cipher={}", CIPHERS[case.p1_cipher].pluto_shows),
            format!("integ={}", HASHES[case.p1_hash].pluto_shows),
            format!("group={}", GROUPS[case.group].4),
        ];
        if let Some(w) = want.iter().find(|w| !line.contains(w.as_str())) {
            return Outcome::Fail(format!("pluto's phase 1 lacks {w}: {line}"));
        }
        // Quick Mode accepted by pluto up to installing the SA: the install is the step that
        // fails on this kernel ("netlink response for Add SA ... Protocol not supported").
        let qm = wait_for(ESTABLISH, || {
            lab.peer_log().contains("netlink response for Add SA")
        });
        if !qm {
            return Outcome::Fail("pluto never reached Quick Mode SA installation".into());
        }
        let log = lab.peer_log();
        if case.peer_initiates {
            // pluto proposed exactly the case's ESP transform and we chose it (we answer with
            // QM2; as the responder we would install on QM3, which pluto never sends because its
            // own install fails first).
            if let Err(e) = pluto_proposal_matches(&log, case) {
                return Outcome::Fail(e);
            }
            let chose = wait_for(Duration::from_secs(5), || {
                lab.gateway_log_text().contains("QM1: choosing")
            });
            if !chose {
                return Outcome::Fail("we did not accept pluto's Quick Mode proposal".into());
            }
        }
        for bad in [
            "INVALID_HASH_INFORMATION",
            "NO_PROPOSAL_CHOSEN",
            "malformed",
        ] {
            if log.contains(bad) {
                return Outcome::Fail(format!("pluto logged {bad}"));
            }
        }
        Outcome::Pass(took)
    }

    // ------------------------------------------------------------ scenarios --

    /// The lab's default choice: AES-128/SHA1/group 14, PFS 14, Main Mode.
    pub(crate) fn default_case(peer_initiates: bool) -> Case {
        Case {
            p1_cipher: 2,
            p1_hash: 1,
            group: 3,
            aggressive: false,
            peer_initiates,
            p2_cipher: 2,
            p2_hash: 1,
            pfs: true,
        }
    }

    fn ready(up: Up) -> Lab {
        match up {
            Up::Ready(lab) => lab,
            Up::Refused(why) => panic!("the peer refused the lab's default configuration: {why}"),
        }
    }

    /// Waits until strongSwan lists an installed CHILD_SA and our status says up.
    fn wait_up(lab: &Lab) {
        let up = wait_for(ESTABLISH, || {
            lab.list_sas().contains("INSTALLED") && lab.status_text().contains("tunnel lab: up")
        });
        assert!(
            up,
            "not established within {ESTABLISH:?}:\n{}\n{}",
            lab.status_text(),
            lab.list_sas()
        );
    }

    /// `tshark -r PCAP -Y FILTER` packet count.
    fn count(pcap: &Path, filter: &str) -> usize {
        tshark_fields(pcap, &[], filter, "frame.number").len()
    }

    /// NAT traversal through a masquerading namespace (nft `masquerade random`: ports are
    /// rewritten). `we_are_behind`: our gateway sits behind the NAT and initiates; otherwise
    /// strongSwan does and we know it only by its NAT's public address. Either way IKE floats
    /// to UDP 4500, ESP travels in UDP through the NAT both ways, and the side behind the NAT
    /// sends NAT-keepalives (RFC 3948 section 2.3: ours every 20 s, charon's every 5 s here).
    pub(crate) fn nat_traversal(we_are_behind: bool) {
        let side = if we_are_behind { "ours" } else { "peer" };
        let case_id = if we_are_behind { "no" } else { "np" };
        let mut lab = ready(lab_up(MATRIX_SH, &["nat-up", side], case_id, &[]));
        let public = lab.var("NAT_PUBLIC").to_owned();
        // Capture on the far side of the NAT from the one behind it: what crossed the NAT.
        let (ns, remote) = if we_are_behind {
            ("NS_SW", "198.51.100.2")
        } else {
            ("NS_OURS", public.as_str())
        };
        let pcap = lab.capture(ns, "wan0");
        let case = default_case(!we_are_behind);
        let toml = gateway_toml(&lab, &case, remote, "198.51.100.2", "10.2.0.0/24", "");
        lab.try_start_gateway(&toml, &[]).unwrap();
        if !we_are_behind {
            assert!(lab.gateway_ready(), "the gateway did not come up");
            lab.swan_initiate("30").unwrap();
        }
        wait_up(&lab);
        let established = Instant::now();
        lab.ping("NS_HL", "10.2.0.10", "3").unwrap();
        lab.ping("NS_HR", "10.1.0.10", "3").unwrap();
        let status = lab.status_text();
        assert!(status.contains("nat-t yes"), "{status}");
        assert!(status.contains("UdpTunnel"), "{status}");
        let charon = lab.peer_log();
        let seen = if we_are_behind {
            "remote host is behind NAT"
        } else {
            "local host is behind NAT"
        };
        assert!(charon.contains(seen), "charon did not log '{seen}'");
        // Keepalives from the side behind the NAT: ours 20 s after phase 1, charon's after
        // 5 s idle (with margins for a loaded machine).
        let keepalive_wait = if we_are_behind { 25 } else { 12 };
        let until = Duration::from_secs(keepalive_wait);
        std::thread::sleep(until.saturating_sub(established.elapsed()));
        lab.stop_captures();

        let from_nat = format!("ip.src == {public}");
        let to_nat = format!("ip.dst == {public}");
        // Phase 1 started on 500 and floated: IKE on 4500 through the NAT.
        let ike_4500 = count(
            &pcap,
            &format!("isakmp && udp.dstport == 4500 && {from_nat}"),
        );
        assert!(
            ike_4500 >= 2,
            "no IKE on UDP 4500 from the NAT ({ike_4500})"
        );
        // ESP in UDP both ways: 6 echo requests/replies at least in each direction.
        let esp_out = count(&pcap, &format!("esp && udp && {from_nat}"));
        let esp_in = count(&pcap, &format!("esp && udp && {to_nat}"));
        assert!(
            esp_out >= 6 && esp_in >= 6,
            "ESP in UDP: {esp_out} out, {esp_in} in"
        );
        assert_eq!(
            count(&pcap, "esp && !udp"),
            0,
            "ESP outside UDP crossed the NAT"
        );
        // The NAT rewrote the source port of the floated traffic (masquerade random).
        let rewritten = count(
            &pcap,
            &format!("udp.srcport != 4500 && udp.srcport != 500 && {from_nat}"),
        );
        assert!(rewritten >= 1, "no rewritten source port seen");
        let keepalives = count(&pcap, &format!("udp.length == 9 && {from_nat}"));
        assert!(
            keepalives >= 1,
            "no NAT-keepalive from the side behind the NAT within {keepalive_wait} s"
        );
        // The tunnel still carries traffic after the idle time.
        lab.ping("NS_HL", "10.2.0.10", "1").unwrap();
    }

    /// DPD against a SIGKILLed charon with `action` "restart" or "hold": we declare the
    /// peer dead within delay + timeout; with "restart" we negotiate again at once, with
    /// "hold" we wait, and the first packet for the tunnel after charon is back brings it
    /// up again. Either way no manual step is needed.
    pub(crate) fn dpd_action(case_id: &str, action: &str) {
        let mut lab = ready(lab_up(LAB_SH, &["up"], case_id, &[]));
        let dpd = format!(
            "[tunnel.dpd]\ndelay_seconds = 2\ntimeout_seconds = 6\naction = \"{action}\"\n"
        );
        let toml = gateway_toml(
            &lab,
            &default_case(false),
            "192.0.2.2",
            "192.0.2.2",
            "10.2.0.0/24",
            &dpd,
        );
        lab.try_start_gateway(&toml, &[]).unwrap();
        wait_up(&lab);
        lab.ping("NS_HL", "10.2.0.10", "1").unwrap();

        let charon = lab.var("CHARON_PID").to_owned();
        assert!(run(Command::new("kill").args(["-KILL", &charon]))
            .status
            .success());
        let killed = Instant::now();
        let dead = wait_for(Duration::from_secs(20), || {
            lab.status_text().contains("peer declared dead by DPD")
        });
        let took = killed.elapsed();
        assert!(dead, "no DPD verdict within 20 s:\n{}", lab.status_text());
        assert!(
            took >= Duration::from_secs(6),
            "declared dead after {took:?}, before the timeout"
        );
        assert!(
            took <= Duration::from_secs(11),
            "declared dead after {took:?}: more than delay + timeout (8 s) + 3 s"
        );
        let initiated_since_verdict = |lab: &Lab| {
            lab.gateway_log_text()
                .split("dead peer detection: peer declared dead")
                .nth(1)
                .is_some_and(|after| after.contains("initiating"))
        };
        if action == "restart" {
            // The action: negotiating again (Main Mode toward the dead peer).
            let restarted = wait_for(Duration::from_secs(10), || initiated_since_verdict(&lab));
            assert!(restarted, "no new negotiation after the DPD verdict");
        } else {
            // "hold": nothing is sent until traffic asks for the tunnel.
            std::thread::sleep(Duration::from_secs(4));
            assert!(
                !initiated_since_verdict(&lab),
                "negotiated again without traffic:\n{}",
                lab.gateway_log_text()
            );
        }

        let out = run(Command::new(MATRIX_SH).args(["charon-restart", lab.var("LAB_DIR")]));
        assert!(
            out.status.success(),
            "charon-restart: {}",
            text(&out.stderr)
        );
        let back = Instant::now();
        if action == "hold" {
            // Still down with charon back: only traffic brings the tunnel up. Pings every
            // 0.3 s for up to 8 s; the first ones start the negotiation and are not answered.
            assert!(
                !lab.status_text().contains("tunnel lab: up"),
                "{}",
                lab.status_text()
            );
            let out = lab.in_ns(
                "NS_HL",
                &[
                    "ping",
                    "-c",
                    "25",
                    "-i",
                    "0.3",
                    "-W",
                    "1",
                    "-w",
                    "8",
                    "10.2.0.10",
                ],
            );
            assert!(
                out.status.success(),
                "traffic did not bring the held tunnel back: {}",
                text(&out.stdout)
            );
            assert!(initiated_since_verdict(&lab), "{}", lab.gateway_log_text());
        }
        wait_up(&lab);
        eprintln!("tunnel back {:?} after charon restarted", back.elapsed());
        lab.ping("NS_HL", "10.2.0.10", "2").unwrap();
        lab.ping("NS_HR", "10.1.0.10", "2").unwrap();
    }

    /// A misconfiguration keeps the tunnel down; returns our status once `expect` shows up in it
    /// (bounded), after checking strongSwan installed nothing.
    pub(crate) fn misconfigured(
        case_id: &str,
        env: &[(&str, String)],
        remote_subnet: &str,
        peer_initiates: bool,
        expect: &str,
    ) -> String {
        let mut lab = ready(lab_up(LAB_SH, &["up"], case_id, env));
        let toml = gateway_toml(
            &lab,
            &default_case(peer_initiates),
            "192.0.2.2",
            "192.0.2.2",
            remote_subnet,
            "",
        );
        lab.try_start_gateway(&toml, &[]).unwrap();
        if peer_initiates {
            assert!(lab.gateway_ready(), "the gateway did not come up");
            let out = lab.swan_initiate("30");
            assert!(out.is_err(), "strongSwan's initiate succeeded");
        }
        let said = wait_for(ESTABLISH, || {
            lab.status_text().contains(expect) || lab.gateway_log_text().contains(expect)
        });
        let status = lab.status_text();
        assert!(
            said,
            "'{expect}' not in status or log within {ESTABLISH:?}:\n{status}"
        );
        assert!(!status.contains("tunnel lab: up"), "{status}");
        assert!(!lab.list_sas().contains("INSTALLED"), "{}", lab.list_sas());
        eprintln!("{case_id}: status says:\n{status}");
        status
    }

    /// pluto's "initiating Quick Mode ... proposal=CIPHER-INTEG[-GROUP] pfsgroup=..." line
    /// names the case's phase 2 choice.
    fn pluto_proposal_matches(log: &str, case: &Case) -> Result<(), String> {
        let line = log
            .lines()
            .find(|l| l.contains("initiating Quick Mode"))
            .ok_or("pluto logged no Quick Mode initiation")?;
        let proposal = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("proposal="))
            .ok_or_else(|| format!("no proposal= in {line}"))?;
        let parts: Vec<&str> = proposal.split('-').collect();
        let cipher = CIPHERS[case.p2_cipher].pluto_shows;
        let integ = HASHES[case.p2_hash].swan_shows;
        let group = if case.pfs {
            Some(GROUPS[case.group].4)
        } else {
            None
        };
        let ok = parts.first().is_some_and(|c| c.starts_with(cipher))
            && parts.get(1) == Some(&integ)
            && parts.get(2).copied() == group;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "pluto proposed {proposal}, expected {cipher}-{integ}{}",
                group.map(|g| format!("-{g}")).unwrap_or_default()
            ))
        }
    }

    /// Runs a peer's matrix: the pairwise table, then the refused choices.
    pub(crate) fn run_matrix(peer: Peer) {
        if peer == Peer::Libreswan {
            let out = run(Command::new(MATRIX_SH).arg("libreswan-install"));
            assert!(
                out.status.success(),
                "matrix.sh libreswan-install: {}",
                text(&out.stderr)
            );
        }
        let mut rows = Vec::new();
        let table = cases(peer);
        let refused = refused_choices(peer);
        // MATRIX_CASES=3,17 runs only those case numbers (0-based), for debugging.
        let only: Option<Vec<usize>> = std::env::var("MATRIX_CASES")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
        for (n, case) in table.iter().chain(refused.iter()).enumerate() {
            if only.as_ref().is_some_and(|o| !o.contains(&n)) {
                continue;
            }
            let must_refuse = n >= table.len();
            let outcome = match peer {
                Peer::StrongSwan => strongswan_case(n, case),
                Peer::Libreswan => libreswan_case(n, case),
            };
            let outcome = match outcome {
                Outcome::Pass(_) if must_refuse => Outcome::Fail(
                    "expected the peer to refuse this choice, but it worked: update Peer::supported"
                        .into(),
                ),
                Outcome::Fail(why) if must_refuse => Outcome::Fail(format!(
                    "expected a refusal from the peer's configuration, got: {why}"
                )),
                o => o,
            };
            rows.push(Row {
                case: case.label(),
                peer,
                outcome,
            });
        }
        report(&format!("{} matrix", peer.name()), &rows);
    }
}

#[test]
fn pairwise_tables_cover_every_pair_of_values() {
    use matrix::*;
    for peer in [Peer::StrongSwan, Peer::Libreswan] {
        let sizes = field_sizes(peer);
        let rows = pairwise(&sizes);
        assert_eq!(missing_pairs(&sizes, &rows), vec![], "{peer:?}");
        // The lower bound is the product of the two largest fields; the greedy table stays
        // close to it (this keeps the matrix within its time budget).
        let mut s = sizes.clone();
        s.sort_unstable();
        let bound = s[s.len() - 1] * s[s.len() - 2];
        assert!(rows.len() >= bound);
        assert!(
            rows.len() <= bound + bound / 4,
            "{peer:?}: {} rows for a lower bound of {bound}",
            rows.len()
        );
        // Every offered value the peer supports is used in both phases.
        let table = cases(peer);
        let (c, h, g) = {
            let t = &table;
            (
                t.iter()
                    .flat_map(|c| [c.p1_cipher, c.p2_cipher])
                    .collect::<std::collections::BTreeSet<_>>(),
                t.iter()
                    .flat_map(|c| [c.p1_hash, c.p2_hash])
                    .collect::<std::collections::BTreeSet<_>>(),
                t.iter()
                    .filter(|c| c.pfs)
                    .map(|c| c.group)
                    .collect::<std::collections::BTreeSet<_>>(),
            )
        };
        let want = match peer {
            Peer::StrongSwan => (5, 5, 11),
            Peer::Libreswan => (4, 5, 6),
        };
        assert_eq!((c.len(), h.len(), g.len()), want, "{peer:?}");
    }
}

#[test]
fn pairwise_detects_a_missing_pair() {
    use matrix::*;
    let sizes = [2, 2, 2];
    let mut rows = pairwise(&sizes);
    assert_eq!(missing_pairs(&sizes, &rows), vec![]);
    // Drop the only row with field 0 = 1 and field 1 = 1: that pair is missing afterwards.
    rows.retain(|r| !(r[0] == 1 && r[1] == 1));
    assert!(missing_pairs(&sizes, &rows).contains(&(0, 1, 1, 1)));
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn strongswan_pairwise_algorithm_matrix_pings_through_every_case() {
    matrix::run_matrix(matrix::Peer::StrongSwan);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn libreswan_pairwise_algorithm_matrix_reaches_quick_mode_sa_install() {
    matrix::run_matrix(matrix::Peer::Libreswan);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn nat_traversal_with_our_gateway_behind_a_masquerading_nat() {
    matrix::nat_traversal(true);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn nat_traversal_with_strongswan_behind_a_masquerading_nat() {
    matrix::nat_traversal(false);
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn dead_peer_detection_restart_brings_the_tunnel_back_when_strongswan_returns() {
    matrix::dpd_action("dr", "restart");
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn dead_peer_detection_hold_brings_the_tunnel_back_on_traffic_when_strongswan_returns() {
    matrix::dpd_action("dh", "hold");
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rejects_phase1_without_common_proposal_and_says_why() {
    matrix::misconfigured(
        "m1",
        &[("LAB_IKE_PROPOSALS", "aes256-sha512-modp4096".to_owned())],
        "10.2.0.0/24",
        false,
        "last error: peer reported NO-PROPOSAL-CHOSEN (14): none of our proposals is acceptable to the peer",
    );
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rejects_peer_phase1_proposal_it_does_not_offer_and_says_why() {
    matrix::misconfigured(
        "m2",
        &[("LAB_IKE_PROPOSALS", "aes256-sha512-modp4096".to_owned())],
        "10.2.0.0/24",
        true,
        "last error: no acceptable proposal: peer offered AES-256-CBC/SHA2-512/group 16 (phase 1); we accept AES-128-CBC/SHA1/group 14",
    );
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rejects_wrong_remote_subnet_and_says_why() {
    matrix::misconfigured(
        "m3",
        &[],
        "10.9.0.0/24",
        false,
        "last error: peer reported INVALID-ID-INFORMATION (18): the peer rejects our identity or traffic selectors",
    );
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan: run by scripts/test.sh"]
fn rejects_peer_quick_mode_for_subnets_it_does_not_serve_and_says_why() {
    matrix::misconfigured(
        "m4",
        &[],
        "10.9.0.0/24",
        true,
        "last error: peer proposed traffic selectors 10.2.0.0/24 / 10.1.0.0/24 outside our policy 10.9.0.0/24 / 10.1.0.0/24",
    );
}
