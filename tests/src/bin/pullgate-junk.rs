//! `pullgate-junk`: the junk-storm benchmark (issue 11). A real Debian
//! `docker-registry` holds a clean Notation-signed image (the baseline), a
//! signed image with small junk signatures listed before its valid one, and
//! several unsigned images each with many ~4 MiB junk envelopes claiming the
//! trusted certificate. A release agent verifies each once, through an exec
//! of `pullgate-verifier` as containerd does it. Printed: the state
//! directory's growth, the agent's peak RSS (`VmHWM`) and the time per
//! verification, each as a ratio against the baseline measured in the same
//! run. Prints numbers, judges none.
//!
//! Usage: `pullgate-junk --agent PATH --verifier PATH [--unsigned 4]
//! [--envelopes 10] [--junk 50]`

use pullgate_testkit::{Registry, RegistryOptions, sha256};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const NOTARY: &str = "application/vnd.cncf.notary.signature";
const THUMBPRINT: &str = "io.cncf.notary.x509chain.thumbprint#S256";
const TRUSTED: &str = "e38aea13f2b051f7183cca64a51ee676f4d4456f41d9fecf15eb367efc7343b9";
const MIB: usize = 1024 * 1024;

struct Options {
    agent: PathBuf,
    verifier: PathBuf,
    unsigned: usize,
    envelopes: usize,
    junk: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut take = |k: &str| raw.remove(k).ok_or_else(|| format!("missing --{k}"));
    let num = |k: &str, v: Result<String, String>, d: usize| -> Result<usize, String> {
        v.map_or(Ok(d), |v| v.parse().map_err(|e| format!("--{k} {v:?}: {e}")))
    };
    let o = Options {
        agent: take("agent")?.into(),
        verifier: take("verifier")?.into(),
        unsigned: num("unsigned", take("unsigned"), 4)?,
        envelopes: num("envelopes", take("envelopes"), 10)?,
        junk: num("junk", take("junk"), 50)?,
    };
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    Ok(o)
}

fn layout(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation/oci-layouts")).join(name)
}

/// Bytes that are not a signature, distinct per `seed`.
fn junk_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

/// A junk signature manifest claiming the trusted certificate, with a
/// `len`-byte envelope; returns its tag-schema index entry.
async fn junk_signature(reg: &Registry, repo: &str, seed: u64, len: usize) -> Value {
    let env = reg.push_blob(repo, junk_bytes(seed, len)).await;
    let config = reg.push_blob(repo, b"{}".to_vec()).await;
    let claim = format!("[\"{TRUSTED}\"]");
    let m = json!({
        "schemaVersion": 2, "mediaType": MEDIA_TYPE, "artifactType": NOTARY,
        "config": {"mediaType": NOTARY, "digest": config, "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": env, "size": len}],
        "subject": {"mediaType": MEDIA_TYPE, "digest": SUBJECT, "size": 517},
        "annotations": {THUMBPRINT: claim},
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    let (digest, size) = (sha256(&bytes), bytes.len());
    reg.push_manifest(repo, &digest, MEDIA_TYPE, bytes).await;
    json!({"mediaType": MEDIA_TYPE, "digest": digest, "size": size, "artifactType": NOTARY,
           "annotations": {THUMBPRINT: claim}})
}

/// Replaces `repo`'s tag-schema index with `entries` (then the valid signature when `signed`).
async fn tag_index(reg: &Registry, repo: &str, mut entries: Vec<Value>, signed: bool) {
    if signed {
        let fixture = layout("e2e-valid-signature")
            .join("blobs/sha256/13e107e0dd246f07ff18998a3d39e226965c41477a1bc1765f7617632ff3f283");
        let v: Value = serde_json::from_slice(&std::fs::read(fixture).expect("fixture index")).unwrap();
        entries.push(v["manifests"][0].clone());
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let tag = SUBJECT.replace(':', "-");
    reg.push_manifest(repo, &tag, "application/vnd.oci.image.index.v1+json", serde_json::to_vec(&index).unwrap()).await;
}

/// Pushes the images; returns (name, expected allow) in verification order, baseline first.
async fn push_images(reg: &Registry, o: &Options) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    reg.push_layout("bench/clean", &layout("e2e-valid-signature")).await;
    out.push((format!("{}/bench/clean:v1", reg.host), true));
    reg.push_layout("bench/signed-junk", &layout("e2e-valid-signature")).await;
    let mut entries = Vec::new();
    for i in 0..o.junk {
        entries.push(junk_signature(reg, "bench/signed-junk", i as u64, 1000).await);
    }
    tag_index(reg, "bench/signed-junk", entries, true).await;
    out.push((format!("{}/bench/signed-junk:v1", reg.host), true));
    for u in 0..o.unsigned {
        let repo = format!("bench/unsigned-{u}");
        reg.push_layout(&repo, &layout("e2e-unsigned")).await;
        let mut entries = Vec::new();
        for e in 0..o.envelopes {
            entries.push(junk_signature(reg, &repo, (1000 * (u + 1) + e) as u64, 4 * MIB).await);
        }
        tag_index(reg, &repo, entries, false).await;
        out.push((format!("{}/{repo}:v1", reg.host), false));
    }
    out
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn start_agent(o: &Options, host: &str) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    let uid = nix::unistd::getuid().as_raw();
    let toml = pullgate_testkit::notation_config(host, &format!("allowedUids = [{uid}]\n"));
    std::fs::write(config.join("pullgate.toml"), toml).expect("pullgate.toml");
    pullgate_testkit::install_notation_trust(&config, "trustpolicy.json", "e2e");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let socket = dir.path().join("agent.sock");
    let child = Command::new(&o.agent)
        .args(["run", "--metrics-addr", "off", "--config-dir"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let vc =
        format!("{{\"socket\":{:?},\"deadlineMs\":8000,\"failurePolicy\":\"closed\"}}", socket.display().to_string());
    std::fs::write(dir.path().join("verifier.json"), vc).expect("verifier.json");
    Daemon { child, dir }
}

/// One verification through the verifier: (allowed, its line, exec-to-exit time).
fn verify(o: &Options, d: &Daemon, name: &str) -> (bool, String, Duration) {
    let mut c = Command::new(&o.verifier);
    c.args(["-name", name, "-digest", SUBJECT, "-stdin-media-type", "application/vnd.oci.descriptor.v1+json"])
        .env("PULLGATE_VERIFIER_CONFIG", d.dir.path().join("verifier.json"));
    let stdin = format!("{{\"mediaType\":\"{MEDIA_TYPE}\",\"digest\":\"{SUBJECT}\",\"size\":517}}\n");
    let started = Instant::now();
    let (code, out, _, _) = pullgate_tests::run_bounded(c, stdin.into_bytes());
    (code == Some(0), out.trim_end().to_string(), started.elapsed())
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    n
}

fn hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pullgate-junk: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reg = rt.block_on(Registry::start(RegistryOptions::default()));
    let images = rt.block_on(push_images(&reg, &o));
    let d = start_agent(&o, &reg.host);
    let state = d.dir.path().join("state");
    let start_bytes = dir_bytes(&state);
    let mut results = Vec::new();
    for (i, (name, want)) in images.iter().enumerate() {
        let (allowed, line, took) = verify(&o, &d, name);
        // The growth and peak after the baseline alone, then after each image.
        let grown = dir_bytes(&state).saturating_sub(start_bytes);
        let hwm = hwm_kib(d.child.id());
        if allowed != *want {
            eprintln!("pullgate-junk: unexpected verdict for {name}: {line}");
        }
        results.push((i, name.rsplit('/').next().unwrap_or(name).to_string(), took, grown, hwm, line));
    }
    let (_, _, base_t, base_grown, base_hwm, _) = results[0].clone();
    for (i, name, took, grown, hwm, line) in &results {
        let verdict = if line.starts_with("pullgate: allowed") { "allow" } else { "deny" };
        println!(
            "{i} {name} {verdict} time_ms={:.1} time_ratio={:.2} state_growth_bytes={grown} state_growth_ratio={:.2} vmhwm_kib={hwm} vmhwm_ratio={:.2}",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() / base_t.as_secs_f64().max(1e-9),
            *grown as f64 / (base_grown.max(1)) as f64,
            *hwm as f64 / (base_hwm.max(1)) as f64,
        );
    }
    let pushed = (o.unsigned * o.envelopes * 4 * MIB) as u64;
    let (_, _, _, last_grown, last_hwm, _) = results.last().cloned().expect("results");
    println!(
        "junk_envelope_bytes_pushed={pushed} state_growth_bytes={last_grown} state_growth_ratio={:.2} vmhwm_kib={last_hwm} vmhwm_ratio={:.2}",
        last_grown as f64 / base_grown.max(1) as f64,
        last_hwm as f64 / base_hwm.max(1) as f64
    );
    ExitCode::SUCCESS
}
