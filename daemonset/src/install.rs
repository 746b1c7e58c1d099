//! `pullgate-install install`.

use crate::Report;
use crate::files::{read_optional, same_filesystem, sha256_hex, write_atomic};
use crate::restart::{RestartError, run_command, wait_answering};
use crate::state::{OwnedFile, State, TouchedFile, state_dir_for};
use pullgate_containerd::checks::{Finding, Trigger, config_findings, deadline_for, trigger_key};
use pullgate_containerd::edit::{BindirWant, enable_bindir, ensure_bindir, fix_triggers};
use pullgate_containerd::load::{Loaded, Source, load, merge_into, migrate_to_v3};
use pullgate_containerd::model::{DEFAULT_PER_VERIFIER_TIMEOUT, Effective};
use pullgate_containerd::{DEFAULT_VERIFIER_NAME, HostRoot};
use pullgate_wire::FailurePolicy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `install` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's root as seen from here.
    pub host_root: HostRoot,
    /// containerd's main config (host path).
    pub containerd_config: PathBuf,
    /// The verifier binary to install (local path).
    pub verifier_binary: PathBuf,
    /// Its file name in bin_dir.
    pub verifier_name: Option<String>,
    /// verifier.json (host path).
    pub verifier_config: PathBuf,
    /// The agent socket named in verifier.json.
    pub socket: PathBuf,
    /// verifier.json's failure policy.
    pub failure_policy: FailurePolicy,
    /// The agent's own image (name@digest), put on the bootstrap allowlist.
    pub agent_image: Option<String>,
    /// More bootstrap allowlist entries.
    pub bootstrap: Vec<String>,
    /// Rewrite local-pull triggers instead of refusing.
    pub fix: bool,
    /// The restart command (argv).
    pub restart_command: Vec<String>,
    /// containerd's socket (host path); default from its config.
    pub containerd_socket: Option<PathBuf>,
    /// How long to wait for containerd after a restart.
    pub wait_timeout: Duration,
    /// Say what would change, change nothing.
    pub dry_run: bool,
}

/// Why install stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// containerd's config could not be read.
    #[error(transparent)]
    Load(#[from] pullgate_containerd::load::LoadError),
    /// An edit could not be made.
    #[error("editing {path}: {source}")]
    Edit {
        /// The file.
        path: PathBuf,
        /// The edit error.
        #[source]
        source: pullgate_containerd::edit::EditError,
    },
    /// Settings that bypass verifiers, not fixed.
    #[error("{}", refusal_text(.0, *.1))]
    Refused(Vec<Finding>, bool),
    /// After the edits the config would still not cover every pull.
    #[error("after pullgate's edits containerd's config still does not cover every pull:\n{}", findings_text(.0))]
    StillUncovered(Vec<Finding>),
    /// Something about the inputs is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The state record could not be used.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The restart failed and the backup was put back.
    #[error("{source}; containerd's previous config was restored ({restored})")]
    Restart {
        /// The restart error.
        #[source]
        source: RestartError,
        /// What happened when putting it back.
        restored: String,
    },
}

impl InstallError {
    /// The process exit code for this error: 64 for bad input, 3 for a refusal, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            InstallError::Invalid(_) | InstallError::Load(_) => 64,
            InstallError::Refused(..) | InstallError::StillUncovered(_) => 3,
            _ => 1,
        }
    }
}

fn findings_text(f: &[Finding]) -> String {
    f.iter()
        .map(|f| {
            let at = match (&f.file, &f.key) {
                (Some(file), Some(k)) => format!("{}: {k}", file.display()),
                (None, Some(k)) => k.clone(),
                _ => f.check.to_string(),
            };
            format!("  - {at}\n    {}\n    fix: {}", f.problem, f.fix)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn refusal_text(f: &[Finding], tried_fix: bool) -> String {
    if tried_fix {
        format!(
            "these settings make CRI pulls skip pullgate and cannot be rewritten automatically; nothing was changed:\n{}",
            findings_text(f)
        )
    } else {
        format!(
            "refusing to install: these settings make CRI pulls skip every image verifier; nothing was changed.\n{}\nrerun with --fix to rewrite them to their transfer-service equivalents",
            findings_text(f)
        )
    }
}

/// The file a trigger is set in (the last one in import order that sets it);
/// `per_file` holds each source's own effective settings, in order.
fn locate(sources: &[Source], per_file: &[Effective], t: Trigger) -> Option<PathBuf> {
    sources.iter().zip(per_file).rev().find(|(_, e)| t.active(e).is_some()).map(|(s, _)| s.path.clone())
}

/// The merged effective settings if `texts` replaced the files' contents.
fn effective_with(loaded: &Loaded, texts: &BTreeMap<PathBuf, String>) -> Result<Effective, InstallError> {
    let mut merged = toml::Table::new();
    let mut paths: Vec<&PathBuf> = loaded.sources.iter().map(|s| &s.path).collect();
    for p in texts.keys() {
        if !paths.contains(&p) {
            paths.insert(0, p);
        }
    }
    for p in paths {
        let (table, version) = match texts.get(p) {
            Some(t) => {
                let table: toml::Table =
                    t.parse().map_err(|e: toml::de::Error| InstallError::Invalid(format!("{}: {e}", p.display())))?;
                let v = table.get("version").and_then(toml::Value::as_integer).unwrap_or(1);
                (table, v)
            }
            None => {
                let s = loaded.sources.iter().find(|s| &s.path == p).expect("source");
                (s.table.clone(), s.version)
            }
        };
        merge_into(&mut merged, migrate_to_v3(&table, version));
    }
    Ok(Effective::from_merged(&merged))
}

/// What a file held before this run wrote it (`None`: it did not exist), for a rollback.
type Previous = Vec<(PathBuf, Option<Vec<u8>>)>;

/// Planned changes to containerd's files, before anything is written.
struct Plan {
    texts: BTreeMap<PathBuf, String>,
    hosts: BTreeMap<PathBuf, String>,
    changes: Vec<String>,
}

fn plan_config(opts: &Options, loaded: &Loaded, effective: &Effective, min_max: i64) -> Result<Plan, InstallError> {
    let mut plan = Plan { texts: BTreeMap::new(), hosts: BTreeMap::new(), changes: Vec::new() };
    // What each file sets on its own, to find and fix a trigger where it is written.
    let per_file: Vec<Effective> =
        loaded.sources.iter().map(|s| Effective::from_merged(&migrate_to_v3(&s.table, s.version))).collect();
    let mut findings = config_findings(effective);
    for f in &mut findings {
        if let Some(t) = Trigger::ALL.into_iter().find(|t| t.check() == f.check) {
            f.file = locate(&loaded.sources, &per_file, t);
        }
    }
    let triggers: Vec<Trigger> =
        findings.iter().filter_map(|f| Trigger::ALL.into_iter().find(|t| t.check() == f.check)).collect();
    if !triggers.is_empty() && !opts.fix {
        return Err(InstallError::Refused(
            findings.into_iter().filter(|f| f.check != "bindir-disabled").collect(),
            false,
        ));
    }
    let mut refused = Vec::new();
    for (src, own) in loaded.sources.iter().zip(&per_file) {
        let mine: Vec<Trigger> = triggers.iter().copied().filter(|t| t.active(own).is_some()).collect();
        if mine.is_empty() {
            continue;
        }
        let root = &opts.host_root;
        let exists = |dir: &str, host: &str| root.resolve(&Path::new(dir).join(host).join("hosts.toml")).exists();
        let out = fix_triggers(&src.text, src.version, &mine, &exists)
            .map_err(|source| InstallError::Edit { path: src.path.clone(), source })?;
        for (t, why) in out.refused {
            refused.push(Finding {
                check: t.check(),
                severity: pullgate_containerd::checks::Severity::Error,
                key: Some(trigger_key(t)),
                file: Some(src.path.clone()),
                problem: why,
                fix: t.fix().into(),
            });
        }
        for (host, text) in out.hosts {
            plan.hosts.insert(Path::new(&out.config_path).join(host).join("hosts.toml"), text);
        }
        plan.changes.extend(out.changes.into_iter().map(|c| format!("{}: {c}", src.path.display())));
        if let Some(t) = out.text {
            plan.texts.insert(src.path.clone(), t);
        }
    }
    if !refused.is_empty() {
        return Err(InstallError::Refused(refused, true));
    }
    // The bindir settings go into the main file (created when the node has none);
    // a disabled_plugins entry is removed wherever it is.
    let want = BindirWant {
        bin_dir: effective.bindir.bin_dir.display().to_string(),
        min_max_verifiers: min_max,
        per_verifier_timeout: "10s".into(),
    };
    let main_text = plan
        .texts
        .get(&opts.containerd_config)
        .cloned()
        .or_else(|| loaded.sources.iter().find(|s| s.path == opts.containerd_config).map(|s| s.text.clone()));
    let main_text = main_text.unwrap_or_else(|| "version = 3\n".to_string());
    if let Some((text, changes)) = ensure_bindir(&main_text, &want)
        .map_err(|source| InstallError::Edit { path: opts.containerd_config.clone(), source })?
    {
        plan.changes.extend(changes.into_iter().map(|c| format!("{}: {c}", opts.containerd_config.display())));
        plan.texts.insert(opts.containerd_config.clone(), text);
    }
    for src in loaded.sources.iter().filter(|s| s.path != opts.containerd_config) {
        let current = plan.texts.get(&src.path).cloned().unwrap_or_else(|| src.text.clone());
        if let Some(text) =
            enable_bindir(&current).map_err(|source| InstallError::Edit { path: src.path.clone(), source })?
        {
            plan.changes.push(format!("{}: removed the bindir plugin from disabled_plugins", src.path.display()));
            plan.texts.insert(src.path.clone(), text);
        }
    }
    let after = effective_with(loaded, &plan.texts)?;
    let left: Vec<Finding> = config_findings(&after);
    if !left.is_empty() {
        return Err(InstallError::StillUncovered(left));
    }
    if after.bindir.max_verifiers < min_max {
        return Err(InstallError::Invalid(format!(
            "an imported file sets max_verifiers = {} for the bindir plugin, which would skip pullgate; raise it there",
            after.bindir.max_verifiers
        )));
    }
    Ok(plan)
}

/// The verifier's name in bin_dir and how many entries sort before or at it.
fn verifier_slot(opts: &Options, bin_dir: &Path, state: &State) -> Result<(String, i64), InstallError> {
    let name = opts
        .verifier_name
        .clone()
        .or_else(|| state.verifier.as_ref().and_then(|v| v.path.file_name()).map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| DEFAULT_VERIFIER_NAME.to_string());
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(InstallError::Invalid(format!("--verifier-name {name:?} is not a plain file name")));
    }
    let mut others: Vec<String> = match std::fs::read_dir(opts.host_root.resolve(bin_dir)) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| *n != name && !n.contains(".pullgate-tmp-"))
            .collect(),
        Err(_) => Vec::new(),
    };
    others.sort();
    if let Some(first) = others.first()
        && first.as_bytes() < name.as_bytes()
        && opts.verifier_name.is_none()
    {
        return Err(InstallError::Invalid(format!(
            "{}/{first} sorts before {name}, so containerd would run it first; pass --verifier-name with a name that sorts before it",
            bin_dir.display()
        )));
    }
    let before = others.iter().filter(|o| o.as_bytes() < name.as_bytes()).count() as i64;
    Ok((name, before + 1))
}

/// The bootstrap allowlist: exact images only, never a pattern. The agent's image must be
/// pinned by digest; the CRI sandbox image goes on it as written when it names a tag or a
/// digest (a bare repository would allow every tag); `--bootstrap` entries must name one too.
fn bootstrap_entries(opts: &Options, effective: &Effective) -> Result<Vec<String>, InstallError> {
    use pullgate_reference::Reference;
    let exact = |what: &str, s: &str| -> Result<Reference, InstallError> {
        if s.contains('*') {
            return Err(InstallError::Invalid(format!(
                "{what} {s:?} is a pattern; the bootstrap allowlist takes exact images"
            )));
        }
        let r = Reference::parse(s).map_err(|e| InstallError::Invalid(format!("{what} {s:?}: {e}")))?;
        if r.tag().is_none() && r.digest().is_none() {
            return Err(InstallError::Invalid(format!(
                "{what} {s:?} names no tag or digest, which would allow every tag of the repository"
            )));
        }
        Ok(r)
    };
    let mut out: Vec<String> = Vec::new();
    if let Some(a) = &opts.agent_image {
        let r = exact("--agent-image", a)?;
        if r.digest().is_none() {
            return Err(InstallError::Invalid(format!(
                "--agent-image {a:?} is not pinned by digest (NAME@sha256:…): a tag on the bootstrap allowlist trusts whoever can push it"
            )));
        }
        out.push(a.clone());
    }
    if let Some(s) = &effective.images.sandbox_image
        && exact("the CRI sandbox image (pinned_images.sandbox)", s).is_ok()
    {
        out.push(s.clone());
    }
    for b in &opts.bootstrap {
        exact("--bootstrap", b)?;
        if !out.contains(b) {
            out.push(b.clone());
        }
    }
    Ok(out)
}

/// verifier.json's text for this install.
fn verifier_json(opts: &Options, effective: &Effective) -> Result<String, InstallError> {
    let timeout = effective.bindir.per_verifier_timeout.clone().unwrap_or(DEFAULT_PER_VERIFIER_TIMEOUT);
    let deadline = deadline_for(timeout).ok_or_else(|| {
        InstallError::Invalid(format!(
            "per_verifier_timeout {timeout:?} is too short to leave the verifier a deadline; raise it (e.g. \"10s\")"
        ))
    })?;
    let deadline_ms = (deadline.as_millis() as u64).min(pullgate_wire::MAX_DEADLINE_MS);
    let bootstrap = bootstrap_entries(opts, effective)?;
    let v = serde_json::json!({
        "socket": opts.socket,
        "deadlineMs": deadline_ms,
        "failurePolicy": match opts.failure_policy { FailurePolicy::Open => "open", FailurePolicy::Closed => "closed" },
        "bootstrapAllowlist": bootstrap,
    });
    let text = serde_json::to_string_pretty(&v).expect("json") + "\n";
    pullgate_wire::VerifierConfig::from_json(&opts.verifier_config, text.as_bytes())
        .map_err(|e| InstallError::Invalid(format!("the verifier config would be invalid: {e}")))?;
    Ok(text)
}

/// Runs the install.
pub async fn install(opts: &Options) -> Result<Report, InstallError> {
    let root = &opts.host_root;
    let state_dir_host = state_dir_for(&opts.verifier_config);
    let state_dir = root.resolve(&state_dir_host);
    let _lock = if opts.dry_run { None } else { Some(crate::files::lock(&state_dir)?) };
    let mut state = State::load(&state_dir.join("state.json"))?;
    let loaded = load(root, &opts.containerd_config)?;
    let effective = Effective::from_merged(&loaded.merged);
    let bin_dir = effective.bindir.bin_dir.clone();
    let (name, position) = verifier_slot(opts, &bin_dir, &state)?;
    let plan = plan_config(opts, &loaded, &effective, position)?;
    let after = effective_with(&loaded, &plan.texts)?;
    let verifier_bytes = std::fs::read(&opts.verifier_binary).map_err(|e| {
        InstallError::Invalid(format!("cannot read the verifier binary {}: {e}", opts.verifier_binary.display()))
    })?;
    let json = verifier_json(opts, &after)?;
    let mut report = Report { changes: plan.changes.clone(), ..Report::default() };
    if let Some(sb) = after.images.sandbox_image.as_deref()
        && !json.contains(&format!("\"{sb}\""))
    {
        report.warnings.push(format!("the CRI sandbox image {sb:?} names neither a tag nor a digest (or is a pattern): it is not on the bootstrap allowlist; add it with --bootstrap NAME@sha256:…"));
    } else if after.images.sandbox_image.as_deref().is_some_and(|s| !s.contains('@')) {
        report.warnings.push("the CRI sandbox (pause) image is on the bootstrap allowlist by tag: anyone who can push that tag can run it; pin it by digest with --bootstrap NAME@sha256:… and pinned_images.sandbox".into());
    }
    let target = bin_dir.join(&name);
    let target_local = root.resolve(&target);
    let current = read_optional(&target_local)?;
    let verifier_changed = current.as_deref() != Some(&verifier_bytes[..])
        || std::fs::metadata(&target_local)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777 != 0o755)
            .unwrap_or(true);
    if verifier_changed {
        report.changes.push(format!("installed {} ({} bytes, mode 0755)", target.display(), verifier_bytes.len()));
    }
    let json_local = root.resolve(&opts.verifier_config);
    let json_changed = read_optional(&json_local)?.as_deref() != Some(json.as_bytes());
    if json_changed {
        report.changes.push(format!("wrote {}", opts.verifier_config.display()));
    }
    for (p, _) in plan.hosts.iter() {
        report.changes.push(format!("wrote {}", p.display()));
    }
    if opts.dry_run {
        report.changes = report.changes.into_iter().map(|c| format!("would have {c}")).collect();
        return Ok(report);
    }
    // Write-ahead: what is about to be written is recorded first, so a run that dies
    // half-way leaves nothing uninstall does not know about.
    // A verifier.json written by hand before the first install is kept, and given back by uninstall.
    if state.verifier_config.is_none()
        && state.verifier_config_backup.is_none()
        && let Some(existing) = read_optional(&json_local)?
    {
        let b =
            state_dir_host.join("backup").join(opts.verifier_config.strip_prefix("/").unwrap_or(&opts.verifier_config));
        write_atomic(&root.resolve(&b), &existing, Some(0o600), None)?;
        state.verifier_config_backup = Some(b);
        report.warnings.push(format!(
            "{} existed before the install: kept a copy, uninstall puts it back",
            opts.verifier_config.display()
        ));
    }
    state.verifier = Some(OwnedFile { path: target.clone(), sha256: sha256_hex(&verifier_bytes) });
    state.verifier_config = Some(OwnedFile { path: opts.verifier_config.clone(), sha256: sha256_hex(json.as_bytes()) });
    for (p, text) in &plan.hosts {
        state.hosts_files.retain(|h| &h.path != p);
        state.hosts_files.push(OwnedFile { path: p.clone(), sha256: sha256_hex(text.as_bytes()) });
    }
    save_state(&state_dir, &state)?;
    // Verifier and its config first: once containerd restarts, pulls use them.
    if verifier_changed {
        let dir_local = root.resolve(&bin_dir);
        std::fs::create_dir_all(&dir_local)
            .map_err(|e| InstallError::Invalid(format!("cannot create bin_dir {}: {e}", bin_dir.display())))?;
        // A temp file inside bin_dir would be exec'd by a pull racing the write: use the parent when it can.
        let parent = dir_local.parent().map(Path::to_path_buf);
        let tmp = parent.filter(|p| same_filesystem(p, &dir_local));
        write_atomic(&target_local, &verifier_bytes, Some(0o755), tmp.as_deref())?;
    }
    if json_changed {
        write_atomic(&json_local, json.as_bytes(), Some(0o644), None)?;
    }
    let backups = backup_and_write(opts, &plan, &mut state, &state_dir)?;
    for (p, text) in &plan.hosts {
        write_atomic(&root.resolve(p), text.as_bytes(), Some(0o644), None)?;
    }
    if !plan.texts.is_empty() {
        let socket = opts.containerd_socket.clone().unwrap_or_else(|| after.socket.clone());
        match restart_and_wait(opts, &socket).await {
            Ok(version) => {
                report.restarted = true;
                state.containerd_version = Some(version);
                save_state(&state_dir, &state)?;
            }
            Err(source) => {
                let restored = rollback(opts, &backups, &plan, &socket).await;
                forget_rolled_back(&mut state, &backups, &plan);
                save_state(&state_dir, &state)?;
                return Err(InstallError::Restart { source, restored });
            }
        }
    } else if state.containerd_version.is_none() {
        let socket = opts.containerd_socket.clone().unwrap_or_else(|| after.socket.clone());
        if let Ok(v) = pullgate_containerd::socket::version(&root.resolve(&socket), Duration::from_secs(2)).await {
            state.containerd_version = Some(v.version);
            save_state(&state_dir, &state)?;
        }
    }
    Ok(report)
}

/// For each file to change: keep its original bytes (first install only) and a
/// copy of the bytes being replaced; then write the new text. Returns what to put
/// back if the restart fails: (host path, previous bytes or None if it did not exist).
fn backup_and_write(
    opts: &Options,
    plan: &Plan,
    state: &mut State,
    state_dir: &Path,
) -> Result<Previous, InstallError> {
    let root = &opts.host_root;
    let mut previous = Vec::new();
    for (path, text) in &plan.texts {
        // Through symlinks as the host sees them: the link stays, its target is written.
        let local = root.resolve(&root.follow_links(path).unwrap_or_else(|_| path.clone()));
        let before = read_optional(&local)?;
        if state.config(path).is_none() {
            let backup_path =
                state_dir_for(&opts.verifier_config).join("backup").join(path.strip_prefix("/").unwrap_or(path));
            // A backup left by a run that died before recording it holds the true original:
            // never overwrite one.
            let original = match read_optional(&root.resolve(&backup_path))? {
                Some(kept) => Some(kept),
                None => before.clone(),
            };
            let backup = original.as_ref().map(|_| backup_path.clone());
            if let (Some(b), Some(bytes)) = (&backup, &original)
                && read_optional(&root.resolve(b))?.is_none()
            {
                write_atomic(&root.resolve(b), bytes, Some(0o600), None)?;
            }
            state.configs.push(TouchedFile {
                path: path.clone(),
                existed: original.is_some(),
                backup,
                original_sha256: original.as_deref().map(sha256_hex),
                installed_sha256: before.as_deref().map(sha256_hex).unwrap_or_default(),
            });
            // Write-ahead: the record exists before the file changes.
            save_state(state_dir, state)?;
        }
        if let Some(bytes) = &before {
            let stamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let name = format!("{}.{stamp}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
            write_atomic(&state_dir.join("backup/previous").join(name), bytes, Some(0o600), None)?;
        }
        if let Some(rec) = state.configs.iter_mut().find(|c| &c.path == path) {
            rec.installed_sha256 = sha256_hex(text.as_bytes());
        }
        save_state(state_dir, state)?;
        write_atomic(&local, text.as_bytes(), None, None)?;
        previous.push((path.clone(), before));
    }
    Ok(previous)
}

/// After a rollback the state must describe the files as they are again.
fn forget_rolled_back(state: &mut State, previous: &Previous, plan: &Plan) {
    for (path, bytes) in previous {
        let sha = bytes.as_deref().map(sha256_hex);
        if let Some(i) = state.configs.iter().position(|c| &c.path == path) {
            if state.configs[i].original_sha256 == sha {
                state.configs.remove(i);
            } else if let Some(sha) = sha {
                state.configs[i].installed_sha256 = sha;
            }
        }
    }
    state.hosts_files.retain(|h| !plan.hosts.contains_key(&h.path));
}

fn save_state(state_dir: &Path, state: &State) -> Result<(), InstallError> {
    let text = serde_json::to_string_pretty(state).expect("state json") + "\n";
    write_atomic(&state_dir.join("state.json"), text.as_bytes(), Some(0o600), None)?;
    Ok(())
}

async fn restart_and_wait(opts: &Options, socket: &Path) -> Result<String, RestartError> {
    let argv = opts.restart_command.clone();
    tokio::task::spawn_blocking(move || run_command(&argv))
        .await
        .map_err(|e| RestartError::Command { command: "restart".into(), what: e.to_string() })??;
    wait_answering(&opts.host_root.resolve(socket), opts.wait_timeout).await
}

/// Puts the previous bytes back, removes hosts files written in this run, restarts again.
async fn rollback(opts: &Options, previous: &Previous, plan: &Plan, socket: &Path) -> String {
    let root = &opts.host_root;
    let mut problems = Vec::new();
    for (path, bytes) in previous {
        let local = root.resolve(&root.follow_links(path).unwrap_or_else(|_| path.clone()));
        let r = match bytes {
            Some(b) => write_atomic(&local, b, None, None).map(|_| ()),
            None => crate::files::remove_optional(&local).map(|_| ()),
        };
        if let Err(e) = r {
            problems.push(e.to_string());
        }
    }
    for p in plan.hosts.keys() {
        let _ = crate::files::remove_optional(&root.resolve(p));
    }
    match restart_and_wait(opts, socket).await {
        Ok(_) if problems.is_empty() => "containerd is running on it again".into(),
        Ok(_) => format!("containerd restarted, but: {}", problems.join("; ")),
        Err(e) => format!(
            "restarting containerd on it failed too: {e}{}",
            if problems.is_empty() { String::new() } else { format!("; {}", problems.join("; ")) }
        ),
    }
}
