//! `pullgate-cold`: cold-start cost of one verification, both ways, for the
//! same Notation-signed image on a real Debian `docker-registry`, in one run:
//!
//! * `oneshot_cold_ms`: a fresh `pullgate-agent verify HOST/signed:v1` process
//!   (tag resolution, referrers, signature, verdict), exec to exit;
//! * `daemon_cold_ms`: the first `pullgate-verifier` exec answered by a freshly
//!   started agent (empty decision cache, no connection to the registry yet);
//! * `noop_ms`: exec of a static no-op, the floor both include.
//!
//! Medians over `--runs` (default 21) after one warm-up of each, and their
//! ratio. With `--baseline-agent PATH` (another build, e.g. before a change)
//! both are measured in the same run, interleaved, and printed as
//! `baseline_oneshot_cold_ms=` / `baseline_daemon_cold_ms=` too. Prints
//! numbers, judges none.
//!
//! Usage: `pullgate-cold --agent PATH --verifier PATH --noop PATH [--runs 21] [--baseline-agent PATH]`

use pullgate_testkit::{Registry, RegistryOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const DESCRIPTOR: &str = "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9\",\"size\":517}\n";

struct Options {
    agent: PathBuf,
    verifier: PathBuf,
    noop: PathBuf,
    runs: usize,
    baseline: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut take = |k: &str| raw.remove(k).ok_or_else(|| format!("missing --{k}"));
    let o = Options {
        agent: take("agent")?.into(),
        verifier: take("verifier")?.into(),
        noop: take("noop")?.into(),
        runs: match take("runs") {
            Ok(v) => v.parse().map_err(|e| format!("--runs {v:?}: {e}"))?,
            Err(_) => 21,
        },
        baseline: take("baseline-agent").ok().map(PathBuf::from),
    };
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    Ok(o)
}

/// Execs `cmd` with `stdin`; the time from spawn to exit, and whether it exited 0.
fn timed(mut cmd: Command, stdin: &[u8]) -> (Duration, bool) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    (started.elapsed(), ok)
}

fn oneshot(agent: &Path, host: &str, config: &Path) -> Duration {
    let mut c = Command::new(agent);
    c.args(["verify", &format!("{host}/signed:v1")]).arg("--config-dir").arg(config);
    let (t, ok) = timed(c, b"");
    assert!(ok, "the one-shot verify did not allow the signed image");
    t
}

/// Starts an agent, waits for its socket, times its first verification.
fn daemon(o: &Options, agent: &Path, host: &str, config: &Path) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let mut child = Command::new(agent)
        .arg("run")
        .arg("--config-dir")
        .arg(config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--metrics-addr", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let vc = dir.path().join("verifier.json");
    let json =
        format!("{{\"socket\":{:?},\"deadlineMs\":8000,\"failurePolicy\":\"closed\"}}", socket.display().to_string());
    std::fs::write(&vc, json).expect("verifier config");
    let mut c = Command::new(&o.verifier);
    c.args(["-name", &format!("{host}/signed:v1"), "-digest", SUBJECT])
        .args(["-stdin-media-type", "application/vnd.oci.descriptor.v1+json"])
        .env("PULLGATE_VERIFIER_CONFIG", &vc);
    let (t, ok) = timed(c, DESCRIPTOR.as_bytes());
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    assert!(ok, "the daemon did not allow the signed image");
    t
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pullgate-cold: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fixtures = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation"));
    let reg = rt.block_on(async {
        let r = Registry::start(RegistryOptions::default()).await;
        r.push_layout("signed", &fixtures.join("oci-layouts/e2e-valid-signature")).await;
        r
    });
    let config = tempfile::tempdir().expect("tempdir");
    let uid = nix::unistd::getuid().as_raw();
    let toml = pullgate_testkit::notation_config(&reg.host, &format!("allowedUids = [{uid}]\n"));
    std::fs::write(config.path().join("pullgate.toml"), toml).expect("pullgate.toml");
    pullgate_testkit::install_notation_trust(config.path(), "trustpolicy.json", "e2e");

    eprintln!("pullgate-cold: 1 warm-up of each, then {} measured runs, interleaved", o.runs);
    let mut agents = vec![("", o.agent.clone())];
    if let Some(b) = &o.baseline {
        agents.push(("baseline_", b.clone()));
    }
    let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = vec![(Vec::new(), Vec::new()); agents.len()];
    let mut noop = Vec::new();
    for round in 0..=o.runs.max(1) {
        noop.push(timed(Command::new(&o.noop), b"").0);
        for (i, (_, agent)) in agents.iter().enumerate() {
            let (one, dae) = (oneshot(agent, &reg.host, config.path()), daemon(&o, agent, &reg.host, config.path()));
            if round > 0 {
                times[i].0.push(one);
                times[i].1.push(dae);
            }
        }
    }
    println!("noop_ms={:.2}", median_ms(noop));
    for ((prefix, _), (one, dae)) in agents.iter().zip(times) {
        let (one, dae) = (median_ms(one), median_ms(dae));
        println!("{prefix}oneshot_cold_ms={one:.2}");
        println!("{prefix}daemon_cold_ms={dae:.2}");
        println!("{prefix}ratio={:.2}", one / dae);
    }
    ExitCode::SUCCESS
}
