//! File writes the installer makes: atomic (temp file in the same directory, fsync,
//! rename), mode and owner kept for files that existed, and hashes for "is this
//! still what we wrote?".

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file write or read that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    /// What was being done.
    pub action: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError { action, path: path.to_path_buf(), source }
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's bytes, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err("reading", path)(e)),
    }
}

/// Writes `bytes` to `path` atomically with `mode` (or the existing file's mode and
/// owner when it exists and `mode` is `None`). `tmp_dir` holds the temp file; it
/// must be on the same filesystem as `path` (its directory when `None`).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>, tmp_dir: Option<&Path>) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(err("creating directory", dir))?;
    let existing = std::fs::metadata(path).ok();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nonce =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = tmp_dir.unwrap_or(dir).join(format!(".{name}.pullgate-tmp-{}-{nonce:x}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_compat(0o600)
            .open(&tmp)
            .map_err(err("creating", &tmp))?;
        f.write_all(bytes).map_err(err("writing", &tmp))?;
        f.sync_all().map_err(err("syncing", &tmp))?;
        let mode = mode.or(existing.as_ref().map(|m| m.mode() & 0o7777)).unwrap_or(0o644);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(err("setting the mode of", &tmp))?;
        if let Some(m) = &existing {
            let _ = nix::unistd::chown(&tmp, Some(m.uid().into()), Some(m.gid().into()));
        }
        std::fs::rename(&tmp, path).map_err(err("renaming into place", path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `OpenOptions::mode` under a name that reads well in a chain.
trait ModeCompat {
    fn mode_compat(&mut self, mode: u32) -> &mut Self;
}

impl ModeCompat for std::fs::OpenOptions {
    fn mode_compat(&mut self, mode: u32) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(mode)
    }
}

/// Holds an exclusive lock on `<dir>/lock` (created) until dropped: one installer at a time.
pub fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, FileError> {
    std::fs::create_dir_all(dir).map_err(err("creating directory", dir))?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode_compat(0o600)
        .open(&path)
        .map_err(err("opening", &path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| FileError {
        action: "locking",
        path,
        source: e.into(),
    })
}

/// Removes a file; a missing one is fine.
pub fn remove_optional(path: &Path) -> Result<bool, FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err("removing", path)(e)),
    }
}

/// Whether two paths are on the same filesystem (a rename between them works).
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_keep_the_mode_of_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new", None, None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        write_atomic(&d.path().join("sub/v"), b"x", Some(0o755), None).unwrap();
        assert_eq!(std::fs::metadata(d.path().join("sub/v")).unwrap().mode() & 0o777, 0o755);
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("pullgate-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
