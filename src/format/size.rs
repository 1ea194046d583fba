//! Byte sizes as users type and read them: `500M`, `2G`, `1024` in, `1.234
//! MiB` out. Binary units, as restic.

/// `500M`, `2G`, `10GiB`, `1024` (bytes); `None` for anything else.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// `512 B`, `1.234 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("1 KB"), Some(1024));
        assert_eq!(parse_size("2X"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999P"), None);
    }

    #[test]
    fn sizes_print_with_three_decimals() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.500 KiB");
    }
}
