//! The IKEv1 state machines of ipsec-sa behind `Endpoint::handle_datagram`: one tunnel
//! configured as in the fixtures (we are 192.0.2.2, the peer 192.0.2.1, 10.2.0.0/24 <->
//! 10.1.0.0/24, the fixtures' PSK), fed up to eight datagrams from the input, then a
//! timeout an hour later. Nothing may panic.
//!
//! Input: byte 0 is the mode (bit 0: we initiate first, so replies to our MM1 are
//! expected; bit 1: datagrams arrive on port 4500 instead of 500), then datagrams, each
//! behind a 2-byte big-endian length.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipsec_crypto::SecretBytes;
use ipsec_sa::endpoint::{Endpoint, EndpointConfig, TunnelConfig};
use ipsec_sa::selector::TrafficSelector;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

static START: OnceLock<Instant> = OnceLock::new();

fn drain(endpoint: &mut Endpoint) {
    while endpoint.poll_transmit().is_some() {}
    while endpoint.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let now = *START.get_or_init(Instant::now);
    let port = if mode & 2 != 0 { 4500 } else { 500 };
    let local = SocketAddr::from(([192, 0, 2, 2], port));
    let remote = SocketAddr::from(([192, 0, 2, 1], port));

    let mut endpoint = Endpoint::new(
        EndpointConfig::default(),
        Box::new(ChaCha20Rng::seed_from_u64(0)),
    );
    let (Ok(ours), Ok(theirs)) = (
        TrafficSelector::from_cidr([10, 2, 0, 0].into(), 24),
        TrafficSelector::from_cidr([10, 1, 0, 0].into(), 24),
    ) else {
        return;
    };
    let tunnel = TunnelConfig::new(
        "fuzz",
        SocketAddr::from(([192, 0, 2, 2], 500)),
        SocketAddr::from(([192, 0, 2, 1], 500)),
        SecretBytes::from_slice(b"interop-test-psk-0123456789"),
        ours,
        theirs,
    );
    let Ok(id) = endpoint.add_tunnel(tunnel) else {
        return;
    };
    if mode & 1 != 0 {
        let _ = endpoint.initiate(id, now);
        drain(&mut endpoint);
    }

    for step in 0..8u64 {
        let [hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        let at = now + Duration::from_millis(step * 10);
        endpoint.handle_datagram(at, local, remote, datagram);
        drain(&mut endpoint);
    }

    endpoint.handle_timeout(now + Duration::from_secs(3600));
    drain(&mut endpoint);
});
