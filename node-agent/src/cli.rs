//! The agent's commands: `run`, `check-config`, `explain`, `status`.
//!
//! Exit codes: 0 success, 1 runtime failure, 64 invalid config or usage
//! (in standalone mode the config is validated before anything binds; in
//! Kubernetes mode the agent starts without one and answers with errors, so
//! the verifier's failure policy applies, until a valid config is synced).

use crate::config::{self, ConfigError};
use crate::engine::Engine;
use crate::report::{self, DecisionLog};
use crate::server::{self, ServerOptions};
use crate::sync::kube::{DEFAULT_AUTH_SELECTOR, DEFAULT_CONFIG_SELECTOR, KubeOptions};
use crate::sync::{self, RegistryCredentials, generation::Generations};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pullgate_wire::{DEFAULT_SOCKET_PATH, PROTOCOL_VERSION, Request, Response};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit code for an invalid config or command line.
pub const EXIT_CONFIG: u8 = 64;
/// Default state directory (decision log).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pullgate";

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
        } => {
            init_tracing(log_format);
            let source = match (config_dir, kubernetes) {
                (Some(config_dir), false) => {
                    let loaded = match config::load_dir(&config_dir) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("pullgate-agent: {e}");
                            return ExitCode::from(EXIT_CONFIG);
                        }
                    };
                    for w in &loaded.warnings {
                        tracing::warn!(config = %config_dir.display(), "{w}");
                    }
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
            match run(source, state_dir, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("pullgate-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { dir } => check_config(&dir),
        Command::Explain { id_or_digest, state_dir, json } => edge(explain(&id_or_digest, &state_dir, json)),
        Command::Status { socket, json } => edge(status(&socket, json)),
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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

fn run(source: Source, state_dir: PathBuf, opts: ServerOptions) -> anyhow::Result<()> {
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
    let engine = Arc::new(Engine::new(config_dir, initial, log));
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
        let listener = server::bind(&opts)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let sync_task = match (source, client) {
            (Source::Kubernetes(k), Some(client)) => {
                tokio::spawn(sync::kube::run(client, k, engine.clone(), credentials, rx.clone()))
            }
            (Source::Dir(dir, _), _) => {
                tokio::spawn(sync::watch::run(dir, engine.clone(), sync::watch::DEFAULT_DEBOUNCE, rx.clone()))
            }
            (Source::Kubernetes(_), None) => bail!("no Kubernetes client"),
        };
        let signals = tokio::spawn(handle_signals(engine.clone(), tx));
        server::serve(listener, engine, opts, rx).await;
        // Aborting the signal task drops the shutdown sender: the sync stops too.
        signals.abort();
        if tokio::time::timeout(Duration::from_secs(5), sync_task).await.is_err() {
            tracing::warn!("the config sync did not stop within 5 s");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGTERM / SIGINT start the drain; SIGHUP re-reads the config directory.
async fn handle_signals(engine: Arc<Engine>, shutdown: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
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

fn check_config(dir: &Path) -> ExitCode {
    match config::load_dir(dir) {
        Ok(l) => {
            for w in &l.warnings {
                println!("warning: {w}");
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
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to the agent at {}; is it running?", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(&Request::Status { version: PROTOCOL_VERSION })?;
    line.push(b'\n');
    s.write_all(&line).context("sending the status request")?;
    let mut answer = Vec::new();
    s.take(pullgate_wire::MAX_RESPONSE_BYTES as u64).read_to_end(&mut answer).context("reading the status")?;
    match serde_json::from_slice::<Response>(&answer).context("the agent's answer is not understood")? {
        Response::Status(st) if json => println!("{}", serde_json::to_string_pretty(&st)?),
        Response::Status(st) => {
            println!("agent       pullgate-agent {}", st.agent_version);
            println!("uptime      {}", humantime::format_duration(Duration::from_secs(st.uptime_secs)));
            println!("generation  {}", st.generation.as_deref().unwrap_or("none"));
            println!("mode        {}", st.mode.as_deref().unwrap_or("-"));
            match (&st.config_error, &st.generation) {
                (Some(e), Some(_)) => println!("config      newest REJECTED, last good in force: {e}"),
                (Some(e), None) => println!("config      NONE, every pull gets the failure policy: {e}"),
                (None, _) => {}
            }
            for (k, v) in &st.counters {
                println!("{k:<20}{v}");
            }
        }
        Response::Error { message } => bail!("the agent refused: {message}"),
        Response::Decision(_) => bail!("the agent answered with a decision, not a status"),
    }
    Ok(())
}
