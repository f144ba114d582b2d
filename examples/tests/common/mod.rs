//! The lab shared by the interop tests: network namespaces built by `scripts/lab.sh` (or
//! `scripts/matrix.sh`, which sources it), our gateway started in the "ours" namespace,
//! the peer (charon or pluto) driven through the scripts, tshark captures, and a teardown
//! on drop that stops every process the lab started and deletes its namespaces (printing
//! the logs' tails when the test is failing).
//!
//! Each test file compiles this module on its own (`mod common;`) and uses part of it.

#![allow(
    dead_code,
    reason = "each test file that includes this module uses a different part of it"
)]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const GATEWAY: &str = env!("CARGO_BIN_EXE_ipsec-gateway");
pub(crate) const LAB_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lab.sh");
pub(crate) const MATRIX_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/matrix.sh");

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last `lines` lines of a file (or why it could not be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let all = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})\n"));
    let v: Vec<&str> = all.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Waits (bounded) until `cond` holds, checking every 100 ms; false on timeout.
pub(crate) fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Undoes `%q` quoting of a value the scripts print.
fn unquote(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// `kill SIGNAL`, then up to `limit` for the process to end before SIGKILL.
fn stop_child(child: &mut Child, signal: &str, limit: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `ipsec-gateway status` over the control socket at `socket`.
pub(crate) fn status_at(socket: &Path) -> Output {
    run(Command::new(GATEWAY)
        .args(["status", "--socket"])
        .arg(socket))
}

/// `tshark -r PCAP [-o OPTION]... -Y FILTER -T fields -e FIELD` output lines.
pub(crate) fn tshark_fields(
    pcap: &Path,
    options: &[String],
    filter: &str,
    field: &str,
) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap);
    for o in options {
        cmd.args(["-o", o]);
    }
    cmd.args(["-Y", filter, "-T", "fields", "-e", field]);
    let out = run(&mut cmd);
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// A running lab; dropping it stops the gateway and everything else the lab or the test
/// started, and tears the namespaces down.
pub(crate) struct Lab {
    vars: HashMap<String, String>,
    gateway: Option<Child>,
    /// Other processes a case started (stopped like the gateway, with SIGTERM).
    pub(crate) extra_children: Vec<Child>,
    /// tshark processes (stopped with SIGINT, which flushes their files).
    captures: Vec<Child>,
    /// Print the logs' tails on drop although the test is not failing (a matrix case
    /// that failed without panicking).
    pub(crate) keep_logs: bool,
}

/// How a lab script's `*-up` ended.
pub(crate) enum Up {
    Ready(Lab),
    /// The peer refused the configuration: its reason.
    Refused(String),
}

impl Lab {
    /// `lab.sh up` with prefix `ipgwt<pid><case>`; panics if it fails.
    pub(crate) fn up(case: &str) -> Self {
        Self::up_with(case, &[])
    }

    /// Like [`Lab::up`], with extra environment for `lab.sh up` (LAB_* knobs).
    pub(crate) fn up_with(case: &str, env: &[(&str, &str)]) -> Self {
        let prefix = format!("ipgwt{}{case}", std::process::id());
        match Self::launch(LAB_SH, &["up"], &prefix, env) {
            Up::Ready(lab) => lab,
            Up::Refused(why) => panic!("the peer refused the lab's configuration: {why}"),
        }
    }

    /// `script ARGS...` with `env` and `LAB_PREFIX=prefix`, which prints the lab's
    /// variables (`NAME=value` lines). A peer refusing the configuration is told apart
    /// from a broken lab: pluto's refusal is printed as PLUTO_REFUSED, charon's is the
    /// `loading connection` line of `swanctl --load-all` on stderr.
    pub(crate) fn launch(script: &str, args: &[&str], prefix: &str, env: &[(&str, &str)]) -> Up {
        let uid = run(Command::new("id").arg("-u"));
        assert_eq!(
            text(&uid.stdout).trim(),
            "0",
            "the interop tests need root (network namespaces, TUN, ports 500/4500)"
        );
        let out = run(Command::new(script)
            .args(args)
            .env("LAB_PREFIX", prefix)
            .envs(env.iter().copied()));
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        let vars: HashMap<String, String> = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some(reason) = vars.get("PLUTO_REFUSED") {
            return Up::Refused(format!("pluto: {}", unquote(reason)));
        }
        if let Some(line) = stderr.lines().find(|l| l.contains("loading connection")) {
            return Up::Refused(format!("charon: {}", line.trim()));
        }
        assert!(out.status.success(), "{script} failed:\n{stdout}{stderr}");
        Up::Ready(Self {
            vars,
            gateway: None,
            extra_children: Vec::new(),
            captures: Vec::new(),
            keep_logs: false,
        })
    }

    pub(crate) fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("the lab did not print {name}"))
    }

    pub(crate) fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("LAB_DIR"))
    }

    pub(crate) fn gateway_log(&self) -> PathBuf {
        self.dir().join("gateway.log")
    }

    /// The gateway's log so far (empty if there is none).
    pub(crate) fn gateway_log_text(&self) -> String {
        std::fs::read_to_string(self.gateway_log()).unwrap_or_default()
    }

    fn peer_log_path(&self) -> PathBuf {
        self.vars
            .get("PLUTO_LOG")
            .or_else(|| self.vars.get("CHARON_LOG"))
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    /// pluto's or charon's log so far.
    pub(crate) fn peer_log(&self) -> String {
        std::fs::read_to_string(self.peer_log_path()).unwrap_or_default()
    }

    pub(crate) fn control_socket(&self) -> PathBuf {
        self.dir().join("ipsec-gateway.sock")
    }

    /// Writes the lab's gateway config (`lab.sh gateway-config DIR INITIATE`) plus
    /// `extra_toml` and starts the gateway.
    pub(crate) fn start_gateway(&mut self, initiate: &str, extra_toml: &str, extra_args: &[&str]) {
        let out = run(Command::new(LAB_SH).args(["gateway-config", self.var("LAB_DIR"), initiate]));
        assert!(
            out.status.success(),
            "gateway-config: {}",
            text(&out.stderr)
        );
        let mut toml = text(&out.stdout);
        toml.push_str(extra_toml);
        self.start_gateway_with(&toml, extra_args);
    }

    /// Starts the gateway with this config text; panics if `check` refuses it.
    pub(crate) fn start_gateway_with(&mut self, toml: &str, extra_args: &[&str]) {
        if let Err(e) = self.try_start_gateway(toml, extra_args) {
            panic!("{e}");
        }
    }

    /// Writes `toml`, checks it (Err with `check`'s complaint) and starts the gateway in
    /// the "ours" namespace, logging at debug into the lab directory.
    pub(crate) fn try_start_gateway(
        &mut self,
        toml: &str,
        extra_args: &[&str],
    ) -> Result<(), String> {
        let config = self.dir().join("gateway.toml");
        std::fs::write(&config, toml).unwrap();
        let check = run(Command::new(GATEWAY).arg("check").arg(&config));
        if !check.status.success() {
            return Err(format!("check: {}", text(&check.stderr)));
        }
        self.gateway =
            Some(self.spawn_gateway("NS_OURS", &config, &self.gateway_log(), extra_args));
        Ok(())
    }

    /// `ipsec-gateway run CONFIG ARGS...` in the namespace named by the lab variable
    /// `ns_var`, logging at debug into `log`. `ip netns exec` execs the gateway, so the
    /// child's PID is the gateway's.
    pub(crate) fn spawn_gateway(
        &self,
        ns_var: &str,
        config: &Path,
        log: &Path,
        extra_args: &[&str],
    ) -> Child {
        let log = File::create(log).unwrap();
        Command::new("ip")
            .args(["netns", "exec", self.var(ns_var), GATEWAY, "run"])
            .arg(config)
            .args(extra_args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// The running gateway's PID (for signals), if one was started.
    pub(crate) fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(Child::id)
    }

    /// SIGTERM to the gateway; returns its exit status if it stops within `limit`.
    pub(crate) fn stop_gateway(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.gateway.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                self.gateway = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `ipsec-gateway status` over the lab's control socket.
    pub(crate) fn status(&self) -> Output {
        status_at(&self.control_socket())
    }

    /// What `status` printed.
    pub(crate) fn status_text(&self) -> String {
        text(&self.status().stdout)
    }

    /// Whether the gateway's control socket answers within 10 s.
    pub(crate) fn gateway_ready(&self) -> bool {
        wait_for(Duration::from_secs(10), || self.status().status.success())
    }

    /// Waits up to `limit` for our `status` to show the tunnel up; panics with the status
    /// otherwise.
    pub(crate) fn assert_tunnel_up(&self, limit: Duration) {
        let up = wait_for(limit, || self.status_text().contains("tunnel lab: up"));
        assert!(
            up,
            "tunnel not up within {limit:?}:\n{}",
            self.status_text()
        );
    }

    pub(crate) fn swanctl(&self, args: &[&str]) -> Output {
        run(Command::new(LAB_SH)
            .args(["swanctl", self.var("LAB_DIR")])
            .args(args))
    }

    pub(crate) fn list_sas(&self) -> String {
        text(&self.swanctl(&["--list-sas"]).stdout)
    }

    /// strongSwan initiates (bounded by swanctl's `--timeout` of `seconds`).
    pub(crate) fn swan_initiate(&self, seconds: &str) -> Result<(), String> {
        let out = self.swanctl(&[
            "--initiate",
            "--ike",
            "lab",
            "--child",
            "net",
            "--timeout",
            seconds,
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "swanctl --initiate: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    }

    /// `args` run in the namespace named by the lab variable `ns_var`.
    pub(crate) fn in_ns(&self, ns_var: &str, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", self.var(ns_var)])
            .args(args))
    }

    /// `ping -c COUNT` from a namespace; Ok with the output when a reply came back.
    pub(crate) fn ping(&self, ns_var: &str, dst: &str, count: &str) -> Result<String, String> {
        let out = self.in_ns(ns_var, &["ping", "-c", count, "-i", "0.3", "-W", "3", dst]);
        let o = text(&out.stdout);
        if out.status.success() {
            Ok(o)
        } else {
            Err(format!("ping {dst} from {ns_var} failed: {o}"))
        }
    }

    /// tshark on `iface` in namespace `ns_var`, writing `<iface>.pcap` in the lab
    /// directory; returns its path once tshark really captures (bounded: 15 s).
    pub(crate) fn capture(&mut self, ns_var: &str, iface: &str) -> PathBuf {
        let file = self.dir().join(format!("{iface}.pcap"));
        let log = self.dir().join(format!("tshark-{iface}.log"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.var(ns_var),
                "tshark",
                "-n",
                "-q",
                "-i",
            ])
            .arg(iface)
            .arg("-w")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.captures.push(child);
        let started = wait_for(Duration::from_secs(15), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Capturing on"))
        });
        assert!(started, "tshark did not start: {}", tail(&log, 10));
        file
    }

    /// Stops every capture (SIGINT flushes the file; a bounded wait). Waits a second
    /// first: packets of the last moment are still on their way from the kernel to dumpcap.
    pub(crate) fn stop_captures(&mut self) {
        std::thread::sleep(Duration::from_secs(1));
        for mut c in self.captures.drain(..) {
            stop_child(&mut c, "-INT", Duration::from_secs(5));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // No panics in here: this may run while a failing test unwinds.
        let dir = self.vars.get("LAB_DIR").cloned().unwrap_or_default();
        if std::thread::panicking() || self.keep_logs {
            eprintln!(
                "---- gateway log (tail) ----\n{}\n---- peer log (tail) ----\n{}\n----",
                tail(&Path::new(&dir).join("gateway.log"), 60),
                tail(&self.peer_log_path(), 60)
            );
        }
        let children = self
            .gateway
            .take()
            .into_iter()
            .chain(self.extra_children.drain(..));
        for mut child in children {
            stop_child(&mut child, "-TERM", Duration::from_secs(5));
        }
        for mut c in self.captures.drain(..) {
            stop_child(&mut c, "-INT", Duration::from_secs(5));
        }
        // pluto ignores SIGINT, lab.sh's first signal: TERM it here (our own process).
        if let Some(pid) = self.vars.get("PLUTO_PID") {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
            let _ = wait_for(Duration::from_secs(3), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
        }
        if !dir.is_empty() {
            let _ = Command::new(LAB_SH).args(["down", &dir]).status();
        }
    }
}
