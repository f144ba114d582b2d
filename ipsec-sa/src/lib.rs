//! The IPsec protocol as a sans-IO library: IKEv1 exchanges (RFC 2409), the SAs they
//! produce, and the ESP data plane (RFC 4301, RFC 4303, RFC 3948).
//!
//! Deterministic: time, randomness and SPI allocation come from the caller, so every run
//! can be replayed. No sockets, threads or clocks.

#![forbid(unsafe_code)]

pub mod child;
pub mod dataplane;
pub mod endpoint;
pub mod selector;
