//! The Security Policy Database (RFC 4301 section 4.4.1): which inner packets are
//! protected, sent in clear, or discarded.
//!
//! Each [`Policy`] pairs a local and a remote [`TrafficSelector`] with an action and a
//! priority. A packet is governed by the first policy, in priority order (lower number
//! first, then older first), whose selectors both match it: for an outbound packet the
//! source must be in `local` and the destination in `remote`; for an inbound packet the
//! other way round. RFC 4301 section 4.4.1 asks for exactly this ordered, first-match
//! search ("the SPD is an ordered database").
//!
//! # Lookup cost
//!
//! Policies are indexed by their remote address range, per address family. The index cuts
//! the address line at every range boundary into elementary segments; each segment keeps
//! the list, in priority order, of the policies whose remote range covers it. A lookup is
//! a binary search for the segment of the packet's remote address, O(log n) for n
//! policies, followed by a scan of that segment's list until the first full match, O(k)
//! for the k policies whose remote range covers the address. Site-to-site policies have
//! mostly disjoint remote subnets, so k is small (one or two, plus any catch-all) and a
//! lookup among thousands of policies costs a few dozen comparisons. A lookup never
//! allocates.
//!
//! Adding or removing a policy rebuilds the index: O(n log n + s) time and O(s) memory,
//! where s, the total length of the segment lists, is O(n) for nested or disjoint ranges
//! and O(n²) in the worst case of many partly overlapping ranges. Policies change at
//! configuration time, never per packet.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::selector::TrafficSelector;

use super::packet::PacketInfo;

/// What to do with packets a policy covers (RFC 4301 section 4.4.1: PROTECT, BYPASS, DISCARD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    /// Send through an ESP SA of this policy; drop if none is installed yet.
    Protect,
    /// Pass in clear, unprotected.
    Bypass,
    /// Drop.
    Discard,
}

/// One SPD entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Our side: sources of outbound packets, destinations of inbound ones.
    pub local: TrafficSelector,
    /// The far side: destinations of outbound packets, sources of inbound ones.
    pub remote: TrafficSelector,
    /// What to do with matching packets.
    pub action: PolicyAction,
    /// Lower numbers are consulted first; equal priorities keep insertion order.
    pub priority: u32,
}

impl Policy {
    /// Whether an outbound packet (from our side to the far side) is covered.
    pub fn matches_outbound(&self, p: &PacketInfo) -> bool {
        self.local.matches(p.src, p.protocol, p.src_port)
            && self.remote.matches(p.dst, p.protocol, p.dst_port)
    }

    /// Whether an inbound packet (from the far side to our side) is covered.
    pub fn matches_inbound(&self, p: &PacketInfo) -> bool {
        self.remote.matches(p.src, p.protocol, p.src_port)
            && self.local.matches(p.dst, p.protocol, p.dst_port)
    }
}

/// Names a policy for as long as it is in the SPD. Ids count up from 0 and are not reused
/// before 2^32 insertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(pub u32);

impl core::fmt::Display for PolicyId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "policy#{}", self.0)
    }
}

/// Which way a packet travels, for a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From our side into the tunnel.
    Outbound,
    /// From the tunnel (or in clear from the far side) to our side.
    Inbound,
}

/// The ordered policy list and its lookup index. See the module docs for costs.
#[derive(Clone, Debug, Default)]
pub struct Spd {
    /// Policies sorted by (priority, id): the order of the first-match search.
    ordered: Vec<(PolicyId, Policy)>,
    next_id: u32,
    v4: RangeIndex,
    v6: RangeIndex,
}

impl Spd {
    /// An empty SPD (every lookup answers "no policy").
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a policy and returns its id.
    pub fn insert(&mut self, policy: Policy) -> PolicyId {
        let id = PolicyId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let at = self
            .ordered
            .partition_point(|(i, p)| (p.priority, *i) < (policy.priority, id));
        self.ordered.insert(at, (id, policy));
        self.rebuild();
        id
    }

    /// Adds many policies at once, rebuilding the index once; returns their ids in order.
    pub fn insert_all(&mut self, policies: impl IntoIterator<Item = Policy>) -> Vec<PolicyId> {
        let mut ids = Vec::new();
        for policy in policies {
            let id = PolicyId(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            self.ordered.push((id, policy));
            ids.push(id);
        }
        self.ordered.sort_by_key(|(i, p)| (p.priority, *i));
        self.rebuild();
        ids
    }

    /// Removes a policy; returns it if it was present.
    pub fn remove(&mut self, id: PolicyId) -> Option<Policy> {
        let at = self.ordered.iter().position(|(i, _)| *i == id)?;
        let (_, policy) = self.ordered.remove(at);
        self.rebuild();
        Some(policy)
    }

    /// The policy with this id.
    pub fn get(&self, id: PolicyId) -> Option<&Policy> {
        self.ordered.iter().find(|(i, _)| *i == id).map(|(_, p)| p)
    }

    /// Every policy in search order.
    pub fn iter(&self) -> impl Iterator<Item = (PolicyId, &Policy)> + '_ {
        self.ordered.iter().map(|(i, p)| (*i, p))
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Whether there are no policies.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The first policy, in priority order, that covers the packet travelling `direction`.
    pub fn lookup(&self, packet: &PacketInfo, direction: Direction) -> Option<(PolicyId, &Policy)> {
        let remote_addr = match direction {
            Direction::Outbound => packet.dst,
            Direction::Inbound => packet.src,
        };
        let index = match remote_addr {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        index
            .candidates(addr_key(remote_addr))
            .iter()
            .filter_map(|&slot| self.ordered.get(slot as usize))
            .find(|(_, p)| match direction {
                Direction::Outbound => p.matches_outbound(packet),
                Direction::Inbound => p.matches_inbound(packet),
            })
            .map(|(i, p)| (*i, p))
    }

    /// The first PROTECT policy whose selectors cover both of an SA's selectors, which is
    /// where a negotiated SA with these selectors belongs.
    pub fn find_protect(
        &self,
        local: &TrafficSelector,
        remote: &TrafficSelector,
    ) -> Option<PolicyId> {
        self.ordered
            .iter()
            .find(|(_, p)| {
                p.action == PolicyAction::Protect
                    && p.local.covers(local)
                    && p.remote.covers(remote)
            })
            .map(|(i, _)| *i)
    }

    fn rebuild(&mut self) {
        self.v4 = RangeIndex::build(&self.ordered, true);
        self.v6 = RangeIndex::build(&self.ordered, false);
    }
}

/// An address as a number on one line per family.
fn addr_key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Elementary segments of the remote-address line of one family, each with the policies
/// (positions in `Spd::ordered`, ascending = priority order) whose remote range covers it.
#[derive(Clone, Debug, Default)]
struct RangeIndex {
    /// Segment start addresses, ascending; segment i runs up to `starts[i + 1] - 1`.
    starts: Vec<u128>,
    /// Segment i's candidates are `slots[ends[i - 1]..ends[i]]` (from 0 for i = 0).
    ends: Vec<usize>,
    /// All candidate lists, concatenated.
    slots: Vec<u32>,
}

impl RangeIndex {
    /// Sweeps the range boundaries left to right, keeping the set of open ranges.
    fn build(ordered: &[(PolicyId, Policy)], v4: bool) -> Self {
        // (address, is_end_plus_one, slot): openings at start, closings at end + 1.
        let mut events: Vec<(u128, bool, u32)> = Vec::new();
        for (slot, (_, p)) in ordered.iter().enumerate() {
            let Ok(slot) = u32::try_from(slot) else { break };
            let (start, end) = (p.remote.start(), p.remote.end());
            if start.is_ipv4() != v4 {
                continue;
            }
            events.push((addr_key(start), false, slot));
            if let Some(after) = addr_key(end).checked_add(1) {
                events.push((after, true, slot));
            }
        }
        events.sort_unstable();

        let mut index = Self::default();
        let mut open = BTreeSet::new();
        let mut i = 0;
        while let Some(&(at, _, _)) = events.get(i) {
            // Apply every event at this address, then snapshot the open set.
            while let Some(&(a, closing, slot)) = events.get(i) {
                if a != at {
                    break;
                }
                if closing {
                    open.remove(&slot);
                } else {
                    open.insert(slot);
                }
                i += 1;
            }
            index.starts.push(at);
            index.slots.extend(open.iter().copied());
            index.ends.push(index.slots.len());
        }
        index
    }

    fn candidates(&self, key: u128) -> &[u32] {
        let Some(seg) = self.starts.partition_point(|&s| s <= key).checked_sub(1) else {
            return &[];
        };
        let begin = match seg.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(seg).copied().unwrap_or(begin);
        self.slots.get(begin..end).unwrap_or_default()
    }

    /// The longest candidate list.
    #[cfg(test)]
    fn longest_list(&self) -> usize {
        let mut prev = 0;
        let mut longest = 0;
        for &end in &self.ends {
            longest = longest.max(end - prev);
            prev = end;
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(cidr: &str) -> TrafficSelector {
        let (a, l) = cidr.split_once('/').unwrap();
        TrafficSelector::from_cidr(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    fn pkt(src: &str, dst: &str, protocol: u8, sport: u16, dport: u16) -> PacketInfo {
        PacketInfo {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            src_port: sport,
            dst_port: dport,
            total_len: 0,
            dont_fragment: false,
        }
    }

    fn policy(local: &str, remote: &str, action: PolicyAction, priority: u32) -> Policy {
        Policy {
            local: ts(local),
            remote: ts(remote),
            action,
            priority,
        }
    }

    #[test]
    fn first_match_in_priority_order() {
        let mut spd = Spd::new();
        let catch_all = spd.insert(policy("0.0.0.0/0", "0.0.0.0/0", PolicyAction::Discard, 100));
        let tunnel = spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.0/24",
            PolicyAction::Protect,
            10,
        ));
        let host = spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.5/32",
            PolicyAction::Bypass,
            5,
        ));

        let out = pkt("10.1.0.1", "10.2.0.1", 1, 0, 0);
        assert_eq!(spd.lookup(&out, Direction::Outbound).unwrap().0, tunnel);
        let out = pkt("10.1.0.1", "10.2.0.5", 1, 0, 0);
        assert_eq!(spd.lookup(&out, Direction::Outbound).unwrap().0, host);
        let out = pkt("10.9.0.1", "10.2.0.1", 1, 0, 0);
        assert_eq!(spd.lookup(&out, Direction::Outbound).unwrap().0, catch_all);

        // Inbound swaps the roles of source and destination.
        let inb = pkt("10.2.0.1", "10.1.0.1", 1, 0, 0);
        assert_eq!(spd.lookup(&inb, Direction::Inbound).unwrap().0, tunnel);
        assert_eq!(spd.lookup(&inb, Direction::Outbound).unwrap().0, catch_all);
    }

    #[test]
    fn equal_priorities_keep_insertion_order_and_removal_works() {
        let mut spd = Spd::new();
        let a = spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.0/16",
            PolicyAction::Protect,
            1,
        ));
        let b = spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.0/24",
            PolicyAction::Bypass,
            1,
        ));
        let out = pkt("10.1.0.1", "10.2.0.1", 1, 0, 0);
        assert_eq!(spd.lookup(&out, Direction::Outbound).unwrap().0, a);
        assert_eq!(spd.remove(a).unwrap().action, PolicyAction::Protect);
        assert_eq!(spd.lookup(&out, Direction::Outbound).unwrap().0, b);
        assert!(spd.remove(a).is_none());
        assert_eq!(spd.len(), 1);
    }

    #[test]
    fn no_policy_for_other_family_or_uncovered_address() {
        let mut spd = Spd::new();
        spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.0/24",
            PolicyAction::Protect,
            1,
        ));
        assert!(spd
            .lookup(&pkt("10.1.0.1", "10.3.0.1", 1, 0, 0), Direction::Outbound)
            .is_none());
        assert!(spd
            .lookup(&pkt("fd00::1", "fd00::2", 1, 0, 0), Direction::Outbound)
            .is_none());
        spd.insert(policy(
            "fd00:1::/64",
            "fd00:2::/64",
            PolicyAction::Bypass,
            1,
        ));
        assert!(spd
            .lookup(
                &pkt("fd00:1::1", "fd00:2::2", 58, 0, 0),
                Direction::Outbound
            )
            .is_some());
    }

    #[test]
    fn ports_and_protocol_restrict_policies() {
        let mut spd = Spd::new();
        let web = spd.insert(Policy {
            local: ts("10.1.0.0/24"),
            remote: ts("10.2.0.0/24").with_protocol(6).with_port(443),
            action: PolicyAction::Bypass,
            priority: 1,
        });
        let rest = spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.0/24",
            PolicyAction::Protect,
            2,
        ));
        let https = pkt("10.1.0.1", "10.2.0.1", 6, 40000, 443);
        assert_eq!(spd.lookup(&https, Direction::Outbound).unwrap().0, web);
        let http = pkt("10.1.0.1", "10.2.0.1", 6, 40000, 80);
        assert_eq!(spd.lookup(&http, Direction::Outbound).unwrap().0, rest);
    }

    #[test]
    fn find_protect_requires_coverage() {
        let mut spd = Spd::new();
        spd.insert(policy(
            "10.1.0.0/24",
            "10.2.0.0/24",
            PolicyAction::Bypass,
            1,
        ));
        let p = spd.insert(policy(
            "10.1.0.0/16",
            "10.2.0.0/16",
            PolicyAction::Protect,
            2,
        ));
        assert_eq!(
            spd.find_protect(&ts("10.1.0.0/24"), &ts("10.2.0.0/24")),
            Some(p)
        );
        assert_eq!(
            spd.find_protect(&ts("10.1.0.0/8"), &ts("10.2.0.0/24")),
            None
        );
    }

    #[test]
    fn thousands_of_policies_keep_short_candidate_lists() {
        let mut spd = Spd::new();
        spd.insert(policy(
            "0.0.0.0/0",
            "0.0.0.0/0",
            PolicyAction::Discard,
            1000,
        ));
        spd.insert_all((0..4000u32).map(|i| {
            Policy {
                local: ts("192.168.0.0/16"),
                remote: TrafficSelector::from_cidr(
                    IpAddr::from((0x0a00_0000u32 | (i << 8)).to_be_bytes()),
                    24,
                )
                .unwrap(),
                action: PolicyAction::Protect,
                priority: 10,
            }
        }));
        let longest = spd.v4.longest_list();
        assert_eq!(longest, 2, "a /24 plus the catch-all");
        let out = pkt("192.168.1.1", "10.15.159.7", 17, 1, 2);
        let (id, p) = spd.lookup(&out, Direction::Outbound).unwrap();
        assert_eq!(p.action, PolicyAction::Protect);
        // 10.15.159.0 is the 0x0f9f'th /24: id 0 is the catch-all, so that is id 0xf9f + 1.
        assert_eq!(id, PolicyId(0x0f9f + 1));
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            0u8..4,
            0u8..=32,
            0u8..4,
            0u8..=32,
            prop_oneof![Just(0u8), Just(6), Just(17)],
            0u32..4,
        )
            .prop_map(|(la, ll, ra, rl, proto, prio)| Policy {
                local: TrafficSelector::from_cidr(IpAddr::from([10, la, 0, 0]), ll).unwrap(),
                remote: TrafficSelector::from_cidr(IpAddr::from([10, ra, 0, 0]), rl)
                    .unwrap()
                    .with_protocol(proto),
                action: PolicyAction::Protect,
                priority: prio,
            })
    }

    proptest! {
        /// The index gives the same answer as a plain scan in priority order.
        #[test]
        fn index_agrees_with_linear_scan(
            policies in proptest::collection::vec(arb_policy(), 0..40),
            removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            packets in proptest::collection::vec((0u8..4, 0u8..4, any::<u8>(), prop_oneof![Just(6u8), Just(17), Just(1)]), 1..40),
        ) {
            let mut spd = Spd::new();
            let mut ids = Vec::new();
            for p in &policies {
                ids.push(spd.insert(*p));
            }
            for r in removals {
                if !ids.is_empty() {
                    let id = ids.remove(r.index(ids.len()));
                    spd.remove(id);
                }
            }
            for (s, d, host, proto) in packets {
                let pk = PacketInfo {
                    src: IpAddr::from([10, s, 0, host]),
                    dst: IpAddr::from([10, d, 1, host]),
                    protocol: proto,
                    src_port: 1,
                    dst_port: 2,
                    total_len: 0,
                    dont_fragment: false,
                };
                let expected = spd.iter().find(|(_, p)| p.matches_outbound(&pk)).map(|(i, _)| i);
                prop_assert_eq!(spd.lookup(&pk, Direction::Outbound).map(|(i, _)| i), expected);
            }
        }
    }
}
