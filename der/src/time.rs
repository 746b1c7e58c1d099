//! Times as whole seconds since the Unix epoch: RFC 3339 parsing (JWS signed attributes), the
//! `Tue, 27 Jun 2023 06:10:00 +0000` rendering Notation uses in its messages, and conversions
//! from [`SystemTime`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since 1970-01-01T00:00:00Z (negative before it).
pub type UnixSeconds = i64;

/// Converts a [`SystemTime`] to whole Unix seconds (rounding toward the past).
pub fn from_system_time(t: SystemTime) -> UnixSeconds {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 { -secs - 1 } else { -secs }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Seconds since the epoch of a UTC calendar time; `None` if a field is out of range.
pub fn from_civil(year: i64, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<UnixSeconds> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // A leap second (:60) is folded onto the next second, as most clocks do.
    Some(days_from_civil(year, month, day) * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| acc.checked_mul(10)?.checked_add(u32::from(b - b'0')))
}

/// Parses an RFC 3339 `date-time` (`2024-06-18T14:29:33+08:00`, `2020-11-09T07:00:00Z`).
/// Fractional seconds are accepted and dropped (the specification says they SHOULD NOT be used).
pub fn parse_rfc3339(s: &str) -> Option<UnixSeconds> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let min = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let frac = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        rest = &rest[1 + frac..];
    }
    let offset: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = i64::from(digits(&[*h1, *h2])?);
            let om = i64::from(digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    Some(from_civil(year, month, day, hour, min, sec)? - offset)
}

/// Renders a time like Go's `time.RFC1123Z` in UTC: `Tue, 27 Jun 2023 06:10:00 +0000`.
pub fn format_rfc1123z(t: UnixSeconds) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Renders a time as RFC 3339 in UTC: `2024-06-18T06:29:37Z`.
pub fn format_rfc3339(t: UnixSeconds) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_with_offsets() {
        // 2024-06-18T14:29:33+08:00 is 06:29:33Z.
        let t = parse_rfc3339("2024-06-18T14:29:33+08:00").unwrap();
        assert_eq!(format_rfc3339(t), "2024-06-18T06:29:33Z");
        assert_eq!(parse_rfc3339("2020-11-09T07:00:00Z").map(format_rfc3339).unwrap(), "2020-11-09T07:00:00Z");
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_rfc3339("2020-11-09T07:00:00.25-01:30").map(format_rfc3339).unwrap(), "2020-11-09T08:30:00Z");
    }

    #[test]
    fn rfc3339_rejects_malformed() {
        for bad in [
            "2020-11-09 07:00:00Z",
            "2020-11-09T07:00:00",
            "2020-13-09T07:00:00Z",
            "2021-02-29T07:00:00Z",
            "2020-11-09T07:00:00+0800",
            "2020-11-09T07:00:00.Z",
            "2020-11-09T24:00:00Z",
            "+020-11-09T07:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn rfc1123z_matches_notation_messages() {
        let t = parse_rfc3339("2023-06-27T06:10:00Z").unwrap();
        assert_eq!(format_rfc1123z(t), "Tue, 27 Jun 2023 06:10:00 +0000");
        let t = parse_rfc3339("2099-09-18T11:54:34Z").unwrap();
        assert_eq!(format_rfc1123z(t), "Fri, 18 Sep 2099 11:54:34 +0000");
        assert_eq!(format_rfc1123z(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn system_time_conversion() {
        assert_eq!(from_system_time(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(from_system_time(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(from_system_time(UNIX_EPOCH - Duration::from_secs(3)), -3);
    }
}
