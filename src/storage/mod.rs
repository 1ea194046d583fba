//! The storage layer: the only place that knows object_store and tokio. It gives
//! the layers above a synchronous, thread-safe interface over any object store.
//! It may use the pure `format` layer and the error type, nothing else.

mod backend;
mod counting;
mod options;

pub use backend::*;
pub use counting::RequestCounts;
pub use options::{CAIRN_KEYS, DEFAULT_CONNECT_DEADLINE};
