//! The deadlines of one ISAKMP SA and its exchanges, in one table keyed by [`Timer`].
//!
//! Every deadline an SA can have lives here (phase-1 retransmission, each Quick Mode's
//! retransmission and linger time, DPD, lifetime), so `poll_timeout` is a minimum over one
//! small map and `handle_timeout` fires each expired entry once: an entry is removed when it
//! fires, which makes calling too early or twice harmless.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The longest delay we schedule: lifetimes from a peer can be any 64-bit number of
/// seconds, which `Instant` arithmetic cannot hold.
const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + delay`, with `delay` capped at a century so that no peer-chosen value overflows.
pub(crate) fn after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(MAX_DELAY)).unwrap_or(now)
}

/// `fraction` of `d` (for rekey points), computed on the capped delay.
pub(crate) fn part_of(d: Duration, fraction: f64) -> Duration {
    d.min(MAX_DELAY).mul_f64(fraction.clamp(0.0, 1.0))
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Resend our last phase-1 request (the schedule is ours to pick, RFC 2408 section 5).
    Phase1Retransmit,
    /// Give up on an unfinished phase 1 (responder half-open limit) or forget a dead SA.
    Phase1Deadline,
    /// Resend the last message of the Quick Mode with this message ID.
    QuickModeRetransmit(u32),
    /// Forget the finished Quick Mode with this message ID (kept until then only to answer
    /// retransmissions, RFC 2409 section 5.5).
    QuickModeLinger(u32),
    /// Start a Quick Mode to replace the ESP SA pair with this inbound SPI before it
    /// expires.
    ChildRekey(u32),
    /// The ESP SA pair with this inbound SPI reaches its hard lifetime.
    ChildExpire(u32),
    /// Start a new Main Mode before this ISAKMP SA expires (initiator only).
    Phase1Rekey,
    /// Dead peer detection: probe, or declare the peer dead (RFC 3706).
    Dpd,
    /// Send a NAT-keepalive to hold our NAT mapping open (RFC 3948 section 2.3).
    NatKeepalive,
    /// The ISAKMP SA's lifetime ends.
    Phase1Expire,
}

/// Deadlines by [`Timer`].
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    deadlines: BTreeMap<Timer, Instant>,
}

impl TimerTable {
    /// Arms `timer` for `at`, replacing any earlier setting.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines.insert(timer, at);
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines.remove(&timer);
    }

    /// When `timer` fires, if armed.
    #[cfg(test)]
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines.get(&timer).copied()
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Disarms every timer but the ESP SAs' rekey and expiry: an ISAKMP SA that ends
    /// leaves its ESP SAs running until their own lifetime ends (RFC 2409 section 5.5),
    /// and their replacement is negotiated on a newer ISAKMP SA.
    pub(crate) fn keep_only_child_timers(&mut self) {
        self.deadlines
            .retain(|t, _| matches!(t, Timer::ChildExpire(_) | Timer::ChildRekey(_)));
    }

    /// Disarms and returns every timer due at `now`, in key order.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Timer> {
        let due: Vec<Timer> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in &due {
            self.deadlines.remove(t);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_delays_do_not_overflow() {
        let t0 = Instant::now();
        assert_eq!(after(t0, Duration::MAX), t0 + MAX_DELAY);
        assert_eq!(part_of(Duration::MAX, 0.9), MAX_DELAY.mul_f64(0.9));
        assert_eq!(
            part_of(Duration::from_secs(100), 0.9),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn fires_once_and_not_early() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Dpd, t0 + Duration::from_secs(5));
        t.set(Timer::QuickModeRetransmit(7), t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(t.expire(t0).is_empty());
        assert_eq!(
            t.expire(t0 + Duration::from_secs(1)),
            vec![Timer::QuickModeRetransmit(7)]
        );
        assert!(t.expire(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(t.get(Timer::Dpd), Some(t0 + Duration::from_secs(5)));
        t.stop(Timer::Dpd);
        assert_eq!(t.next(), None);
    }
}
