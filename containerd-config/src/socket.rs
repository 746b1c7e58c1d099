//! containerd's `containerd.services.version.v1.Version/Version` gRPC call over its
//! Unix socket: proves the daemon answers (the installer waits on it after a
//! restart) and tells its version where the binary cannot run (doctor in a container).
//! One unary call needs no gRPC stack: an HTTP/2 POST of an empty message and two
//! protobuf string fields back.

use crate::version::Version;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest answer read (the real one is ~40 bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

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
    match tokio::time::timeout(timeout, exchange(socket)).await {
        Ok(r) => r,
        Err(_) => Err(SocketError::Timeout { socket: socket.to_path_buf(), timeout }),
    }
}

async fn exchange(socket: &Path) -> Result<DaemonVersion, SocketError> {
    let fail = |message: String| SocketError::Exchange { socket: socket.to_path_buf(), message };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| SocketError::Connect { socket: socket.to_path_buf(), source })?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .map_err(|e| fail(format!("HTTP/2 handshake: {e}")))?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::post("http://containerd/containerd.services.version.v1.Version/Version")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .map_err(|e| fail(e.to_string()))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP status {}", response.status())));
        }
        let header_status = grpc_status(response.headers());
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        let status = body.trailers().and_then(grpc_status).or(header_status);
        if let Some(code) = status.filter(|c| *c != 0) {
            return Err(fail(format!("gRPC status {code}")));
        }
        decode(&body.to_bytes()).map_err(|what| SocketError::Answer { socket: socket.to_path_buf(), what })
    }
    .await;
    driver.abort();
    result
}

fn grpc_status(h: &hyper::HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One length-prefixed gRPC message holding a `VersionResponse` (fields 1 and 2, strings).
fn decode(frame: &[u8]) -> Result<DaemonVersion, String> {
    if frame.len() < 5 || frame[0] != 0 {
        return Err("not an uncompressed gRPC message".into());
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let mut msg = frame.get(5..5 + len).ok_or("message shorter than its length prefix")?;
    let mut out = DaemonVersion { version: String::new(), revision: String::new() };
    while !msg.is_empty() {
        let (key, rest) = varint(msg)?;
        let (n, rest) = varint(rest)?;
        if key & 7 != 2 {
            return Err(format!("field {} is not length-delimited", key >> 3));
        }
        let n = n as usize;
        let value = rest.get(..n).ok_or("field longer than the message")?;
        let text = String::from_utf8(value.to_vec()).map_err(|_| "a field is not UTF-8")?;
        match key >> 3 {
            1 => out.version = text,
            2 => out.revision = text,
            _ => {}
        }
        msg = &rest[n..];
    }
    if out.version.is_empty() {
        return Err("no version field".into());
    }
    Ok(out)
}

fn varint(b: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, &b[i + 1..]));
        }
    }
    Err("malformed varint".into())
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
