//! The local control socket: `ipsec-gateway status` asks the running gateway for its state.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Where the control socket lives unless the config says otherwise.
pub(crate) const DEFAULT_SOCKET: &str = "/run/ipsec-gateway.sock";

/// Connects to a running gateway and returns its status text.
pub(crate) fn query_status(path: &Path) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"status\n")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    stream.take(1 << 20).read_to_string(&mut out)?;
    Ok(out)
}
