//! A mesh for tests: the control plane in-process (ports 0, temp data dir), `meshplane
//! sidecar` processes with real Envoys, and small upstream HTTP servers on 127.0.0.1.

#![allow(dead_code)]

pub mod grpc;
pub mod otlp;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use meshplane_runtime::ControlPlaneConfig;
use meshplane_runtime::control_plane::{self, ControlPlane};
use meshplane_test_support::poll::try_eventually;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Mesh {
    pub cp: ControlPlane,
    /// The control plane's token, passed to sidecars.
    pub token: Option<String>,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// `http` or `https`: how sidecars reach the admin API (the CA) and the registry.
    pub scheme: &'static str,
    /// Where sidecars reach xDS, when not the control plane itself (a fault proxy in front).
    pub xds_via: Option<SocketAddr>,
    sidecars: Vec<Sidecar>,
}

pub struct Sidecar {
    pub id: String,
    pub admin_port: u16,
    pub log: std::path::PathBuf,
    child: Child,
}

/// A port nothing listens on, never handed out twice in this test process, and below the
/// kernel's ephemeral range (no outgoing connection can take it before Envoy binds it).
pub fn free_port() -> u16 {
    meshplane_sidecar::envoy::free_loopback_port().expect("a free port on 127.0.0.1")
}

impl Mesh {
    pub async fn start(configure: impl FnOnce(&mut ControlPlaneConfig, &std::path::Path)) -> Mesh {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config = ControlPlaneConfig {
            xds_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            registry_addr: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        configure(&mut config, dir.path());
        let token = config.token.clone();
        let shutdown = CancellationToken::new();
        let cp = control_plane::start(config, shutdown.clone())
            .await
            .expect("control plane starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("client");
        Mesh {
            cp,
            token,
            shutdown,
            dir,
            http,
            scheme: "http",
            xds_via: None,
            sidecars: Vec::new(),
        }
    }

    pub fn registry(&self) -> SocketAddr {
        self.cp.registry_addr.expect("embedded registry")
    }

    /// Registers an instance directly (no sidecar), passing, in the embedded registry.
    pub async fn register(&self, id: &str, service: &str, port: u16, tags: &[&str], weight: u32) {
        let body = serde_json::json!({
            "ID": id, "Name": service, "Address": "127.0.0.1", "Port": port,
            "Tags": tags, "Weights": { "Passing": weight, "Warning": 1 },
        });
        let r = self
            .http
            .put(format!(
                "http://{}/v1/agent/service/register",
                self.registry()
            ))
            .header("x-consul-token", self.token.clone().unwrap_or_default())
            .json(&body)
            .send()
            .await
            .expect("registry reachable");
        assert!(r.status().is_success(), "register {id}: {}", r.status());
    }

    pub async fn deregister(&self, id: &str) {
        let r = self
            .http
            .put(format!(
                "http://{}/v1/agent/service/deregister/{id}",
                self.registry()
            ))
            .header("x-consul-token", self.token.clone().unwrap_or_default())
            .send()
            .await
            .expect("registry reachable");
        assert!(r.status().is_success(), "deregister {id}: {}", r.status());
    }

    /// Starts `meshplane sidecar` for `descriptor` and waits until its Envoy has
    /// `listeners` active listeners.
    pub async fn sidecar(&mut self, id: &str, descriptor: &str, listeners: u32) -> &Sidecar {
        self.sidecar_with(id, descriptor, listeners, &[]).await
    }

    /// [`Mesh::sidecar`] with extra `meshplane sidecar` arguments.
    pub async fn sidecar_with(
        &mut self,
        id: &str,
        descriptor: &str,
        listeners: u32,
        extra: &[&str],
    ) -> &Sidecar {
        let target = SidecarTarget {
            xds: self.xds_via.unwrap_or(self.cp.xds_addr),
            admin: self.cp.admin_addr,
            registry: self.cp.registry_addr,
            scheme: self.scheme,
            token: self.token.clone(),
        };
        let sidecar = start_sidecar(
            &self.http,
            self.dir.path(),
            &target,
            (id, descriptor, listeners),
            extra,
        )
        .await;
        self.sidecars.push(sidecar);
        self.sidecars.last().expect("just pushed")
    }
}

/// The control plane `meshplane sidecar` processes are started against: the one in-process
/// ([`Mesh`]) or a `meshplane control-plane` process of a test's own.
#[derive(Debug, Clone)]
pub struct SidecarTarget {
    /// Where the sidecar's Envoy reaches xDS.
    pub xds: SocketAddr,
    /// The admin API (the CA sidecars get their certificates from).
    pub admin: SocketAddr,
    /// The embedded registry the sidecar registers in, if any.
    pub registry: Option<SocketAddr>,
    /// `http` or `https`, for the admin API and the registry.
    pub scheme: &'static str,
    /// The control plane's token.
    pub token: Option<String>,
}

/// Starts `meshplane sidecar` for `(id, descriptor)` (its descriptor, log and work directory
/// under `dir`) and waits until its Envoy has `listeners` active listeners, each accepting.
pub async fn start_sidecar(
    http: &reqwest::Client,
    dir: &std::path::Path,
    target: &SidecarTarget,
    (id, descriptor, listeners): (&str, &str, u32),
    extra: &[&str],
) -> Sidecar {
    let file = dir.join(format!("{id}.yaml"));
    std::fs::write(&file, descriptor).expect("write descriptor");
    let log = dir.join(format!("{id}.log"));
    let out = std::fs::File::create(&log).expect("log");
    let admin_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshplane"));
    cmd.arg("sidecar")
        .args(["--descriptor", &file.display().to_string()])
        .args(["--control-plane", &target.xds.to_string()])
        .args(["--instance-id", id])
        .args(["--admin-port", &admin_port.to_string()])
        // Tests run in parallel with the same instance ids; the admin port is unique.
        .args(["--base-id", &admin_port.to_string()])
        .args(["--address", "127.0.0.1"])
        .args(["--ca-url", &format!("{}://{}", target.scheme, target.admin)])
        .args(["--work-dir", &dir.join(id).display().to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out);
    if let Some(token) = &target.token {
        cmd.args(["--token", token]);
    }
    cmd.args(extra);
    if let Some(registry) = target.registry {
        cmd.args(["--registry", &format!("{}://{registry}", target.scheme)]);
    }
    let child = cmd.spawn().expect("meshplane sidecar starts");
    let sidecar = Sidecar {
        id: id.to_owned(),
        admin_port,
        log,
        child,
    };
    // Listeners counted active must also accept connections before a test uses them.
    let d = meshplane_model::Descriptor::from_yaml(descriptor).expect("test descriptor is valid");
    let ports: Vec<u16> = std::iter::once(d.ingress.port)
        .chain(d.egress.map(|e| e.port))
        .collect();
    let stat = "listener_manager.total_listeners_active";
    // `listeners` plus the scrape listener every sidecar's bootstrap has.
    let ok = poll(|| async {
        envoy_stat(http, admin_port, stat).await.unwrap_or(0) > u64::from(listeners)
    })
    .await;
    if !ok {
        panic!(
            "sidecar {id}: Envoy never had {listeners} listeners\n{}",
            sidecar.log_text()
        );
    }
    for port in ports {
        let accepting = poll(|| async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(
            accepting,
            "sidecar {id}: nothing accepts on 127.0.0.1:{port}\n{}",
            sidecar.log_text()
        );
    }
    sidecar
}

impl Mesh {
    /// The `meshplane sidecar` process of `id`.
    pub fn sidecar_pid(&self, id: &str) -> u32 {
        self.sidecars
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.child.id())
            .expect("known sidecar")
    }

    /// The Envoy `id`'s sidecar runs now (its child process), if any.
    pub fn envoy_pid(&self, id: &str) -> Option<u32> {
        let pid = self.sidecar_pid(id);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .next()
    }

    /// Everything a sidecar (and its Envoy) printed so far.
    pub fn sidecar_log(&self, id: &str) -> String {
        self.sidecars
            .iter()
            .find(|s| s.id == id)
            .map(Sidecar::log_text)
            .expect("known sidecar")
    }

    /// The Envoy admin port of a sidecar started by [`Mesh::sidecar`].
    pub fn sidecar_admin(&self, id: &str) -> u16 {
        self.sidecars
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.admin_port)
            .expect("known sidecar")
    }

    /// A `GET` of the control plane's admin API (`path`: `/api/...`), as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("http://{}{path}", self.cp.admin_addr))
            .send()
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("JSON")
    }

    /// Replaces the egress rollout flags with `flags` (a JSON or YAML document), with the
    /// mesh's token; the write must succeed.
    pub async fn put_rollout(&self, flags: &str) {
        let mut put = self
            .http
            .put(format!("http://{}/api/rollout", self.cp.admin_addr))
            .body(flags.to_owned());
        if let Some(token) = &self.token {
            put = put.bearer_auth(token);
        }
        let r = put.send().await.expect("the admin API answers");
        assert_eq!(r.status(), 200, "PUT /api/rollout: {:?}", r.text().await);
    }

    /// The config dump of sidecar `id`'s Envoy, from its admin API.
    pub async fn config_dump(&self, id: &str) -> serde_json::Value {
        let admin = self.sidecar_admin(id);
        self.http
            .get(format!("http://127.0.0.1:{admin}/config_dump"))
            .send()
            .await
            .expect("envoy's admin answers")
            .json()
            .await
            .expect("a JSON config dump")
    }
}

impl Sidecar {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Sidecars deregister from the registry, which stops with the control plane.
        for s in &mut self.sidecars {
            s.stop();
        }
        self.shutdown.cancel();
    }
}

impl Sidecar {
    /// SIGTERM (the sidecar deregisters and stops its Envoy), then SIGKILL after 15 s;
    /// reaped either way.
    pub fn stop(&mut self) {
        meshplane_test_support::process::terminate(&mut self.child, Duration::from_secs(15));
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `meshplane` process of a test's own (a control plane, or one used as a registry), its
/// output appended to a log file. Killed with SIGKILL and reaped on drop; if the test is
/// failing, the log's last lines are printed first (the log goes with the test's directory).
pub struct MeshplaneProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl MeshplaneProcess {
    /// Runs `meshplane ARGS`, appending its output to `log`.
    pub fn spawn(args: &[String], log: &std::path::Path) -> MeshplaneProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("meshplane starts");
        MeshplaneProcess {
            child,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no goodbye to anyone, connections reset by the kernel; reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MeshplaneProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("{}, last lines:\n{tail}", self.log.display());
        }
    }
}

/// Whether `check` returns true within [`DEADLINE`]; for tests that assert with their own
/// message.
pub async fn poll<F, Fut>(check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    try_eventually("a condition", DEADLINE, check).await.is_ok()
}

pub async fn envoy_stat(http: &reqwest::Client, admin_port: u16, name: &str) -> Option<u64> {
    let text = http
        .get(format!(
            "http://127.0.0.1:{admin_port}/stats?filter=^{}$",
            regex_escape(name)
        ))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Hosts (`address:port`) of each cluster in Envoy's `/clusters`.
pub async fn envoy_hosts(
    http: &reqwest::Client,
    admin: u16,
) -> Option<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>> {
    let text = http
        .get(format!("http://127.0.0.1:{admin}/clusters"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for line in text.lines() {
        let mut parts = line.split("::");
        if let (Some(cluster), Some(host), Some("health_flags")) =
            (parts.next(), parts.next(), parts.next())
        {
            out.entry(cluster.to_owned())
                .or_default()
                .insert(host.to_owned());
        }
    }
    Some(out)
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// An upstream that answers every path with its name.
pub async fn upstream(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = Router::new().fallback(get(move || async move { name }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

/// GET through an egress port with `Host: host` (and optional header).
pub async fn via_egress(
    http: &reqwest::Client,
    egress: u16,
    host: &str,
    header: Option<(&str, &str)>,
) -> (u16, String) {
    let mut r = http
        .get(format!("http://127.0.0.1:{egress}/"))
        .header("host", host);
    if let Some((k, v)) = header {
        r = r.header(k, v);
    }
    match r.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// A caller descriptor with an egress listener and the given dependencies block.
pub fn caller(service: &str, app: u16, ingress: u16, egress: u16, dependencies: &str) -> String {
    format!(
        "service: {service}\nport: {app}\ningress: {{ port: {ingress} }}\negress: {{ port: {egress} }}\ndependencies:\n{dependencies}"
    )
}

/// The usual caller: `orders` depending on `payments`, on free ports; its descriptor and its
/// egress port.
pub fn orders_to_payments() -> (String, u16) {
    let egress = free_port();
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n",
    );
    (d, egress)
}

/// A CA of the test's own (the deployment's, or a rogue one), writing files under `dir`.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_file: String,
    key_file: String,
    dir: std::path::PathBuf,
}

impl TestCa {
    pub fn new(dir: &std::path::Path, name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = common_name(&format!("{name} CA"));
        let ca = params.self_signed(&key).expect("ca");
        let ca_file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, ca.pem()).expect("write");
        let key_file = dir.join(format!("{name}-ca.key"));
        std::fs::write(&key_file, key.serialize_pem()).expect("write");
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            ca_file: ca_file.display().to_string(),
            key_file: key_file.display().to_string(),
            dir: dir.to_owned(),
        }
    }

    /// The CA's certificate (PEM file).
    pub fn ca_file(&self) -> &str {
        &self.ca_file
    }

    /// The CA's private key (PEM file), for a control plane that uses this CA as its own.
    pub fn key_file(&self) -> &str {
        &self.key_file
    }

    /// A server certificate for `localhost` and 127.0.0.1 written to `<name>.crt` /
    /// `<name>.key`; returns (cert, key) paths.
    pub fn issue_server(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![
            rcgen::SanType::DnsName("localhost".try_into().expect("dns")),
            rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ];
        params.distinguished_name = common_name(name);
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        let path = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        std::fs::write(path("crt"), cert.pem()).expect("write");
        std::fs::write(path("key"), key.serialize_pem()).expect("write");
        (
            path("crt").display().to_string(),
            path("key").display().to_string(),
        )
    }

    /// A certificate for `uri` written (replaced atomically, as a deployment tool would) to
    /// `<name>.crt` / `<name>.key`; returns (cert, key, ca) paths and the serial (hex).
    pub fn issue(&self, name: &str, uri: &str) -> (String, String, String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
        // Not the CA's name (rcgen's default), or the leaf would look self-signed.
        params.distinguished_name = common_name(name);
        let serial: [u8; 8] = rand_serial();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        let path = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        for (ext, text) in [("key", key.serialize_pem()), ("crt", cert.pem())] {
            let tmp = path(&format!("{ext}.tmp"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path(ext)).expect("rename");
        }
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        (
            path("crt").display().to_string(),
            path("key").display().to_string(),
            self.ca_file.clone(),
            hex,
        )
    }
}

fn common_name(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn
}

/// Eight bytes that differ per call (a positive serial: top bit clear).
fn rand_serial() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos(),
    );
    let mut b = h.finish().to_be_bytes();
    b[0] &= 0x7f;
    b[0] |= 0x10;
    b
}

/// The `Node` a sidecar sends for `descriptor` (YAML): the instance id, the service as
/// `cluster`, the descriptor's fields as metadata.
pub fn descriptor_node(
    id: &str,
    descriptor: &str,
) -> envoy_types::pb::envoy::config::core::v3::Node {
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
    fn to_value(v: &serde_json::Value) -> Value {
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(a) => Kind::ListValue(ListValue {
                values: a.iter().map(to_value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(Struct {
                fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
            }),
        };
        Value { kind: Some(kind) }
    }
    let json: serde_json::Value = serde_norway::from_str(descriptor).expect("yaml");
    let Some(Kind::StructValue(metadata)) = to_value(&json).kind else {
        panic!("descriptor is a map")
    };
    envoy_types::pb::envoy::config::core::v3::Node {
        id: id.into(),
        cluster: json["service"].as_str().unwrap_or_default().into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}
