//! Issue 9 against the real containerd v2.2.7 in `../shared/containerd`: the
//! installer puts pullgate on a throw-away containerd, signed pulls are allowed and
//! unsigned ones denied through `ctr` (transfer service) and CRI `PullImage` (as
//! kubelet pulls), doctor passes; then each CRI local-pull trigger in turn really
//! bypasses the verifier, doctor names it, the agent's coverage gauge drops to 0,
//! `install` refuses it and `install --fix` restores coverage. Uninstall restores
//! containerd's config byte for byte and pulls no longer reach pullgate.
//!
//! Skipped with a printed reason where containerd cannot run (not root, no binary).

use pullgate_testkit::containerd::{self, Containerd};
use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, notation_config};
use pullgate_tests::{AgentFiles, bin, fixtures_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A node: registry with a signed and an unsigned image, an agent, a containerd.
struct Node {
    _rt: tokio::runtime::Runtime,
    reg: Registry,
    agent: pullgate_tests::Agent,
    ctd: Containerd,
    verifier_json: PathBuf,
    metrics: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Node {
    fn start() -> Node {
        Node::start_with(&[])
    }

    fn start_with(extra_agent_args: &[&str]) -> Node {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let reg = rt.block_on(async {
            let reg = Registry::start(RegistryOptions::default()).await;
            let layouts = fixtures_dir().join("notation/oci-layouts");
            reg.push_layout("signed", &layouts.join("e2e-valid-signature")).await;
            reg.push_layout("unsigned", &layouts.join("e2e-unsigned")).await;
            reg
        });
        let mut ctd = Containerd::prepare();
        ctd.trust_plain_http(&reg.host);
        let verifier_json = ctd.root().join("etc-pullgate/verifier.json");
        ctd.env.push(("PULLGATE_VERIFIER_CONFIG".into(), verifier_json.display().to_string()));
        ctd.adopt_external();
        let files = AgentFiles::new(&notation_config(&reg.host, ""));
        install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
        let metrics = format!("127.0.0.1:{}", free_port());
        let args = [
            "--metrics-addr".to_string(),
            metrics.clone(),
            "--containerd-config".into(),
            ctd.config.display().to_string(),
            "--containerd-bin".into(),
            ctd.tool("containerd").display().to_string(),
            "--verifier-config".into(),
            verifier_json.display().to_string(),
            "--coverage-interval".into(),
            "1s".into(),
        ];
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra_agent_args);
        let agent = files.start(&all);
        Node { _rt: rt, reg, agent, ctd, verifier_json, metrics }
    }

    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}:v1", self.reg.host)
    }

    fn installer(&self, args: &[&str]) -> Output {
        Command::new(bin("pullgate-install"))
            .args(args)
            .arg("--containerd-config")
            .arg(&self.ctd.config)
            .arg("--restart-command")
            .arg(self.ctd.restart_script())
            .arg("--wait-timeout")
            .arg("20s")
            .output()
            .expect("run pullgate-install")
    }

    fn install(&self, extra: &[&str]) -> Output {
        let socket = self.agent.socket.display().to_string();
        let verifier = bin("pullgate-verifier").display().to_string();
        let json = self.verifier_json.display().to_string();
        let mut args = vec!["install", "--verifier-binary", &verifier, "--verifier-config", &json, "--socket", &socket];
        args.extend_from_slice(extra);
        self.installer(&args)
    }

    fn doctor(&self) -> Output {
        Command::new(bin("pullgate-agent"))
            .arg("doctor")
            .arg("--containerd-config")
            .arg(&self.ctd.config)
            .arg("--containerd-bin")
            .arg(self.ctd.tool("containerd"))
            .arg("--verifier-config")
            .arg(&self.verifier_json)
            .arg("--socket")
            .arg(&self.agent.socket)
            .output()
            .expect("run doctor")
    }

    /// `pullgate_node_coverage` as the agent serves it: (value, reason) once it shows `want`.
    fn wait_coverage(&self, want: i64) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            let body = http_get(&self.metrics, "/metrics").unwrap_or_default();
            if let Some(line) = body.lines().find(|l| l.starts_with("pullgate_node_coverage{")) {
                last = line.to_string();
                if line.ends_with(&format!(" {want}")) {
                    return line.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("pullgate_node_coverage never became {want}; last: {last:?}\nagent:\n{}", self.agent.stderr());
    }

    /// Writes `line` into the CRI images table of the current config and restarts containerd.
    fn add_cri_setting(&mut self, line: &str) {
        let cfg = std::fs::read_to_string(&self.ctd.config).unwrap();
        let anchor = "[plugins.'io.containerd.cri.v1.images']\n";
        assert!(cfg.contains(anchor), "{cfg}");
        let new = if line.starts_with('[') {
            format!("{cfg}\n{line}\n")
        } else {
            cfg.replacen(anchor, &format!("{anchor}    {line}\n"), 1)
        };
        std::fs::write(&self.ctd.config, new).unwrap();
        self.restart();
    }

    fn restart(&mut self) {
        let st = Command::new(self.ctd.restart_script()).status().unwrap();
        assert!(st.success());
        self.ctd.wait_answering();
    }
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn blocked(o: &Output) -> bool {
    text(o).contains("image verifier bindir blocked pull")
}

/// An allowed pull got past the verifier: containerd never printed the block line,
/// and asked pullgate (the decision log has the allow).
fn assert_allowed(o: &Output, what: &str) {
    assert!(!blocked(o), "{what} was blocked: {}", text(o));
    assert!(o.status.success(), "{what} failed after verification: {}", text(o));
}

/// A pull no verifier saw: containerd's local path (the fixture image is not
/// unpackable there, so the pull may still fail later — but never at the verifier).
fn assert_bypassed(o: &Output, what: &str) {
    assert!(!blocked(o), "{what} reached the verifier: {}", text(o));
    let t = text(o);
    assert!(o.status.success() || t.contains("unpack"), "{what} failed before the layers: {t}");
}

fn assert_denied(o: &Output, what: &str) {
    let t = text(o);
    assert!(
        !o.status.success() && blocked(o) && t.contains("pullgate: denied"),
        "{what} was not denied by pullgate: {t}"
    );
}

fn skip() -> bool {
    if let Err(why) = containerd::available() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

#[test]
fn install_doctor_triggers_fix_and_uninstall_against_real_containerd() {
    if skip() {
        return;
    }
    let mut node = Node::start();
    // The bytes before pullgate-install first changes the file (the harness config
    // already has the bindir section, so that is the first --fix below).
    let mut original: Option<Vec<u8>> = None;
    let (signed, unsigned) = (node.image("signed"), node.image("unsigned"));

    // Before the install nothing verifies: the unsigned image pulls.
    assert_allowed(&node.ctd.cri_pull(&unsigned), "CRI pull of the unsigned image before the install");
    node.ctd.remove_image(&unsigned);

    let out = node.install(&[]);
    assert!(out.status.success(), "install failed: {}", text(&out));
    let verifier = node.ctd.verifier_dir.join(pullgate_containerd::DEFAULT_VERIFIER_NAME);
    assert_eq!(std::fs::read(&verifier).unwrap(), std::fs::read(bin("pullgate-verifier")).unwrap());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&node.verifier_json).unwrap()).unwrap();
    // per_verifier_timeout = 3s in the harness config → 80 % of it.
    assert_eq!(json["deadlineMs"], 2400, "{json}");
    assert_eq!(json["failurePolicy"], "closed");

    // Idempotent: no byte changes, no restart.
    let before = std::fs::read(&node.ctd.config).unwrap();
    let mtime = std::fs::metadata(&verifier).unwrap().modified().unwrap();
    let again = node.install(&[]);
    assert!(again.status.success(), "{}", text(&again));
    let again_text = text(&again);
    assert!(again_text.contains("nothing to change") && again_text.contains("not restarted"), "{again_text}");
    assert_eq!(std::fs::read(&node.ctd.config).unwrap(), before);
    assert_eq!(std::fs::metadata(&verifier).unwrap().modified().unwrap(), mtime);

    assert_allowed(&node.ctd.ctr_pull(&signed), "ctr pull of the signed image");
    assert_denied(&node.ctd.ctr_pull(&unsigned), "ctr pull of the unsigned image");
    assert_allowed(&node.ctd.cri_pull(&signed), "CRI pull of the signed image");
    assert_denied(&node.ctd.cri_pull(&unsigned), "CRI pull of the unsigned image");
    let d = node.doctor();
    assert!(d.status.success(), "doctor should pass:\n{}", text(&d));
    assert!(text(&d).contains("COVERED"), "{}", text(&d));
    node.wait_coverage(1);

    let triggers: &[(&str, &str)] = &[
        ("discard_unpacked_layers = true", "discard-unpacked-layers"),
        ("use_local_image_pull = true", "use-local-image-pull"),
        ("disable_snapshot_annotations = false", "disable-snapshot-annotations"),
        ("max_concurrent_downloads = 5", "max-concurrent-downloads"),
        ("image_pull_with_sync_fs = true", "image-pull-with-sync-fs"),
        (
            "[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'mirror-test.invalid']\n  endpoint = ['https://mirror.invalid']",
            "registry-mirrors",
        ),
    ];
    // The agent goes down for the first trigger: the bypass is real, fail-closed or not.
    let mut first = true;
    for (line, check) in triggers {
        node.add_cri_setting(line);
        if first {
            assert!(node.ctd.logged_local_pull_fallback(), "containerd did not log its local-pull fallback");
            node.ctd.remove_image(&unsigned);
            assert_bypassed(&node.ctd.cri_pull(&unsigned), &format!("CRI pull of the unsigned image with {line}"));
            first = false;
        }
        let d = node.doctor();
        assert!(!d.status.success(), "doctor passed with {line}:\n{}", text(&d));
        assert!(text(&d).contains(&format!("ERROR {check}")), "doctor did not name {check}:\n{}", text(&d));
        let gauge = node.wait_coverage(0);
        assert!(gauge.contains(&format!("reason=\"{check}\"")), "{gauge}");
        let refused = node.install(&[]);
        assert_eq!(refused.status.code(), Some(3), "install should refuse {line}: {}", text(&refused));
        assert!(
            text(&refused).contains("refusing to install") && text(&refused).contains(&check.replace('-', "_")[..8]),
            "{}",
            text(&refused)
        );
        original.get_or_insert_with(|| std::fs::read(&node.ctd.config).unwrap());
        let fixed = node.install(&["--fix"]);
        assert!(fixed.status.success(), "install --fix failed for {line}: {}", text(&fixed));
        assert!(text(&fixed).contains("containerd restarted"), "{}", text(&fixed));
        let d = node.doctor();
        assert!(d.status.success(), "doctor after --fix of {line}:\n{}", text(&d));
        node.wait_coverage(1);
        node.ctd.remove_image(&unsigned);
        assert_denied(&node.ctd.cri_pull(&unsigned), &format!("CRI pull of the unsigned image after --fix of {line}"));
    }

    let out = node.installer(&["uninstall", "--verifier-config", &node.verifier_json.display().to_string()]);
    assert!(out.status.success(), "uninstall failed: {}", text(&out));
    assert_eq!(
        std::fs::read(&node.ctd.config).unwrap(),
        original.unwrap(),
        "uninstall must restore the config byte for byte as it was before pullgate changed it"
    );
    assert!(!verifier.exists() && !node.verifier_json.exists());
    let leftovers: Vec<_> = std::fs::read_dir(node.verifier_json.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "uninstall left {leftovers:?}");
    node.ctd.wait_answering();
    node.ctd.remove_image(&unsigned);
    assert_allowed(&node.ctd.ctr_pull(&unsigned), "ctr pull of the unsigned image after uninstall");
    assert!(!node.doctor().status.success(), "doctor must fail once pullgate is gone");
}

/// A restart that does not bring containerd back puts the old config back.
#[test]
fn a_failed_restart_restores_the_config() {
    if skip() {
        return;
    }
    let node = Node::start();
    let cfg = std::fs::read_to_string(&node.ctd.config).unwrap();
    let with_trigger = cfg.replacen(
        "[plugins.'io.containerd.cri.v1.images']\n",
        "[plugins.'io.containerd.cri.v1.images']\n    discard_unpacked_layers = true\n",
        1,
    );
    std::fs::write(&node.ctd.config, &with_trigger).unwrap();
    let socket = node.agent.socket.display().to_string();
    let verifier = bin("pullgate-verifier").display().to_string();
    let json = node.verifier_json.display().to_string();
    let out = Command::new(bin("pullgate-install"))
        .args(["install", "--fix", "--verifier-binary", &verifier, "--verifier-config", &json, "--socket", &socket])
        .arg("--containerd-config")
        .arg(&node.ctd.config)
        .args(["--restart-command", "/bin/false", "--wait-timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("previous config was restored"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&node.ctd.config).unwrap(), with_trigger);
}

/// A config without the bindir plugin: install adds it (comments kept), uninstall
/// gives back the very bytes.
#[test]
fn uninstall_restores_a_config_the_install_changed() {
    if skip() {
        return;
    }
    let mut node = Node::start();
    let cfg = std::fs::read_to_string(&node.ctd.config).unwrap();
    let start = cfg.find("  [plugins.'io.containerd.image-verifier.v1.bindir']").unwrap();
    let end = cfg.find("  [plugins.'io.containerd.internal.v1.opt']").unwrap();
    let bin_dir = node.ctd.verifier_dir.display().to_string();
    let original = format!("# node config, hand written\n{}{}", &cfg[..start], &cfg[end..])
        .replace("[plugins]\n", &format!("[plugins]\n  # verifiers live here\n  [plugins.'io.containerd.image-verifier.v1.bindir']\n    bin_dir = '{bin_dir}'\n"));
    std::fs::write(&node.ctd.config, &original).unwrap();
    // A verifier.json written by hand before pullgate-install ever ran.
    let hand_written = "{\"failurePolicy\": \"open\"}\n";
    std::fs::create_dir_all(node.verifier_json.parent().unwrap()).unwrap();
    std::fs::write(&node.verifier_json, hand_written).unwrap();
    node.restart();
    let out = node.install(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("existed before the install"), "{}", text(&out));
    let installed = std::fs::read_to_string(&node.ctd.config).unwrap();
    assert!(
        installed.contains("# node config, hand written") && installed.contains("# verifiers live here"),
        "{installed}"
    );
    assert!(installed.contains("max_verifiers") && installed.contains("per_verifier_timeout"), "{installed}");
    assert!(text(&out).contains("containerd restarted"), "{}", text(&out));
    assert_denied(&node.ctd.ctr_pull(&node.image("unsigned")), "ctr pull of the unsigned image");
    let out = node.installer(&["uninstall", "--verifier-config", &node.verifier_json.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&node.ctd.config).unwrap(), original);
    assert_eq!(
        std::fs::read_to_string(&node.verifier_json).unwrap(),
        hand_written,
        "the hand-written verifier.json is back"
    );
}

/// The default restart enters PID 1's namespaces: `host-exec` runs its command there.
#[test]
fn host_exec_runs_the_command_in_pid_1s_namespaces() {
    if skip() {
        return;
    }
    let out = Command::new(bin("pullgate-install"))
        .args(["host-exec", "--", "readlink", "/proc/self/ns/mnt", "/proc/self/ns/uts"])
        .output()
        .unwrap();
    if ["mnt", "uts", "cgroup", "ipc", "net", "pid"]
        .iter()
        .any(|n| std::fs::File::open(format!("/proc/1/ns/{n}")).is_err())
    {
        // A sandbox whose PID 1 belongs to someone else: host-exec must say why it cannot.
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("hostPID"), "{}", text(&out));
        eprintln!("skipped the namespace comparison: PID 1's namespaces are not open to this process");
        return;
    }
    assert!(out.status.success(), "{}", text(&out));
    let want = Command::new("readlink").args(["/proc/1/ns/mnt", "/proc/1/ns/uts"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&want.stdout));
    let failing = Command::new(bin("pullgate-install")).args(["host-exec", "--", "false"]).output().unwrap();
    assert_eq!(failing.status.code(), Some(1), "the command's exit code is passed on");
}

/// `doctor --json` says the same as the text form, for machines.
#[test]
fn doctor_json_names_every_problem() {
    if skip() {
        return;
    }
    let node = Node::start();
    let out = Command::new(bin("pullgate-agent"))
        .arg("doctor")
        .arg("--json")
        .arg("--containerd-config")
        .arg(&node.ctd.config)
        .arg("--containerd-socket")
        .arg(&node.ctd.socket)
        .arg("--containerd-bin")
        .arg("/nonexistent/containerd")
        .arg("--verifier-config")
        .arg(&node.verifier_json)
        .arg("--socket")
        .arg(node.agent.root.path().join("no-agent.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    assert_eq!(v["covered"], false);
    let checks: Vec<&str> = v["findings"].as_array().unwrap().iter().filter_map(|f| f["check"].as_str()).collect();
    // Not installed yet, agent socket wrong; the version comes from the socket since the binary is absent.
    assert!(checks.contains(&"verifier-missing") && checks.contains(&"agent"), "{checks:?}");
    assert!(!checks.contains(&"containerd-version"), "the socket tells the version: {v}");
    assert!(v["containerdVersion"].as_str().unwrap().contains("2.2.7"), "{v}");
}

/// A small real image (one empty layer) as an OCI archive whose digest no one allowed.
fn unsigned_archive(dir: &Path, salt: &str) -> (PathBuf, String) {
    use sha2::Digest as _;
    let hex = |b: &[u8]| sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    let layout = dir.join(format!("layout-{salt}"));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = vec![0u8; 1024]; // an empty tar
    let layer_d = hex(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"salt":"{salt}"}}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_d}"]}}}}"#
    );
    let config_d = hex(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_d}","size":1024}}]}}"#,
        config.len()
    );
    let manifest_d = hex(manifest.as_bytes());
    std::fs::write(blobs.join(&layer_d), &layer).unwrap();
    std::fs::write(blobs.join(&config_d), &config).unwrap();
    std::fs::write(blobs.join(&manifest_d), &manifest).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    let tar = dir.join(format!("{salt}.tar"));
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success());
    (tar, format!("sha256:{manifest_d}"))
}

impl Node {
    fn audit(&self) -> serde_json::Value {
        let path = self.agent.state_dir.join("audit.json");
        serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until audit.json holds a finding of `kind` for `digest`; returns the time it took.
    fn wait_finding(&self, kind: &str, digest: &str, since: Instant) -> (Duration, serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let a = self.audit();
            if let Some(f) =
                a["findings"].as_array().and_then(|fs| fs.iter().find(|f| f["kind"] == kind && f["digest"] == digest))
            {
                return (since.elapsed(), f.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {kind} finding for {digest} within 30 s; audit: {}\nagent:\n{}", self.audit(), self.agent.stderr());
    }

    fn import(&self, tar: &Path, name: &str) {
        let out = self.ctd.ctr(&["image", "import", "--base-name", name, &tar.display().to_string()]);
        assert!(out.status.success(), "ctr image import: {}", text(&out));
    }

    fn agent_metric(&self, name: &str) -> Option<f64> {
        let body = http_get(&self.metrics, "/metrics").ok()?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// Issue 10: an imported image is reported as unverified, a verified pull is not;
/// containerd restarting (the event stream drops) is survived.
#[test]
fn imported_images_are_reported_and_verified_pulls_are_not() {
    if skip() {
        return;
    }
    let mut node = Node::start();
    let out = node.install(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let signed = node.image("signed");
    assert_allowed(&node.ctd.ctr_pull(&signed), "ctr pull of the signed image");

    let (tar, digest) = unsigned_archive(node.ctd.root(), "one");
    let started = Instant::now();
    node.import(&tar, "example.invalid/imported");
    let (latency, f) = node.wait_finding("unverified", &digest, started);
    eprintln!("import → unverified report: {} ms", latency.as_millis());
    assert_eq!(f["namespace"], "default");
    assert!(f["names"].to_string().contains("example.invalid/imported"), "{f}");
    let signed_digest = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
    let a = node.audit();
    assert!(
        !a["findings"].as_array().unwrap().iter().any(|f| f["digest"] == signed_digest),
        "a verified pull was reported: {a}"
    );
    assert!(node.agent_metric("pullgate_unverified_images").unwrap_or(0.0) >= 1.0);

    let audit = Command::new(bin("pullgate-agent"))
        .arg("audit")
        .arg("--state-dir")
        .arg(&node.agent.state_dir)
        .output()
        .unwrap();
    assert_eq!(audit.status.code(), Some(1), "audit exits 1 when it has findings: {}", text(&audit));
    assert!(
        text(&audit).contains("unverified") && text(&audit).contains("example.invalid/imported"),
        "{}",
        text(&audit)
    );

    // containerd restarts: the stream drops, the agent reconnects and re-lists.
    node.restart();
    let (tar2, digest2) = unsigned_archive(node.ctd.root(), "two");
    let started = Instant::now();
    node.import(&tar2, "example.invalid/after-restart");
    let (latency, _) = node.wait_finding("unverified", &digest2, started);
    eprintln!("after a containerd restart, import → report: {} ms", latency.as_millis());

    // Removing the image clears its finding.
    let rm = node.ctd.ctr(&["image", "rm", "--sync", "example.invalid/imported:v1"]);
    assert!(rm.status.success(), "{}", text(&rm));
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.audit()["findings"].as_array().unwrap().iter().any(|f| f["digest"] == digest.as_str()) {
        assert!(Instant::now() < deadline, "the removed image is still reported: {}", node.audit());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 10: a trust change that revokes the signer makes the pulled image drift;
/// with `--drift-action untag` its names go, and the next CRI pull is verified and denied.
#[test]
fn a_revoked_signer_makes_pulled_images_drift_and_untag_forces_a_verified_pull() {
    if skip() {
        return;
    }
    let node = Node::start_with(&["--drift-action", "untag"]);
    let out = node.install(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let signed = node.image("signed");
    assert_allowed(&node.ctd.cri_pull(&signed), "CRI pull of the signed image");
    let digest = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
    let listed = text(&node.ctd.ctr(&["--namespace", "k8s.io", "image", "ls", "-q"]));
    assert!(listed.contains(&signed), "{listed}");

    // Revoke the signer: the trust store now holds another CA.
    let store = node.agent.config_dir.join("notation/truststore/x509/ca/e2e");
    for e in std::fs::read_dir(&store).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let other = fixtures_dir().join("notation/truststore/x509/ca/e2e-other");
    for e in std::fs::read_dir(&other).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), store.join(e.file_name())).unwrap();
    }
    let started = Instant::now();
    let (latency, f) = node.wait_finding("drift", digest, started);
    eprintln!("trust change → drift report: {} ms", latency.as_millis());
    assert!(f["action"].as_str().unwrap().starts_with("untagged"), "{f}");
    assert!(f["reason"].as_str().unwrap().contains("deny"), "{f}");
    let listed = text(&node.ctd.ctr(&["--namespace", "k8s.io", "image", "ls", "-q"]));
    assert!(!listed.contains(&signed), "untag left the name: {listed}");
    assert_denied(&node.ctd.cri_pull(&signed), "CRI pull of the drifted image after untag");
}

/// Issue 10: a drift re-check of 200 images sharing one digest costs the registry
/// requests of one verification (the engine's cache and single flight).
#[test]
fn a_drift_recheck_of_200_images_costs_one_verification() {
    if skip() {
        return;
    }
    let node = Node::start();
    let out = node.install(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let signed = node.image("signed");
    let before_pull = node.reg.access_count();
    assert_allowed(&node.ctd.cri_pull(&signed), "CRI pull of the signed image");
    // One verification's requests (plus the pull's own manifest and blob fetches, which the
    // drift check does not make): an upper bound for the re-check.
    let one_pull = node.reg.access_count() - before_pull;
    for i in 1..200 {
        let o = node.ctd.ctr(&[
            "--namespace",
            "k8s.io",
            "image",
            "tag",
            &signed,
            &format!("{}/signed:copy-{i}", node.reg.host),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let before = node.reg.access_count();
    let store = node.agent.config_dir.join("notation/truststore/x509/ca/e2e");
    for e in std::fs::read_dir(&store).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in std::fs::read_dir(fixtures_dir().join("notation/truststore/x509/ca/e2e-other")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), store.join(e.file_name())).unwrap();
    }
    let started = Instant::now();
    let digest = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";
    let (took, f) = node.wait_finding("drift", digest, started);
    let requests = node.reg.access_count() - before;
    let names = f["names"].as_array().unwrap().len();
    eprintln!(
        "drift re-check of {names} images (1 digest): {} ms, {requests} registry requests (a pull + verification: {one_pull})",
        took.as_millis()
    );
    assert!(names >= 200, "{f}");
    assert!(requests <= one_pull, "the re-check cost {requests} requests, more than one verification ({one_pull})");
    assert!(requests >= 1, "the re-check must actually ask the registry");
}

/// A containerd config that is a symlink: install writes its target and keeps the
/// link; uninstall restores the target's bytes and the link is still there.
#[test]
fn a_symlinked_config_is_edited_through_the_link() {
    if skip() {
        return;
    }
    let mut node = Node::start();
    let cfg = std::fs::read_to_string(&node.ctd.config).unwrap();
    let base = node.ctd.root().join("base/config.toml");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    // Without max_verifiers, so the install has to change the file.
    let original = cfg.replace("    max_verifiers = 10\n", "");
    std::fs::write(&base, &original).unwrap();
    std::fs::remove_file(&node.ctd.config).unwrap();
    std::os::unix::fs::symlink(&base, &node.ctd.config).unwrap();
    node.restart();
    let out = node.install(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::symlink_metadata(&node.ctd.config).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read_to_string(&base).unwrap().contains("max_verifiers"));
    let out = node.installer(&["uninstall", "--verifier-config", &node.verifier_json.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::symlink_metadata(&node.ctd.config).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&base).unwrap(), original);
}
