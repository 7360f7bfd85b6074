//! `meshplane sidecar` and `meshplane bootstrap` as a user runs them: exit codes, messages,
//! and nothing started when the descriptor is bad. (Envoy supervision, registration and
//! hot restart are tested in `crates/sidecar/tests`.)
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use meshplane_test_support::eventually_blocking;

/// How long a sidecar's Envoy may take to start or to die.
const ENVOY_WAIT: Duration = Duration::from_secs(30);

/// A scratch directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("meshplane-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn meshplane() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshplane"))
}

#[test]
fn sidecar_with_a_bad_descriptor_fails_naming_the_field_and_starts_nothing() {
    let dir = Scratch::new("bad");
    let descriptor = dir.0.join("meshplane.yaml");
    std::fs::write(
        &descriptor,
        "service: orders\nport: 8080\ningress: { port: 31001 }\nweight: 0\n",
    )
    .unwrap();
    let marker = dir.0.join("envoy-was-started");
    let envoy = dir.0.join("envoy");
    std::fs::write(
        &envoy,
        format!("#!/bin/sh\ntouch '{}'\nsleep 60\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&envoy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = meshplane()
        .args([
            "sidecar",
            "--control-plane",
            "127.0.0.1:1",
            "--registry",
            "http://127.0.0.1:1",
        ])
        .arg("--descriptor")
        .arg(&descriptor)
        .arg("--envoy")
        .arg(&envoy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(stderr.contains("weight"), "names the field: {stderr}");
    assert!(!marker.exists(), "Envoy must not be started");
}

#[test]
fn sidecar_with_an_unwritable_access_log_fails_naming_the_flag_and_starts_nothing() {
    let dir = Scratch::new("access-log");
    let descriptor = dir.0.join("meshplane.yaml");
    std::fs::write(
        &descriptor,
        "service: orders\nport: 8080\ningress: { port: 31001 }\naccess_log: all\n",
    )
    .unwrap();
    let marker = dir.0.join("envoy-was-started");
    let envoy = dir.0.join("envoy");
    std::fs::write(
        &envoy,
        format!("#!/bin/sh\ntouch '{}'\nsleep 60\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&envoy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = meshplane()
        .args([
            "sidecar",
            "--control-plane",
            "127.0.0.1:1",
            "--registry",
            "http://127.0.0.1:1",
            "--admin-relay-addr",
            "off",
        ])
        .arg("--descriptor")
        .arg(&descriptor)
        .arg("--envoy")
        .arg(&envoy)
        .arg("--work-dir")
        .arg(dir.0.join("work"))
        .arg("--access-log")
        .arg(dir.0.join("no-such-dir/access.log"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(
        stderr.contains("--access-log: cannot open") && stderr.contains("no-such-dir"),
        "names the flag and the path: {stderr}"
    );
    assert!(!marker.exists(), "Envoy must not be started");
}

#[test]
fn bootstrap_prints_the_envoy_bootstrap() {
    let dir = Scratch::new("bootstrap");
    let descriptor = dir.0.join("meshplane.yaml");
    std::fs::write(
        &descriptor,
        "service: orders\nport: 8080\ningress: { port: 31001 }\n",
    )
    .unwrap();
    let out = meshplane()
        .args([
            "bootstrap",
            "--control-plane",
            "10.0.0.1:18000,10.0.0.2:18000",
            "--instance-id",
            "orders-1",
        ])
        .arg("--descriptor")
        .arg(&descriptor)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "\"id\": \"orders-1\"",
        "\"cluster\": \"orders\"",
        "meshplane_xds",
        "\"priority\": 1",
        "\"port_value\": 9901",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from:\n{stdout}"
        );
    }
}

/// Children of `pid` (every thread's).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A port free on 127.0.0.1 right now.
/// Even a SIGKILLed sidecar (no chance to clean up) leaves no running Envoy behind.
#[test]
fn envoy_dies_with_a_killed_sidecar() {
    let Some(envoy) = [".tools/envoy/envoy/_bin/envoy"]
        .iter()
        .map(|p| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(p))
        .find(|p| p.exists())
    else {
        panic!("Envoy is needed: run scripts/install-envoy.sh");
    };
    let dir = Scratch::new("orphan");
    let descriptor = dir.0.join("meshplane.yaml");
    std::fs::write(
        &descriptor,
        "service: orders\nport: 8080\ningress: { port: 31001 }\n",
    )
    .unwrap();
    let admin_port = support::free_port();
    // No control plane here, so no CA: the identity comes from host certificate files.
    let (cert, key, ca, _) = support::TestCa::new(&dir.0, "host")
        .issue("host", "spiffe://meshplane.local/service/orders");
    let mut sidecar = meshplane()
        .args([
            "sidecar",
            "--control-plane",
            "127.0.0.1:1",
            "--registry",
            "http://127.0.0.1:1",
        ])
        .args(["--cert-file", &cert, "--key-file", &key, "--ca-file", &ca])
        .args(["--envoy-log-level", "critical", "--envoy-concurrency", "1"])
        .arg("--descriptor")
        .arg(&descriptor)
        .arg("--envoy")
        .arg(&envoy)
        .args(["--admin-port", &admin_port.to_string()])
        .arg("--work-dir")
        .arg(&dir.0)
        // Not the test's own pipes: a leaked Envoy would hold them open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let envoy_pid = eventually_blocking("Envoy to start", ENVOY_WAIT, || {
        children(sidecar.id()).first().copied()
    });
    // Envoy arms its parent-death signal while starting; its admin port means it is up.
    eventually_blocking("Envoy's admin port", ENVOY_WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).ok()
    });
    sidecar.kill().unwrap();
    sidecar.wait().unwrap();
    eventually_blocking("Envoy to die with its sidecar", ENVOY_WAIT, || {
        let stat = std::fs::read_to_string(format!("/proc/{envoy_pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}
