//! The decision cache and single flight, end to end: a real agent killed
//! with SIGKILL in the middle of heavy cache writes must always come back and
//! never serve a wrong verdict; concurrent pulls of one image cost the
//! registry exactly one verification, and repeated pulls (also after a
//! restart) cost nothing.

use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, notation_config};
use pullgate_tests::{AgentFiles, MANIFEST_MEDIA_TYPE, fixtures_dir, raw_request, verify_request};
use pullgate_wire::{Descriptor, Response, Verdict};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const POLICY: &str = r#"
defaultAction = "deny"
[[scopes]]
name = "good"
images = ["registry.example/good/**"]
action = "allow"
[[scopes]]
name = "bad"
images = ["registry.example/bad/**"]
action = "deny"
"#;

fn digest(n: u64) -> String {
    format!("sha256:{n:064x}")
}

fn descriptor(n: u64) -> Descriptor {
    Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: digest(n), size: 1000 + n }
}

/// Even numbers are pulled from the allowed repository, odd ones from the denied one.
fn name(n: u64) -> String {
    if n % 2 == 0 { format!("registry.example/good/app:{n}") } else { format!("registry.example/bad/app:{n}") }
}

fn expected(n: u64) -> Verdict {
    if n % 2 == 0 { Verdict::Allow } else { Verdict::Deny }
}

fn ask(socket: &std::path::Path, n: u64) -> Option<Verdict> {
    let mut line = serde_json::to_vec(&verify_request(&name(n), &descriptor(n))).ok()?;
    line.push(b'\n');
    let answer = pullgate_tests::raw_exchange(socket, &line, Duration::from_secs(5)).ok()?;
    match serde_json::from_slice::<Response>(&answer).ok()? {
        Response::Decision(d) => Some(d.verdict),
        _ => None,
    }
}

#[test]
fn sigkill_during_cache_writes_never_gives_a_wrong_verdict() {
    let mut files = AgentFiles::new(&format!("{POLICY}\n[cache]\ndenyTtl = \"1h\"\n"));
    let next = Arc::new(AtomicU64::new(0));
    let mut answered_before_kills = 0;
    for round in 0..20 {
        let agent = files.start(&[]);
        // After a restart, everything answered in earlier rounds must still be right,
        // from the cache or decided again.
        let written = next.load(Ordering::SeqCst);
        for n in (0..written).step_by((written as usize / 200).max(1)) {
            let v = ask(&agent.socket, n).unwrap_or_else(|| panic!("round {round}: no answer for {n}"));
            assert_eq!(v, expected(n), "round {round}: wrong verdict for image {n} after a SIGKILL");
        }
        // Heavy writes from 4 clients, killed at a point that differs per round.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (next, stop, socket) = (next.clone(), stop.clone(), agent.socket.clone());
                std::thread::spawn(move || {
                    let mut ok = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        match ask(&socket, n) {
                            Some(v) => {
                                assert_eq!(v, expected(n), "wrong verdict for image {n}");
                                ok += 1;
                            }
                            None => break,
                        }
                    }
                    ok
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        files = agent.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            answered_before_kills += w.join().expect("a writer thread panicked");
        }
    }
    assert!(answered_before_kills > 1000, "the test wrote too little to mean anything: {answered_before_kills}");
    // The cache persisted across the kills: a final start answers old images from it.
    let agent = files.start(&[]);
    for n in 0..200 {
        assert_eq!(ask(&agent.socket, n), Some(expected(n)));
    }
    let hits = agent.status()["counters"]["cacheHits"].as_u64().unwrap();
    assert!(hits > 0, "nothing survived 20 restarts in the cache: {}", agent.status());
}

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

fn notation_agent(host: &str, state: Option<&std::path::Path>) -> AgentFiles {
    let mut files = AgentFiles::new(&notation_config(host, ""));
    install_notation_trust(&files.config_dir, "trustpolicy.json", "e2e");
    if let Some(s) = state {
        files.state_dir = s.to_path_buf();
    }
    files
}

fn wait_for_log_quiet(reg: &Registry) -> usize {
    // The registry writes its access log asynchronously; wait until it stops growing.
    let mut last = reg.access_count();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        let now = reg.access_count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn concurrent_and_repeated_pulls_cost_one_verification() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = rt.block_on(async {
        let r = Registry::start(RegistryOptions::default()).await;
        r.push_layout("signed", &fixtures_dir().join("notation/oci-layouts/e2e-valid-signature")).await;
        r
    });
    let subject = Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: SUBJECT.into(), size: 517 };
    let name = format!("{}/signed:v1", reg.host);

    // One verification on its own: how many registry requests it costs.
    let before = wait_for_log_quiet(&reg);
    {
        let agent = notation_agent(&reg.host, None).start(&[]);
        let run = agent.verify(&name, &subject);
        assert_eq!(run.code, Some(0), "{}", run.stdout);
    }
    let one = wait_for_log_quiet(&reg) - before;
    assert!(one >= 3, "a verification needs referrers, a signature manifest and an envelope: {one}");

    // 16 concurrent pulls of the same image on a fresh agent: the same cost.
    let state = tempfile::tempdir().unwrap();
    let agent = notation_agent(&reg.host, Some(state.path())).start(&[]);
    let before = wait_for_log_quiet(&reg);
    let agent = Arc::new(agent);
    let pulls: Vec<_> = (0..16)
        .map(|_| {
            let (agent, name, subject) = (agent.clone(), name.clone(), subject.clone());
            std::thread::spawn(move || agent.verify(&name, &subject))
        })
        .collect();
    for p in pulls {
        let run = p.join().unwrap();
        assert_eq!(run.code, Some(0), "{}", run.stdout);
    }
    let storm = wait_for_log_quiet(&reg) - before;
    assert_eq!(storm, one, "16 concurrent pulls must cost the registry one verification");

    // Repeated pulls are answered from the cache: no registry request at all.
    let before = wait_for_log_quiet(&reg);
    for _ in 0..10 {
        match raw_request(&agent.socket, &verify_request(&name, &subject)) {
            Response::Decision(d) => assert_eq!(d.verdict, Verdict::Allow),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wait_for_log_quiet(&reg) - before, 0, "repeated pulls must not reach the registry");
    let status = agent.status();
    assert!(status["counters"]["cacheHits"].as_u64().unwrap() >= 10, "{status}");

    // After a clean restart (SIGTERM: drain, flush), the on-disk cache still answers.
    let mut agent = Arc::try_unwrap(agent).ok().expect("no other holder");
    assert!(agent.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let files = agent.kill();
    let agent = files.start(&[]);
    let before = wait_for_log_quiet(&reg);
    let run = agent.verify(&name, &subject);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(wait_for_log_quiet(&reg) - before, 0, "the cache survives a restart");
    assert!(agent.explain(&run.report_id())["source"] == "cache");
}
