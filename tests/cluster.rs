//! Issue 14: the cluster tier against a real `redis-server` (Debian package,
//! started on a free 127.0.0.1 port in a temporary directory) and a real
//! docker-registry holding the Notation-signed fixture image.
//!
//! Library-level cases run several registry clients, each with its own
//! [`ClusterTier`] as separate nodes would, and count requests in the
//! registry's own access log. Agent-level cases run `pullgate-agent` with a
//! `[cluster]` table and compare verdicts. When `redis-server` is missing the
//! tests print `skipped: …` (scripts install it, so CI runs them).

use pullgate_cluster::{ClusterTier, Settings};
use pullgate_registry::shared::{SharedKind, SharedTier};
use pullgate_registry::types::{Descriptor, ImageManifest};
use pullgate_registry::{Client, ClientOptions, HostOptions, Repository};
use pullgate_testkit::{Registry, RegistryOptions};
use pullgate_tests::{AgentFiles, EXIT_CONFIG, agent_command, fixture_descriptors};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const NOTATION: &str = "application/vnd.cncf.notary.signature";

/// A `redis-server` on a free loopback port; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Set by `scripts/test`, which installs redis-server, redis-tools and
/// openssl: a missing one is then a failed test, never a silent skip.
const REQUIRE_ENV: &str = "PULLGATE_REQUIRE_REDIS";

/// Whether any of `tools` is missing (so the test skips); panics instead when
/// [`REQUIRE_ENV`] is set.
fn missing(tools: &[&str]) -> bool {
    let gone: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| Command::new(t).arg(if *t == "openssl" { "version" } else { "--version" }).output().is_err())
        .collect();
    assert!(
        gone.is_empty() || std::env::var_os(REQUIRE_ENV).is_none(),
        "{REQUIRE_ENV} is set, but {gone:?} cannot be run"
    );
    !gone.is_empty()
}

impl Redis {
    /// Starts one (`password`: `requirepass`); `None` when the binary is missing.
    fn start(password: Option<&str>) -> Option<Redis> {
        if missing(&["redis-server"]) {
            println!("skipped: redis-server is not installed (scripts/lib/setup.sh pg_setup_test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().expect("spawning redis-server");
        let r = Redis { child: Some(child), port, _dir: dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !r.answers() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    /// True once the server answers PING (with PONG or an auth error).
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

/// A key prefix no other case in this run uses.
fn fresh_prefix() -> String {
    format!("pgtest{}-{}", std::process::id(), PREFIX.fetch_add(1, Ordering::Relaxed))
}

fn settings(url: &str, prefix: &str) -> Settings {
    let mut s = Settings::single(url);
    s.key_prefix = prefix.to_string();
    s.timeout = Duration::from_millis(300);
    s.wait_bound = Duration::from_millis(1500);
    s
}

/// One node's tier.
fn tier(url: &str, prefix: &str) -> Arc<ClusterTier> {
    Arc::new(ClusterTier::new(settings(url, prefix), None).expect("tier"))
}

fn client(host: &str, tier: Option<Arc<ClusterTier>>) -> Client {
    let mut o = ClientOptions { shared: tier.map(|t| t as Arc<dyn SharedTier>), ..ClientOptions::default() };
    o.hosts.insert(host.to_string(), HostOptions { insecure: true, ..HostOptions::default() });
    Client::new(o)
}

async fn signed_registry() -> (Registry, Repository) {
    let reg = Registry::start(RegistryOptions::default()).await;
    let layout = pullgate_tests::fixtures_dir().join("notation/oci-layouts/e2e-valid-signature");
    reg.push_layout("signed", &layout).await;
    let repo = Repository { host: reg.host.clone(), path: "signed".into() };
    (reg, repo)
}

/// What one Notation verification fetches, in order: the referrers list,
/// each signature manifest and its envelope blob. `(digest, bytes)` pairs
/// (the list as its digests).
async fn verification_fetches(c: &Client, repo: &Repository) -> Vec<(String, Vec<u8>)> {
    let subject = fixture_descriptors().manifest.digest;
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = c.referrers(repo, &subject, Some(NOTATION), deadline).await.expect("referrers");
    assert!(!list.descriptors.is_empty(), "the fixture image is signed");
    let mut out =
        vec![("referrers".to_string(), list.descriptors.iter().map(|d| d.digest.as_str()).collect::<String>().into())];
    for d in &list.descriptors {
        let m = c.manifest_by_digest(repo, &d.digest, deadline).await.expect("signature manifest");
        let parsed: ImageManifest = serde_json::from_slice(&m.bytes).expect("signature manifest JSON");
        out.push((m.digest.clone(), m.bytes.clone()));
        let layer: &Descriptor = &parsed.layers[0];
        let bytes = c.blob(repo, layer, 1 << 20, deadline).await.expect("envelope");
        out.push((layer.digest.clone(), bytes));
    }
    out
}

/// The registry's access count once its log has stopped growing.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_nodes_cost_the_registry_one_verification() {
    let Some(redis) = Redis::start(None) else { return };
    let (reg, repo) = signed_registry().await;
    let before = quiet_count(&reg);
    let alone = verification_fetches(&client(&reg.host, None), &repo).await;
    let one = quiet_count(&reg) - before;
    assert!(one >= 3, "a verification reads a list, a manifest and a blob: {one}");

    let prefix = fresh_prefix();
    let tiers: Vec<_> = (0..8).map(|_| tier(&redis.url(), &prefix)).collect();
    let before = quiet_count(&reg);
    let runs = tiers.iter().map(|t| {
        let (c, repo) = (client(&reg.host, Some(t.clone())), repo.clone());
        tokio::spawn(async move { verification_fetches(&c, &repo).await })
    });
    let results = futures::future::join_all(runs).await;
    assert_eq!(quiet_count(&reg) - before, one, "eight nodes asked the registry what one asks");
    for r in results {
        assert_eq!(r.expect("task"), alone, "every node got the same checked bytes");
    }
    let hits: u64 = tiers.iter().map(|t| t.counts().hits).sum();
    let misses: u64 = tiers.iter().map(|t| t.counts().misses).sum();
    assert_eq!(misses, alone.len() as u64, "one miss per artifact in the whole cluster");
    assert_eq!(hits, 7 * alone.len() as u64);
    assert!(tiers.iter().all(|t| t.counts().poisoned == 0 && t.counts().fallbacks == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_values_are_refetched_counted_and_never_used() {
    let Some(redis) = Redis::start(None) else { return };
    let (reg, repo) = signed_registry().await;
    let prefix = fresh_prefix();
    let before = quiet_count(&reg);
    let alone = verification_fetches(&client(&reg.host, Some(tier(&redis.url(), &prefix))), &repo).await;
    let one = quiet_count(&reg) - before;

    // Someone with write access to Redis replaces every shared value.
    let attacker = tier(&redis.url(), &prefix);
    let deadline = Instant::now() + Duration::from_secs(5);
    let subject = fixture_descriptors().manifest.digest;
    let list_key = format!("{repo}\0{subject}\0{NOTATION}");
    let junk_list = br#"{"source":"api","manifests":[{"mediaType":"m","digest":"sha256:../../etc","size":1}]}"#;
    attacker.put(SharedKind::Referrers, &list_key, junk_list, deadline).await;
    let (manifest, envelope) = (&alone[1].0, &alone[2]);
    attacker.put(SharedKind::Content, manifest, b"{\"schemaVersion\":2,\"layers\":[]}", deadline).await;
    // The envelope's digest with one byte more than its size: oversize, never read whole.
    let mut longer = envelope.1.clone();
    longer.push(b'x');
    attacker.put(SharedKind::Content, &envelope.0, &longer, deadline).await;
    assert_eq!(attacker.counts().published, 3);

    let victim = tier(&redis.url(), &prefix);
    let before = quiet_count(&reg);
    let got = verification_fetches(&client(&reg.host, Some(victim.clone())), &repo).await;
    assert_eq!(got, alone, "the poisoned values were not used");
    assert_eq!(victim.counts().poisoned, 3, "{:?}", victim.counts());
    assert_eq!(quiet_count(&reg) - before, one, "each poisoned value was fetched from the registry again");
    // The refetched values were published again: the next node hits.
    let next = tier(&redis.url(), &prefix);
    let before = quiet_count(&reg);
    assert_eq!(verification_fetches(&client(&reg.host, Some(next.clone())), &repo).await, alone);
    assert_eq!(quiet_count(&reg) - before, 0);
    assert_eq!(next.counts().hits, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_storm_changes_no_result_and_every_fetch_meets_its_deadline() {
    let Some(mut redis) = Redis::start(None) else { return };
    let (reg, repo) = signed_registry().await;
    let alone = verification_fetches(&client(&reg.host, None), &repo).await;
    let prefix = fresh_prefix();
    let tiers: Vec<_> = (0..6).map(|_| tier(&redis.url(), &prefix)).collect();
    let round = |tiers: &[Arc<ClusterTier>]| {
        let runs: Vec<_> = tiers
            .iter()
            .map(|t| {
                // A fresh client per round: no in-memory referrers cache hides the tier.
                let (c, repo) = (client(&reg.host, Some(t.clone())), repo.clone());
                tokio::spawn(async move { verification_fetches(&c, &repo).await })
            })
            .collect();
        futures::future::join_all(runs)
    };
    for r in round(&tiers).await {
        assert_eq!(r.expect("task"), alone);
    }
    // verification_fetches panics on any error, a deadline included: every
    // round below completing is the "fallback within the deadline".
    let storm = round(&tiers);
    redis.kill();
    for r in storm.await {
        assert_eq!(r.expect("a fetch failed while Redis died"), alone);
    }
    for _ in 0..3 {
        for r in round(&tiers).await {
            assert_eq!(r.expect("a fetch failed with Redis dead"), alone);
        }
    }
    for t in &tiers {
        let c = t.counts();
        assert!(c.fallbacks > 0 && c.breaker_opened == 1, "{c:?}");
        assert!(t.breaker_open(), "a dead Redis is skipped, costing no timeout per fetch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_holder_died_delays_the_others_only_up_to_the_bound() {
    let Some(redis) = Redis::start(None) else { return };
    let (reg, repo) = signed_registry().await;
    let alone = verification_fetches(&client(&reg.host, None), &repo).await;
    let prefix = fresh_prefix();
    let subject = fixture_descriptors().manifest.digest;
    let list_key = format!("{repo}\0{subject}\0{NOTATION}");
    {
        // A node takes the referrers lease and dies before publishing.
        let holder = tier(&redis.url(), &prefix);
        let deadline = Instant::now() + Duration::from_secs(5);
        let lease = holder.try_lease(SharedKind::Referrers, &list_key, deadline).await;
        assert!(matches!(lease, pullgate_registry::shared::Lease::Taken(_)), "{lease:?}");
    }
    let waiter = tier(&redis.url(), &prefix);
    let before = quiet_count(&reg);
    assert_eq!(verification_fetches(&client(&reg.host, Some(waiter.clone())), &repo).await, alone);
    let c = waiter.counts();
    assert_eq!(c.waited_out, 1, "it waited for the dead holder, then fetched itself: {c:?}");
    assert!(quiet_count(&reg) - before >= 1);
    assert_eq!(c.fallbacks, 0, "Redis itself was fine");
}

/// A config directory verifying the fixture image with Notation, with `cluster` appended.
fn agent_files(host: &str, cluster: &str) -> AgentFiles {
    let uid = nix::unistd::getuid().as_raw();
    let toml = pullgate_testkit::notation_config(host, &format!("allowedUids = [{uid}]"));
    let files = AgentFiles::new(&format!("{toml}\n{cluster}"));
    pullgate_testkit::install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
    files
}

fn cluster_table(url: &str, prefix: &str) -> String {
    format!("[cluster]\nurl = \"{url}\"\nkeyPrefix = \"{prefix}\"\ntimeout = \"200ms\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_verdicts_are_the_same_with_shared_poisoned_dead_or_absent_redis() {
    let Some(mut redis) = Redis::start(None) else { return };
    let reg = Registry::start(RegistryOptions::default()).await;
    let n = pullgate_tests::fixtures_dir().join("notation/oci-layouts");
    reg.push_layout("signed", &n.join("e2e-valid-signature")).await;
    reg.push_layout("unsigned", &n.join("e2e-unsigned")).await;
    let image = fixture_descriptors().manifest;
    let (signed, unsigned) = (format!("{}/signed:v1", reg.host), format!("{}/unsigned:v1", reg.host));
    let prefix = fresh_prefix();
    // The verdicts without any cluster tier: the signed image allowed, the unsigned one denied.
    let verdicts = |agent: &pullgate_tests::Agent, when: &str| {
        let (s, u) = (agent.verify(&signed, &image), agent.verify(&unsigned, &image));
        assert_eq!((s.code, u.code), (Some(0), Some(1)), "{when}: {s:?} {u:?}");
        s.line();
        u.line();
    };

    let first = agent_files(&reg.host, &cluster_table(&redis.url(), &prefix)).start(&[]);
    verdicts(&first, "Redis shared");
    drop(first);

    // Poison what the first agent shared, then ask a new agent.
    let attacker = tier(&redis.url(), &prefix);
    let c = client(&reg.host, None);
    let repo = Repository { host: reg.host.clone(), path: "signed".into() };
    for (digest, _) in verification_fetches(&c, &repo).await.into_iter().skip(1) {
        attacker.put(SharedKind::Content, &digest, b"junk", Instant::now() + Duration::from_secs(5)).await;
    }
    let second = agent_files(&reg.host, &cluster_table(&redis.url(), &prefix)).start(&[]);
    verdicts(&second, "Redis poisoned");
    drop(second);

    // The second agent re-published what it fetched: a third one verifies
    // the signed image without asking the registry for anything.
    let shared = agent_files(&reg.host, &cluster_table(&redis.url(), &prefix)).start(&[]);
    let before = quiet_count(&reg);
    shared.verify(&signed, &image).allowed();
    assert_eq!(quiet_count(&reg) - before, 0, "the agent used the shared, checked artifacts");
    drop(shared);

    redis.kill();
    let third = agent_files(&reg.host, &cluster_table(&redis.url(), &prefix)).start(&[]);
    verdicts(&third, "Redis dead");
    assert!(third.stderr().contains("cluster tier: Redis is failing"), "a WARN says so");
}

fn check_config(dir: &Path) -> (Option<i32>, String) {
    let (code, out, err) = agent_command(&["check-config", dir.to_str().expect("UTF-8 path")]);
    (code, format!("{out}{err}"))
}

#[test]
fn check_config_reports_tls_and_auth_mistakes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("redis-password");
    std::fs::write(&pw, "s3cret\n").expect("password file");
    let cases = [
        ("url = \"redis://:s3cret@redis:6379\"", "cluster.url"),
        ("url = \"rediss://redis:6380\"\nca = \"missing-ca.pem\"", "cluster.ca"),
        ("url = \"rediss://redis:6380\"\nca = \"junk-ca.pem\"", "junk-ca.pem"),
        ("url = \"redis://redis:6379\"\nca = \"junk-ca.pem\"", "cluster.ca"),
        ("url = \"redis://redis\"\npasswordFile = \"redis-password\"", "cluster.passwordFile"),
        ("url = \"redis://redis\"\npasswordFile = \"/nonexistent/redis-password\"", "cluster.passwordFile"),
        ("url = \"redis://redis\"\nmode = \"sentinel\"", "cluster.masterName"),
    ];
    for (body, field) in cases {
        let files = AgentFiles::new(&format!("[cluster]\n{body}\n"));
        std::fs::write(files.config_dir.join("junk-ca.pem"), "not a certificate").expect("junk ca");
        let (code, out) = check_config(&files.config_dir);
        assert_eq!(code, Some(EXIT_CONFIG), "{body}: {out}");
        assert!(out.contains(field), "{body}: expected {field} in {out}");
        assert!(!out.contains("s3cret"), "the password was printed: {out}");
    }
    // The same with a readable password file and a real CA bundle is valid.
    let files = AgentFiles::new(&format!(
        "[cluster]\nurl = \"rediss://redis:6380\"\nca = \"redis-ca.pem\"\npasswordFile = \"{}\"\n",
        pw.display()
    ));
    let ca = pullgate_tests::fixtures_dir().join("notation/truststore/x509/ca/e2e");
    let cert = std::fs::read_dir(&ca).expect("fixture CA").next().expect("a cert").expect("entry").path();
    std::fs::copy(cert, files.config_dir.join("redis-ca.pem")).expect("ca");
    let (code, out) = check_config(&files.config_dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_a_dead_redis_at_start_does_not_stop_the_agent() {
    let Some(redis) = Redis::start(Some("right-password")) else { return };
    let reg = Registry::start(RegistryOptions::default()).await;
    let n = pullgate_tests::fixtures_dir().join("notation/oci-layouts");
    reg.push_layout("signed", &n.join("e2e-valid-signature")).await;
    let image = fixture_descriptors().manifest;
    let signed = format!("{}/signed:v1", reg.host);
    let secret = tempfile::tempdir().expect("tempdir");
    let pw = secret.path().join("password");
    std::fs::write(&pw, "wrong-password\n").expect("password");
    let table = format!("{}passwordFile = \"{}\"\n", cluster_table(&redis.url(), &fresh_prefix()), pw.display());
    let agent = agent_files(&reg.host, &table).start(&[]);
    agent.verify(&signed, &image).allowed();
    assert!(!agent.stderr().contains("wrong-password"), "the password was logged");
    drop(agent);
    // Nothing listens on the port of a closed listener.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let agent = agent_files(&reg.host, &cluster_table(&format!("redis://127.0.0.1:{port}"), "dead")).start(&[]);
    agent.verify(&signed, &image).allowed();
}

/// Redis processes started for a topology test; killed on drop.
struct Processes(Vec<Child>, Vec<tempfile::TempDir>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// `redis-server` with `args` in a fresh directory, once it listens.
fn spawn_redis(p: &mut Processes, port: u16, args: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("redis-server");
    cmd.args(args)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    p.0.push(cmd.spawn().expect("redis-server"));
    p.1.push(dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes through one node's tier and reads through another's, for several keys.
async fn round_trip(mk: impl Fn() -> ClusterTier) {
    let (a, b) = (mk(), mk());
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..16u8 {
        let bytes = vec![i; 100 + usize::from(i)];
        let digest = pullgate_registry::sha256_digest(&bytes);
        a.put(SharedKind::Content, &digest, &bytes, deadline).await;
        let got = b.get(SharedKind::Content, &digest, 1000, deadline).await.expect("a shared value");
        assert_eq!(got.bytes, bytes);
    }
    let lease = a.try_lease(SharedKind::Tag, "r/x:1", deadline).await;
    assert!(matches!(lease, pullgate_registry::shared::Lease::Taken(_)), "{lease:?}");
    assert_eq!(b.try_lease(SharedKind::Tag, "r/x:1", deadline).await, pullgate_registry::shared::Lease::HeldElsewhere);
    assert_eq!(a.counts().fallbacks + b.counts().fallbacks, 0, "{:?} {:?}", a.counts(), b.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_reaches_the_primary_the_sentinel_names() {
    let Some(primary) = Redis::start(None) else { return };
    let mut p = Processes(Vec::new(), Vec::new());
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(&conf, format!("sentinel monitor pgprimary 127.0.0.1 {} 1\n", primary.port)).expect("conf");
    spawn_redis(&mut p, port, &[conf.display().to_string(), "--sentinel".into()]);
    p.1.push(dir);
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = fresh_prefix();
    round_trip(|| {
        let mut s = settings(&url, &prefix);
        s.mode = pullgate_cluster::Mode::Sentinel { master: "pgprimary".into() };
        s.timeout = Duration::from_secs(2);
        ClusterTier::new(s, None).expect("tier")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_routes_keys_across_a_three_node_redis_cluster() {
    if missing(&["redis-server", "redis-cli"]) {
        println!("skipped: redis-server or redis-cli is not installed");
        return;
    }
    let mut p = Processes(Vec::new(), Vec::new());
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for port in &ports {
        let args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"].map(String::from);
        spawn_redis(&mut p, *port, &args);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = Command::new("redis-cli").args(["-p", &ports[0].to_string(), "cluster", "info"]).output();
        if info.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cluster did not become ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let prefix = fresh_prefix();
    let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
    round_trip(|| {
        let mut s = settings(&urls[0], &prefix);
        s.urls = urls.clone();
        s.mode = pullgate_cluster::Mode::Cluster;
        s.timeout = Duration::from_secs(2);
        ClusterTier::new(s, None).expect("tier")
    })
    .await;
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A throw-away CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn test_ca(dir: &Path, name: &str) {
    let ca = |f: &str| format!("{name}-{f}");
    let (key, pem) = (ca("ca.key"), ca("ca.pem"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "2", "-subj", "/CN=pullgate redis test CA", "-keyout", &key, "-out", &pem],
        ]
        .concat(),
        dir,
    );
    let (skey, csr, cert) = (ca("server.key"), ca("server.csr"), ca("server.pem"));
    openssl(&[&["req"], &ec[..], &["-subj", "/CN=127.0.0.1", "-keyout", &skey, "-out", &csr]].concat(), dir);
    std::fs::write(
        dir.join(ca("ext")),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let ext = ca("ext");
    openssl(
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &pem,
            "-CAkey",
            &key,
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
        dir,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_against_the_configured_ca_only() {
    if missing(&["redis-server", "openssl"]) {
        println!("skipped: redis-server or openssl is not installed");
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    test_ca(certs.path(), "good");
    test_ca(certs.path(), "other");
    let file = |f: &str| certs.path().join(f).display().to_string();
    let mut p = Processes(Vec::new(), Vec::new());
    let port = free_port();
    let args = [
        "--tls-port".to_string(),
        port.to_string(),
        "--tls-cert-file".into(),
        file("good-server.pem"),
        "--tls-key-file".into(),
        file("good-server.key"),
        "--tls-ca-cert-file".into(),
        file("good-ca.pem"),
        "--tls-auth-clients".into(),
        "no".into(),
    ];
    // Plain TCP on another port (redis-server needs one unless `--port 0`).
    spawn_redis(&mut p, free_port(), &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "no TLS listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("rediss://127.0.0.1:{port}");
    let prefix = fresh_prefix();
    let with_ca = |pem: &str| {
        let mut s = settings(&url, &prefix);
        s.ca_pem = Some(std::fs::read(certs.path().join(pem)).expect("ca"));
        s.timeout = Duration::from_secs(2);
        ClusterTier::new(s, None).expect("tier")
    };
    round_trip(|| with_ca("good-ca.pem")).await;
    // A server the configured CA did not sign is not talked to.
    let wrong = with_ca("other-ca.pem");
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(wrong.get(SharedKind::Content, &format!("sha256:{}", "0".repeat(64)), 10, deadline).await.is_none());
    assert_eq!(wrong.counts().fallbacks, 1, "the TLS handshake failed: {:?}", wrong.counts());
}

// ---- Well-formed but wrong lists and tags: a hint, never a verdict ----

/// Writes `value` under the raw Redis `key` with no expiry (RESP `SET`), as an
/// attacker with write access could; a node always writes with `PX`.
fn set_without_expiry(port: u16, key: &str, value: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let mut cmd = Vec::new();
    cmd.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    for part in [key.as_bytes(), value] {
        cmd.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        cmd.extend_from_slice(part);
        cmd.extend_from_slice(b"\r\n");
    }
    s.write_all(&cmd).expect("SET");
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"+OK\r\n");
}

/// A shared referrers list as nodes publish it, holding `manifests`.
fn shared_list(manifests: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "source": "tag-schema", "manifests": manifests })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_written_without_expiry_is_ignored_and_counted() {
    let Some(redis) = Redis::start(None) else { return };
    let (reg, repo) = signed_registry().await;
    let prefix = fresh_prefix();
    let subject = fixture_descriptors().manifest.digest;
    let victim = tier(&redis.url(), &prefix);
    let key = victim.value_key(SharedKind::Referrers, &format!("{repo}\0{subject}\0{NOTATION}"));
    // Well-formed and empty, so a hit on the old code: the signature would vanish for good.
    set_without_expiry(redis.port, &key, &shared_list(&[]));
    let c = client(&reg.host, Some(victim.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = c.referrers(&repo, &subject, Some(NOTATION), deadline).await.expect("referrers");
    assert!(!list.descriptors.is_empty(), "the list without expiry was used");
    // Seen on the first read and again after taking the lease (each read is counted).
    assert!(victim.counts().poisoned >= 1, "{:?}", victim.counts());
    assert_eq!(victim.counts().hits, 0);
    // The registry's list was published over it, with an expiry: the next node hits.
    let next = tier(&redis.url(), &prefix);
    let again = client(&reg.host, Some(next.clone())).referrers(&repo, &subject, Some(NOTATION), deadline).await;
    assert_eq!(again.expect("referrers").descriptors, list.descriptors);
    assert_eq!(next.counts().hits, 1, "{:?}", next.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_signature_less_shared_list_leaves_a_signed_image_allowed() {
    let Some(redis) = Redis::start(None) else { return };
    let (reg, repo) = signed_registry().await;
    let image = fixture_descriptors().manifest;
    let signed = format!("{}/signed:v1", reg.host);
    let key = format!("{repo}\0{}\0{NOTATION}", image.digest);
    // Not a signature: the image manifest itself, listed as one.
    let plain = client(&reg.host, None);
    let m = plain.manifest_by_digest(&repo, &image.digest, Instant::now() + Duration::from_secs(5)).await;
    let m = m.expect("image manifest");
    let other = Descriptor {
        media_type: image.media_type.clone(),
        digest: m.digest.clone(),
        size: m.bytes.len() as u64,
        artifact_type: Some(NOTATION.into()),
        annotations: Default::default(),
    };
    for (what, list) in [("empty", shared_list(&[])), ("signature omitted", shared_list(&[other]))] {
        let prefix = fresh_prefix();
        let agent = agent_files(&reg.host, &cluster_table(&redis.url(), &prefix)).start(&[]);
        let attacker = tier(&redis.url(), &prefix);
        attacker.put(SharedKind::Referrers, &key, &list, Instant::now() + Duration::from_secs(5)).await;
        let run = agent.verify(&signed, &image);
        assert_eq!(run.code, Some(0), "{what} shared list: {}", run.stdout);
        let report = agent.explain(&run.report_id());
        assert!(report.to_string().contains("re-decided without shared lists"), "{what}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_no_such_tag_for_the_cosign_sig_tag_leaves_a_signed_image_allowed() {
    let Some(redis) = Redis::start(None) else { return };
    let reg = Registry::start(RegistryOptions::default()).await;
    let case = pullgate_tests::fixtures_dir().join("cosign/key-valid");
    let digest = reg.attach_cosign_signature("cosigned", &case).await;
    let manifest = std::fs::read(case.join("manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let image = pullgate_wire::Descriptor {
        media_type: v["mediaType"].as_str().unwrap().to_string(),
        digest: digest.clone(),
        size: manifest.len() as u64,
    };
    let prefix = fresh_prefix();
    let host = &reg.host;
    let toml = format!(
        "defaultAction = \"deny\"\n[registries.\"{host}\"]\ninsecure = true\n[[scopes]]\nname = \"cosign-required\"\nimages = [\"{host}/**\"]\naction = \"verify\"\nverify = {{ require = [\"cosign\"] }}\n[sigstore]\nkeys = [\"keys/cosign.pub\"]\nrequireTlog = false\n{}",
        cluster_table(&redis.url(), &prefix)
    );
    let files = AgentFiles::new(&toml);
    std::fs::create_dir_all(files.config_dir.join("keys")).unwrap();
    let key = pullgate_tests::fixtures_dir().join("cosign/keys/cosign.pub");
    std::fs::copy(key, files.config_dir.join("keys/cosign.pub")).unwrap();
    let agent = files.start(&[]);
    let tag_key = format!("{host}/cosigned:{}.sig", digest.replace(':', "-"));
    tier(&redis.url(), &prefix).put(SharedKind::Tag, &tag_key, b"-", Instant::now() + Duration::from_secs(5)).await;
    let run = agent.verify(&format!("{host}/cosigned:latest"), &image);
    assert_eq!(run.code, Some(0), "a shared `-` hid the .sig tag: {}", run.stdout);
    assert!(agent.explain(&run.report_id()).to_string().contains("re-decided without shared lists"));
}

/// Attaches the SARIF report `doc` to the SBOM fixture image in `repo` as an
/// OCI referrer created at `created`; returns its list entry.
async fn attach_report(
    reg: &Registry,
    repo: &str,
    subject: &pullgate_wire::Descriptor,
    doc: Vec<u8>,
    created: &str,
) -> Descriptor {
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const SARIF: &str = "application/sarif+json";
    let doc_len = doc.len();
    let doc_digest = reg.push_blob(repo, doc).await;
    let empty = reg.push_blob(repo, b"{}".to_vec()).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SARIF,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": SARIF, "digest": doc_digest, "size": doc_len}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {"org.opencontainers.image.created": created},
    }))
    .unwrap();
    let digest = pullgate_testkit::sha256(&manifest);
    reg.push_manifest(repo, &digest, OCI_MANIFEST, manifest.clone()).await;
    Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest,
        size: manifest.len() as u64,
        artifact_type: Some(SARIF.into()),
        annotations: [("org.opencontainers.image.created".to_string(), created.to_string())].into_iter().collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_list_omitting_the_newer_critical_report_still_denies() {
    let Some(redis) = Redis::start(None) else { return };
    let reg = Registry::start(RegistryOptions::default()).await;
    let fixtures = pullgate_tests::fixtures_dir();
    reg.push_layout("scanned", &fixtures.join("sbom/image-oci-layout")).await;
    let image = pullgate_wire::Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: "sha256:155be390c87b442d3768cab4ff57a79ad3b2bd0399b95bf31725945b5f82b485".into(),
        size: 403,
    };
    let dirty_doc = std::fs::read(fixtures.join("sarif/grype-image.sarif.json")).unwrap();
    let mut clean: serde_json::Value = serde_json::from_slice(&dirty_doc).unwrap();
    clean["runs"][0]["results"] = serde_json::json!([]);
    let old = attach_report(&reg, "scanned", &image, serde_json::to_vec(&clean).unwrap(), "2026-01-01T00:00:00Z");
    let old = old.await;
    let new = attach_report(&reg, "scanned", &image, dirty_doc, "2026-06-01T00:00:00Z").await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [&old, &new],
    }))
    .unwrap();
    let tag = image.digest.replace(':', "-");
    reg.push_manifest("scanned", &tag, "application/vnd.oci.image.index.v1+json", index).await;

    let prefix = fresh_prefix();
    let host = &reg.host;
    let toml = format!(
        "defaultAction = \"deny\"\n[registries.\"{host}\"]\ninsecure = true\n[[scopes]]\nname = \"scanned\"\nimages = [\"{host}/**\"]\naction = \"verify\"\nverify = {{ require = [\"vulnerability\"] }}\n[vulnerability]\nseverity = \"high\"\n{}",
        cluster_table(&redis.url(), &prefix)
    );
    let agent = AgentFiles::new(&toml).start(&[]);
    // Redis holds a well-formed list with only the older, clean report (and a `-` for the tag-schema tag).
    let attacker = tier(&redis.url(), &prefix);
    let deadline = Instant::now() + Duration::from_secs(5);
    let key = format!("{host}/scanned\0{}\0", image.digest);
    attacker.put(SharedKind::Referrers, &key, &shared_list(std::slice::from_ref(&old)), deadline).await;
    attacker.put(SharedKind::Tag, &format!("{host}/scanned:{tag}"), b"-", deadline).await;
    let run = agent.verify(&format!("{host}/scanned:fixture"), &image);
    assert_eq!(run.code, Some(1), "the omitted critical report must still deny: {}", run.stdout);
    assert!(run.stdout.contains("CVE-1999-000"), "{}", run.stdout);
}
