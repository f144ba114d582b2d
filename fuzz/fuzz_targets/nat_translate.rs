//! Static NAT of arbitrary inner packets (ipsec-nat): translating never panics, a
//! translation that rewrote the packet can always be reversed, and one that rewrote
//! nothing leaves the bytes alone.
//!
//! The restored bytes are not compared with the input: a forged checksum of 0xFFFF
//! legitimately comes back as 0x0000 (documented in `ipsec_nat::NatTable::reverse`).

#![no_main]

use std::sync::OnceLock;

use ipsec_nat::fuzz_support::{example_table, translate_both_ways};
use ipsec_nat::NatTable;
use libfuzzer_sys::fuzz_target;

static TABLE: OnceLock<NatTable> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let table = TABLE.get_or_init(example_table);
    let outcome = translate_both_ways(table, data);
    for direction in [&outcome.outbound, &outcome.inbound] {
        if let Err(what) = direction.check() {
            panic!("{what}: {direction:?}");
        }
    }
});
