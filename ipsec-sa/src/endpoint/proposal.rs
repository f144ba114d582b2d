//! SA payloads: building our offers and choosing from (or checking) the peer's.
//!
//! Phase 1 uses the Oakley attributes of RFC 2409 Appendix A inside one ISAKMP proposal;
//! phase 2 uses the IPsec DOI attributes of RFC 2407 section 4.5 inside one ESP proposal
//! whose SPI is the one we want to receive on.

use std::time::Duration;

use ipsec_crypto::{DhGroup, EncryptionAlgorithm, HashAlgorithm, IntegrityAlgorithm};
use ipsec_proto::isakmp::{
    Attribute, AttributeValue, Proposal, ProtocolId, SaPayload, Transform, DOI_IPSEC,
    SIT_IDENTITY_ONLY,
};

use super::config::{Phase1Proposal, Phase2Proposal};
use super::error::PeerMisbehaved;

/// Phase-1 attribute classes and values, RFC 2409 Appendix A.
mod p1 {
    pub(super) const ENCRYPTION: u16 = 1;
    pub(super) const HASH: u16 = 2;
    pub(super) const AUTH_METHOD: u16 = 3;
    pub(super) const GROUP: u16 = 4;
    pub(super) const LIFE_TYPE: u16 = 11;
    pub(super) const LIFE_DURATION: u16 = 12;
    pub(super) const KEY_LENGTH: u16 = 14;
    pub(super) const PRE_SHARED_KEY: u64 = 1;
    pub(super) const LIFE_SECONDS: u64 = 1;
    /// Transform ID KEY_IKE (RFC 2407 section 4.4.1).
    pub(super) const KEY_IKE: u8 = 1;
}

/// Phase-2 attribute classes and values, RFC 2407 section 4.5.
mod p2 {
    pub(super) const LIFE_TYPE: u16 = 1;
    pub(super) const LIFE_DURATION: u16 = 2;
    pub(super) const GROUP: u16 = 3;
    pub(super) const ENCAPSULATION: u16 = 4;
    pub(super) const AUTH_ALGORITHM: u16 = 5;
    pub(super) const KEY_LENGTH: u16 = 6;
    pub(super) const LIFE_SECONDS: u64 = 1;
    pub(super) const LIFE_KILOBYTES: u64 = 2;
}

/// ISAKMP protocol id of phase 1 (RFC 2408 section 3.5 / RFC 2407 section 4.4.1).
pub(crate) const PROTO_ISAKMP: u8 = 1;
/// ESP protocol id (RFC 2407 section 4.4.1).
pub(crate) const PROTO_ESP: u8 = 3;

/// Encapsulation modes (RFC 2407 section 4.5, RFC 3947 section 5.1).
pub(crate) mod encap {
    pub(crate) const TUNNEL: u16 = 1;
    #[cfg(test)]
    pub(crate) const UDP_TUNNEL: u16 = 3;
}

fn basic(attribute_type: u16, value: u16) -> Attribute {
    Attribute {
        attribute_type,
        value: AttributeValue::Basic(value),
    }
}

/// A life duration: basic when it fits in 16 bits, otherwise a 4-byte variable attribute
/// (RFC 2408 section 3.3).
fn duration_attr(attribute_type: u16, secs: u64) -> Attribute {
    match u16::try_from(secs) {
        Ok(v) => basic(attribute_type, v),
        Err(_) => {
            let v = u32::try_from(secs).unwrap_or(u32::MAX);
            Attribute {
                attribute_type,
                value: AttributeValue::Variable(v.to_be_bytes().to_vec()),
            }
        }
    }
}

fn key_bits(alg: EncryptionAlgorithm) -> u16 {
    match alg.key_len() {
        16 => 128,
        24 => 192,
        _ => 256,
    }
}

fn is_aes(alg: EncryptionAlgorithm) -> bool {
    matches!(
        alg,
        EncryptionAlgorithm::AesCbc128
            | EncryptionAlgorithm::AesCbc192
            | EncryptionAlgorithm::AesCbc256
    )
}

fn p1_cipher_code(alg: EncryptionAlgorithm) -> u16 {
    match alg {
        EncryptionAlgorithm::DesCbc => 1,
        EncryptionAlgorithm::TripleDesCbc => 5,
        _ => 7,
    }
}

fn p1_hash_code(alg: HashAlgorithm) -> u16 {
    match alg {
        HashAlgorithm::Md5 => 1,
        HashAlgorithm::Sha1 => 2,
        HashAlgorithm::Sha256 => 4,
        HashAlgorithm::Sha384 => 5,
        HashAlgorithm::Sha512 => 6,
    }
}

fn p1_hash_from_code(code: u64) -> Option<HashAlgorithm> {
    HashAlgorithm::ALL
        .into_iter()
        .find(|h| u64::from(p1_hash_code(*h)) == code)
}

fn esp_transform_id(alg: EncryptionAlgorithm) -> u8 {
    match alg {
        EncryptionAlgorithm::DesCbc => 2,
        EncryptionAlgorithm::TripleDesCbc => 3,
        _ => 12,
    }
}

fn auth_code(alg: IntegrityAlgorithm) -> u16 {
    match alg {
        IntegrityAlgorithm::HmacMd5_96 => 1,
        IntegrityAlgorithm::HmacSha1_96 => 2,
        IntegrityAlgorithm::HmacSha256_128 => 5,
        IntegrityAlgorithm::HmacSha384_192 => 6,
        IntegrityAlgorithm::HmacSha512_256 => 7,
    }
}

/// The cipher for a (code, key length in bits) pair; `fixed_codes` maps DES/3DES/AES codes.
fn cipher_from(
    code: u64,
    key_bits: Option<u64>,
    des: u64,
    tdes: u64,
    aes: u64,
) -> Option<EncryptionAlgorithm> {
    if code == des && key_bits.is_none() {
        Some(EncryptionAlgorithm::DesCbc)
    } else if code == tdes && key_bits.is_none() {
        Some(EncryptionAlgorithm::TripleDesCbc)
    } else if code == aes {
        // RFC 3602 section 5.3 / RFC 3602's IKE use: the key length attribute is required;
        // an absent one is read as 128 bits, the only length every implementation knows.
        match key_bits.unwrap_or(128) {
            128 => Some(EncryptionAlgorithm::AesCbc128),
            192 => Some(EncryptionAlgorithm::AesCbc192),
            256 => Some(EncryptionAlgorithm::AesCbc256),
            _ => None,
        }
    } else {
        None
    }
}

/// Readable "AES-CBC-128/SHA1/MODP-2048" style text for logs and errors.
pub(crate) fn describe_p1(p: &Phase1Proposal) -> String {
    format!("{}/{}/group {}", p.encryption, p.hash, p.group.id())
}

/// Readable text for a phase-2 proposal.
pub(crate) fn describe_p2(p: &Phase2Proposal, pfs: Option<DhGroup>) -> String {
    match pfs {
        Some(g) => format!("{}/{}/PFS group {}", p.encryption, p.integrity, g.id()),
        None => format!("{}/{}/no PFS", p.encryption, p.integrity),
    }
}

/// What a phase-1 transform says, once decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Phase1Choice {
    /// The algorithms.
    pub(crate) proposal: Phase1Proposal,
    /// Life duration in seconds, if given.
    pub(crate) lifetime: Option<Duration>,
}

/// Our phase-1 SA payload: one ISAKMP proposal, one transform per configured proposal.
pub(crate) fn phase1_offer(proposals: &[Phase1Proposal], lifetime: Duration) -> SaPayload {
    let transforms = proposals
        .iter()
        .enumerate()
        .map(|(i, p)| Transform {
            number: u8::try_from(i + 1).unwrap_or(u8::MAX),
            transform_id: p1::KEY_IKE,
            attributes: phase1_attributes(p, lifetime),
        })
        .collect();
    SaPayload {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol_id: ProtocolId(PROTO_ISAKMP),
            spi: Vec::new(),
            transforms,
        }],
    }
}

/// Attribute order as strongSwan sends it (the order carries no meaning).
fn phase1_attributes(p: &Phase1Proposal, lifetime: Duration) -> Vec<Attribute> {
    let mut attrs = vec![basic(p1::ENCRYPTION, p1_cipher_code(p.encryption))];
    if is_aes(p.encryption) {
        attrs.push(basic(p1::KEY_LENGTH, key_bits(p.encryption)));
    }
    attrs.push(basic(p1::HASH, p1_hash_code(p.hash)));
    attrs.push(basic(p1::GROUP, p.group.id()));
    attrs.push(basic(p1::AUTH_METHOD, 1));
    attrs.push(basic(p1::LIFE_TYPE, 1));
    attrs.push(duration_attr(p1::LIFE_DURATION, lifetime.as_secs()));
    attrs
}

/// Decodes one phase-1 transform; `None` if it uses anything we do not support (other
/// authentication methods, unknown attributes, other life types are ignored).
pub(crate) fn decode_phase1_transform(t: &Transform) -> Option<Phase1Choice> {
    if t.transform_id != p1::KEY_IKE {
        return None;
    }
    let (mut enc, mut key_len, mut hash, mut group, mut auth) = (None, None, None, None, None);
    let mut life_type = None;
    let mut lifetime = None;
    for a in &t.attributes {
        let v = a.value.as_u64()?;
        match a.attribute_type {
            p1::ENCRYPTION => enc = Some(v),
            p1::KEY_LENGTH => key_len = Some(v),
            p1::HASH => hash = Some(v),
            p1::GROUP => group = Some(v),
            p1::AUTH_METHOD => auth = Some(v),
            p1::LIFE_TYPE => life_type = Some(v),
            p1::LIFE_DURATION => {
                if life_type == Some(p1::LIFE_SECONDS) {
                    lifetime = Some(Duration::from_secs(v));
                }
            }
            _ => return None,
        }
    }
    if auth? != p1::PRE_SHARED_KEY {
        return None;
    }
    let encryption = cipher_from(enc?, key_len, 1, 5, 7)?;
    let proposal = Phase1Proposal {
        encryption,
        hash: p1_hash_from_code(hash?)?,
        group: DhGroup::from_id(u16::try_from(group?).ok()?)?,
    };
    Some(Phase1Choice { proposal, lifetime })
}

/// As responder: the first of the peer's transforms that we accept (RFC 2408 section
/// 4.2: the responder picks one). Returns the chosen transform as the peer sent it, to be
/// echoed in MM2.
pub(crate) fn choose_phase1(
    offer: &SaPayload,
    ours: &[Phase1Proposal],
) -> Result<(Transform, Phase1Choice), PeerMisbehaved> {
    let mut offered = Vec::new();
    for proposal in &offer.proposals {
        if proposal.protocol_id.0 != PROTO_ISAKMP {
            continue;
        }
        for t in &proposal.transforms {
            match decode_phase1_transform(t) {
                Some(c) => {
                    if ours.contains(&c.proposal) {
                        return Ok((t.clone(), c));
                    }
                    offered.push(describe_p1(&c.proposal));
                }
                None => offered.push(format!("unsupported transform #{}", t.number)),
            }
        }
    }
    Err(PeerMisbehaved::NoAcceptableProposal {
        what: "phase 1",
        offered: offered.join(", "),
        accepted: ours.iter().map(describe_p1).collect::<Vec<_>>().join(", "),
    })
}

/// As initiator: checks MM2's SA payload holds exactly one of the transforms we offered.
pub(crate) fn check_phase1_answer(
    answer: &SaPayload,
    ours: &[Phase1Proposal],
) -> Result<Phase1Choice, PeerMisbehaved> {
    let unoffered = |detail: String| PeerMisbehaved::ChoseUnofferedTransform {
        what: "phase 1",
        detail,
    };
    let [proposal] = answer.proposals.as_slice() else {
        return Err(unoffered(format!(
            "{} proposals in answer, expected 1",
            answer.proposals.len()
        )));
    };
    let [t] = proposal.transforms.as_slice() else {
        return Err(unoffered(format!(
            "{} transforms in answer, expected 1",
            proposal.transforms.len()
        )));
    };
    let choice = decode_phase1_transform(t)
        .ok_or_else(|| unoffered(format!("transform #{} is not one we can use", t.number)))?;
    if !ours.contains(&choice.proposal) {
        return Err(unoffered(describe_p1(&choice.proposal)));
    }
    Ok(choice)
}

/// What an ESP transform says, once decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Phase2Choice {
    /// Algorithms.
    pub(crate) proposal: Phase2Proposal,
    /// The PFS group, if any.
    pub(crate) group: Option<DhGroup>,
    /// Encapsulation mode code point (1, 3 or 61443).
    pub(crate) encapsulation: u16,
    /// Life in seconds, if given.
    pub(crate) life_seconds: Option<u64>,
    /// Life in kilobytes, if given.
    pub(crate) life_kilobytes: Option<u64>,
}

/// Our Quick Mode SA payload: one ESP proposal carrying our inbound SPI and one transform
/// per configured proposal.
pub(crate) fn phase2_offer(
    proposals: &[Phase2Proposal],
    pfs: Option<DhGroup>,
    encapsulation: u16,
    lifetime: Duration,
    lifetime_kilobytes: Option<u64>,
    spi: u32,
) -> SaPayload {
    let transforms = proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let choice = Phase2Choice {
                proposal: *p,
                group: pfs,
                encapsulation,
                life_seconds: Some(lifetime.as_secs()),
                life_kilobytes: lifetime_kilobytes,
            };
            Transform {
                number: u8::try_from(i + 1).unwrap_or(u8::MAX),
                transform_id: esp_transform_id(p.encryption),
                attributes: phase2_attributes(&choice),
            }
        })
        .collect();
    phase2_sa(transforms, spi)
}

/// An SA payload with one ESP proposal.
pub(crate) fn phase2_sa(transforms: Vec<Transform>, spi: u32) -> SaPayload {
    SaPayload {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol_id: ProtocolId(PROTO_ESP),
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }],
    }
}

/// Attribute order as strongSwan sends it.
fn phase2_attributes(c: &Phase2Choice) -> Vec<Attribute> {
    let mut attrs = Vec::new();
    if is_aes(c.proposal.encryption) {
        attrs.push(basic(p2::KEY_LENGTH, key_bits(c.proposal.encryption)));
    }
    attrs.push(basic(p2::AUTH_ALGORITHM, auth_code(c.proposal.integrity)));
    if let Some(g) = c.group {
        attrs.push(basic(p2::GROUP, g.id()));
    }
    attrs.push(basic(p2::ENCAPSULATION, c.encapsulation));
    if let Some(s) = c.life_seconds {
        attrs.push(basic(p2::LIFE_TYPE, 1));
        attrs.push(duration_attr(p2::LIFE_DURATION, s));
    }
    if let Some(kb) = c.life_kilobytes {
        attrs.push(basic(p2::LIFE_TYPE, 2));
        attrs.push(duration_attr(p2::LIFE_DURATION, kb));
    }
    attrs
}

/// Decodes one ESP transform; `None` if it uses anything we do not support.
pub(crate) fn decode_phase2_transform(t: &Transform) -> Option<Phase2Choice> {
    let (mut key_len, mut auth, mut group, mut encapsulation) = (None, None, None, None);
    let mut life_type = None;
    let (mut life_seconds, mut life_kilobytes) = (None, None);
    for a in &t.attributes {
        let v = a.value.as_u64()?;
        match a.attribute_type {
            p2::KEY_LENGTH => key_len = Some(v),
            p2::AUTH_ALGORITHM => auth = Some(v),
            p2::GROUP => group = Some(v),
            p2::ENCAPSULATION => encapsulation = Some(v),
            p2::LIFE_TYPE => life_type = Some(v),
            p2::LIFE_DURATION => match life_type {
                Some(p2::LIFE_SECONDS) => life_seconds = Some(v),
                Some(p2::LIFE_KILOBYTES) => life_kilobytes = Some(v),
                _ => return None,
            },
            _ => return None,
        }
    }
    let encryption = cipher_from(u64::from(t.transform_id), key_len, 2, 3, 12)?;
    let integrity = IntegrityAlgorithm::ALL
        .into_iter()
        .find(|i| Some(u64::from(auth_code(*i))) == auth)?;
    let group = match group {
        Some(g) => Some(DhGroup::from_id(u16::try_from(g).ok()?)?),
        None => None,
    };
    Some(Phase2Choice {
        proposal: Phase2Proposal {
            encryption,
            integrity,
        },
        group,
        // RFC 2407 section 4.5: an absent mode means the host-specific default; only tunnel
        // makes sense for a gateway.
        encapsulation: u16::try_from(encapsulation.unwrap_or(1)).ok()?,
        life_seconds,
        life_kilobytes,
    })
}

/// Encodes a decided transform for QM2 (the responder answers with exactly one).
pub(crate) fn phase2_transform(number: u8, c: &Phase2Choice) -> Transform {
    Transform {
        number,
        transform_id: esp_transform_id(c.proposal.encryption),
        attributes: phase2_attributes(c),
    }
}

/// As responder: the first acceptable ESP transform in the peer's offer, with the peer's
/// SPI. `modes` lists the encapsulation modes we accept.
pub(crate) fn choose_phase2(
    offer: &SaPayload,
    ours: &[Phase2Proposal],
    pfs: Option<DhGroup>,
    modes: &[u16],
) -> Result<(u32, Phase2Choice), PeerMisbehaved> {
    let mut offered = Vec::new();
    for (i, proposal) in offer.proposals.iter().enumerate() {
        // Proposals sharing a number form a bundle (RFC 2408 section 4.2), e.g. AH+ESP,
        // which we do not support.
        let bundled = offer
            .proposals
            .iter()
            .enumerate()
            .any(|(j, p)| j != i && p.number == proposal.number);
        if proposal.protocol_id.0 != PROTO_ESP || bundled {
            offered.push(format!("protocol {} proposal", proposal.protocol_id.0));
            continue;
        }
        let Ok(spi_bytes) = <[u8; 4]>::try_from(proposal.spi.as_slice()) else {
            return Err(PeerMisbehaved::InvalidSpi {
                spi: proposal.spi.clone(),
            });
        };
        let spi = u32::from_be_bytes(spi_bytes);
        for t in &proposal.transforms {
            let Some(c) = decode_phase2_transform(t) else {
                offered.push(format!("unsupported ESP transform #{}", t.number));
                continue;
            };
            if ours.contains(&c.proposal) && c.group == pfs && modes.contains(&c.encapsulation) {
                if spi < 256 {
                    return Err(PeerMisbehaved::InvalidSpi {
                        spi: proposal.spi.clone(),
                    });
                }
                return Ok((spi, c));
            }
            offered.push(format!(
                "{} mode {}",
                describe_p2(&c.proposal, c.group),
                c.encapsulation
            ));
        }
    }
    Err(PeerMisbehaved::NoAcceptableProposal {
        what: "phase 2",
        offered: offered.join(", "),
        accepted: ours
            .iter()
            .map(|p| describe_p2(p, pfs))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// As initiator: checks QM2's SA payload holds one of our transforms and returns the
/// peer's SPI with the choice.
pub(crate) fn check_phase2_answer(
    answer: &SaPayload,
    ours: &[Phase2Proposal],
    pfs: Option<DhGroup>,
    encapsulation: u16,
) -> Result<(u32, Phase2Choice), PeerMisbehaved> {
    let unoffered = |detail: String| PeerMisbehaved::ChoseUnofferedTransform {
        what: "phase 2",
        detail,
    };
    let [proposal] = answer.proposals.as_slice() else {
        return Err(unoffered(format!(
            "{} proposals in answer, expected 1",
            answer.proposals.len()
        )));
    };
    let [t] = proposal.transforms.as_slice() else {
        return Err(unoffered(format!(
            "{} transforms in answer, expected 1",
            proposal.transforms.len()
        )));
    };
    if proposal.protocol_id.0 != PROTO_ESP {
        return Err(unoffered(format!("protocol {}", proposal.protocol_id.0)));
    }
    let spi = <[u8; 4]>::try_from(proposal.spi.as_slice())
        .ok()
        .map(u32::from_be_bytes)
        .filter(|s| *s >= 256)
        .ok_or_else(|| PeerMisbehaved::InvalidSpi {
            spi: proposal.spi.clone(),
        })?;
    let c = decode_phase2_transform(t)
        .ok_or_else(|| unoffered(format!("transform #{} is not one we can use", t.number)))?;
    if !ours.contains(&c.proposal) || c.group != pfs || c.encapsulation != encapsulation {
        return Err(unoffered(format!(
            "{} mode {}",
            describe_p2(&c.proposal, c.group),
            c.encapsulation
        )));
    }
    Ok((spi, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase1_offer_matches_strongswan_attributes() {
        // The attributes of mm-aes128-sha1-modp2048-pfs frame 1, in wire order.
        let sa = phase1_offer(&[Phase1Proposal::default()], Duration::from_secs(15_840));
        let t = &sa.proposals[0].transforms[0];
        let got: Vec<(u16, u64)> = t
            .attributes
            .iter()
            .map(|a| (a.attribute_type, a.value.as_u64().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 7),
                (14, 128),
                (2, 2),
                (4, 14),
                (3, 1),
                (11, 1),
                (12, 15_840)
            ]
        );
        assert_eq!(t.transform_id, 1);
        assert_eq!(sa.proposals[0].protocol_id.0, 1);
    }

    #[test]
    fn phase2_offer_matches_strongswan_attributes() {
        let sa = phase2_offer(
            &[Phase2Proposal::default()],
            Some(DhGroup::Modp2048),
            encap::UDP_TUNNEL,
            Duration::from_secs(3_960),
            None,
            0x89a5_b7f5,
        );
        let p = &sa.proposals[0];
        assert_eq!(p.spi, vec![0x89, 0xa5, 0xb7, 0xf5]);
        let t = &p.transforms[0];
        assert_eq!(t.transform_id, 12);
        let got: Vec<(u16, u64)> = t
            .attributes
            .iter()
            .map(|a| (a.attribute_type, a.value.as_u64().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![(6, 128), (5, 2), (3, 14), (4, 3), (1, 1), (2, 3_960)]
        );
    }

    #[test]
    fn rejects_aes_with_other_key_length() {
        let mut sa = phase1_offer(
            &[Phase1Proposal {
                encryption: EncryptionAlgorithm::AesCbc256,
                ..Phase1Proposal::default()
            }],
            Duration::from_secs(100),
        );
        let err = choose_phase1(&sa, &[Phase1Proposal::default()]).unwrap_err();
        assert!(
            matches!(err, PeerMisbehaved::NoAcceptableProposal { .. }),
            "{err}"
        );
        sa.proposals[0].transforms[0].attributes[1] = basic(p1::KEY_LENGTH, 128);
        let (_, c) = choose_phase1(&sa, &[Phase1Proposal::default()]).unwrap();
        assert_eq!(c.proposal, Phase1Proposal::default());
        assert_eq!(c.lifetime, Some(Duration::from_secs(100)));
    }

    #[test]
    fn responder_picks_first_acceptable_esp_transform() {
        let theirs = [
            Phase2Proposal {
                encryption: EncryptionAlgorithm::TripleDesCbc,
                integrity: IntegrityAlgorithm::HmacMd5_96,
            },
            Phase2Proposal::default(),
            Phase2Proposal {
                encryption: EncryptionAlgorithm::AesCbc256,
                integrity: IntegrityAlgorithm::HmacSha256_128,
            },
        ];
        let offer = phase2_offer(&theirs, None, 1, Duration::from_secs(60), None, 0x1234_5678);
        let ours = [theirs[2], theirs[1]];
        let (spi, c) = choose_phase2(&offer, &ours, None, &[1]).unwrap();
        assert_eq!(spi, 0x1234_5678);
        assert_eq!(c.proposal, theirs[1]);
        assert!(choose_phase2(&offer, &ours, Some(DhGroup::Modp2048), &[1]).is_err());
        assert!(choose_phase2(&offer, &ours, None, &[3]).is_err());
    }

    #[test]
    fn long_lifetime_becomes_variable_attribute() {
        let a = duration_attr(2, 86_400 * 2);
        assert_eq!(a.value, AttributeValue::Variable(vec![0, 2, 0xa3, 0]));
        assert_eq!(a.value.as_u64(), Some(172_800));
    }
}
