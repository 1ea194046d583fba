//! TEST DOUBLE: a fault-injecting wrapper over any object store. It fails a
//! chosen share of requests (drawn from a seeded generator, so a run is
//! reproducible), delays every request, and cuts uploads short in one of three
//! ways. Wired in with `Backend::from_store`.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// What a failing upload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFault {
    /// Fails before anything is stored (a refused or dropped request).
    FailBefore,
    /// Stores the whole object, then reports an error (the answer was lost).
    FailAfterStoring,
    /// Stores the first half of the body, then reports an error.
    StoreTruncatedThenFail,
}

#[derive(Debug, Clone)]
pub struct Faults {
    /// Share of requests that fail, 0.0 to 1.0.
    pub share: f64,
    pub delay: Duration,
    pub put: PutFault,
}

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Faults>,
    rng: AtomicU64,
    pub injected: AtomicU64,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults, seed: u64) -> FaultStore {
        FaultStore {
            inner,
            faults: Mutex::new(faults),
            rng: AtomicU64::new(seed.max(1)),
            injected: AtomicU64::new(0),
        }
    }

    /// xorshift64, shared by all requests.
    fn draw(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Waits the delay; returns whether this request fails.
    async fn enter(&self) -> Option<PutFault> {
        let f = self.faults.lock().unwrap().clone();
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        (self.draw() < f.share).then(|| {
            self.injected.fetch_add(1, Ordering::Relaxed);
            f.put
        })
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("injected fault: {what}").into(),
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match self.enter().await {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(PutFault::FailBefore) => Err(injected("upload refused")),
            Some(PutFault::FailAfterStoring) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected("connection dropped after the upload"))
            }
            Some(PutFault::StoreTruncatedThenFail) => {
                let body: Vec<u8> = payload.iter().flat_map(|b| b.to_vec()).collect();
                let half = PutPayload::from(body[..body.len() / 2].to_vec());
                self.inner.put_opts(location, half, opts).await?;
                Err(injected("upload cut short"))
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.enter().await {
            None => self.inner.get_opts(location, options).await,
            Some(_) => Err(injected("download failed")),
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.enter().await {
            None => self.inner.get_ranges(location, ranges).await,
            Some(_) => Err(injected("download failed")),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Deletes are not faulted (prune's protocol is tested elsewhere).
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // A listing fails up front (no async delay here).
        if self.draw() < self.faults.lock().unwrap().share {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return stream::once(async { Err(injected("listing failed")) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match self.enter().await {
            None => self.inner.list_with_delimiter(prefix).await,
            Some(_) => Err(injected("listing failed")),
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
