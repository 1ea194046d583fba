//! cairn's own `-o` options for cloud stores, on top of each store's keys:
//! the retry budget and the connect deadline. Values are validated here, since
//! object_store would ignore what it does not know.

use std::time::Duration;

use object_store::{BackoffConfig, RetryConfig};

/// Options cairn understands for every cloud store.
pub const CAIRN_KEYS: &[&str] = &[
    "retry_max",
    "retry_timeout",
    "retry_backoff_init",
    "retry_backoff_max",
    "connect_deadline",
    "request_timeout",
];

/// The connect deadline when none is given: an endpoint that cannot be reached
/// fails within this long.
pub const DEFAULT_CONNECT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct CloudOptions {
    pub retry: RetryConfig,
    pub connect_deadline: Duration,
    /// Options passed on to the store's builder (its own keys).
    pub store: Vec<(String, String)>,
}

use crate::format::duration::parse_duration_or_seconds;

/// Splits cairn's keys from the store's, validating cairn's values.
pub(crate) fn split(options: &[(String, String)]) -> Result<CloudOptions, String> {
    let mut out = CloudOptions {
        retry: RetryConfig::default(),
        connect_deadline: DEFAULT_CONNECT_DEADLINE,
        store: Vec::new(),
    };
    let mut backoff = BackoffConfig::default();
    let dur = |k: &str, v: &str| {
        parse_duration_or_seconds(v)
            .ok_or_else(|| format!("option {k}: '{v}' is not a duration (e.g. 30s, 500ms, 2m)"))
    };
    for (k, v) in options {
        match k.as_str() {
            "retry_max" => {
                out.retry.max_retries = v
                    .parse()
                    .map_err(|_| format!("option retry_max: '{v}' is not a whole number"))?
            }
            "retry_timeout" => out.retry.retry_timeout = dur(k, v)?,
            "retry_backoff_init" => backoff.init_backoff = dur(k, v)?,
            "retry_backoff_max" => backoff.max_backoff = dur(k, v)?,
            "connect_deadline" => {
                out.connect_deadline = dur(k, v)?;
                if out.connect_deadline.is_zero() {
                    return Err("option connect_deadline must be more than 0".into());
                }
            }
            // object_store's per-request timeout, under a clearer name.
            "request_timeout" => {
                dur(k, v)?;
                out.store.push(("timeout".into(), v.clone()));
            }
            _ => out.store.push((k.clone(), v.clone())),
        }
    }
    if backoff.init_backoff > backoff.max_backoff {
        return Err("option retry_backoff_init is larger than retry_backoff_max".into());
    }
    out.retry.backoff = backoff;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn splits_and_validates() {
        let o = split(&[
            kv("retry_max", "3"),
            kv("retry_timeout", "20s"),
            kv("retry_backoff_init", "10ms"),
            kv("connect_deadline", "5s"),
            kv("request_timeout", "9s"),
            kv("aws_region", "x"),
        ])
        .unwrap();
        assert_eq!(o.retry.max_retries, 3);
        assert_eq!(o.retry.retry_timeout, Duration::from_secs(20));
        assert_eq!(o.retry.backoff.init_backoff, Duration::from_millis(10));
        assert_eq!(o.connect_deadline, Duration::from_secs(5));
        assert_eq!(o.store, vec![kv("timeout", "9s"), kv("aws_region", "x")]);
        assert_eq!(
            split(&[]).unwrap().connect_deadline,
            DEFAULT_CONNECT_DEADLINE
        );
        assert!(split(&[kv("retry_max", "-1")]).is_err());
        assert!(split(&[kv("retry_timeout", "forever")]).is_err());
        assert!(split(&[kv("connect_deadline", "0")]).is_err());
        assert!(split(&[kv("retry_backoff_init", "20s")]).is_err());
    }
}
