//! Envoy's access-log lines, collected from every Envoy the sidecar runs and written to one
//! destination: the sidecar's stdout or a file (`--access-log stdout|PATH`).
//!
//! The control plane configures the lines (request lines per the descriptor's `access_log`,
//! RBAC decisions) as JSON on Envoy's stdout, the same for every proxy of a group; where they
//! go is this sidecar's setting. Each Envoy gets its own pipe as stdout, read by a thread of
//! its own, so during a hot restart both epochs' lines arrive, and each read's complete lines
//! are written under one lock: lines of two epochs never mix. The sidecar's own logs (and
//! Envoy's) go to stderr, so stdout carries nothing but these lines; where both end up in one
//! pipe (`2>&1 | logger`), stdout is written in runs of whole lines of at most `PIPE_BUF`
//! bytes, which a pipe never splits, so a stderr line cannot land inside an access-log line
//! (one longer than that, which takes a hostile request's escaped values, is written alone).
//!
//! A file is opened for appending (created 0640) before Envoy starts, so a bad path stops the
//! sidecar at once. For log rotation it is reopened on SIGHUP (which also hot-restarts Envoy)
//! and, with no signal at all, at the first line after it was moved or removed (checked at
//! most once a second): logrotate's default `create` mode and `copytruncate` both work
//! without a `postrotate` script.
//!
//! Cost per request: nothing here. Envoy buffers lines and flushes them once a second
//! (`--file-flush-interval-msec`, see `envoy::process`); each flush is one read and one write
//! here.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often a file destination is checked for having been moved or removed.
const MOVED_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A "line" longer than this without a newline is written out as it is (Envoy's lines are
/// bounded far below: the translator cuts long values).
const MAX_LINE: usize = 1 << 20;
/// The largest write a pipe takes whole (POSIX `PIPE_BUF` on Linux): stdout is often a pipe
/// shared with stderr (`2>&1 | logger`, a container runtime), where a larger write can be
/// split and another process's log line land inside one of ours.
const PIPE_BUF: usize = 4096;
/// Write errors (a full disk) are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogDestination {
    /// The sidecar's own stdout (the default: where service managers collect output).
    #[default]
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

impl std::str::FromStr for AccessLogDestination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Err("give `stdout` or a file path".to_owned()),
            "stdout" => Ok(AccessLogDestination::Stdout),
            path => Ok(AccessLogDestination::File(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for AccessLogDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogDestination::Stdout => f.write_str("stdout"),
            AccessLogDestination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The one writer of access-log lines, shared by the threads reading each Envoy's stdout.
#[derive(Debug)]
pub struct AccessLogSink {
    output: Mutex<Output>,
    reopen_requested: AtomicBool,
}

#[derive(Debug)]
enum Output {
    Stdout,
    File(OpenFile),
}

#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    file: File,
    /// (device, inode) of the open file: the path naming another one means it was moved.
    id: (u64, u64),
    checked: Instant,
    warned: Option<Instant>,
}

// === impl AccessLogSink ===

impl AccessLogSink {
    /// Opens the destination (a file is created if missing and appended to).
    pub fn open(destination: &AccessLogDestination) -> std::io::Result<Arc<Self>> {
        let output = match destination {
            AccessLogDestination::Stdout => Output::Stdout,
            AccessLogDestination::File(path) => Output::File(OpenFile::open(path)?),
        };
        Ok(Arc::new(AccessLogSink {
            output: Mutex::new(output),
            reopen_requested: AtomicBool::new(false),
        }))
    }

    /// Reopens a file destination before the next line (SIGHUP, for log rotation).
    pub fn reopen(&self) {
        self.reopen_requested.store(true, Ordering::Relaxed);
    }

    /// Reads `envoy_stdout` (one Envoy's) on a thread of its own until it closes (Envoy
    /// exited), writing its lines here.
    pub fn capture(
        self: &Arc<Self>,
        envoy_stdout: std::io::PipeReader,
        epoch: u32,
    ) -> std::io::Result<()> {
        let sink = self.clone();
        std::thread::Builder::new()
            .name(format!("envoy-{epoch}-access-log"))
            .spawn(move || sink.copy_lines(envoy_stdout))
            .map(drop)
    }

    fn copy_lines(&self, mut from: impl Read) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read Envoy's access log; its lines are lost until it restarts");
                    break;
                }
            };
            pending.extend_from_slice(&buf[..n]);
            if let Some(last) = pending.iter().rposition(|b| *b == b'\n') {
                self.write_lines(&pending[..=last]);
                pending.drain(..=last);
            } else if pending.len() > MAX_LINE {
                pending.push(b'\n');
                self.write_lines(&pending);
                pending.clear();
            }
        }
        if !pending.is_empty() {
            pending.push(b'\n');
            self.write_lines(&pending);
        }
    }

    /// Writes complete lines at once. Envoy escapes what it writes, so lines are UTF-8; should
    /// one not be, its bad bytes become U+FFFD (never a structural JSON character).
    fn write_lines(&self, lines: &[u8]) {
        let repaired;
        let lines = match std::str::from_utf8(lines) {
            Ok(_) => lines,
            Err(_) => {
                repaired = String::from_utf8_lossy(lines).into_owned();
                repaired.as_bytes()
            }
        };
        let reopen = self.reopen_requested.swap(false, Ordering::Relaxed);
        match &mut *self.output.lock() {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                for batch in batches(lines, PIPE_BUF) {
                    // stdout closed or broken: nothing better to do than drop the lines.
                    let _ = out.write_all(batch).and_then(|()| out.flush());
                }
            }
            Output::File(f) => f.write(lines, reopen),
        }
    }
}

/// `lines` (complete lines) in runs of whole lines of at most `max` bytes; a longer line is a
/// run of its own.
fn batches(lines: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = lines;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        for (i, b) in rest.iter().enumerate() {
            if *b == b'\n' {
                if end > 0 && i + 1 > max {
                    break;
                }
                end = i + 1;
            }
        }
        if end == 0 {
            end = rest.len();
        }
        let (batch, tail) = rest.split_at(end);
        rest = tail;
        Some(batch)
    })
}

// === impl OpenFile ===

impl OpenFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(OpenFile {
            path: path.to_owned(),
            file,
            id: (meta.dev(), meta.ino()),
            checked: Instant::now(),
            warned: None,
        })
    }

    fn write(&mut self, lines: &[u8], reopen: bool) {
        if reopen || self.moved() {
            match OpenFile::open(&self.path) {
                Ok(new) => {
                    tracing::info!(path = %self.path.display(), "access log reopened");
                    let warned = self.warned;
                    *self = OpenFile { warned, ..new };
                }
                Err(e) => self.warn(&e),
            }
        }
        if let Err(e) = self.file.write_all(lines) {
            self.warn(&e);
        }
    }

    /// Whether the path now names another file or none (checked at most once a second).
    fn moved(&mut self) -> bool {
        if self.checked.elapsed() < MOVED_CHECK_EVERY {
            return false;
        }
        self.checked = Instant::now();
        match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.id,
            Err(_) => true,
        }
    }

    fn warn(&mut self, e: &std::io::Error) {
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the access log; lines are dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_file_sink(dir: &Path) -> (Arc<AccessLogSink>, PathBuf) {
        let path = dir.join("access.log");
        let sink = AccessLogSink::open(&AccessLogDestination::File(path.clone())).expect("open");
        (sink, path)
    }

    #[test]
    fn destinations_parse() {
        assert_eq!("stdout".parse(), Ok(AccessLogDestination::Stdout));
        assert_eq!(
            "/var/log/a.log".parse(),
            Ok(AccessLogDestination::File("/var/log/a.log".into()))
        );
        assert!("".parse::<AccessLogDestination>().is_err());
    }

    #[test]
    fn complete_lines_are_written_and_a_trailing_part_at_the_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sink, path) = mk_file_sink(dir.path());
        // Reads that split lines anywhere still give whole lines.
        let chunks: Vec<&[u8]> = vec![b"{\"a\":1}\n{\"b\"", b":2}\n", b"{\"c\":3}"];
        sink.copy_lines(std::io::Cursor::new(chunks.concat()));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }

    #[test]
    fn stdout_writes_are_whole_lines_within_a_pipe_buffer() {
        let lines = b"aaaa\nbb\ncccccccccc\nd\n";
        let got: Vec<&[u8]> = batches(lines, 8).collect();
        assert_eq!(
            got,
            [&b"aaaa\nbb\n"[..], b"cccccccccc\n", b"d\n"],
            "a line longer than the bound goes alone"
        );
        assert_eq!(batches(lines, 4096).count(), 1);
        assert_eq!(batches(b"", 8).count(), 0);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sink, path) = mk_file_sink(dir.path());
        sink.write_lines(b"{\"path\":\"/a\xff\xfeb\"}\n");
        let text = std::fs::read_to_string(&path).expect("valid UTF-8");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
        assert_eq!(v["path"], "/a\u{fffd}\u{fffd}b");
    }

    #[test]
    fn a_moved_file_is_replaced_by_a_new_one_and_reopen_does_it_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sink, path) = mk_file_sink(dir.path());
        sink.write_lines(b"one\n");
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).expect("rotate");
        // Within the check interval, lines still reach the open (moved) file...
        sink.write_lines(b"two\n");
        // ...and a reopen request moves on at the next line.
        sink.reopen();
        sink.write_lines(b"three\n");
        assert_eq!(
            std::fs::read_to_string(&rotated).expect("read"),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "three\n");
        // Without a signal: the next check after the interval notices the move.
        std::fs::rename(&path, &rotated).expect("rotate again");
        if let Output::File(f) = &mut *sink.output.lock() {
            f.checked -= MOVED_CHECK_EVERY;
        }
        sink.write_lines(b"four\n");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "four\n");
    }

    #[test]
    fn an_unwritable_path_fails_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("no/such/dir/access.log");
        assert!(AccessLogSink::open(&AccessLogDestination::File(missing)).is_err());
    }
}
