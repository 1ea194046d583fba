//! The storage layer: the only place that knows object_store and tokio. It gives
//! the layers above a synchronous, thread-safe interface over any object store.
//! It may use the pure `format` layer and the error type, nothing else.

mod backend;

pub use backend::*;
