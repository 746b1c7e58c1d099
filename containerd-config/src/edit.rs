//! The edits the installer makes to containerd's config files, with `toml_edit`
//! so comments, ordering and unrelated keys stay as they were. Pure functions:
//! text in, text out (`None` when nothing changes), plus what was done.

use crate::checks::Trigger;
use crate::hosts::{Tls, hosts_files};
use crate::load::{V2_CRI_PLUGIN, V3_IMAGES_PLUGIN};
use crate::model::{BINDIR_PLUGIN, DIFF_SERVICE_PLUGIN, TRANSFER_PLUGIN};
use std::collections::BTreeMap;
use toml_edit::{Array, DocumentMut, Item, Table, value};

/// Where `--fix` puts hosts.toml files when the config names no `config_path`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/containerd/certs.d";

/// An edit that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The text is not TOML.
    #[error("not valid TOML: {0}")]
    Parse(String),
    /// A key pullgate must set holds something of another type.
    #[error("{key} is not a table; fix it by hand")]
    NotATable {
        /// The key.
        key: String,
    },
}

/// The bindir settings the installer needs.
#[derive(Debug, Clone)]
pub struct BindirWant {
    /// `bin_dir` to write when the file sets none (the effective one, made explicit).
    pub bin_dir: String,
    /// `max_verifiers` must be at least this.
    pub min_max_verifiers: i64,
    /// `per_verifier_timeout` to write when the file sets none or an unreadable one.
    pub per_verifier_timeout: String,
}

fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>().map_err(|e| EditError::Parse(e.to_string()))
}

/// The table at `path`, created (as a `[section]`) when missing.
fn table_at<'a>(doc: &'a mut DocumentMut, path: &[&str]) -> Result<&'a mut Table, EditError> {
    let mut t = doc.as_table_mut();
    for (i, key) in path.iter().enumerate() {
        let entry = t.entry(key).or_insert_with(|| {
            let mut n = Table::new();
            n.set_implicit(i + 1 < path.len());
            Item::Table(n)
        });
        t = entry.as_table_mut().ok_or_else(|| EditError::NotATable { key: path[..=i].join(".") })?;
    }
    Ok(t)
}

/// The table at `path` if it exists.
fn find_table<'a>(doc: &'a mut DocumentMut, path: &[&str]) -> Option<&'a mut Table> {
    let mut t = doc.as_table_mut();
    for key in path {
        t = t.get_mut(key)?.as_table_mut()?;
    }
    Some(t)
}

/// Takes the bindir plugin out of `disabled_plugins`; true when it was there.
fn remove_from_disabled(doc: &mut DocumentMut) -> bool {
    let Some(arr) = doc.get_mut("disabled_plugins").and_then(Item::as_array_mut) else { return false };
    let before = arr.len();
    arr.retain(|v| !v.as_str().is_some_and(crate::model::names_bindir));
    arr.len() != before
}

/// Takes the bindir plugin out of a file's `disabled_plugins` (an import may disable it);
/// `None` when the file does not disable it.
pub fn enable_bindir(text: &str) -> Result<Option<String>, EditError> {
    let mut doc = parse(text)?;
    Ok(remove_from_disabled(&mut doc).then(|| doc.to_string()))
}

/// Makes the bindir plugin explicit and enabled. Returns the new text and one line
/// per change, or `None` when the file already says everything needed.
pub fn ensure_bindir(text: &str, want: &BindirWant) -> Result<Option<(String, Vec<String>)>, EditError> {
    let mut doc = parse(text)?;
    let mut changes = Vec::new();
    if remove_from_disabled(&mut doc) {
        changes.push(format!("removed {BINDIR_PLUGIN:?} from disabled_plugins"));
    }
    let t = table_at(&mut doc, &["plugins", BINDIR_PLUGIN])?;
    if t.get("bin_dir").and_then(Item::as_str).is_none_or(str::is_empty) {
        t["bin_dir"] = value(want.bin_dir.as_str());
        changes.push(format!("set bin_dir = {:?}", want.bin_dir));
    }
    let max = t.get("max_verifiers").and_then(Item::as_integer);
    if max.is_none_or(|m| m < want.min_max_verifiers) {
        let n = want.min_max_verifiers.max(crate::model::DEFAULT_MAX_VERIFIERS);
        t["max_verifiers"] = value(n);
        changes.push(format!("set max_verifiers = {n}"));
    }
    let timeout_ok = t
        .get("per_verifier_timeout")
        .and_then(Item::as_str)
        .is_some_and(|s| crate::duration::parse_go_duration(s).is_ok());
    if !timeout_ok {
        t["per_verifier_timeout"] = value(want.per_verifier_timeout.as_str());
        changes.push(format!("set per_verifier_timeout = {:?}", want.per_verifier_timeout));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    Ok(Some((doc.to_string(), changes.into_iter().map(|c| format!("[plugins.{BINDIR_PLUGIN:?}] {c}")).collect())))
}

/// The CRI image plugin's table path for a file of `version`.
pub fn images_path(version: i64) -> [&'static str; 2] {
    match version {
        3.. => ["plugins", V3_IMAGES_PLUGIN],
        2 => ["plugins", V2_CRI_PLUGIN],
        _ => ["plugins", "cri"],
    }
}

/// What `fix_triggers` did to one file.
#[derive(Debug, Default)]
pub struct FixOutcome {
    /// The new text, when anything changed.
    pub text: Option<String>,
    /// One line per change.
    pub changes: Vec<String>,
    /// hosts.toml files to write: registry host → contents (under [`FixOutcome::config_path`]).
    pub hosts: BTreeMap<String, String>,
    /// The `config_path` the hosts files belong under.
    pub config_path: String,
    /// Triggers in this file that cannot be fixed automatically, with why.
    pub refused: Vec<(Trigger, String)>,
}

/// A registry host is used as a directory name: only what a host (and port) can hold.
pub fn safe_host_dir(host: &str) -> bool {
    !host.is_empty()
        && host != "."
        && host != ".."
        && host.len() <= 255
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'))
}

/// Rewrites the local-pull triggers `active` found in one file (of `version`) to their
/// transfer-service equivalents. `hosts_exists(host)` says whether a hosts.toml for
/// that registry already exists (then it is not overwritten and the mirror is refused).
pub fn fix_triggers(
    text: &str,
    version: i64,
    active: &[Trigger],
    hosts_exists: &dyn Fn(&str, &str) -> bool,
) -> Result<FixOutcome, EditError> {
    let mut doc = parse(text)?;
    let mut out = FixOutcome::default();
    let path = images_path(version);
    let shown = format!("plugins.{:?}", path[1]);
    let mut set_elsewhere: Vec<(&str, &str, Item)> = Vec::new();
    if let Some(images) = find_table(&mut doc, &path) {
        for t in active {
            match t {
                Trigger::UseLocalImagePull
                | Trigger::SnapshotAnnotations
                | Trigger::DiscardUnpackedLayers
                | Trigger::ImagePullWithSyncFs
                | Trigger::MaxConcurrentDownloads => {
                    let key = t.key_path()[0];
                    let Some(old) = images.remove(key) else { continue };
                    out.changes.push(format!("removed {shown}.{key} (was {})", old.to_string().trim()));
                    match t {
                        Trigger::MaxConcurrentDownloads => {
                            set_elsewhere.push((TRANSFER_PLUGIN, "max_concurrent_downloads", old))
                        }
                        Trigger::ImagePullWithSyncFs => {
                            set_elsewhere.push((DIFF_SERVICE_PLUGIN, "sync_fs", value(true)))
                        }
                        _ => {}
                    }
                }
                Trigger::RegistryMirrors | Trigger::RegistryConfigs | Trigger::RegistryAuths => {}
            }
        }
        let registry_fix = fix_registry(images, active, &shown, hosts_exists, &mut out);
        if let Some(path) = registry_fix {
            set_elsewhere.push((TRANSFER_PLUGIN, "config_path", value(path)));
        }
    }
    for (plugin, key, item) in set_elsewhere {
        let t = table_at(&mut doc, &["plugins", plugin])?;
        // Keep what the file already chose for the transfer service, unless it is the default.
        let keep = match key {
            "config_path" => t.get(key).and_then(Item::as_str).is_some_and(|s| !s.is_empty()),
            "sync_fs" => t.get(key).and_then(Item::as_bool) == Some(true),
            _ => t
                .get(key)
                .and_then(Item::as_integer)
                .is_some_and(|n| n != crate::model::CRI_TRANSFER_MAX_CONCURRENT_DOWNLOADS),
        };
        if !keep {
            out.changes.push(format!("set plugins.{plugin:?}.{key} = {}", item.to_string().trim()));
            t[key] = item;
        }
    }
    if !out.changes.is_empty() {
        out.text = Some(doc.to_string());
    }
    Ok(out)
}

/// Moves mirrors and TLS configs into hosts files; refuses credentials. Returns the
/// `config_path` to make the transfer service use too, when hosts files were planned.
fn fix_registry(
    images: &mut Table,
    active: &[Trigger],
    shown: &str,
    hosts_exists: &dyn Fn(&str, &str) -> bool,
    out: &mut FixOutcome,
) -> Option<String> {
    let registry = images.get_mut("registry")?.as_table_mut()?;
    if active.contains(&Trigger::RegistryAuths) && registry.contains_key("auths") {
        out.refused.push((
            Trigger::RegistryAuths,
            format!("{shown}.registry.auths holds credentials, which hosts.toml cannot carry: give them to kubelet (image pull Secrets or a credential provider), then remove the table"),
        ));
    }
    let mut mirrors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if active.contains(&Trigger::RegistryMirrors)
        && let Some(m) = registry.get("mirrors").and_then(Item::as_table)
    {
        for (host, t) in m.iter() {
            let eps = t.get("endpoint").and_then(Item::as_array).map(array_strings).unwrap_or_default();
            mirrors.insert(host.to_string(), eps);
        }
    }
    let mut tls: BTreeMap<String, Tls> = BTreeMap::new();
    let mut with_auth: Vec<String> = Vec::new();
    if active.contains(&Trigger::RegistryConfigs)
        && let Some(c) = registry.get("configs").and_then(Item::as_table)
    {
        for (host, t) in c.iter() {
            if t.get("auth").is_some() {
                with_auth.push(host.to_string());
                continue;
            }
            let s = |k: &str| t.get("tls").and_then(|x| x.get(k)).and_then(Item::as_str).map(str::to_string);
            let skip =
                t.get("tls").and_then(|x| x.get("insecure_skip_verify")).and_then(Item::as_bool).unwrap_or(false);
            tls.insert(
                host.to_string(),
                Tls {
                    ca_file: s("ca_file"),
                    cert_file: s("cert_file"),
                    key_file: s("key_file"),
                    insecure_skip_verify: skip,
                },
            );
        }
    }
    if !with_auth.is_empty() {
        out.refused.push((
            Trigger::RegistryConfigs,
            format!("{shown}.registry.configs {with_auth:?} carry credentials (auth), which hosts.toml cannot: give them to kubelet (image pull Secrets or a credential provider), then remove them"),
        ));
    }
    // config_path may list several directories (`a:b`): new files go to the first, and
    // a host already described in any of them is left alone.
    let config_paths: Vec<String> = registry
        .get("config_path")
        .and_then(Item::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_CONFIG_PATH)
        .split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let config_path = config_paths.first().cloned().unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_string());
    let planned = hosts_files(&mirrors, &tls);
    let mut moved_mirrors = Vec::new();
    let mut moved_configs = Vec::new();
    for (host, text) in planned {
        if host == "*" || host == "_default" {
            out.refused.push((Trigger::RegistryMirrors, format!("the catch-all mirror {host:?} becomes {config_path}/_default/hosts.toml: write that file by hand, then remove the mirror")));
            continue;
        }
        if !safe_host_dir(&host) {
            out.refused.push((
                Trigger::RegistryMirrors,
                format!("registry host {host:?} cannot be a directory name under {config_path}; fix it by hand"),
            ));
            continue;
        }
        if config_paths.iter().any(|dir| hosts_exists(dir, &host)) {
            out.refused.push((
                Trigger::RegistryMirrors,
                format!("{config_path}/{host}/hosts.toml already exists; merge {shown}.registry settings for {host} into it by hand"),
            ));
            continue;
        }
        if mirrors.contains_key(&host) {
            moved_mirrors.push(host.clone());
        }
        moved_configs.extend(
            tls.keys()
                .filter(|h| {
                    **h == host
                        || mirrors
                            .get(&host)
                            .is_some_and(|eps| eps.iter().any(|e| crate::hosts::endpoint_host(e) == h.as_str()))
                })
                .cloned(),
        );
        out.changes.push(format!("wrote {config_path}/{host}/hosts.toml from {shown}.registry"));
        out.hosts.insert(host, text);
    }
    let removed_any = remove_hosts(registry, "mirrors", &moved_mirrors, shown, out)
        | remove_hosts(registry, "configs", &moved_configs, shown, out);
    if !removed_any {
        return None;
    }
    if registry.get("config_path").and_then(Item::as_str).is_none_or(str::is_empty) {
        registry["config_path"] = value(config_path.as_str());
        out.changes.push(format!("set {shown}.registry.config_path = {config_path:?}"));
    }
    out.config_path = config_path.clone();
    Some(config_path)
}

fn remove_hosts(registry: &mut Table, key: &str, hosts: &[String], shown: &str, out: &mut FixOutcome) -> bool {
    let Some(t) = registry.get_mut(key).and_then(Item::as_table_mut) else { return false };
    let mut any = false;
    for h in hosts {
        if t.remove(h).is_some() {
            out.changes.push(format!("removed {shown}.registry.{key}.{h:?}"));
            any = true;
        }
    }
    if t.is_empty() {
        registry.remove(key);
    }
    any
}

fn array_strings(a: &Array) -> Vec<String> {
    a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::config_findings;
    use crate::model::Effective;

    const FIXTURE: &str = include_str!("../../../shared/fixtures/containerd/config-default-v2.2.7.toml");

    fn want() -> BindirWant {
        BindirWant {
            bin_dir: "/opt/containerd/image-verifier/bin".into(),
            min_max_verifiers: 1,
            per_verifier_timeout: "10s".into(),
        }
    }

    fn effective(text: &str) -> Effective {
        let t: toml::Table = text.parse().unwrap();
        let v = t.get("version").and_then(|v| v.as_integer()).unwrap_or(1);
        Effective::from_merged(&crate::load::migrate_to_v3(&t, v))
    }

    #[test]
    fn the_default_config_needs_no_change() {
        assert!(ensure_bindir(FIXTURE, &want()).unwrap().is_none());
    }

    #[test]
    fn a_config_without_the_plugin_gains_it_and_keeps_everything_else() {
        let text = "# my node\nversion = 3\ndisabled_plugins = ['io.containerd.image-verifier.v1.bindir', 'x'] # keep x\n\n[plugins.'io.containerd.cri.v1.images']\n  # pause\n  snapshotter = 'overlayfs'\n";
        let (new, changes) = ensure_bindir(text, &want()).unwrap().unwrap();
        assert!(new.starts_with("# my node\nversion = 3\n"), "{new}");
        assert!(new.contains("# keep x") && new.contains("  # pause\n  snapshotter = 'overlayfs'"), "{new}");
        assert_eq!(changes.len(), 4, "{changes:?}");
        let e = effective(&new);
        assert!(!e.bindir_disabled());
        assert_eq!(e.disabled_plugins, vec!["x".to_string()]);
        assert_eq!(e.bindir.max_verifiers, 10);
        // Idempotent: a second run changes nothing.
        assert!(ensure_bindir(&new, &want()).unwrap().is_none());
    }

    #[test]
    fn version_2_files_are_edited_in_their_own_layout() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n  max_concurrent_downloads = 6\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n    endpoint = [\"https://mirror.example.com\"]\n";
        let (with_bindir, _) = ensure_bindir(text, &want()).unwrap().unwrap();
        let active: Vec<Trigger> = config_findings(&effective(&with_bindir))
            .iter()
            .filter_map(|f| Trigger::ALL.into_iter().find(|t| t.check() == f.check))
            .collect();
        assert_eq!(active, vec![Trigger::MaxConcurrentDownloads, Trigger::RegistryMirrors]);
        let fix = fix_triggers(&with_bindir, 2, &active, &|_, _| false).unwrap();
        assert!(fix.refused.is_empty(), "{:?}", fix.refused);
        let fixed = fix.text.unwrap();
        assert!(config_findings(&effective(&fixed)).is_empty(), "{fixed}");
        assert!(fixed.contains("sandbox_image = \"pause:3.9\""));
        assert!(fix.hosts["docker.io"].contains("https://mirror.example.com"));
        let t: toml::Table = fixed.parse().unwrap();
        assert_eq!(t["plugins"][TRANSFER_PLUGIN]["max_concurrent_downloads"].as_integer(), Some(6));
        assert_eq!(t["plugins"][TRANSFER_PLUGIN]["config_path"].as_str(), Some(DEFAULT_CONFIG_PATH));
    }

    #[test]
    fn every_v3_trigger_is_fixed_or_refused_with_a_reason() {
        let text = format!(
            "{FIXTURE}\n[plugins.'io.containerd.cri.v1.images'.registry.auths.'r.io']\n  username = 'u'\n[plugins.'io.containerd.cri.v1.images'.registry.configs.'reg.internal'.tls]\n  insecure_skip_verify = true\n"
        )
        .replace("discard_unpacked_layers = false", "discard_unpacked_layers = true")
        .replace("use_local_image_pull = false", "use_local_image_pull = true")
        .replace("image_pull_with_sync_fs = false", "image_pull_with_sync_fs = true")
        .replace("disable_snapshot_annotations = true", "disable_snapshot_annotations = false");
        let e = effective(&text);
        let active: Vec<Trigger> = Trigger::ALL.into_iter().filter(|t| t.active(&e).is_some()).collect();
        assert_eq!(active.len(), 6, "{active:?}");
        let fix = fix_triggers(&text, 3, &active, &|_, _| false).unwrap();
        let fixed = fix.text.unwrap();
        let left: Vec<&str> = config_findings(&effective(&fixed)).iter().map(|f| f.check).collect();
        assert_eq!(left, vec!["registry-auths"], "{fixed}");
        assert_eq!(fix.refused.len(), 1);
        assert!(fix.refused[0].1.contains("credentials"));
        assert!(fix.hosts["reg.internal"].contains("skip_verify = true"));
        let t: toml::Table = fixed.parse().unwrap();
        assert_eq!(t["plugins"][DIFF_SERVICE_PLUGIN]["sync_fs"].as_bool(), Some(true));
        // Everything unrelated is byte-identical: the diff only touches fixed keys.
        for line in FIXTURE.lines().filter(|l| {
            !l.contains("_unpacked_")
                && !l.contains("use_local")
                && !l.contains("sync_fs")
                && !l.contains("snapshot_annotations")
                && !l.contains("config_path")
        }) {
            assert!(fixed.contains(line), "lost line {line:?}");
        }
    }

    #[test]
    fn existing_hosts_files_and_hostile_hosts_are_not_overwritten() {
        let text = "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']\n  endpoint = ['https://m']\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'../../etc']\n  endpoint = ['https://m']\n";
        let fix = fix_triggers(text, 3, &[Trigger::RegistryMirrors], &|_, h| h == "docker.io").unwrap();
        assert_eq!(fix.refused.len(), 2, "{:?}", fix.refused);
        assert!(fix.hosts.is_empty());
        assert!(fix.text.is_none(), "nothing moved, nothing changed");
    }
}
