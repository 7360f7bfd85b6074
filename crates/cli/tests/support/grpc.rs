//! The real gRPC apps of the tests (`tests/grpc/echo.py`, grpcio from the project's venv).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub fn python() -> String {
    let python = format!("{ROOT}/.tools/venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run scripts/install-test-deps.sh"
    );
    python
}

/// The gRPC server process and what it printed after its port.
pub struct GrpcServer {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl GrpcServer {
    pub fn start(name: &str) -> GrpcServer {
        Self::start_with(name, &[])
    }

    /// With `["unavailable"]`: a server whose Unary fails with UNAVAILABLE.
    pub fn start_with(name: &str, extra: &[&str]) -> GrpcServer {
        let mut child = Command::new(python())
            .args([&format!("{ROOT}/tests/grpc/echo.py"), "server", name])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the gRPC server starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.trim().parse().ok())
            .expect("the server prints its port (is grpcio installed?)");
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = printed.clone();
        std::thread::spawn(move || read_lines(lines, &sink));
        GrpcServer {
            child,
            port,
            lines: printed,
        }
    }

    pub fn printed(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

fn read_lines(lines: std::io::Lines<BufReader<ChildStdout>>, sink: &Mutex<Vec<String>>) {
    for line in lines.map_while(Result::ok) {
        sink.lock().push(line);
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
