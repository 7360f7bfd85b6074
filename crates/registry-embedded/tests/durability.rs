//! Acknowledged registrations survive `kill -9`: the test re-runs this test binary as a child
//! process serving the registry, registers services, SIGKILLs the child, restarts it on the
//! same data directory and reads everything back.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use support::client;

const CHILD_DIR_ENV: &str = "MESHPLANE_TEST_REGISTRY_CHILD_DIR";

/// Not a test on its own: the body of the child process (a no-op unless the env var is set).
#[test]
fn registry_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = support::start(std::path::Path::new(&dir)).await;
        println!("LISTENING {}", server.addr);
        std::future::pending::<()>().await;
    });
}

/// A child registry process, killed (SIGKILL) and reaped on drop.
struct ChildRegistry {
    child: Child,
    url: String,
}

impl ChildRegistry {
    fn spawn(dir: &std::path::Path) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "registry_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child registry");
        let stdout = child.stdout.take().expect("stdout");
        // Read on a thread so a child that never comes up fails the test instead of hanging it.
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may print "test name ... " on the same line first.
                if let Some((_, addr)) = line.split_once("LISTENING ") {
                    let _ = addr_tx.send(addr.trim().to_string());
                }
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child registry did not start listening within 30s");
        };
        ChildRegistry {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// SIGKILL, no chance to flush anything, then reap.
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL child");
        self.child.wait().expect("reap child");
    }
}

impl Drop for ChildRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_registrations_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = ChildRegistry::spawn(dir.path());
    let http = client();

    // Concurrent registrations exercise group commit; every 200 must be durable.
    let mut acked = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (http, url) = (http.clone(), first.url.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"Name": format!("svc-{}", i % 20), "ID": format!("id-{i}"), "Port": 1000 + i,
                "Check": {"TTL": "1h", "Status": "passing"}});
            let r = http.put(format!("{url}/v1/agent/service/register")).json(&body).send().await;
            (i, r.map(|r| r.status().is_success()).unwrap_or(false))
        }));
    }
    for task in tasks {
        let (i, ok) = task.await.expect("task");
        if ok {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 200, "all registrations acknowledged");
    let deregister = http
        .put(format!("{}/v1/agent/service/deregister/id-0", first.url))
        .send()
        .await
        .expect("dereg");
    assert!(deregister.status().is_success());
    let (_, index_before) = services_and_index(&http, &first.url).await;
    first.kill9();

    let second = ChildRegistry::spawn(dir.path());
    let mut found = Vec::new();
    for svc in 0..20 {
        let r = http
            .get(format!("{}/v1/health/service/svc-{svc}", second.url))
            .send()
            .await
            .expect("get");
        let entries: Value = r.json().await.expect("json");
        for e in entries.as_array().expect("list") {
            assert_eq!(
                e["Checks"][1]["Status"], "passing",
                "check status survives too"
            );
            found.push(e["Service"]["Port"].as_u64().expect("port") as u32 - 1000);
        }
    }
    found.sort_unstable();
    let expected: Vec<u32> = (1..200).collect();
    assert_eq!(
        found, expected,
        "every acknowledged registration survived; the deregistration too"
    );
    let (_, index_after) = services_and_index(&http, &second.url).await;
    assert!(
        index_after >= index_before,
        "the index never goes backwards across restarts"
    );
    drop(second);
}

async fn services_and_index(http: &reqwest::Client, url: &str) -> (Value, u64) {
    let r = http
        .get(format!("{url}/v1/catalog/services"))
        .send()
        .await
        .expect("get");
    let index = r.headers()["X-Consul-Index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("int");
    (r.json().await.expect("json"), index)
}

#[tokio::test]
async fn a_second_registry_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = support::start(dir.path()).await;
    let config = meshplane_registry_embedded::EmbeddedConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let err = meshplane_registry_embedded::EmbeddedRegistry::bind(config)
        .await
        .expect_err("locked");
    assert!(err.to_string().contains("--data-dir"), "{err}");
    first.stop().await;
}
