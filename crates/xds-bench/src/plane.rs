//! The real control plane as the measured server (`--server control-plane`,
//! `control-plane-consul` and `control-plane-consul-https`): `meshplane_runtime`'s control
//! plane on 127.0.0.1 ephemeral ports, fed by its embedded registry, or by `--registry consul`
//! following an embedded registry's Consul API in the same process, over plain HTTP/1.1 or
//! over HTTPS where HTTP/2 is negotiated ([`PlaneRegistry`]). Services are loaded and changed through that HTTP API, as
//! an operator's tooling would; proxies carry real service descriptors (see
//! [`descriptor_metadata`]), so grouping, policy checks and translation are the deployed ones.
//! The reconnect storm stops the control plane and starts it again on the same data
//! directory and xDS address ([`Plane::restart`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use futures::StreamExt;
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use meshplane_runtime::{ControlPlaneConfig, RegistryKind};
use meshplane_telemetry::XdsMetrics;
use meshplane_test_support::pki::TestPki;
use meshplane_xds::{SnapshotCache, StatusBoard};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::scenario::{Layout, SHARED_SERVICES, WILDCARD_GROUP, service_name};

/// Registrations in flight while loading: enough to fill the registry's group commits.
const LOAD_CONCURRENCY: usize = 64;

/// Which registry the measured control plane follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneRegistry {
    /// Its own embedded registry.
    Embedded,
    /// `--registry consul` following a registry served on its own over plain HTTP/1.1, as a
    /// Consul agent's port 8500 (the source follows `/v1/health/state/any` above 89 services).
    Consul,
    /// The same over HTTPS, where HTTP/2 is negotiated, as a Consul agent's port 8501 with
    /// `tls.enabled` (every service keeps its own blocking query, 100 to a connection).
    ConsulHttps,
}

/// A started control plane and the API its changes go through.
pub(crate) struct Plane {
    /// The control plane's own xDS metrics (what its admin API exports).
    pub(crate) metrics: XdsMetrics,
    /// Per-proxy xDS status.
    pub(crate) status: StatusBoard,
    /// Every metric the control plane exports, for the translation histogram.
    exported: meshplane_telemetry::Metrics,
    /// The control plane's merged registry.
    pub(crate) store: meshplane_registry::Store,
    /// Its snapshot cache.
    pub(crate) cache: SnapshotCache,
    /// The configuration it was started with (bound addresses filled in), for a restart.
    config: ControlPlaneConfig,
    /// Cancelled to stop this control plane alone (a child of the scenario's token).
    incarnation: CancellationToken,
    http: reqwest::Client,
    /// Base URL of the Consul-compatible API changes are made through.
    api: String,
    layout: Layout,
    /// Data directories, removed when the plane is dropped.
    _data: Vec<tempfile::TempDir>,
}

/// What a round changes, through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new instance registered (passing).
    Register,
    /// An instance's TTL check goes critical.
    Health,
    /// An instance deregistered.
    Deregister,
}

impl ChangeKind {
    /// Rounds cycle through the three kinds, starting with a registration.
    pub fn of_round(round: u64) -> ChangeKind {
        match round % 3 {
            1 => ChangeKind::Register,
            2 => ChangeKind::Health,
            _ => ChangeKind::Deregister,
        }
    }
}

/// Starts the control plane with `registry`, loads `SHARED_SERVICES` × `instances` through
/// the API and waits until its store holds them all; returns the plane, its xDS address and
/// the task serving it (it ends once `shutdown` is cancelled).
pub(crate) async fn start(
    registry: PlaneRegistry,
    layout: Layout,
    instances: usize,
    sync_timeout: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Plane, SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    anyhow::ensure!(
        layout == Layout::Mixed,
        "the control-plane servers run the `mixed` layout (services in a registry)"
    );
    anyhow::ensure!(
        instances >= 2,
        "--instances must be at least 2 (rounds fail one instance and deregister another)"
    );
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let cp_data = tempfile::tempdir().context("creating a data directory")?;
    let mut config = ControlPlaneConfig {
        xds_addr: any_port,
        admin_addr: any_port,
        registry_addr: any_port,
        data_dir: cp_data.path().to_owned(),
        allow_wildcard_dependencies: vec![WILDCARD_GROUP.parse()?],
        ..ControlPlaneConfig::default()
    };
    let mut data = vec![cp_data];
    // With `--registry consul`, the registry is an embedded registry served on its own, as
    // a Consul agent would be: the control plane only sees its HTTP API.
    let mut ca_pem = None;
    let external = match registry {
        PlaneRegistry::Embedded => None,
        PlaneRegistry::Consul | PlaneRegistry::ConsulHttps => {
            let dir = tempfile::tempdir().context("creating a data directory")?;
            let https = registry == PlaneRegistry::ConsulHttps;
            let tls = if https {
                let pki = TestPki::new(&["127.0.0.1"]);
                let files = pki.write(dir.path());
                config.consul_ca_file = Some(files.ca.clone());
                ca_pem = Some(pki.ca_pem);
                let tls = meshplane_https::TlsFiles {
                    cert: files.cert,
                    key: files.key,
                }
                .load()
                .context("the registry's TLS files")?;
                Some(tls)
            } else {
                None
            };
            let registry = EmbeddedRegistry::bind(EmbeddedConfig {
                listen_addr: any_port,
                data_dir: dir.path().join("data"),
                datacenter: config.datacenter.clone(),
                tls,
                ..EmbeddedConfig::default()
            })
            .await
            .context("starting the registry the control plane follows")?;
            data.push(dir);
            config.registry = RegistryKind::Consul;
            let scheme = if https { "https" } else { "http" };
            config.consul_addr = Some(format!("{scheme}://{}", registry.local_addr()));
            Some(registry)
        }
    };
    let incarnation = shutdown.child_token();
    let cp = meshplane_runtime::control_plane::start(config.clone(), incarnation.clone())
        .await
        .context("starting the control plane")?;
    // A restart binds the same xDS address; the embedded registry's API may move.
    config.xds_addr = cp.xds_addr;
    let api_addr = match (&external, cp.registry_addr) {
        (Some(registry), _) => registry.local_addr(),
        (None, Some(own)) => own,
        (None, None) => anyhow::bail!("the control plane serves no registry API"),
    };
    let mut http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(LOAD_CONCURRENCY);
    if let Some(ca) = &ca_pem {
        http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes())?);
    }
    let http = http.build()?;
    let api_scheme = if ca_pem.is_some() { "https" } else { "http" };
    let plane = Plane {
        metrics: cp.metrics.xds().clone(),
        status: cp.status.clone(),
        exported: cp.metrics.clone(),
        store: cp.store.clone(),
        cache: cp.cache.clone(),
        config,
        incarnation: incarnation.clone(),
        http,
        api: format!("{api_scheme}://{api_addr}"),
        layout,
        _data: data,
    };
    let (store, xds_addr) = (cp.store.clone(), cp.xds_addr);
    let s = incarnation;
    let serving = tokio::spawn(async move {
        let registry = async {
            match external {
                Some(r) => r.serve(s.clone()).await.context("registry"),
                None => Ok(()),
            }
        };
        let (a, b) = tokio::join!(cp.wait(s.clone()), registry);
        a.and(b)
    });
    register_services(&plane.http, &plane.api, instances).await?;
    let expected = SHARED_SERVICES * instances;
    let deadline = tokio::time::Instant::now() + sync_timeout;
    loop {
        let snapshot = store.snapshot();
        if snapshot.is_synced() && snapshot.instance_count() == expected {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the control plane's store has {} of {expected} instances after {sync_timeout:?}",
            snapshot.instance_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((plane, xds_addr, serving))
}

/// Registers `SHARED_SERVICES` × `instances` (the `mixed` layout's services) through the
/// Consul-compatible API at `api` (`http://host:port`), `LOAD_CONCURRENCY` at a time; returns
/// once every write is acknowledged. Used by [`start`] and by tests that run the control
/// plane as a process of its own (the reliability suite's reconnect storm).
pub async fn register_services(
    http: &reqwest::Client,
    api: &str,
    instances: usize,
) -> anyhow::Result<()> {
    let all = (0..SHARED_SERVICES).flat_map(|s| (0..instances).map(move |i| (s, i)));
    let mut puts = futures::stream::iter(all)
        .map(|(s, i)| {
            let body = registration(s, &instance_id(s, i), i + 1);
            put(
                http,
                api,
                "/v1/agent/service/register".to_owned(),
                Some(body),
            )
        })
        .buffer_unordered(LOAD_CONCURRENCY);
    while let Some(done) = puts.next().await {
        done?;
    }
    Ok(())
}

/// Sends one write to the API at `api`; returns once the registry acknowledged it
/// (committed).
async fn put(
    http: &reqwest::Client,
    api: &str,
    path: String,
    body: Option<Json>,
) -> anyhow::Result<()> {
    let request = http.put(format!("{api}{path}"));
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("PUT {path}"))?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "PUT {path}: {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The registration body of instance `id` of service `service`, on host `host` of the
/// service's `10.x.y.0/24` (instances `0..n` are hosts `1..=n`): a TTL check, passing, as a
/// sidecar registers.
pub fn registration(service: usize, id: &str, host: usize) -> Json {
    json!({
        "Name": service_name(service),
        "ID": id,
        "Address": format!("10.{}.{}.{}", (service >> 8) & 0xff, service & 0xff, host),
        "Port": 31001,
        "Check": {"TTL": "1h", "Status": "passing"},
    })
}

fn instance_id(service: usize, i: usize) -> String {
    format!("{}-{i}", service_name(service))
}

// === impl Plane ===

impl Plane {
    /// Stops this control plane (waiting for `serving` to end) and starts it again on the
    /// same data directory and xDS address, as an operator restarts it; returns once the new
    /// one is serving (its xDS listener accepts), with the task serving it. Only the
    /// embedded registry restarts with it (its durable store is the data directory).
    pub(crate) async fn restart(
        &mut self,
        serving: JoinHandle<anyhow::Result<()>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        anyhow::ensure!(
            self.config.registry == RegistryKind::Embedded,
            "only the control plane on its embedded registry restarts"
        );
        self.incarnation.cancel();
        tokio::time::timeout(Duration::from_secs(60), serving)
            .await
            .context("the control plane did not stop within 60 s")???;
        let incarnation = shutdown.child_token();
        let cp = meshplane_runtime::control_plane::start(self.config.clone(), incarnation.clone())
            .await
            .context("restarting the control plane")?;
        let api_addr = cp
            .registry_addr
            .context("the control plane serves no registry API")?;
        self.metrics = cp.metrics.xds().clone();
        self.status = cp.status.clone();
        self.exported = cp.metrics.clone();
        self.store = cp.store.clone();
        self.cache = cp.cache.clone();
        self.api = format!("http://{api_addr}");
        self.incarnation = incarnation.clone();
        Ok(tokio::spawn(async move { cp.wait(incarnation).await }))
    }

    /// The xDS address proxies connect to.
    pub(crate) fn xds_addr(&self) -> SocketAddr {
        self.config.xds_addr
    }

    /// Round `round`'s change: its path and body.
    pub(crate) fn change(&self, round: u64) -> anyhow::Result<(String, Option<Json>)> {
        let service = self
            .layout
            .changed_service(round)
            .context("round 0 changes nothing")?;
        Ok(match ChangeKind::of_round(round) {
            ChangeKind::Register => (
                "/v1/agent/service/register".to_owned(),
                Some(registration(
                    service,
                    &format!("{}-new-{round}", service_name(service)),
                    200,
                )),
            ),
            ChangeKind::Health => (
                format!("/v1/agent/check/fail/service:{}", instance_id(service, 0)),
                None,
            ),
            ChangeKind::Deregister => (
                format!("/v1/agent/service/deregister/{}", instance_id(service, 1)),
                None,
            ),
        })
    }

    /// The registry storm's change to `service`: its first instance's TTL check fails.
    pub(crate) fn storm_change(service: usize) -> String {
        format!("/v1/agent/check/fail/service:{}", instance_id(service, 0))
    }

    /// Per service, the digest of the `address:port`s a proxy should route to now: the
    /// routable instances in the control plane's store (what a proxy's endpoints are
    /// compared with, see [`crate::client::addresses_digest`]).
    pub(crate) fn expected_endpoints(&self) -> BTreeMap<String, u64> {
        let snapshot = self.store.snapshot();
        (0..SHARED_SERVICES)
            .map(|s| {
                let name = service_name(s);
                let instances = snapshot.service(&name).map(|e| e.instances.clone());
                let routable = instances.iter().flat_map(|i| i.iter()).filter(|i| {
                    i.health.is_routable() && i.address.parse::<std::net::IpAddr>().is_ok()
                });
                let digest = crate::client::addresses_digest(
                    routable.map(|i| format!("{}:{}", i.address, i.port)),
                );
                (name, digest)
            })
            .collect()
    }

    /// `(sum of seconds, count)` of the control plane's translation histogram.
    pub(crate) fn translation_totals(&self) -> (f64, f64) {
        let text = self.exported.encode();
        let read = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or_default()
        };
        (
            read("meshplane_translation_seconds_sum"),
            read("meshplane_translation_seconds_count"),
        )
    }

    /// When (monotonic ns) the control plane's store next moves past its current index:
    /// the change has come through the registry source.
    pub(crate) fn store_changed(&self, timeout: Duration) -> JoinHandle<Option<u64>> {
        let mut rx = self.store.subscribe();
        let index = rx.borrow_and_update().index;
        tokio::spawn(async move {
            tokio::time::timeout(timeout, rx.wait_for(|s| s.index > index))
                .await
                .ok()?
                .ok()?;
            Some(crate::probe::mono_ns())
        })
    }

    /// Sends one write; returns once the registry acknowledged it (committed).
    pub(crate) async fn put(&self, path: String, body: Option<Json>) -> anyhow::Result<()> {
        put(&self.http, &self.api, path, body).await
    }
}

/// Proxy `i`'s service descriptor as node metadata, as `meshplane sidecar` puts it there:
/// a wildcard proxy depends on `service: "*"`, the others on the services the layout says
/// their group sees (their own and the next four).
pub fn descriptor_metadata(layout: Layout, i: usize, streams: usize) -> Struct {
    let service = layout.node_service(i, streams);
    let dependencies: Vec<Json> = match layout.seen_services(i, streams) {
        None => vec![json!({"service": "*"})],
        Some(seen) => seen
            .into_iter()
            .map(|s| json!({"service": service_name(s)}))
            .collect(),
    };
    let descriptor = json!({
        "service": service,
        "port": 8080,
        "ingress": {"port": 31001},
        "egress": {"port": 31000},
        "dependencies": dependencies,
    });
    match to_value(&descriptor).kind {
        Some(Kind::StructValue(s)) => s,
        _ => Struct::default(),
    }
}

fn to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_name_the_services_the_layout_says_each_proxy_sees() {
        let json = |i| {
            let s = descriptor_metadata(Layout::Mixed, i, 20);
            meshplane_runtime::mesh::metadata::to_json(&s)
        };
        let d = meshplane_model::Descriptor::from_json(json(1)).expect("a valid descriptor");
        assert_eq!(d.service.as_str(), "svc-00001");
        let deps: Vec<String> = d.service_dependencies().map(|s| s.to_string()).collect();
        assert_eq!(
            deps,
            [
                "svc-00001",
                "svc-00002",
                "svc-00003",
                "svc-00004",
                "svc-00005"
            ]
        );
        let wildcard = meshplane_model::Descriptor::from_json(json(19)).expect("valid");
        assert_eq!(wildcard.service.as_str(), "mesh");
        assert!(wildcard.depends_on_all());
    }

    #[test]
    fn rounds_cycle_through_registration_health_and_deregistration() {
        let kinds: Vec<ChangeKind> = (1..=4).map(ChangeKind::of_round).collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Register,
                ChangeKind::Health,
                ChangeKind::Deregister,
                ChangeKind::Register
            ]
        );
    }
}
