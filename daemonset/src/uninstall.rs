//! `pullgate-install uninstall`: containerd's files back byte for byte, the
//! installer's own files removed, nothing else touched.

use crate::Report;
use crate::files::{read_optional, remove_optional, sha256_hex, write_atomic};
use crate::install::InstallError;
use crate::restart::{run_command, wait_answering};
use crate::state::{State, state_dir_for};
use pullgate_containerd::HostRoot;
use pullgate_containerd::model::Effective;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `uninstall` needs.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    /// The host's root as seen from here.
    pub host_root: HostRoot,
    /// containerd's main config (host path), for its socket.
    pub containerd_config: PathBuf,
    /// verifier.json (host path); the install state lives beside it.
    pub verifier_config: PathBuf,
    /// Restore containerd's files even if they changed since the install (the later changes are lost).
    pub force: bool,
    /// The restart command (argv).
    pub restart_command: Vec<String>,
    /// containerd's socket (host path); default from its config.
    pub containerd_socket: Option<PathBuf>,
    /// How long to wait for containerd after a restart.
    pub wait_timeout: Duration,
}

/// Runs the uninstall.
pub async fn uninstall(opts: &UninstallOptions) -> Result<Report, InstallError> {
    let root = &opts.host_root;
    let state_dir_host = state_dir_for(&opts.verifier_config);
    let state_dir = root.resolve(&state_dir_host);
    let lock = state_dir.exists().then(|| crate::files::lock(&state_dir)).transpose()?;
    let state = State::load(&state_dir.join("state.json"))?;
    let mut report = Report::default();
    if state.is_empty() {
        report
            .warnings
            .push(format!("nothing to undo: no install recorded in {}/state.json", state_dir_host.display()));
        return Ok(report);
    }
    // Refuse before touching anything if a config changed since the install.
    let local_of = |p: &std::path::Path| root.resolve(&root.follow_links(p).unwrap_or_else(|_| p.to_path_buf()));
    for c in &state.configs {
        let now = read_optional(&local_of(&c.path))?;
        let sha = now.as_deref().map(sha256_hex);
        if sha.as_deref() != Some(c.installed_sha256.as_str()) && sha != c.original_sha256 && !opts.force {
            return Err(InstallError::Invalid(format!(
                "{} changed since pullgate-install wrote it; restoring the original would lose those changes. Restore {} by hand, or rerun with --force",
                c.path.display(),
                c.backup
                    .as_ref()
                    .map(|b| b.display().to_string())
                    .unwrap_or_else(|| "nothing (it did not exist)".into())
            )));
        }
    }
    let mut config_changed = false;
    for c in &state.configs {
        let local = local_of(&c.path);
        let now = read_optional(&local)?;
        if now.as_deref().map(sha256_hex) == c.original_sha256 {
            continue;
        }
        match &c.backup {
            Some(b) if c.existed => {
                let bytes = std::fs::read(root.resolve(b)).map_err(|e| {
                    InstallError::Invalid(format!(
                        "the backup {} of {} is unreadable ({e}); restore it by hand",
                        b.display(),
                        c.path.display()
                    ))
                })?;
                if Some(sha256_hex(&bytes)) != c.original_sha256 {
                    return Err(InstallError::Invalid(format!(
                        "the backup {} does not match the recorded hash of {}; restore it by hand",
                        b.display(),
                        c.path.display()
                    )));
                }
                write_atomic(&local, &bytes, None, None)?;
                report.changes.push(format!(
                    "restored {} ({} bytes, as before the install)",
                    c.path.display(),
                    bytes.len()
                ));
            }
            _ => {
                remove_optional(&local)?;
                report.changes.push(format!("removed {} (it did not exist before the install)", c.path.display()));
            }
        }
        config_changed = true;
    }
    let owned = state.verifier.iter().chain(state.verifier_config.iter()).chain(state.hosts_files.iter());
    for f in owned {
        let local = root.resolve(&f.path);
        match read_optional(&local)? {
            Some(b) if sha256_hex(&b) == f.sha256 || opts.force => {
                remove_optional(&local)?;
                report.changes.push(format!("removed {}", f.path.display()));
            }
            Some(_) => {
                report.warnings.push(format!("left {} in place: it changed since the install", f.path.display()))
            }
            None => {}
        }
    }
    if let (Some(b), Some(vc)) = (&state.verifier_config_backup, &state.verifier_config)
        && let Some(bytes) = read_optional(&root.resolve(b))?
        && read_optional(&root.resolve(&vc.path))?.is_none()
    {
        write_atomic(&root.resolve(&vc.path), &bytes, Some(0o644), None)?;
        report.changes.push(format!("restored {} as it was before the install", vc.path.display()));
    }
    drop(lock);
    std::fs::remove_dir_all(&state_dir).map_err(|source| crate::files::FileError {
        action: "removing",
        path: state_dir.clone(),
        source,
    })?;
    report.changes.push(format!("removed {}", state_dir_host.display()));
    if config_changed {
        let loaded = pullgate_containerd::load::load(root, &opts.containerd_config)?;
        let socket = opts.containerd_socket.clone().unwrap_or_else(|| Effective::from_merged(&loaded.merged).socket);
        let argv = opts.restart_command.clone();
        let restarted = tokio::task::spawn_blocking(move || run_command(&argv))
            .await
            .map_err(|e| InstallError::Invalid(e.to_string()))?;
        let restarted = match restarted {
            Ok(()) => wait_answering(&root.resolve(&socket), opts.wait_timeout).await.map(|_| ()),
            Err(e) => Err(e),
        };
        restarted.map_err(|source| InstallError::Restart {
            source,
            restored: "the files are restored; start containerd by hand".into(),
        })?;
        report.restarted = true;
    }
    Ok(report)
}
