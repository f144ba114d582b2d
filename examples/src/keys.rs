//! `--wireshark-keys DIR`: Wireshark decryption tables, appended as SAs come up.
//!
//! Two files in Wireshark's "user access table" format, the same text its preferences dialog
//! saves, so they can be copied into a profile directory or passed line by line with
//! `tshark -o "uat:esp_sa:<line>"` / `-o "uat:ikev1_decryption_table:<line>"`:
//! - `esp_sa`: one line per ESP SA (quoted strings: protocol, source, destination, SPI,
//!   cipher, key, integrity algorithm, key);
//! - `ikev1_decryption_table`: one line per ISAKMP SA (unquoted hex: initiator cookie, the
//!   phase 1 encryption key Ka of RFC 2409 Appendix B).
//!
//! These files hold live keys: the directory is created mode 0700 and the files 0600. This is
//! a debugging aid and is off unless asked for.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm};
use ipsec_sa::child::{ChildSaPair, EspSaKeys};

/// Writes decryption tables into one directory.
#[derive(Debug)]
pub(crate) struct KeyLog {
    dir: PathBuf,
}

impl KeyLog {
    /// Creates `dir` if needed (mode 0700).
    pub(crate) fn new(dir: &Path) -> std::io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Appends both directions of a Child SA pair to `esp_sa`.
    pub(crate) fn child_sa(&self, pair: &ChildSaPair) -> std::io::Result<()> {
        let local = pair.local.ip();
        let remote = pair.remote.ip();
        let mut text = esp_sa_line(local, remote, &pair.outbound);
        text.push('\n');
        text.push_str(&esp_sa_line(remote, local, &pair.inbound));
        text.push('\n');
        self.append("esp_sa", &text)
    }

    /// Appends an ISAKMP SA's initiator cookie and encryption key to `ikev1_decryption_table`.
    pub(crate) fn ike_sa(&self, initiator_cookie: &[u8; 8], ka: &[u8]) -> std::io::Result<()> {
        let line = format!("{},{}\n", hex::encode(initiator_cookie), hex::encode(ka));
        self.append("ikev1_decryption_table", &line)
    }

    fn append(&self, file: &str, text: &str) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dir.join(file))?;
        f.write_all(text.as_bytes())
    }
}

/// One `esp_sa` table line for packets from `src` to `dst` protected by `sa`.
fn esp_sa_line(src: std::net::IpAddr, dst: std::net::IpAddr, sa: &EspSaKeys) -> String {
    let family = if src.is_ipv4() { "IPv4" } else { "IPv6" };
    format!(
        "\"{family}\",\"{src}\",\"{dst}\",\"0x{:08x}\",\"{}\",\"0x{}\",\"{}\",\"0x{}\"",
        sa.spi,
        wireshark_cipher(sa.encryption),
        hex::encode(sa.encryption_key.expose()),
        wireshark_integrity(sa.integrity),
        hex::encode(sa.integrity_key.expose()),
    )
}

/// Wireshark's name for a cipher in the ESP SA table.
fn wireshark_cipher(alg: EncryptionAlgorithm) -> &'static str {
    match alg {
        EncryptionAlgorithm::DesCbc => "DES-CBC [RFC2405]",
        EncryptionAlgorithm::TripleDesCbc => "TripleDES-CBC [RFC2451]",
        EncryptionAlgorithm::AesCbc128
        | EncryptionAlgorithm::AesCbc192
        | EncryptionAlgorithm::AesCbc256 => "AES-CBC [RFC3602]",
    }
}

/// Wireshark's name for an integrity algorithm in the ESP SA table.
fn wireshark_integrity(alg: IntegrityAlgorithm) -> &'static str {
    match alg {
        IntegrityAlgorithm::HmacMd5_96 => "HMAC-MD5-96 [RFC2403]",
        IntegrityAlgorithm::HmacSha1_96 => "HMAC-SHA-1-96 [RFC2404]",
        IntegrityAlgorithm::HmacSha256_128 => "HMAC-SHA-256-128 [RFC4868]",
        IntegrityAlgorithm::HmacSha384_192 => "HMAC-SHA-384-192 [RFC4868]",
        IntegrityAlgorithm::HmacSha512_256 => "HMAC-SHA-512-256 [RFC4868]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipsec_crypto::SecretBytes;
    use ipsec_sa::child::{Encapsulation, Lifetime};
    use ipsec_sa::selector::TrafficSelector;

    fn keys(spi: u32, fill: u8) -> EspSaKeys {
        EspSaKeys {
            spi,
            encryption: EncryptionAlgorithm::AesCbc128,
            encryption_key: SecretBytes::new(vec![fill; 16]),
            integrity: IntegrityAlgorithm::HmacSha1_96,
            integrity_key: SecretBytes::new(vec![fill + 1; 20]),
        }
    }

    #[test]
    fn writes_both_directions_in_wireshark_uat_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = KeyLog::new(&dir.path().join("keys")).unwrap();
        let pair = ChildSaPair {
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "192.0.2.2:4500".parse().unwrap(),
            inbound: keys(0xc0ffee01, 0x11),
            outbound: keys(0x0000abcd, 0xa0),
            local_ts: TrafficSelector::from_cidr("10.1.0.0".parse().unwrap(), 24).unwrap(),
            remote_ts: TrafficSelector::from_cidr("10.2.0.0".parse().unwrap(), 24).unwrap(),
            encapsulation: Encapsulation::UdpTunnel,
            hard_lifetime: Lifetime::default(),
        };
        log.child_sa(&pair).unwrap();
        log.ike_sa(&[1, 2, 3, 4, 5, 6, 7, 8], &[0xab; 16]).unwrap();

        let esp = std::fs::read_to_string(dir.path().join("keys/esp_sa")).unwrap();
        let lines: Vec<&str> = esp.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "\"IPv4\",\"192.0.2.1\",\"192.0.2.2\",\"0x0000abcd\",\"AES-CBC [RFC3602]\",\"0x{}\",\"HMAC-SHA-1-96 [RFC2404]\",\"0x{}\"",
                "a0".repeat(16),
                "a1".repeat(20)
            )
        );
        assert!(lines[1].starts_with("\"IPv4\",\"192.0.2.2\",\"192.0.2.1\",\"0xc0ffee01\","));
        let ike = std::fs::read_to_string(dir.path().join("keys/ikev1_decryption_table")).unwrap();
        assert_eq!(ike, format!("0102030405060708,{}\n", "ab".repeat(16)));

        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("keys/esp_sa"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
