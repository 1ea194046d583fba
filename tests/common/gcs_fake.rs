//! TEST DOUBLE — not Google Cloud Storage. A small in-memory fake of the GCS
//! XML API calls object_store 0.14 makes (see object_store's `src/gcp/client.rs`),
//! served on 127.0.0.1 by a std `TcpListener` with a minimal HTTP/1.1 parser:
//!
//! - `PUT /BUCKET/KEY` — upload; `x-goog-if-generation-match: 0` creates only if
//!   absent, `: N` updates only generation N (412 otherwise); with
//!   `x-goog-copy-source: BUCKET/KEY` it copies instead.
//! - `GET`/`HEAD /BUCKET/KEY` — with `Range` (bounded, open, suffix),
//!   `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`
//!   and `?generation=N` (older generations are kept).
//! - `DELETE /BUCKET/KEY` — 403 while a bucket retention policy
//!   (`set_retention`) holds the object.
//! - `GET /BUCKET?list-type=2&prefix=&delimiter=&continuation-token=&max-keys=&start-after=`
//!   — the S3-style ListObjectsV2 XML that object_store's GCS client parses.
//!
//! Requests must carry `Authorization: Bearer <token>` (401 otherwise); a
//! missing bucket is 404 for every call. Multipart uploads are not served.
//! It is accepted as a stand-in because object_store's own conformance
//! functions pass against it (tests/cloud/stores.rs, `gcs_fake_passes_object_store_conformance`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};

pub const TOKEN: &str = "cairn-fake-gcs-token";

#[derive(Clone)]
struct Obj {
    data: Arc<Vec<u8>>,
    generation: u64,
    modified: DateTime<Utc>,
}

impl Obj {
    fn etag(&self) -> String {
        format!("\"g{}\"", self.generation)
    }
}

#[derive(Default)]
struct State {
    buckets: HashSet<String>,
    objects: BTreeMap<(String, String), Obj>,
    history: HashMap<(String, String, u64), Obj>,
    next_generation: u64,
    /// Bucket retention policies, in seconds: an object younger than this
    /// cannot be deleted or replaced (403, as GCS answers).
    retention: HashMap<String, i64>,
}

/// A fake GCS server on a free port; it lives as long as the test process.
#[derive(Clone)]
pub struct GcsFake {
    pub port: u16,
    state: Arc<Mutex<State>>,
    /// Fault injection: every Nth request is answered 503 (0: none).
    fail_every: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
}

impl GcsFake {
    pub fn start() -> GcsFake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = GcsFake {
            port,
            state: Arc::default(),
            fail_every: Arc::default(),
            requests: Arc::default(),
            injected: Arc::default(),
        };
        let f = fake.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || f.serve(conn));
            }
        });
        fake
    }

    pub fn make_bucket(&self, name: &str) {
        self.state.lock().unwrap().buckets.insert(name.to_string());
    }

    /// Sets a bucket's retention policy (0 removes it), as
    /// `gcloud storage buckets update --retention-period` does.
    pub fn set_retention(&self, bucket: &str, secs: i64) {
        self.state
            .lock()
            .unwrap()
            .retention
            .insert(bucket.to_string(), secs);
    }

    /// Answers every `n`th request from now on with 503 Service Unavailable
    /// (0 stops).
    pub fn fail_every(&self, n: u64) {
        self.requests.store(0, Ordering::SeqCst);
        self.fail_every.store(n, Ordering::SeqCst);
    }

    /// How many 503s were injected so far.
    pub fn failures_injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The `-o` options that point object_store at this fake.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("google_base_url", format!("http://127.0.0.1:{}", self.port)),
            ("google_bearer_token", TOKEN.to_string()),
            ("allow_http", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn serve(&self, conn: TcpStream) {
        let mut out = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        while let Some(req) = read_request(&mut r) {
            let resp = self.handle(&req);
            if out.write_all(&resp.encode(req.method == "HEAD")).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: &Request) -> Response {
        let every = self.fail_every.load(Ordering::SeqCst);
        if every > 0 && (self.requests.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Response::status(503, "<Error><Code>ServiceUnavailable</Code></Error>");
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Response::status(401, "Unauthorized");
        }
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let path = percent_decode(path.trim_start_matches('/'));
        let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
        let mut st = self.state.lock().unwrap();
        if !st.buckets.contains(bucket) {
            return Response::status(404, "<Error><Code>NoSuchBucket</Code></Error>");
        }
        let bucket = bucket.to_string();
        match (req.method.as_str(), key) {
            ("GET", "") => list(&st, &bucket, &query),
            (_, "") => Response::status(400, "bad request"),
            ("PUT", _) if query.contains_key("uploads") || query.contains_key("uploadId") => {
                Response::status(501, "multipart uploads are not served by this fake")
            }
            ("PUT", key) => put(&mut st, &bucket, key, req),
            ("GET" | "HEAD", key) => get(&st, &bucket, key, req, &query),
            ("DELETE", key) => {
                if let Some(refusal) = retained(&st, &bucket, key) {
                    return refusal;
                }
                match st.objects.remove(&(bucket, key.to_string())) {
                    Some(_) => Response::status(204, ""),
                    None => Response::status(404, "<Error><Code>NoSuchKey</Code></Error>"),
                }
            }
            _ => Response::status(405, "method not allowed"),
        }
    }
}

/// GCS's answer to deleting or replacing an object its bucket's retention
/// policy still holds.
fn retained(st: &State, bucket: &str, key: &str) -> Option<Response> {
    let secs = st.retention.get(bucket).copied().filter(|s| *s > 0)?;
    let obj = st.objects.get(&(bucket.to_string(), key.to_string()))?;
    let until = obj.modified + chrono::Duration::seconds(secs);
    (until > Utc::now()).then(|| {
        Response::status(
            403,
            &format!("<Error><Code>AccessDenied</Code><Message>Object '{bucket}/{key}' is subject to bucket's retention policy or object retention and cannot be deleted or overwritten until {}</Message></Error>", until.to_rfc3339()),
        )
    })
}

fn put(st: &mut State, bucket: &str, key: &str, req: &Request) -> Response {
    let id = (bucket.to_string(), key.to_string());
    let data = match req.header("x-goog-copy-source") {
        Some(src) => {
            let src = percent_decode(src);
            let Some((b, k)) = src.split_once('/') else {
                return Response::status(400, "bad copy source");
            };
            match st.objects.get(&(b.to_string(), k.to_string())) {
                Some(o) => o.data.clone(),
                None => return Response::status(404, "<Error><Code>NoSuchKey</Code></Error>"),
            }
        }
        None => Arc::new(req.body.clone()),
    };
    if let Some(want) = req.header("x-goog-if-generation-match") {
        let have = st.objects.get(&id).map_or(0, |o| o.generation);
        if want.parse::<u64>().ok() != Some(have) {
            return Response::status(412, "<Error><Code>PreconditionFailed</Code></Error>");
        }
    }
    st.next_generation += 1;
    let now = Utc::now();
    let obj = Obj {
        data,
        generation: st.next_generation,
        // HTTP dates have whole seconds: keep what HEAD reports and compares.
        modified: Utc.timestamp_opt(now.timestamp(), 0).unwrap(),
    };
    let mut resp = Response::status(200, "");
    resp.headers.push(("ETag".into(), obj.etag()));
    resp.headers
        .push(("x-goog-generation".into(), obj.generation.to_string()));
    st.history
        .insert((id.0.clone(), id.1.clone(), obj.generation), obj.clone());
    st.objects.insert(id, obj);
    resp
}

fn http_date(t: &DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn get(
    st: &State,
    bucket: &str,
    key: &str,
    req: &Request,
    query: &HashMap<String, String>,
) -> Response {
    let obj = match query.get("generation") {
        Some(g) => g
            .parse::<u64>()
            .ok()
            .and_then(|g| st.history.get(&(bucket.to_string(), key.to_string(), g))),
        None => st.objects.get(&(bucket.to_string(), key.to_string())),
    };
    let Some(obj) = obj else {
        return Response::status(404, "<Error><Code>NoSuchKey</Code></Error>");
    };
    let etag = obj.etag();
    if let Some(m) = req.header("if-match") {
        if m != etag && m != "*" {
            return Response::status(412, "");
        }
    }
    if let Some(t) = req.header("if-unmodified-since").and_then(parse_http_date) {
        if obj.modified > t {
            return Response::status(412, "");
        }
    }
    if let Some(m) = req.header("if-none-match") {
        if m == etag || m == "*" {
            return Response::status(304, "");
        }
    }
    if let Some(t) = req.header("if-modified-since").and_then(parse_http_date) {
        if obj.modified <= t {
            return Response::status(304, "");
        }
    }
    let len = obj.data.len() as u64;
    let mut resp = Response::status(200, "");
    let mut range = 0..len;
    if let Some(spec) = req.header("range").and_then(|r| r.strip_prefix("bytes=")) {
        let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
        range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
            (Some(a), Some(b)) if a < len && a <= b => a..(b + 1).min(len),
            (Some(a), None) if a < len => a..len,
            (None, Some(n)) if n > 0 => len.saturating_sub(n)..len,
            _ => return Response::status(416, "<Error><Code>InvalidRange</Code></Error>"),
        };
        resp.code = 206;
        resp.headers.push((
            "Content-Range".into(),
            format!("bytes {}-{}/{len}", range.start, range.end - 1),
        ));
    }
    resp.body = obj.data[range.start as usize..range.end as usize].to_vec();
    resp.headers.push(("ETag".into(), etag));
    resp.headers
        .push(("Last-Modified".into(), http_date(&obj.modified)));
    resp.headers
        .push(("x-goog-generation".into(), obj.generation.to_string()));
    resp
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn list(st: &State, bucket: &str, q: &HashMap<String, String>) -> Response {
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let delimiter = q.get("delimiter").filter(|d| !d.is_empty());
    let max: usize = q
        .get("max-keys")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000);
    let after = q
        .get("continuation-token")
        .or(q.get("start-after"))
        .cloned()
        .unwrap_or_default();
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
    let mut prefixes: Vec<String> = Vec::new();
    let mut n = 0;
    let mut last: Option<String> = None;
    for ((b, key), obj) in st.objects.range((bucket.to_string(), after.clone())..) {
        if b != bucket {
            break;
        }
        if key.as_str() <= after.as_str() || !key.starts_with(prefix) {
            continue;
        }
        if n == max {
            body.push_str(&format!(
                "<NextContinuationToken>{}</NextContinuationToken>",
                xml_escape(last.as_deref().unwrap())
            ));
            break;
        }
        if let Some(d) = delimiter {
            if let Some(i) = key[prefix.len()..].find(d.as_str()) {
                let p = key[..prefix.len() + i + d.len()].to_string();
                if prefixes.last() != Some(&p) {
                    prefixes.push(p);
                }
                continue;
            }
        }
        n += 1;
        last = Some(key.clone());
        body.push_str(&format!(
            "<Contents><Key>{}</Key><Size>{}</Size><LastModified>{}</LastModified><ETag>{}</ETag></Contents>",
            xml_escape(key),
            obj.data.len(),
            obj.modified.to_rfc3339(),
            xml_escape(&obj.etag())
        ));
    }
    for p in prefixes {
        body.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            xml_escape(&p)
        ));
    }
    body.push_str("</ListBucketResult>");
    let mut resp = Response::status(200, &body);
    resp.headers
        .push(("Content-Type".into(), "application/xml".into()));
    resp
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    req.body = vec![0; len];
    r.read_exact(&mut req.body).ok()?;
    Some(req)
}

struct Response {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn status(code: u16, body: &str) -> Response {
        Response {
            code,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn encode(&self, head: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} X\r\n", self.code);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let no_body = self.code == 204 || self.code == 304;
        if !no_body {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head && !no_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}
