//! Property tests for registry host normalisation (issue 11: nothing written
//! next to an image can change its verdict).
//!
//! * Every spelling containerd could send for a host matches exactly the
//!   patterns its canonical spelling matches, in both directions.
//! * Look-alike hosts never match a pattern for the real host.
//! * Spellings with no canonical form are refused, never silently kept.
//! * `Display` of a parsed reference re-parses to the same reference.
//!
//! `PROPTEST_CASES` raises the number of cases (scripts/fuzz does).

use proptest::prelude::*;
use pullgate_reference::{Digest, Pattern, Reference};
use std::net::Ipv6Addr;

const D: &str = "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9";

fn digest() -> Digest {
    Digest::parse(D).expect("test digest")
}

/// A port that is kept as written (not the dropped 443 or the refused 80).
fn kept_port() -> impl Strategy<Value = u16> {
    (1u16..=65535).prop_filter("not a default port", |p| *p != 80 && *p != 443)
}

/// Each ASCII letter in upper or lower case at random.
fn recase(s: &str, mask: u64) -> String {
    s.chars().enumerate().map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect()
}

/// A canonical DNS name with a dot, never Docker Hub or under `.localhost`.
fn dns_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?\\.(io|com|dev|example)"
}

/// Eight IPv6 groups that are an ordinary address (not `::`, `::/96` or IPv4-mapped).
fn ipv6_groups() -> impl Strategy<Value = [u16; 8]> {
    prop::array::uniform8(prop_oneof![3 => Just(0u16), 1 => any::<u16>()])
        .prop_filter("ordinary address", |g| !(g[..6] == [0; 6] || g[..6] == [0, 0, 0, 0, 0, 0xffff]))
}

/// Another legal spelling of the address: padded groups, either case, and
/// `::` over any one run of zero groups (or none).
fn ipv6_spelling(g: [u16; 8], pad: [u8; 8], case: u64, cut: usize) -> String {
    let groups: Vec<String> =
        g.iter().zip(pad).map(|(v, w)| format!("{v:0width$x}", width = 1 + (w % 4) as usize)).collect();
    let zero_runs: Vec<(usize, usize)> = (0..8)
        .filter(|&i| g[i] == 0 && (i == 0 || g[i - 1] != 0))
        .map(|i| (i, (i..8).take_while(|&j| g[j] == 0).count()))
        .collect();
    let text = match zero_runs.get(cut % (zero_runs.len() + 1)) {
        None => groups.join(":"),
        Some(&(start, len)) => format!("{}::{}", groups[..start].join(":"), groups[start + len..].join(":")),
    };
    recase(&text, case)
}

/// `(canonical host, another spelling of it)`, for hosts whose connect spelling is unique.
fn spelled_host() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (dns_name(), any::<u64>()).prop_map(|(n, c)| (n.clone(), recase(&n, c))),
        (dns_name(), any::<u64>()).prop_map(|(n, c)| (n.clone(), format!("{}:443", recase(&n, c)))),
        (dns_name(), kept_port(), any::<u64>())
            .prop_map(|(n, p, c)| (format!("{n}:{p}"), format!("{}:{p}", recase(&n, c)))),
        (ipv6_groups(), any::<[u8; 8]>(), any::<u64>(), any::<usize>(), prop::option::of(kept_port())).prop_map(
            |(g, pad, c, cut, port)| {
                let canon = format!("[{}]", Ipv6Addr::from(g));
                let spelled = format!("[{}]", ipv6_spelling(g, pad, c, cut));
                match port {
                    Some(p) => (format!("{canon}:{p}"), format!("{spelled}:{p}")),
                    None => (canon, format!("{spelled}:443")),
                }
            }
        ),
        (
            prop::sample::select(vec![
                "docker.io",
                "index.docker.io",
                "registry-1.docker.io",
                "registry.hub.docker.com"
            ]),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(h, c, tls)| (
                "docker.io".to_string(),
                format!("{}{}", recase(h, c), if tls { ":443" } else { "" })
            )),
        (any::<[u8; 4]>(), kept_port()).prop_map(|(o, p)| {
            // 1-126: never 0.x or loopback (loopback spellings are one registry, tested below).
            let v4 = format!("{}.{}.{}.{}", o[0] % 126 + 1, o[1], o[2], o[3]);
            (format!("{v4}:{p}"), format!("{v4}:{p}"))
        }),
    ]
}

/// A loopback spelling containerd would dial on this node for `port`.
fn loopback_spelling(port: u16) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(move |c| format!("{}:{port}", recase("localhost", c))),
        any::<[u8; 3]>().prop_map(move |o| format!("127.{}.{}.{}:{port}", o[0], o[1], o[2])),
        (any::<[u8; 8]>(), any::<u64>(), any::<usize>()).prop_map(move |(pad, c, cut)| format!(
            "[{}]:{port}",
            ipv6_spelling([0, 0, 0, 0, 0, 0, 0, 1], pad, c, cut)
        )),
    ]
}

/// A host that only looks like `canonical`: extended, prefixed, or nested.
fn look_alike(canonical: &str, junk: &str) -> Vec<String> {
    let (name, port) = match canonical.rsplit_once(':') {
        Some((n, p)) if !canonical.ends_with(']') => (n.to_string(), format!(":{p}")),
        _ => (canonical.to_string(), String::new()),
    };
    vec![
        format!("{name}.{junk}.com{port}"),
        format!("{junk}-{name}{port}"),
        format!("{junk}.{name}{port}"),
        format!("{name}{junk}{port}"),
        format!("{name}{port}{}", if port.is_empty() { ":8443" } else { "1" }),
    ]
}

fn repo() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}"
}

proptest! {
    #[test]
    fn every_spelling_is_the_canonical_host((canon, spelled) in spelled_host(), path in repo()) {
        let d = digest();
        let by_spelling = Reference::parse(&format!("{spelled}/{path}:v1")).unwrap();
        let by_canon = Reference::parse(&format!("{canon}/{path}:v1")).unwrap();
        prop_assert_eq!(by_spelling.host(), canon.as_str(), "{} should normalise to {}", spelled, canon);
        prop_assert_eq!(&by_spelling, &by_canon);
        for (pattern, reference) in [(&canon, &by_spelling), (&spelled, &by_canon)] {
            for form in [format!("{pattern}/{path}"), format!("{pattern}/**"), format!("{pattern}/{path}:v1")] {
                let p = Pattern::parse(&form).unwrap();
                prop_assert!(p.matches(reference, &d), "pattern {} should match {}", form, reference);
            }
        }
    }

    #[test]
    fn every_loopback_spelling_matches_alike(
        (port, x, y) in kept_port().prop_flat_map(|p| (Just(p), loopback_spelling(p), loopback_spelling(p))),
        path in repo(),
    ) {
        let d = digest();
        let p = Pattern::parse(&format!("{x}/{path}")).unwrap();
        let r = Reference::parse(&format!("{y}/{path}")).unwrap();
        prop_assert!(p.matches(&r, &d), "loopback pattern {} should match {}", p, r);
        let other_port = if port == 65535 { 1 } else { port + 1 };
        let elsewhere = Reference::parse(&format!("localhost:{other_port}/{path}")).unwrap();
        prop_assert!(!p.matches(&elsewhere, &d), "{} must not match another port {}", p, elsewhere);
    }

    #[test]
    fn look_alikes_never_match((canon, _) in spelled_host(), junk in "[a-z0-9]{1,5}", path in repo()) {
        prop_assume!(junk != "index", "index.docker.io really is Docker Hub");
        let d = digest();
        let p = Pattern::parse(&format!("{canon}/**")).unwrap();
        for host in look_alike(&canon, &junk) {
            if let Ok(r) = Reference::parse(&format!("{host}/{path}")) {
                prop_assert!(!p.matches(&r, &d), "look-alike {} matched {}", r, p);
            }
        }
    }

    #[test]
    fn zero_padded_ports_are_refused(name in dns_name(), port in 0u16..=65535, zeros in 1usize..4) {
        let host = format!("{name}:{}{port}", "0".repeat(zeros));
        let err = Reference::parse(&format!("{host}/app")).unwrap_err().to_string();
        prop_assert!(err.contains(&host), "{}", err);
        let pattern = format!("{host}/app");
        prop_assert!(Pattern::parse(&pattern).is_err(), "{} was accepted as a pattern", pattern);
    }

    #[test]
    fn loose_ipv4_forms_are_refused(o in any::<[u8; 4]>(), how in 0u8..4, port in kept_port()) {
        let parts = o.map(|b| b.to_string());
        let loose = match how {
            0 => format!("0{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[3]),
            1 => format!("{}.{}.{}", parts[0], parts[1], u32::from(o[2]) << 8 | u32::from(o[3])),
            2 => format!("0x{:x}.{}.{}.{}", o[0], parts[1], parts[2], parts[3]),
            _ => u32::from_be_bytes(o).to_string(),
        };
        prop_assert!(Reference::parse(&format!("{loose}:{port}/app")).is_err(), "{} was accepted", loose);
        prop_assert!(Pattern::parse(&format!("{loose}:{port}/**")).is_err(), "{} was accepted as a pattern", loose);
    }

    #[test]
    fn display_reparses_to_itself(s in "[a-zA-Z0-9.:/@_\\[\\]-]{1,48}") {
        if let Ok(r) = Reference::parse(&s) {
            let shown = r.to_string();
            let again = Reference::parse(&shown).unwrap_or_else(|e| panic!("{s:?} displays as {shown:?}, which does not parse: {e}"));
            prop_assert_eq!(&again, &r, "{:?} → {:?}", s, shown);
            prop_assert_eq!(again.to_string(), shown);
        }
    }

    #[test]
    fn display_of_spellings_reparses_to_itself((_, spelled) in spelled_host(), path in repo(), tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}")) {
        let s = match &tag { Some(t) => format!("{spelled}/{path}:{t}"), None => format!("{spelled}/{path}") };
        let r = Reference::parse(&s).unwrap();
        prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }
}

/// The spellings the issue reported as escaping a scope for the canonical host.
#[test]
fn reported_spellings_match_or_are_refused() {
    let d = digest();
    let cases = [
        ("localhost:5101/team/app", "127.0.0.1:5101/team/app"),
        ("127.0.0.1:5101/team/app", "localhost:5101/team/app"),
        ("docker.io/library/alpine", "docker.io:443/library/alpine"),
        ("docker.io/library/alpine", "registry-1.docker.io:443/library/alpine"),
        ("docker.io/library/alpine", "registry-1.docker.io/alpine"),
        ("docker.io/library/alpine", "INDEX.docker.io/alpine"),
    ];
    for (pattern, spelled) in cases {
        let p = Pattern::parse(pattern).unwrap();
        assert!(p.matches(&Reference::parse(spelled).unwrap(), &d), "{pattern} should match {spelled}");
    }
    for refused in ["localhost:05101/team/app", "[::ffff:127.0.0.1]:5101/team/app", "[::ffff:7f00:1]:5101/x"] {
        assert!(Reference::parse(refused).is_err(), "{refused} should be refused");
    }
    for alike in ["docker.io.evil.com/library/alpine", "evil-docker.io/library/alpine", "localhost.evil/library/alpine"]
    {
        let r = Reference::parse(alike).unwrap();
        assert!(!Pattern::parse("docker.io/**").unwrap().matches(&r, &d), "{alike}");
        assert!(!Pattern::parse("localhost/**").unwrap().matches(&r, &d), "{alike}");
    }
}
