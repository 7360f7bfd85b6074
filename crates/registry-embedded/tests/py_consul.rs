//! A real third-party Consul client (py-consul from PyPI, unmodified) against the embedded
//! registry. Needs `scripts/install-test-deps.sh`; skipped loudly without it, except in CI
//! (`CI` set), where a missing venv fails the test.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn run_script(addr: &str, token: Option<&str>) -> std::process::Output {
    let root = workspace_root();
    let python = root.join(".tools/venv/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/py_consul_client.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .arg(addr)
        .args(token)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("py-consul script finished within 60s")
        .expect("python runs")
}

fn venv_present() -> bool {
    let python = workspace_root().join(".tools/venv/bin/python");
    if python.exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} is missing: run scripts/install-test-deps.sh first",
        python.display()
    );
    eprintln!(
        "\n!!! SKIPPING py-consul test: {} not found. Run scripts/install-test-deps.sh to enable it. !!!\n",
        python.display()
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_registers_heartbeats_blocks_and_deregisters() {
    if !venv_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start(dir.path()).await;
    let out = run_script(&server.addr.to_string(), None).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-consul script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_works_with_an_acl_token() {
    if !venv_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start_with(
        dir.path(),
        Some("t0ken"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await;
    let out = run_script(&server.addr.to_string(), Some("t0ken")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-consul script failed with a token:\n{stderr}"
    );
    server.stop().await;
}
