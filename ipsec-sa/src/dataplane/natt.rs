//! NAT traversal framing for the data plane (RFC 3948): sorting UDP 4500 payloads and
//! the NAT-keepalive.
//!
//! ESP in UDP is the ESP packet, unchanged, as the UDP payload (RFC 3948 section 2.1), so
//! [`super::DataPlane::encapsulate`] and [`super::DataPlane::decapsulate`] need no extra
//! framing; the gateway sends and receives on its UDP 4500 socket. What remains is telling
//! ESP from IKE and keepalives on that port, and sending keepalives so that a NAT in front
//! of us keeps its mapping.

use std::time::{Duration, Instant};

pub use ipsec_proto::natt::{classify, Udp4500, KEEPALIVE, NON_ESP_MARKER};

/// The NAT-keepalive payload: one 0xFF byte (RFC 3948 section 2.3).
pub const KEEPALIVE_PAYLOAD: [u8; 1] = [KEEPALIVE];

/// The keepalive interval RFC 3948 section 4 gives as default: 20 seconds.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// When to send the next NAT-keepalive to one peer, sans-IO.
///
/// RFC 3948 section 4: a peer behind a NAT sends a keepalive when it has sent nothing
/// else to the peer for the interval. Tell the timer about every packet sent to the peer
/// ([`KeepaliveTimer::on_sent`]); ask it when the next keepalive is due
/// ([`KeepaliveTimer::poll_timeout`]); at or after that time call
/// [`KeepaliveTimer::handle_timeout`], which says whether to send [`KEEPALIVE_PAYLOAD`]
/// now (calling early is harmless).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveTimer {
    interval: Duration,
    last_sent: Instant,
}

impl KeepaliveTimer {
    /// The longest interval accepted; longer ones are shortened to it.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

    /// A timer that counts from `now`, as if a packet had just been sent.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval: interval.min(Self::MAX_INTERVAL),
            last_sent: now,
        }
    }

    /// Records that something (ESP, IKE or a keepalive) was sent to the peer at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        if now > self.last_sent {
            self.last_sent = now;
        }
    }

    /// When the next keepalive is due.
    pub fn poll_timeout(&self) -> Instant {
        // Only at the very end of `Instant`'s range can this fail; then: due now.
        self.last_sent
            .checked_add(self.interval)
            .unwrap_or(self.last_sent)
    }

    /// Whether a keepalive must be sent now; if so, counts it as sent.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now >= self.poll_timeout() {
            self.last_sent = now;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_due_only_after_idle_interval() {
        let t0 = Instant::now();
        let mut timer = KeepaliveTimer::new(DEFAULT_KEEPALIVE_INTERVAL, t0);
        assert_eq!(timer.poll_timeout(), t0 + Duration::from_secs(20));
        assert!(!timer.handle_timeout(t0 + Duration::from_secs(19)));
        timer.on_sent(t0 + Duration::from_secs(15));
        assert!(!timer.handle_timeout(t0 + Duration::from_secs(34)));
        assert!(timer.handle_timeout(t0 + Duration::from_secs(35)));
        // Sent: the next one is 20 s later, and a second call at once says no.
        assert!(!timer.handle_timeout(t0 + Duration::from_secs(35)));
        assert_eq!(timer.poll_timeout(), t0 + Duration::from_secs(55));
    }

    #[test]
    fn classify_tells_keepalive_from_esp_and_ike() {
        assert_eq!(classify(&KEEPALIVE_PAYLOAD), Ok(Udp4500::Keepalive));
        let esp = [0x44, 0xe3, 0x82, 0x04, 0, 0, 0, 1, 9];
        assert_eq!(classify(&esp), Ok(Udp4500::Esp(&esp[..])));
        assert_eq!(classify(&[0, 0, 0, 0, 7]), Ok(Udp4500::Ike(&[7][..])));
        assert!(classify(&[1, 2, 3]).is_err());
    }
}
