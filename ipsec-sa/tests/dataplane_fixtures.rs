//! ESP packets captured between two strongSwan 5.9.8 peers (`/work/shared/fixtures`):
//! the data plane must decrypt each to exactly the recorded inner packet and, given the
//! same IV, encrypt each inner packet back to the captured bytes, ICV included.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed step should stop the test with its message"
)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipsec_crypto::{EncryptionAlgorithm, IntegrityAlgorithm, SecretBytes};
use ipsec_sa::child::{ChildSaPair, Encapsulation, EspSaKeys, Lifetime};
use ipsec_sa::dataplane::{
    DataPlane, DataPlaneConfig, DropReason, Outbound, Policy, PolicyAction, MAX_HEADROOM,
    MAX_TAILROOM,
};
use ipsec_sa::selector::TrafficSelector;
use rand_core::{CryptoRng, RngCore};
use serde_json::Value;

/// Hands out exactly the bytes it was given: the captured packet's IV.
struct IvRng(Vec<u8>);

impl RngCore for IvRng {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used for IVs")
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used for IVs")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert_eq!(dest.len(), self.0.len(), "IV length");
        dest.copy_from_slice(&self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for IvRng {}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// Every fixture scenario with ESP packets; fails loudly if the directory is missing.
fn sessions() -> Vec<(String, Value)> {
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fixtures directory {} is missing ({e}); the ESP fixture tests need it",
            dir.display()
        )
    });
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path().join("session.json");
        if !path.exists() {
            continue;
        }
        let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if json["esp_packets"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            out.push((json["scenario"].as_str().unwrap().to_owned(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 6,
        "expected the ESP scenarios in {}",
        dir.display()
    );
    out
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn algorithms(chosen: &Value) -> (EncryptionAlgorithm, IntegrityAlgorithm) {
    let enc = match (
        chosen["transform_id"].as_u64(),
        chosen["key_length_bits"].as_u64(),
    ) {
        (Some(2), _) => EncryptionAlgorithm::DesCbc,
        (Some(3), _) => EncryptionAlgorithm::TripleDesCbc,
        (Some(12), Some(128)) => EncryptionAlgorithm::AesCbc128,
        (Some(12), Some(192)) => EncryptionAlgorithm::AesCbc192,
        (Some(12), Some(256)) => EncryptionAlgorithm::AesCbc256,
        other => panic!("unexpected ESP transform {other:?}"),
    };
    let integ = match chosen["auth_algorithm"].as_u64() {
        Some(1) => IntegrityAlgorithm::HmacMd5_96,
        Some(2) => IntegrityAlgorithm::HmacSha1_96,
        Some(5) => IntegrityAlgorithm::HmacSha256_128,
        Some(6) => IntegrityAlgorithm::HmacSha384_192,
        Some(7) => IntegrityAlgorithm::HmacSha512_256,
        other => panic!("unexpected auth algorithm {other:?}"),
    };
    assert_eq!(chosen["icv_bytes"].as_u64(), Some(integ.icv_len() as u64));
    (enc, integ)
}

fn subnet(id: &Value) -> TrafficSelector {
    // ID_IPV4_ADDR_SUBNET body: type, protocol, port (4 bytes), address, mask.
    let body = hx(&id["body_hex"]);
    assert_eq!(body[0], 4, "ID_IPV4_ADDR_SUBNET expected");
    let addr = IpAddr::from([body[4], body[5], body[6], body[7]]);
    let mask = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
    TrafficSelector::from_cidr(addr, u8::try_from(mask.count_ones()).unwrap()).unwrap()
}

/// One side's data plane: `me` is "initiator" or "responder" (phase-1 roles, which are
/// also the Quick Mode roles in these captures).
struct Side {
    dp: DataPlane,
    addr: String,
}

fn side(session: &Value, me: &str) -> Side {
    let qm = &session["quick_modes"][0];
    assert_eq!(qm["qm_initiator"].as_str(), Some("initiator"));
    let (enc, integ) = algorithms(&qm["proposal_chosen"]);
    let keys = |sa: &Value| EspSaKeys {
        spi: u32::from_str_radix(sa["spi"].as_str().unwrap(), 16).unwrap(),
        encryption: enc,
        encryption_key: SecretBytes::new(hx(&sa["encryption_key"])),
        integrity: integ,
        integrity_key: SecretBytes::new(hx(&sa["integrity_key"])),
    };
    let sas = qm["sas"].as_array().unwrap();
    let sa_dir = |d: &str| sas.iter().find(|s| s["direction"] == d).unwrap();
    let i_to_r = keys(sa_dir("qm_initiator->qm_responder"));
    let r_to_i = keys(sa_dir("qm_responder->qm_initiator"));
    let i_net = subnet(&qm["id_ci"]);
    let r_net = subnet(&qm["id_cr"]);
    let i_addr: IpAddr = session["initiator"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r_addr: IpAddr = session["responder"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let (inbound, outbound, local_ts, remote_ts, local, remote) = if me == "initiator" {
        (r_to_i, i_to_r, i_net, r_net, i_addr, r_addr)
    } else {
        (i_to_r, r_to_i, r_net, i_net, r_addr, i_addr)
    };
    let pair = ChildSaPair {
        local: SocketAddr::new(local, 4500),
        remote: SocketAddr::new(remote, 4500),
        inbound,
        outbound,
        local_ts,
        remote_ts,
        encapsulation: Encapsulation::UdpTunnel,
        hard_lifetime: Lifetime::default(),
    };
    let mut dp = DataPlane::new(DataPlaneConfig::default());
    dp.add_policy(Policy {
        local: local_ts,
        remote: remote_ts,
        action: PolicyAction::Protect,
        priority: 1,
    });
    dp.install(&pair).unwrap();
    Side {
        dp,
        addr: local.to_string(),
    }
}

/// Whether the packet was sent by `side` (its source address is the side's).
fn sent_by(packet: &Value, side: &Side) -> bool {
    packet["src"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}:", side.addr))
}

#[test]
fn decapsulates_every_captured_packet_to_the_recorded_inner_packet() {
    let mut total = 0;
    for (name, session) in sessions() {
        let mut initiator = side(&session, "initiator");
        let mut responder = side(&session, "responder");
        for p in session["esp_packets"].as_array().unwrap() {
            assert_eq!(p["icv_ok"], true);
            let receiver = if sent_by(p, &initiator) {
                &mut responder
            } else {
                &mut initiator
            };
            let mut esp = hx(&p["esp_hex"]);
            let inbound = receiver
                .dp
                .decapsulate(&mut esp)
                .unwrap_or_else(|e| panic!("{name} frame {}: {e}", p["frame"]));
            assert_eq!(
                hex::encode(&esp[inbound.inner.clone()]),
                p["inner_ip_hex"].as_str().unwrap(),
                "{name} frame {}",
                p["frame"]
            );
            assert_eq!(u64::from(inbound.sequence), p["seq"].as_u64().unwrap());
            assert_eq!(inbound.ip_version, 4);
            total += 1;
        }
        // Played again, every packet is a replay.
        for p in session["esp_packets"].as_array().unwrap() {
            let receiver = if sent_by(p, &initiator) {
                &mut responder
            } else {
                &mut initiator
            };
            let err = receiver.dp.decapsulate(&mut hx(&p["esp_hex"])).unwrap_err();
            assert_eq!(err.reason(), DropReason::Replay, "{name}");
        }
    }
    assert!(total >= 48, "only {total} packets checked");
}

#[test]
fn encapsulates_every_captured_inner_packet_to_the_captured_bytes() {
    let mut total = 0;
    for (name, session) in sessions() {
        let mut initiator = side(&session, "initiator");
        let mut responder = side(&session, "responder");
        // Packets of each direction appear in sequence-number order, 1, 2, ..., so
        // sending them in capture order reproduces the sequence numbers too.
        for p in session["esp_packets"].as_array().unwrap() {
            let sender = if sent_by(p, &initiator) {
                &mut initiator
            } else {
                &mut responder
            };
            let inner = hx(&p["inner_ip_hex"]);
            let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
            let range = MAX_HEADROOM..MAX_HEADROOM + inner.len();
            buf[range.clone()].copy_from_slice(&inner);
            let mut iv = IvRng(hx(&p["iv"]));
            let out = sender.dp.encapsulate(&mut buf, range, &mut iv).unwrap();
            let Outbound::Protected(t) = out else {
                panic!("{name}: expected protection, got {out:?}")
            };
            assert_eq!(
                hex::encode(&buf[t.packet.clone()]),
                p["esp_hex"].as_str().unwrap(),
                "{name} frame {}",
                p["frame"]
            );
            assert_eq!(t.remote.to_string(), p["dst"].as_str().unwrap());
            assert_eq!(t.encapsulation, Encapsulation::UdpTunnel);
            total += 1;
        }
    }
    assert!(total >= 48, "only {total} packets checked");
}
