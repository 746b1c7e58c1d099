//! Reading a config directory: safe relative paths, the files the config
//! refers to, the bounded directory walk, and the generation id.

use super::trust::{SetRefs, SigstoreRefs, resolve_notation, resolve_sets, resolve_sigstore};
use super::{CONFIG_FILE, Config, ConfigError, Issue, MAX_DIR_BYTES, MAX_DIR_FILES, MAX_FILE_BYTES};
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// Files `pullgate.toml` refers to, resolved against the config directory by [`resolve_files`].
#[derive(Debug, Default)]
pub struct FileRefs {
    /// `registries.<host>.ca` paths by host.
    pub(super) ca: Vec<(String, String)>,
    /// `policy` files (Rego), compiled by [`super::policy::compile`].
    pub(super) policy: super::policy::PolicyRefs,
    /// `notation.trustPolicy` and `notation.trustStore`.
    pub(super) notation: Option<(String, String)>,
    /// `[sigstore]` file references and the policy parts that need no files.
    pub(super) sigstore: Option<SigstoreRefs>,
    /// `[trust.NAME]` file references by set name.
    pub(super) trust: std::collections::BTreeMap<String, SetRefs>,
}

/// A path inside the config directory: relative, no `..`, no empty or dot components.
pub(super) fn safe_relative(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c.starts_with('.')) {
        return Err(format!(
            "{p:?} must be a relative path inside the config directory, with no component starting with ."
        ));
    }
    Ok(())
}

/// Reads the files the config refers to: CA bundles from the in-memory file
/// set, Notation trust material from the directory.
pub(super) fn resolve_files(
    config: &mut Config,
    refs: FileRefs,
    dir: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<(), Vec<Issue>> {
    let mut issues = Vec::new();
    let file = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone());
    for (host, ca) in refs.ca {
        match file(&ca) {
            Some(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                if let Some(r) = config.registries.get_mut(&host) {
                    r.ca_pem = Some(pem);
                }
            }
            Some(_) => issues.push(Issue {
                file: ca.clone(),
                field: String::new(),
                reason: format!("not a PEM certificate bundle (registries.\"{host}\".ca)"),
            }),
            None => issues.push(Issue {
                file: CONFIG_FILE.into(),
                field: format!("registries.\"{host}\".ca"),
                reason: format!("{ca} does not exist in the config directory"),
            }),
        }
    }
    if let Some(n) = refs.notation {
        resolve_notation(config, n, dir, &file, &mut issues);
    }
    if let Some(sg) = refs.sigstore {
        resolve_sigstore(config, sg, &file, &mut issues);
    }
    resolve_sets(config, refs.trust, dir, &file, &mut issues);
    if issues.is_empty() { Ok(()) } else { Err(issues) }
}

/// `line L, column C` for a byte offset, for parse errors.
pub(super) fn location(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// Reads every regular file under `dir` (following symlinks, skipping names
/// starting with `..`, where ConfigMap volumes keep their `..data`
/// machinery), sorted by relative path, within the size limits.
pub fn read_tree(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, rel, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // `..data` and `..<timestamp>` are a ConfigMap volume's own
            // machinery (the keys are symlinks into them). Other dot files
            // count: a trust store reads them, so the generation must too.
            if name.starts_with("..") {
                continue;
            }
            let full = entry.path();
            let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let meta = std::fs::metadata(&full).map_err(|source| ConfigError::Read { path: full.clone(), source })?;
            if meta.is_dir() {
                if depth >= 8 {
                    return Err(ConfigError::TooLarge {
                        dir: dir.into(),
                        why: format!("{child_rel} is nested more than 8 levels deep"),
                    });
                }
                stack.push((full, child_rel, depth + 1));
            } else if meta.is_file() {
                if meta.len() > MAX_FILE_BYTES {
                    return Err(ConfigError::TooLarge {
                        dir: dir.into(),
                        why: format!("{child_rel} is {} bytes, more than {MAX_FILE_BYTES}", meta.len()),
                    });
                }
                total += meta.len();
                if total > MAX_DIR_BYTES || out.len() >= MAX_DIR_FILES {
                    return Err(ConfigError::TooLarge {
                        dir: dir.into(),
                        why: format!("more than {MAX_DIR_FILES} files or {MAX_DIR_BYTES} bytes"),
                    });
                }
                let bytes = std::fs::read(&full).map_err(|source| ConfigError::Read { path: full.clone(), source })?;
                out.push((child_rel, bytes));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The generation id of a set of files: SHA-256 over each path and content,
/// length-prefixed so no two different sets hash the same input.
pub fn generation_id(files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in files {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
