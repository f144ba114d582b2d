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
    /// The result of reversing that translation, when it succeeded.
    pub reversed: Option<Result<Translation, NatError>>,
    /// Whether translating and reversing gave back the input bytes exactly. Expected to be
    /// true except when the input holds a checksum of 0xFFFF where a full computation
    /// gives 0x0000 (see [`NatTable::reverse`]); an input of random bytes can do that.
    pub restored: bool,
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
    let reversed = translated
        .is_ok()
        .then(|| table.reverse(direction, &mut copy));
    FuzzDirection {
        translated,
        reversed,
        restored: copy == data,
    }
}
