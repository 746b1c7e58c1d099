//! The agent's commands: `run`, `verify`, `check-config`, `explain`, `status`, `policy test`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 command-line usage error (from clap), 64 invalid config
//! (in standalone mode the config is validated before anything binds; in
//! Kubernetes mode the agent starts without one and answers with errors, so
//! the verifier's failure policy applies, until a valid config is synced).
//! `verify` exits 0 allow, 1 deny, 64 invalid config, 2 any other error.

use crate::config::{self, ConfigError};
use crate::engine::Engine;
use crate::metrics::{self, Metrics};
use crate::oneshot;
use crate::report::{self, DecisionLog};
use crate::server::{self, ServerOptions};
use crate::sync::kube::{DEFAULT_AUTH_SELECTOR, DEFAULT_CONFIG_SELECTOR, KubeOptions};
use crate::sync::{self, RegistryCredentials, generation::Generations};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pullgate_wire::{DEFAULT_SOCKET_PATH, PROTOCOL_VERSION, Request, Response};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit code for an invalid config or command line.
pub const EXIT_CONFIG: u8 = 64;
/// Default state directory (decision log).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pullgate";
/// Exit code of `verify` when no decision could be made (registry, reference, I/O).
pub const EXIT_VERIFY_ERROR: u8 = 2;

/// Where the metrics endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// No metrics endpoint.
    Off,
    /// Listen on this address.
    At(SocketAddr),
}

fn parse_metrics_addr(s: &str) -> Result<MetricsListen, String> {
    if s == "off" {
        return Ok(MetricsListen::Off);
    }
    s.parse::<SocketAddr>()
        .map(MetricsListen::At)
        .map_err(|e| format!("{e}: give IP:PORT (e.g. 127.0.0.1:9464 or [::1]:9464) or `off`"))
}

/// pullgate-agent: verifies container images for containerd on this node.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the node's containerd and verifier files are (run's coverage checks and doctor).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Where the host's root filesystem is mounted (a container mounting it at /host passes /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// containerd's main config file (host path).
    #[arg(long, value_name = "PATH", default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    /// The containerd binary, for `config dump` and its version [default: PATH and the usual places; never under a --host-root other than /].
    #[arg(long, value_name = "PATH")]
    containerd_bin: Option<PathBuf>,
    /// containerd's socket (host path) [default: grpc.address from its config].
    #[arg(long, value_name = "PATH")]
    containerd_socket: Option<PathBuf>,
    /// The verifier's config file (host path).
    #[arg(long, value_name = "PATH", default_value = pullgate_wire::DEFAULT_CONFIG_PATH)]
    verifier_config: PathBuf,
}

impl NodeArgs {
    /// containerd's socket as seen from here: `--containerd-socket`, else `grpc.address`
    /// from its config, under `--host-root`.
    fn containerd_socket_path(&self) -> PathBuf {
        let root = pullgate_containerd::HostRoot::new(&self.host_root);
        let socket = self.containerd_socket.clone().unwrap_or_else(|| {
            pullgate_containerd::load::load(&root, &self.containerd_config)
                .map(|l| pullgate_containerd::model::Effective::from_merged(&l.merged).socket)
                .unwrap_or_else(|_| pullgate_containerd::model::DEFAULT_SOCKET.into())
        });
        root.resolve(&socket)
    }

    fn inputs(&self) -> pullgate_containerd::probe::Inputs {
        pullgate_containerd::probe::Inputs {
            host_root: pullgate_containerd::HostRoot::new(&self.host_root),
            containerd_config: self.containerd_config.clone(),
            containerd_bin: self.containerd_bin.clone(),
            containerd_socket: self.containerd_socket.clone(),
            verifier_config: self.verifier_config.clone(),
            agent_protocol: PROTOCOL_VERSION,
        }
    }
}

/// The agent's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: serve decisions on the socket.
    Run {
        /// Config directory holding pullgate.toml (standalone mode); re-read
        /// when it changes and on SIGHUP.
        #[arg(long, value_name = "DIR", required_unless_present = "kubernetes", conflicts_with = "kubernetes")]
        config_dir: Option<PathBuf>,
        /// Kubernetes mode: sync the config from labelled ConfigMaps and
        /// registry credentials from labelled pull Secrets in the agent's namespace.
        #[arg(long)]
        kubernetes: bool,
        /// Namespace to watch in Kubernetes mode [default: $POD_NAMESPACE].
        #[arg(long, value_name = "NAMESPACE", requires = "kubernetes")]
        namespace: Option<String>,
        /// Label selector of the config ConfigMaps (Kubernetes mode).
        #[arg(long, value_name = "SELECTOR", default_value = DEFAULT_CONFIG_SELECTOR)]
        config_selector: String,
        /// Label selector of the registry pull Secrets (Kubernetes mode).
        #[arg(long, value_name = "SELECTOR", default_value = DEFAULT_AUTH_SELECTOR)]
        auth_selector: String,
        /// Socket path pullgate-verifier connects to.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
        /// Numeric group allowed to connect; makes the socket mode 0660 instead of 0600.
        #[arg(long, value_name = "GID")]
        socket_group: Option<u32>,
        /// Directory for the decision log.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// How long to wait for in-flight requests on SIGTERM.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
        /// How long a client may take to send its request.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
        read_timeout: Duration,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Address of the Prometheus endpoint (`GET /metrics`), IP:PORT, or
        /// `off` [default: 127.0.0.1:9464; if that is taken the agent runs without it].
        #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
        metrics_addr: Option<MetricsListen>,
        /// Allow a --metrics-addr that is not a loopback address (the endpoint has no authentication).
        #[arg(long)]
        metrics_allow_remote: bool,
        /// Where containerd and the verifier's files are, for the coverage checks.
        #[command(flatten)]
        node: Box<NodeArgs>,
        /// How often to re-check node coverage (also re-checked when containerd's config changes).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        coverage_interval: Duration,
        /// Do not check node coverage (e.g. the agent runs where containerd is not).
        #[arg(long)]
        no_coverage: bool,
        /// Do not follow containerd's image store (unverified images, policy drift).
        #[arg(long)]
        no_inventory: bool,
        /// What to do with images a new config would deny: report, or untag (remove their
        /// names so the next container start pulls and verifies them again).
        #[arg(long, value_enum, default_value = "report")]
        drift_action: crate::inventory::DriftAction,
        /// How long after containerd records an image its allow decision may still arrive.
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
        inventory_grace: Duration,
    },
    /// Decide once on an image with the daemon's engine and config: no
    /// socket, no cache shared with a running agent. Exit 0 allow, 1 deny,
    /// 64 invalid config, 2 other errors.
    Verify {
        /// Image reference (`registry/repository:tag` or `…@sha256:…`).
        reference: String,
        /// Config directory holding pullgate.toml.
        #[arg(long, value_name = "DIR")]
        config_dir: PathBuf,
        /// Digest to verify; without it the tag is resolved through the registry.
        #[arg(long, value_name = "DIGEST")]
        digest: Option<String>,
        /// Media type of the digest's manifest (with --size: skips fetching it).
        #[arg(long, value_name = "TYPE", requires_all = ["digest", "size"])]
        media_type: Option<String>,
        /// Size of the digest's manifest in bytes (with --media-type).
        #[arg(long, value_name = "BYTES", requires_all = ["digest", "media_type"])]
        size: Option<u64>,
        /// Directory for the decision log [default: a temporary directory, removed on exit].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Time allowed for resolving and deciding (at most 60 s are spent deciding).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the full report as JSON instead of the verdict line.
        #[arg(long)]
        json: bool,
        /// Log format (logs go to stderr; warnings and errors only unless RUST_LOG says otherwise).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a config directory; exit 64 when it is invalid.
    CheckConfig {
        /// The config directory.
        dir: PathBuf,
    },
    /// Show the report of a decision, by report id or by image digest (newest).
    Explain {
        /// Report id (`d-…`) or digest (`sha256:…`).
        id_or_digest: String,
        /// Directory holding the decision log.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print the raw JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Check that every pull on this node reaches pullgate: containerd's version and
    /// config, bin_dir, verifier.json, the installed verifier and the agent. Exit 0 only
    /// when covered; 1 with one finding per problem otherwise.
    Doctor {
        /// Where containerd and the verifier's files are.
        #[command(flatten)]
        node: NodeArgs,
        /// Socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Images on this node that pullgate never allowed, or that the config in force
    /// would deny (from the running agent's image inventory).
    Audit {
        /// The agent's state directory.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rego policy tools.
    Policy {
        /// What to do.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Ask the running agent for its generation, mode, uptime and counters.
    Status {
        /// Socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
        /// Print raw JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `pullgate-agent policy …`.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Run the `test_*` rules of the .rego files in DIR against DIR/inputs/NAME.json
    /// (`explain --json` reports or input documents; each is data.inputs.NAME). Exit 0 when
    /// every test passes, 1 when one fails, 64 when a file does not compile or an input is unusable.
    Test {
        /// Directory holding the policy and its tests.
        dir: PathBuf,
        /// An input (report or document) that is also the global `input`.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            config_dir,
            kubernetes,
            namespace,
            config_selector,
            auth_selector,
            socket,
            socket_group,
            state_dir,
            drain_timeout,
            read_timeout,
            log_format,
            metrics_addr,
            metrics_allow_remote,
            node,
            coverage_interval,
            no_coverage,
            no_inventory,
            drift_action,
            inventory_grace,
        } => {
            init_tracing(log_format, "info");
            // The default address is best effort; an address asked for must be served.
            let metrics_listen = match metrics_addr {
                None => match metrics::DEFAULT_METRICS_ADDR.parse() {
                    Ok(addr) => Some(MetricsOptions { addr, required: false }),
                    Err(_) => None,
                },
                Some(MetricsListen::Off) => None,
                Some(MetricsListen::At(addr)) => Some(MetricsOptions { addr, required: true }),
            };
            if let Some(m) = &metrics_listen
                && !m.addr.ip().is_loopback()
                && !metrics_allow_remote
            {
                eprintln!(
                    "pullgate-agent: --metrics-addr {} is not a loopback address and the endpoint has no authentication; add --metrics-allow-remote to serve it there anyway",
                    m.addr
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            let source = match (config_dir, kubernetes) {
                (Some(config_dir), false) => {
                    let loaded = match load_config(&config_dir) {
                        Ok(l) => l,
                        Err(code) => return code,
                    };
                    Source::Dir(config_dir, Box::new(loaded))
                }
                (None, true) => {
                    let namespace = namespace.or_else(|| std::env::var("POD_NAMESPACE").ok()).unwrap_or_default();
                    if namespace.is_empty() {
                        eprintln!(
                            "pullgate-agent: --kubernetes needs the agent's namespace: set POD_NAMESPACE (downward API) or pass --namespace"
                        );
                        return ExitCode::from(EXIT_CONFIG);
                    }
                    if config_selector.trim().is_empty() || auth_selector.trim().is_empty() {
                        eprintln!("pullgate-agent: --config-selector and --auth-selector must not be empty");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                    let mut k = KubeOptions::new(namespace, state_dir.clone(), instance_name());
                    k.config_selector = config_selector;
                    k.auth_selector = auth_selector;
                    Source::Kubernetes(k)
                }
                _ => {
                    eprintln!("pullgate-agent: run needs exactly one of --config-dir DIR and --kubernetes");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut opts = ServerOptions::new(socket);
            opts.drain_timeout = drain_timeout;
            opts.read_timeout = read_timeout;
            if let Some(g) = socket_group {
                opts.group = Some(g);
                opts.mode = 0o660;
            }
            let coverage = (!no_coverage).then(|| (node.inputs(), coverage_interval));
            let inventory = (!no_inventory).then(|| InventoryOptions {
                socket: node.containerd_socket_path(),
                grace: inventory_grace,
                drift_action,
            });
            match run(source, state_dir, opts, metrics_listen, RunExtras { coverage, inventory }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("pullgate-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify { reference, config_dir, digest, media_type, size, state_dir, timeout, json, log_format } => {
            init_tracing(log_format, "warn");
            let target = oneshot::Target { reference, digest, descriptor: media_type.zip(size), timeout };
            verify_once(&config_dir, state_dir.as_deref(), &target, json)
        }
        Command::CheckConfig { dir } => check_config(&dir),
        Command::Explain { id_or_digest, state_dir, json } => edge(explain(&id_or_digest, &state_dir, json)),
        Command::Status { socket, json } => edge(status(&socket, json)),
        Command::Policy { command: PolicyCommand::Test { dir, input, json } } => {
            policy_test(&dir, input.as_deref(), json)
        }
        Command::Doctor { node, socket, json } => doctor(&node, &socket, json),
        Command::Audit { state_dir, json } => match crate::inventory::read_audit(&state_dir) {
            Ok(a) if json => {
                println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
                if a.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Ok(a) => {
                print!("{}", crate::inventory::render_audit(&a));
                if a.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("pullgate-agent audit: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn edge(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pullgate-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a terminal: journald and container logs would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Where the metrics endpoint listens, and whether failing to bind it stops the agent.
struct MetricsOptions {
    addr: SocketAddr,
    /// Given with --metrics-addr (binding must succeed) rather than the default (best effort).
    required: bool,
}

/// Where the running agent's config comes from.
enum Source {
    /// Standalone: a config directory, already loaded and valid.
    Dir(PathBuf, Box<config::Loaded>),
    /// Kubernetes: ConfigMaps synced into `<state-dir>/config/current`.
    Kubernetes(KubeOptions),
}

/// Who reports Kubernetes Events: `$NODE_NAME` (downward API), else the host name.
fn instance_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A Kubernetes client from the in-cluster service account or `$KUBECONFIG`.
async fn kube_client() -> anyhow::Result<::kube::Client> {
    let mut config = ::kube::Config::infer()
        .await
        .context("finding the Kubernetes API server: run in a pod with a service account, or set KUBECONFIG")?;
    config.connect_timeout = Some(Duration::from_secs(10));
    ::kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The image inventory's settings from the command line.
struct InventoryOptions {
    socket: PathBuf,
    grace: Duration,
    drift_action: crate::inventory::DriftAction,
}

/// The node-facing tasks beside the socket: coverage checks and the image inventory.
struct RunExtras {
    coverage: Option<(pullgate_containerd::probe::Inputs, Duration)>,
    inventory: Option<InventoryOptions>,
}

fn run(
    source: Source,
    state_dir: PathBuf,
    opts: ServerOptions,
    metrics_listen: Option<MetricsOptions>,
    extras: RunExtras,
) -> anyhow::Result<()> {
    let RunExtras { coverage, inventory } = extras;
    create_private_dir(&state_dir).with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let log = DecisionLog::open(&state_dir, report::DEFAULT_ROTATE_BYTES)?;
    let (config_dir, initial) = match &source {
        Source::Dir(dir, loaded) => (dir.clone(), Ok((**loaded).clone())),
        Source::Kubernetes(k) => {
            // The engine reads the `current` symlink, which may not exist yet.
            let current = Generations::new(&state_dir).current_link();
            let initial = if std::fs::symlink_metadata(&current).is_ok() {
                config::load_dir(&current)
            } else {
                Err(config::ConfigError::Read {
                    path: current.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "no config synced yet from ConfigMaps labelled {} in namespace {}",
                            k.config_selector, k.namespace
                        ),
                    ),
                })
            };
            (current, initial)
        }
    };
    match &initial {
        Ok(l) => {
            tracing::info!(generation = %l.generation, mode = l.config.mode.as_str(), config = %config_dir.display(), "config loaded")
        }
        Err(e) => tracing::warn!("starting without a config, answering with errors until one is synced: {e}"),
    }
    let cache_dir = state_dir.join("cache");
    let sled = crate::cache::SledStore::open(&cache_dir)?;
    let content = Arc::new(sled.content_store(crate::cache::DEFAULT_MAX_CONTENT_ENTRIES)?);
    let cache = crate::cache::DecisionCache::new(Box::new(sled));
    tracing::info!(cache = %cache_dir.display(), entries = cache.len(), "decision cache opened");
    // Served on /metrics: decisions, latency, cache lookups, registry
    // requests, the config generation, reloads and sync errors.
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(
        Engine::new(config_dir, initial, log)
            .with_cache(cache)
            .with_content_store(content)
            .with_metrics(metrics.clone()),
    );
    // Filled from pull Secrets in Kubernetes mode; the registry keychain reads it.
    let credentials = RegistryCredentials::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = match &source {
            Source::Kubernetes(_) => Some(kube_client().await?),
            Source::Dir(..) => None,
        };
        // Bound before the socket, so a refused address leaves no socket behind.
        let metrics_listener = match &metrics_listen {
            None => None,
            Some(m) => match metrics::bind(m.addr).await {
                Ok(l) => Some(l),
                Err(e) if m.required => return Err(e.into()),
                Err(e) => {
                    tracing::warn!("running without the metrics endpoint: {e}");
                    None
                }
            },
        };
        // Signal handlers exist before the socket does: once a client can see
        // the agent, SIGTERM drains it instead of killing it.
        let handlers = install_signal_handlers();
        let listener = server::bind(&opts)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let metrics_task = metrics_listener.map(|l| tokio::spawn(metrics::serve(l, metrics.clone(), rx.clone())));
        let event_client = client.clone();
        let sync_task = match (source, client) {
            (Source::Kubernetes(k), Some(client)) => {
                tokio::spawn(feed_pull_secrets(credentials.clone(), engine.clone(), rx.clone()));
                tokio::spawn(sync::kube::run(client, k, engine.clone(), credentials, rx.clone()))
            }
            (Source::Dir(dir, _), _) => {
                tokio::spawn(sync::watch::run(dir, engine.clone(), sync::watch::DEFAULT_DEBOUNCE, rx.clone()))
            }
            (Source::Kubernetes(_), None) => bail!("no Kubernetes client"),
        };
        let events = event_client.and_then(|client| {
            let pod = std::env::var("POD_NAME").ok()?;
            let namespace = std::env::var("POD_NAMESPACE").ok()?;
            Some(crate::coverage::EventTarget { client, namespace, pod, node: instance_name() })
        });
        let inventory_task = inventory.map(|i| {
            let seeded = engine.seen().seed_from_log(&state_dir);
            tracing::info!(allowed = seeded, "image inventory: allow decisions read from the decision log");
            let opts = crate::inventory::Options {
                socket: i.socket,
                state_dir: state_dir.clone(),
                grace: i.grace,
                drift_action: i.drift_action,
                events: events.clone(),
            };
            tokio::spawn(crate::inventory::run(opts, engine.clone(), metrics.clone(), rx.clone()))
        });
        let coverage_task = coverage.map(|(inputs, interval)| {
            let opts = crate::coverage::Options { inputs, interval, events };
            tokio::spawn(crate::coverage::run(opts, engine.clone(), metrics.clone(), rx.clone()))
        });
        let break_glass = metrics.break_glass().clone();
        tokio::spawn(crate::breakglass::run(engine.clone(), Some(break_glass), rx.clone()));
        let signals = tokio::spawn(handle_signals(handlers, engine.clone(), tx));
        server::serve(listener, engine.clone(), opts, rx).await;
        engine.flush();
        // Aborting the signal task drops the shutdown sender: the sync stops too.
        signals.abort();
        if tokio::time::timeout(Duration::from_secs(5), sync_task).await.is_err() {
            tracing::warn!("the config sync did not stop within 5 s");
        }
        if let Some(task) = coverage_task {
            task.abort();
        }
        if let Some(task) = inventory_task {
            task.abort();
        }
        if let Some(task) = metrics_task
            && tokio::time::timeout(Duration::from_secs(5), task).await.is_err()
        {
            tracing::warn!("the metrics endpoint did not stop within 5 s");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Hands every new set of pull-Secret credentials to the engine's registry
/// keychain, parsed by the registry crate's docker config reader.
async fn feed_pull_secrets(
    credentials: RegistryCredentials,
    engine: Arc<Engine>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut updates = credentials.subscribe();
    loop {
        let snapshot = updates.borrow_and_update().clone();
        let mut keychain = pullgate_registry::auth::Keychain::new();
        for secret in &snapshot.secrets {
            match pullgate_registry::auth::Keychain::from_docker_config(&secret.name, secret.raw.expose()) {
                Ok(kc) => keychain.extend(&kc),
                Err(e) => tracing::warn!(secret = %secret.name, "pull secret ignored: {e}"),
            }
        }
        tracing::info!(secrets = snapshot.secrets.len(), entries = keychain.len(), "registry credentials updated");
        engine.set_pull_secrets(keychain);
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// SIGTERM / SIGINT start the drain; SIGHUP re-reads the config directory.
/// SIGTERM, SIGINT and SIGHUP streams, registered now (inside the runtime).
type SignalHandlers = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

fn install_signal_handlers() -> SignalHandlers {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
        (Ok(term), Ok(int), Ok(hup)) => Some((term, int, hup)),
        _ => None,
    }
}

async fn handle_signals(handlers: SignalHandlers, engine: Arc<Engine>, shutdown: tokio::sync::watch::Sender<bool>) {
    let Some((mut term, mut int, mut hup)) = handlers else {
        tracing::error!("cannot install signal handlers; the agent keeps serving, stop it with SIGKILL");
        // Keep `shutdown` alive: dropping it would read as a shutdown request.
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => match engine.reload() {
                Ok(Some(g)) => tracing::info!(generation = %g, "config reloaded"),
                Ok(None) => tracing::info!("config unchanged"),
                Err(e) => tracing::error!("config rejected, keeping the last good one: {e}"),
            },
        }
    }
    let _ = shutdown.send(true);
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir)
}

/// Loads and validates a config directory before anything binds; on error
/// prints every problem and gives the exit code (64).
fn load_config(config_dir: &Path) -> Result<config::Loaded, ExitCode> {
    let loaded = config::load_dir(config_dir).map_err(|e| {
        eprintln!("pullgate-agent: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    for w in &loaded.warnings {
        tracing::warn!(config = %config_dir.display(), "{w}");
    }
    Ok(loaded)
}

/// `verify REF`: one decision with the daemon's engine, printed like
/// pullgate-verifier's line (or the report as JSON).
fn verify_once(config_dir: &Path, state_dir: Option<&Path>, target: &oneshot::Target, json: bool) -> ExitCode {
    let loaded = match load_config(config_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("pullgate-agent: {e}");
        ExitCode::from(EXIT_VERIFY_ERROR)
    };
    // A fresh temporary state directory unless one is given: nothing is shared with a daemon.
    let temp;
    let state_dir = match state_dir {
        Some(d) => {
            if let Err(e) = create_private_dir(d) {
                return fail(&format!("creating state directory {}: {e}", d.display()));
            }
            d
        }
        None => match tempfile::Builder::new().prefix("pullgate-verify-").tempdir() {
            Ok(t) => {
                temp = t;
                temp.path()
            }
            Err(e) => return fail(&format!("creating a temporary state directory: {e}")),
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the async runtime: {e}")),
    };
    let shot = match runtime.block_on(oneshot::verify(loaded, state_dir, target)) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let d = match &shot.response {
        Response::Decision(d) => d,
        Response::Error { message } => return fail(&format!("no decision: {message}")),
        Response::Status(_) => return fail(&"the engine answered with a status, not a decision"),
    };
    if json {
        let Some(report) = &shot.report else {
            return fail(&format!("report {} is missing from the decision log", d.report_id));
        };
        match serde_json::to_string_pretty(report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(&format!("encoding report {}: {e}", d.report_id)),
        }
    } else {
        let line =
            format!("pullgate: {} {}: {} (report {})", d.verdict.past_tense(), shot.label(), d.reason, d.report_id);
        println!("{}", line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>());
    }
    match d.verdict {
        pullgate_wire::Verdict::Allow => ExitCode::SUCCESS,
        pullgate_wire::Verdict::Deny => ExitCode::FAILURE,
    }
}

fn check_config(dir: &Path) -> ExitCode {
    match config::load_dir(dir) {
        Ok(l) => {
            for w in &l.warnings {
                println!("warning: {w}");
            }
            // The node files the config names (hosts.toml tree, credential providers).
            let node = config::check_node_files(&l.config.endpoints);
            if !node.is_empty() {
                for i in &node {
                    println!("error: {i}");
                }
                println!("invalid: {} names node files with {} error(s)", dir.display(), node.len());
                return ExitCode::from(EXIT_CONFIG);
            }
            println!(
                "ok: {} is valid (generation {}, mode {}, {} allowlist entries, {} scopes)",
                dir.display(),
                l.generation,
                l.config.mode.as_str(),
                l.config.allowlist.len(),
                l.config.scopes.len()
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { dir, issues }) => {
            for i in &issues {
                println!("error: {i}");
            }
            println!("invalid: {} has {} error(s)", dir.display(), issues.len());
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn policy_test(dir: &Path, input: Option<&Path>, json: bool) -> ExitCode {
    match crate::policy::testing::run(dir, input) {
        Ok(results) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
            } else {
                print!("{}", crate::policy::testing::render(&results));
            }
            if results.iter().all(|r| r.status == "PASS") { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("pullgate-agent policy test: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn explain(id_or_digest: &str, state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let Some(r) = report::find(state_dir, id_or_digest)? else {
        bail!(
            "no decision {id_or_digest:?} in {}; check the id, or --state-dir if the agent uses another",
            state_dir.join(report::LOG_FILE).display()
        );
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report::render(&r));
    }
    Ok(())
}

fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let st = agent_status(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!("agent       pullgate-agent {}", st.agent_version);
    println!("uptime      {}", humantime::format_duration(Duration::from_secs(st.uptime_secs)));
    println!("generation  {}", st.generation.as_deref().unwrap_or("none"));
    println!("mode        {}", st.mode.as_deref().unwrap_or("-"));
    match (&st.config_error, &st.generation) {
        (Some(e), Some(_)) => println!("config      newest REJECTED, last good in force: {e}"),
        (Some(e), None) => println!("config      NONE, every pull gets the failure policy: {e}"),
        (None, _) => {}
    }
    if let Some(c) = &st.coverage {
        println!("coverage    {c}");
    }
    for (k, v) in &st.counters {
        println!("{k:<20}{v}");
    }
    Ok(())
}

/// `doctor`: the node checks, plus the agent's health over its socket.
fn doctor(node: &NodeArgs, socket: &Path, json: bool) -> ExitCode {
    use pullgate_containerd::checks::{Finding, Severity};
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pullgate-agent doctor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let obs = rt.block_on(pullgate_containerd::probe::observe(&node.inputs()));
    let mut findings = obs.findings.clone();
    for i in config::node_hosts_problems(&node.host_root, &node.containerd_config) {
        findings.push(Finding {
            check: "hosts-toml",
            severity: Severity::Warning,
            key: (!i.field.is_empty()).then(|| i.field.clone()),
            file: Some(i.file.into()),
            problem: i.reason,
            fix: "fix the file: until then containerd, and pullgate's signature lookups, skip its mirrors".into(),
        });
    }
    let mut agent = Vec::new();
    let problem = |check, problem: String, fix: &str| Finding {
        check,
        severity: Severity::Error,
        key: None,
        file: None,
        problem,
        fix: fix.into(),
    };
    match agent_status(socket) {
        Ok(st) => {
            agent.push((
                "agent".to_string(),
                format!(
                    "{}: pullgate-agent {}, generation {}, mode {}",
                    socket.display(),
                    st.agent_version,
                    st.generation.as_deref().unwrap_or("none"),
                    st.mode.as_deref().unwrap_or("-")
                ),
            ));
            if st.generation.is_none() {
                findings.push(problem(
                    "agent-config",
                    format!(
                        "the agent has no valid config ({}): every pull gets the verifier's failure policy",
                        st.config_error.unwrap_or_default()
                    ),
                    "fix the config (pullgate-agent check-config DIR) or its ConfigMaps",
                ));
            }
        }
        Err(e) => {
            agent.push(("agent".to_string(), format!("{}: unreachable", socket.display())));
            findings.push(problem(
                "agent",
                format!("{e:#}: every pull gets the verifier's failure policy"),
                "start the agent (kubectl -n pullgate-system get pods), or point --socket at it",
            ));
        }
    }
    findings.sort_by_key(|f| f.severity != Severity::Error);
    let covered = pullgate_containerd::checks::covered(&findings);
    if json {
        let mut v = serde_json::to_value(&obs).unwrap_or_default();
        v["covered"] = serde_json::Value::Bool(covered);
        v["findings"] = serde_json::to_value(&findings).unwrap_or_default();
        v["agent"] = serde_json::Value::String(agent.first().map(|a| a.1.clone()).unwrap_or_default());
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", crate::coverage::render(&obs, &agent, &findings));
    }
    if covered { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Asks the agent at `socket` for its status.
fn agent_status(socket: &Path) -> anyhow::Result<pullgate_wire::StatusResponse> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to the agent at {}; is it running?", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(&Request::Status { version: PROTOCOL_VERSION })?;
    line.push(b'\n');
    s.write_all(&line).context("sending the status request")?;
    let mut answer = Vec::new();
    s.take(pullgate_wire::MAX_RESPONSE_BYTES as u64).read_to_end(&mut answer).context("reading the status")?;
    match serde_json::from_slice::<Response>(&answer).context("the agent's answer is not understood")? {
        Response::Status(st) => Ok(st),
        Response::Error { message } => bail!("the agent refused: {message}"),
        Response::Decision(_) => bail!("the agent answered with a decision, not a status"),
    }
}
