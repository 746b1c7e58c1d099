//! `pullgate-bench`: times exec-to-exit of a static no-op binary and of
//! `pullgate-verifier` answering from the agent's allowlist, the way
//! containerd runs a verifier (argv, descriptor JSON on stdin, stdout read).
//!
//! Both are spawned with `std::process::Command` with the same pipes and the
//! same stdin bytes, so the harness's own overhead is equal. Runs alternate
//! (no-op, verifier, no-op, …) so drift in machine load hits both alike.
//! Warm-up runs are excluded. Prints medians; never judges them.
//!
//! Usage: `pullgate-bench --noop PATH --verifier PATH --verifier-config PATH
//! --name REF --digest DIGEST --media-type TYPE --size N [--runs 1000] [--warmup 50]`

use pullgate_wire::Descriptor;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Command-line options.
struct Options {
    noop: PathBuf,
    verifier: PathBuf,
    verifier_config: PathBuf,
    name: String,
    digest: String,
    media_type: String,
    size: u64,
    runs: usize,
    warmup: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut take = |k: &str| raw.remove(k).ok_or_else(|| format!("missing --{k}"));
    let number = |k: &str, v: String| v.parse::<u64>().map_err(|e| format!("--{k} {v:?}: {e}"));
    let opts = Options {
        noop: take("noop")?.into(),
        verifier: take("verifier")?.into(),
        verifier_config: take("verifier-config")?.into(),
        name: take("name")?,
        digest: take("digest")?,
        media_type: take("media-type")?,
        size: number("size", take("size")?)?,
        runs: number("runs", take("runs").unwrap_or_else(|_| "1000".into()))? as usize,
        warmup: number("warmup", take("warmup").unwrap_or_else(|_| "50".into()))? as usize,
    };
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    if opts.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(opts)
}

/// One exec: spawn, write stdin, read stdout, wait. Returns the time taken,
/// the exit code and stdout.
fn exec(cmd: &mut Command, stdin: &[u8]) -> Result<(Duration, Option<i32>, Vec<u8>), String> {
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        // The no-op exits without reading: a broken pipe is expected there.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    Ok((started.elapsed(), out.status.code(), out.stdout))
}

fn median_us(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    let n = samples.len();
    let mid = if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2 };
    mid.as_secs_f64() * 1e6
}

fn run(o: &Options) -> Result<(), String> {
    let descriptor = Descriptor { media_type: o.media_type.clone(), digest: o.digest.clone(), size: o.size };
    let stdin = pullgate_tests::descriptor_stdin(&descriptor);
    let args = pullgate_tests::containerd_args(&o.name, &o.digest);
    let command = |path: &PathBuf| {
        let mut c = Command::new(path);
        c.args(&args)
            .env(pullgate_wire::CONFIG_PATH_ENV, &o.verifier_config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    let (mut noop, mut verifier) = (command(&o.noop), command(&o.verifier));
    let verifier_bytes =
        std::fs::metadata(&o.verifier).map_err(|e| format!("reading {}: {e}", o.verifier.display()))?.len();

    let mut noop_times = Vec::with_capacity(o.runs);
    let mut verifier_times = Vec::with_capacity(o.runs);
    for i in 0..o.warmup + o.runs {
        let (t, code, _) = exec(&mut noop, &stdin)?;
        if code != Some(0) {
            return Err(format!("the no-op {} exited with {code:?}", o.noop.display()));
        }
        let (v, code, out) = exec(&mut verifier, &stdin)?;
        let line = String::from_utf8_lossy(&out);
        // Only an allow from the agent's allowlist is the path being measured.
        if code != Some(0) || !line.starts_with("pullgate: allowed ") || !line.contains(": allowlist entry ") {
            return Err(format!(
                "run {i}: the verifier did not answer from the agent's allowlist (exit {code:?}): {line}"
            ));
        }
        if i >= o.warmup {
            noop_times.push(t);
            verifier_times.push(v);
        }
    }
    let noop_us = median_us(&mut noop_times);
    let verifier_us = median_us(&mut verifier_times);
    println!(
        "# {} timed runs of each, alternating, after {} warm-up runs of each (excluded); spawn to exit through \
         std::process::Command with the descriptor on stdin; medians",
        o.runs, o.warmup
    );
    println!("exec_noop_us={noop_us:.1}");
    println!("verifier_allowlisted_us={verifier_us:.1}");
    println!("verifier_bytes={verifier_bytes}");
    println!("ratio={:.2}", verifier_us / noop_us);
    Ok(())
}

fn main() -> ExitCode {
    match parse_options().and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pullgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
