//! Durations typed by users, in two named grammars (documented in
//! docs/operations.md, "Durations"):
//!
//! - **plain durations** ([`parse_duration`]): how long to wait or how old is
//!   too old (`--max-age`, `--stale-after`, a job's `every`, cloud timeouts).
//!   A sequence of `<number><unit>` terms, numbers may have a fraction:
//!   `ms`, `s` (`sec`, `secs`), `m` (`min`) = **minute**, `h`, `d`, `w`.
//!   Examples: `90s`, `10m`, `1.5h`, `1d12h`, `2w`.
//! - **retention spans** ([`parse_span`]): restic's `--keep-within` grammar,
//!   whole numbers only, `y` (365 days), `m` = **month** (30 days), `w`,
//!   `d`, `h`. Examples: `30d`, `1y6m`, `1y2m3d4h`.
//!
//! The one letter that differs, `m`, is why they are two functions with
//! different names and never one parser with a flag.

use std::time::Duration;

/// Parses a plain duration (see the module docs): `m` is a minute.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let unit_len = rest[num_len..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], rest[num_len..num_len + unit_len].trim());
        let n: f64 = num.parse().ok()?;
        let secs = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[num_len + unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// [`parse_duration`], where a bare number also counts as seconds (cloud
/// options, as object_store's own configuration spells them).
pub fn parse_duration_or_seconds(s: &str) -> Option<Duration> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(n) => Duration::try_from_secs_f64(n).ok(),
        Err(_) => parse_duration(s),
    }
}

/// Parses a retention span (see the module docs): `m` is a month.
pub fn parse_span(s: &str) -> Option<chrono::Duration> {
    let mut total = chrono::Duration::zero();
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        total += match ch {
            'y' => chrono::Duration::try_days(365i64.checked_mul(n)?)?,
            'm' => chrono::Duration::try_days(30i64.checked_mul(n)?)?,
            'w' => chrono::Duration::try_weeks(n)?,
            'd' => chrono::Duration::try_days(n)?,
            'h' => chrono::Duration::try_hours(n)?,
            _ => return None,
        };
    }
    (num.is_empty() && !s.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_durations() {
        let d = |s| parse_duration(s);
        assert_eq!(d("90s"), Some(Duration::from_secs(90)));
        assert_eq!(d("10m"), Some(Duration::from_secs(600)));
        assert_eq!(d("1d12h"), Some(Duration::from_secs(129_600)));
        assert_eq!(d("2w"), Some(Duration::from_secs(1_209_600)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("2min"), Some(Duration::from_secs(120)));
        for bad in [
            "", "10", "10x", "soon", "3 weeks", "1y", "-5s", "1e400s", "1..2s",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn bare_seconds_only_where_asked() {
        assert_eq!(parse_duration_or_seconds("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_duration_or_seconds("30s"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_duration_or_seconds("-1"), None);
        assert_eq!(parse_duration("7"), None);
    }

    #[test]
    fn retention_spans() {
        assert_eq!(parse_span("30d"), Some(chrono::Duration::days(30)));
        assert_eq!(
            parse_span("1y2m3d4h"),
            Some(chrono::Duration::days(365 + 60 + 3) + chrono::Duration::hours(4))
        );
        assert_eq!(
            parse_span("1m"),
            Some(chrono::Duration::days(30)),
            "m is a month"
        );
        for bad in ["", "12", "5x", "1.5d", "99999999999999999y"] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
    }
}
