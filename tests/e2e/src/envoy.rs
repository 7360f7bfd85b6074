//! A real Envoy process bootstrapped against a control plane, and its admin API.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::bootstrap;
use crate::error::{Error, IoContext, Result};
use crate::poll::{CONVERGE, eventually};

/// Which ADS flavour Envoy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// State-of-the-world (`api_type: GRPC`).
    Sotw,
    /// Incremental (`api_type: DELTA_GRPC`).
    Delta,
}

impl Flavour {
    /// The bootstrap's `ads_config.api_type`.
    pub fn api_type(self) -> &'static str {
        match self {
            Flavour::Sotw => "GRPC",
            Flavour::Delta => "DELTA_GRPC",
        }
    }
}

/// Finds Envoy: `$MESHPLANE_ENVOY`, then `envoy` on `PATH`, then the project's own install
/// folder (`scripts/install-envoy.sh`); the one lookup in `meshplane-test-support`.
pub fn find_envoy() -> Result<PathBuf> {
    Ok(meshplane_test_support::envoy::find_envoy()?)
}

/// Who the Envoy is and where its control plane is.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// `node.id`: the instance id.
    pub node_id: String,
    /// `node.cluster`: the service name.
    pub service: String,
    /// The xDS server.
    pub xds_addr: SocketAddr,
    /// ADS flavour.
    pub flavour: Flavour,
}

/// A running Envoy. Killed and reaped on drop; when dropped during a panic (a failing
/// test) its log is printed.
pub struct Envoy {
    child: Mutex<Child>,
    admin: SocketAddr,
    log_path: PathBuf,
    node_id: String,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Envoy {
    /// Writes the bootstrap, starts Envoy and waits for its admin API.
    pub async fn start(config: EnvoyConfig) -> Result<Self> {
        let binary = find_envoy()?;
        let dir = tempfile::Builder::new()
            .prefix("meshplane-e2e-envoy-")
            .tempdir()
            .io_context(|| "creating Envoy's temp dir".to_owned())?;
        let bootstrap_path = dir.path().join("bootstrap.json");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&bootstrap_path, bootstrap::render(&config).to_string())
            .io_context(|| format!("writing {}", bootstrap_path.display()))?;
        let log =
            File::create(&log_path).io_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .io_context(|| "duplicating the log file handle".to_owned())?;
        let level = std::env::var("MESHPLANE_E2E_ENVOY_LOG").unwrap_or_else(|_| "warn".into());
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&bootstrap_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            // Several Envoys run at once; hot restart would make them share memory.
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "-l", &level])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .io_context(|| format!("starting Envoy at {}", binary.display()))?;
        let mut envoy = Envoy {
            child: Mutex::new(child),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            node_id: config.node_id,
            http: http_client(),
            _dir: dir,
        };
        envoy.admin = eventually("Envoy's admin address file", CONVERGE, || {
            let read = envoy
                .ensure_running()
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    let text = std::fs::read_to_string(&admin_path).unwrap_or_default();
                    text.trim()
                        .parse::<SocketAddr>()
                        .map_err(|_| format!("admin address file holds {text:?}"))
                });
            async move { read }
        })
        .await?;
        Ok(envoy)
    }

    /// The proxy's `node.id`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Fails with [`Error::EnvoyExited`] when Envoy is no longer running.
    pub fn ensure_running(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::EnvoyExited {
                status: status.to_string(),
                log: self.log(),
            }),
            Err(source) => Err(Error::Io {
                context: "checking on Envoy".into(),
                source,
            }),
        }
    }

    async fn admin_get(&self, path: &str) -> Result<String> {
        self.ensure_running()?;
        let url = format!("http://{}{path}", self.admin);
        let context = || format!("GET {url}");
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| Error::Http {
                context: context(),
                source,
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|source| Error::Http {
            context: context(),
            source,
        })?;
        if !status.is_success() {
            return Err(Error::Admin {
                what: path.to_owned(),
                detail: format!("status {status}: {body}"),
            });
        }
        Ok(body)
    }

    /// Every counter and gauge, by name (`/stats?format=json`; histograms left out).
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let body = self.admin_get("/stats?format=json").await?;
        let json: Value = serde_json::from_str(&body).map_err(|e| Error::Admin {
            what: "/stats?format=json".into(),
            detail: e.to_string(),
        })?;
        let stats = json["stats"].as_array().cloned().unwrap_or_default();
        Ok(stats
            .iter()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["value"].as_u64()?)))
            .collect())
    }

    /// Counters and gauges whose names contain any of `parts`, for failure messages.
    pub async fn stats_containing(&self, parts: &[&str]) -> Result<BTreeMap<String, u64>> {
        let mut stats = self.stats().await?;
        stats.retain(|name, _| parts.iter().any(|p| name.contains(p)));
        Ok(stats)
    }

    /// One counter or gauge; `None` when Envoy does not have it.
    pub async fn stat(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.stats().await?.get(name).copied())
    }

    /// Waits until stat `name` equals `want`.
    pub async fn wait_stat(&self, name: &str, want: u64) -> Result<()> {
        eventually(
            &format!("Envoy stat {name} == {want}"),
            CONVERGE,
            || async move {
                match self.stat(name).await {
                    Ok(Some(v)) if v == want => Ok(()),
                    Ok(v) => Err(format!("{name} = {v:?}")),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// The whole config dump (`/config_dump`).
    pub async fn config_dump(&self) -> Result<Value> {
        let body = self.admin_get("/config_dump").await?;
        serde_json::from_str(&body).map_err(|e| Error::Admin {
            what: "/config_dump".into(),
            detail: e.to_string(),
        })
    }

    /// Clusters received over xDS, from the config dump.
    pub async fn dynamic_clusters(&self) -> Result<DynamicClusters> {
        let dump = self.config_dump().await?;
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        let clusters = configs
            .iter()
            .find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("ClustersConfigDump"))
            })
            .cloned()
            .unwrap_or_default();
        let names = |key: &str| -> Vec<String> {
            let mut names: Vec<String> = clusters[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        Ok(DynamicClusters {
            active: names("dynamic_active_clusters"),
            warming: names("dynamic_warming_clusters"),
        })
    }
}

/// Names of the clusters Envoy received over xDS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicClusters {
    /// Active (warmed) clusters, sorted.
    pub active: Vec<String>,
    /// Clusters still warming, sorted.
    pub warming: Vec<String>,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        // Kill and reap even while unwinding from a failed assertion: no stray Envoys.
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- Envoy `{}` log ({}) -----\n{}\n----- end of Envoy log -----",
                self.node_id,
                self.log_path.display(),
                self.log()
            );
        }
    }
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envoy")
            .field("node_id", &self.node_id)
            .field("admin", &self.admin)
            .finish()
    }
}

/// A client for local plain HTTP: no proxy from the environment, short timeouts.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}
