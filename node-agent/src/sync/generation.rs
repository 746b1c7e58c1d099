//! Config generations on disk, written atomically.
//!
//! Layout under the state directory:
//!
//! ```text
//! <state-dir>/config/
//!     current -> generations/<id>      the engine's config dir (a symlink)
//!     generations/<id>/pullgate.toml   one directory per accepted generation
//!     generations/<id>/truststore/…
//! ```
//!
//! A generation is first written to a hidden temporary directory beside the
//! others (every file and directory fsynced), then — once the caller has
//! validated it — renamed into place, after which `current` is switched by
//! renaming a fresh symlink over it. Readers therefore see either the old or
//! the new generation, never a mix, and a crash at any point leaves
//! `current` pointing at a complete generation. Old generations are pruned
//! (the current one and one previous are kept) together with leftovers of
//! interrupted writes. This module does filesystem work only.

use super::files::FileSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory under the state directory that holds the generations.
pub const CONFIG_SUBDIR: &str = "config";
/// Directory (under [`CONFIG_SUBDIR`]) with one directory per generation.
pub const GENERATIONS_DIR: &str = "generations";
/// Symlink (under [`CONFIG_SUBDIR`]) to the generation in force.
pub const CURRENT_LINK: &str = "current";
/// Prefix of temporary entries; hidden, so never mistaken for a generation.
const TMP_PREFIX: &str = ".tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a generation could not be written or switched to.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}; check that the state directory is writable and not full")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `current` exists but is not a symlink into `generations/`.
    #[error("{0} is not a symlink to a generation; move it away so the agent can manage it")]
    NotALink(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GenerationError + use<> {
    let path = path.to_path_buf();
    move |source| GenerationError::Io { what, path, source }
}

/// The generations of one state directory.
#[derive(Debug, Clone)]
pub struct Generations {
    root: PathBuf,
}

/// A generation written to a temporary directory and not yet in force.
/// Dropping it without [`Generations::commit`] removes the directory.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    id: String,
    done: bool,
}

impl Staged {
    /// Where the files are now: hand this to validation.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The generation id the files hash to.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Generations {
    /// The generations kept under `<state_dir>/config`.
    pub fn new(state_dir: &Path) -> Generations {
        Generations { root: state_dir.join(CONFIG_SUBDIR) }
    }

    /// `<state-dir>/config`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `current` symlink: the engine's config directory in Kubernetes mode.
    pub fn current_link(&self) -> PathBuf {
        self.root.join(CURRENT_LINK)
    }

    /// The directory of generation `id`.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.root.join(GENERATIONS_DIR).join(id)
    }

    /// The id of the generation `current` points at, if there is one.
    pub fn current_id(&self) -> Result<Option<String>, GenerationError> {
        let link = self.current_link();
        match fs::symlink_metadata(&link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("inspecting", &link)(e)),
            Ok(m) if !m.file_type().is_symlink() => return Err(GenerationError::NotALink(link)),
            Ok(_) => {}
        }
        let target = fs::read_link(&link).map_err(io("reading the symlink", &link))?;
        let mut parts = target.components();
        let id = match (parts.next(), parts.next(), parts.next()) {
            (Some(g), Some(id), None) if g.as_os_str() == GENERATIONS_DIR => id.as_os_str().to_str(),
            _ => None,
        };
        id.map(|s| Some(s.to_string())).ok_or(GenerationError::NotALink(link))
    }

    fn ensure_dirs(&self) -> Result<PathBuf, GenerationError> {
        let gens = self.root.join(GENERATIONS_DIR);
        fs::DirBuilder::new().recursive(true).mode(0o750).create(&gens).map_err(io("creating", &gens))?;
        Ok(gens)
    }

    fn tmp_name(id: &str) -> String {
        format!("{TMP_PREFIX}{id}-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    /// Writes `files` into a new temporary directory, every file and
    /// directory fsynced. Nothing is in force until [`Generations::commit`].
    pub fn stage(&self, files: &FileSet) -> Result<Staged, GenerationError> {
        let gens = self.ensure_dirs()?;
        let id = files.generation_id();
        let dir = gens.join(Self::tmp_name(&id));
        fs::DirBuilder::new().mode(0o750).create(&dir).map_err(io("creating", &dir))?;
        // From here on, dropping `staged` cleans up.
        let staged = Staged { dir, id, done: false };
        let mut dirs = std::collections::BTreeSet::from([staged.dir.clone()]);
        for (rel, bytes) in files.iter() {
            let path = staged.dir.join(rel);
            if let Some(parent) = path.parent()
                && !parent.exists()
            {
                fs::DirBuilder::new().recursive(true).mode(0o750).create(parent).map_err(io("creating", parent))?;
                let mut p = parent;
                while p != staged.dir {
                    dirs.insert(p.to_path_buf());
                    p = p.parent().unwrap_or(&staged.dir);
                }
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
                .map_err(io("creating", &path))?;
            f.write_all(bytes).map_err(io("writing", &path))?;
            f.sync_all().map_err(io("syncing", &path))?;
        }
        // Deepest first, so each directory's entries are durable before its parent's.
        let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            sync_dir(d)?;
        }
        Ok(staged)
    }

    /// Puts a staged (and validated) generation in force: renames it to
    /// `generations/<id>`, switches `current` to it atomically and prunes
    /// all but it and the one it replaced. Returns the id now in force.
    pub fn commit(&self, mut staged: Staged) -> Result<String, GenerationError> {
        let gens = self.ensure_dirs()?;
        let previous = self.current_id()?;
        let id = staged.id.clone();
        let target = gens.join(&id);
        if previous.as_deref() == Some(id.as_str()) && target.is_dir() {
            // Already in force; the staged copy is dropped (removed).
            return Ok(id);
        }
        if fs::symlink_metadata(&target).is_ok() {
            // A kept older generation with the same content: replace it, it is not current.
            fs::remove_dir_all(&target).map_err(io("removing", &target))?;
        }
        fs::rename(&staged.dir, &target).map_err(io("renaming into place", &target))?;
        staged.done = true;
        sync_dir(&gens)?;

        let link = self.current_link();
        let tmp_link = self.root.join(Self::tmp_name("current"));
        let rel = Path::new(GENERATIONS_DIR).join(&id);
        std::os::unix::fs::symlink(&rel, &tmp_link).map_err(io("creating symlink", &tmp_link))?;
        if let Err(e) = fs::rename(&tmp_link, &link) {
            let _ = fs::remove_file(&tmp_link);
            return Err(io("switching", &link)(e));
        }
        sync_dir(&self.root)?;

        let mut keep = vec![id.as_str()];
        if let Some(p) = previous.as_deref() {
            keep.push(p);
        }
        if let Err(e) = self.prune(&keep) {
            tracing::warn!(error = %e, "cannot prune old config generations; they are left on disk");
        }
        Ok(id)
    }

    /// Removes every generation not in `keep` and every leftover temporary
    /// entry. Returns what was removed.
    pub fn prune(&self, keep: &[&str]) -> Result<Vec<String>, GenerationError> {
        let gens = self.root.join(GENERATIONS_DIR);
        let mut removed = Vec::new();
        let entries = match fs::read_dir(&gens) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            r => r.map_err(io("listing", &gens))?,
        };
        for entry in entries {
            let entry = entry.map_err(io("listing", &gens))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name.as_str()) {
                continue;
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(io("inspecting", &path))?;
            if kind.is_dir() {
                fs::remove_dir_all(&path).map_err(io("removing", &path))?;
            } else {
                fs::remove_file(&path).map_err(io("removing", &path))?;
            }
            removed.push(name);
        }
        // Symlinks left by an interrupted switch of `current`.
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(entry.path());
                    removed.push(name);
                }
            }
        }
        if !removed.is_empty() {
            sync_dir(&gens)?;
        }
        removed.sort();
        Ok(removed)
    }
}

fn sync_dir(dir: &Path) -> Result<(), GenerationError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn set(main: &str, extra: &[(&str, &str)]) -> FileSet {
        let mut s = FileSet::new();
        s.insert("pullgate.toml", main.as_bytes().to_vec()).unwrap();
        for (p, b) in extra {
            s.insert(p, b.as_bytes().to_vec()).unwrap();
        }
        s
    }

    fn listing(g: &Generations) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(g.root().join(GENERATIONS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stage_commit_switch_and_prune() {
        let state = tempfile::tempdir().unwrap();
        let g = Generations::new(state.path());
        assert_eq!(g.current_id().unwrap(), None);

        let a = set("mode = \"audit\"", &[("truststore/x509/ca/acme/root.pem", "PEM")]);
        let staged = g.stage(&a).unwrap();
        assert!(staged.path().file_name().unwrap().to_str().unwrap().starts_with(TMP_PREFIX));
        assert_eq!(fs::read(staged.path().join("truststore/x509/ca/acme/root.pem")).unwrap(), b"PEM");
        assert_eq!(g.current_id().unwrap(), None, "staging puts nothing in force");
        let id_a = g.commit(staged).unwrap();
        assert_eq!(id_a, a.generation_id());
        assert_eq!(g.current_id().unwrap().as_deref(), Some(id_a.as_str()));
        let loaded = config::load_dir(&g.current_link()).unwrap();
        assert_eq!(loaded.generation, id_a, "the engine reads the same id through the symlink");
        assert_eq!(fs::read_link(g.current_link()).unwrap(), Path::new("generations").join(&id_a));

        let b = set("mode = \"enforce\"", &[]);
        let id_b = g.commit(g.stage(&b).unwrap()).unwrap();
        let c = set("defaultAction = \"allow\"", &[]);
        let id_c = g.commit(g.stage(&c).unwrap()).unwrap();
        assert_eq!(g.current_id().unwrap().as_deref(), Some(id_c.as_str()));
        let mut want = vec![id_b.clone(), id_c.clone()];
        want.sort();
        assert_eq!(listing(&g), want, "current and one previous are kept");
        assert!(!g.dir_of(&id_a).exists());
        assert!(
            !fs::read_dir(g.root()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(TMP_PREFIX)),
            "no temporary symlink is left"
        );

        // Switching back to the kept previous generation works and keeps c.
        let again_b = g.commit(g.stage(&b).unwrap()).unwrap();
        assert_eq!(again_b, id_b);
        assert_eq!(config::load_dir(&g.current_link()).unwrap().generation, id_b);
        assert_eq!(listing(&g), want);

        // Committing what is already current changes nothing and leaves no temp dir.
        assert_eq!(g.commit(g.stage(&b).unwrap()).unwrap(), id_b);
        assert_eq!(listing(&g), want);
    }

    #[test]
    fn dropped_stage_is_removed_and_leftovers_pruned() {
        let state = tempfile::tempdir().unwrap();
        let g = Generations::new(state.path());
        let staged = g.stage(&set("", &[("a/b/c", "x")])).unwrap();
        let path = staged.path().to_path_buf();
        assert!(path.is_dir());
        drop(staged);
        assert!(!path.exists(), "a rejected generation leaves nothing behind");

        // Leftovers of a crash: a temporary dir and a temporary symlink.
        fs::create_dir_all(g.root().join(GENERATIONS_DIR).join(".tmp-dead-1-0/x")).unwrap();
        std::os::unix::fs::symlink("generations/x", g.root().join(".tmp-current-1-0")).unwrap();
        let id = g.commit(g.stage(&set("", &[])).unwrap()).unwrap();
        assert_eq!(listing(&g), vec![id]);
        assert!(!g.root().join(".tmp-current-1-0").exists());
    }

    #[test]
    fn current_must_be_our_symlink() {
        let state = tempfile::tempdir().unwrap();
        let g = Generations::new(state.path());
        fs::create_dir_all(g.current_link()).unwrap();
        assert!(matches!(g.current_id(), Err(GenerationError::NotALink(_))));
        assert!(g.commit(g.stage(&set("", &[])).unwrap()).is_err(), "a real directory is never replaced");
        fs::remove_dir(g.current_link()).unwrap();
        std::os::unix::fs::symlink("/etc", g.current_link()).unwrap();
        assert!(matches!(g.current_id(), Err(GenerationError::NotALink(_))));
    }

    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let g = Generations::new(state.path());
        let id = g.commit(g.stage(&set("", &[("d/f", "x")])).unwrap()).unwrap();
        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(g.dir_of(&id).join("d/f")), 0o640);
        assert_eq!(mode(g.dir_of(&id).join("d")), 0o750);
        assert_eq!(mode(g.dir_of(&id)), 0o750);
    }
}
