//! The manifests in `deploy/` parse as the Kubernetes types they claim to be,
//! grant no more than the agent needs, run the agent in Kubernetes mode, and
//! the example ConfigMaps sync into a valid config generation.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt as _;
use pullgate_agent::config;
use pullgate_agent::sync::generation::Generations;
use pullgate_agent::sync::kube::{DEFAULT_CONFIG_SELECTOR, PATH_ANNOTATION, desired_files};
use serde_json::Value;
use std::path::{Path, PathBuf};
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
