//! `pullgate-sbom-bench`: how long `pullgate-sbom` takes to parse and
//! evaluate the largest SBOM fixture (syft's SPDX 2.3 output for the fixture
//! image), against the floor of parsing the same bytes into a plain
//! `serde_json::Value`, measured alternately in the same run.
//!
//! Prints `sbom_parse_eval_median_us=`, `json_value_median_us=` and
//! `ratio=` (parse+evaluate over plain JSON); never judges them.
//!
//! Usage: `pullgate-sbom-bench [--runs 2000] [--warmup 200]`

use pullgate_sbom::license::LicenseMatcher;
use pullgate_sbom::purl::Purl;
use pullgate_sbom::rules::{PackageMatch, PackageRule};
use pullgate_sbom::{SbomKind, SbomRules};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FIXTURE: &str = "sbom/image.syft.spdx.json";

fn rules() -> Result<SbomRules, String> {
    let licence = |s: &str| LicenseMatcher::parse(s).map_err(|e| e.to_string());
    let purl = Purl::parse("pkg:deb/debian/openssl").map_err(|e| e.to_string())?;
    let package =
        PackageRule::new(PackageMatch::Purl(purl), Some("< 3.0.19-1~deb12u3"), None).map_err(|e| e.to_string())?;
    Ok(SbomRules {
        deny_licenses: vec![licence("GPL-1.0-only")?, licence("AGPL-3.0-only")?],
        deny_packages: vec![package],
        ..SbomRules::default()
    })
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn run() -> Result<(), String> {
    let mut raw = pullgate_tests::long_flags(std::env::args().skip(1))?;
    let mut number = |k: &str, default: usize| match raw.remove(k) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|e| format!("--{k} {v:?}: {e}")),
    };
    let (runs, warmup) = (number("runs", 2000)?, number("warmup", 200)?);
    if let Some(k) = raw.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    let path = pullgate_tests::fixtures_dir().join(FIXTURE);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rules = rules()?;
    let (mut ours, mut plain) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut denied = 0usize;
    for i in 0..runs + warmup {
        let t = Instant::now();
        let sbom = pullgate_sbom::parse_sbom(&bytes, Some(SbomKind::Spdx), bytes.len()).map_err(|e| e.to_string())?;
        let d = rules.evaluate(&sbom, 20);
        let ours_t = t.elapsed();
        denied += usize::from(!d.allowed);
        let t = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let plain_t = t.elapsed();
        std::hint::black_box(v);
        if i >= warmup {
            ours.push(ours_t);
            plain.push(plain_t);
        }
    }
    let (o, p) = (median(ours), median(plain));
    println!("fixture={FIXTURE} bytes={} runs={runs} warmup={warmup} denied={denied}", bytes.len());
    println!("sbom_parse_eval_median_us={o:.1}");
    println!("json_value_median_us={p:.1}");
    println!("ratio={:.2}", o / p);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pullgate-sbom-bench: {e}");
            ExitCode::from(2)
        }
    }
}
