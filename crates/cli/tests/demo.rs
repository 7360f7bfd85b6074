//! The README's main job, end to end: `meshplane demo` with real Envoy sidecars, and what it
//! leaves behind (nothing: its work directories hold private keys) when it succeeds, fails or
//! is interrupted.

mod support;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `meshplane demo` with its temporary directory (and its sidecars' and Envoys') in `tmp`.
fn demo(tmp: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshplane"));
    command.arg("demo").env("TMPDIR", tmp);
    command
}

fn assert_empty(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .expect("tmp dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "the demo left files behind: {left:?}");
}

#[test]
fn demo_once_shows_traffic_through_real_envoys() {
    let tmp = tempfile::tempdir().expect("tmp");
    let output = demo(tmp.path())
        .args(["--once", "--requests", "30"])
        .output()
        .expect("meshplane runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The summary names every route, shows canary preference and the undeclared-host 503.
    assert!(
        stdout.contains("orders → payments (egress proxy, by Host)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("payments-1: 0, payments-2 (canary): 30"),
        "{stdout}"
    );
    assert!(
        stdout.contains("orders → billing (not a dependency)"),
        "{stdout}"
    );
    assert!(stdout.contains("proxies connected: 4"), "{stdout}");
    assert!(
        stdout.contains("/api/prometheus/targets (deploy/prometheus/http-sd.yml)"),
        "where to point Prometheus: {stdout}"
    );
    // mTLS with CA-issued identities, and permissions enforced by Envoy.
    assert!(
        stdout.contains("web → payments (not in payments' incoming)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("instances left in the registry: 0"),
        "sidecars deregister: {stdout}"
    );
    assert_empty(tmp.path());
}

#[test]
fn a_failed_demo_removes_what_it_created() {
    let tmp = tempfile::tempdir().expect("tmp");
    // An explicit Envoy that does not exist: every sidecar refuses to start.
    let output = demo(tmp.path())
        .arg("--once")
        .env("MESHPLANE_ENVOY", tmp.path().join("no-such-envoy"))
        .output()
        .expect("meshplane runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("exited during start-up"), "{stderr}");
    assert_empty(tmp.path());
}

#[test]
fn an_interrupted_demo_removes_what_it_created() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = demo(tmp.path())
        .args(["--requests", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("meshplane runs");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    // Interrupt once traffic flows: sidecars with certificates and Envoys are running.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("orders → payments"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no traffic within 120 s: {seen:?}");
            }
        }
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert_empty(tmp.path());
}

/// `--tracing-collector`: the demo's Envoys trace every request there, and the demo says how
/// many spans they sent; a real OTLP receiver gets them, named after the mesh services.
#[test]
fn demo_traces_every_request_to_the_collector_given() {
    let receiver = support::otlp::Receiver::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let collector = format!("127.0.0.1:{}", receiver.port);
    let output = demo(tmp.path())
        .args([
            "--once",
            "--requests",
            "10",
            "--tracing-collector",
            &collector,
        ])
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("traces: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `traces:` line: {stdout}"));
    assert!(sent > 0, "{stdout}");
    let services: std::collections::BTreeSet<String> = receiver
        .spans()
        .iter()
        .filter_map(|s| s["service"].as_str().map(str::to_owned))
        .collect();
    assert!(
        ["orders", "payments"].iter().all(|s| services.contains(*s)),
        "spans received from {services:?}"
    );
    assert_empty(tmp.path());

    // A malformed collector is a clear error before anything starts.
    let output = demo(tmp.path())
        .args(["--once", "--tracing-collector", "no-port-here"])
        .output()
        .expect("demo runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tracing-collector") && stderr.contains("HOST:PORT"),
        "{stderr}"
    );
}
