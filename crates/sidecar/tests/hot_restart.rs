//! SIGHUP: a new Envoy at the next epoch with the same base id takes over the listeners,
//! the old one drains and exits by itself, and traffic during the handover never fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use meshplane_sidecar::Outcome;
use meshplane_test_support::eventually;
use support::registry::FakeRegistry;
use support::xds::Xds;
use support::{CONVERGE, RunningSidecar, cmdline, free_port, process_exists};

/// Sends requests through Envoy, one new connection each, until stopped.
struct Load {
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` loops on each of `urls`.
    fn start(urls: &[String], clients: usize) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = urls
            .iter()
            .flat_map(|url| std::iter::repeat_n(url.clone(), clients))
            .map(|url| {
                let (ok, failures, stop) = (ok.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .pool_max_idle_per_host(0)
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status())),
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            ok,
            failures,
            stop,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failures.lock().unwrap().clone(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_restart_keeps_base_id_bumps_epoch_and_drops_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = support::start_app().await;
    let ingress_port = free_port();
    let xds = Xds::start().await;
    xds.publish_ingress("search", ingress_port, app.port());
    let registry = FakeRegistry::default();
    let registry_addr = registry.serve_on(0).await;
    let descriptor = support::write_descriptor(dir.path(), "search", app.port(), ingress_port);
    let mut config = support::test_config(dir.path(), descriptor, xds.addr, registry_addr);
    config.instance_id = Some(format!("search-test-{ingress_port}"));
    let sidecar = RunningSidecar::start(config);
    let old = sidecar.wait_for("Envoy", |s| s.current).await;
    sidecar
        .wait_for("registered", |s| s.registered.then_some(()))
        .await;
    let base_id = sidecar.status.borrow().base_id;
    assert_eq!(old.epoch, 0);

    // Fast requests, and slow ones that are mid-flight on the old Envoy when it hands over.
    let base = format!("http://127.0.0.1:{ingress_port}");
    let load = Load::start(&[format!("{base}/"), format!("{base}/slow")], 3);
    eventually("traffic flowing", CONVERGE, || {
        let n = load.ok();
        async move {
            if n >= 50 {
                Ok(())
            } else {
                Err(format!("{n} requests"))
            }
        }
    })
    .await;

    sidecar.hot_restart().await;
    let new = sidecar
        .wait_for("epoch 1", |s| s.current.filter(|p| p.epoch == 1))
        .await;
    let args = cmdline(new.pid).join(" ");
    assert!(args.contains(&format!("--base-id {base_id} ")), "{args}");
    assert!(args.contains("--restart-epoch 1 "), "{args}");
    assert_eq!(sidecar.status.borrow().base_id, base_id);
    // The old epoch drains and exits by itself (parent-shutdown-time is 2s in tests).
    sidecar
        .wait_for("the old Envoy to exit", |s| {
            s.draining.is_empty().then_some(())
        })
        .await;
    assert!(!process_exists(old.pid));
    let before = load.ok();
    eventually("traffic served by the new Envoy", CONVERGE, || {
        let n = load.ok();
        async move {
            if n >= before + 50 {
                Ok(())
            } else {
                Err(format!("{} more", n - before))
            }
        }
    })
    .await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    eventually("a re-registration after the hot restart", CONVERGE, || {
        let n = registry.registrations().len();
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} registrations"))
            }
        }
    })
    .await;

    assert_eq!(sidecar.stop().await, Outcome::Stopped);
    assert!(!process_exists(new.pid));
}
