//! Reading containerd's config the way containerd does: the main file, then
//! every file its `imports` name (globs in the file-name part, relative paths
//! against the importing file's directory, recursively), each migrated from
//! `version = 2` to the version 3 layout, merged in order (later files win,
//! tables merge key by key, arrays append new items).

use crate::HostRoot;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Most files followed through `imports` (a loop or a glob that matches thousands is refused).
pub const MAX_IMPORTED_FILES: usize = 64;
/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// One config file as read.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as containerd names it (on the host).
    pub path: PathBuf,
    /// Where it was read from (under the host root).
    pub read_from: PathBuf,
    /// Its bytes, as text.
    pub text: String,
    /// Its `version` (1 when the file has none, 2 or 3).
    pub version: i64,
    /// The document as written (not migrated).
    pub table: Table,
}

/// The main config and its imports, and their merged version 3 view.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The main file first, then each import in the order containerd reads them.
    pub sources: Vec<Source>,
    /// Whether the main file exists (a node without one runs on containerd's defaults).
    pub main_exists: bool,
    /// Every file merged, in the version 3 layout.
    pub merged: Table,
}

/// Why containerd's config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read containerd config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_CONFIG_BYTES`].
    #[error("containerd config {path} is larger than {MAX_CONFIG_BYTES} bytes; is it really a config file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file is not TOML.
    #[error("containerd config {path} is not valid TOML (containerd would not start with it): {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A file has a version containerd 2.x does not read.
    #[error(
        "containerd config {path} has version {version}; containerd 2.x reads versions 1 to 3 (run `containerd config migrate`)"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: i64,
    },
    /// `imports` names too many files.
    #[error("containerd config imports more than {MAX_IMPORTED_FILES} files (from {path}); refusing to follow them")]
    TooManyImports {
        /// The file whose imports went over the limit.
        path: PathBuf,
    },
}

/// Reads one file; `Ok(None)` when it does not exist.
pub fn read_source(root: &HostRoot, path: &Path) -> Result<Option<Source>, LoadError> {
    use std::io::Read;
    let real = root.follow_links(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    let read_from = root.resolve(&real);
    match std::fs::metadata(&read_from) {
        Ok(m) if !m.is_file() => {
            let source = std::io::Error::other("it is not a regular file");
            return Err(LoadError::Read { path: path.to_path_buf(), source });
        }
        _ => {}
    }
    let file = match std::fs::File::open(&read_from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Read { path: path.to_path_buf(), source }),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge { path: path.to_path_buf() });
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| LoadError::Parse { path: path.to_path_buf(), message: "it is not UTF-8".into() })?;
    let table: Table = text.parse().map_err(|e: toml::de::Error| LoadError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let version = table.get("version").and_then(Value::as_integer).unwrap_or(1);
    if !(1..=3).contains(&version) {
        return Err(LoadError::Version { path: path.to_path_buf(), version });
    }
    Ok(Some(Source { path: path.to_path_buf(), read_from, text, version, table }))
}

/// Reads the main config at `path` (a host path) and everything it imports.
pub fn load(root: &HostRoot, path: &Path) -> Result<Loaded, LoadError> {
    let mut sources = Vec::new();
    let main = read_source(root, path)?;
    let main_exists = main.is_some();
    // Breadth first, as containerd reads them: the main file, its imports in order,
    // then their imports (checked against `containerd config dump`); later files win.
    let mut queue: std::collections::VecDeque<Source> = main.into_iter().collect();
    let mut seen: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(src) = queue.pop_front() {
        let mut imported = Vec::new();
        for pattern in imports_of(&src) {
            for p in expand_import(root, &src.path, &pattern) {
                if seen.contains(&p) {
                    continue;
                }
                seen.push(p.clone());
                if seen.len() > MAX_IMPORTED_FILES {
                    return Err(LoadError::TooManyImports { path: src.path.clone() });
                }
                if let Some(s) = read_source(root, &p)? {
                    imported.push(s);
                }
            }
        }
        sources.push(src);
        queue.extend(imported);
    }
    let mut merged = Table::new();
    for s in &sources {
        merge_into(&mut merged, migrate_to_v3(&s.table, s.version));
    }
    Ok(Loaded { sources, main_exists, merged })
}

fn imports_of(src: &Source) -> Vec<String> {
    src.table
        .get("imports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Expands one `imports` entry to host paths, sorted (like Go's `filepath.Glob`).
fn expand_import(root: &HostRoot, importer: &Path, pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let p = if p.is_absolute() { p.to_path_buf() } else { importer.parent().unwrap_or(Path::new("/")).join(p) };
    // Lexically normalised, so `conf.d/../config.toml` is recognised as seen.
    let p = HostRoot::new("/").resolve(&p);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if !name.contains(['*', '?', '[']) {
        return vec![p.clone()];
    }
    let Ok(entries) = std::fs::read_dir(root.resolve(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| glob_match(name, n))
        .map(|n| dir.join(n))
        .collect();
    out.sort();
    out
}

/// Shell-style match of one path component: `*`, `?` and `[abc]` / `[a-z]` / `[!a]`
/// classes. Iterative with one backtrack point, so no pattern can make it exponential.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // One pattern token at p[i]: its length, and whether it matches c (None for `*`).
    fn token(p: &[char], i: usize, c: char) -> (usize, Option<bool>) {
        match p[i] {
            '*' => (1, None),
            '?' => (1, Some(true)),
            '[' => {
                let Some(close) = p[i + 1..].iter().position(|&x| x == ']').map(|k| i + 1 + k) else {
                    return (1, Some(c == '['));
                };
                let mut class = &p[i + 1..close];
                let negate = matches!(class.first(), Some('!') | Some('^'));
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut k = 0;
                while k < class.len() {
                    if k + 2 < class.len() && class[k + 1] == '-' {
                        hit |= class[k] <= c && c <= class[k + 2];
                        k += 3;
                    } else {
                        hit |= class[k] == c;
                        k += 1;
                    }
                }
                (close + 1 - i, Some(hit != negate))
            }
            x => (1, Some(x == c)),
        }
    }
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            let (len, m) = token(&p, pi, n[ni]);
            match m {
                None => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                Some(true) => {
                    pi += len;
                    ni += 1;
                    continue;
                }
                Some(false) => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The keys of version 2's `io.containerd.grpc.v1.cri` plugin that containerd 2.x
/// moves to `io.containerd.cri.v1.images` (checked against `containerd config dump`
/// of v2.2.7: other image keys of a version 2 file, such as
/// `containerd.discard_unpacked_layers`, are dropped, not migrated).
const V2_IMAGE_KEYS: &[&str] = &[
    "registry",
    "max_concurrent_downloads",
    "image_pull_progress_timeout",
    "image_pull_with_sync_fs",
    "stats_collect_period",
    "image_decryption",
];

/// The version 2 plugin that held the image settings.
pub const V2_CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// The version 3 plugin that holds them.
pub const V3_IMAGES_PLUGIN: &str = "io.containerd.cri.v1.images";

/// A document in the version 3 layout (only the parts pullgate reads are moved).
pub fn migrate_to_v3(table: &Table, version: i64) -> Table {
    let mut t = table.clone();
    if version >= 3 {
        return t;
    }
    t.insert("version".into(), Value::Integer(3));
    let Some(Value::Table(plugins)) = t.get_mut("plugins") else { return t };
    // Version 1 names plugins by their short id.
    if version == 1
        && let Some(cri) = plugins.remove("cri")
    {
        plugins.insert(V2_CRI_PLUGIN.into(), cri);
    }
    let Some(Value::Table(cri)) = plugins.get(V2_CRI_PLUGIN).cloned() else { return t };
    // Into the images table the file may already have (containerd merges, it does not replace).
    let mut images = match plugins.remove(V3_IMAGES_PLUGIN) {
        Some(Value::Table(t)) => t,
        _ => Table::new(),
    };
    for key in V2_IMAGE_KEYS {
        // containerd 2.2 does not carry a version 1 file's max_concurrent_downloads over (checked).
        if version == 1 && *key == "max_concurrent_downloads" {
            continue;
        }
        if let Some(v) = cri.get(*key) {
            images.insert((*key).to_string(), v.clone());
        }
    }
    if let Some(sandbox) = cri.get("sandbox_image") {
        let mut pinned = Table::new();
        pinned.insert("sandbox".into(), sandbox.clone());
        merge_into(&mut images, Table::from_iter([("pinned_images".to_string(), Value::Table(pinned))]));
    }
    plugins.insert(V3_IMAGES_PLUGIN.into(), Value::Table(images));
    t
}

/// Merges `from` into `to`: tables key by key, arrays append items not already there,
/// anything else replaced.
pub fn merge_into(to: &mut Table, from: Table) {
    for (k, v) in from {
        match (to.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge_into(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => {
                for item in b {
                    if !a.contains(&item) {
                        a.push(item);
                    }
                }
            }
            (_, v) => {
                to.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.toml", "a.toml"));
        assert!(!glob_match("*.toml", "a.toml.bak"));
        assert!(glob_match("1?-x.toml", "10-x.toml"));
        assert!(glob_match("[0-9]*", "5a"));
        assert!(!glob_match("[!0-9]*", "5a"));
        assert!(glob_match("*a*b", "xxaxxb") && !glob_match("*a*b", "xxaxxc"));
        // No exponential blow-up on hostile patterns.
        let hostile = format!("{}b", "a*".repeat(40));
        assert!(!glob_match(&hostile, &"a".repeat(255)));
    }

    #[test]
    fn containerd_reads_imports_breadth_first() {
        // main imports [a, b]; a imports c: containerd reads main, a, b, c, so c wins.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let w = |n: &str, body: &str| std::fs::write(d.join(n), body).unwrap();
        w("main.toml", "version = 3\nimports = ['a.toml', 'b.toml']\n");
        w("a.toml", "version = 3\nimports = ['c.toml']\n");
        w("b.toml", "version = 3\n[plugins.'io.containerd.cri.v1.images']\nmax_concurrent_downloads = 3\n");
        w("c.toml", "version = 3\n[plugins.'io.containerd.cri.v1.images']\nmax_concurrent_downloads = 5\n");
        let l = load(&HostRoot::new("/"), &d.join("main.toml")).unwrap();
        assert_eq!(l.merged["plugins"][V3_IMAGES_PLUGIN]["max_concurrent_downloads"].as_integer(), Some(5));
    }

    #[test]
    fn a_version_2_file_keeps_its_own_v3_images_table() {
        let t: Table = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = 'x:1'\n[plugins.\"io.containerd.cri.v1.images\"]\nuse_local_image_pull = true\n".parse().unwrap();
        let m = migrate_to_v3(&t, 2);
        let images = &m["plugins"][V3_IMAGES_PLUGIN];
        assert_eq!(images["use_local_image_pull"].as_bool(), Some(true));
        assert_eq!(images["pinned_images"]["sandbox"].as_str(), Some("x:1"));
    }

    #[test]
    fn imports_are_followed_merged_and_loops_stop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("config.toml"),
            "version = 3\nimports = ['conf.d/*.toml']\n[plugins.'io.containerd.image-verifier.v1.bindir']\n  bin_dir = '/a'\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/10.toml"),
            "version = 2\nimports = ['../config.toml']\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  max_concurrent_downloads = 5\n  sandbox_image = 'p:1'\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    discard_unpacked_layers = true\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/20.toml"),
            "version = 3\n[plugins.'io.containerd.image-verifier.v1.bindir']\n  max_verifiers = 4\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/ignored.bak"), "not toml [").unwrap();
        let root = HostRoot::new("/");
        let l = load(&root, &d.join("config.toml")).unwrap();
        assert_eq!(l.sources.len(), 3);
        let bindir = l.merged["plugins"]["io.containerd.image-verifier.v1.bindir"].as_table().unwrap();
        assert_eq!(bindir["bin_dir"].as_str(), Some("/a"));
        assert_eq!(bindir["max_verifiers"].as_integer(), Some(4));
        let images = l.merged["plugins"][V3_IMAGES_PLUGIN].as_table().unwrap();
        assert_eq!(images["max_concurrent_downloads"].as_integer(), Some(5));
        assert_eq!(images["pinned_images"]["sandbox"].as_str(), Some("p:1"));
        assert!(images.get("discard_unpacked_layers").is_none(), "v2 containerd.* keys are not migrated");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "version = 3\n[plugins\n").unwrap();
        let e = load(&HostRoot::new("/"), &p).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("not valid TOML"), "{e}");
        std::fs::write(&p, "version = 4\n").unwrap();
        let e = load(&HostRoot::new("/"), &p).unwrap_err().to_string();
        assert!(e.contains("version 4"), "{e}");
        let missing = load(&HostRoot::new("/"), &dir.path().join("nope.toml")).unwrap();
        assert!(!missing.main_exists && missing.sources.is_empty());
    }
}
