//! Schedules: cron expressions (5 fields, or 6 with seconds first) and the
//! shorthands hourly/daily/weekly/monthly, in local time or a named time zone;
//! and their translation into systemd's `OnCalendar=`.

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written in the config.
    pub expr: String,
    /// Six fields: second minute hour day-of-month month day-of-week.
    fields: [String; 6],
    cron: Cron,
    pub tz: Option<chrono_tz::Tz>,
}

fn shorthand(s: &str) -> Option<&'static str> {
    Some(match s.trim_start_matches('@') {
        "hourly" => "0 * * * *",
        "daily" | "midnight" => "0 0 * * *",
        "weekly" => "0 0 * * 1",
        "monthly" => "0 0 1 * *",
        _ => return None,
    })
}

impl Schedule {
    pub fn parse(expr: &str, tz: Option<chrono_tz::Tz>) -> Result<Schedule, String> {
        let text = shorthand(expr.trim()).unwrap_or(expr.trim());
        let parts: Vec<&str> = text.split_whitespace().collect();
        let fields: [String; 6] = match parts.len() {
            5 => [
                "0".into(),
                parts[0].into(),
                parts[1].into(),
                parts[2].into(),
                parts[3].into(),
                parts[4].into(),
            ],
            6 => std::array::from_fn(|i| parts[i].to_string()),
            n => {
                return Err(format!(
                    "schedule '{expr}' has {n} fields: give a cron expression of 5 fields \
                     (minute hour day-of-month month day-of-week), 6 with seconds first, \
                     or hourly, daily, weekly, monthly"
                ))
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .build()
            .parse(&fields.join(" "))
            .map_err(|e| format!("schedule '{expr}' is not a valid cron expression: {e}"))?;
        let s = Schedule {
            expr: expr.to_string(),
            fields,
            cron,
            tz,
        };
        if s.next_after(Utc::now()).is_none() {
            return Err(format!("schedule '{expr}' never fires"));
        }
        Ok(s)
    }

    /// The first time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        fn next<Z: TimeZone>(c: &Cron, t: DateTime<Z>) -> Option<DateTime<Utc>> {
            c.find_next_occurrence(&t, false)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        }
        match self.tz {
            Some(tz) => next(&self.cron, t.with_timezone(&tz)),
            None => next(&self.cron, t.with_timezone(&chrono::Local)),
        }
    }

    /// The time zone's name, or "local".
    pub fn zone(&self) -> String {
        self.tz.map_or("local".into(), |t| t.name().to_string())
    }

    /// systemd's equivalent, or why there is none.
    pub fn on_calendar(&self) -> Result<String, String> {
        let [sec, min, hour, dom, month, dow] = &self.fields;
        let no = |why: String| {
            format!(
                "schedule '{}' has no systemd OnCalendar= equivalent: {why}",
                self.expr
            )
        };
        let sec = numeric(sec, 0, 59, &[]).map_err(no)?;
        let min = numeric(min, 0, 59, &[]).map_err(no)?;
        let hour = numeric(hour, 0, 23, &[]).map_err(no)?;
        let dom = numeric(dom, 1, 31, &[]).map_err(no)?;
        let month = numeric(month, 1, 12, &MONTHS).map_err(no)?;
        let dow = weekdays(dow).map_err(no)?;
        if dom != "*" && !dow.is_empty() {
            return Err(no(
                "cron fires when the day of month OR the weekday matches, systemd only when both do"
                    .into(),
            ));
        }
        let mut out = String::new();
        if !dow.is_empty() {
            out.push_str(&dow);
            out.push(' ');
        }
        out.push_str(&format!("*-{month}-{dom} {hour}:{min}:{sec}"));
        if let Some(tz) = self.tz {
            out.push(' ');
            out.push_str(tz.name());
        }
        Ok(out)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const SYSTEMD_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// The values a cron field names, sorted; None for `*`.
fn values(
    field: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Option<Vec<u32>>, String> {
    let f = field.to_ascii_uppercase();
    if f == "*" || f == "?" {
        return Ok(None);
    }
    if f.contains(['L', 'W', '#']) && !names.iter().any(|n| f.contains(n)) {
        return Err(format!("'{field}' uses L, W or #"));
    }
    let num = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| *n == s) {
            return Ok(i as u32 + name_base);
        }
        s.parse::<u32>()
            .map_err(|_| format!("'{field}' is not made of numbers, ranges and steps"))
    };
    let mut out = Vec::new();
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, num(s)?.max(1)),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a)?, num(b)?)
        } else {
            let a = num(range)?;
            (a, if step > 1 { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            out.push(v);
            v += step;
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

/// A numeric systemd component: `*`, `00/15` (every 15 from the start),
/// ranges `09..17`, or a list.
fn numeric(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<String, String> {
    let Some(v) = values(field, lo, hi, names, 1)? else {
        return Ok("*".into());
    };
    if v.iter().any(|x| *x < lo || *x > hi) {
        return Err(format!("'{field}' is out of range {lo}-{hi}"));
    }
    if v.len() == (hi - lo + 1) as usize {
        return Ok("*".into());
    }
    // An arithmetic progression from the field's start to its end: start/step.
    if v.len() >= 3 && v[0] == lo {
        let step = v[1] - v[0];
        if v.windows(2).all(|w| w[1] - w[0] == step) && v[v.len() - 1] + step > hi {
            return Ok(format!("{lo:02}/{step}"));
        }
    }
    Ok(runs(&v, |x| format!("{x:02}")))
}

/// Consecutive runs of three or more become `a..b`.
fn runs(v: &[u32], show: impl Fn(u32) -> String) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}..{}", show(v[i]), show(v[j])));
        } else {
            for x in &v[i..=j] {
                parts.push(show(*x));
            }
        }
        i = j + 1;
    }
    parts.join(",")
}

/// The weekday component (empty for every day).
fn weekdays(field: &str) -> Result<String, String> {
    let Some(v) = values(field, 0, 7, &DAYS, 0)? else {
        return Ok(String::new());
    };
    if v.iter().any(|x| *x > 7) {
        return Err(format!("'{field}' is out of range 0-7"));
    }
    // systemd's weeks start on Monday: Mon=0 .. Sun=6.
    let mut m: Vec<u32> = v.iter().map(|d| (d % 7 + 6) % 7).collect();
    m.sort_unstable();
    m.dedup();
    if m.len() == 7 {
        return Ok(String::new());
    }
    Ok(runs(&m, |x| {
        SYSTEMD_DAYS[((x + 1) % 7) as usize].to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(expr: &str) -> Result<String, String> {
        Schedule::parse(expr, None).unwrap().on_calendar()
    }

    #[test]
    fn on_calendar_mapping() {
        assert_eq!(cal("daily").unwrap(), "*-*-* 00:00:00");
        assert_eq!(cal("hourly").unwrap(), "*-*-* *:00:00");
        assert_eq!(cal("weekly").unwrap(), "Mon *-*-* 00:00:00");
        assert_eq!(cal("monthly").unwrap(), "*-*-01 00:00:00");
        assert_eq!(cal("30 2 * * *").unwrap(), "*-*-* 02:30:00");
        assert_eq!(cal("0 */6 * * *").unwrap(), "*-*-* 00/6:00:00");
        assert_eq!(
            cal("*/15 9-17 * * 1-5").unwrap(),
            "Mon..Fri *-*-* 09..17:00/15:00"
        );
        assert_eq!(cal("0 3 * * SUN,sat").unwrap(), "Sat,Sun *-*-* 03:00:00");
        assert_eq!(cal("0 3 * * 0").unwrap(), "Sun *-*-* 03:00:00");
        assert_eq!(cal("* * * * * *").unwrap(), "*-*-* *:*:*");
        assert_eq!(cal("0 0 1 1,7 *").unwrap(), "*-01,07-01 00:00:00");
        assert!(cal("0 0 1 * 1").is_err());
        assert!(cal("0 0 L * *").is_err());
        let s = Schedule::parse("0 2 * * *", Some(chrono_tz::Europe::Berlin)).unwrap();
        assert_eq!(s.on_calendar().unwrap(), "*-*-* 02:00:00 Europe/Berlin");
    }

    #[test]
    fn bad_expressions() {
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * *", None).is_err());
        assert!(Schedule::parse("* * * * * * 2030", None).is_err());
        assert!(Schedule::parse("often", None).is_err());
    }

    #[test]
    fn next_in_a_zone() {
        let s = Schedule::parse("0 2 * * *", Some(chrono_tz::Europe::Berlin)).unwrap();
        let t = Utc.with_ymd_and_hms(2024, 7, 1, 12, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2024, 7, 2, 0, 0, 0).unwrap()
        );
    }
}
