//! The Consul source follows an embedded registry that is killed with SIGKILL and restarted on
//! the same data directory and port: nothing acknowledged is lost, the store keeps serving the
//! last state while the registry is down (flagged stale), and recovers after.

use meshplane_test_support::poll::eventually_watch;
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use meshplane_registry::{RegistrySource, Snapshot, Store, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DIR_ENV: &str = "MESHPLANE_TEST_CONSUL_CHILD_DIR";
const ADDR_ENV: &str = "MESHPLANE_TEST_CONSUL_CHILD_ADDR";

/// Not a test on its own: the body of the child process (a no-op unless the env vars are set).
#[test]
fn embedded_registry_child_process() {
    let (Ok(dir), Ok(addr)) = (std::env::var(DIR_ENV), std::env::var(ADDR_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = EmbeddedConfig {
            listen_addr: addr.parse().expect("addr"),
            data_dir: dir.into(),
            ..Default::default()
        };
        let registry = EmbeddedRegistry::bind(config).await.expect("bind");
        println!("LISTENING {}", registry.local_addr());
        registry
            .serve(CancellationToken::new())
            .await
            .expect("serve");
    });
}

/// The child registry; SIGKILLed and reaped on drop.
struct Child9(Child, String);

impl Child9 {
    fn spawn(dir: &std::path::Path, addr: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "embedded_registry_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir)
            .env(ADDR_ENV, addr)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, addr)) = line.split_once("LISTENING ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child registry did not start");
        };
        Child9(child, addr)
    }

    fn kill9(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }
}

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn until(store: &Store, what: &str, pred: impl Fn(&Snapshot) -> bool) {
    eventually_watch(&mut store.subscribe(), what, Duration::from_secs(15), |s| {
        pred(s)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_registry_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Child9::spawn(dir.path(), "127.0.0.1:0");
    let addr = first.1.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for i in 0..50 {
        let body =
            json!({"Name": format!("svc-{}", i % 5), "ID": format!("id-{i}"), "Port": 2000 + i});
        let r = http
            .put(format!("http://{addr}/v1/agent/service/register"))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert!(r.status().is_success());
    }

    let (reader, writer) = store();
    let (sink, events) = event_channel(256);
    let shutdown = CancellationToken::new();
    let config = ConsulConfig {
        address: format!("http://{addr}"),
        wait: Duration::from_secs(30),
        min_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(200),
        ..ConsulConfig::default()
    };
    let source = ConsulSource::new(config).expect("config");
    let writer_task = tokio::spawn(writer.run(events, shutdown.clone()));
    let source_task = tokio::spawn(source.run(sink, shutdown.clone()));
    until(&reader, "all 50 instances", |s| s.instance_count() == 50).await;

    first.kill9();
    until(&reader, "stale after SIGKILL", Snapshot::is_stale).await;
    assert_eq!(
        reader.snapshot().instance_count(),
        50,
        "state kept while the registry is down"
    );

    let second = Child9::spawn(dir.path(), &addr);
    let r = http
        .put(format!("http://{}/v1/agent/service/register", second.1))
        .json(&json!({"Name": "svc-0", "ID": "after-restart", "Port": 3000}))
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success());
    until(
        &reader,
        "recovered with every acknowledged registration",
        |s| !s.is_stale() && s.instance_count() == 51,
    )
    .await;

    shutdown.cancel();
    source_task.await.expect("join").expect("source");
    writer_task.await.expect("join");
    drop(second);
}
