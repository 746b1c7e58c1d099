//! containerd's image store over its socket: namespaces, images (name → target
//! descriptor), removing an image's name, and the image event stream.

use crate::grpc::{Channel, GrpcError, Stream};
use crate::proto::{Writer, all_bytes, fields, string, uint};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Deadline of one unary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An image record: a name in a namespace and the descriptor it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// containerd namespace (`k8s.io` for CRI, `default` for ctr).
    pub namespace: String,
    /// The image name (a reference, or `sha256:…` for CRI's digest records).
    pub name: String,
    /// Target media type.
    pub media_type: String,
    /// Target digest.
    pub digest: String,
    /// Target size.
    pub size: u64,
}

/// An image event from containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEvent {
    /// Namespace.
    pub namespace: String,
    /// `/images/create`, `/images/update` or `/images/delete`.
    pub topic: String,
    /// The image name.
    pub name: String,
}

/// A client bound to one containerd socket (connections are made per call).
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

fn decode_image(namespace: &str, msg: &[u8]) -> Result<Image, GrpcError> {
    let bad = |e: crate::proto::ProtoError| GrpcError::Exchange {
        socket: PathBuf::new(),
        method: "decode Image".into(),
        message: e.to_string(),
    };
    let f = fields(msg).map_err(bad)?;
    let target = all_bytes(&f, 3).first().map(|t| fields(t)).transpose().map_err(bad)?.unwrap_or_default();
    Ok(Image {
        namespace: namespace.to_string(),
        name: string(&f, 1),
        media_type: string(&target, 1),
        digest: string(&target, 2),
        size: uint(&target, 3),
    })
}

impl Client {
    /// A client for containerd at `socket`.
    pub fn new(socket: &Path) -> Client {
        Client { socket: socket.to_path_buf() }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call(&self, method: &str, namespace: Option<&str>, msg: &[u8]) -> Result<Vec<u8>, GrpcError> {
        let mut ch = Channel::connect(&self.socket, CALL_TIMEOUT).await?;
        ch.unary(method, namespace, msg, CALL_TIMEOUT).await
    }

    /// Every namespace.
    pub async fn namespaces(&self) -> Result<Vec<String>, GrpcError> {
        let msg = self.call("containerd.services.namespaces.v1.Namespaces/List", None, &[]).await?;
        let f = fields(&msg).map_err(|e| self.bad("Namespaces/List", e))?;
        let mut out = Vec::new();
        for ns in all_bytes(&f, 1) {
            let nf = fields(ns).map_err(|e| self.bad("Namespaces/List", e))?;
            out.push(string(&nf, 1));
        }
        Ok(out)
    }

    fn bad(&self, method: &str, e: crate::proto::ProtoError) -> GrpcError {
        GrpcError::Exchange { socket: self.socket.clone(), method: method.into(), message: e.to_string() }
    }

    /// Every image in `namespace`.
    pub async fn list_images(&self, namespace: &str) -> Result<Vec<Image>, GrpcError> {
        let msg = self.call("containerd.services.images.v1.Images/List", Some(namespace), &[]).await?;
        let f = fields(&msg).map_err(|e| self.bad("Images/List", e))?;
        all_bytes(&f, 1).into_iter().map(|m| decode_image(namespace, m)).collect()
    }

    /// One image by name; `Ok(None)` when it does not exist (any more).
    pub async fn get_image(&self, namespace: &str, name: &str) -> Result<Option<Image>, GrpcError> {
        let req = Writer::default().bytes(1, name.as_bytes()).finish();
        match self.call("containerd.services.images.v1.Images/Get", Some(namespace), &req).await {
            Ok(msg) => {
                let f = fields(&msg).map_err(|e| self.bad("Images/Get", e))?;
                all_bytes(&f, 1).first().map(|m| decode_image(namespace, m)).transpose()
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an image's name if it still points at `digest` (containerd compares the
    /// target, so a name re-pulled to another digest meanwhile is kept). Its content stays
    /// until containerd's garbage collection; running containers are not touched.
    /// `Ok(false)`: the name is gone or points elsewhere.
    pub async fn delete_image(&self, namespace: &str, name: &str, digest: &str) -> Result<bool, GrpcError> {
        let target = Writer::default().bytes(2, digest.as_bytes()).finish();
        let req = Writer::default().bytes(1, name.as_bytes()).bytes(3, &target).finish();
        match self.call("containerd.services.images.v1.Images/Delete", Some(namespace), &req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Subscribes to image events in every namespace.
    pub async fn subscribe_images(&self) -> Result<ImageEvents, GrpcError> {
        let ch = Channel::connect(&self.socket, CALL_TIMEOUT).await?;
        let req = Writer::default().bytes(1, br#"topic~="/images/""#).finish();
        let stream = ch.stream("containerd.services.events.v1.Events/Subscribe", None, &req)?;
        Ok(ImageEvents { stream })
    }
}

/// The image event stream.
pub struct ImageEvents {
    stream: Stream,
}

impl ImageEvents {
    /// The next image event; `Ok(None)` when containerd closed the stream.
    pub async fn next(&mut self) -> Result<Option<ImageEvent>, GrpcError> {
        loop {
            let Some(msg) = self.stream.next().await? else { return Ok(None) };
            let bad = |e: crate::proto::ProtoError| GrpcError::Exchange {
                socket: PathBuf::new(),
                method: "decode Envelope".into(),
                message: e.to_string(),
            };
            let f = fields(&msg).map_err(bad)?;
            let topic = string(&f, 3);
            if !topic.starts_with("/images/") {
                continue;
            }
            let any = all_bytes(&f, 4).first().map(|a| fields(a)).transpose().map_err(bad)?.unwrap_or_default();
            let value = all_bytes(&any, 2).first().map(|v| fields(v)).transpose().map_err(bad)?.unwrap_or_default();
            return Ok(Some(ImageEvent { namespace: string(&f, 2), topic, name: string(&value, 1) }));
        }
    }
}
