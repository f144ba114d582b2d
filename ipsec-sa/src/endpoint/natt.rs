//! NAT traversal in IKE (RFC 3947) and the vendor IDs that announce it and DPD (RFC 3706).
//!
//! Both peers announce NAT-T support with a vendor ID in the first two Main Mode messages,
//! exchange NAT-D hashes in MM3/MM4, and if either side finds its address rewritten, the
//! initiator moves to UDP port 4500 from MM5 on (RFC 3947 sections 3.1 to 4).

use std::net::{IpAddr, SocketAddr};

use ipsec_crypto::{hash, HashAlgorithm};

/// Vendor ID of RFC 3947: MD5("RFC 3947").
pub(crate) const VID_RFC3947: [u8; 16] = [
    0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f,
];
/// Vendor ID of draft-ietf-ipsec-nat-t-ike-02: MD5 of the draft name.
pub(crate) const VID_DRAFT_02: [u8; 16] = [
    0xcd, 0x60, 0x46, 0x43, 0x35, 0xdf, 0x21, 0xf8, 0x7c, 0xfd, 0xb2, 0xfc, 0x68, 0xb6, 0xa4, 0x48,
];
/// The same draft's ID with a trailing newline, as many implementations sent it.
pub(crate) const VID_DRAFT_02_N: [u8; 16] = [
    0x90, 0xcb, 0x80, 0x91, 0x3e, 0xbb, 0x69, 0x6e, 0x08, 0x63, 0x81, 0xb5, 0xec, 0x42, 0x7b, 0x1f,
];
/// Dead peer detection, RFC 3706 section 5.3 (the last two bytes are major 1, minor 0).
pub(crate) const VID_DPD: [u8; 16] = [
    0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57, 0x01, 0x00,
];

/// UDP port IKE moves to once a NAT is detected (RFC 3947 section 4).
pub(crate) const NATT_PORT: u16 = 4500;

/// Which NAT-T dialect the peers agreed on; they differ in code points only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NatTVariant {
    /// RFC 3947: NAT-D payload 20, encapsulation modes 3/4.
    Rfc3947,
    /// draft-ietf-ipsec-nat-t-ike-02: NAT-D payload 130, encapsulation modes 61443/61444.
    Draft02,
}

impl NatTVariant {
    /// The best variant announced by the peer's vendor IDs, preferring the RFC.
    pub(crate) fn from_vendor_ids<'a>(vids: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut best = None;
        for vid in vids {
            if vid == VID_RFC3947 {
                return Some(Self::Rfc3947);
            }
            if vid == VID_DRAFT_02 || vid == VID_DRAFT_02_N {
                best = Some(Self::Draft02);
            }
        }
        best
    }

    /// The vendor ID we send back as responder to confirm this variant.
    pub(crate) fn vendor_id(self) -> [u8; 16] {
        match self {
            Self::Rfc3947 => VID_RFC3947,
            Self::Draft02 => VID_DRAFT_02_N,
        }
    }

    /// The NAT-D payload type (RFC 3947 section 3.2; 130 in the draft).
    pub(crate) fn nat_d_payload_type(self) -> u8 {
        match self {
            Self::Rfc3947 => 20,
            Self::Draft02 => 130,
        }
    }

    /// The UDP-Encapsulated-Tunnel encapsulation mode (RFC 3947 section 5.1; 61443 in the
    /// draft).
    pub(crate) fn udp_tunnel_mode(self) -> u16 {
        match self {
            Self::Rfc3947 => 3,
            Self::Draft02 => 61443,
        }
    }
}

/// Whether the peer announced DPD support (RFC 3706 section 5.3).
pub(crate) fn has_dpd_vendor_id<'a>(vids: impl IntoIterator<Item = &'a [u8]>) -> bool {
    vids.into_iter().any(|v| v == VID_DPD)
}

/// HASH(CKY-I | CKY-R | IP | Port) of RFC 3947 section 3.2, with the negotiated hash.
pub(crate) fn nat_d_hash(
    alg: HashAlgorithm,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    addr: SocketAddr,
) -> Vec<u8> {
    let port = addr.port().to_be_bytes();
    let digest = match addr.ip() {
        IpAddr::V4(ip) => hash(alg, &[cky_i, cky_r, &ip.octets(), &port]),
        IpAddr::V6(ip) => hash(alg, &[cky_i, cky_r, &ip.octets(), &port]),
    };
    digest.to_vec()
}

/// The result of comparing NAT-D hashes (RFC 3947 section 3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NatDetection {
    /// Our address as the peer saw it is not our own: we are behind a NAT.
    pub(crate) local_behind_nat: bool,
    /// The peer's source address is none of the ones it listed: it is behind a NAT (or,
    /// like strongSwan with kernel-libipsec, pretends to be, to force UDP encapsulation).
    pub(crate) remote_behind_nat: bool,
}

impl NatDetection {
    /// Compares the peer's NAT-D hashes with the addresses of the datagram that carried
    /// them. The first hash is of the destination (us), the rest of the sender's possible
    /// source addresses.
    pub(crate) fn compare(
        alg: HashAlgorithm,
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
        local: SocketAddr,
        remote: SocketAddr,
        hashes: &[Vec<u8>],
    ) -> Option<Self> {
        let (first, rest) = hashes.split_first()?;
        let ours = nat_d_hash(alg, cky_i, cky_r, local);
        let theirs = nat_d_hash(alg, cky_i, cky_r, remote);
        Some(Self {
            local_behind_nat: !ct_eq(first, &ours),
            remote_behind_nat: !rest.iter().any(|h| ct_eq(h, &theirs)),
        })
    }

    /// Whether any NAT is in the path, so IKE floats to 4500 and ESP goes in UDP.
    pub(crate) fn any(self) -> bool {
        self.local_behind_nat || self.remote_behind_nat
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_cookies() -> ([u8; 8], [u8; 8]) {
        let mut i = [0u8; 8];
        let mut r = [0u8; 8];
        hex::decode_to_slice("49e7b1a273f9c380", &mut i).unwrap();
        hex::decode_to_slice("70d1d1509eca7767", &mut r).unwrap();
        (i, r)
    }

    #[test]
    fn nat_d_matches_strongswan_fixture() {
        // mm-aes128-sha1-modp2048-pfs frame 3: first NAT-D is the hash of 192.0.2.2:500.
        let (i, r) = fixture_cookies();
        let h = nat_d_hash(
            HashAlgorithm::Sha1,
            &i,
            &r,
            "192.0.2.2:500".parse().unwrap(),
        );
        assert_eq!(hex::encode(h), "3b7a86eb8003ad36f74662e41750c6feae72543e");
        let h = nat_d_hash(
            HashAlgorithm::Sha1,
            &i,
            &r,
            "192.0.2.1:500".parse().unwrap(),
        );
        assert_eq!(hex::encode(h), "6047408c7e7f8a3f5e03888f4ce6b45c92139b7e");
    }

    #[test]
    fn detects_strongswan_faked_nat() {
        // Frame 4 as received by the initiator: first hash is ours, second is random.
        let (i, r) = fixture_cookies();
        let hashes = vec![
            hex::decode("6047408c7e7f8a3f5e03888f4ce6b45c92139b7e").unwrap(),
            hex::decode("01527941ffb99ad0117ed3c91338d62914538760").unwrap(),
        ];
        let d = NatDetection::compare(
            HashAlgorithm::Sha1,
            &i,
            &r,
            "192.0.2.1:500".parse().unwrap(),
            "192.0.2.2:500".parse().unwrap(),
            &hashes,
        )
        .unwrap();
        assert_eq!(
            d,
            NatDetection {
                local_behind_nat: false,
                remote_behind_nat: true
            }
        );
        assert!(d.any());
    }

    #[test]
    fn picks_rfc_over_draft() {
        let vids: [&[u8]; 2] = [&VID_DRAFT_02_N, &VID_RFC3947];
        assert_eq!(
            NatTVariant::from_vendor_ids(vids),
            Some(NatTVariant::Rfc3947)
        );
        let vids: [&[u8]; 1] = [&VID_DRAFT_02];
        assert_eq!(
            NatTVariant::from_vendor_ids(vids),
            Some(NatTVariant::Draft02)
        );
        let vids: [&[u8]; 1] = [&VID_DPD];
        assert_eq!(NatTVariant::from_vendor_ids(vids), None);
        assert!(has_dpd_vendor_id(vids));
    }
}
