//! Entry points for fuzz targets (the workspace's `fuzz/` project calls these).

use std::net::Ipv4Addr;

use crate::subnet::Ipv4Subnet;
use crate::table::{NatEntry, NatTable};
use crate::translate::{Direction, NatError, Translation};

/// A small fixed table for fuzzing: the example mapping 10.1.255.92 <-> 192.168.10.15 and
/// two neighbours, so that random packets hit entries now and then.
pub fn example_table() -> NatTable {
    let subnet = |a: [u8; 4], len| Ipv4Subnet::new(Ipv4Addr::from(a), len);
    let (Ok(nat), Ok(protected)) = (subnet([10, 1, 255, 88], 29), subnet([192, 168, 10, 0], 24))
    else {
        return NatTable::empty();
    };
    let entries = vec![
        NatEntry::new(
            "web",
            Ipv4Addr::new(10, 1, 255, 92),
            Ipv4Addr::new(192, 168, 10, 15),
        ),
        NatEntry::new(
            "db",
            Ipv4Addr::new(10, 1, 255, 93),
            Ipv4Addr::new(192, 168, 10, 16),
        ),
        NatEntry::new(
            "gw",
            Ipv4Addr::new(10, 1, 255, 89),
            Ipv4Addr::new(192, 168, 10, 1),
        ),
    ];
    NatTable::new(entries, &[nat], &[protected]).unwrap_or_default()
}

/// What [`translate_both_ways`] saw for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzDirection {
    /// The result of translating a copy of the input.
    pub translated: Result<Translation, NatError>,
    /// The result of reversing that translation, when it succeeded and rewrote the packet.
    pub reversed: Option<Result<Translation, NatError>>,
    /// Whether translating and reversing gave back the input bytes exactly. Expected to be
    /// true except when the input holds a checksum of 0xFFFF where a full computation
    /// gives 0x0000 (see [`NatTable::reverse`]); an input of random bytes can do that.
    pub restored: bool,
}

impl FuzzDirection {
    /// The round-trip invariant the fuzz target and the property tests assert: a packet
    /// that was rewritten reverses successfully; one that passed untranslated, or was
    /// refused, is left exactly as it came. Returns what was violated.
    pub fn check(&self) -> Result<(), &'static str> {
        match &self.translated {
            Ok(t) if t.is_translated() => match self.reversed {
                Some(Ok(_)) => Ok(()),
                _ => Err("reverse failed after a successful translation"),
            },
            Ok(_) | Err(_) if self.reversed.is_some() => Err("a packet not rewritten was reversed"),
            Ok(_) | Err(_) if !self.restored => Err("a packet not rewritten was changed"),
            Ok(_) | Err(_) => Ok(()),
        }
    }
}

/// What [`translate_both_ways`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzOutcome {
    /// Outbound translation of the input.
    pub outbound: FuzzDirection,
    /// Inbound translation of the input.
    pub inbound: FuzzDirection,
}

/// Translates arbitrary bytes outbound and inbound (each on its own copy), reverses each
/// translation, and reports what happened. Never panics; a fuzz target calls it with
/// [`example_table`] and can assert that a successful translation followed by a reverse
/// succeeds too. Allocates two copies of `data`, unlike the packet path.
pub fn translate_both_ways(table: &NatTable, data: &[u8]) -> FuzzOutcome {
    FuzzOutcome {
        outbound: one_way(table, Direction::Outbound, data),
        inbound: one_way(table, Direction::Inbound, data),
    }
}

fn one_way(table: &NatTable, direction: Direction, data: &[u8]) -> FuzzDirection {
    let mut copy = data.to_vec();
    let translated = table.translate(direction, &mut copy);
    // Only a packet that was rewritten has anything to undo. An untranslated packet may
    // match the table the other way round (its source is a remote address, say), and
    // "reversing" it would rewrite a packet that was never translated.
    let reversed = translated
        .as_ref()
        .is_ok_and(Translation::is_translated)
        .then(|| table.reverse(direction, &mut copy));
    FuzzDirection {
        translated,
        reversed,
        restored: copy == data,
    }
}

#[cfg(test)]
mod regression {
    use super::*;

    /// Found by the `nat_translate` fuzz target: a UDP packet from a remote address with a
    /// cut-off UDP header, going outbound to an address with no entry. Outbound leaves it
    /// alone; "reversing" that no-op used to rewrite its source and fail on the UDP header.
    #[test]
    fn untranslated_packet_is_not_reversed() {
        let mut packet = vec![
            0x45, 0, 0, 23, 0, 0, 0x40, 0, 0x40, 17, 0, 0, 192, 168, 10, 15, 10, 1, 255, 69,
        ];
        packet.extend_from_slice(&[0x12, 0x34, 0x56]);
        let outcome = translate_both_ways(&example_table(), &packet);
        assert_eq!(outcome.outbound.translated, Ok(Translation::NOT_TRANSLATED));
        assert_eq!(outcome.outbound.reversed, None);
        assert!(outcome.outbound.restored);
    }

    /// The fuzzer's original input (IHL 11, total length 47, UDP header cut short): the
    /// invariant the fuzz target asserts holds in both directions.
    #[test]
    fn fuzz_input_11faedb4_keeps_the_reverse_invariant() {
        let data = [
            0x4b, 0x00, 0x00, 0x2f, 0xb7, 0x77, 0x40, 0x00, 0x40, 0x11, 0xa1, 0x4d, 0x00, 0x1b,
            0x65, 0x6e, 0xc0, 0xa8, 0x0a, 0x0f, 0x0a, 0x01, 0xff, 0x45, 0x00, 0x00, 0x3c, 0x3c,
            0x00, 0x00, 0x00, 0x40, 0x06, 0x42, 0x31, 0x0a, 0x4d, 0x00, 0x02, 0x0a, 0x01, 0xff,
            0x5c, 0xb7, 0x8e, 0x1e, 0x61, 0x5d, 0x54, 0xdf, 0x96, 0x00, 0x00, 0x2b, 0x2b, 0x2b,
            0x2b, 0x2b, 0x2b, 0xec, 0x85, 0x2b, 0x2b, 0x2b, 0x2b, 0x2b, 0x2b, 0x2b, 0x2b, 0x2b,
            0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x71, 0x6c, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
            0x2f, 0x02, 0x08, 0x5c, 0x0a, 0x4d, 0x03, 0x03, 0x11, 0x02, 0x40, 0xf0, 0xa9, 0xa9,
            0xa9, 0x9f, 0x01, 0xbc, 0x40, 0x14, 0xe9, 0x0f, 0x00, 0xa8, 0x44, 0xc0, 0xff, 0x69,
            0x0a, 0xff, 0xa8, 0x0a, 0x0f, 0xfd, 0xff, 0xff, 0xff, 0x0a, 0x4d, 0x00, 0x1b, 0x65,
            0x0a,
        ];
        let outcome = translate_both_ways(&example_table(), &data);
        for direction in [&outcome.outbound, &outcome.inbound] {
            if direction.translated.is_ok() {
                assert!(!matches!(direction.reversed, Some(Err(_))), "{direction:?}");
            }
        }
    }
}
