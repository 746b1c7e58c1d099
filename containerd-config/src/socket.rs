//! containerd's `containerd.services.version.v1.Version/Version` gRPC call over its
//! Unix socket: proves the daemon answers (the installer waits on it after a
//! restart) and tells its version where the binary cannot run (doctor in a container).
//! One unary call needs no gRPC stack: an HTTP/2 POST of an empty message and two
//! protobuf string fields back.

use crate::version::Version;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `Version` call did not give a version.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// No connection.
    #[error("cannot connect to containerd at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/2 exchange failed.
    #[error("containerd at {socket} did not answer the Version call: {message}")]
    Exchange {
        /// The socket.
        socket: PathBuf,
        /// What failed.
        message: String,
    },
    /// No answer within the deadline.
    #[error("containerd at {socket} did not answer within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// The answer was not a VersionResponse.
    #[error("containerd at {socket} answered the Version call with something unreadable: {what}")]
    Answer {
        /// The socket.
        socket: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonVersion {
    /// `v2.2.7`.
    pub version: String,
    /// The commit.
    pub revision: String,
}

impl DaemonVersion {
    /// The parsed release version, if the text is one.
    pub fn parsed(&self) -> Option<Version> {
        Version::find_in(&self.version)
    }
}

/// Asks containerd at `socket` for its version, within `timeout`.
pub async fn version(socket: &Path, timeout: Duration) -> Result<DaemonVersion, SocketError> {
    use crate::grpc::{Channel, GrpcError};
    let map = |e: GrpcError| match e {
        GrpcError::Connect { socket, source } => SocketError::Connect { socket, source },
        GrpcError::Timeout { socket, timeout, .. } => SocketError::Timeout { socket, timeout },
        other => SocketError::Exchange { socket: socket.to_path_buf(), message: other.to_string() },
    };
    let started = std::time::Instant::now();
    let mut ch = Channel::connect(socket, timeout).await.map_err(map)?;
    let left = timeout.saturating_sub(started.elapsed());
    let msg = ch.unary("containerd.services.version.v1.Version/Version", None, &[], left).await.map_err(map)?;
    decode(&msg).map_err(|what| SocketError::Answer { socket: socket.to_path_buf(), what })
}

/// A `VersionResponse` message (fields 1 and 2, strings); the gRPC framing is the channel's.
fn decode(msg: &[u8]) -> Result<DaemonVersion, String> {
    let f = crate::proto::fields(msg).map_err(|e| e.to_string())?;
    let out = DaemonVersion { version: crate::proto::string(&f, 1), revision: crate::proto::string(&f, 2) };
    if out.version.is_empty() {
        return Err("no version field".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_version_response() {
        let mut msg = vec![0x0a, 6];
        msg.extend_from_slice(b"v2.2.7");
        msg.extend_from_slice(&[0x12, 3]);
        msg.extend_from_slice(b"abc");
        let v = decode(&msg).unwrap();
        assert_eq!(v.version, "v2.2.7");
        assert_eq!(v.revision, "abc");
        assert_eq!(v.parsed().unwrap().minor, 2);
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode(&[]).is_err(), "no version field");
        assert!(decode(&[0x0a]).is_err(), "truncated");
        assert!(decode(&[0x0a, 5, b'v']).is_err(), "field longer than the message");
        assert!(decode(&[0x08, 1]).is_err(), "only a varint, no version");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let e = version(Path::new("/nonexistent/containerd.sock"), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, SocketError::Connect { .. }), "{e}");
    }
}
