//! The per-packet half: SPD, SAD, ESP tunnel-mode transform, anti-replay, NAT-T framing.
