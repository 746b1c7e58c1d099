//! The real syft SBOMs and Trivy/Grype SARIF reports in ../shared/fixtures,
//! through the parsers and rules, with hostile variants of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pullgate_sbom::license::LicenseMatcher;
use pullgate_sbom::purl::Purl;
use pullgate_sbom::rules::{Date, Exception, PackageMatch, PackageRule};
use pullgate_sbom::version::Scheme;
use pullgate_sbom::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
const IMAGE: &str = "sha256:155be390c87b442d3768cab4ff57a79ad3b2bd0399b95bf31725945b5f82b485";
const TRIVY_IMAGE_ID: &str = "sha256:961769676411f082461f9ef46626dd7a2d1e2b2a38e6a44364bcbecf51e66dd4";
const CAP: usize = 1 << 20;

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn sbom(rel: &str) -> Sbom {
    parse_sbom(&read(rel), None, CAP).unwrap()
}

fn image() -> ImageIds<'static> {
    ImageIds { manifest: IMAGE, config: None }
}

fn matchers(names: &[&str]) -> Vec<LicenseMatcher> {
    names.iter().map(|n| LicenseMatcher::parse(n).unwrap()).collect()
}

fn rule(purl: &str, versions: Option<&str>) -> PackageRule {
    PackageRule::new(PackageMatch::Purl(Purl::parse(purl).unwrap()), versions, None).unwrap()
}

#[test]
fn both_image_sboms_list_the_same_eight_packages_and_bind_to_the_image() {
    let spdx = sbom("sbom/image.syft.spdx.json");
    let cdx = sbom("sbom/image.syft.cdx.json");
    assert_eq!(spdx.format, SbomFormat::Spdx("SPDX-2.3".into()));
    assert_eq!(cdx.format, SbomFormat::CycloneDx("1.6".into()));
    assert_eq!(spdx.tool.as_deref(), Some("syft-1.18.1"));
    assert_eq!(cdx.tool.as_deref(), Some("syft-1.18.1"));
    let purls = |s: &Sbom| {
        let mut v: Vec<String> = s.packages.iter().filter_map(|p| p.purl.as_ref()).map(|p| p.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(purls(&spdx).len(), 8);
    assert_eq!((spdx.packages.len(), cdx.packages.len()), (8, 8), "the OS component is not a package");
    assert_eq!(purls(&spdx), purls(&cdx));
    assert_eq!(purls(&spdx).iter().filter(|p| p.starts_with("pkg:deb/debian/")).count(), 6);
    for s in [&spdx, &cdx] {
        assert_eq!(s.describes.digests, [IMAGE]);
        assert_eq!(s.describes.binding(image()), Binding::Bound);
        let other = ImageIds { manifest: TRIVY_IMAGE_ID, config: None };
        assert_eq!(s.describes.binding(other), Binding::Other(IMAGE.into()));
    }
    // Licences agree between the formats (CycloneDX entries joined with AND).
    for p in &spdx.packages {
        let q = cdx.packages.iter().find(|q| q.purl == p.purl).unwrap();
        let terms = |l: &License| match l {
            License::Expr(e) => {
                let mut t: Vec<String> = e.terms().iter().map(|t| t.to_string().to_lowercase()).collect();
                t.sort();
                t
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(terms(&p.license), terms(&q.license), "{}", p.name);
    }
}

#[test]
fn the_directory_sboms_describe_no_image() {
    for rel in ["sbom/rootfs-dir.syft.spdx.json", "sbom/rootfs-dir.syft.cdx.json"] {
        let s = sbom(rel);
        assert_eq!(s.packages.iter().filter(|p| p.purl.is_some()).count(), 8, "{rel}");
        assert_eq!(s.describes.binding(image()), Binding::Unclaimed, "{rel}");
    }
}

#[test]
fn license_rules_on_the_fixture() {
    let s = sbom("sbom/image.syft.spdx.json");
    let deny = SbomRules { deny_licenses: matchers(&["GPL-1.0-only"]), ..Default::default() };
    let d = deny.evaluate(&s, 20);
    assert!(!d.allowed);
    let items: Vec<&str> = d.findings.iter().map(|f| f.item.as_str()).collect();
    assert_eq!(d.findings.len(), 2, "{items:?}");
    assert!(items.iter().all(|i| i.contains("libssl3") || i.contains("openssl@")), "{items:?}");
    assert!(d.findings.iter().all(|f| f.rule == FindingRule::LicenseDenied && f.detail.contains("GPL-1.0-only")));
    let fine = SbomRules { deny_licenses: matchers(&["AGPL-3.0-only"]), ..Default::default() };
    assert!(fine.evaluate(&s, 20).allowed);

    let all = [
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "MPL-2.0",
        "LGPL-2.1-only",
        "Apache-2.0",
        "GPL-1.0-only",
        "LicenseRef-Artistic",
        "LicenseRef-GPL",
        "MIT",
        "Zlib",
    ];
    let allow = SbomRules { allow_licenses: Some(matchers(&all)), ..Default::default() };
    assert!(allow.evaluate(&s, 20).allowed, "{:?}", allow.evaluate(&s, 20));
    let without_zlib = SbomRules { allow_licenses: Some(matchers(&all[..9])), ..Default::default() };
    let d = without_zlib.evaluate(&s, 20);
    assert!(!d.allowed);
    assert_eq!(d.findings.len(), 1);
    assert_eq!(d.findings[0].rule, FindingRule::LicenseNotAllowed);
    assert!(d.findings[0].item.contains("zlib1g"));
}

#[test]
fn unknown_licences_fail_an_allow_list_unless_let_through() {
    let mut s = sbom("sbom/image.syft.cdx.json");
    s.packages[0].license = License::Unknown;
    let mut rules = SbomRules { allow_licenses: Some(matchers(&["MIT"])), ..Default::default() };
    let d = rules.evaluate(&s, 100);
    assert!(d.findings.iter().any(|f| f.rule == FindingRule::LicenseUnknown));
    rules.allow_unknown_licenses = true;
    assert!(!rules.evaluate(&s, 100).findings.iter().any(|f| f.rule == FindingRule::LicenseUnknown));
    let deny_only = SbomRules { deny_licenses: matchers(&["GPL-3.0-only"]), ..Default::default() };
    assert!(!deny_only.evaluate(&s, 100).findings.iter().any(|f| f.rule == FindingRule::LicenseUnknown));
}

#[test]
fn package_rules_with_debian_ranges_on_the_fixture() {
    let s = sbom("sbom/image.syft.spdx.json");
    let deny = |r: PackageRule| SbomRules { deny_packages: vec![r], ..Default::default() }.evaluate(&s, 20);
    // Installed 3.0.19-1~deb12u2: a range ending just above denies, one ending at it does not.
    let d = deny(rule("pkg:deb/debian/openssl", Some("< 3.0.19-1~deb12u3")));
    assert!(!d.allowed);
    assert_eq!(d.findings.len(), 1);
    assert!(d.findings[0].detail.contains("3.0.19-1~deb12u2"), "{:?}", d.findings);
    assert!(deny(rule("pkg:deb/debian/openssl", Some("< 3.0.19-1~deb12u2"))).allowed);
    assert!(deny(rule("pkg:deb/debian/openssl", Some("< 3.0.19-1"))).findings.len() == 1);
    assert!(!deny(rule("pkg:deb/debian/zlib1g", Some("< 1:1.2.14"))).allowed);
    assert!(deny(rule("pkg:deb/debian/zlib1g", Some("< 1.9"))).allowed, "epoch 1 sorts above any epoch-0 version");
    assert!(!deny(rule("pkg:pypi/urllib3", Some(">= 2.0.0, < 2.8.1"))).allowed);
    assert!(deny(rule("pkg:pypi/urllib3", Some("< 2.8.0"))).allowed);
    assert!(!deny(rule("pkg:pypi/requests", None)).allowed);
    assert!(deny(rule("pkg:deb/debian/curl", None)).allowed);
    let by_name =
        PackageRule::new(PackageMatch::Name("libc6".into()), Some("<= 2.36-9+deb12u14"), Some(Scheme::Debian));
    assert!(!deny(by_name.unwrap()).allowed);
    assert!(PackageRule::new(PackageMatch::Name("libc6".into()), Some("<= 1:2.36-9"), None).is_err());
}

#[test]
fn trivy_report_parses_and_binds_by_image_id() {
    let r = parse_report(&read("sarif/trivy-alpine-310.sarif.json"), CAP).unwrap();
    assert_eq!(r.tool, "Trivy dev");
    assert_eq!(r.vulnerabilities.len(), 4);
    let ids: Vec<&str> = r.vulnerabilities.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["CVE-2019-1549", "CVE-2019-1551", "CVE-2019-1549", "CVE-2019-1551"]);
    assert!(r.vulnerabilities.iter().all(|v| v.severity == Severity::Medium && v.score == Some(5.3)));
    assert_eq!(r.vulnerabilities[0].package.as_deref(), Some("libcrypto1.1@1.1.1c-r0"));
    assert_eq!(r.scanned_at, None);
    assert_eq!(r.describes.binding(ImageIds { manifest: IMAGE, config: Some(TRIVY_IMAGE_ID) }), Binding::Bound);
    assert_eq!(r.describes.binding(image()), Binding::Other(TRIVY_IMAGE_ID.into()));
}

#[test]
fn grype_report_parses_names_no_image_and_uses_security_severity() {
    let r = parse_report(&read("sarif/grype-image.sarif.json"), CAP).unwrap();
    assert_eq!(r.tool, "grype 0.0.0-dev");
    let got: Vec<(&str, Severity)> = r.vulnerabilities.iter().map(|v| (v.id.as_str(), v.severity)).collect();
    assert_eq!(got, [("CVE-1999-0001", Severity::High), ("CVE-1999-0002", Severity::High)]);
    assert_eq!(r.vulnerabilities[1].package.as_deref(), Some("pkg:deb/package-2@2.2.2"));
    assert_eq!(r.describes.binding(image()), Binding::Unclaimed);
}

fn at(date: &str) -> SystemTime {
    let d = Date::parse(date).unwrap().to_string();
    humantime::parse_rfc3339(&format!("{d}T12:00:00Z")).unwrap()
}

#[test]
fn vulnerability_rules_on_the_fixtures() {
    let trivy = parse_report(&read("sarif/trivy-alpine-310.sarif.json"), CAP).unwrap();
    let grype = parse_report(&read("sarif/grype-image.sarif.json"), CAP).unwrap();
    let now = at("2026-12-01");
    let eval = |rules: &VulnRules, r: &VulnReport| rules.evaluate(r, Some(now), now, 20);
    let high = VulnRules { severity: Some(Severity::High), ..Default::default() };
    assert!(eval(&high, &trivy).allowed, "medium findings pass a high threshold");
    let d = eval(&high, &grype);
    assert!(!d.allowed);
    assert_eq!(d.findings.len(), 2);
    let medium = VulnRules { severity: Some(Severity::Medium), ..Default::default() };
    let d = eval(&medium, &trivy);
    assert_eq!(d.findings.len(), 4, "{:?}", d.findings);
    let critical = VulnRules { severity: Some(Severity::Critical), ..Default::default() };
    assert!(eval(&critical, &grype).allowed);

    let listed = VulnRules { deny: vec!["CVE-2019-1551".into()], ..Default::default() };
    let d = eval(&listed, &trivy);
    assert_eq!(d.findings.iter().filter(|f| f.rule == FindingRule::CveDenied).count(), 2);

    let exception = |until: &str| Exception {
        id: "CVE-2019-1551".into(),
        until: Date::parse(until).unwrap(),
        reason: "no fix in 3.10".into(),
    };
    let excepted = VulnRules { exceptions: vec![exception("2026-12-01")], ..listed.clone() };
    let d = eval(&excepted, &trivy);
    assert!(d.allowed, "{d:?}");
    assert!(d.findings.iter().all(|f| f.rule == FindingRule::ExceptionApplied));
    let expired = VulnRules { exceptions: vec![exception("2026-11-30")], ..listed };
    let d = eval(&expired, &trivy);
    assert!(!d.allowed);
    assert!(d.findings[0].detail.contains("expired after 2026-11-30"));
}

#[test]
fn max_age_uses_the_scan_time_and_fails_closed_without_one() {
    let trivy = parse_report(&read("sarif/trivy-alpine-310.sarif.json"), CAP).unwrap();
    let now = at("2026-12-01");
    let week = VulnRules { max_age: Some(Duration::from_secs(7 * 86_400)), ..Default::default() };
    assert!(week.evaluate(&trivy, Some(at("2026-11-28")), now, 20).allowed);
    let old = week.evaluate(&trivy, Some(at("2026-11-20")), now, 20);
    assert_eq!(old.findings[0].rule, FindingRule::TooOld);
    let unknown = week.evaluate(&trivy, None, now, 20);
    assert_eq!(unknown.findings[0].rule, FindingRule::ScanTimeUnknown);
    // A report with its own invocation time.
    let text = String::from_utf8(read("sarif/trivy-alpine-310.sarif.json")).unwrap().replacen(
        "\"columnKind\"",
        "\"invocations\":[{\"executionSuccessful\":true,\"startTimeUtc\":\"2026-11-29T10:00:00Z\",\"endTimeUtc\":\"2026-11-29T10:01:00.5Z\"}],\"columnKind\"",
        1,
    );
    let r = parse_report(text.as_bytes(), CAP).unwrap();
    assert_eq!(r.scanned_at.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_795_946_460);
}

#[test]
fn findings_are_capped_and_counted() {
    let s = sbom("sbom/image.syft.spdx.json");
    let rules = SbomRules { allow_licenses: Some(vec![]), ..Default::default() };
    let d = rules.evaluate(&s, 3);
    assert_eq!(d.findings.len(), 3);
    assert_eq!(d.omitted, 5);
}

#[test]
fn hostile_documents_are_refused() {
    let spdx = read("sbom/image.syft.spdx.json");
    assert!(matches!(parse_sbom(&spdx, None, 1000), Err(ParseError::TooLarge { .. })));
    // Truncated, not JSON, wrong version, wrong format for the declared type.
    assert!(matches!(parse_sbom(&spdx[..spdx.len() / 2], None, CAP), Err(ParseError::Json { .. })));
    assert!(matches!(parse_sbom(b"junk", None, CAP), Err(ParseError::UnknownFormat)));
    let v3 = String::from_utf8(spdx.clone()).unwrap().replace("\"SPDX-2.3\"", "\"SPDX-3.0\"");
    assert!(matches!(parse_sbom(v3.as_bytes(), None, CAP), Err(ParseError::Unsupported { .. })));
    assert!(parse_sbom(&spdx, Some(SbomKind::CycloneDx), CAP).is_err());
    // A second `packages` array (duplicate key) cannot replace the first.
    let dup = String::from_utf8(spdx.clone()).unwrap().replacen("\"packages\"", "\"packages\":[],\"packages\"", 1);
    let err = parse_sbom(dup.as_bytes(), None, CAP).unwrap_err();
    assert!(err.to_string().contains("duplicate field"), "{err}");
    // Deep nesting in a field that is kept (CycloneDX components nest) hits the recursion limit;
    // in a skipped field it is skipped without recursion.
    let nest = |n: usize| "{\"name\":\"a\",\"components\":[".repeat(n) + &"]}".repeat(n);
    let deep = format!("{{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"components\":[{}]}}", nest(500));
    let err = parse_sbom(deep.as_bytes(), None, CAP).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let shallow = format!("{{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"components\":[{}]}}", nest(20));
    assert_eq!(parse_sbom(shallow.as_bytes(), None, CAP).unwrap().packages.len(), 20);
    let skipped = format!("{{\"spdxVersion\":\"SPDX-2.3\",\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_sbom(skipped.as_bytes(), None, CAP).unwrap().packages.is_empty());
    // Too many tiny packages.
    let many = format!(
        "{{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"components\":[{}]}}",
        vec!["{\"name\":\"a\"}"; MAX_PACKAGES + 1].join(",")
    );
    let err = parse_sbom(many.as_bytes(), None, 64 << 20).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
    // SARIF: wrong version, no runs, a junk level.
    assert!(parse_report(br#"{"version":"2.0.0","runs":[]}"#, CAP).is_err());
    assert!(parse_report(br#"{"version":"2.1.0","runs":[]}"#, CAP).is_err());
    let junk = br#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"x"}},"results":[{"ruleId":"CVE-1-2","level":"severe"}]}]}"#;
    assert!(parse_report(junk, CAP).is_err());
}

#[test]
fn a_document_naming_this_image_and_another_is_not_bound() {
    let text = String::from_utf8(read("sbom/image.syft.cdx.json")).unwrap().replacen(
        "\"type\":\"container\",",
        &format!("\"type\":\"container\",\"purl\":\"pkg:oci/x@{TRIVY_IMAGE_ID}\","),
        1,
    );
    let s = parse_sbom(text.as_bytes(), None, CAP).unwrap();
    assert_eq!(s.describes.binding(image()), Binding::Other(TRIVY_IMAGE_ID.into()));
}
