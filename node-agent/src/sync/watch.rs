//! Standalone mode: reload when the config directory changes.
//!
//! The whole directory is watched (recursively), not single files, so an
//! editor's write-and-rename, a new trust-store file, and a ConfigMap volume's
//! `..data` symlink swap are all seen. Events are debounced, then the engine
//! re-reads the directory; an invalid config is not applied (the engine keeps
//! the last good one, logs and counts the failure). SIGHUP keeps working
//! beside this, and is the fallback when the directory cannot be watched.

use crate::engine::Engine;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long changes are gathered before the directory is re-read.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Whether a filesystem event can change what the directory holds. Opening
/// and reading files (the reload itself does that) cannot.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Re-reads `dir` into `engine` whenever it changes, until `shutdown` turns
/// true (or its sender is dropped).
pub async fn run(dir: PathBuf, engine: Arc<Engine>, debounce: Duration, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if changes_content(&ev.kind) => {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "config directory watch reported an error"),
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::Recursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(config = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP");
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            return;
        }
    };
    tracing::info!(config = %dir.display(), "watching the config directory for changes");
    let mut due: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let deadline = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            got = rx.recv() => match got {
                Some(()) => { due.get_or_insert_with(|| Instant::now() + debounce); }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline), if due.is_some() => {
                due = None;
                let e = engine.clone();
                match tokio::task::spawn_blocking(move || e.reload()).await {
                    Ok(Ok(Some(g))) => tracing::info!(generation = %g, config = %dir.display(), "config changed on disk; reloaded"),
                    Ok(Ok(None)) => tracing::debug!(config = %dir.display(), "config directory touched; content unchanged"),
                    Ok(Err(err)) => tracing::error!(config = %dir.display(), "config rejected, keeping the last good one: {err}"),
                    Err(err) => tracing::error!(error = %err, "config reload panicked"),
                }
            }
        }
    }
    tracing::debug!("config directory watch stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::report::DecisionLog;

    async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f()
    }

    #[tokio::test]
    async fn reloads_on_edit_and_on_configmap_style_symlink_swap() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // ConfigMap volume layout: ..data -> ..v1, pullgate.toml -> ..data/pullgate.toml
        std::fs::create_dir(dir.path().join("..v1")).unwrap();
        std::fs::write(dir.path().join("..v1/pullgate.toml"), "mode = \"audit\"").unwrap();
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/pullgate.toml", dir.path().join("pullgate.toml")).unwrap();
        let log = DecisionLog::open(state.path(), 1 << 20).unwrap();
        let engine = Arc::new(Engine::new(dir.path().into(), config::load_dir(dir.path()), log));
        let first = engine.status().generation.unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(dir.path().into(), engine.clone(), Duration::from_millis(50), rx));
        tokio::time::sleep(Duration::from_millis(100)).await;

        // The kubelet's swap: new timestamped dir, new ..data symlink renamed over the old.
        std::fs::create_dir(dir.path().join("..v2")).unwrap();
        std::fs::write(dir.path().join("..v2/pullgate.toml"), "mode = \"enforce\"").unwrap();
        std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(wait_for(|| engine.status().mode.as_deref() == Some("enforce")).await, "{:?}", engine.status());
        let second = engine.status().generation.unwrap();
        assert_ne!(first, second);

        // An invalid edit is not applied and is counted.
        std::fs::write(dir.path().join("..v2/pullgate.toml"), "mode = \"sometimes\"").unwrap();
        assert!(wait_for(|| engine.status().config_error.is_some()).await);
        assert_eq!(engine.status().generation.as_deref(), Some(second.as_str()));
        assert!(engine.status().counters["reloadFailures"] >= 1);

        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops on shutdown").unwrap();
    }
}
