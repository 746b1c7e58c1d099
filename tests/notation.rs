//! Notation end to end: `pullgate-verifier` exec'd as containerd does → the
//! agent → a real Debian `docker-registry` holding the Notation fixture
//! layouts (pushed with their referrers-tag indexes) → verdict. One case per
//! Notation row of `shared/fixtures/PROVENANCE.md` (section 1a), plus the
//! registry failure modes: tampered bytes, wrong credentials, unreachable.

use pullgate_testkit::{Registry, RegistryOptions, install_notation_trust, notation_config};
use pullgate_tests::{AgentFiles, MANIFEST_MEDIA_TYPE, fixtures_dir};
use pullgate_wire::Descriptor;

const SUBJECT: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

fn subject() -> Descriptor {
    Descriptor { media_type: MANIFEST_MEDIA_TYPE.into(), digest: SUBJECT.into(), size: 517 }
}

fn notation_fixtures() -> std::path::PathBuf {
    fixtures_dir().join("notation")
}

/// A registry with every fixture layout pushed, one repository each.
fn registry(rt: &tokio::runtime::Runtime, opts: RegistryOptions) -> Registry {
    rt.block_on(async {
        let reg = Registry::start(opts).await;
        for layout in [
            "e2e-valid-signature",
            "e2e-unsigned",
            "e2e-valid-multiple-signatures",
            "e2e-expired-signature",
            "e2e-with-expired-cert",
            "e2e-invalid-signature",
        ] {
            reg.push_layout(layout, &notation_fixtures().join("oci-layouts").join(layout)).await;
        }
        reg
    })
}

/// An agent config verifying everything on `host` with Notation, using the
/// fixture trust policy `policy` and the fixture CA store `store` (installed
/// under the name `e2e`, the name the fixture policies use).
fn agent_files(host: &str, policy: &str, store: &str, extra_toml: &str) -> AgentFiles {
    let files = AgentFiles::new(&notation_config(host, extra_toml));
    install_notation_trust(&files.config_dir, policy, store);
    files
}

struct Case {
    layout: &'static str,
    policy: &'static str,
    store: &'static str,
    allow: bool,
    /// Text the verdict line must contain (the reason class).
    reason: &'static str,
}

fn check(host: &str, case: &Case) -> Result<(), String> {
    let agent = agent_files(host, case.policy, case.store, "").start(&[]);
    let name = format!("{host}/{}:v1", case.layout);
    let run = agent.verify(&name, &subject());
    let line = run.stdout.trim_end().to_string();
    let want = if case.allow { 0 } else { 1 };
    if run.code != Some(want) || !line.contains(case.reason) || line.lines().count() != 1 {
        return Err(format!(
            "{} with {} / store {}: expected exit {want} and {:?}, got {:?}: {line}\nagent stderr:\n{}",
            case.layout,
            case.policy,
            case.store,
            case.reason,
            run.code,
            agent.stderr()
        ));
    }
    // The report names the signatures examined and their checks.
    let id = line.rsplit("(report ").next().and_then(|s| s.strip_suffix(')')).ok_or("no report id")?;
    let report = agent.explain(id);
    let runs = report["verification"].as_array().ok_or("report has no verification")?;
    if runs.first().map(|r| r["verifier"] == "notation") != Some(true) {
        return Err(format!("report does not show the notation run: {report}"));
    }
    if case.layout != "e2e-unsigned"
        && case.policy != "skip_trustpolicy.json"
        && runs[0]["signatures"].as_array().is_none_or(|s| s.is_empty())
    {
        return Err(format!("report lists no signature for {}: {report}", case.layout));
    }
    Ok(())
}

fn run_cases(cases: &[Case]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt, RegistryOptions::default());
    let failures: Vec<String> = cases.iter().filter_map(|c| check(&reg.host, c).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn valid_signature_rows() {
    run_cases(&[
        Case {
            layout: "e2e-valid-signature",
            policy: "trustpolicy.json",
            store: "e2e",
            allow: true,
            reason: "verified",
        },
        Case {
            layout: "e2e-valid-signature",
            policy: "trustpolicy.json",
            store: "e2e-other",
            allow: false,
            reason: "authenticity failed",
        },
        Case {
            layout: "e2e-valid-signature",
            policy: "invalid_trusted_identity_trustpolicy.json",
            store: "e2e",
            allow: false,
            reason: "trustedIdentity failed",
        },
        Case {
            layout: "e2e-valid-signature",
            policy: "valid_trusted_identity_trustpolicy.json",
            store: "e2e",
            allow: true,
            reason: "verified",
        },
        Case {
            layout: "e2e-valid-multiple-signatures",
            policy: "trustpolicy.json",
            store: "e2e",
            allow: true,
            reason: "verified",
        },
        Case {
            layout: "e2e-unsigned",
            policy: "trustpolicy.json",
            store: "e2e",
            allow: false,
            reason: "no Notation signature found",
        },
    ]);
}

#[test]
fn expiry_rows() {
    run_cases(&[
        Case {
            layout: "e2e-expired-signature",
            policy: "trustpolicy.json",
            store: "e2e",
            allow: false,
            reason: "expiry failed",
        },
        Case {
            layout: "e2e-expired-signature",
            policy: "permissive_trustpolicy.json",
            store: "e2e",
            allow: true,
            reason: "logged failures: expiry",
        },
        Case {
            layout: "e2e-expired-signature",
            policy: "audit_trustpolicy.json",
            store: "e2e",
            allow: true,
            reason: "logged failures: expiry",
        },
        Case {
            layout: "e2e-with-expired-cert",
            policy: "trustpolicy.json",
            store: "e2e-expired",
            allow: false,
            reason: "authenticTimestamp failed",
        },
        Case {
            layout: "e2e-with-expired-cert",
            policy: "permissive_trustpolicy.json",
            store: "e2e-expired",
            allow: true,
            reason: "logged failures: authenticTimestamp",
        },
        Case {
            layout: "e2e-with-expired-cert",
            policy: "audit_trustpolicy.json",
            store: "e2e-expired",
            allow: true,
            reason: "logged failures: authenticTimestamp",
        },
    ]);
}

#[test]
fn invalid_signature_rows() {
    let mut cases: Vec<Case> = ["trustpolicy.json", "permissive_trustpolicy.json", "audit_trustpolicy.json"]
        .into_iter()
        .map(|policy| Case {
            layout: "e2e-invalid-signature",
            policy,
            store: "e2e",
            allow: false,
            reason: "integrity failed",
        })
        .collect();
    cases.push(Case {
        layout: "e2e-invalid-signature",
        policy: "skip_trustpolicy.json",
        store: "e2e",
        allow: true,
        reason: "level skip",
    });
    run_cases(&cases);
}

#[test]
fn tampered_envelope_is_denied_whatever_the_failure_policy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt, RegistryOptions::default());
    // The envelope blob of the valid signature (PROVENANCE 1a: c9af07e0…, 2070 bytes).
    let blob = std::fs::read_dir(notation_fixtures().join("oci-layouts/e2e-valid-signature/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("c9af07e0"))
        .expect("envelope blob in the layout");
    let digest = format!("sha256:{}", blob.file_name().unwrap().to_str().unwrap());
    let stored = reg.blob_data_path(&digest);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();

    let agent = agent_files(&reg.host, "trustpolicy.json", "e2e", "").start(&[]);
    let run = agent.verify(&format!("{}/e2e-valid-signature:v1", reg.host), &subject());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("does not match its digest") && !run.stdout.contains("failure policy"),
        "{}",
        run.stdout
    );

    // Tampering is evidence, not an outage: even a fail-open node denies it.
    let agent = agent_files(&reg.host, "trustpolicy.json", "e2e", "failurePolicy = \"open\"\n").start(&[]);
    let run = agent.verify(&format!("{}/e2e-valid-signature:v1", reg.host), &subject());
    assert_eq!(run.code, Some(1), "fail-open still denies tampered bytes: {}", run.stdout);
    assert!(
        run.stdout.contains("does not match its digest") && !run.stdout.contains("failure policy"),
        "{}",
        run.stdout
    );
}

#[test]
fn registry_auth_and_reachability() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = registry(&rt, RegistryOptions { htpasswd: Some(("pullgate".into(), "s3cret".into())), tls: true });
    let name = format!("{}/e2e-valid-signature:v1", reg.host);
    let ca = reg.ca_pem.clone().unwrap();
    let with_ca = |files: &AgentFiles| {
        std::fs::write(files.config_dir.join("registry-ca.pem"), &ca).unwrap();
        let toml = std::fs::read_to_string(files.config_dir.join("pullgate.toml")).unwrap();
        files.write_config(&toml.replace("insecure = true", "ca = \"registry-ca.pem\""));
    };

    // Wrong credentials: a precise reason, through the failure policy.
    let docker_config = tempfile::NamedTempFile::new().unwrap();
    let auth = |user: &str, pass: &str| {
        use std::io::Write;
        let b64 = base64_encode(format!("{user}:{pass}").as_bytes());
        let json = format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host);
        let mut f = std::fs::File::create(docker_config.path()).unwrap();
        f.write_all(json.as_bytes()).unwrap();
    };
    auth("pullgate", "wrong");
    let extra = format!("[auth]\ndockerConfig = \"{}\"\n", docker_config.path().display());
    let files = agent_files(&reg.host, "trustpolicy.json", "e2e", &extra);
    with_ca(&files);
    let agent = files.start(&[]);
    let run = agent.verify(&name, &subject());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("refused access") && run.stdout.contains("failure policy closed"), "{}", run.stdout);
    assert!(!run.stdout.contains("wrong") && !agent.stderr().contains("wrong"), "credentials never printed");
    drop(agent);

    // Right credentials over TLS with the registry's CA: verified.
    auth("pullgate", "s3cret");
    let files = agent_files(&reg.host, "trustpolicy.json", "e2e", &extra);
    with_ca(&files);
    let agent = files.start(&[]);
    let run = agent.verify(&name, &subject());
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, agent.stderr());
    assert!(!agent.stderr().contains("s3cret"));
    drop(agent);

    // A docker credential helper (credHelpers) on the agent's PATH supplies them instead.
    let helpers = tempfile::tempdir().unwrap();
    let helper = helpers.path().join("docker-credential-pgtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{}\" ] || exit 1\necho '{{\"Username\":\"pullgate\",\"Secret\":\"s3cret\"}}'\n",
            reg.host
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(docker_config.path(), format!(r#"{{"credHelpers":{{"{}":"pgtest"}}}}"#, reg.host)).unwrap();
    let files = agent_files(&reg.host, "trustpolicy.json", "e2e", &extra);
    with_ca(&files);
    let path = format!("{}:{}", helpers.path().display(), std::env::var("PATH").unwrap_or_default());
    let agent = files.start_with_env(&[], &[("PATH", &path)]);
    let run = agent.verify(&name, &subject());
    assert_eq!(run.code, Some(0), "credentials from the helper: {}\n{}", run.stdout, agent.stderr());
    drop(agent);

    // Unreachable registry: nothing listens on the port any more.
    let host = reg.host.clone();
    drop(reg);
    let files = agent_files(&host, "trustpolicy.json", "e2e", "");
    let agent = files.start(&[]);
    let run = agent.verify(&name, &subject());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("unreachable") && run.stdout.contains("failure policy closed"), "{}", run.stdout);
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
