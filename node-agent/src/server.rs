//! The agent's Unix socket: binding safely, checking peers, framing, limits, drain.
//!
//! One request line in, one response line out, then the connection closes.
//! The socket file is created with a restrictive umask and then set to its
//! configured mode; a stale socket left by a dead agent is replaced, a live
//! agent or a non-socket file at the path is an error. Every peer's uid is
//! checked with SO_PEERCRED before anything is read. On shutdown the server
//! stops accepting, lets in-flight requests finish within the drain timeout,
//! and removes the socket file.

use crate::engine::Engine;
use crate::report::Peer;
use pullgate_wire::{MAX_REQUEST_BYTES, Request, Response};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

/// How the socket is set up and served.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Socket path.
    pub path: PathBuf,
    /// File mode of the socket (0600 by default, 0660 with a group).
    pub mode: u32,
    /// Group owning the socket, when members of a group may connect.
    pub group: Option<u32>,
    /// Longest time a client may take to send its request line.
    pub read_timeout: Duration,
    /// Most connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Longest time to wait for in-flight requests on shutdown.
    pub drain_timeout: Duration,
}

impl ServerOptions {
    /// Defaults for a socket at `path`.
    pub fn new(path: PathBuf) -> ServerOptions {
        ServerOptions {
            path,
            mode: 0o600,
            group: None,
            read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another agent answers on the socket path.
    #[error("another agent is already listening on {0}; stop it first or use another --socket")]
    InUse(PathBuf),
    /// The socket's directory can be written by other users.
    #[error("{0} is writable by other users or not owned by this user or root; put the socket in a private directory")]
    UnsafeDirectory(PathBuf),
    /// Something that is not a socket sits at the path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A filesystem or bind operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket at `opts.path` with the configured mode and group.
pub fn bind(opts: &ServerOptions) -> Result<UnixListener, ServerError> {
    let path = &opts.path;
    let io = |what, source| ServerError::Io { what, path: path.clone(), source };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
        // Another user able to write here could swap the socket for a symlink
        // between bind and chmod and have us change some other file's mode.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(parent).map_err(|e| io("inspecting the directory of", e))?;
        let uid = nix::unistd::geteuid().as_raw();
        let foreign_owner = meta.uid() != uid && meta.uid() != 0;
        let writable_by_others = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if foreign_owner || writable_by_others {
            return Err(ServerError::UnsafeDirectory(parent.to_path_buf()));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.clone()));
            }
            std::fs::remove_file(path).map_err(|e| io("removing stale socket", e))?;
        }
        Ok(_) => return Err(ServerError::NotASocket(path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting", e)),
    }
    // Create the socket with no group/other bits so it is never reachable
    // with a wider mode than configured, even for an instant.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let std_listener = bound.map_err(|e| io("binding", e))?;
    if let Some(gid) = opts.group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io("setting the group of", std::io::Error::from(e)))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.mode))
        .map_err(|e| io("setting the mode of", e))?;
    std_listener.set_nonblocking(true).map_err(|e| io("configuring", e))?;
    UnixListener::from_std(std_listener).map_err(|e| io("registering", e))
}

/// Serves until `shutdown` turns true, then drains and removes the socket.
pub async fn serve(
    listener: UnixListener,
    engine: Arc<Engine>,
    opts: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    tracing::info!(socket = %opts.path.display(), mode = format!("{:o}", opts.mode), "listening");
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let engine = engine.clone();
                let timeout = opts.read_timeout;
                tokio::spawn(async move {
                    handle(stream, &engine, timeout).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    remove_socket(&opts.path);
    let in_flight = opts.max_connections - slots.available_permits();
    tracing::info!(in_flight, "draining");
    let all = u32::try_from(opts.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(opts.drain_timeout, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(
            timeout_ms = opts.drain_timeout.as_millis() as u64,
            "drain timed out; abandoning in-flight requests"
        );
    }
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %e, "could not remove the socket file");
    }
}

/// Serves one connection: peer check, one bounded request line, one answer.
async fn handle(mut stream: UnixStream, engine: &Engine, read_timeout: Duration) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer { uid: c.uid(), pid: c.pid() },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    if !engine.peer_allowed(peer.uid) {
        engine.count_refused_peer();
        tracing::warn!(uid = peer.uid, pid = peer.pid, "refused a peer whose uid is not in allowedUids");
        let msg = format!("peer uid {} is not allowed to use this socket (allowedUids)", peer.uid);
        write_response(&mut stream, &Response::Error { message: msg }).await;
        return;
    }
    let line = match tokio::time::timeout(read_timeout, read_line(&mut stream)).await {
        Ok(Ok(l)) => l,
        Ok(Err(why)) => {
            tracing::warn!(uid = peer.uid, pid = peer.pid, "{why}");
            write_response(&mut stream, &Response::Error { message: why }).await;
            return;
        }
        Err(_) => {
            tracing::debug!(uid = peer.uid, pid = peer.pid, "client sent no request in time; closing");
            let why = format!("no complete request within {} ms", read_timeout.as_millis());
            write_response(&mut stream, &Response::Error { message: why }).await;
            return;
        }
    };
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(Request::Verify(req)) => engine.decide(&req, Some(peer)).await,
        Ok(Request::Status { .. }) => Response::Status(engine.status()),
        Err(e) => Response::Error { message: format!("request is not understood: {e}") },
    };
    write_response(&mut stream, &response).await;
}

/// Reads one `\n`-terminated line (or everything up to EOF) of at most
/// [`MAX_REQUEST_BYTES`].
async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut reader = BufReader::new(stream).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut buf = Vec::with_capacity(512);
    reader.read_until(b'\n', &mut buf).await.map_err(|e| format!("reading the request: {e}"))?;
    if buf.len() > MAX_REQUEST_BYTES {
        return Err(format!("request exceeds {MAX_REQUEST_BYTES} bytes"));
    }
    if buf.is_empty() {
        return Err("connection closed before a request was sent".into());
    }
    Ok(buf)
}

/// Writes one answer. This is the only place the agent serialises a
/// [`Response`]: [`Response::encode_line`] makes it one line of at most
/// `MAX_RESPONSE_BYTES` whatever the reasons hold, so content pushed to a
/// registry can never make the verifier read the answer as unusable.
async fn write_response(stream: &mut UnixStream, response: &Response) {
    let out = response.encode_line();
    if let Err(e) = stream.write_all(&out).await {
        tracing::debug!(error = %e, "client went away before the answer was written");
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn refuses_a_directory_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let opts = ServerOptions::new(run.join("agent.sock"));
        assert!(matches!(bind(&opts), Err(ServerError::UnsafeDirectory(_))));
        assert!(!run.join("agent.sock").exists());
        // A sticky directory (like /tmp) is fine: others cannot replace our socket in it.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let listener = bind(&opts).expect("sticky directory");
        let mode = std::fs::metadata(run.join("agent.sock")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(listener);
    }
}
