//! The event loop.

use std::path::{Path, PathBuf};

/// Runs the gateway until SIGTERM or SIGINT.
pub(crate) fn run(config: &Path, wireshark_keys: Option<PathBuf>) -> anyhow::Result<()> {
    let _ = (config, wireshark_keys);
    anyhow::bail!("not implemented yet")
}
