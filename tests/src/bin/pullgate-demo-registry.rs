//! `pullgate-demo-registry`: the registry `scripts/demo` pulls against. Starts
//! Debian's `docker-registry` on a free 127.0.0.1 port and fills it with real
//! signed and unsigned images from the shared fixtures:
//!
//! * `notation/signed:v1`   — Notation-signed (JWS, referrers tag schema),
//! * `notation/unsigned:v1` — the same image, no signature,
//! * a cosign key-based signature for the cosign fixture image, attached as
//!   `cosign/signed:sha256-<digest>.sig` the way cosign does.
//!
//! Prints `host=127.0.0.1:PORT` and `cosign_digest=…` on stdout, then keeps
//! the registry running until its stdin closes (or it is killed).
//!
//! Usage: `pullgate-demo-registry --fixtures DIR`

use pullgate_testkit::{Registry, RegistryOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fixtures = match args.as_slice() {
        [flag, dir] if flag == "--fixtures" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: pullgate-demo-registry --fixtures DIR");
            return ExitCode::from(64);
        }
    };
    if !fixtures.join("notation/oci-layouts").is_dir() || !fixtures.join("cosign/key-valid").is_dir() {
        eprintln!("pullgate-demo-registry: {} does not hold the notation and cosign fixtures", fixtures.display());
        return ExitCode::from(66);
    }
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let cosign_case = fixtures.join("cosign/key-valid");
    let (reg, cosign_digest) = rt.block_on(async {
        let reg = Registry::start(RegistryOptions::default()).await;
        let layouts = fixtures.join("notation/oci-layouts");
        reg.push_layout("notation/signed", &layouts.join("e2e-valid-signature")).await;
        reg.push_layout("notation/unsigned", &layouts.join("e2e-unsigned")).await;
        let digest = reg.attach_cosign_signature("cosign/signed", &cosign_case).await;
        (reg, digest)
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "host={}", reg.host);
    let _ = writeln!(out, "cosign_digest={cosign_digest}");
    let _ = out.flush();
    drop(out);
    // Serve until the demo closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(reg);
    ExitCode::SUCCESS
}
