//! The local control socket: `ipsec-gateway status` asks the running gateway for its state.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

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

/// Serves the control socket: each connection sends one command line and gets one reply.
///
/// Commands are answered by the event loop (which owns all state) through `requests`; this
/// task only does the socket work. Only `status` exists for now.
pub(crate) async fn serve(
    listener: tokio::net::UnixListener,
    requests: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<String>>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // One short line, within two seconds; anything else is dropped.
            let mut reader = tokio::io::BufReader::new(read.take(256));
            let got =
                tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
            let reply = match (got, line.trim()) {
                (Ok(Ok(_)), "status") => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if requests.send(tx).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(text) => text,
                        Err(_) => return,
                    }
                }
                (Ok(Ok(_)), other) => format!("error: unknown command {other:?}; known: status\n"),
                _ => return,
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), write.write_all(reply.as_bytes()))
                .await;
        });
    }
}

/// Binds the control socket at `path` (mode 0600), replacing a stale socket file.
pub(crate) fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;

    if path.exists() {
        // A socket nobody answers on is left over from an earlier run.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another ipsec-gateway is already listening there",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control socket served by a runtime on another thread, answering "status" with a
    /// fixed text from the request channel (as the event loop would).
    fn serve_once(path: &Path) -> std::thread::JoinHandle<()> {
        let path = path.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = bind(&path).unwrap();
                let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                tokio::spawn(serve(listener, tx));
                ready_tx.send(()).unwrap();
                let reply: tokio::sync::oneshot::Sender<String> = rx.recv().await.unwrap();
                reply.send("tunnel lab: up\n".to_owned()).unwrap();
                // Give the connection task time to write the reply.
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        handle
    }

    #[test]
    fn status_round_trip_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        let server = serve_once(&path);
        assert_eq!(query_status(&path).unwrap(), "tunnel lab: up\n");
        server.join().unwrap();

        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rejects_unknown_commands_and_replaces_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        // A stale socket file from a run that died: bind replaces it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let server = serve_once(&path);

        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(b"reboot\n").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "error: unknown command \"reboot\"; known: status\n");

        // A live socket is not taken over.
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

        assert_eq!(query_status(&path).unwrap(), "tunnel lab: up\n");
        server.join().unwrap();
    }
}
