//! Looking at a node: containerd's effective config (from `containerd config dump`
//! where the binary runs on this root, else the files), its version (binary, socket,
//! or what the installer recorded), `bin_dir`, verifier.json and the installed
//! verifier's protocol, turned into [`crate::checks`] findings. The agent's own
//! health is the caller's to add (doctor asks the agent; the agent is the agent).

use crate::checks::{
    BinEntry, Finding, Severity, bin_dir_findings, config_findings, timeout_findings, version_findings,
};
use crate::install_state::{State, state_dir_for};
use crate::model::Effective;
use crate::version::Version;
use crate::{DEFAULT_VERIFIER_NAME, HostRoot};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where to look.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The host's root as seen from here.
    pub host_root: HostRoot,
    /// containerd's main config (host path).
    pub containerd_config: PathBuf,
    /// The containerd binary (host path); `None`: look in the usual places.
    pub containerd_bin: Option<PathBuf>,
    /// containerd's socket (host path); `None`: grpc.address from its config.
    pub containerd_socket: Option<PathBuf>,
    /// verifier.json (host path).
    pub verifier_config: PathBuf,
    /// The protocol version the agent speaks.
    pub agent_protocol: u32,
}

/// What was seen, and the findings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Where the effective config came from.
    pub config_source: String,
    /// containerd's version and where it was read.
    pub containerd_version: Option<String>,
    /// `bin_dir`.
    pub bin_dir: PathBuf,
    /// `max_verifiers`.
    pub max_verifiers: i64,
    /// `per_verifier_timeout`, as text.
    pub per_verifier_timeout: String,
    /// pullgate's verifier file name in bin_dir.
    pub verifier_name: String,
    /// verifier.json's deadline.
    pub verifier_deadline_ms: Option<u64>,
    /// verifier.json's failure policy.
    pub verifier_failure_policy: Option<String>,
    /// The installed verifier's `--version` line.
    pub verifier_version: Option<String>,
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
}

const USUAL_BINARIES: &[&str] = &["/usr/bin/containerd", "/usr/local/bin/containerd", "/usr/sbin/containerd"];

fn find_binary(inputs: &Inputs) -> Option<PathBuf> {
    if inputs.host_root.dir() != Path::new("/") {
        // A host binary cannot be trusted to run in this container, and its
        // `config dump` would read imports from this container's filesystem.
        return None;
    }
    if let Some(b) = &inputs.containerd_bin {
        return Some(b.clone());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(|d| Path::new(d).join("containerd"))
        .chain(USUAL_BINARIES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Looks at the node. Never fails: what cannot be read becomes a finding.
pub async fn observe(inputs: &Inputs) -> Observation {
    let root = &inputs.host_root;
    let mut findings = Vec::new();
    let state =
        State::load(&root.resolve(&state_dir_for(&inputs.verifier_config).join("state.json"))).unwrap_or_default();
    let binary = find_binary(inputs);
    let (effective, config_source) = effective_config(inputs, binary.as_deref(), &mut findings);
    let Some(effective) = effective else {
        return Observation {
            config_source,
            containerd_version: None,
            bin_dir: PathBuf::new(),
            max_verifiers: 0,
            per_verifier_timeout: String::new(),
            verifier_name: String::new(),
            verifier_deadline_ms: None,
            verifier_failure_policy: None,
            verifier_version: None,
            findings,
        };
    };
    let (version, version_text) = containerd_version(inputs, binary.as_deref(), &effective, &state).await;
    findings.extend(version_findings(version, &version_text));
    findings.extend(config_findings(&effective));
    let name = state
        .verifier
        .as_ref()
        .and_then(|v| v.path.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_VERIFIER_NAME.to_string());
    let listing = list_bin_dir(&root.resolve(&effective.bindir.bin_dir));
    findings.extend(bin_dir_findings(&effective, listing, &name));
    let (deadline, policy) = verifier_config(inputs, &effective, &mut findings);
    let verifier_version =
        verifier_protocol(inputs, &root.resolve(&effective.bindir.bin_dir.join(&name)), &mut findings);
    findings.sort_by_key(|f| f.severity != Severity::Error);
    Observation {
        config_source,
        containerd_version: version.map(|v| format!("{v} ({version_text})")),
        bin_dir: effective.bindir.bin_dir.clone(),
        max_verifiers: effective.bindir.max_verifiers,
        per_verifier_timeout: match &effective.bindir.per_verifier_timeout {
            Ok(d) => crate::duration::format_go_duration(*d),
            Err(t) => t.clone(),
        },
        verifier_name: name,
        verifier_deadline_ms: deadline,
        verifier_failure_policy: policy,
        verifier_version,
        findings,
    }
}

fn effective_config(
    inputs: &Inputs,
    binary: Option<&Path>,
    findings: &mut Vec<Finding>,
) -> (Option<Effective>, String) {
    if let Some(bin) = binary {
        match crate::dump::config_dump(bin, &inputs.containerd_config) {
            Ok(t) => return (Some(Effective::from_merged(&t)), format!("`{} config dump`", bin.display())),
            Err(e) => findings.push(warning(
                "config-dump",
                format!("{e}; reading the files instead"),
                "check that the containerd binary runs",
            )),
        }
    }
    match crate::load::load(&inputs.host_root, &inputs.containerd_config) {
        Ok(l) => {
            let files: Vec<String> = l.sources.iter().map(|s| s.path.display().to_string()).collect();
            let source = if l.main_exists {
                format!("files: {}", files.join(", "))
            } else {
                format!("containerd's defaults ({} does not exist)", inputs.containerd_config.display())
            };
            (Some(Effective::from_merged(&l.merged)), source)
        }
        Err(e) => {
            findings.push(error(
                "containerd-config",
                e.to_string(),
                "fix the file; containerd would not start with it either",
            ));
            (None, format!("unreadable: {}", inputs.containerd_config.display()))
        }
    }
}

async fn containerd_version(
    inputs: &Inputs,
    binary: Option<&Path>,
    e: &Effective,
    state: &State,
) -> (Option<Version>, String) {
    let mut tried = Vec::new();
    if let Some(bin) = binary {
        match crate::dump::binary_version(bin) {
            Ok(v) => return (Some(v), format!("from {}", bin.display())),
            Err(err) => tried.push(err.to_string()),
        }
    }
    let socket = inputs.containerd_socket.clone().unwrap_or_else(|| e.socket.clone());
    match crate::socket::version(&inputs.host_root.resolve(&socket), Duration::from_secs(2)).await {
        Ok(v) if v.parsed().is_some() => return (v.parsed(), format!("from {}", socket.display())),
        Ok(v) => tried.push(format!("{} answered {:?}", socket.display(), v.version)),
        Err(err) => tried.push(err.to_string()),
    }
    if let Some(v) = state.containerd_version.as_deref().and_then(Version::find_in) {
        return (
            Some(v),
            format!("recorded by pullgate-install in {}/state.json", state_dir_for(&inputs.verifier_config).display()),
        );
    }
    (None, tried.join("; "))
}

/// `bin_dir`'s entries; `Ok(None)` when it does not exist.
pub fn list_bin_dir(dir: &Path) -> Result<Option<Vec<BinEntry>>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for entry in rd.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follows symlinks, as exec does.
        let meta = std::fs::metadata(entry.path());
        let (is_dir, executable) = match meta {
            Ok(m) => (m.is_dir(), m.is_file() && m.permissions().mode() & 0o111 != 0),
            Err(_) => (false, false),
        };
        out.push(BinEntry { name, executable, is_dir });
    }
    Ok(Some(out))
}

fn verifier_config(inputs: &Inputs, e: &Effective, findings: &mut Vec<Finding>) -> (Option<u64>, Option<String>) {
    let local = inputs.host_root.resolve(&inputs.verifier_config);
    if !local.exists() {
        findings.push(warning(
            "verifier-config",
            format!("{} does not exist: the verifier runs on its defaults (fail-closed, deadline {} ms, no bootstrap allowlist)", inputs.verifier_config.display(), pullgate_wire::DEFAULT_DEADLINE_MS),
            "run pullgate-install install",
        ));
        findings.extend(timeout_findings(e, pullgate_wire::DEFAULT_DEADLINE_MS));
        return (Some(pullgate_wire::DEFAULT_DEADLINE_MS), Some("closed".into()));
    }
    match pullgate_wire::VerifierConfig::load(&local) {
        Ok(c) => {
            findings.extend(timeout_findings(e, c.deadline_ms));
            let policy = match c.failure_policy {
                pullgate_wire::FailurePolicy::Open => "open",
                pullgate_wire::FailurePolicy::Closed => "closed",
            };
            (Some(c.deadline_ms), Some(policy.into()))
        }
        Err(err) => {
            findings.push(error(
                "verifier-config",
                format!("{err}: the verifier denies every pull until it is fixed"),
                "fix the file or rerun pullgate-install install",
            ));
            (None, None)
        }
    }
}

/// Runs the installed verifier's `--version` and compares its protocol with the agent's.
fn verifier_protocol(inputs: &Inputs, binary: &Path, findings: &mut Vec<Finding>) -> Option<String> {
    if !binary.is_file() {
        return None;
    }
    let out = crate::dump::run_bounded(std::process::Command::new(binary).arg("--version"), Duration::from_secs(2));
    let line = match out {
        Ok(Some(o)) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(Some(o)) => {
            findings.push(error(
                "verifier-protocol",
                format!("{} --version failed ({})", binary.display(), o.status),
                "reinstall it (pullgate-install install)",
            ));
            return None;
        }
        Ok(None) => {
            findings.push(error(
                "verifier-protocol",
                format!("{} --version did not finish in 2 s", binary.display()),
                "reinstall it (pullgate-install install)",
            ));
            return None;
        }
        Err(e) => {
            findings.push(error(
                "verifier-protocol",
                format!("cannot run {}: {e}", binary.display()),
                "reinstall it (pullgate-install install)",
            ));
            return None;
        }
    };
    let protocol = line.split_whitespace().skip_while(|w| *w != "protocol").nth(1).and_then(|p| p.parse::<u32>().ok());
    match protocol {
        Some(p) if p == inputs.agent_protocol => {}
        Some(p) => findings.push(error(
            "verifier-protocol",
            format!("the installed verifier speaks protocol {p}, the agent protocol {}: the agent refuses its requests, so every pull gets the failure policy", inputs.agent_protocol),
            "install the verifier from the same release as the agent (pullgate-install install from the agent's image)",
        )),
        None => findings.push(error(
            "verifier-protocol",
            format!("{} --version printed {line:?}, which names no protocol: it is not a pullgate-verifier of this release", binary.display()),
            "install the verifier from the same release as the agent",
        )),
    }
    Some(line)
}

fn error(check: &'static str, problem: String, fix: &str) -> Finding {
    Finding { check, severity: Severity::Error, key: None, file: None, problem, fix: fix.into() }
}

fn warning(check: &'static str, problem: String, fix: &str) -> Finding {
    Finding { severity: Severity::Warning, ..error(check, problem, fix) }
}
