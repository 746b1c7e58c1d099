//! Builds the registry client a config asks for: per-host TLS and
//! concurrency settings, the content store, and the keychain (the node's
//! docker config overlaid with pull Secrets). One place, so every way of
//! reaching a registry (mirrors, credential sources, a shared tier) is wired
//! the same for the daemon and the one-shot `verify`.

use crate::config::{Config, RegistrySettings};
use pullgate_registry::auth::Keychain;
use pullgate_registry::{Client, ClientOptions, HostOptions, RequestObserver};

/// Builds the registry client a config asks for: per-host TLS and
/// concurrency settings, and a keychain of the node's docker config (when
/// configured) overlaid with `pull_secrets` (Kubernetes mode).
pub fn registry_client(
    cfg: &Config,
    pull_secrets: &Keychain,
    observer: Option<RequestObserver>,
    content_store: Option<std::sync::Arc<dyn pullgate_registry::ContentStore>>,
) -> Client {
    if let Some(store) = &content_store {
        store.set_max_bytes(cfg.cache.content_max_bytes);
    }
    let shared = crate::cluster::tier(cfg);
    let mut opts = ClientOptions { observer, content_store, shared, ..ClientOptions::default() };
    for (host, RegistrySettings { insecure, ca_pem, max_concurrency }) in &cfg.registries {
        opts.hosts.insert(
            host.clone(),
            HostOptions { insecure: *insecure, ca_pem: ca_pem.clone(), max_concurrency: *max_concurrency, rate: None },
        );
    }
    endpoints(cfg, &mut opts);
    let client = Client::new(opts);
    client.set_keychain(keychain(cfg, pull_secrets));
    client
}

/// containerd's hosts.toml tree, kubelet's credential providers, the
/// registry rate and the per-registry latency metric. The TLS trust anchors
/// are not built here: the registry crate reads them once per process.
fn endpoints(cfg: &Config, opts: &mut ClientOptions) {
    let e = &cfg.endpoints;
    opts.rate = e.rate;
    opts.latency_observer = Some(crate::metrics::registry_latency_observer());
    opts.hosts_dirs = e.hosts().map(std::sync::Arc::new);
    opts.credential_providers = match e.providers() {
        Ok(p) => p.map(std::sync::Arc::new),
        Err(issues) => {
            for i in issues {
                tracing::error!(problem = %i, "kubelet credential providers unusable; run pullgate-agent check-config");
            }
            None
        }
    };
}

/// A report's referrers source, naming the hosts.toml mirror that served
/// the list when it was not the registry itself (`referrers-api via http://m:5000/v2`).
pub fn via_mirror(source: String, mirror: Option<String>) -> String {
    match mirror {
        Some(m) => format!("{source} via {m}"),
        None => source,
    }
}

/// The node's docker config keychain (when configured) overlaid with `pull_secrets`.
pub fn keychain(cfg: &Config, pull_secrets: &Keychain) -> Keychain {
    let mut kc = Keychain::new();
    if let Some(path) = &cfg.docker_config {
        match Keychain::from_docker_config_file(path) {
            Ok(file) => kc = file,
            Err(e) => {
                tracing::error!(error = %e, "registry credentials unavailable; pulls from private registries will fail")
            }
        }
    }
    kc.extend(pull_secrets);
    kc
}
