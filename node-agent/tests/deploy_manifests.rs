//! The manifests in `deploy/` parse as the Kubernetes types they claim to be,
//! grant no more than the agent needs, run the agent in Kubernetes mode after
//! the node installer, name only commands and flags the built binaries accept,
//! and the example ConfigMaps sync into a valid config generation.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, ServiceAccount, Volume};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt as _;
use pullgate_agent::config;
use pullgate_agent::sync::generation::Generations;
use pullgate_agent::sync::kube::{DEFAULT_CONFIG_SELECTOR, PATH_ANNOTATION, desired_files};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const NS: &str = "pullgate-system";

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Every document of a YAML file, as JSON values.
fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy").join(file)).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

#[test]
fn rbac_is_namespaced_and_read_only() {
    let ns: Vec<Namespace> = of_kind(&docs("00-namespace.yaml"), "Namespace");
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].metadata.name.as_deref(), Some(NS));

    let d = docs("10-rbac.yaml");
    assert!(d.iter().all(|x| x["kind"] != "ClusterRole" && x["kind"] != "ClusterRoleBinding"));
    let sa: Vec<ServiceAccount> = of_kind(&d, "ServiceAccount");
    let role: Vec<Role> = of_kind(&d, "Role");
    let binding: Vec<RoleBinding> = of_kind(&d, "RoleBinding");
    assert_eq!((sa.len(), role.len(), binding.len()), (1, 1, 1));
    assert_eq!(role[0].metadata.namespace.as_deref(), Some(NS));
    let mut grants: Vec<(String, String)> = Vec::new();
    for rule in role[0].rules.iter().flatten() {
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]), "core API group only");
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for r in rule.resources.iter().flatten() {
            for v in &rule.verbs {
                grants.push((r.clone(), v.clone()));
            }
        }
    }
    grants.sort();
    let want: Vec<(String, String)> = [
        ("configmaps", "get"),
        ("configmaps", "list"),
        ("configmaps", "watch"),
        ("events", "create"),
        ("events", "patch"),
        ("secrets", "get"),
        ("secrets", "list"),
        ("secrets", "watch"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(grants, want);
    let b = &binding[0];
    assert_eq!(b.role_ref.kind, "Role");
    assert_eq!(Some(&b.role_ref.name), role[0].metadata.name.as_ref());
    let subject = &b.subjects.as_ref().unwrap()[0];
    assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("ServiceAccount", "pullgate-agent"));
    assert_eq!(subject.namespace.as_deref(), Some(NS));
    assert_eq!(sa[0].metadata.name.as_deref(), Some("pullgate-agent"));
}

#[test]
fn daemonset_runs_the_agent_in_kubernetes_mode() {
    let ds: Vec<DaemonSet> = of_kind(&docs("20-daemonset.yaml"), "DaemonSet");
    assert_eq!(ds.len(), 1);
    let ds = &ds[0];
    assert_eq!(ds.metadata.namespace.as_deref(), Some(NS));
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("pullgate-agent"));
    let agent = pod.containers.iter().find(|c| c.name == "agent").expect("agent container");
    let image = agent.image.as_deref().unwrap();
    assert!(image.contains("@sha256:"), "the agent image is digest-pinned: {image}");
    let args = agent.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    assert!(args.iter().any(|a| a == "--kubernetes"));
    assert!(!args.iter().any(|a| a.starts_with("--config-dir")));
    let arg = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).map(PathBuf::from);
    let socket = arg("socket").expect("--socket=");
    let state = arg("state-dir").expect("--state-dir=");

    let env = agent.env.clone().unwrap_or_default();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAMESPACE").as_deref(), Some("metadata.namespace"));
    assert_eq!(field("NODE_NAME").as_deref(), Some("spec.nodeName"));

    // The socket's directory and the state directory are host paths mounted where the args point.
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mounts = agent.volume_mounts.clone().unwrap_or_default();
    for (dir, host) in [(socket.parent().unwrap().to_path_buf(), "/run/pullgate"), (state, "/var/lib/pullgate")] {
        let m = mounts.iter().find(|m| Path::new(&m.mount_path) == dir).unwrap_or_else(|| panic!("{dir:?}"));
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        assert_eq!(v.host_path.as_ref().map(|h| h.path.as_str()), Some(host));
    }
    let sc = agent.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
}

#[test]
fn example_configmaps_sync_to_the_example_config_dir() {
    let cms: Vec<ConfigMap> = of_kind(&docs("30-config-example.yaml"), "ConfigMap");
    assert!(cms.len() >= 2, "the main config and at least one piece in its own ConfigMap");
    let (key, value) = DEFAULT_CONFIG_SELECTOR.split_once('=').unwrap();
    for cm in &cms {
        assert_eq!(cm.metadata.namespace.as_deref(), Some(NS));
        assert_eq!(cm.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str), Some(value));
    }
    assert!(cms.iter().any(|c| c.annotations().contains_key(PATH_ANNOTATION)), "an example of {PATH_ANNOTATION}");

    // The ConfigMaps hold exactly the example config directory (its READMEs aside).
    let cms: Vec<Arc<ConfigMap>> = cms.into_iter().map(Arc::new).collect();
    let desired = desired_files(&cms).unwrap_or_else(|p| panic!("{p:#?}"));
    let example_dir = repo().join("examples/config");
    let example: Vec<(String, Vec<u8>)> =
        config::read_tree(&example_dir).unwrap().into_iter().filter(|(p, _)| !p.ends_with("README.md")).collect();
    let synced: Vec<(String, Vec<u8>)> = desired.files.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect();
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&synced), names(&example), "the same files as examples/config");
    for ((path, got), (_, want)) in synced.iter().zip(&example) {
        assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(want), "{path} differs from examples/config");
    }

    // And they make a valid generation.
    let state = tempfile::tempdir().unwrap();
    let gens = Generations::new(state.path());
    let staged = gens.stage(&desired.files).unwrap();
    let loaded = config::load_dir(staged.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.generation, desired.files.generation_id());
}

/// The host paths the installer works on, and where it sees them: `--host-root` + the host path.
const INSTALLER_HOST_PATHS: [&str; 4] =
    ["/etc/containerd", "/opt/containerd/image-verifier", "/etc/pullgate", "/run/containerd"];
/// The host paths `pullgate-agent doctor` reads (read-only), under the same host root;
/// `/run/containerd` for containerd's socket (its version).
const DOCTOR_HOST_PATHS: [&str; 4] =
    ["/etc/containerd", "/opt/containerd/image-verifier/bin", "/etc/pullgate", "/run/containerd"];
const HOST_ROOT: &str = "/host";

fn pod_of_daemonset() -> PodSpec {
    let ds: Vec<DaemonSet> = of_kind(&docs("20-daemonset.yaml"), "DaemonSet");
    assert_eq!(ds.len(), 1);
    ds[0].spec.clone().unwrap().template.spec.unwrap()
}

fn pod_of_uninstall_job() -> (Job, PodSpec) {
    let jobs: Vec<Job> = of_kind(&docs("40-uninstall-job.yaml"), "Job");
    assert_eq!(jobs.len(), 1, "one Job in 40-uninstall-job.yaml");
    let pod = jobs[0].spec.clone().unwrap().template.spec.unwrap();
    (jobs[0].clone(), pod)
}

/// `--name=value` of an argument list (each flag exactly once).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    let found: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(&prefix)).collect();
    assert!(found.len() <= 1, "--{name} given {} times in {args:?}", found.len());
    found.first().copied()
}

/// Host path of a volume mounted at `mount_path` in `c`, and whether the mount is read-only.
fn host_path_at(pod: &PodSpec, c: &Container, mount_path: &str) -> Option<(String, bool)> {
    let m = c.volume_mounts.iter().flatten().find(|m| Path::new(&m.mount_path) == Path::new(mount_path))?;
    let v: &Volume = pod.volumes.iter().flatten().find(|v| v.name == m.name)?;
    Some((v.host_path.as_ref()?.path.clone(), m.read_only.unwrap_or(false)))
}

/// Every mount of containerd's runtime directory follows the host's mounts
/// (`HostToContainer`), so it does not pin the containers' rootfs mounts below it.
fn assert_run_containerd_follows_host(pod: &PodSpec, c: &Container) {
    for m in c.volume_mounts.iter().flatten() {
        let v = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
        if v.host_path.as_ref().is_some_and(|h| h.path == "/run/containerd") {
            assert_eq!(m.mount_propagation.as_deref(), Some("HostToContainer"), "{}: {}", c.name, m.mount_path);
        }
    }
}

fn privileged(c: &Container) -> bool {
    c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false)
}

/// The installer's host mounts: every path it works on, writable, at `/host` + path.
fn assert_installer_mounts(pod: &PodSpec, c: &Container) {
    for host in INSTALLER_HOST_PATHS {
        let at = format!("{HOST_ROOT}{host}");
        let (path, ro) = host_path_at(pod, c, &at).unwrap_or_else(|| panic!("{}: no hostPath mounted at {at}", c.name));
        assert_eq!(path, host, "{}: {at} must be the host's {host}", c.name);
        assert!(!ro, "{}: {at} must be writable", c.name);
    }
    assert_run_containerd_follows_host(pod, c);
}

/// Runs a built binary with `args` and returns its `--help` text (exit 0 required).
fn help(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?} --help: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {} --help failed ({}): {}{}",
        bin.display(),
        args.join(" "),
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The long flags a clap `--help` text documents (`--name`, from the option column).
fn documented_flags(help: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split([' ', ',']).take_while(|w| w.starts_with('-') || w.starts_with('<') || w.is_empty()) {
            if let Some(name) = word.strip_prefix("--") {
                let name = name.split(['=', '[', '<']).next().unwrap_or_default();
                if !name.is_empty() {
                    flags.push(name.to_string());
                }
            }
        }
    }
    flags
}

/// The `[default: …]` a clap `--help` text gives for `--name` (on its line or the lines
/// of its description, before the next option).
fn documented_default(help: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = help.lines().collect();
    let start = lines.iter().position(|l| {
        let l = l.trim_start();
        l.starts_with('-') && l.split([' ', ',']).any(|w| w == format!("--{name}"))
    })?;
    for (i, line) in lines[start..].iter().enumerate() {
        if i > 0 && line.trim_start().starts_with('-') {
            break;
        }
        if let Some((_, rest)) = line.split_once("[default: ") {
            return rest.split(']').next().map(str::to_string);
        }
    }
    None
}

/// Subcommand names listed under `Commands:` in a clap `--help` text.
fn documented_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Asserts `command` (binary name, subcommand, `--flag=value`…) names a subcommand
/// and only flags that `bin SUBCOMMAND --help` documents.
fn assert_accepted(bin: &Path, command: &[String]) {
    let sub = command.get(1).map(String::as_str).unwrap_or_else(|| panic!("no subcommand in {command:?}"));
    let top = help(bin, &[]);
    assert!(documented_subcommands(&top).iter().any(|s| s == sub), "{} has no subcommand {sub}:\n{top}", bin.display());
    let text = help(bin, &[sub]);
    let known = documented_flags(&text);
    for arg in &command[2..] {
        let name = arg
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("{arg:?}: the manifests pass flags as --name=value only"))
            .split('=')
            .next()
            .unwrap();
        assert!(
            known.iter().any(|k| k == name),
            "`{} {sub}` has no flag --{name} (manifest: {command:?}):\n{text}",
            bin.display()
        );
    }
}

/// `target/<profile>/NAME`, next to this test's own executable; built on demand
/// when missing (`cargo test --workspace` and `scripts/test` build it before any test runs).
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", name, "--bin", name])
            .current_dir(repo())
            .status()
            .unwrap_or_else(|e| panic!("building {name}: {e}"));
        assert!(st.success(), "cargo build -p {name} failed");
    }
    assert!(path.is_file(), "{} not found after building it", path.display());
    path
}

#[test]
fn daemonset_installs_the_node_before_the_agent_starts() {
    let pod = pod_of_daemonset();
    let agent = pod.containers.iter().find(|c| c.name == "agent").expect("agent container");
    let agent_image = agent.image.clone().unwrap();
    assert_eq!(pod.host_pid, Some(true), "the installer enters PID 1's namespaces to restart containerd");

    let inits = pod.init_containers.clone().unwrap_or_default();
    assert_eq!(inits.len(), 1, "one init container, the installer");
    let install = &inits[0];
    assert_eq!(install.image.as_deref(), Some(agent_image.as_str()), "the installer runs from the agent's image");
    assert_eq!(install.command.as_deref(), Some(&["pullgate-install".to_string()][..]));
    let args = install.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("install"));
    assert_eq!(flag(&args, "host-root"), Some(HOST_ROOT));
    assert_eq!(flag(&args, "verifier-binary"), Some("/usr/local/bin/pullgate-verifier"));
    assert_eq!(flag(&args, "failure-policy"), Some("closed"));
    // The bootstrap allowlist gets the agent's own image, pinned: `$(AGENT_IMAGE)` is
    // expanded by the kubelet from the container's env.
    assert_eq!(flag(&args, "agent-image"), Some("$(AGENT_IMAGE)"));
    let env = install.env.clone().unwrap_or_default();
    let agent_image_env = env.iter().find(|e| e.name == "AGENT_IMAGE").and_then(|e| e.value.clone());
    assert_eq!(agent_image_env.as_deref(), Some(agent_image.as_str()), "AGENT_IMAGE = the agent's image");
    assert!(agent_image.contains("@sha256:"), "digest-pinned: {agent_image}");
    assert_installer_mounts(&pod, install);

    // Only the installer is privileged; the agent keeps no capabilities.
    assert!(privileged(install), "the installer writes host files and restarts containerd");
    assert!(!privileged(agent));
    let caps = agent.security_context.as_ref().and_then(|s| s.capabilities.as_ref()).and_then(|c| c.drop.clone());
    assert_eq!(caps.as_deref(), Some(&["ALL".to_string()][..]));

    // Readiness: `doctor` over read-only mounts of what the installer wrote; liveness: `status`.
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()).unwrap_or_default()
    };
    let ready = probe(&agent.readiness_probe);
    assert_eq!(ready.first().map(String::as_str), Some("pullgate-agent"));
    assert_eq!(ready.get(1).map(String::as_str), Some("doctor"));
    assert_eq!(flag(&ready, "host-root"), Some(HOST_ROOT));
    let agent_args = agent.args.clone().unwrap_or_default();
    assert_eq!(flag(&ready, "socket"), flag(&agent_args, "socket"), "doctor asks the socket the agent serves");
    for host in DOCTOR_HOST_PATHS {
        let at = format!("{HOST_ROOT}{host}");
        let (path, ro) = host_path_at(&pod, agent, &at).unwrap_or_else(|| panic!("agent: nothing mounted at {at}"));
        assert_eq!(path, host);
        assert!(ro, "the agent mounts {host} read-only");
    }
    assert_run_containerd_follows_host(&pod, agent);
    let live = probe(&agent.liveness_probe);
    assert_eq!(live.get(..2), Some(&["pullgate-agent".to_string(), "status".to_string()][..]));
    assert_eq!(flag(&live, "socket"), flag(&agent_args, "socket"));
}

#[test]
fn uninstall_job_runs_the_installer_on_one_node() {
    let (job, pod) = pod_of_uninstall_job();
    assert_eq!(job.metadata.namespace.as_deref(), Some(NS));
    assert!(job.metadata.name.as_deref().unwrap().contains("NODE_NAME"), "the name carries the node placeholder");
    assert_eq!(pod.node_name.as_deref(), Some("NODE_NAME"), "a placeholder the README says to replace");
    assert_eq!(pod.host_pid, Some(true));
    assert_ne!(pod.restart_policy.as_deref(), Some("Always"), "a Job's pod");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let ds_pod = pod_of_daemonset();
    let agent_image = ds_pod.containers.iter().find(|c| c.name == "agent").and_then(|c| c.image.clone());
    assert_eq!(c.image, agent_image, "the agent image: on the bootstrap allowlist and already on the node");
    assert_eq!(c.command.as_deref(), Some(&["pullgate-install".to_string()][..]));
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("uninstall"));
    assert_eq!(flag(&args, "host-root"), Some(HOST_ROOT));
    assert!(privileged(c));
    assert_installer_mounts(&pod, c);
}

#[test]
fn manifest_commands_are_ones_the_binaries_accept() {
    let pod = pod_of_daemonset();
    let agent = pod.containers.iter().find(|c| c.name == "agent").unwrap();
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_pullgate-agent"));
    let with_bin = |c: &Container| {
        let mut v = c.command.clone().unwrap_or_default();
        v.extend(c.args.clone().unwrap_or_default());
        v
    };
    let run = with_bin(agent);
    assert_eq!(run.first().map(String::as_str), Some("pullgate-agent"));
    assert_accepted(agent_bin, &run);
    for p in [&agent.readiness_probe, &agent.liveness_probe] {
        let cmd = p.as_ref().and_then(|p| p.exec.as_ref()).and_then(|e| e.command.clone()).expect("exec probe");
        assert_eq!(cmd.first().map(String::as_str), Some("pullgate-agent"));
        assert_accepted(agent_bin, &cmd);
    }

    let install_bin = workspace_binary("pullgate-install");
    let install = &pod.init_containers.as_ref().expect("init containers")[0];
    assert_accepted(&install_bin, &with_bin(install));
    // verifier.json names the socket the agent serves: the installer's --socket (or its default).
    let agent_socket = flag(agent.args.as_deref().unwrap_or_default(), "socket").expect("agent --socket=");
    let install_args = install.args.clone().unwrap_or_default();
    let verifier_socket = match flag(&install_args, "socket") {
        Some(s) => s.to_string(),
        None => documented_default(&help(&install_bin, &["install"]), "socket").expect("install --socket default"),
    };
    assert_eq!(verifier_socket, agent_socket, "the verifier would connect to another socket than the agent's");
    let (_, job_pod) = pod_of_uninstall_job();
    assert_accepted(&install_bin, &with_bin(&job_pod.containers[0]));
}
