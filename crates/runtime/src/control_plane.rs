//! `meshplane control-plane`: the registry, the translator and the xDS server, wired.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use meshplane_admin::AdminState;
use meshplane_registry::{RegistrySource, Store, event_channel};
use meshplane_registry_consul::{ConsulConfig, ConsulSource, ErrorObserver};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use meshplane_registry_file::{FileConfig, FileSource};
use meshplane_remote::discover::{Discovery, DiscoveryConfig};
use meshplane_remote::{Followed, LocalState, RemoteConfig, RemoteSource};
use meshplane_translate::{MeshOptions, ServiceLocality};
use meshplane_xds::{ServerConfig, SnapshotCache, StatusBoard, XdsServer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ControlPlaneConfig, RegistryKind};

/// How often, on Consul, the other datacenters and their control planes are looked up again.
const DISCOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
use crate::mesh::{DescriptorGrouper, Groups, RelayDirectory, Translator};

/// A started control plane: where it listens and handles on its state.
pub struct ControlPlane {
    /// The xDS server's address.
    pub xds_addr: SocketAddr,
    /// The admin API's address.
    pub admin_addr: SocketAddr,
    /// The embedded registry's Consul-compatible API, when `--registry embedded`.
    pub registry_addr: Option<SocketAddr>,
    /// The merged registry.
    pub store: Store,
    /// Per-proxy xDS status.
    pub status: StatusBoard,
    /// The snapshots served.
    pub cache: SnapshotCache,
    /// The metrics the admin API exports (the fan-out bench reads them in-process).
    pub metrics: meshplane_telemetry::Metrics,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("xds_addr", &self.xds_addr)
            .field("registry_addr", &self.registry_addr)
            .finish()
    }
}

fn mesh_options(config: &ControlPlaneConfig) -> MeshOptions {
    let defaults = MeshOptions::default();
    MeshOptions {
        datacenter: config.datacenter.clone(),
        datacenter_order: config.datacenter_order.clone(),
        service_localities: config
            .service_datacenters
            .iter()
            .map(|(service, s)| {
                let locality = ServiceLocality {
                    datacenter_order: s.order.clone(),
                    local_only: s.local_only,
                };
                (service.clone(), locality)
            })
            .collect(),
        overprovisioning_factor: config.overprovisioning_factor,
        allow_wildcard_dependencies: config.allow_wildcard_dependencies.iter().cloned().collect(),
        domain_ca_file: config
            .domain_ca_file
            .clone()
            .unwrap_or(defaults.domain_ca_file),
        domain_addresses: config.domain_addresses.clone(),
        trust_domain: config.trust_domain.clone(),
        // Checked with the rest of the configuration before the control plane starts.
        tracing: config.tracing().ok().flatten(),
    }
}

/// The built-in CA: the operator's (`--ca-cert/--ca-key`) or one kept under `data_dir/ca`.
fn certificate_authority(config: &ControlPlaneConfig) -> anyhow::Result<meshplane_ca::Authority> {
    let ttl = config.cert_ttl()?;
    let ca = match (&config.ca_cert, &config.ca_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            meshplane_ca::Authority::from_pem(&read(cert)?, &read(key)?, &config.trust_domain, ttl)
                .with_context(|| format!("cannot use the CA {}", cert.display()))?
        }
        _ => {
            let dir = config.data_dir.join("ca");
            meshplane_ca::Authority::load_or_generate(&dir, &config.trust_domain, ttl)
                .with_context(|| format!("cannot set up the CA under {}", dir.display()))?
        }
    };
    if config.token.is_none() && config.enrolment_tokens.is_none() {
        tracing::warn!(
            "no --token: the CA signs certificates for anyone who can reach the admin address; set a token in production"
        );
    }
    Ok(ca)
}

/// Binds every port and starts every task; returns once the control plane is serving.
pub async fn start(
    config: ControlPlaneConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<ControlPlane> {
    config.validate()?;
    let mut tasks = JoinSet::new();
    let (store, writer) = meshplane_registry::store();
    let (cache, demand_rx) = SnapshotCache::with_demand();
    let metrics = meshplane_telemetry::Metrics::new(store.clone(), cache.clone());
    let (sink, events) = event_channel(1024);
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move {
            writer.run(events, shutdown).await;
            Ok(())
        }
    });

    // Read before anything binds: a bad certificate stops the start, naming the file.
    let admin_tls = load_tls(config.admin_tls(), "--admin-tls-cert")?;
    let registry_tls = load_tls(config.registry_tls(), "--registry-tls-cert")?;
    let registry_addr;
    let rollout_kv;
    match config.registry {
        RegistryKind::Embedded => {
            let registry = EmbeddedRegistry::bind(EmbeddedConfig {
                listen_addr: config.registry_addr,
                data_dir: config.data_dir.clone(),
                datacenter: config.datacenter.clone(),
                token: config.token.clone(),
                tls: registry_tls,
                ..Default::default()
            })
            .await
            .context("cannot start the embedded registry")?;
            registry_addr = Some(registry.local_addr());
            rollout_kv = Some(embedded_kv(&config, registry.local_addr())?);
            let source = registry.source();
            let (sink, s) = (sink.clone(), shutdown.clone());
            tasks.spawn(async move {
                source
                    .run(sink, s)
                    .await
                    .context("embedded registry source stopped")
            });
            let s = shutdown.clone();
            tasks
                .spawn(async move { registry.serve(s).await.context("embedded registry stopped") });
        }
        RegistryKind::Consul => {
            registry_addr = None;
            rollout_kv = Some(meshplane_rollout_store::KvConfig {
                address: config.consul_addr.clone().unwrap_or_default(),
                token: config.consul_token.clone(),
                ca_pem: read_optional(config.consul_ca_file.as_deref(), "--consul-ca-file")?,
                pinned_cert_pem: None,
            });
            let defaults = ConsulConfig::default();
            // Discovering the other datacenters takes one connection to Consul: it comes out
            // of the same budget, so the control plane never holds more than the default.
            let discovery = usize::from(config.remote_datacenters.is_none());
            let source = ConsulSource::new(ConsulConfig {
                address: config.consul_addr.clone().unwrap_or_default(),
                token: config.consul_token.clone(),
                datacenter: Some(config.datacenter.clone()),
                ca_file: config.consul_ca_file.clone(),
                max_connections: defaults.max_connections - discovery,
                ..defaults
            })
            .context("invalid Consul settings")?
            .with_errors(ErrorObserver::new({
                let registry_metrics = metrics.registry().clone();
                move |kind| registry_metrics.error("consul", kind)
            }));
            let (sink, s) = (sink.clone(), shutdown.clone());
            tasks.spawn(async move { source.run(sink, s).await.context("Consul source stopped") });
        }
        RegistryKind::File => {
            registry_addr = None;
            rollout_kv = None;
            let source = FileSource::new(FileConfig {
                path: config.services_file.clone().unwrap_or_default(),
                datacenter: config.datacenter.clone(),
                ..Default::default()
            })
            .await
            .context("cannot use the services file")?;
            let (sink, s) = (sink.clone(), shutdown.clone());
            tasks.spawn(async move { source.run(sink, s).await.context("file source stopped") });
        }
    }
    let remote_ca = match &config.remote_ca_file {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("--remote-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let followed = Followed::default();
    let template = RemoteConfig {
        keep_stale: config.remote_keep_stale()?,
        ca_pem: remote_ca.clone(),
        ..RemoteConfig::default()
    };
    let remote = config.remote_datacenters()?;
    // On Consul, without --remote-datacenters: the other datacenters Consul knows, each
    // followed through the control planes registered there.
    if remote.is_empty() && config.registry == RegistryKind::Consul {
        let consul_ca = match &config.consul_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("--consul-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        let discovery = Discovery::new(DiscoveryConfig {
            consul: config.consul_addr.clone().unwrap_or_default(),
            token: config.consul_token.clone(),
            ca_pem: consul_ca,
            datacenter: config.datacenter.clone(),
            deny: config.remote_datacenters_deny.iter().cloned().collect(),
            interval: DISCOVERY_INTERVAL,
        })
        .context("remote datacenter discovery")?;
        let (sink, s, followed, template) = (
            sink.clone(),
            shutdown.clone(),
            followed.clone(),
            template.clone(),
        );
        tasks.spawn(async move {
            meshplane_remote::discover::follow(discovery, template, sink, followed, s)
                .await
                .context("remote datacenter discovery stopped")
        });
    }
    for (datacenter, urls) in remote {
        let source = RemoteSource::new(RemoteConfig {
            datacenter,
            urls,
            ..template.clone()
        })
        .context("invalid --remote-datacenters")?
        .with_status(followed.clone());
        let (sink, s) = (sink.clone(), shutdown.clone());
        tasks.spawn(async move {
            source
                .run(sink, s)
                .await
                .context("remote datacenter source stopped")
        });
    }
    drop(sink);

    let listener = TcpListener::bind(config.xds_addr).await.with_context(|| {
        format!(
            "cannot bind the xDS address {}; pick a free --xds-addr",
            config.xds_addr
        )
    })?;
    let xds_addr = listener.local_addr()?;
    let options = Arc::new(mesh_options(&config));
    let groups = Groups::default();
    let relays = RelayDirectory::default();
    let mut grouper =
        DescriptorGrouper::new(groups.clone(), options.clone()).with_relays(relays.clone());
    // The CA exists before the xDS TLS files are read: with the generated CA,
    // `--xds-client-ca <data-dir>/ca/ca.crt` then works from the very first start.
    let ca = Arc::new(certificate_authority(&config)?);
    let tls = xds_tls(&config)?;
    if tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()) {
        grouper = grouper.with_identity(&config.trust_domain);
    }
    let server = XdsServer::new(
        cache.clone(),
        Arc::new(grouper),
        ServerConfig {
            tls,
            ..ServerConfig::default()
        },
        shutdown.clone(),
    )
    .with_observer(Arc::new(metrics.xds().clone()));
    let status = server.status();
    let dry_run = crate::mesh::DryRunPlanner::new(
        store.clone(),
        groups.clone(),
        cache.clone(),
        options.clone(),
    );
    let translator =
        Translator::new(cache.clone(), groups, options).with_metrics(metrics.translation().clone());
    tasks.spawn({
        let (store, shutdown) = (store.clone(), shutdown.clone());
        async move {
            translator.run(store, demand_rx, shutdown).await;
            Ok(())
        }
    });
    tasks.spawn(async move { server.serve(listener).await.context("xDS server failed") });
    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind the admin address {}; pick a free --admin-addr",
                config.admin_addr
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;
    let rollout = rollout_kv
        .map(meshplane_rollout_store::RolloutStore::new)
        .transpose()
        .context("egress rollout flags storage")?;
    let admin = AdminState {
        store: store.clone(),
        status: status.clone(),
        cache: cache.clone(),
        xds_addr,
        directory: Arc::new(relays.clone()),
        token: config.token.as_deref().map(Arc::from),
        peers: Arc::new(config.peers.clone()),
        datacenter: config.datacenter.clone(),
        http: reqwest::Client::builder().no_proxy().build()?,
        metrics: metrics.clone(),
        ca: Some(ca),
        enrolment_tokens: Arc::new(meshplane_admin::EnrolmentTokens::new(
            config.load_enrolment_tokens()?,
        )),
        admin_tls: admin_tls.is_some(),
        grafana_url: config
            .grafana_url
            .as_deref()
            .map(|u| Arc::from(u.trim_end_matches('/'))),
        dry_run: Some(Arc::new(dry_run)),
        rollout: rollout.clone(),
        traffic: Default::default(),
    };
    if let Some(store) = &rollout {
        let (store, s) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            store.follow(s).await;
            Ok(())
        });
    }
    tasks.spawn(prune_relays(relays, status.clone(), shutdown.clone()));
    // Other datacenters follow this one's local state on the admin address.
    let router = meshplane_admin::router(admin).merge(meshplane_remote::router(
        LocalState::new(config.datacenter.clone(), store.clone()),
        followed,
    ));
    let s = shutdown.clone();
    tasks.spawn(async move {
        match admin_tls {
            Some(tls) => meshplane_https::serve(admin_listener, router, tls, s).await,
            None => meshplane_admin::serve(admin_listener, router, s).await,
        }
        .context("admin API failed")
    });
    tracing::info!(%xds_addr, registry = ?registry_addr, "control plane serving");
    Ok(ControlPlane {
        xds_addr,
        admin_addr,
        registry_addr,
        store,
        status,
        cache,
        metrics,
        tasks,
    })
}

impl ControlPlane {
    /// Waits for every task; the first failure cancels the rest.
    pub async fn wait(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                if result.is_ok() {
                    result = Err(e);
                }
                shutdown.cancel();
            }
        }
        result
    }
}

/// Reads and checks an HTTPS certificate and key, if configured.
fn load_tls(
    files: Option<meshplane_https::TlsFiles>,
    flag: &str,
) -> anyhow::Result<Option<Arc<meshplane_https::ServerConfig>>> {
    files
        .map(|f| f.load().with_context(|| format!("cannot use {flag}")))
        .transpose()
}

/// The embedded registry's KV API, where the rollout flags live with `--registry embedded`:
/// the same HTTP API as Consul's, so one implementation serves both.
fn embedded_kv(
    config: &ControlPlaneConfig,
    mut addr: SocketAddr,
) -> anyhow::Result<meshplane_rollout_store::KvConfig> {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if config.registry_tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(meshplane_rollout_store::KvConfig {
        address: format!("{scheme}://{addr}"),
        token: config.token.clone(),
        ca_pem: None,
        // Its own certificate, whatever CA issued it (the control plane may not have that CA).
        pinned_cert_pem: read_optional(config.registry_tls_cert.as_deref(), "--registry-tls-cert")?,
    })
}

fn read_optional(path: Option<&std::path::Path>, flag: &str) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("{flag} {}", p.display())))
        .transpose()
}

/// Reads the xDS TLS files, if configured.
fn xds_tls(config: &ControlPlaneConfig) -> anyhow::Result<Option<meshplane_xds::server::XdsTls>> {
    let (Some(cert), Some(key)) = (&config.xds_tls_cert, &config.xds_tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    Ok(Some(meshplane_xds::server::XdsTls {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        client_ca_pem: config.xds_client_ca.as_ref().map(read).transpose()?,
    }))
}

/// Forgets relay addresses of proxies that disconnected.
async fn prune_relays(
    relays: RelayDirectory,
    status: StatusBoard,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let connected = status.proxies().into_iter().map(|p| p.stream.node_id).collect();
                relays.retain(&connected);
            }
        }
    }
}

/// Runs the control plane until `shutdown` is cancelled, then drains.
pub async fn run(config: ControlPlaneConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown.clone()).await?.wait(shutdown).await
}
