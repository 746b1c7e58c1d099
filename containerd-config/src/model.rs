//! The settings of containerd's (merged, version 3) config that decide whether a
//! pull reaches pullgate, with containerd v2.2.7's defaults filled in.

use crate::duration::parse_go_duration;
use crate::load::V3_IMAGES_PLUGIN;
use std::path::PathBuf;
use std::time::Duration;
use toml::{Table, Value};

/// The bindir image-verifier plugin id.
pub const BINDIR_PLUGIN: &str = "io.containerd.image-verifier.v1.bindir";
/// Whether a `disabled_plugins` entry names the bindir plugin (by id or short name).
pub fn names_bindir(entry: &str) -> bool {
    entry == BINDIR_PLUGIN || entry == "bindir"
}

/// The transfer service plugin id.
pub const TRANSFER_PLUGIN: &str = "io.containerd.transfer.v1.local";
/// The diff service plugin id (where `sync_fs` lives for transfer-service pulls).
pub const DIFF_SERVICE_PLUGIN: &str = "io.containerd.service.v1.diff-service";
/// containerd's default `bin_dir`.
pub const DEFAULT_BIN_DIR: &str = "/opt/containerd/image-verifier/bin";
/// containerd's default `max_verifiers`.
pub const DEFAULT_MAX_VERIFIERS: i64 = 10;
/// containerd's default `per_verifier_timeout`.
pub const DEFAULT_PER_VERIFIER_TIMEOUT: Duration = Duration::from_secs(10);
/// The only CRI `max_concurrent_downloads` that keeps the transfer service.
pub const CRI_TRANSFER_MAX_CONCURRENT_DOWNLOADS: i64 = 3;
/// containerd's default gRPC socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// The bindir plugin's settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Bindir {
    /// `bin_dir`.
    pub bin_dir: PathBuf,
    /// `max_verifiers` (containerd runs only the first N entries, sorted by name).
    pub max_verifiers: i64,
    /// `per_verifier_timeout`; `Err` holds the text when it is not a duration.
    pub per_verifier_timeout: Result<Duration, String>,
}

/// The CRI image settings that decide between the transfer service and the local pull path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CriImages {
    /// `use_local_image_pull`.
    pub use_local_image_pull: bool,
    /// `disable_snapshot_annotations` (default true on Linux).
    pub disable_snapshot_annotations: bool,
    /// `discard_unpacked_layers`.
    pub discard_unpacked_layers: bool,
    /// `max_concurrent_downloads` (default 3).
    pub max_concurrent_downloads: i64,
    /// `image_pull_with_sync_fs`.
    pub image_pull_with_sync_fs: bool,
    /// Hosts under `registry.mirrors`.
    pub mirrors: Vec<String>,
    /// Hosts under `registry.configs`.
    pub configs: Vec<String>,
    /// Hosts under `registry.auths`.
    pub auths: Vec<String>,
    /// `registry.config_path`.
    pub config_path: String,
    /// `pinned_images.sandbox` (the pause image).
    pub sandbox_image: Option<String>,
}

/// The effective settings pullgate's checks need.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// `disabled_plugins`.
    pub disabled_plugins: Vec<String>,
    /// `grpc.address`.
    pub socket: PathBuf,
    /// The bindir plugin.
    pub bindir: Bindir,
    /// The CRI image plugin.
    pub images: CriImages,
    /// `plugins.'io.containerd.transfer.v1.local'.config_path`.
    pub transfer_config_path: String,
}

fn plugin<'a>(t: &'a Table, id: &str) -> Option<&'a Table> {
    t.get("plugins")?.as_table()?.get(id)?.as_table()
}

fn bool_at(t: Option<&Table>, key: &str, default: bool) -> bool {
    t.and_then(|t| t.get(key)).and_then(Value::as_bool).unwrap_or(default)
}

fn str_at(t: Option<&Table>, key: &str) -> Option<String> {
    t.and_then(|t| t.get(key)).and_then(Value::as_str).map(str::to_string)
}

fn keys_at(t: Option<&Table>, key: &str) -> Vec<String> {
    let mut v: Vec<String> =
        t.and_then(|t| t.get(key)).and_then(Value::as_table).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    v.sort();
    v
}

impl Effective {
    /// Reads the settings from a merged version 3 document (see [`crate::load`]).
    pub fn from_merged(t: &Table) -> Effective {
        let b = plugin(t, BINDIR_PLUGIN);
        let timeout = match b.and_then(|b| b.get("per_verifier_timeout")) {
            None => Ok(DEFAULT_PER_VERIFIER_TIMEOUT),
            Some(Value::String(s)) => parse_go_duration(s).map_err(|_| s.clone()),
            Some(other) => Err(other.to_string()),
        };
        let bindir = Bindir {
            bin_dir: str_at(b, "bin_dir").filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_BIN_DIR.into()).into(),
            max_verifiers: b
                .and_then(|b| b.get("max_verifiers"))
                .and_then(Value::as_integer)
                .unwrap_or(DEFAULT_MAX_VERIFIERS),
            per_verifier_timeout: timeout,
        };
        let i = plugin(t, V3_IMAGES_PLUGIN);
        let registry = i.and_then(|i| i.get("registry")).and_then(Value::as_table);
        let images = CriImages {
            use_local_image_pull: bool_at(i, "use_local_image_pull", false),
            disable_snapshot_annotations: bool_at(i, "disable_snapshot_annotations", true),
            discard_unpacked_layers: bool_at(i, "discard_unpacked_layers", false),
            max_concurrent_downloads: i
                .and_then(|i| i.get("max_concurrent_downloads"))
                .and_then(Value::as_integer)
                .unwrap_or(CRI_TRANSFER_MAX_CONCURRENT_DOWNLOADS),
            image_pull_with_sync_fs: bool_at(i, "image_pull_with_sync_fs", false),
            mirrors: keys_at(registry, "mirrors"),
            configs: keys_at(registry, "configs"),
            auths: keys_at(registry, "auths"),
            config_path: str_at(registry, "config_path").unwrap_or_default(),
            sandbox_image: i
                .and_then(|i| i.get("pinned_images"))
                .and_then(Value::as_table)
                .and_then(|p| p.get("sandbox"))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let disabled_plugins = t
            .get("disabled_plugins")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let socket = t
            .get("grpc")
            .and_then(Value::as_table)
            .and_then(|g| g.get("address"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_SOCKET)
            .into();
        Effective {
            disabled_plugins,
            socket,
            bindir,
            images,
            transfer_config_path: str_at(plugin(t, TRANSFER_PLUGIN), "config_path").unwrap_or_default(),
        }
    }

    /// True when `disabled_plugins` switches the bindir verifier plugin off.
    pub fn bindir_disabled(&self) -> bool {
        self.disabled_plugins.iter().any(|p| names_bindir(p))
    }

    /// True when the CRI plugin is switched off (no Kubernetes pulls at all).
    pub fn cri_disabled(&self) -> bool {
        self.disabled_plugins.iter().any(|p| p == V3_IMAGES_PLUGIN || p == "io.containerd.grpc.v1.cri" || p == "cri")
    }
}
