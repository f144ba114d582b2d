//! The static NAT table: named one-to-one mappings, validated as a whole, with counters.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::subnet::Ipv4Subnet;

/// One static mapping: traffic for `local` (an address of an assigned static NAT subnet)
/// goes to `remote` (a host behind the remote peer), and replies from `remote` come back
/// from `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatEntry {
    /// The operator's name for the mapping; errors, logs and counters use it.
    pub name: String,
    /// The address local hosts send to, from an assigned static NAT subnet.
    pub local: Ipv4Addr,
    /// The real address of the host behind the remote peer.
    pub remote: Ipv4Addr,
}

impl NatEntry {
    /// Makes an entry named `name` mapping `local` to `remote`.
    pub fn new(name: impl Into<String>, local: Ipv4Addr, remote: Ipv4Addr) -> Self {
        Self {
            name: name.into(),
            local,
            remote,
        }
    }
}

/// Why a set of entries does not form a valid table. Each variant names the entry and the
/// rule it breaks; validation stops at the first broken rule, in entry order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// An entry has an empty name, so nothing could point at it in logs or counters.
    #[error("entry #{index} has an empty name")]
    EmptyName {
        /// Position of the entry in the list given.
        index: usize,
    },
    /// Two entries share a name.
    #[error("entry {name:?} appears twice (entries #{first} and #{second})")]
    DuplicateName {
        /// The name used twice.
        name: String,
        /// Position of the first entry with that name.
        first: usize,
        /// Position of the second.
        second: usize,
    },
    /// The local address lies in none of the assigned static NAT subnets.
    #[error("entry {name:?}: local address {local} lies in no assigned static NAT subnet")]
    LocalOutsideStaticNatSubnets {
        /// The entry's name.
        name: String,
        /// Its local address.
        local: Ipv4Addr,
    },
    /// The remote address lies in none of the remote protected subnets, so no SA could
    /// carry the translated traffic.
    #[error("entry {name:?}: remote address {remote} lies in no remote protected subnet")]
    RemoteOutsideProtectedSubnets {
        /// The entry's name.
        name: String,
        /// Its remote address.
        remote: Ipv4Addr,
    },
    /// Two entries map the same local address: a one-to-one NAT cannot tell where to send.
    #[error("entry {name:?}: local address {local} is already mapped by entry {other:?}")]
    DuplicateLocal {
        /// The later entry.
        name: String,
        /// The address both use.
        local: Ipv4Addr,
        /// The earlier entry.
        other: String,
    },
    /// Two entries map the same remote address: replies could not be given one source.
    #[error("entry {name:?}: remote address {remote} is already mapped by entry {other:?}")]
    DuplicateRemote {
        /// The later entry.
        name: String,
        /// The address both use.
        remote: Ipv4Addr,
        /// The earlier entry.
        other: String,
    },
    /// More entries than the table can index (over `u32::MAX`).
    #[error("{count} entries are more than a table can hold")]
    TooManyEntries {
        /// The number of entries given.
        count: usize,
    },
}

/// Position of an entry in its table, as reported by a [`crate::Translation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryIndex(pub(crate) u32);

impl EntryIndex {
    /// The position as a `usize`, for indexing the caller's own per-entry data.
    pub fn get(self) -> usize {
        // u32 -> usize is lossless on every platform std supports with 32- or 64-bit usize.
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// A point-in-time copy of one entry's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Packets whose destination was translated local -> remote.
    pub outbound_packets: u64,
    /// IPv4 total length summed over those packets.
    pub outbound_bytes: u64,
    /// Packets whose source was translated remote -> local.
    pub inbound_packets: u64,
    /// IPv4 total length summed over those packets.
    pub inbound_bytes: u64,
}

/// Per-entry counters: relaxed atomics, for the reasons given on [`NatTable`].
#[derive(Debug, Default)]
struct Counters {
    outbound_packets: AtomicU64,
    outbound_bytes: AtomicU64,
    inbound_packets: AtomicU64,
    inbound_bytes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            outbound_packets: self.outbound_packets.load(Ordering::Relaxed),
            outbound_bytes: self.outbound_bytes.load(Ordering::Relaxed),
            inbound_packets: self.inbound_packets.load(Ordering::Relaxed),
            inbound_bytes: self.inbound_bytes.load(Ordering::Relaxed),
        }
    }

    fn store(&self, s: CounterSnapshot) {
        self.outbound_packets
            .store(s.outbound_packets, Ordering::Relaxed);
        self.outbound_bytes
            .store(s.outbound_bytes, Ordering::Relaxed);
        self.inbound_packets
            .store(s.inbound_packets, Ordering::Relaxed);
        self.inbound_bytes.store(s.inbound_bytes, Ordering::Relaxed);
    }
}

/// A hasher for IPv4 addresses held as `u32` keys: one multiply, no allocation.
///
/// Hash flooding needs the attacker to choose the keys that get inserted; here only the
/// operator's configuration inserts, and packets only look up, so a keyed hash (SipHash,
/// the std default) would buy nothing but time on the per-packet path.
#[derive(Debug, Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type other than u32 is ever used; stays correct, if slower.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, value: u32) {
        // Fibonacci hashing: the multiply spreads the low bits that vary inside a subnet
        // over the high bits hashbrown uses for its control bytes.
        let h = (u64::from(value) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// Address -> (entry position, the address it translates to). The translated address is
/// kept in the map so the packet path touches one hash bucket and not the entry itself.
type AddrMap = HashMap<u32, (u32, u32), BuildHasherDefault<AddrHasher>>;

/// One entry with its counters.
#[derive(Debug)]
struct Slot {
    entry: NatEntry,
    counters: Counters,
}

/// A validated static NAT table.
///
/// Lookups are O(1) hash-map probes keyed by the address as a `u32`, with no allocation per
/// packet. The table is immutable once built except for its counters, so it is meant to be
/// shared as `Arc<NatTable>`:
///
/// * Replacing the table while traffic flows: build the new table with [`NatTable::new`]
///   (validation happens off the packet path), call [`NatTable::carry_counters_from`] with
///   the old one so counters of unchanged entries continue, then swap the `Arc` the data
///   plane reads (an `arc-swap` `ArcSwap`, or an `RwLock<Arc<NatTable>>` whose read guard is
///   held only long enough to clone the `Arc`). Packets in flight finish on the table they
///   started with; increments they make after the counters were carried over land in the
///   old table and are lost, which is at most a handful of packets per replacement.
/// * Reading counters: [`NatTable::counters`] or [`NatTable::counters_by_name`] at any time,
///   from any thread. Each entry counts packets and bytes (IPv4 total length) per direction
///   in `AtomicU64`s updated with relaxed ordering: that is what lets `translate` take
///   `&self`, so one table serves every data-plane thread with no lock and no `&mut`
///   plumbing. Each counter is exact; a snapshot taken while traffic flows may pair a packet
///   count with a byte count one packet behind. An ICMP error whose own address has no
///   entry but whose quoted datagram does is counted against the quoted datagram's entry.
///
/// ```
/// use std::net::Ipv4Addr;
/// use std::sync::{Arc, RwLock};
/// use ipsec_nat::{Ipv4Subnet, NatEntry, NatTable};
///
/// let nat = [Ipv4Subnet::new(Ipv4Addr::new(10, 1, 255, 88), 29)?];
/// let remote = [Ipv4Subnet::new(Ipv4Addr::new(192, 168, 10, 0), 24)?];
/// let web = NatEntry::new("web", Ipv4Addr::new(10, 1, 255, 92), Ipv4Addr::new(192, 168, 10, 15));
/// let shared = RwLock::new(Arc::new(NatTable::new(vec![web.clone()], &nat, &remote)?));
///
/// // Data plane, per packet: clone the Arc under the read lock, translate outside it.
/// let table = Arc::clone(&shared.read().unwrap());
/// # let _ = table;
///
/// // Management: build and validate off the packet path, carry counters, swap.
/// let db = NatEntry::new("db", Ipv4Addr::new(10, 1, 255, 93), Ipv4Addr::new(192, 168, 10, 16));
/// let next = NatTable::new(vec![web, db], &nat, &remote)?;
/// next.carry_counters_from(&shared.read().unwrap());
/// *shared.write().unwrap() = Arc::new(next);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct NatTable {
    slots: Box<[Slot]>,
    by_local: AddrMap,
    by_remote: AddrMap,
}

impl NatTable {
    /// Builds a table from `entries`, checking them as a whole:
    ///
    /// * every name is non-empty and unique;
    /// * every local address lies in one of `static_nat_subnets` (the subnets the provider
    ///   assigned for static NAT);
    /// * every remote address lies in one of `remote_protected_subnets` (the remote side of
    ///   the tunnel's policies), so translated traffic has an SA to travel in;
    /// * no local address and no remote address appears twice (one-to-one).
    ///
    /// Returns the first broken rule, naming the entry.
    pub fn new(
        entries: Vec<NatEntry>,
        static_nat_subnets: &[Ipv4Subnet],
        remote_protected_subnets: &[Ipv4Subnet],
    ) -> Result<Self, TableError> {
        if u32::try_from(entries.len()).is_err() {
            return Err(TableError::TooManyEntries {
                count: entries.len(),
            });
        }

        let mut names: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
        let mut by_local = AddrMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut by_remote = AddrMap::with_capacity_and_hasher(entries.len(), Default::default());
        for (index, (e, position)) in entries.iter().zip(0u32..).enumerate() {
            if e.name.is_empty() {
                return Err(TableError::EmptyName { index });
            }
            if let Some(first) = names.insert(&e.name, index) {
                return Err(TableError::DuplicateName {
                    name: e.name.clone(),
                    first,
                    second: index,
                });
            }
            if !static_nat_subnets.iter().any(|s| s.contains(e.local)) {
                return Err(TableError::LocalOutsideStaticNatSubnets {
                    name: e.name.clone(),
                    local: e.local,
                });
            }
            if !remote_protected_subnets
                .iter()
                .any(|s| s.contains(e.remote))
            {
                return Err(TableError::RemoteOutsideProtectedSubnets {
                    name: e.name.clone(),
                    remote: e.remote,
                });
            }
            let (local, remote) = (u32::from(e.local), u32::from(e.remote));
            if let Some((other, _)) = by_local.insert(local, (position, remote)) {
                return Err(TableError::DuplicateLocal {
                    name: e.name.clone(),
                    local: e.local,
                    other: name_at(&entries, other),
                });
            }
            if let Some((other, _)) = by_remote.insert(remote, (position, local)) {
                return Err(TableError::DuplicateRemote {
                    name: e.name.clone(),
                    remote: e.remote,
                    other: name_at(&entries, other),
                });
            }
        }
        drop(names);

        let slots = entries
            .into_iter()
            .map(|entry| Slot {
                entry,
                counters: Counters::default(),
            })
            .collect();
        Ok(Self {
            slots,
            by_local,
            by_remote,
        })
    }

    /// A table with no entries: every packet passes unchanged.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The entries in the order they were given.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &NatEntry> + '_ {
        self.slots.iter().map(|s| &s.entry)
    }

    /// The entry at `index`, if any.
    pub fn entry(&self, index: EntryIndex) -> Option<&NatEntry> {
        self.slots.get(index.get()).map(|s| &s.entry)
    }

    /// The entry that maps `local`, if any.
    pub fn entry_for_local(&self, local: Ipv4Addr) -> Option<&NatEntry> {
        self.lookup_local(u32::from(local))
            .and_then(|(i, _)| self.entry(i))
    }

    /// The entry that maps `remote`, if any.
    pub fn entry_for_remote(&self, remote: Ipv4Addr) -> Option<&NatEntry> {
        self.lookup_remote(u32::from(remote))
            .and_then(|(i, _)| self.entry(i))
    }

    /// The counters of the entry at `index`.
    pub fn counters(&self, index: EntryIndex) -> Option<CounterSnapshot> {
        self.slots.get(index.get()).map(|s| s.counters.snapshot())
    }

    /// The counters of the entry named `name`. A linear scan: meant for management, not
    /// for the packet path.
    pub fn counters_by_name(&self, name: &str) -> Option<CounterSnapshot> {
        self.slots
            .iter()
            .find(|s| s.entry.name == name)
            .map(|s| s.counters.snapshot())
    }

    /// Copies the counters of every entry of `old` that this table holds unchanged (same
    /// name, same local and remote address) into this table, so that replacing the table
    /// does not reset them. Entries that changed start from zero.
    pub fn carry_counters_from(&self, old: &Self) {
        for slot in self.slots.iter() {
            if let Some(prev) = old.slots.iter().find(|s| s.entry == slot.entry) {
                slot.counters.store(prev.counters.snapshot());
            }
        }
    }

    /// The entry whose local address is `addr`, and its remote address.
    pub(crate) fn lookup_local(&self, addr: u32) -> Option<(EntryIndex, u32)> {
        self.by_local
            .get(&addr)
            .map(|&(index, remote)| (EntryIndex(index), remote))
    }

    /// The entry whose remote address is `addr`, and its local address.
    pub(crate) fn lookup_remote(&self, addr: u32) -> Option<(EntryIndex, u32)> {
        self.by_remote
            .get(&addr)
            .map(|&(index, local)| (EntryIndex(index), local))
    }

    pub(crate) fn entry_name(&self, index: EntryIndex) -> &str {
        self.slots
            .get(index.get())
            .map_or("", |s| s.entry.name.as_str())
    }

    pub(crate) fn count(&self, index: EntryIndex, outbound: bool, bytes: usize) {
        let Some(slot) = self.slots.get(index.get()) else {
            return;
        };
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let c = &slot.counters;
        let (packets, total) = if outbound {
            (&c.outbound_packets, &c.outbound_bytes)
        } else {
            (&c.inbound_packets, &c.inbound_bytes)
        };
        packets.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
    }
}

fn name_at(entries: &[NatEntry], position: u32) -> String {
    usize::try_from(position)
        .ok()
        .and_then(|i| entries.get(i))
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(a: [u8; 4], len: u8) -> Ipv4Subnet {
        Ipv4Subnet::new(Ipv4Addr::from(a), len).unwrap()
    }

    fn nat_subnets() -> Vec<Ipv4Subnet> {
        vec![net([10, 1, 255, 88], 29)]
    }

    fn protected() -> Vec<Ipv4Subnet> {
        vec![net([192, 168, 10, 0], 24)]
    }

    fn entry(name: &str, local: [u8; 4], remote: [u8; 4]) -> NatEntry {
        NatEntry::new(name, Ipv4Addr::from(local), Ipv4Addr::from(remote))
    }

    #[test]
    fn builds_and_looks_up_both_ways() {
        let t = NatTable::new(
            vec![
                entry("web", [10, 1, 255, 92], [192, 168, 10, 15]),
                entry("db", [10, 1, 255, 93], [192, 168, 10, 16]),
            ],
            &nat_subnets(),
            &protected(),
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.entry_for_local(Ipv4Addr::new(10, 1, 255, 92))
                .unwrap()
                .name,
            "web"
        );
        assert_eq!(
            t.entry_for_remote(Ipv4Addr::new(192, 168, 10, 16))
                .unwrap()
                .name,
            "db"
        );
        assert!(t.entry_for_local(Ipv4Addr::new(10, 1, 255, 94)).is_none());
        assert!(t.entry_for_remote(Ipv4Addr::new(10, 1, 255, 92)).is_none());
    }

    #[test]
    fn rejects_local_outside_static_nat_subnets() {
        let e = NatTable::new(
            vec![entry("web", [10, 1, 255, 96], [192, 168, 10, 15])],
            &nat_subnets(),
            &protected(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            TableError::LocalOutsideStaticNatSubnets {
                name: "web".into(),
                local: Ipv4Addr::new(10, 1, 255, 96)
            }
        );
        assert_eq!(
            e.to_string(),
            "entry \"web\": local address 10.1.255.96 lies in no assigned static NAT subnet"
        );
    }

    #[test]
    fn rejects_remote_outside_protected_subnets() {
        let e = NatTable::new(
            vec![entry("web", [10, 1, 255, 92], [192, 168, 11, 15])],
            &nat_subnets(),
            &protected(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            TableError::RemoteOutsideProtectedSubnets {
                name: "web".into(),
                remote: Ipv4Addr::new(192, 168, 11, 15)
            }
        );
    }

    #[test]
    fn rejects_duplicate_local() {
        let e = NatTable::new(
            vec![
                entry("web", [10, 1, 255, 92], [192, 168, 10, 15]),
                entry("db", [10, 1, 255, 92], [192, 168, 10, 16]),
            ],
            &nat_subnets(),
            &protected(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            TableError::DuplicateLocal {
                name: "db".into(),
                local: Ipv4Addr::new(10, 1, 255, 92),
                other: "web".into()
            }
        );
    }

    #[test]
    fn rejects_duplicate_remote() {
        let e = NatTable::new(
            vec![
                entry("web", [10, 1, 255, 92], [192, 168, 10, 15]),
                entry("db", [10, 1, 255, 93], [192, 168, 10, 15]),
            ],
            &nat_subnets(),
            &protected(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry \"db\": remote address 192.168.10.15 is already mapped by entry \"web\""
        );
    }

    #[test]
    fn rejects_duplicate_and_empty_names() {
        let e = NatTable::new(
            vec![
                entry("web", [10, 1, 255, 92], [192, 168, 10, 15]),
                entry("web", [10, 1, 255, 93], [192, 168, 10, 16]),
            ],
            &nat_subnets(),
            &protected(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            TableError::DuplicateName {
                name: "web".into(),
                first: 0,
                second: 1
            }
        );
        let e = NatTable::new(
            vec![entry("", [10, 1, 255, 92], [192, 168, 10, 15])],
            &nat_subnets(),
            &protected(),
        )
        .unwrap_err();
        assert_eq!(e, TableError::EmptyName { index: 0 });
    }

    #[test]
    fn carries_counters_of_unchanged_entries_only() {
        let old = NatTable::new(
            vec![
                entry("web", [10, 1, 255, 92], [192, 168, 10, 15]),
                entry("db", [10, 1, 255, 93], [192, 168, 10, 16]),
            ],
            &nat_subnets(),
            &protected(),
        )
        .unwrap();
        old.count(EntryIndex(0), true, 84);
        old.count(EntryIndex(0), false, 60);
        old.count(EntryIndex(1), true, 100);

        let new = NatTable::new(
            vec![
                entry("db", [10, 1, 255, 94], [192, 168, 10, 16]),
                entry("web", [10, 1, 255, 92], [192, 168, 10, 15]),
            ],
            &nat_subnets(),
            &protected(),
        )
        .unwrap();
        new.carry_counters_from(&old);
        assert_eq!(
            new.counters_by_name("web").unwrap(),
            CounterSnapshot {
                outbound_packets: 1,
                outbound_bytes: 84,
                inbound_packets: 1,
                inbound_bytes: 60
            }
        );
        assert_eq!(
            new.counters_by_name("db").unwrap(),
            CounterSnapshot::default()
        );
    }
}
