//! The IPsec protocol as a sans-IO library: IKEv1 exchanges (RFC 2409), the SAs they
//! produce, and the ESP data plane (RFC 4301, RFC 4303, RFC 3948).
//!
//! Deterministic: time, randomness and SPI allocation come from the caller, so every run
//! can be replayed. No sockets, threads or clocks.
//!
//! Logging (`tracing`): each negotiation choice, state change and every dropped or
//! refused input at debug with its reason, peer anomalies at warn, per-packet detail at
//! trace, broken internal invariants at error; nothing at info. What a caller acts on
//! (SAs established or deleted, failures, dead peers, lifetimes) comes as events
//! ([`endpoint::Event`], [`dataplane::Event`]), and the caller decides what to log.

#![forbid(unsafe_code)]

pub mod child;
pub mod dataplane;
pub mod endpoint;
pub mod selector;
