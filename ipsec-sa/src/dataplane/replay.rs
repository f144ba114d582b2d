//! The receiver's anti-replay window (RFC 4303 section 3.4.3), for 32-bit sequence numbers.
//!
//! The window remembers the highest sequence number accepted so far (its right edge) and,
//! for the `size - 1` numbers just below it, whether each one has been accepted. A number
//! above the right edge is new; one inside the window is new if its bit is clear; one to the
//! left of the window is too old and rejected, as is 0, which no sender ever uses
//! (RFC 4303 section 3.3.3: the first packet carries 1).
//!
//! Checking and recording are two steps on purpose: RFC 4303 section 3.4.3 asks that the
//! window be updated only after the packet's integrity check has passed, so that forged
//! packets cannot move the window.
//!
//! The bits live in a ring of 64-bit words indexed by `sequence mod capacity`, with one
//! spare word so that clearing whole words as the window slides never touches a live bit.
//! Check and record are O(1); sliding clears at most one word per 64 numbers skipped,
//! bounded by the ring length.

/// Why a sequence number was refused by [`ReplayWindow::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The sequence number was 0, which RFC 4303 section 3.3.3 never assigns.
    #[error("sequence number 0 is never sent")]
    Zero,
    /// The number is left of the window: older than `size` packets before the newest.
    #[error("sequence number {sequence} is older than the window (newest {newest})")]
    TooOld {
        /// The refused number.
        sequence: u32,
        /// The window's right edge.
        newest: u32,
    },
    /// A packet with this number was already accepted.
    #[error("sequence number {sequence} was already received")]
    Duplicate {
        /// The refused number.
        sequence: u32,
    },
}

/// A window size outside [`ReplayWindow::MIN_SIZE`]..=[`ReplayWindow::MAX_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("anti-replay window size {0} is outside 32..=65536")]
pub struct WindowSizeError(pub u32);

/// Anti-replay state of one inbound SA (RFC 4303 section 3.4.3).
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Number of sequence numbers the window covers, right edge included.
    size: u32,
    /// The highest sequence number recorded; 0 while nothing has been recorded.
    newest: u32,
    /// Ring of bits, bit `n mod (64 * words.len())` standing for sequence number `n`.
    words: Box<[u64]>,
}

impl ReplayWindow {
    /// The smallest size RFC 4303 section 3.4.3 allows.
    pub const MIN_SIZE: u32 = 32;
    /// The size RFC 4303 section 3.4.3 recommends as the default.
    pub const DEFAULT_SIZE: u32 = 64;
    /// The largest size we accept (8 KiB of bits).
    pub const MAX_SIZE: u32 = 65_536;

    /// A window covering `size` sequence numbers, with nothing received yet.
    pub fn new(size: u32) -> Result<Self, WindowSizeError> {
        if !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&size) {
            return Err(WindowSizeError(size));
        }
        // One spare word: see the module docs.
        let word_count = word_number(size.div_ceil(64) * 64) + 1;
        Ok(Self {
            size,
            newest: 0,
            words: vec![0; word_count].into_boxed_slice(),
        })
    }

    /// Number of sequence numbers the window covers.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The highest sequence number recorded so far (0 if none).
    pub fn newest(&self) -> u32 {
        self.newest
    }

    /// Whether a packet with `sequence` may be new. Changes nothing: call
    /// [`record`](Self::record) once the packet's ICV has been verified.
    pub fn check(&self, sequence: u32) -> Result<(), ReplayError> {
        if sequence == 0 {
            return Err(ReplayError::Zero);
        }
        if sequence > self.newest {
            return Ok(());
        }
        if self.newest - sequence >= self.size {
            return Err(ReplayError::TooOld {
                sequence,
                newest: self.newest,
            });
        }
        if self.is_set(sequence) {
            return Err(ReplayError::Duplicate { sequence });
        }
        Ok(())
    }

    /// Marks `sequence` as received, sliding the window right if it is the newest.
    ///
    /// Checks again first, so that a caller who skipped [`check`](Self::check) cannot
    /// corrupt the window; an error leaves the window unchanged.
    pub fn record(&mut self, sequence: u32) -> Result<(), ReplayError> {
        self.check(sequence)?;
        if sequence > self.newest {
            self.slide_to(sequence);
        }
        let (word, bit) = self.position(sequence);
        if let Some(w) = self.words.get_mut(word) {
            *w |= bit;
        }
        Ok(())
    }

    /// Moves the right edge to `sequence` (> newest), clearing the words that now stand
    /// for numbers not yet seen.
    fn slide_to(&mut self, sequence: u32) {
        let ring_words = self.words.len();
        let old_word = word_number(self.newest);
        let new_word = word_number(sequence);
        if new_word - old_word >= ring_words {
            self.words.fill(0);
        } else {
            // Absolute word numbers old_word+1 ..= new_word, each mapped into the ring.
            for abs in old_word + 1..=new_word {
                if let Some(w) = self.words.get_mut(abs % ring_words) {
                    *w = 0;
                }
            }
        }
        self.newest = sequence;
    }

    fn is_set(&self, sequence: u32) -> bool {
        let (word, bit) = self.position(sequence);
        self.words.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Word index in the ring and bit mask for `sequence`.
    fn position(&self, sequence: u32) -> (usize, u64) {
        let ring_words = self.words.len().max(1);
        (word_number(sequence) % ring_words, 1u64 << (sequence % 64))
    }
}

/// The absolute number of the 64-bit word holding `sequence`'s bit (fits any usize of at
/// least 32 bits, which every target we build for has).
fn word_number(sequence: u32) -> usize {
    (sequence / 64) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rejects_sizes_outside_bounds() {
        assert_eq!(ReplayWindow::new(31).unwrap_err(), WindowSizeError(31));
        assert_eq!(
            ReplayWindow::new(65_537).unwrap_err(),
            WindowSizeError(65_537)
        );
        assert_eq!(ReplayWindow::new(32).unwrap().size(), 32);
        assert_eq!(ReplayWindow::new(4096).unwrap().size(), 4096);
    }

    #[test]
    fn rejects_sequence_zero() {
        let w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(0), Err(ReplayError::Zero));
    }

    #[test]
    fn rejects_duplicate_and_too_old() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.record(1).unwrap();
        assert_eq!(w.check(1), Err(ReplayError::Duplicate { sequence: 1 }));
        w.record(100).unwrap();
        // 100 - 36 = 64 >= size: left of the window.
        assert_eq!(
            w.check(36),
            Err(ReplayError::TooOld {
                sequence: 36,
                newest: 100
            })
        );
        // 37 is the left edge: still inside, never seen.
        assert_eq!(w.check(37), Ok(()));
        w.record(37).unwrap();
        assert_eq!(w.check(37), Err(ReplayError::Duplicate { sequence: 37 }));
        assert_eq!(w.newest(), 100);
    }

    #[test]
    fn accepts_out_of_order_inside_window() {
        let mut w = ReplayWindow::new(64).unwrap();
        for s in [5, 3, 4, 1, 2, 69, 7, 6] {
            w.record(s).unwrap();
        }
        assert_eq!(w.check(8), Ok(()));
        assert_eq!(w.check(6), Err(ReplayError::Duplicate { sequence: 6 }));
        assert_eq!(w.newest(), 69);
        assert!(w.check(5).is_err(), "69 - 5 = 64 is left of the window");
    }

    #[test]
    fn big_jump_clears_the_whole_ring() {
        let mut w = ReplayWindow::new(128).unwrap();
        for s in 1..=200 {
            w.record(s).unwrap();
        }
        w.record(100_000).unwrap();
        // Everything inside the new window except the edge is unseen.
        for s in 100_000 - 127..100_000 {
            assert_eq!(w.check(s), Ok(()), "sequence {s}");
        }
        assert!(w.check(100_000 - 128).is_err());
    }

    #[test]
    fn works_at_the_top_of_the_sequence_space() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.record(u32::MAX - 1).unwrap();
        w.record(u32::MAX).unwrap();
        assert_eq!(
            w.check(u32::MAX),
            Err(ReplayError::Duplicate { sequence: u32::MAX })
        );
        assert_eq!(w.check(u32::MAX - 2), Ok(()));
    }

    #[test]
    fn record_refuses_what_check_refuses() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.record(10).unwrap();
        assert_eq!(w.record(10), Err(ReplayError::Duplicate { sequence: 10 }));
        assert_eq!(w.record(0), Err(ReplayError::Zero));
        assert_eq!(w.newest(), 10);
    }

    /// The obvious model: the set of everything ever recorded plus the right edge.
    struct Model {
        size: u32,
        newest: u32,
        seen: BTreeSet<u32>,
    }

    impl Model {
        fn check(&self, s: u32) -> bool {
            s != 0 && (s > self.newest || (self.newest - s < self.size && !self.seen.contains(&s)))
        }
    }

    fn sizes() -> impl Strategy<Value = u32> {
        prop_oneof![Just(32u32), Just(64), Just(100), Just(1024), Just(4096)]
    }

    proptest! {
        #[test]
        fn matches_reference_model(
            size in sizes(),
            base in prop_oneof![Just(0u32), Just(u32::MAX - 20_000), any::<u32>()],
            steps in proptest::collection::vec((0u32..12_000, any::<bool>()), 1..300),
        ) {
            let mut w = ReplayWindow::new(size).unwrap();
            let mut m = Model { size, newest: 0, seen: BTreeSet::new() };
            for (offset, record) in steps {
                let s = base.saturating_add(offset);
                let expected = m.check(s);
                prop_assert_eq!(w.check(s).is_ok(), expected, "check({})", s);
                if record {
                    prop_assert_eq!(w.record(s).is_ok(), expected, "record({})", s);
                    if expected {
                        m.seen.insert(s);
                        m.newest = m.newest.max(s);
                    }
                }
                prop_assert_eq!(w.newest(), m.newest);
            }
        }
    }
}
