//! containerd's config as pullgate sees it.
//!
//! * [`load`]: the main config and its `imports`, version 2 and 3, merged the way
//!   containerd merges them (or [`dump`]: `containerd config dump` where the binary runs).
//! * [`model`]: the settings that decide whether pulls reach an image verifier, with
//!   containerd's defaults.
//! * [`checks`]: the coverage findings (pure functions over what was observed).
//! * [`edit`]: the changes the installer makes (`toml_edit`: comments, order and
//!   unrelated keys kept), and `--fix` of the local-pull triggers.
//! * [`socket`]: containerd's `Version` gRPC call over its socket.
//!
//! Nothing here knows about Kubernetes or the agent.

pub mod checks;
pub mod dump;
pub mod duration;
pub mod edit;
pub mod grpc;
pub mod hosts;
pub mod images;
pub mod install_state;
pub mod load;
pub mod model;
pub mod probe;
pub mod proto;
pub mod socket;
pub mod version;

use std::path::{Component, Path, PathBuf};

/// The host's root as this process sees it: `/` on the node, `/host` in a container
/// that mounts the host there. Host paths (as containerd names them) are resolved under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    /// A root at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> HostRoot {
        HostRoot(dir.into())
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `path` (a host path) as seen from here. `..` is resolved lexically and never
    /// climbs above the root, so a configured path cannot name a file outside it.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => parts.push(part),
                Component::ParentDir => {
                    parts.pop();
                }
                _ => {}
            }
        }
        let mut out = self.0.clone();
        out.extend(parts);
        out
    }
}

/// The name the installer gives pullgate's verifier in `bin_dir` unless told otherwise:
/// it sorts before the usual names of other verifiers.
pub const DEFAULT_VERIFIER_NAME: &str = "00-pullgate-verifier";

impl HostRoot {
    /// Follows symlinks in `path` (a host path) the way the host would — an absolute
    /// link target is a host path, so it is resolved under this root, not in this
    /// container — and returns the host path of the file itself. At most 32 links.
    pub fn follow_links(&self, path: &Path) -> std::io::Result<PathBuf> {
        let mut pending: Vec<std::ffi::OsString> = path
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut host = PathBuf::from("/");
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                host.pop();
                continue;
            }
            let next = host.join(&part);
            match std::fs::symlink_metadata(self.resolve(&next)) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 32 {
                        return Err(std::io::Error::other(format!(
                            "{}: too many levels of symbolic links",
                            path.display()
                        )));
                    }
                    let target = std::fs::read_link(self.resolve(&next))?;
                    if target.is_absolute() {
                        host = PathBuf::from("/");
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(p) => pending.push(p.to_os_string()),
                            Component::ParentDir => pending.push("..".into()),
                            _ => {}
                        }
                    }
                }
                _ => host = next,
            }
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_links_resolve_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(d.path());
        std::fs::create_dir_all(d.path().join("etc/containerd/base")).unwrap();
        std::fs::write(d.path().join("etc/containerd/base/config.toml"), "version = 3\n").unwrap();
        std::os::unix::fs::symlink("/etc/containerd/base/config.toml", d.path().join("etc/containerd/config.toml"))
            .unwrap();
        std::os::unix::fs::symlink("base", d.path().join("etc/containerd/rel")).unwrap();
        let p = root.follow_links(Path::new("/etc/containerd/config.toml")).unwrap();
        assert_eq!(p, PathBuf::from("/etc/containerd/base/config.toml"));
        let p = root.follow_links(Path::new("/etc/containerd/rel/config.toml")).unwrap();
        assert_eq!(p, PathBuf::from("/etc/containerd/base/config.toml"));
        std::os::unix::fs::symlink("loop", d.path().join("loop")).unwrap();
        assert!(root.follow_links(Path::new("/loop")).is_err());
    }

    #[test]
    fn host_paths_stay_under_the_root() {
        let r = HostRoot::new("/host");
        assert_eq!(
            r.resolve(Path::new("/etc/containerd/config.toml")),
            PathBuf::from("/host/etc/containerd/config.toml")
        );
        assert_eq!(r.resolve(Path::new("/etc/../../../root/x")), PathBuf::from("/host/root/x"));
        assert_eq!(HostRoot::new("/").resolve(Path::new("/a/b/../c")), PathBuf::from("/a/c"));
    }
}
