//! gRPC over containerd's Unix socket, by hand: one HTTP/2 connection, unary calls
//! and server-streaming calls, messages as length-prefixed protobuf bytes, the
//! `containerd-namespace` header. Every call has a deadline; a stream is read
//! message by message, each bounded in size.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest single message read (an image list of thousands of images fits).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A gRPC call that failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
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
    #[error("containerd at {socket}: {method}: {message}")]
    Exchange {
        /// The socket.
        socket: PathBuf,
        /// The gRPC method.
        method: String,
        /// What failed.
        message: String,
    },
    /// containerd answered with a gRPC error status.
    #[error("containerd at {socket}: {method}: gRPC status {code}: {message}")]
    Status {
        /// The socket.
        socket: PathBuf,
        /// The gRPC method.
        method: String,
        /// The status code (5 = not found).
        code: u32,
        /// `grpc-message`.
        message: String,
    },
    /// No answer within the deadline.
    #[error("containerd at {socket}: {method} did not answer within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The gRPC method.
        method: String,
        /// The deadline.
        timeout: Duration,
    },
}

impl GrpcError {
    /// gRPC NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        matches!(self, GrpcError::Status { code: 5, .. })
    }
}

/// One HTTP/2 connection to containerd.
pub struct Channel {
    socket: PathBuf,
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Frames `msg` as one uncompressed gRPC message.
fn frame(msg: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(msg.len() + 5);
    b.push(0);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    Bytes::from(b)
}

/// The message inside one length-prefixed, uncompressed gRPC frame.
fn unframe(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < 5 || bytes[0] != 0 {
        return Err("the answer is not one uncompressed gRPC message");
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    bytes.get(5..5 + len).ok_or("the answer is shorter than its length prefix")
}

fn status_of(h: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("").to_string();
    Some((code, msg))
}

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>> + Send>>;

/// A server-streaming call's response, read message by message.
///
/// containerd sends a stream's headers only with its first message (an event
/// subscription may wait long for one), so the request is sent at once and the
/// response is awaited by [`Stream::next`], without a deadline.
pub struct Stream {
    socket: PathBuf,
    method: String,
    pending: Option<Pending>,
    body: Option<hyper::body::Incoming>,
    buf: BytesMut,
    _channel: Channel,
}

impl Stream {
    /// The next message; `Ok(None)` when the stream ended cleanly.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, GrpcError> {
        // Cancel-safe: the pending answer is kept until it resolves, so a caller may drop
        // this future (e.g. in `select!`) and call again.
        if let Some(pending) = self.pending.as_mut() {
            let resp = pending.await;
            self.pending = None;
            let resp = resp.map_err(|e| self.fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(self.fail(format!("HTTP status {}", resp.status())));
            }
            if let Some((code, message)) = status_of(resp.headers()).filter(|(c, _)| *c != 0) {
                return Err(GrpcError::Status {
                    socket: self.socket.clone(),
                    method: self.method.clone(),
                    code,
                    message,
                });
            }
            self.body = Some(resp.into_body());
        }
        let Some(body) = self.body.as_mut() else { return Ok(None) };
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if len > MAX_MESSAGE_BYTES {
                    return Err(
                        self.fail(format!("a message of {len} bytes is over the {MAX_MESSAGE_BYTES} byte limit"))
                    );
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    return Ok(Some(self.buf.split_to(len).to_vec()));
                }
            }
            match body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(GrpcError::Exchange {
                        socket: self.socket.clone(),
                        method: self.method.clone(),
                        message: e.to_string(),
                    });
                }
                Some(Ok(f)) => {
                    if self.buf.len() > MAX_MESSAGE_BYTES + 5 {
                        return Err(GrpcError::Exchange {
                            socket: self.socket.clone(),
                            method: self.method.clone(),
                            message: "a message is over the size limit".into(),
                        });
                    }
                    if let Some(t) = f.trailers_ref()
                        && let Some((code, message)) = status_of(t).filter(|(c, _)| *c != 0)
                    {
                        return Err(GrpcError::Status {
                            socket: self.socket.clone(),
                            method: self.method.clone(),
                            code,
                            message,
                        });
                    }
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn fail(&self, message: String) -> GrpcError {
        GrpcError::Exchange { socket: self.socket.clone(), method: self.method.clone(), message }
    }
}

impl Channel {
    /// Connects and completes the HTTP/2 handshake within `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, GrpcError> {
        let fut = async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| GrpcError::Connect { socket: socket.to_path_buf(), source })?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| GrpcError::Exchange {
                    socket: socket.to_path_buf(),
                    method: "handshake".into(),
                    message: e.to_string(),
                })?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Channel { socket: socket.to_path_buf(), sender, driver })
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| GrpcError::Timeout {
            socket: socket.to_path_buf(),
            method: "connect".into(),
            timeout,
        })?
    }

    async fn start(
        &mut self,
        method: &str,
        namespace: Option<&str>,
        msg: &[u8],
    ) -> Result<hyper::Response<hyper::body::Incoming>, GrpcError> {
        let fail =
            |message: String| GrpcError::Exchange { socket: self.socket.clone(), method: method.to_string(), message };
        let mut req = hyper::Request::post(format!("http://containerd/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(ns) = namespace {
            req = req.header("containerd-namespace", ns);
        }
        let req = req.body(Full::new(frame(msg))).map_err(|e| fail(e.to_string()))?;
        let resp = self.sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP status {}", resp.status())));
        }
        if let Some((code, message)) = status_of(resp.headers()).filter(|(c, _)| *c != 0) {
            return Err(GrpcError::Status { socket: self.socket.clone(), method: method.to_string(), code, message });
        }
        Ok(resp)
    }

    /// A unary call: one message out, one back, within `timeout`.
    pub async fn unary(
        &mut self,
        method: &str,
        namespace: Option<&str>,
        msg: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, GrpcError> {
        let socket = self.socket.clone();
        let m = method.to_string();
        let fut = async {
            let resp = self.start(method, namespace, msg).await?;
            let body =
                http_body_util::Limited::new(resp.into_body(), MAX_MESSAGE_BYTES + 5).collect().await.map_err(|e| {
                    GrpcError::Exchange {
                        socket: socket.clone(),
                        method: m.clone(),
                        message: format!("reading the answer: {e}"),
                    }
                })?;
            if let Some((code, message)) = body.trailers().and_then(status_of).filter(|(c, _)| *c != 0) {
                return Err(GrpcError::Status { socket: socket.clone(), method: m.clone(), code, message });
            }
            let bytes = body.to_bytes();
            unframe(&bytes).map(<[u8]>::to_vec).map_err(|message| GrpcError::Exchange {
                socket: socket.clone(),
                method: m.clone(),
                message: message.into(),
            })
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| GrpcError::Timeout {
            socket: self.socket.clone(),
            method: method.to_string(),
            timeout,
        })?
    }

    /// A server-streaming call: the request is sent now (the HTTP/2 handshake already
    /// happened in [`Channel::connect`]); [`Stream::next`] waits for the answer.
    pub fn stream(mut self, method: &str, namespace: Option<&str>, msg: &[u8]) -> Result<Stream, GrpcError> {
        let mut req = hyper::Request::post(format!("http://containerd/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(ns) = namespace {
            req = req.header("containerd-namespace", ns);
        }
        let req = req.body(Full::new(frame(msg))).map_err(|e| GrpcError::Exchange {
            socket: self.socket.clone(),
            method: method.to_string(),
            message: e.to_string(),
        })?;
        let pending: Pending = Box::pin(self.sender.send_request(req));
        Ok(Stream {
            socket: self.socket.clone(),
            method: method.to_string(),
            pending: Some(pending),
            body: None,
            buf: BytesMut::new(),
            _channel: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_checked() {
        assert_eq!(unframe(&frame(b"abc")).unwrap(), b"abc");
        assert!(unframe(&[]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err(), "compressed");
        assert!(unframe(&[0, 0, 0, 0, 9, 0x0a]).is_err(), "shorter than its prefix");
        assert_eq!(unframe(&[0, 0, 0, 0, 0]).unwrap(), b"");
    }
}
