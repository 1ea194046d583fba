//! Request counting: a store wrapper every backend goes through. A cloud bill is
//! requests and egress, so each request kind and the bytes each way are counted
//! with cheap atomic counters.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Requests made and bytes moved, as counted at the store interface (a request
/// object_store retries internally counts once). A listing counts one request
/// per 1,000 keys returned (the page size of S3 and GCS; Azure's is 5,000), and
/// at least one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub head: u64,
    pub delete: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            put: self.put.load(Relaxed),
            get: self.get.load(Relaxed),
            list: self.list.load(Relaxed),
            head: self.head.load(Relaxed),
            delete: self.delete.load(Relaxed),
            bytes_up: self.bytes_up.load(Relaxed),
            bytes_down: self.bytes_down.load(Relaxed),
        }
    }
}

/// Counts the requests that pass through it to the inner store.
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> (CountingStore, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let store = CountingStore {
            inner,
            counters: counters.clone(),
        };
        (store, counters)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

/// Counts a listing as it streams: one request per started page of 1,000 keys.
fn count_listing(
    counters: Arc<Counters>,
    s: BoxStream<'static, Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    counters.list.fetch_add(1, Relaxed);
    let mut seen = 0u64;
    s.inspect(move |r| {
        if r.is_ok() {
            seen += 1;
            if seen % 1000 == 1 && seen > 1 {
                counters.list.fetch_add(1, Relaxed);
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.counters.put.fetch_add(1, Relaxed);
        self.counters
            .bytes_up
            .fetch_add(payload.content_length() as u64, Relaxed);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // cairn uploads single objects; multipart passes through uncounted.
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let counter = if head {
            &self.counters.head
        } else {
            &self.counters.get
        };
        counter.fetch_add(1, Relaxed);
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            // The caller reads the whole returned range (the backend always does).
            self.counters
                .bytes_down
                .fetch_add(result.range.end - result.range.start, Relaxed);
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.counters.get.fetch_add(ranges.len() as u64, Relaxed);
        let out = self.inner.get_ranges(location, ranges).await?;
        let n: usize = out.iter().map(|b| b.len()).sum();
        self.counters.bytes_down.fetch_add(n as u64, Relaxed);
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counters = self.counters.clone();
        let locations = locations
            .inspect(move |_| {
                counters.delete.fetch_add(1, Relaxed);
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        count_listing(self.counters.clone(), self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        count_listing(
            self.counters.clone(),
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counters.list.fetch_add(1, Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counters.put.fetch_add(1, Relaxed);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.counters.put.fetch_add(1, Relaxed);
        self.counters.delete.fetch_add(1, Relaxed);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    #[test]
    fn counts_each_kind_and_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (s, c) = CountingStore::new(Arc::new(object_store::memory::InMemory::new()));
        rt.block_on(async {
            s.put(&Path::from("a/1"), vec![0u8; 100].into())
                .await
                .unwrap();
            s.put(&Path::from("a/2"), vec![0u8; 50].into())
                .await
                .unwrap();
            s.get(&Path::from("a/1"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            s.get_range(&Path::from("a/2"), 10..20).await.unwrap();
            s.head(&Path::from("a/1")).await.unwrap();
            let listed: Vec<_> = s.list(Some(&Path::from("a"))).try_collect().await.unwrap();
            assert_eq!(listed.len(), 2);
            s.delete(&Path::from("a/1")).await.unwrap();
        });
        let n = c.snapshot();
        assert_eq!(
            n,
            RequestCounts {
                put: 2,
                get: 2,
                list: 1,
                head: 1,
                delete: 1,
                bytes_up: 150,
                bytes_down: 110,
            }
        );
    }
}
