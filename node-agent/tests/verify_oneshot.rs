//! `pullgate-agent verify REF` against a real Debian `docker-registry`
//! holding the Notation fixture layouts: a signed image is allowed by tag
//! and by digest, an unsigned one is denied, and the exit codes separate
//! allow (0), deny (1), other errors (2) and an invalid config (64).

use pullgate_testkit::{Registry, RegistryOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn notation_fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/notation"))
}

/// A config dir verifying every image on `host` with Notation: the fixture
/// `trustpolicy.json` and the `e2e` CA store (under the name the policy uses).
fn config_dir(root: &Path, host: &str) -> PathBuf {
    let dir = root.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pullgate.toml"), pullgate_testkit::notation_config(host, "")).unwrap();
    pullgate_testkit::install_notation_trust(&dir, "trustpolicy.json", "e2e");
    dir
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `pullgate-agent verify ARGS`, bounded in time.
fn verify(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullgate-agent"))
        .arg("verify")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("pullgate-agent verify {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn signed_images_are_allowed_unsigned_denied() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(async {
        let reg = Registry::start(RegistryOptions::default()).await;
        for layout in ["e2e-valid-signature", "e2e-unsigned"] {
            reg.push_layout(layout, &notation_fixtures().join("oci-layouts").join(layout)).await;
        }
        reg
    });
    let root = tempfile::tempdir().unwrap();
    let config = config_dir(root.path(), &reg.host);
    let config = config.to_str().unwrap();
    let signed = format!("{}/e2e-valid-signature", reg.host);

    // By tag: the tag is resolved through the registry to the signed digest.
    let by_tag = format!("{signed}:v1");
    let r = verify(&[&by_tag, "--config-dir", config]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let prefix = format!("pullgate: allowed {by_tag}@{SUBJECT}: scope signed: notation: ");
    assert!(r.stdout.starts_with(&prefix), "{:?} does not start with {prefix:?}", r.stdout);
    assert!(r.stdout.contains("verified") && r.stdout.trim_end().ends_with(')'), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 1, "one line: {}", r.stdout);
    assert!(r.stdout.contains("(report d-"), "{}", r.stdout);

    // By digest, with the report as JSON and the decision log in a given state dir.
    let state = root.path().join("state");
    let r = verify(&[
        &signed,
        "--digest",
        SUBJECT,
        "--config-dir",
        config,
        "--json",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(report["verdict"], "allow", "{report}");
    assert_eq!(report["digest"], SUBJECT);
    assert_eq!(report["mediaType"], MANIFEST);
    assert_eq!(report["size"], 517);
    assert_eq!(report["source"], "verify");
    assert_eq!(report["verification"][0]["verifier"], "notation", "{report}");
    assert_eq!(report["verification"][0]["result"], "pass", "{report}");
    let log = std::fs::read_to_string(state.join("decisions.jsonl")).unwrap();
    assert!(log.contains(report["id"].as_str().unwrap()), "the decision log holds the report");

    // With the whole descriptor given, as containerd gives it: the same verdict.
    let r = verify(&[&signed, "--digest", SUBJECT, "--media-type", MANIFEST, "--size", "517", "--config-dir", config]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with(&format!("pullgate: allowed {signed}@{SUBJECT}: ")), "{}", r.stdout);
    // A wrong size is not verified: the signature covers the descriptor.
    let r = verify(&[&signed, "--digest", SUBJECT, "--media-type", MANIFEST, "--size", "518", "--config-dir", config]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("scope signed: notation: "), "{}", r.stdout);

    // Unsigned: denied.
    let unsigned = format!("{}/e2e-unsigned:v1", reg.host);
    let r = verify(&[&unsigned, "--config-dir", config]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with(&format!("pullgate: denied {unsigned}@sha256:")), "{}", r.stdout);
    assert!(r.stdout.contains("no Notation signature found"), "{}", r.stdout);

    // A tag that does not exist, and a pinned digest that contradicts --digest: errors, exit 2.
    let r = verify(&[&format!("{signed}:v9"), "--config-dir", config]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let other = format!("sha256:{}", "0".repeat(64));
    let r = verify(&[&format!("{signed}@{SUBJECT}"), "--digest", &other, "--config-dir", config]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);

    // An unreachable registry within the timeout: exit 2, not a verdict.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = verify(&[&format!("{closed}/app:v1"), "--config-dir", config, "--timeout", "3s"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);

    // An invalid config: exit 64, nothing fetched.
    let bad = root.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("pullgate.toml"), "defaultAction = \"sometimes\"\n").unwrap();
    let r = verify(&[&by_tag, "--config-dir", bad.to_str().unwrap()]);
    assert_eq!(r.code, Some(64), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("sometimes"), "{}", r.stderr);
}
