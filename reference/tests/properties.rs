//! Property tests for the reference parser and the pattern matcher.

use proptest::prelude::*;
use pullgate_reference::{Digest, Pattern, Reference};

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,8}\\.(io|com|dev)",
        // 443 is dropped and 80 refused by host normalisation (see host_spelling.rs).
        ("[a-z][a-z0-9]{0,8}\\.io", (1u16..65535).prop_filter("not a default port", |p| *p != 80 && *p != 443))
            .prop_map(|(h, p)| format!("{h}:{p}")),
        Just("localhost:5000".to_string()),
    ]
}

fn digest() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"))
}

fn repo() -> impl Strategy<Value = (String, Vec<String>)> {
    (host(), prop::collection::vec(component(), 1..4))
}

proptest! {
    #[test]
    fn parse_display_roundtrip((h, comps) in repo(), tag in proptest::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}"), dg in proptest::option::of(digest())) {
        let mut s = format!("{h}/{}", comps.join("/"));
        if let Some(t) = &tag { s.push(':'); s.push_str(t); }
        if let Some(d) = &dg { s.push('@'); s.push_str(d); }
        let r = Reference::parse(&s).unwrap();
        let again = Reference::parse(&r.to_string()).unwrap();
        prop_assert_eq!(&r, &again);
        prop_assert_eq!(r.host(), h.as_str());
        prop_assert_eq!(r.path(), comps.join("/"));
    }

    #[test]
    fn parser_never_panics(s in "\\PC{0,80}") {
        let _ = Reference::parse(&s);
        let _ = Pattern::parse(&s);
        let _ = Digest::parse(&s);
    }

    #[test]
    fn star_matches_exactly_one_component((h, comps) in repo(), extra in component(), dg in digest()) {
        let d = Digest::parse(&dg).unwrap();
        let prefix = format!("{h}/{}", comps.join("/"));
        let p = Pattern::parse(&format!("{prefix}/*")).unwrap();
        let one = Reference::parse(&format!("{prefix}/{extra}")).unwrap();
        let two = Reference::parse(&format!("{prefix}/{extra}/{extra}")).unwrap();
        let zero = Reference::parse(&prefix).unwrap();
        prop_assert!(p.matches(&one, &d));
        prop_assert!(!p.matches(&two, &d));
        prop_assert!(!p.matches(&zero, &d));
        let dd = Pattern::parse(&format!("{prefix}/**")).unwrap();
        prop_assert!(dd.matches(&two, &d));
    }

    #[test]
    fn look_alikes_never_match((h, comps) in repo(), extra in component(), suffix in "[a-z0-9]{1,5}", dg in digest()) {
        let d = Digest::parse(&dg).unwrap();
        let prefix = format!("{h}/{}", comps.join("/"));
        let p = Pattern::parse(&format!("{prefix}/*")).unwrap();
        // Extend the last fixed component: acme -> acme-evil.
        let lookalike = format!("{prefix}-{suffix}/{extra}");
        prop_assert!(!p.matches(&Reference::parse(&lookalike).unwrap(), &d), "{}", lookalike);
        // Extend the host: ghcr.io -> ghcr.io.evil.com (only when the host has no port).
        if !h.contains(':') {
            let evil_host = format!("{h}.{suffix}.com/{}/{extra}", comps.join("/"));
            prop_assert!(!p.matches(&Reference::parse(&evil_host).unwrap(), &d), "{}", evil_host);
        }
        // Put the whole trusted name under another host.
        let nested = format!("evil.com/{}/{}/{extra}", h.replace([':', '.'], "-"), comps.join("/"));
        prop_assert!(!p.matches(&Reference::parse(&nested).unwrap(), &d), "{}", nested);
        // Dot segments are not references at all.
        let dotted = format!("{prefix}/../{extra}");
        prop_assert!(Reference::parse(&dotted).is_err());
    }

    #[test]
    fn digest_pin_only_matches_that_digest((h, comps) in repo(), a in digest(), b in digest()) {
        let name = format!("{h}/{}", comps.join("/"));
        let p = Pattern::parse(&format!("{name}@{a}")).unwrap();
        let r = Reference::parse(&format!("{name}:v1")).unwrap();
        prop_assert!(p.matches(&r, &Digest::parse(&a).unwrap()));
        prop_assert_eq!(p.matches(&r, &Digest::parse(&b).unwrap()), a == b);
    }
}
