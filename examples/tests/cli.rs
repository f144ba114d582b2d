//! The command line without root: `check` on the shipped example and on broken configs,
//! and `status` without a running gateway.

#[cfg(test)]
mod support {
    use std::process::{Command, Output};

    pub(crate) const GATEWAY: &str = env!("CARGO_BIN_EXE_ipsec-gateway");
    pub(crate) const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/site-to-site.toml");

    /// `ipsec-gateway check CONFIG`, with BRANCH_OFFICE_PSK set to `psk_env` or unset.
    pub(crate) fn check(config: &std::path::Path, psk_env: Option<&str>) -> Output {
        let mut cmd = Command::new(GATEWAY);
        cmd.arg("check").arg(config).env_remove("BRANCH_OFFICE_PSK");
        if let Some(v) = psk_env {
            cmd.env("BRANCH_OFFICE_PSK", v);
        }
        cmd.output().unwrap()
    }

    pub(crate) fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
}

use std::process::Command;
use support::{check, text, EXAMPLE, GATEWAY};

#[test]
fn check_describes_the_example_without_printing_the_key() {
    let out = check(EXAMPLE.as_ref(), Some("cli-test-secret-value"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(
        "tunnel branch-office: 192.0.2.1 -> 198.51.100.2, initiate start, main mode, ids 192.0.2.1 -> 198.51.100.2"
    ), "{stdout}");
    assert!(
        stdout.contains("  subnets 10.1.0.0/24 <-> 10.2.0.0/24, 10.3.0.0/24"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  psk from env BRANCH_OFFICE_PSK"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("  phase 1: ").count(), 4, "{stdout}");
    // Algorithms in the file's own words.
    assert!(
        stdout.contains("  phase 1: aes256 sha256 group 14 lifetime 28800s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  phase 2: aes128 sha1 PFS group 14 lifetime 3600s"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("  phase 2: ").count(), 4, "{stdout}");
    assert!(
        stdout.contains("  dpd: delay 10s timeout 30s action restart"),
        "{stdout}"
    );
    assert!(
        stdout.starts_with(
            "gateway: tun ipgw0 mtu 1400, path mtu 1500, 1 data path thread(s), control socket "
        ),
        "{stdout}"
    );
    // Two remote subnets are both negotiated now: no limitation note any more.
    assert!(!stdout.contains("  note: "), "{stdout}");
    assert!(!stdout.contains("cli-test-secret-value"));
}

#[test]
fn rejects_example_without_its_psk_variable() {
    let out = check(EXAMPLE.as_ref(), None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: tunnel \"branch-office\": psk: environment variable BRANCH_OFFICE_PSK is not set\n"
    );
}

#[test]
fn rejects_broken_config_naming_tunnel_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let broken = example.replace("dh_group = [14]", "dh_group = [14, 19]");
    assert_ne!(broken, example);
    std::fs::write(&path, broken).unwrap();
    let out = check(&path, Some("k"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "error: tunnel \"branch-office\": phase1.dh_group[1]: group 19 is not supported; allowed: 1, 2, 5, 14"
        ),
        "{stderr}"
    );
}

#[test]
fn status_without_a_gateway_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = Command::new(GATEWAY)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}: ", socket.display())),
        "{stderr}"
    );
}

/// `status CONFIG` reads only the control socket's path from CONFIG: the example's PSK
/// variable need not be set (it fails on the missing gateway, not the key), and a config
/// without a control socket says so instead of trying a default path.
#[test]
fn status_with_a_config_reads_only_its_control_socket() {
    let out = Command::new(GATEWAY)
        .arg("status")
        .arg(EXAMPLE)
        .env_remove("BRANCH_OFFICE_PSK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: /run/ipsec-gateway.sock: "),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-socket.toml");
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let without = example.replace("control_socket = \"/run/ipsec-gateway.sock\"\n", "");
    assert_ne!(without, example);
    std::fs::write(&path, without).unwrap();
    let out = Command::new(GATEWAY)
        .arg("status")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {} names no gateway.control_socket: a gateway run with it has no control socket\n",
            path.display()
        )
    );
}
