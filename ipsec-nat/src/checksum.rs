//! Incremental update of the Internet checksum (RFC 1071, RFC 1624).
//!
//! Every checksum the translator touches (IPv4 header, TCP, UDP, ICMP) is the ones'
//! complement of the ones'-complement sum of 16-bit words. When a word changes from `m` to
//! `m'`, RFC 1624 section 3 gives the new checksum as `HC' = ~(~HC + ~m + m')` (its
//! equation 3). Unlike the older `HC' = HC - ~m - m'` form of RFC 1141, equation 3 never turns
//! a correct checksum into the "negative zero" 0xFFFF, so the result equals a full
//! recomputation whenever the incoming checksum was right, and an incoming error survives
//! the update so the receiver still detects it.

/// Ones'-complement addition of two 16-bit words, with the end-around carry (RFC 1071
/// section 2 (1)).
fn ones_add(a: u16, b: u16) -> u16 {
    let (sum, carry) = a.overflowing_add(b);
    // A carry out of bit 15 means `sum` is at most 0xFFFE, so adding it back cannot wrap.
    sum.wrapping_add(u16::from(carry))
}

/// Accumulates word changes for one checksum field and applies them all at once.
///
/// Holds `~HC + sum(~m + m')` (RFC 1624 equation 3) so that several changed words (two for
/// an address, plus any checksum words inside an ICMP error's payload) cost one update.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Delta {
    sum: u16,
}

impl Delta {
    /// Records that the 16-bit word `old` became `new`.
    pub(crate) fn word(&mut self, old: u16, new: u16) {
        // An unchanged word adds ~m + m = negative zero; skipping it keeps a checksum field
        // of 0xFFFF from being renormalised to 0x0000 when nothing changed.
        if old == new {
            return;
        }
        self.sum = ones_add(ones_add(self.sum, !old), new);
    }

    /// Records that a 32-bit field (an IPv4 address) changed, as its two 16-bit words.
    pub(crate) fn address(&mut self, old: u32, new: u32) {
        let [old_hi, old_lo] = split(old);
        let [new_hi, new_lo] = split(new);
        self.word(old_hi, new_hi);
        self.word(old_lo, new_lo);
    }

    /// Returns the checksum field `hc` updated by every recorded change:
    /// `HC' = ~(~HC + ~m + m')` (RFC 1624 section 3, equation 3).
    pub(crate) fn apply(self, hc: u16) -> u16 {
        !ones_add(!hc, self.sum)
    }
}

/// Splits a 32-bit value into its big-endian 16-bit words.
fn split(value: u32) -> [u16; 2] {
    let [a, b, c, d] = value.to_be_bytes();
    [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full checksum over big-endian words, as RFC 1071 section 4.1 computes it.
    fn full(words: &[u16]) -> u16 {
        !words.iter().fold(0u16, |acc, w| ones_add(acc, *w))
    }

    #[test]
    fn rfc1624_section4_example() {
        // RFC 1624 section 4: HC = 0xDD2F, a word changes from 0x5555 to 0x3285, and
        // equation 3 gives HC' = 0x0000.
        let mut d = Delta::default();
        d.word(0x5555, 0x3285);
        assert_eq!(d.apply(0xDD2F), 0x0000);
    }

    #[test]
    fn address_update_matches_full_recomputation() {
        let mut words = [
            0x4500u16, 0x0054, 0x1234, 0x4000, 0x4001, 0x0a4d, 0x0002, 0xc0a8, 0x0a0f,
        ];
        let before = full(&words);
        let old = 0xc0a8_0a0f_u32;
        let new = 0x0a01_ff5c_u32;
        words[7] = 0x0a01;
        words[8] = 0xff5c;
        let mut d = Delta::default();
        d.address(old, new);
        assert_eq!(d.apply(before), full(&words));
    }

    #[test]
    fn no_change_leaves_checksum_alone() {
        let mut d = Delta::default();
        d.address(0x0a01_ff5c, 0x0a01_ff5c);
        assert_eq!(d.apply(0x1234), 0x1234);
        assert_eq!(d.apply(0x0000), 0x0000);
    }
}
