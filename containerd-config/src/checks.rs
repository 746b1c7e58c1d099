//! The coverage checks: given what was observed on a node, every reason a pull
//! might not reach pullgate, each with the exact key and the fix. Pure functions:
//! the observing (files, processes, sockets) is the caller's.

use crate::model::{CRI_TRANSFER_MAX_CONCURRENT_DOWNLOADS, Effective};
use crate::version::{MIN_CRI_VERIFIED, Version};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Some pulls do not reach pullgate (or none do): the node is not covered.
    Error,
    /// Worth fixing; pulls still reach pullgate.
    Warning,
}

/// One problem and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable short name (also the `reason` label of `pullgate_node_coverage`).
    pub check: &'static str,
    /// Error (not covered) or warning.
    pub severity: Severity,
    /// The exact setting, e.g. `plugins.'io.containerd.cri.v1.images'.discard_unpacked_layers = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The file that sets it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl Finding {
    fn error(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { check, severity: Severity::Error, key: None, file: None, problem: problem.into(), fix: fix.into() }
    }
    fn warning(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { severity: Severity::Warning, ..Finding::error(check, problem, fix) }
    }
    fn at(mut self, key: impl Into<String>) -> Finding {
        self.key = Some(key.into());
        self
    }
}

/// A CRI setting that makes containerd pull on its local path, where no verifier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `use_local_image_pull = true`.
    UseLocalImagePull,
    /// `disable_snapshot_annotations = false`.
    SnapshotAnnotations,
    /// `discard_unpacked_layers = true`.
    DiscardUnpackedLayers,
    /// `max_concurrent_downloads != 3`.
    MaxConcurrentDownloads,
    /// `image_pull_with_sync_fs = true`.
    ImagePullWithSyncFs,
    /// `registry.mirrors` set.
    RegistryMirrors,
    /// `registry.configs` set.
    RegistryConfigs,
    /// `registry.auths` set.
    RegistryAuths,
}

impl Trigger {
    /// Every trigger, in the order doctor reports them.
    pub const ALL: [Trigger; 8] = [
        Trigger::UseLocalImagePull,
        Trigger::SnapshotAnnotations,
        Trigger::DiscardUnpackedLayers,
        Trigger::MaxConcurrentDownloads,
        Trigger::ImagePullWithSyncFs,
        Trigger::RegistryMirrors,
        Trigger::RegistryConfigs,
        Trigger::RegistryAuths,
    ];

    /// The finding's check name.
    pub fn check(self) -> &'static str {
        match self {
            Trigger::UseLocalImagePull => "use-local-image-pull",
            Trigger::SnapshotAnnotations => "disable-snapshot-annotations",
            Trigger::DiscardUnpackedLayers => "discard-unpacked-layers",
            Trigger::MaxConcurrentDownloads => "max-concurrent-downloads",
            Trigger::ImagePullWithSyncFs => "image-pull-with-sync-fs",
            Trigger::RegistryMirrors => "registry-mirrors",
            Trigger::RegistryConfigs => "registry-configs",
            Trigger::RegistryAuths => "registry-auths",
        }
    }

    /// The key's path inside the CRI images plugin table.
    pub fn key_path(self) -> &'static [&'static str] {
        match self {
            Trigger::UseLocalImagePull => &["use_local_image_pull"],
            Trigger::SnapshotAnnotations => &["disable_snapshot_annotations"],
            Trigger::DiscardUnpackedLayers => &["discard_unpacked_layers"],
            Trigger::MaxConcurrentDownloads => &["max_concurrent_downloads"],
            Trigger::ImagePullWithSyncFs => &["image_pull_with_sync_fs"],
            Trigger::RegistryMirrors => &["registry", "mirrors"],
            Trigger::RegistryConfigs => &["registry", "configs"],
            Trigger::RegistryAuths => &["registry", "auths"],
        }
    }

    /// Whether the effective settings have this trigger on, and the value as written.
    pub fn active(self, e: &Effective) -> Option<String> {
        let i = &e.images;
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| format!("{v:?}"));
        match self {
            Trigger::UseLocalImagePull => i.use_local_image_pull.then(|| "true".into()),
            Trigger::SnapshotAnnotations => (!i.disable_snapshot_annotations).then(|| "false".into()),
            Trigger::DiscardUnpackedLayers => i.discard_unpacked_layers.then(|| "true".into()),
            Trigger::MaxConcurrentDownloads => (i.max_concurrent_downloads != CRI_TRANSFER_MAX_CONCURRENT_DOWNLOADS)
                .then(|| i.max_concurrent_downloads.to_string()),
            Trigger::ImagePullWithSyncFs => i.image_pull_with_sync_fs.then(|| "true".into()),
            Trigger::RegistryMirrors => list(&i.mirrors),
            Trigger::RegistryConfigs => list(&i.configs),
            Trigger::RegistryAuths => list(&i.auths),
        }
    }

    /// How to fix it by hand (what `pullgate-install install --fix` does, where it can).
    pub fn fix(self) -> &'static str {
        match self {
            Trigger::UseLocalImagePull => "remove the key (default false)",
            Trigger::SnapshotAnnotations => "remove the key (default true on Linux)",
            Trigger::DiscardUnpackedLayers => {
                "remove the key; the transfer service has no equivalent (unpacked layers' compressed blobs stay in the content store until garbage collection)"
            }
            Trigger::MaxConcurrentDownloads => {
                "remove it from the CRI plugin and set max_concurrent_downloads under [plugins.'io.containerd.transfer.v1.local'] instead"
            }
            Trigger::ImagePullWithSyncFs => {
                "remove the key and set sync_fs = true under [plugins.'io.containerd.service.v1.diff-service'] instead"
            }
            Trigger::RegistryMirrors => {
                "describe each mirror in a hosts.toml under registry.config_path (certs.d/<host>/hosts.toml) and remove registry.mirrors"
            }
            Trigger::RegistryConfigs => {
                "move TLS settings to hosts.toml under registry.config_path (ca, client, skip_verify) and remove registry.configs; credentials go to image pull Secrets or a kubelet credential provider"
            }
            Trigger::RegistryAuths => {
                "remove registry.auths and give the credentials to kubelet (image pull Secrets or a credential provider plugin)"
            }
        }
    }
}

/// The key as doctor prints it.
pub fn trigger_key(t: Trigger) -> String {
    format!("plugins.'{}'.{}", crate::load::V3_IMAGES_PLUGIN, t.key_path().join("."))
}

/// Findings about containerd's own settings (no I/O).
pub fn config_findings(e: &Effective) -> Vec<Finding> {
    let mut out = Vec::new();
    if e.bindir_disabled() {
        out.push(
            Finding::error(
                "bindir-disabled",
                "the image-verifier bindir plugin is in disabled_plugins: no pull runs any verifier",
                format!("remove {:?} from disabled_plugins and restart containerd", crate::model::BINDIR_PLUGIN),
            )
            .at("disabled_plugins"),
        );
    }
    if e.bindir.max_verifiers < 1 {
        out.push(
            Finding::error(
                "max-verifiers",
                format!("max_verifiers = {}: containerd runs no verifier", e.bindir.max_verifiers),
                "set max_verifiers to at least 1 (default 10)",
            )
            .at(format!("plugins.'{}'.max_verifiers", crate::model::BINDIR_PLUGIN)),
        );
    }
    if e.cri_disabled() {
        return out;
    }
    for t in Trigger::ALL {
        if let Some(value) = t.active(e) {
            out.push(
                Finding::error(
                    t.check(),
                    format!(
                        "CRI pulls (kubelet) skip every image verifier: containerd falls back to its local pull path because {} = {value}",
                        t.key_path().join(".")
                    ),
                    t.fix(),
                )
                .at(format!("{} = {value}", trigger_key(t))),
            );
        }
    }
    out
}

/// The containerd version check; `None` when no source could tell.
pub fn version_findings(version: Option<Version>, source: &str) -> Vec<Finding> {
    match version {
        None => vec![Finding::error(
            "containerd-version",
            format!("cannot tell which containerd runs here ({source})"),
            "make the containerd binary or its socket reachable (doctor --containerd-bin / --containerd-socket)",
        )],
        Some(v) if v < MIN_CRI_VERIFIED => vec![Finding::error(
            "containerd-version",
            format!(
                "containerd {v} ({source}): its CRI plugin never pulls through the transfer service, so kubelet pulls skip every verifier"
            ),
            format!("upgrade containerd to {MIN_CRI_VERIFIED} or later"),
        )],
        Some(_) => Vec::new(),
    }
}

/// One entry of `bin_dir`, as containerd will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinEntry {
    /// File name.
    pub name: String,
    /// A regular file (or a symlink to one) with an execute bit.
    pub executable: bool,
    /// A directory (containerd fails the pull on it).
    pub is_dir: bool,
}

/// Findings about `bin_dir` and where pullgate's verifier sorts in it.
/// `listing` is `Err` when the directory cannot be read (missing → `Ok(None)`).
pub fn bin_dir_findings(
    e: &Effective,
    listing: Result<Option<Vec<BinEntry>>, String>,
    pullgate_name: &str,
) -> Vec<Finding> {
    let dir = e.bindir.bin_dir.display().to_string();
    let key = format!("plugins.'{}'.bin_dir = {dir:?}", crate::model::BINDIR_PLUGIN);
    let mut entries = match listing {
        Err(why) => {
            return vec![
                Finding::error(
                    "bin-dir",
                    format!("cannot read bin_dir {dir}: {why}"),
                    "check the path and its permissions",
                )
                .at(key),
            ];
        }
        Ok(None) => {
            return vec![
                Finding::error(
                    "bin-dir",
                    format!("bin_dir {dir} does not exist: containerd allows every pull"),
                    "run pullgate-install install",
                )
                .at(key),
            ];
        }
        Ok(Some(entries)) => entries,
    };
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let Some(pos) = entries.iter().position(|x| x.name == pullgate_name) else {
        let what = if entries.is_empty() {
            "is empty: containerd allows every pull".to_string()
        } else {
            format!("has no {pullgate_name}")
        };
        return vec![
            Finding::error("verifier-missing", format!("bin_dir {dir} {what}"), "run pullgate-install install").at(key),
        ];
    };
    let mut out = Vec::new();
    let me = &entries[pos];
    if me.is_dir || !me.executable {
        out.push(Finding::error(
            "verifier-not-executable",
            format!("{dir}/{pullgate_name} is not an executable file: containerd fails every pull"),
            "reinstall (pullgate-install install) or chmod 0755 it",
        ));
    }
    let max = e.bindir.max_verifiers.max(0) as usize;
    if pos >= max {
        out.push(
            Finding::error(
                "verifier-skipped",
                format!(
                    "{pullgate_name} is entry {} of {} in {dir} by name, past max_verifiers = {max}: containerd skips it with only a warning",
                    pos + 1,
                    entries.len()
                ),
                format!("raise max_verifiers to at least {}, or rename the verifier so it sorts earlier", pos + 1),
            )
            .at(format!("plugins.'{}'.max_verifiers = {max}", crate::model::BINDIR_PLUGIN)),
        );
    }
    for other in entries.iter().take(max) {
        if other.name != pullgate_name && (other.is_dir || !other.executable) {
            out.push(Finding::warning(
                "bin-dir-entry",
                format!("{dir}/{} is not an executable file: containerd fails every pull on it", other.name),
                "remove it from bin_dir",
            ));
        }
    }
    out
}

/// The margin `per_verifier_timeout` should leave above the verifier's deadline.
pub fn timeout_margin(timeout: Duration) -> Duration {
    (timeout / 10).max(Duration::from_millis(500))
}

/// The deadline the installer writes into verifier.json for a containerd timeout:
/// 80 % of the timeout, and never closer to it than [`timeout_margin`].
pub fn deadline_for(timeout: Duration) -> Option<Duration> {
    let d = timeout.checked_sub(timeout_margin(timeout))?.min(timeout * 8 / 10);
    (d >= Duration::from_millis(pullgate_wire::MIN_DEADLINE_MS)).then_some(d)
}

/// `per_verifier_timeout` against the verifier's `deadlineMs`.
pub fn timeout_findings(e: &Effective, deadline_ms: u64) -> Vec<Finding> {
    let key = format!("plugins.'{}'.per_verifier_timeout", crate::model::BINDIR_PLUGIN);
    let timeout = match &e.bindir.per_verifier_timeout {
        Ok(t) => *t,
        Err(text) => {
            return vec![
                Finding::error(
                    "timeout",
                    format!("per_verifier_timeout {text} is not a duration"),
                    "write it like \"10s\"",
                )
                .at(format!("{key} = {text}")),
            ];
        }
    };
    let deadline = Duration::from_millis(deadline_ms);
    let margin = timeout_margin(timeout);
    if deadline + margin > timeout {
        let fix = match deadline_for(timeout) {
            Some(d) => format!("set deadlineMs to {} in verifier.json (or raise per_verifier_timeout)", d.as_millis()),
            None => "raise per_verifier_timeout (e.g. \"10s\")".into(),
        };
        return vec![
            Finding::error(
                "timeout",
                format!(
                    "per_verifier_timeout {} leaves less than {} ms above the verifier's deadlineMs {deadline_ms}: containerd may kill the verifier and block the pull before it decides",
                    crate::duration::format_go_duration(timeout),
                    margin.as_millis()
                ),
                fix,
            )
            .at(format!("{key} = {:?}", crate::duration::format_go_duration(timeout))),
        ];
    }
    Vec::new()
}

/// True when no finding is an error: every pull reaches pullgate.
pub fn covered(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.severity != Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Effective;

    fn eff(toml_text: &str) -> Effective {
        Effective::from_merged(&toml_text.parse().unwrap())
    }

    fn default_fixture() -> Effective {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/containerd/config-default-v2.2.7.toml");
        let l = crate::load::load(&crate::HostRoot::new("/"), &path).expect("fixture loads");
        Effective::from_merged(&l.merged)
    }

    #[test]
    fn the_default_config_has_no_trigger() {
        let e = default_fixture();
        assert_eq!(config_findings(&e), Vec::<Finding>::new());
        assert_eq!(e.bindir.bin_dir, std::path::PathBuf::from("/opt/containerd/image-verifier/bin"));
        assert_eq!(e.bindir.per_verifier_timeout, Ok(Duration::from_secs(10)));
        assert_eq!(e.images.sandbox_image.as_deref(), Some("registry.k8s.io/pause:3.10.1"));
    }

    #[test]
    fn every_trigger_is_named_with_its_key() {
        let cases = [
            ("use_local_image_pull = true", "use-local-image-pull"),
            ("disable_snapshot_annotations = false", "disable-snapshot-annotations"),
            ("discard_unpacked_layers = true", "discard-unpacked-layers"),
            ("max_concurrent_downloads = 5", "max-concurrent-downloads"),
            ("image_pull_with_sync_fs = true", "image-pull-with-sync-fs"),
            (
                "[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']\nendpoint = ['https://m']",
                "registry-mirrors",
            ),
            (
                "[plugins.'io.containerd.cri.v1.images'.registry.configs.'r.io'.auth]\nusername = 'u'",
                "registry-configs",
            ),
            ("[plugins.'io.containerd.cri.v1.images'.registry.auths.'r.io']\nusername = 'u'", "registry-auths"),
        ];
        for (line, check) in cases {
            let e = eff(&format!("version = 3\n[plugins.'io.containerd.cri.v1.images']\n{line}\n"));
            let f = config_findings(&e);
            assert_eq!(f.len(), 1, "{line}: {f:?}");
            assert_eq!(f[0].check, check);
            assert!(
                f[0].key
                    .as_ref()
                    .unwrap()
                    .contains(Trigger::ALL.iter().find(|t| t.check() == check).unwrap().key_path().last().unwrap())
            );
            assert!(!covered(&f));
        }
        // The CRI plugin off: no Kubernetes pulls, so its settings do not matter.
        let e = eff(
            "version = 3\ndisabled_plugins = ['io.containerd.cri.v1.images']\n[plugins.'io.containerd.cri.v1.images']\ndiscard_unpacked_layers = true\n",
        );
        assert!(config_findings(&e).is_empty());
    }

    #[test]
    fn bindir_disabled_and_positions() {
        let e = eff("version = 3\ndisabled_plugins = ['io.containerd.image-verifier.v1.bindir']\n");
        assert_eq!(config_findings(&e)[0].check, "bindir-disabled");
        let e = eff("version = 3\n[plugins.'io.containerd.image-verifier.v1.bindir']\nmax_verifiers = 2\n");
        let entry = |n: &str| BinEntry { name: n.into(), executable: true, is_dir: false };
        let ok =
            bin_dir_findings(&e, Ok(Some(vec![entry("zz"), entry("00-pullgate-verifier")])), "00-pullgate-verifier");
        assert!(ok.is_empty(), "{ok:?}");
        let late = bin_dir_findings(&e, Ok(Some(vec![entry("a"), entry("b"), entry("c-pullgate")])), "c-pullgate");
        assert_eq!(late[0].check, "verifier-skipped");
        assert!(late[0].problem.contains("entry 3 of 3"), "{}", late[0].problem);
        assert_eq!(bin_dir_findings(&e, Ok(None), "x")[0].check, "bin-dir");
        assert_eq!(bin_dir_findings(&e, Ok(Some(vec![])), "x")[0].check, "verifier-missing");
        let noexec = BinEntry { name: "x".into(), executable: false, is_dir: false };
        assert_eq!(bin_dir_findings(&e, Ok(Some(vec![noexec])), "x")[0].check, "verifier-not-executable");
    }

    #[test]
    fn timeouts_and_derived_deadlines() {
        let e = default_fixture();
        assert!(timeout_findings(&e, 8000).is_empty());
        let f = timeout_findings(&e, 9800);
        assert_eq!(f[0].check, "timeout");
        for secs in [1u64, 3, 10, 30, 120] {
            let t = Duration::from_secs(secs);
            let d = deadline_for(t).unwrap();
            let e = eff(&format!(
                "version = 3\n[plugins.'io.containerd.image-verifier.v1.bindir']\nper_verifier_timeout = '{secs}s'\n"
            ));
            assert!(timeout_findings(&e, d.as_millis() as u64).is_empty(), "{secs}s → {d:?}");
        }
        assert_eq!(deadline_for(Duration::from_secs(10)).unwrap(), Duration::from_secs(8));
        assert!(deadline_for(Duration::from_millis(100)).is_none());
        let e = eff("version = 3\n[plugins.'io.containerd.image-verifier.v1.bindir']\nper_verifier_timeout = 'soon'\n");
        assert_eq!(timeout_findings(&e, 1000)[0].check, "timeout");
    }

    #[test]
    fn versions() {
        assert!(version_findings(Version::find_in("v2.2.7"), "binary").is_empty());
        assert_eq!(version_findings(Version::find_in("v2.0.5"), "binary")[0].check, "containerd-version");
        assert_eq!(version_findings(None, "no binary")[0].check, "containerd-version");
    }
}
