//! TEST DOUBLE: an object store wrapper that parks chosen requests until the
//! test lets them go, so a test can force one schedule of concurrent commands
//! exactly (a prune paused right before it publishes its mark, a backup
//! paused before its snapshot upload...), and that can fake an S3-style
//! conflict answer or refuse chosen uploads, and that can lock what is written
//! (deletes refused with 403, as an object lock holds them). Wired in with
//! `Backend::from_store`.
//!
//! A gate parks the first request of its kind whose key it matches, from any
//! thread; later matching requests pass. The parked request blocks its own
//! thread (inside `block_on`, never a runtime worker), which is what a
//! SIGSTOP or a laptop lid does to a real process between two requests.
#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Armed,
    Holding,
    Released,
}

type KeyMatch = Box<dyn Fn(&str) -> bool + Send + Sync>;

struct Gate {
    name: String,
    op: Op,
    matches: KeyMatch,
    state: GateState,
    /// The key of the request it parked.
    held: Option<String>,
}

/// A rule for uploads that do not go through.
struct Refusal {
    matches: KeyMatch,
    /// Answer "already exists" without storing anything (an S3 409 after a
    /// conflicting concurrent request); otherwise fail with an error.
    conflict: bool,
    remaining: usize,
}

#[derive(Default)]
struct Inner {
    gates: Vec<Gate>,
    refusals: Vec<Refusal>,
    /// Successful uploads per key (to see that no key is created twice).
    created: std::collections::HashMap<String, usize>,
    /// Uploads whose key this accepts are locked once stored, as an object
    /// lock or retention policy would hold them (see [`GateStore::lock_writes`]).
    locking: Option<KeyMatch>,
    locked: std::collections::HashSet<String>,
}

pub struct GateStore {
    inner: Arc<dyn ObjectStore>,
    state: Mutex<Inner>,
    changed: Condvar,
}

impl fmt::Debug for GateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GateStore({})", self.inner)
    }
}

impl fmt::Display for GateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GateStore({})", self.inner)
    }
}

const PATIENCE: Duration = Duration::from_secs(120);

impl GateStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> GateStore {
        GateStore {
            inner,
            state: Mutex::new(Inner::default()),
            changed: Condvar::new(),
        }
    }

    /// Parks the next `op` whose key `matches` accepts, until [`release`].
    pub fn arm(&self, name: &str, op: Op, matches: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.state.lock().unwrap().gates.push(Gate {
            name: name.to_string(),
            op,
            matches: Box::new(matches),
            state: GateState::Armed,
            held: None,
        });
    }

    /// Waits until the gate parks a request; returns its key.
    pub fn wait_held(&self, name: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut s = self.state.lock().unwrap();
        loop {
            let g = s
                .gates
                .iter()
                .find(|g| g.name == name)
                .expect("no such gate");
            if g.state == GateState::Holding {
                return g.held.clone().unwrap();
            }
            assert!(
                g.state == GateState::Armed,
                "gate {name} was released already"
            );
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "nothing reached gate {name}");
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Lets the parked request (or the next one, if none is parked yet) go.
    pub fn release(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let g = s
            .gates
            .iter_mut()
            .find(|g| g.name == name)
            .expect("no such gate");
        g.state = GateState::Released;
        self.changed.notify_all();
    }

    /// The next `times` uploads whose key `matches` accepts are answered
    /// "already exists" without being stored.
    pub fn fake_conflicts(
        &self,
        times: usize,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) {
        self.refuse(times, true, matches)
    }

    /// The next `times` uploads whose key `matches` accepts fail.
    pub fn fail_uploads(
        &self,
        times: usize,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) {
        self.refuse(times, false, matches)
    }

    fn refuse(
        &self,
        times: usize,
        conflict: bool,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().refusals.push(Refusal {
            matches: Box::new(matches),
            conflict,
            remaining: times,
        });
    }

    /// From now on, objects whose key `matches` accepts are locked when
    /// stored: their deletes are refused with 403, as S3 Object Lock, an
    /// Azure immutability policy or a GCS retention policy answers.
    pub fn lock_writes(&self, matches: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.state.lock().unwrap().locking = Some(Box::new(matches));
    }

    /// Every lock ends, and nothing written from now on is locked.
    pub fn lift_locks(&self) {
        let mut s = self.state.lock().unwrap();
        s.locking = None;
        s.locked.clear();
    }

    /// How many uploads of `key` succeeded.
    pub fn times_created(&self, key: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .created
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Parks the calling request if an armed gate matches it.
    fn pass(&self, op: Op, key: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(i) = s
            .gates
            .iter()
            .position(|g| g.op == op && g.state == GateState::Armed && (g.matches)(key))
        else {
            return;
        };
        s.gates[i].state = GateState::Holding;
        s.gates[i].held = Some(key.to_string());
        self.changed.notify_all();
        while s.gates[i].state == GateState::Holding {
            s = self.changed.wait(s).unwrap();
        }
    }

    /// Whether this upload is refused, and how.
    fn refusal(&self, key: &str) -> Option<bool> {
        let mut s = self.state.lock().unwrap();
        let r = s
            .refusals
            .iter_mut()
            .find(|r| r.remaining > 0 && (r.matches)(key))?;
        r.remaining -= 1;
        Some(r.conflict)
    }
}

#[async_trait::async_trait]
impl ObjectStore for GateStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let key = location.to_string();
        self.pass(Op::Put, &key);
        match self.refusal(&key) {
            Some(true) => {
                return Err(object_store::Error::AlreadyExists {
                    path: key,
                    source: "injected 409 conflict; nothing stored".into(),
                })
            }
            Some(false) => {
                return Err(object_store::Error::Generic {
                    store: "GateStore",
                    source: format!("injected failure uploading {key}").into(),
                })
            }
            None => {}
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        let mut s = self.state.lock().unwrap();
        if s.locking.as_ref().is_some_and(|m| m(&key)) {
            s.locked.insert(key.clone());
        }
        *s.created.entry(key).or_default() += 1;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.pass(Op::Get, location.as_ref());
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Locked objects are refused one by one; the rest go to the store.
        let locked = self.state.lock().unwrap().locked.clone();
        let inner = self.inner.clone();
        locations
            .then(move |p| {
                let refused = p.as_ref().is_ok_and(|p| locked.contains(p.as_ref()));
                let inner = inner.clone();
                async move {
                    let p = p?;
                    if refused {
                        return Err(object_store::Error::PermissionDenied {
                            path: p.to_string(),
                            source: "the object is under a retention policy".into(),
                        });
                    }
                    let one = futures::stream::once(async { Ok(p) }).boxed();
                    inner.delete_stream(one).next().await.expect("one answer")
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
