//! Registry source backed by a YAML file (`--registry file --services-file FILE`).
//!
//! This crate owns the file format ([`parse`]) and the watcher ([`FileSource`]): the file is
//! re-read whenever its content changes and each good version replaces the source's state
//! atomically. A broken edit keeps the previous state, flags the source stale and logs the
//! parse error with its line and column.
//!
//! ```yaml
//! services:
//!   - name: payments
//!     instances:
//!       - { id: payments-1, address: 10.0.0.5, port: 31001, tags: [canary], weight: 100, datacenter: dc1 }
//! ```

mod format;
mod source;

pub use format::{ParseError, parse};
pub use source::{FileConfig, FileError, FileSource};
