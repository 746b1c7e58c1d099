//! The set of files one config generation holds, and the rules for their names.
//!
//! Everything that becomes a path under a generation directory passes
//! through here: a ConfigMap key must be one safe file name, a
//! `pullgate.io/path` annotation a relative path of safe names, and the
//! whole set stays within the same limits [`crate::config::read_tree`]
//! applies when the engine reads it back. A path is never claimed twice and
//! never used both as a file and as a directory.

use crate::config::{self, MAX_DIR_BYTES, MAX_DIR_FILES, MAX_FILE_BYTES};
use std::collections::BTreeMap;

/// Longest file name (one path component), as Kubernetes limits ConfigMap keys.
pub const MAX_NAME_LEN: usize = 253;
/// Most components in a file's relative path (directories plus the file name),
/// within the nesting `config::read_tree` accepts.
pub const MAX_PATH_DEPTH: usize = 8;

/// Why a name or path cannot be used inside a generation directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name or a path component is empty.
    #[error("is empty (a path may not have empty components or a trailing /)")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("is {0} bytes long, more than {MAX_NAME_LEN}")]
    TooLong(usize),
    /// The name is `.` or `..`, or starts with a dot.
    #[error("{0:?} starts with a dot: `.`, `..` and hidden names are not allowed")]
    Dot(String),
    /// The name holds a character other than letters, digits, `-`, `_`, `.`
    /// (this rules out `/`, NUL and control characters).
    #[error("{0:?} holds a character other than letters, digits, '-', '_' or '.'")]
    BadChar(String),
    /// An absolute path where a relative one is needed.
    #[error("{0:?} is absolute; give a path relative to the config root")]
    Absolute(String),
    /// The path has more components than [`MAX_PATH_DEPTH`].
    #[error("{0:?} is nested more than {MAX_PATH_DEPTH} levels deep")]
    TooDeep(String),
}

/// Why a file cannot be added to a [`FileSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileSetError {
    /// The relative path is not acceptable.
    #[error("path {path:?}: {source}")]
    Name {
        /// The offending path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// The path is already taken, by a file of the same path or by a file
    /// or directory it would have to replace.
    #[error("{path:?} clashes with {existing:?}, which is already in the config")]
    Conflict {
        /// The path being added.
        path: String,
        /// The path already present that it clashes with.
        existing: String,
    },
    /// One file or the whole set is larger than the limits.
    #[error("{path:?}: {why}")]
    TooLarge {
        /// The path being added.
        path: String,
        /// Which limit it exceeds.
        why: String,
    },
}

/// Checks one file name: a ConfigMap key or one component of a path.
/// Allowed: 1–253 bytes of ASCII letters, digits, `-`, `_`, `.`, not starting
/// with a dot (so never `.` or `..`, and never hidden from `read_tree`).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(NameError::BadChar(name.to_string()));
    }
    if name.starts_with('.') {
        return Err(NameError::Dot(name.to_string()));
    }
    Ok(())
}

/// Checks a relative directory path such as `truststore/x509/ca/acme`: every
/// component passes [`check_name`], no leading `/`, no empty components. The
/// empty string is the config root.
pub fn check_dir(path: &str) -> Result<(), NameError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.starts_with('/') {
        return Err(NameError::Absolute(path.to_string()));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() >= MAX_PATH_DEPTH {
        return Err(NameError::TooDeep(path.to_string()));
    }
    parts.into_iter().try_for_each(check_name)
}

/// Joins a directory (checked with [`check_dir`]) and a file name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// Files of one generation: relative path → contents, in path order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    files: BTreeMap<String, Vec<u8>>,
    total: u64,
}

impl std::fmt::Debug for FileSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and sizes only: contents may be large.
        f.debug_map().entries(self.files.iter().map(|(k, v)| (k, v.len()))).finish()
    }
}

impl FileSet {
    /// An empty set.
    pub fn new() -> FileSet {
        FileSet::default()
    }

    /// Adds a file at `path` (components separated by `/`). Refuses bad
    /// names, a path already present, a file where a directory is needed
    /// (or the other way round), and anything past the size limits.
    pub fn insert(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), FileSetError> {
        let name_err = |source| FileSetError::Name { path: path.to_string(), source };
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if path.starts_with('/') {
            return Err(name_err(NameError::Absolute(path.to_string())));
        }
        check_dir(dir).map_err(name_err)?;
        check_name(name).map_err(name_err)?;
        if path.split('/').count() > MAX_PATH_DEPTH {
            return Err(name_err(NameError::TooDeep(path.to_string())));
        }
        let conflict =
            |existing: &str| FileSetError::Conflict { path: path.to_string(), existing: existing.to_string() };
        if self.files.contains_key(path) {
            return Err(conflict(path));
        }
        // A file at a parent of `path`: `a` exists while adding `a/b`.
        let mut prefix = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            prefix = join(&prefix, part);
            if self.files.contains_key(&prefix) {
                return Err(conflict(&prefix));
            }
        }
        // A file below `path`: `a/b` exists while adding `a`.
        let below = format!("{path}/");
        if let Some((existing, _)) = self.files.range(below.clone()..).next().filter(|(k, _)| k.starts_with(&below)) {
            return Err(conflict(existing));
        }
        let len = bytes.len() as u64;
        if len > MAX_FILE_BYTES {
            return Err(FileSetError::TooLarge {
                path: path.to_string(),
                why: format!("{len} bytes, more than {MAX_FILE_BYTES} per file"),
            });
        }
        if self.total + len > MAX_DIR_BYTES || self.files.len() >= MAX_DIR_FILES {
            return Err(FileSetError::TooLarge {
                path: path.to_string(),
                why: format!("the config would exceed {MAX_DIR_FILES} files or {MAX_DIR_BYTES} bytes"),
            });
        }
        self.total += len;
        self.files.insert(path.to_string(), bytes);
        Ok(())
    }

    /// The contents of the file at `path`.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the set holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Files in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The generation id of this set: the same id [`config::load_dir`]
    /// computes when it reads the set back from disk.
    pub fn generation_id(&self) -> String {
        let files: Vec<(String, Vec<u8>)> = self.files.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        config::generation_id(&files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["pullgate.toml", "ca.pem", "a-b_c.d", "x", "policy..rego"] {
            check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert!(matches!(check_name(".."), Err(NameError::Dot(_))));
        assert!(matches!(check_name("."), Err(NameError::Dot(_))));
        assert!(matches!(check_name(".hidden"), Err(NameError::Dot(_))));
        assert!(matches!(check_name("..data"), Err(NameError::Dot(_))));
        assert!(matches!(check_name("a/b"), Err(NameError::BadChar(_))));
        assert!(matches!(check_name("../x"), Err(NameError::BadChar(_))));
        assert!(matches!(check_name("a\0b"), Err(NameError::BadChar(_))));
        assert!(matches!(check_name("tab\there"), Err(NameError::BadChar(_))));
        assert!(matches!(check_name("é"), Err(NameError::BadChar(_))));
        assert!(matches!(check_name(&"a".repeat(254)), Err(NameError::TooLong(254))));
        check_name(&"a".repeat(253)).unwrap();
    }

    #[test]
    fn dirs() {
        for ok in ["", "truststore", "truststore/x509/ca/acme", "policy/rego"] {
            check_dir(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert!(matches!(check_dir("/etc"), Err(NameError::Absolute(_))));
        assert!(matches!(check_dir("a/../../etc"), Err(NameError::Dot(_))));
        assert!(matches!(check_dir(".."), Err(NameError::Dot(_))));
        assert!(matches!(check_dir("./a"), Err(NameError::Dot(_))));
        assert_eq!(check_dir("a//b"), Err(NameError::Empty));
        assert_eq!(check_dir("a/"), Err(NameError::Empty));
        assert!(matches!(check_dir("a/b/c/d/e/f/g/h"), Err(NameError::TooDeep(_))));
        check_dir("a/b/c/d/e/f/g").unwrap();
    }

    #[test]
    fn file_set_conflicts_and_limits() {
        let mut s = FileSet::new();
        s.insert("pullgate.toml", b"x".to_vec()).unwrap();
        s.insert("truststore/x509/ca/acme/root.pem", b"y".to_vec()).unwrap();
        assert_eq!(
            s.insert("pullgate.toml", b"z".to_vec()),
            Err(FileSetError::Conflict { path: "pullgate.toml".into(), existing: "pullgate.toml".into() })
        );
        // A file where a directory already is, and a directory where a file is.
        assert!(matches!(
            s.insert("truststore/x509", b"".to_vec()),
            Err(FileSetError::Conflict { existing, .. }) if existing == "truststore/x509/ca/acme/root.pem"
        ));
        assert!(matches!(
            s.insert("pullgate.toml/inner", b"".to_vec()),
            Err(FileSetError::Conflict { existing, .. }) if existing == "pullgate.toml"
        ));
        // A sibling sharing a prefix is no conflict.
        s.insert("truststore/x509-extra", b"".to_vec()).unwrap();
        assert!(matches!(s.insert("../escape", vec![]), Err(FileSetError::Name { .. })));
        assert!(matches!(s.insert("/abs", vec![]), Err(FileSetError::Name { .. })));
        assert!(matches!(s.insert("a/./b", vec![]), Err(FileSetError::Name { .. })));
        assert!(matches!(s.insert("a/b/c/d/e/f/g/h/i", vec![]), Err(FileSetError::Name { .. })));
        let big = vec![0u8; MAX_FILE_BYTES as usize + 1];
        assert!(matches!(s.insert("big", big), Err(FileSetError::TooLarge { .. })));
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("pullgate.toml"), Some(&b"x"[..]));
        let paths: Vec<&str> = s.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["pullgate.toml", "truststore/x509-extra", "truststore/x509/ca/acme/root.pem"]);
    }

    #[test]
    fn total_size_is_capped() {
        let mut s = FileSet::new();
        let chunk = vec![7u8; MAX_FILE_BYTES as usize];
        let fit = (MAX_DIR_BYTES / MAX_FILE_BYTES) as usize;
        for i in 0..fit {
            s.insert(&format!("f{i}"), chunk.clone()).unwrap();
        }
        assert!(matches!(s.insert("one-more", vec![1]), Err(FileSetError::TooLarge { .. })));
    }

    #[test]
    fn generation_id_matches_reading_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSet::new();
        s.insert("pullgate.toml", b"mode = \"audit\"".to_vec()).unwrap();
        s.insert("trust/ca/root.pem", b"pem".to_vec()).unwrap();
        s.insert("trust-policy.json", b"{}".to_vec()).unwrap();
        for (p, b) in s.iter() {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, b).unwrap();
        }
        assert_eq!(config::load_dir(dir.path()).unwrap().generation, s.generation_id());
    }
}
