//! `pullgate-storm`: the pull-storm benchmark. A real Debian `docker-registry`
//! holds a Notation-signed image and an unsigned one; registry requests are
//! counted from the registry's own access log.
//!
//! The trace: 100 pulls of the signed image at concurrency 16, then a
//! kubelet-style retry series for the unsigned one (10 s, 20 s, 40 s … back-off,
//! compressed 1000×). It is run (a) as a one-shot `pullgate-agent verify` per
//! pull — the proof-of-concept's design, nothing shared between pulls — and
//! (b) through a running agent, each pull an exec of `pullgate-verifier` as
//! containerd does it. One warm-up run of each is excluded; the measured runs
//! report medians. Then the agent is filled with 100k cached decisions and
//! its RSS read from /proc. Prints numbers, judges none.
//!
//! Usage: `pullgate-storm --agent PATH --verifier PATH --noop PATH
//! [--pulls 100] [--concurrency 16] [--retries 8] [--runs 3] [--fill 100000]`

use pullgate_testkit::{Registry, RegistryOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const SIZE: &str = "517";

struct Options {
    agent: PathBuf,
    verifier: PathBuf,
    noop: PathBuf,
    pulls: usize,
    concurrency: usize,
    retries: u32,
    runs: usize,
    fill: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut take = |k: &str| raw.remove(k).ok_or_else(|| format!("missing --{k}"));
    let num = |k: &str, v: Result<String, String>, d: u64| -> Result<u64, String> {
        match v {
            Ok(v) => v.parse().map_err(|e| format!("--{k} {v:?}: {e}")),
            Err(_) => Ok(d),
        }
    };
    let o = Options {
        agent: take("agent")?.into(),
        verifier: take("verifier")?.into(),
        noop: take("noop")?.into(),
        pulls: num("pulls", take("pulls"), 100)? as usize,
        concurrency: num("concurrency", take("concurrency"), 16)?.max(1) as usize,
        retries: num("retries", take("retries"), 8)? as u32,
        runs: num("runs", take("runs"), 3)?.max(1) as usize,
        fill: num("fill", take("fill"), 100_000)?,
    };
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    Ok(o)
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation"))
}

/// A config directory verifying everything on `host` with Notation, plus an
/// allow scope used to fill the cache.
fn write_config(dir: &Path, host: &str) {
    let uid = nix::unistd::getuid().as_raw();
    let extra = format!(
        "allowedUids = [{uid}]\n[[scopes]]\nname = \"bench-fill\"\nimages = [\"bench.local/**\"]\naction = \"allow\"\n"
    );
    std::fs::create_dir_all(dir).expect("config dir");
    std::fs::write(dir.join("pullgate.toml"), pullgate_testkit::notation_config(host, &extra)).expect("pullgate.toml");
    pullgate_testkit::install_notation_trust(dir, "trustpolicy.json", "e2e");
}

fn quiet_count(reg: &Registry) -> usize {
    let mut last = reg.access_count();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = reg.access_count();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Runs `n` commands built by `make`, `concurrency` at a time; returns each latency.
fn run_parallel(
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn() -> (Command, Vec<u8>) + Send + Sync>,
) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, make) = (next.clone(), make.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let (cmd, stdin) = make();
                    lat.push(exec(cmd, &stdin));
                }
                lat
            })
        })
        .collect();
    workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
}

/// Execs a command with `stdin`, reads its stdout; returns exec-to-exit time.
fn exec(mut cmd: Command, stdin: &[u8]) -> Duration {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let _ = child.wait_with_output();
    started.elapsed()
}

fn descriptor_json() -> Vec<u8> {
    format!("{{\"mediaType\":\"{MEDIA_TYPE}\",\"digest\":\"{SUBJECT}\",\"size\":{SIZE}}}\n").into_bytes()
}

struct Trace {
    storm_requests: usize,
    retry_requests: usize,
    latencies: Vec<Duration>,
}

/// The trace run as one `pullgate-agent verify` per pull.
fn oneshot_trace(o: &Options, reg: &Registry, config: &Path) -> Trace {
    let before = quiet_count(reg);
    let (agent, cfg, host) = (o.agent.clone(), config.to_path_buf(), reg.host.clone());
    let make = move |repo: &str| {
        let mut c = Command::new(&agent);
        c.args([
            "verify",
            &format!("{host}/{repo}:v1"),
            "--digest",
            SUBJECT,
            "--media-type",
            MEDIA_TYPE,
            "--size",
            SIZE,
        ])
        .arg("--config-dir")
        .arg(&cfg);
        (c, Vec::new())
    };
    let m = make.clone();
    let mut latencies = run_parallel(o.pulls, o.concurrency, Arc::new(move || m("signed")));
    let storm_requests = quiet_count(reg) - before;
    let before = quiet_count(reg);
    for k in 0..o.retries {
        std::thread::sleep(backoff(k));
        let (c, s) = make("unsigned");
        latencies.push(exec(c, &s));
    }
    Trace { storm_requests, retry_requests: quiet_count(reg) - before, latencies }
}

/// kubelet's image pull back-off (10 s doubling, capped at 300 s), compressed 1000×.
fn backoff(k: u32) -> Duration {
    Duration::from_millis((10u64 << k.min(5)).min(300))
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    verifier_config: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start_daemon(o: &Options, config: &Path) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = Command::new(&o.agent)
        .arg("run")
        .arg("--config-dir")
        .arg(config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--metrics-addr", "off"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let verifier_config = dir.path().join("verifier.json");
    std::fs::write(
        &verifier_config,
        format!("{{\"socket\":{:?},\"deadlineMs\":8000,\"failurePolicy\":\"closed\"}}", socket.display().to_string()),
    )
    .expect("verifier config");
    Daemon { child, socket, _dir: dir, verifier_config }
}

fn verifier_cmd(o: &Options, d: &Daemon, name: &str) -> Command {
    let mut c = Command::new(&o.verifier);
    c.args(["-name", name, "-digest", SUBJECT, "-stdin-media-type", "application/vnd.oci.descriptor.v1+json"])
        .env("PULLGATE_VERIFIER_CONFIG", &d.verifier_config);
    c
}

/// The trace run through a fresh daemon, each pull an exec of the verifier.
fn daemon_trace(o: &Options, reg: &Registry, config: &Path) -> (Trace, Daemon) {
    let d = start_daemon(o, config);
    let before = quiet_count(reg);
    let name = format!("{}/signed:v1", reg.host);
    let (verifier, vc) = (o.verifier.clone(), d.verifier_config.clone());
    let make = move || {
        let mut c = Command::new(&verifier);
        c.args(["-name", &name, "-digest", SUBJECT, "-stdin-media-type", "application/vnd.oci.descriptor.v1+json"])
            .env("PULLGATE_VERIFIER_CONFIG", &vc);
        (c, descriptor_json())
    };
    let mut latencies = run_parallel(o.pulls, o.concurrency, Arc::new(make));
    let storm_requests = quiet_count(reg) - before;
    let before = quiet_count(reg);
    let unsigned = format!("{}/unsigned:v1", reg.host);
    for k in 0..o.retries {
        std::thread::sleep(backoff(k));
        latencies.push(exec(verifier_cmd(o, &d, &unsigned), &descriptor_json()));
    }
    (Trace { storm_requests, retry_requests: quiet_count(reg) - before, latencies }, d)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `n` distinct allow decisions through the socket, 8 clients at a time.
fn fill(socket: &Path, n: u64) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (next, socket) = (next.clone(), socket.to_path_buf());
            std::thread::spawn(move || {
                use std::io::Read;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let digest = format!("sha256:{i:064x}");
                    let req = format!(
                        "{{\"op\":\"verify\",\"version\":1,\"reference\":\"bench.local/fill/app:{i}\",\"digest\":\"{digest}\",\"descriptor\":{{\"mediaType\":\"{MEDIA_TYPE}\",\"digest\":\"{digest}\",\"size\":1}},\"deadlineMs\":5000}}\n"
                    );
                    let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
                    s.write_all(req.as_bytes()).expect("write");
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("fill worker");
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pullgate-storm: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reg = rt.block_on(async {
        let r = Registry::start(RegistryOptions::default()).await;
        r.push_layout("signed", &fixtures().join("oci-layouts/e2e-valid-signature")).await;
        r.push_layout("unsigned", &fixtures().join("oci-layouts/e2e-unsigned")).await;
        r
    });
    let config = tempfile::tempdir().expect("tempdir");
    write_config(config.path(), &reg.host);

    // One verification on its own: the floor for the daemon's storm.
    let single = {
        let before = quiet_count(&reg);
        let mut c = Command::new(&o.agent);
        c.args([
            "verify",
            &format!("{}/signed:v1", reg.host),
            "--digest",
            SUBJECT,
            "--media-type",
            MEDIA_TYPE,
            "--size",
            SIZE,
        ])
        .arg("--config-dir")
        .arg(config.path());
        exec(c, b"");
        quiet_count(&reg) - before
    };

    eprintln!("pullgate-storm: 1 warm-up run of each mode (excluded), then {} measured runs", o.runs);
    let _ = oneshot_trace(&o, &reg, config.path());
    let _ = daemon_trace(&o, &reg, config.path());
    let mut one = Vec::new();
    let mut dae = Vec::new();
    let mut last_daemon = None;
    for _ in 0..o.runs {
        one.push(oneshot_trace(&o, &reg, config.path()));
        let (t, d) = daemon_trace(&o, &reg, config.path());
        dae.push(t);
        last_daemon = Some(d);
    }
    let med_count = |v: &[Trace], f: fn(&Trace) -> usize| median(v.iter().map(|t| f(t) as f64).collect()) as usize;
    let med_pct = |v: &mut [Trace], p: f64| median(v.iter_mut().map(|t| ms(percentile(&mut t.latencies, p))).collect());

    let d = last_daemon.expect("a daemon run");
    // Cache-hit exec latency against a no-op exec, alternating, medians.
    let signed = format!("{}/signed:v1", reg.host);
    let (mut hit, mut noop) = (Vec::new(), Vec::new());
    for i in 0..1050 {
        let h = exec(verifier_cmd(&o, &d, &signed), &descriptor_json());
        let n = exec(Command::new(&o.noop), &descriptor_json());
        if i >= 50 {
            hit.push(h.as_secs_f64() * 1e6);
            noop.push(n.as_secs_f64() * 1e6);
        }
    }
    let (hit_us, noop_us) = (median(hit), median(noop));

    fill(&d.socket, o.fill);
    let rss = rss_mib(d.child.id());

    let total_one: usize = med_count(&one, |t| t.storm_requests + t.retry_requests);
    let total_dae: usize = med_count(&dae, |t| t.storm_requests + t.retry_requests);
    println!(
        "storm_pulls={} storm_concurrency={} unsigned_retries={} measured_runs={} warmup_runs=1",
        o.pulls, o.concurrency, o.retries, o.runs
    );
    println!("registry_requests_single_verification={single}");
    println!("registry_requests_oneshot={}", med_count(&one, |t| t.storm_requests));
    println!("registry_requests_daemon={}", med_count(&dae, |t| t.storm_requests));
    println!("retry_requests_oneshot={}", med_count(&one, |t| t.retry_requests));
    println!("retry_requests_daemon={}", med_count(&dae, |t| t.retry_requests));
    println!("oneshot_p50_ms={:.2} oneshot_p99_ms={:.2}", med_pct(&mut one, 0.50), med_pct(&mut one, 0.99));
    println!("daemon_p50_ms={:.2} daemon_p99_ms={:.2}", med_pct(&mut dae, 0.50), med_pct(&mut dae, 0.99));
    println!("verifier_cache_hit_us={hit_us:.0} exec_noop_us={noop_us:.0} cache_hit_ratio={:.2}", hit_us / noop_us);
    println!("rss_100k_mib={rss:.1} (after {} cached decisions)", o.fill);
    println!("request_ratio={:.1}", total_one as f64 / (total_dae.max(1)) as f64);
    ExitCode::SUCCESS
}
