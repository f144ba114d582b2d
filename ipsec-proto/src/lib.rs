//! Wire formats of IKEv1 (ISAKMP, RFC 2408/2407/2409, NAT-T RFC 3947, DPD RFC 3706) and
//! ESP (RFC 4303, UDP encapsulation RFC 3948).
//!
//! This crate knows bytes and nothing else: no cryptography, no state, no time.
//! Encrypted ISAKMP messages parse up to their header; whoever holds the keys decrypts
//! the body and hands the plaintext back to the payload-chain parser.

#![forbid(unsafe_code)]
