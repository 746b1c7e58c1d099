//! `pullgate-install`: the node installer (see the library docs). Thin: flags,
//! then [`pullgate_install::install`] / [`pullgate_install::uninstall`], one line per
//! change on stdout, warnings and errors on stderr. Exit 0 done, 3 refused (settings
//! that bypass verifiers), 64 bad input, 1 anything else.

use clap::{Parser, Subcommand};
use pullgate_containerd::HostRoot;
use pullgate_install::{Options, Report, UninstallOptions};
use pullgate_wire::FailurePolicy;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pullgate-install",
    version,
    about = "Install pullgate's verifier into containerd on this node, or take it off again"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Where the host's root filesystem is mounted (the DaemonSet mounts it at /host).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// containerd's main config file (host path).
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    /// Command that restarts containerd (words split on whitespace, no shell). Default:
    /// enter PID 1's namespaces and run `systemctl restart containerd`.
    #[arg(long)]
    restart_command: Option<String>,
    /// containerd's socket (host path); default: grpc.address from its config.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// How long to wait for containerd to answer after a restart.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait_timeout: Duration,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install (or update) pullgate on this node; a second run changes nothing.
    Install {
        #[command(flatten)]
        common: Common,
        /// The pullgate-verifier binary to install.
        #[arg(long)]
        verifier_binary: Option<PathBuf>,
        /// Its file name in bin_dir (default 00-pullgate-verifier, which sorts first).
        #[arg(long)]
        verifier_name: Option<String>,
        /// The verifier's config file (host path).
        #[arg(long, default_value = pullgate_wire::DEFAULT_CONFIG_PATH)]
        verifier_config: PathBuf,
        /// The agent socket the verifier connects to.
        #[arg(long, default_value = pullgate_wire::DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
        /// What the verifier answers when the agent cannot: open or closed.
        #[arg(long, default_value = "closed", value_parser = parse_policy)]
        failure_policy: FailurePolicy,
        /// The agent's own image, pinned by digest (NAME@sha256:…), always allowed so the agent can restart.
        #[arg(long)]
        agent_image: Option<String>,
        /// More images always allowed without asking the agent (repeatable).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// Rewrite settings that make CRI pulls skip verifiers instead of refusing.
        #[arg(long)]
        fix: bool,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore containerd's config byte for byte and remove pullgate's files.
    Uninstall {
        #[command(flatten)]
        common: Common,
        /// The verifier's config file (host path); the install record is beside it.
        #[arg(long, default_value = pullgate_wire::DEFAULT_CONFIG_PATH)]
        verifier_config: PathBuf,
        /// Restore even files that changed since the install (those changes are lost).
        #[arg(long)]
        force: bool,
    },
    /// Run a command in the namespaces of the host's PID 1 (used by the default restart).
    #[command(hide = true)]
    HostExec {
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

fn parse_policy(s: &str) -> Result<FailurePolicy, String> {
    match s {
        "open" => Ok(FailurePolicy::Open),
        "closed" => Ok(FailurePolicy::Closed),
        _ => Err(format!("{s:?} is not open or closed")),
    }
}

fn restart_argv(c: &Common) -> Vec<String> {
    match &c.restart_command {
        Some(cmd) => cmd.split_whitespace().map(str::to_string).collect(),
        None => pullgate_install::restart::default_command(),
    }
}

fn print(report: &Report) {
    for c in &report.changes {
        println!("{c}");
    }
    if report.changes.is_empty() {
        println!("nothing to change");
    }
    println!(
        "{}",
        if report.restarted {
            "containerd restarted and answering"
        } else {
            "containerd not restarted (its config did not change)"
        }
    );
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
}

fn main() {
    let cli = Cli::parse();
    // host-exec must call setns before any thread exists: no runtime for it.
    if let Cmd::HostExec { argv } = &cli.command {
        match pullgate_install::restart::host_exec(argv) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("pullgate-install host-exec: {e}");
                std::process::exit(1);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Install {
                common,
                verifier_binary,
                verifier_name,
                verifier_config,
                socket,
                failure_policy,
                agent_image,
                bootstrap,
                fix,
                dry_run,
            } => {
                let verifier_binary = verifier_binary.unwrap_or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .and_then(|p| p.parent().map(|d| d.join("pullgate-verifier")))
                        .unwrap_or_else(|| "pullgate-verifier".into())
                });
                let opts = Options {
                    host_root: HostRoot::new(&common.host_root),
                    containerd_config: common.containerd_config.clone(),
                    verifier_binary,
                    verifier_name,
                    verifier_config,
                    socket,
                    failure_policy,
                    agent_image,
                    bootstrap,
                    fix,
                    restart_command: restart_argv(&common),
                    containerd_socket: common.containerd_socket.clone(),
                    wait_timeout: common.wait_timeout,
                    dry_run,
                };
                pullgate_install::install(&opts).await
            }
            Cmd::Uninstall { common, verifier_config, force } => {
                let opts = UninstallOptions {
                    host_root: HostRoot::new(&common.host_root),
                    containerd_config: common.containerd_config.clone(),
                    verifier_config,
                    force,
                    restart_command: restart_argv(&common),
                    containerd_socket: common.containerd_socket.clone(),
                    wait_timeout: common.wait_timeout,
                };
                pullgate_install::uninstall(&opts).await
            }
            Cmd::HostExec { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(report) => print(&report),
        Err(e) => {
            eprintln!("pullgate-install: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
