//! The OTLP/gRPC trace receiver of `tests/otlp/receiver.py` (grpcio and opentelemetry-proto
//! from PyPI, in the project's venv) as a child process of a test (or of the
//! `envoy_observability` benchmark, which includes this file).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The OTLP receiver process and the spans it has printed so far (read on a thread).
pub struct Receiver {
    child: Child,
    /// Where it listens (127.0.0.1).
    pub port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Starts it with the project's venv Python; panics with what to install if missing.
    pub fn start() -> Receiver {
        let python = format!("{ROOT}/.tools/venv/bin/python");
        assert!(
            std::path::Path::new(&python).exists(),
            "{python} is missing: run scripts/install-test-deps.sh"
        );
        let mut child = Command::new(&python)
            .arg(format!("{ROOT}/tests/otlp/receiver.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the OTLP receiver starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.trim().parse().ok())
            .expect("the receiver prints its port (are grpcio and opentelemetry-proto installed?)");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || read_spans(lines, &sink));
        Receiver { child, port, spans }
    }

    /// Its process id (the cost benchmark reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().clone()
    }
}

fn read_spans(lines: std::io::Lines<BufReader<ChildStdout>>, sink: &Mutex<Vec<Value>>) {
    for line in lines.map_while(Result::ok) {
        if let Ok(span) = serde_json::from_str(&line) {
            sink.lock().push(span);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
