//! The README's main job, end to end: `meshplane demo --once` with real Envoy sidecars.

use std::process::Command;

#[test]
fn demo_once_shows_traffic_through_real_envoys() {
    let output = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["demo", "--once", "--requests", "30"])
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
    // mTLS with CA-issued identities, and permissions enforced by Envoy.
    assert!(
        stdout.contains("web → payments (not in payments' incoming)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("instances left in the registry: 0"),
        "sidecars deregister: {stdout}"
    );
}
