//! `[cache]`: decision-cache lifetimes and bounds, and the content store's size.

use super::raw;
use super::{Issue, issue};

/// Validates `[cache]` into the cache policy (defaults for what is not set).
pub(super) fn parse_cache(raw_cache: Option<raw::Cache>, issues: &mut Vec<Issue>) -> crate::cache::CachePolicy {
    let mut cache = crate::cache::CachePolicy::default();
    if let Some(c) = raw_cache {
        let mut ttl = |field: &str, value: Option<String>, max: std::time::Duration, slot: &mut std::time::Duration| {
            let Some(v) = value else { return };
            match humantime::parse_duration(&v) {
                Ok(d) if d <= max => *slot = d,
                Ok(_) => issues.push(issue(field, format!("{v:?} is longer than {}", humantime::format_duration(max)))),
                Err(e) => issues.push(issue(field, format!("{v:?} is not a duration like \"30s\" or \"1h\": {e}"))),
            }
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        ttl("cache.allowTtl", c.allow_ttl, day, &mut cache.allow_ttl);
        ttl("cache.denyTtl", c.deny_ttl, day, &mut cache.deny_ttl);
        ttl("cache.errorTtl", c.error_ttl, crate::cache::MAX_ERROR_TTL, &mut cache.error_ttl);
        if let Some(n) = c.max_entries {
            if (100..=10_000_000).contains(&n) {
                cache.max_entries = n;
            } else {
                issues.push(issue("cache.maxEntries", format!("{n} is outside 100..=10000000")));
            }
        }
        if let Some(n) = c.content_max_bytes {
            if n <= crate::cache::MAX_CONTENT_STORE_BYTES {
                cache.content_max_bytes = n;
            } else {
                let max = crate::cache::MAX_CONTENT_STORE_BYTES;
                issues.push(issue("cache.contentMaxBytes", format!("{n} is outside 0..={max} (bytes)")));
            }
        }
    }
    cache
}
