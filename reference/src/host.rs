//! Registry host normalisation: one canonical spelling per registry.
//!
//! Every host pullgate sees, in a reference or in a pattern, goes through
//! [`normalise`] once, so matching compares canonical forms and no second
//! spelling of a host can reach past a rule written for the first. The rules
//! (also in docs/configuration.md, "Image patterns"):
//!
//! * Names are lower-cased (DNS is case-insensitive). A name that is a host
//!   only because of its upper-case letters (`Myreg/app`) has no lower-case
//!   spelling the grammar reads as a host, so it is refused.
//! * Ports: digits only, 1–65535, no leading zeros. `:443` is dropped (the
//!   HTTPS default), except on a dotless name other than `localhost`, where
//!   the port is what makes it a host. `:80` is refused: pullgate cannot tell
//!   whether it is the plain-HTTP default, so it must be written without a port.
//! * IPv4: strict dotted quad only (`127.0.0.1`); leading zeros, fewer than
//!   four parts, hex or octal parts, and `0.0.0.0` are refused.
//! * IPv6: brackets required, written in RFC 5952 form (`[0:0::1]` →
//!   `[::1]`, hex lower-cased). Dotted forms, zones, the unspecified address
//!   `[::]`, IPv4-mapped (`::ffff:0:0/96`) and IPv4-compatible (`::/96`
//!   other than `::1`) addresses are refused.
//! * Docker Hub: `docker.io`, `index.docker.io`, `registry-1.docker.io` and
//!   `registry.hub.docker.com`, without a port or with `:443`, are `docker.io`.
//! * Names under `.localhost` are refused: some resolvers send them to the
//!   loopback address, others to DNS.
//!
//! Loopback is one registry for matching (see [`match_key`]): `localhost`,
//! `127.0.0.0/8` and `[::1]` with the same port match each other's patterns,
//! while [`normalise`] keeps the spelling used to connect.

use crate::ReferenceError;

/// Hosts that are Docker Hub, whatever the spelling.
const DOCKER_HUB_ALIASES: [&str; 4] =
    ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// Normalises a registry host (`name[:port]` or `[ipv6][:port]`) to its
/// canonical spelling, or says why it is refused.
pub(crate) fn normalise(raw: &str) -> Result<String, ReferenceError> {
    let refuse = |reason: String| ReferenceError::InvalidHost { host: raw.to_string(), reason };
    let (name, port) = split_port(raw).map_err(refuse)?;
    let port = port.map(parse_port).transpose().map_err(refuse)?;
    let name = if let Some(inside) = name.strip_prefix('[') {
        // split_port guarantees the closing bracket.
        canonical_ipv6(&inside[..inside.len() - 1]).map_err(refuse)?
    } else {
        canonical_name(name).map_err(refuse)?
    };
    if port == Some(80) {
        return Err(refuse(format!(
            "port 80 is refused: pullgate cannot tell whether it is the plain-HTTP default; write {name} without a port"
        )));
    }
    if DOCKER_HUB_ALIASES.contains(&name.as_str()) && matches!(port, None | Some(443)) {
        return Ok(crate::DOCKER_HUB.to_string());
    }
    let dotless = !name.contains('.') && !name.starts_with('[') && name != "localhost";
    match port {
        Some(443) if !dotless => Ok(name),
        Some(p) => Ok(format!("{name}:{p}")),
        None if dotless => Err(refuse(format!(
            "{raw:?} is a registry host only because of its upper-case letters, and host names are case-insensitive; write it with its port ({name}:443) or its full domain name"
        ))),
        None => Ok(name),
    }
}

/// Splits off `:port`; an IPv6 literal must be bracketed.
fn split_port(raw: &str) -> Result<(&str, Option<&str>), String> {
    if raw.starts_with('[') {
        let close = raw.find(']').ok_or("an IPv6 literal needs its closing `]`")?;
        let (name, after) = raw.split_at(close + 1);
        return match after {
            "" => Ok((name, None)),
            p => Ok((name, Some(p.strip_prefix(':').ok_or("only `:port` may follow `]`")?))),
        };
    }
    match raw.split_once(':') {
        Some((_, p)) if p.contains(':') => Err("an IPv6 address must be written in brackets, e.g. [::1]:5000".into()),
        Some((n, p)) => Ok((n, Some(p))),
        None => Ok((raw, None)),
    }
}

/// A port: decimal digits, 1–65535, no leading zero.
fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a decimal number"));
    }
    if p.len() > 1 && p.starts_with('0') {
        return Err(format!("port {p:?} has leading zeros; write {}", p.trim_start_matches('0')));
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("port {p} is outside 1-65535")),
    }
}

/// A DNS name or IPv4 address, lower-cased and checked.
fn canonical_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 253 {
        return Err("a host name must be 1-253 characters".into());
    }
    if lower.split('.').all(numeric_like) {
        return canonical_ipv4(&lower).map(|()| lower);
    }
    for label in lower.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
        if !ok {
            return Err(format!("label {label:?} is not 1-63 letters, digits and inner hyphens"));
        }
    }
    if lower.ends_with(".localhost") {
        return Err(
            "names under .localhost resolve to loopback on some nodes and through DNS on others; write localhost"
                .into(),
        );
    }
    Ok(lower)
}

/// A label a C resolver might read as part of an IPv4 address (decimal, octal or `0x` hex).
fn numeric_like(label: &str) -> bool {
    let digits = label.strip_prefix("0x").unwrap_or(label);
    !label.is_empty()
        && digits.bytes().all(|b| b.is_ascii_hexdigit())
        && (digits.len() < label.len() || digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Accepts only the strict dotted quad, and not `0.0.0.0`.
fn canonical_ipv4(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('.').collect();
    let strict = |p: &&str| {
        !p.is_empty()
            && p.len() <= 3
            && (p.len() == 1 || !p.starts_with('0'))
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|v| v <= 255)
    };
    if parts.len() != 4 || !parts.iter().all(strict) {
        return Err(format!(
            "{s:?} is not a dotted-quad IPv4 address (four decimal parts 0-255 without leading zeros, e.g. 127.0.0.1)"
        ));
    }
    if s == "0.0.0.0" {
        return Err("0.0.0.0 is the unspecified address, not a registry; write the registry's address".into());
    }
    Ok(())
}

/// Parses the inside of `[...]` into eight groups and writes it in RFC 5952 form.
fn canonical_ipv6(inside: &str) -> Result<String, String> {
    if inside.contains('.') {
        return Err(format!(
            "[{inside}] is a dotted (IPv4-mapped or IPv4-compatible) IPv6 form; write the IPv4 address itself"
        ));
    }
    let groups = parse_ipv6(inside).ok_or_else(|| {
        format!("[{inside}] is not an IPv6 address (hex groups and one `::`; no dotted, zone or other forms)")
    })?;
    let mapped = groups[..6] == [0, 0, 0, 0, 0, 0xffff];
    let compatible = groups[..6] == [0; 6] && !matches!(groups[6..], [0, 0] | [0, 1]);
    if mapped || compatible {
        return Err(format!("[{inside}] is an IPv4-mapped or IPv4-compatible address; write the IPv4 address itself"));
    }
    if groups == [0; 8] {
        return Err("[::] is the unspecified address, not a registry; write the registry's address".into());
    }
    Ok(format!("[{}]", format_ipv6(&groups)))
}

/// Eight 16-bit groups from `h16(:h16)*` with at most one `::`.
fn parse_ipv6(s: &str) -> Option<[u16; 8]> {
    let group = |g: &str| (1..=4).contains(&g.len()).then(|| u16::from_str_radix(g, 16).ok()).flatten();
    let hex_only = s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    if !hex_only || s.len() > 39 || s.matches("::").count() > 1 || s.contains(":::") {
        return None;
    }
    let parts = |t: &str| -> Option<Vec<u16>> {
        if t.is_empty() { Some(Vec::new()) } else { t.split(':').map(group).collect() }
    };
    let mut out = [0u16; 8];
    match s.split_once("::") {
        None => {
            let all = parts(s)?;
            if all.len() != 8 {
                return None;
            }
            out.copy_from_slice(&all);
        }
        Some((head, tail)) => {
            let (h, t) = (parts(head)?, parts(tail)?);
            if h.len() + t.len() > 7 {
                return None;
            }
            out[..h.len()].copy_from_slice(&h);
            out[8 - t.len()..].copy_from_slice(&t);
        }
    }
    Some(out)
}

/// RFC 5952: lower-case hex, no leading zeros, the longest run of two or
/// more zero groups (the first on a tie) written as `::`.
fn format_ipv6(g: &[u16; 8]) -> String {
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, v) in g.iter().enumerate() {
        if *v == 0 {
            run = if run.1 == 0 { (i, 1) } else { (run.0, run.1 + 1) };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let hex = |s: &[u16]| s.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>().join(":");
    if best.1 < 2 {
        return hex(g);
    }
    format!("{}::{}", hex(&g[..best.0]), hex(&g[best.0 + best.1..]))
}

/// The key two canonical hosts are compared by when matching: loopback
/// spellings (`localhost`, `127.0.0.0/8`, `[::1]`) share one key per port,
/// because each reaches the same listener on the node; every other host is
/// its own key.
pub(crate) fn match_key(canonical: &str) -> std::borrow::Cow<'_, str> {
    let (name, port) = match canonical.rsplit_once(':') {
        Some((n, p)) if !p.ends_with(']') && !n.is_empty() && (!n.starts_with('[') || n.ends_with(']')) => (n, Some(p)),
        _ => (canonical, None),
    };
    let loopback = name == "localhost"
        || name == "[::1]"
        || (name.starts_with("127.") && name.split('.').all(|p| p.bytes().all(|b| b.is_ascii_digit())));
    match (loopback, port) {
        (false, _) => std::borrow::Cow::Borrowed(canonical),
        (true, Some(p)) => std::borrow::Cow::Owned(format!("localhost:{p}")),
        (true, None) => std::borrow::Cow::Borrowed("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        normalise(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn canonical_spellings() {
        for (raw, want) in [
            ("GHCR.io", "ghcr.io"),
            ("ghcr.io:443", "ghcr.io"),
            ("ghcr.io:5000", "ghcr.io:5000"),
            ("docker.io:443", "docker.io"),
            ("registry-1.docker.io:443", "docker.io"),
            ("Index.Docker.IO", "docker.io"),
            ("registry.hub.docker.com", "docker.io"),
            ("docker.io:5000", "docker.io:5000"),
            ("localhost:443", "localhost"),
            ("myreg:443", "myreg:443"),
            ("myreg:5000", "myreg:5000"),
            ("[0:0::1]", "[::1]"),
            ("[0:0:0:0:0:0:0:1]:5000", "[::1]:5000"),
            ("[2001:DB8::0001]", "[2001:db8::1]"),
            ("[2001:db8:0:0:1:0:0:1]", "[2001:db8::1:0:0:1]"),
            ("[2001:db8:0:1:1:1:1:1]", "[2001:db8:0:1:1:1:1:1]"),
            ("[fe80::]:443", "[fe80::]"),
            ("10.0.0.1:5000", "10.0.0.1:5000"),
        ] {
            assert_eq!(ok(raw), want, "{raw}");
            assert_eq!(ok(want), want, "{want} is a fixed point");
        }
    }

    #[test]
    fn refused_spellings_say_why() {
        for (raw, why) in [
            ("localhost:05101", "leading zeros"),
            ("localhost:0", "outside 1-65535"),
            ("localhost:65536", "outside 1-65535"),
            ("localhost:", "not a decimal"),
            ("localhost:+5", "not a decimal"),
            ("ghcr.io:80", "port 80"),
            ("[::ffff:127.0.0.1]", "write the IPv4 address itself"),
            ("[::ffff:7f00:1]", "IPv4-mapped"),
            ("[::7f00:1]", "IPv4-compatible"),
            ("[::2]", "IPv4-compatible"),
            ("[::]:5000", "unspecified"),
            ("[fe80::1%eth0]", "not an IPv6"),
            ("[1:2:3:4:5:6:7:8:9]", "not an IPv6"),
            ("[1::2::3]", "not an IPv6"),
            ("::1", "brackets"),
            ("127.000.0.1", "dotted-quad"),
            ("127.1:5000", "dotted-quad"),
            ("0x7f.0.0.1", "dotted-quad"),
            ("2130706433:5000", "dotted-quad"),
            ("256.0.0.1", "dotted-quad"),
            ("0.0.0.0:5000", "unspecified"),
            ("registry.localhost:5000", ".localhost"),
            ("Myreg", "upper-case"),
            ("-bad.io", "label"),
        ] {
            match normalise(raw) {
                Err(e) => assert!(e.to_string().contains(why), "{raw}: {e} should mention {why:?}"),
                Ok(h) => panic!("{raw} should be refused, got {h}"),
            }
        }
    }

    #[test]
    fn loopback_shares_one_key_per_port() {
        for h in ["localhost:5000", "127.0.0.1:5000", "127.9.8.7:5000", "[::1]:5000"] {
            assert_eq!(match_key(h), "localhost:5000", "{h}");
        }
        assert_eq!(match_key("localhost"), "localhost");
        assert_eq!(match_key("[::1]"), "localhost");
        for h in ["localhost:5001", "128.0.0.1:5000", "[::2]:5000", "localhost.evil:5000", "127.0.0.1.nip.io:5000"] {
            assert_ne!(match_key(h), "localhost:5000", "{h}");
        }
    }
}
