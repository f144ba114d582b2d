//! Shared helpers for the criterion benchmarks under `benches/benches/`.
//!
//! The benchmarks read real messages from the interop fixtures beside the repository
//! (`../shared/fixtures`), so that what is measured is what peers actually send.

use std::path::PathBuf;

/// The fixture directory: `$IPSEC_FIXTURES`, or `../shared/fixtures` beside the workspace.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IPSEC_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}
