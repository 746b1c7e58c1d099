//! Tests of config parsing and loading.

use super::*;

fn ok(s: &str) -> (Config, Vec<Issue>) {
    parse_main(s.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
}
fn bad(s: &str) -> Vec<String> {
    parse_main(s.as_bytes()).expect_err("should be invalid").iter().map(ToString::to_string).collect()
}

#[test]
fn registry_keys_must_be_canonical_hosts() {
    let errs = bad("[registries.\"ghcr.io:443\"]\n[registries.\"localhost:05000\"]\n");
    assert!(
        errs.iter().any(|e| e.contains("registries.\"ghcr.io:443\"") && e.contains("write \"ghcr.io\"")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("localhost:05000") && e.contains("leading zeros")), "{errs:?}");
    ok("[registries.\"localhost:5000\"]\n[registries.\"[::1]:5000\"]\n");
}

#[test]
fn content_store_bound_in_bytes() {
    assert_eq!(ok("").0.cache.content_max_bytes, crate::cache::DEFAULT_CONTENT_MAX_BYTES);
    assert_eq!(ok("[cache]\ncontentMaxBytes = 1048576\n").0.cache.content_max_bytes, 1_048_576);
    assert_eq!(ok("[cache]\ncontentMaxBytes = 0\n").0.cache.content_max_bytes, 0);
    let errs = bad("[cache]\ncontentMaxBytes = 99999999999999\n");
    assert!(errs.iter().any(|e| e.contains("cache.contentMaxBytes") && e.contains("99999999999999")), "{errs:?}");
}

#[test]
fn defaults() {
    let (c, w) = ok("");
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.failure_policy, FailurePolicy::Closed);
    assert_eq!(c.default_action, DefaultAction::Deny);
    assert_eq!(c.allowed_uids, vec![0]);
    assert!(w.is_empty());
}

#[test]
fn full_config() {
    let (c, w) = ok(r#"
        mode = "audit"
        notation = { trustPolicy = "n/trustpolicy.json", trustStore = "n/store" }
        sigstore = { keys = ["k/cosign.pub"], requireTlog = false }
        failurePolicy = "open"
        defaultAction = "allow"
        allowedUids = [0, 1000]
        allowlist = ["registry.k8s.io/pause:3.10", "ghcr.io/acme/agent@sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9"]
        [[scopes]]
        name = "acme"
        images = ["ghcr.io/acme/**"]
        action = "verify"
        verify = { require = ["notation", "cosign"], match = "any" }
        [[scopes]]
        name = "hub"
        images = ["docker.io/**"]
        action = "deny"
        reason = "pull through the mirror"
    "#);
    assert_eq!(c.mode, Mode::Audit);
    assert_eq!(c.scopes.len(), 2);
    match &c.scopes[0].action {
        Action::Verify(r) => {
            assert_eq!(r.verifiers(), &[VerifierKind::Notation, VerifierKind::Cosign]);
            assert_eq!(r.combine(), Combine::Any);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.len(), 1, "the tag entry warns, the pinned one does not");
    assert_eq!(w[0].field, "allowlist[0]");
}

#[test]
fn every_issue_reported_with_field() {
    let e = bad(r#"
        allowedUids = []
        allowlist = ["*.io/x", "ok.io/y"]
        [[scopes]]
        name = "a"
        images = []
        action = "verify"
        [[scopes]]
        name = "a"
        images = ["ghcr.io/acme-evil/**", "ghcr.io/**/x"]
        action = "allow"
        reason = "no"
    "#);
    let joined = e.join("\n");
    for needle in [
        "pullgate.toml: allowedUids:",
        "allowlist[0]",
        "scopes[0].images: empty",
        "scopes[0].verify:",
        "scopes[1].name: \"a\" is used",
        "scopes[1].images[1]",
        "scopes[1].reason",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in\n{joined}");
    }
}

#[test]
fn sigstore_table_is_validated() {
    let e = bad(r#"
        [[scopes]]
        name = "c"
        images = ["ghcr.io/acme/**"]
        action = "verify"
        verify = { require = ["cosign"] }
    "#)
    .join("\n");
    assert!(e.contains("scopes[0].verify.require: cosign and sigstore need a [sigstore] table"), "{e}");
    let e = bad(r#"
        [sigstore]
        identities = [
            { issuer = "https://token.actions.githubusercontent.com", subjectRegex = "(" },
            { issuer = "x", subject = "y", subjectRegex = "z" },
            { subject = "y" },
            { issuer = "https://accounts.google.com", subject = "ci@example.com" },
        ]
        keys = ["../escape.pub"]
    "#)
    .join("\n");
    for needle in [
        "sigstore.identities[0].subject",
        "sigstore.identities[1].subject: give the exact value or the regex, not both",
        "sigstore.identities[2].issuer: missing",
        "sigstore.keys[0]",
        "sigstore.identities: keyless identities need Fulcio roots",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in\n{e}");
    }
}

#[test]
fn parse_errors_name_location_and_field() {
    let e = bad("mode = \"enforce\"\nmodee = 1\n").join("\n");
    assert!(e.contains("line 2") && e.contains("modee"), "{e}");
    let e = bad("mode = \"strict\"").join("\n");
    assert!(e.contains("strict") && e.contains("line 1"), "{e}");
    let e = bad("[[scopes]]\nname='x'\nimages=['a']\naction='verify'\nverify={require=['pgp']}").join("\n");
    assert!(e.contains("pgp"), "{e}");
}

#[test]
fn generation_changes_with_any_file() {
    let a = vec![("pullgate.toml".to_string(), b"x".to_vec())];
    let mut b = a.clone();
    b.push(("trust/ca.pem".into(), b"y".to_vec()));
    assert_ne!(generation_id(&a), generation_id(&b));
    assert_eq!(generation_id(&a), generation_id(&a.clone()));
    let c = vec![("pullgate.tom".to_string(), b"lx".to_vec())];
    assert_ne!(generation_id(&a), generation_id(&c));
}

#[test]
fn load_dir_reads_and_skips_dotfiles() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(load_dir(dir.path()), Err(ConfigError::Missing { .. })));
    std::fs::write(dir.path().join(CONFIG_FILE), "mode = \"audit\"").unwrap();
    let g1 = load_dir(dir.path()).unwrap().generation;
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("..data/x"), "ignored").unwrap();
    assert_eq!(load_dir(dir.path()).unwrap().generation, g1);
    std::fs::write(dir.path().join("extra.rego"), "package x").unwrap();
    let g2 = load_dir(dir.path()).unwrap().generation;
    assert_ne!(g2, g1);
    // A dot file inside a trust store is read by the store, so it changes the generation.
    std::fs::create_dir_all(dir.path().join("store/x509/ca/a")).unwrap();
    std::fs::write(dir.path().join("store/x509/ca/a/.old.pem"), "x").unwrap();
    assert_ne!(load_dir(dir.path()).unwrap().generation, g2);
}
