//! `pullgate-cluster-bench`: the cluster tier at scale on one machine. A real
//! Debian `redis-server` and a real `docker-registry` holding a
//! Notation-signed image; then, for each N, N agent processes (each with its
//! own state directory and socket) each verify that image once, at the same
//! moment, through an exec of `pullgate-verifier` — once without and once
//! with `[cluster]`. Each cluster run uses a fresh key prefix, so the image
//! is new to Redis as it is to the agents. Registry requests come from the
//! registry's own access log.
//!
//! Prints `registry_requests_nocluster_N=`, `registry_requests_cluster_N=`,
//! p50/p99 verification latency per N and mode, and writes a PNG plot of
//! requests and p50 latency against N. Judges nothing.
//!
//! Usage: `pullgate-cluster-bench --agent PATH --verifier PATH --out DIR [--counts 1,10,50,100]`

use pullgate_testkit::{Registry, RegistryOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

struct Options {
    agent: PathBuf,
    verifier: PathBuf,
    out: PathBuf,
    counts: Vec<usize>,
}

fn parse_options() -> Result<Options, String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut take = |k: &str| raw.remove(k).ok_or_else(|| format!("missing --{k}"));
    let counts = match take("counts") {
        Ok(v) => v
            .split(',')
            .map(|n| n.trim().parse::<usize>().map_err(|e| format!("--counts {v:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        Err(_) => vec![1, 10, 50, 100],
    };
    let o =
        Options { agent: take("agent")?.into(), verifier: take("verifier")?.into(), out: take("out")?.into(), counts };
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    if o.counts.is_empty() || o.counts.iter().any(|&n| n == 0 || n > 500) {
        return Err("--counts must list agent counts in 1..=500".into());
    }
    Ok(o)
}

/// A `redis-server` on a free loopback port, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the script installs the Debian package)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port, _dir: dir }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// A config directory verifying everything on `host` with Notation, plus `cluster`.
fn write_config(dir: &Path, host: &str, cluster: &str) {
    let uid = nix::unistd::getuid().as_raw();
    std::fs::create_dir_all(dir).expect("config dir");
    let toml = pullgate_testkit::notation_config(host, &format!("allowedUids = [{uid}]"));
    std::fs::write(dir.join("pullgate.toml"), format!("{toml}\n{cluster}")).expect("pullgate.toml");
    pullgate_testkit::install_notation_trust(dir, "trustpolicy.json", "e2e");
}

struct Agent {
    child: Child,
    verifier_config: PathBuf,
}

fn start_agents(o: &Options, config: &Path, n: usize, work: &Path) -> Vec<Agent> {
    let agents: Vec<_> = (0..n)
        .map(|i| {
            let dir = work.join(format!("agent-{i}"));
            std::fs::create_dir_all(&dir).expect("agent dir");
            let socket = dir.join("agent.sock");
            let log = std::fs::File::create(dir.join("agent.log")).expect("log");
            let child = Command::new(&o.agent)
                .arg("run")
                .arg("--config-dir")
                .arg(config)
                .arg("--socket")
                .arg(&socket)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .args(["--metrics-addr", "off"])
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start agent");
            let verifier_config = dir.join("verifier.json");
            let json = format!(
                "{{\"socket\":{:?},\"deadlineMs\":20000,\"failurePolicy\":\"closed\"}}",
                socket.display().to_string()
            );
            std::fs::write(&verifier_config, json).expect("verifier config");
            (Agent { child, verifier_config }, socket)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (_, socket) in &agents {
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "an agent did not start ({})", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    agents.into_iter().map(|(a, _)| a).collect()
}

fn stop_agents(agents: Vec<Agent>) {
    for a in &agents {
        let pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    for mut a in agents {
        let _ = a.child.wait();
    }
}

/// Every agent verifies `name` once, all released at the same moment; the
/// latency of each exec and whether it was allowed.
fn verify_all(o: &Options, agents: &[Agent], name: &str) -> Vec<(Duration, bool)> {
    let barrier = Arc::new(Barrier::new(agents.len()));
    let stdin = format!("{{\"mediaType\":\"{MEDIA_TYPE}\",\"digest\":\"{SUBJECT}\",\"size\":517}}\n");
    let workers: Vec<_> = agents
        .iter()
        .map(|a| {
            let (barrier, verifier, config, name, stdin) =
                (barrier.clone(), o.verifier.clone(), a.verifier_config.clone(), name.to_string(), stdin.clone());
            std::thread::spawn(move || {
                let mut cmd = Command::new(verifier);
                cmd.args([
                    "-name",
                    &name,
                    "-digest",
                    SUBJECT,
                    "-stdin-media-type",
                    "application/vnd.oci.descriptor.v1+json",
                ])
                .env("PULLGATE_VERIFIER_CONFIG", config)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
                barrier.wait();
                let started = Instant::now();
                let mut child = cmd.spawn().expect("verifier");
                if let Some(mut i) = child.stdin.take() {
                    let _ = i.write_all(stdin.as_bytes());
                }
                let ok = child.wait().is_ok_and(|s| s.success());
                (started.elapsed(), ok)
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("worker")).collect()
}

fn quiet_count(reg: &Registry) -> usize {
    let mut last = reg.access_count();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = reg.access_count();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// (registry requests, p50 ms, p99 ms) of one run.
type Figures = (usize, f64, f64);
/// N, then the figures without and with `[cluster]`.
type Row = (usize, Figures, Figures);

/// One run: N agents, with or without the tier; (registry requests, p50 ms, p99 ms).
fn run(o: &Options, reg: &Registry, redis: &Redis, n: usize, cluster: bool, run_id: usize) -> Figures {
    let work = tempfile::tempdir().expect("tempdir");
    let table = if cluster {
        format!("[cluster]\nurl = \"redis://127.0.0.1:{}\"\nkeyPrefix = \"bench{run_id}\"\n", redis.port)
    } else {
        String::new()
    };
    write_config(&work.path().join("config"), &reg.host, &table);
    let agents = start_agents(o, &work.path().join("config"), n, work.path());
    let before = quiet_count(reg);
    let results = verify_all(o, &agents, &format!("{}/signed:v1", reg.host));
    let requests = quiet_count(reg) - before;
    stop_agents(agents);
    let denied = results.iter().filter(|(_, ok)| !ok).count();
    if denied > 0 {
        eprintln!("pullgate-cluster-bench: {denied} of {n} verifications were not allowed (cluster={cluster})");
    }
    let mut lat: Vec<Duration> = results.into_iter().map(|(d, _)| d).collect();
    (requests, percentile(&mut lat, 0.50), percentile(&mut lat, 0.99))
}

fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pullgate-cluster-bench: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reg = rt.block_on(async {
        let r = Registry::start(RegistryOptions::default()).await;
        let layout = pullgate_tests::fixtures_dir().join("notation/oci-layouts/e2e-valid-signature");
        r.push_layout("signed", &layout).await;
        r
    });
    let redis = Redis::start();
    let mut rows: Vec<Row> = Vec::new();
    for (i, &n) in o.counts.iter().enumerate() {
        eprintln!("pullgate-cluster-bench: {n} agents, without and with [cluster]");
        let without = run(&o, &reg, &redis, n, false, i);
        let with = run(&o, &reg, &redis, n, true, i);
        println!("registry_requests_nocluster_{n}={}", without.0);
        println!("registry_requests_cluster_{n}={}", with.0);
        println!("latency_nocluster_{n}_p50_ms={:.1} latency_nocluster_{n}_p99_ms={:.1}", without.1, without.2);
        println!("latency_cluster_{n}_p50_ms={:.1} latency_cluster_{n}_p99_ms={:.1}", with.1, with.2);
        rows.push((n, without, with));
    }
    std::fs::create_dir_all(&o.out).expect("out dir");
    let path = o.out.join("cluster-bench.png");
    let series = |f: fn(&Row) -> f64| -> Vec<(f64, f64)> { rows.iter().map(|r| (r.0 as f64, f(r))).collect() };
    let requests = [series(|r| r.1.0 as f64), series(|r| r.2.0 as f64)];
    let latency = [series(|r| r.1.1), series(|r| r.2.1)];
    std::fs::write(&path, png::plot(&[&requests, &latency])).expect("writing the plot");
    println!(
        "plot={} (left: registry requests, right: p50 latency ms; x: agents; blue: without [cluster], red: with)",
        path.display()
    );
    ExitCode::SUCCESS
}

/// A tiny PNG writer for the plot (no plotting or font dependency): panels
/// of line series on a white background, axes in black, a tick at each x.
mod png {
    const W: usize = 480;
    const H: usize = 360;
    const MARGIN: usize = 30;
    const COLOURS: [[u8; 3]; 2] = [[30, 90, 200], [210, 40, 40]];

    /// Panels side by side, each with up to two `(x, y)` series.
    pub fn plot(panels: &[&[Vec<(f64, f64)>; 2]]) -> Vec<u8> {
        let width = W * panels.len();
        let mut img = vec![255u8; width * H * 3];
        for (i, series) in panels.iter().enumerate() {
            panel(&mut img, width, i * W, series);
        }
        encode(&img, width, H)
    }

    fn panel(img: &mut [u8], width: usize, x0: usize, series: &[Vec<(f64, f64)>; 2]) {
        let all = series.iter().flatten();
        let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
        let max_y = all.clone().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let (left, right, top, bottom) = (x0 + MARGIN, x0 + W - MARGIN / 2, MARGIN / 2, H - MARGIN);
        let to_px = |(x, y): (f64, f64)| {
            let px = left as f64 + x / max_x * (right - left) as f64;
            let py = bottom as f64 - y / max_y * (bottom - top) as f64;
            (px.round() as i64, py.round() as i64)
        };
        line(img, width, (left as i64, bottom as i64), (right as i64, bottom as i64), [0, 0, 0]);
        line(img, width, (left as i64, bottom as i64), (left as i64, top as i64), [0, 0, 0]);
        for p in &series[0] {
            let (px, _) = to_px(*p);
            line(img, width, (px, bottom as i64), (px, bottom as i64 + 6), [0, 0, 0]);
        }
        for (s, colour) in series.iter().zip(COLOURS) {
            for w in s.windows(2) {
                line(img, width, to_px(w[0]), to_px(w[1]), colour);
            }
            for p in s {
                let (px, py) = to_px(*p);
                for dx in -3..=3 {
                    for dy in -3..=3 {
                        set(img, width, px + dx, py + dy, colour);
                    }
                }
            }
        }
    }

    fn set(img: &mut [u8], width: usize, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < H {
            let i = (y as usize * width + x as usize) * 3;
            img[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line two pixels wide (Bresenham).
    fn line(img: &mut [u8], width: usize, a: (i64, i64), b: (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((b.0 - a.0).abs(), -(b.1 - a.1).abs());
        let (sx, sy) = (if a.0 < b.0 { 1 } else { -1 }, if a.1 < b.1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (a.0, a.1, dx + dy);
        loop {
            set(img, width, x, y, c);
            set(img, width, x + 1, y, c);
            set(img, width, x, y + 1, c);
            if (x, y) == b {
                return;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// RGB8 PNG: IHDR, one IDAT of zlib stored blocks, IEND.
    fn encode(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
        let mut raw = Vec::with_capacity((width * 3 + 1) * height);
        for row in rgb.chunks(width * 3) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut z = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
        for (i, b) in blocks.iter().enumerate() {
            z.push(u8::from(i + 1 == blocks.len()));
            z.extend_from_slice(&(b.len() as u16).to_le_bytes());
            z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
            z.extend_from_slice(b);
        }
        z.extend_from_slice(&adler32(&raw).to_be_bytes());
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(width as u32).to_be_bytes());
        ihdr.extend_from_slice(&(height as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", z), (b"IEND", Vec::new())] {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(&data);
            out.extend_from_slice(&chunk);
            out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in bytes {
            a = (a + u32::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        (b << 16) | a
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn checksums_match_known_values() {
            assert_eq!(super::crc32(b"IEND"), 0xae42_6082);
            assert_eq!(super::adler32(b"Wikipedia"), 0x11e6_0398);
        }
    }
}
