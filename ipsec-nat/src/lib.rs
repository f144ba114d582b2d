//! Static one-to-one NAT for the inner packets of a site-to-site tunnel.
//!
//! A pure packet transform: it rewrites addresses and checksums and knows no SAs.

#![forbid(unsafe_code)]
