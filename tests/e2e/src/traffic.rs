//! HTTP traffic through an Envoy listener: single requests, and a steady load that
//! records every failure (for make-before-break and restart tests).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::header::HOST;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::envoy::http_client;
use crate::error::{Error, Result};
use crate::poll::{CONVERGE, eventually};

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body (an upstream's name on success; Envoy's reason otherwise).
    pub body: String,
}

/// Sends requests to an Envoy listener on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    port: u16,
}

impl Client {
    /// A client for the listener on `127.0.0.1:port`.
    pub fn new(port: u16) -> Self {
        Client {
            http: http_client(),
            port,
        }
    }

    /// `GET /` with `Host: host`.
    pub async fn get(&self, host: &str) -> Result<Reply> {
        let url = format!("http://127.0.0.1:{}/", self.port);
        let context = || format!("GET {url} (Host: {host})");
        let response = self
            .http
            .get(&url)
            .header(HOST, host)
            .send()
            .await
            .map_err(|source| Error::Http {
                context: context(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|source| Error::Http {
            context: context(),
            source,
        })?;
        Ok(Reply { status, body })
    }

    /// Waits until a request for `host` is answered 200 by upstream `upstream`.
    pub async fn wait_served_by(&self, host: &str, upstream: &str) -> Result<()> {
        eventually(
            &format!("Host: {host} to be served by `{upstream}`"),
            CONVERGE,
            || async move {
                match self.get(host).await {
                    Ok(r) if r.status == 200 && r.body == upstream => Ok(()),
                    Ok(r) => Err(format!("got {} {:?}", r.status, r.body)),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// Waits until a request for `host` gets status `status`.
    pub async fn wait_status(&self, host: &str, status: u16) -> Result<Reply> {
        eventually(
            &format!("Host: {host} to get status {status}"),
            CONVERGE,
            || async move {
                match self.get(host).await {
                    Ok(r) if r.status == status => Ok(r),
                    Ok(r) => Err(format!("got {} {:?}", r.status, r.body)),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }
}

/// Outcome of a [`Load`].
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Successful replies, by body (upstream name).
    pub ok_by_upstream: BTreeMap<String, u64>,
    /// Every failure: non-200 replies and transport errors, in order.
    pub failures: Vec<String>,
}

impl LoadReport {
    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.ok_by_upstream.values().sum()
    }
}

/// Requests sent back to back by a few concurrent workers until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` loops of `GET /` with `Host: host`.
    pub fn start(client: &Client, host: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let workers = (0..workers)
            .map(|_| {
                let (client, host) = (client.clone(), host.to_owned());
                let (stop, report) = (stop.clone(), report.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = client.get(&host).await;
                        let mut report = report.lock().await;
                        match outcome {
                            Ok(r) if r.status == 200 => {
                                *report.ok_by_upstream.entry(r.body).or_default() += 1;
                            }
                            Ok(r) => report.failures.push(format!("{} {:?}", r.status, r.body)),
                            Err(e) => report.failures.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            workers,
        }
    }

    /// A copy of the report so far.
    pub async fn report(&self) -> LoadReport {
        self.report.lock().await.clone()
    }

    /// Waits until at least `n` more requests have succeeded than had when called.
    pub async fn wait_more_ok(&self, n: u64) -> Result<()> {
        let base = self.report().await.ok();
        eventually(
            &format!("{n} more successful requests"),
            CONVERGE,
            || async move {
                let report = self.report().await;
                if report.ok() >= base + n {
                    Ok(())
                } else {
                    Err(format!(
                        "{} ok, {} failures",
                        report.ok() - base,
                        report.failures.len()
                    ))
                }
            },
        )
        .await
    }

    /// Stops the workers and returns the report.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for worker in std::mem::take(&mut self.workers) {
            let _ = worker.await;
        }
        self.report.lock().await.clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
