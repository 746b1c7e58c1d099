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
    let mut framed = vec![0, 0, 0, 0, 0];
    framed[1..5].copy_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    decode(&framed).map_err(|what| SocketError::Answer { socket: socket.to_path_buf(), what })
}

/// One length-prefixed gRPC message holding a `VersionResponse` (fields 1 and 2, strings).
fn decode(frame: &[u8]) -> Result<DaemonVersion, String> {
    if frame.len() < 5 || frame[0] != 0 {
        return Err("not an uncompressed gRPC message".into());
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let msg = frame.get(5..5 + len).ok_or("message shorter than its length prefix")?;
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
        let mut frame = vec![0, 0, 0, 0, msg.len() as u8];
        frame.extend_from_slice(&msg);
        let v = decode(&frame).unwrap();
        assert_eq!(v.version, "v2.2.7");
        assert_eq!(v.revision, "abc");
        assert_eq!(v.parsed().unwrap().minor, 2);
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 0, 0, 0, 0]).is_err());
        assert!(decode(&[0, 0, 0, 0, 9, 0x0a]).is_err());
        assert!(decode(&[0, 0, 0, 0, 3, 0x0a, 5, b'v']).is_err());
        assert!(decode(&[0, 0, 0, 0, 0]).is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let e = version(Path::new("/nonexistent/containerd.sock"), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, SocketError::Connect { .. }), "{e}");
    }
}
