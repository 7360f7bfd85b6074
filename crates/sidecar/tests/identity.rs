//! The identity module end to end: a real SDS client over the Unix socket, host files
//! replaced on disk, and a real HTTP CA (axum on 127.0.0.1) signing the sidecar's CSRs.

use std::collections::BTreeMap;
use std::future::ready;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use envoy_types::pb::envoy::config::core::v3::{Node, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use meshplane_model::ServiceName;
use meshplane_model::identity::{
    IDENTITY_SECRET, SignRequest, SignResponse, TRUST_SECRET, spiffe_id,
};
use meshplane_sidecar::identity::{self, IdentityConfig, IdentityHandle, IdentitySource};
use meshplane_test_support::poll::{eventually, eventually_watch};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    PublicKeyData, SanType,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint, Uri};

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing changes" is observed for (many host-file polls).
const QUIET: Duration = Duration::from_millis(600);
const POLL: Duration = Duration::from_millis(50);

// === PKI ===

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn mk_pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let ca_pem = params.self_signed(&key).expect("ca").pem();
    Pki {
        ca_pem,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for `orders` valid for years: (cert PEM, key PEM).
fn mk_leaf(pki: &Pki) -> (String, String) {
    mk_leaf_between(pki, 2020, 2100)
}

/// A leaf for `orders` valid from the first year to the second: (cert PEM, key PEM).
fn mk_leaf_between(pki: &Pki, from: i32, to: i32) -> (String, String) {
    let mut params = CertificateParams::default();
    let uri = "spiffe://example.org/service/orders";
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &pki.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

// === host files ===

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    socket: PathBuf,
}

fn mk_files(pki: &Pki, cert: &str, key: &str) -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Files {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        ca: dir.path().join("ca.pem"),
        socket: dir.path().join("sds.sock"),
        _dir: dir,
    };
    replace(&files.cert, cert);
    replace(&files.key, key);
    replace(&files.ca, &pki.ca_pem);
    files
}

/// Replaces a file the way rotation tools do: write a temporary file, rename it over.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn host_config(files: &Files) -> IdentityConfig {
    let mut config = IdentityConfig::new(
        IdentitySource::HostFiles {
            cert: files.cert.clone(),
            key: files.key.clone(),
            ca: files.ca.clone(),
        },
        files.socket.clone(),
    );
    config.poll_interval = POLL;
    config
}

// === SDS client ===

async fn sds_client(socket: &Path) -> SecretDiscoveryServiceClient<Channel> {
    let socket = socket.to_owned();
    let channel = Endpoint::from_static("http://sds.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to the SDS socket");
    SecretDiscoveryServiceClient::new(channel)
}

fn mk_request(version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        node: Some(Node {
            id: "orders-1".into(),
            cluster: "orders".into(),
            ..Default::default()
        }),
        resource_names: vec![IDENTITY_SECRET.into(), TRUST_SECRET.into()],
        type_url: SECRET_TYPE.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// A `StreamSecrets` stream subscribed to both secrets, acknowledging what it receives.
struct SdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl SdsStream {
    async fn open(socket: &Path) -> Self {
        let (tx, rx) = mpsc::channel(4);
        tx.send(mk_request("", "")).await.expect("send");
        let rx = sds_client(socket)
            .await
            .stream_secrets(ReceiverStream::new(rx))
            .await
            .expect("StreamSecrets")
            .into_inner();
        SdsStream { tx, rx }
    }

    /// The next response (acknowledged), within [`WAIT`].
    async fn next(&mut self) -> BTreeMap<String, Secret> {
        let response = tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream healthy")
            .expect("stream open");
        self.tx
            .send(mk_request(&response.version_info, &response.nonce))
            .await
            .expect("ack");
        secrets(&response)
    }

    /// Asserts nothing is pushed for [`QUIET`].
    async fn expect_silence(&mut self) {
        if let Ok(r) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no push, got {r:?}");
        }
    }
}

async fn fetch(socket: &Path) -> BTreeMap<String, Secret> {
    let response = sds_client(socket)
        .await
        .fetch_secrets(mk_request("", ""))
        .await
        .expect("FetchSecrets")
        .into_inner();
    secrets(&response)
}

fn secrets(response: &DiscoveryResponse) -> BTreeMap<String, Secret> {
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, SECRET_TYPE);
            let s = Secret::decode(any.value.as_slice()).expect("a Secret");
            (s.name.clone(), s)
        })
        .collect()
}

fn inline(d: Option<envoy_types::pb::envoy::config::core::v3::DataSource>) -> String {
    match d.and_then(|d| d.specifier) {
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b).expect("PEM text"),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// (certificate chain, private key) of [`IDENTITY_SECRET`].
fn served_pair(secrets: &BTreeMap<String, Secret>) -> (String, String) {
    match secrets.get(IDENTITY_SECRET).and_then(|s| s.r#type.clone()) {
        Some(secret::Type::TlsCertificate(tls)) => {
            (inline(tls.certificate_chain), inline(tls.private_key))
        }
        other => panic!("{IDENTITY_SECRET} is not a TlsCertificate: {other:?}"),
    }
}

fn served_ca(secrets: &BTreeMap<String, Secret>) -> String {
    match secrets.get(TRUST_SECRET).and_then(|s| s.r#type.clone()) {
        Some(secret::Type::ValidationContext(ctx)) => inline(ctx.trusted_ca),
        other => panic!("{TRUST_SECRET} is not a validation context: {other:?}"),
    }
}

async fn wait_for_generation(handle: &IdentityHandle, generation: u64) {
    let what = format!("identity generation {generation}");
    eventually_watch(&mut handle.subscribe(), &what, WAIT, |i| {
        i.generation >= generation
    })
    .await;
}

/// Waits until `path` no longer exists.
async fn wait_gone(path: &Path) {
    eventually(&format!("{path:?} to be removed"), WAIT, || {
        ready(!path.exists())
    })
    .await;
}

// === host files: tests ===

#[tokio::test]
async fn host_file_identity_is_served_and_replacements_picked_up() {
    let pki = mk_pki();
    let (cert1, key1) = mk_leaf(&pki);
    let files = mk_files(&pki, &cert1, &key1);
    let shutdown = CancellationToken::new();
    let handle = identity::start(host_config(&files), shutdown.clone())
        .await
        .expect("start");
    let info = handle.current();
    assert_eq!(info.generation, 1);
    assert_eq!(
        info.identity.as_deref(),
        Some("spiffe://example.org/service/orders")
    );

    let mode = std::fs::metadata(&files.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let mut stream = SdsStream::open(&files.socket).await;
    let first = stream.next().await;
    assert_eq!(served_pair(&first), (cert1.clone(), key1.clone()));
    assert_eq!(served_ca(&first), pki.ca_pem);
    assert_eq!(fetch(&files.socket).await, first);

    // A complete rotation (key first, then certificate): pushed on the open stream.
    let (cert2, key2) = mk_leaf(&pki);
    replace(&files.key, &key2);
    replace(&files.cert, &cert2);
    let second = stream.next().await;
    assert_eq!(served_pair(&second), (cert2.clone(), key2.clone()));
    wait_for_generation(&handle, 2).await;
    assert_ne!(handle.current().serial_hex, info.serial_hex);

    // A half-written rotation (certificate without its key): the previous pair stays.
    let (cert3, key3) = mk_leaf(&pki);
    replace(&files.cert, &cert3);
    stream.expect_silence().await;
    assert_eq!(served_pair(&fetch(&files.socket).await), (cert2, key2));
    assert_eq!(handle.current().generation, 2);

    // The key arrives: the new pair is served.
    replace(&files.key, &key3);
    assert_eq!(served_pair(&stream.next().await), (cert3, key3));
    wait_for_generation(&handle, 3).await;

    shutdown.cancel();
    wait_gone(&files.socket).await;
}

#[tokio::test]
async fn bad_host_files_fail_identity_start_naming_the_file() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki);
    let (_, other_key) = mk_leaf(&pki);

    let files = mk_files(&pki, &cert, &other_key);
    let err = identity::start(host_config(&files), CancellationToken::new())
        .await
        .expect_err("mismatched key");
    let text = err.to_string();
    assert!(text.contains("does not match"), "{text}");
    assert!(text.contains(&files.key.display().to_string()), "{text}");
    assert!(!files.socket.exists(), "no socket without an identity");
    assert!(!text.contains("PRIVATE KEY") && !format!("{err:?}").contains("PRIVATE KEY"));

    let files = mk_files(&pki, &cert, &key);
    std::fs::remove_file(&files.ca).expect("remove");
    let err = identity::start(host_config(&files), CancellationToken::new())
        .await
        .expect_err("missing CA file");
    let text = err.to_string();
    assert!(text.contains(&files.ca.display().to_string()), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

// === control-plane CA ===

/// What the test CA saw in one request.
#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    body: String,
    sans: Vec<SanType>,
    public_key: Vec<u8>,
    issued: Option<String>,
}

struct TestCaState {
    pki: Pki,
    ttl: Duration,
    refuse: Mutex<Option<(StatusCode, String)>>,
    seen: Mutex<Vec<Seen>>,
}

#[derive(Clone)]
struct TestCa(Arc<TestCaState>);

impl TestCa {
    /// Serves on 127.0.0.1 until `shutdown`; returns the admin URL.
    async fn start(ttl: Duration, shutdown: &CancellationToken) -> (TestCa, String) {
        let ca = TestCa(Arc::new(TestCaState {
            pki: mk_pki(),
            ttl,
            refuse: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        }));
        let url = ca.serve("127.0.0.1:0", shutdown).await;
        (ca, url)
    }

    /// Serves this CA (again) on `addr` until `shutdown`; returns the admin URL.
    async fn serve(&self, addr: &str, shutdown: &CancellationToken) -> String {
        let app = axum::Router::new()
            .route(
                meshplane_model::identity::SIGN_PATH,
                axum::routing::post(sign),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        });
        url
    }

    fn refuse(&self, answer: Option<(StatusCode, &str)>) {
        *self.0.refuse.lock().expect("lock") = answer.map(|(s, b)| (s, b.to_owned()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.seen.lock().expect("lock").clone()
    }
}

async fn sign(State(ca): State<TestCa>, headers: HeaderMap, body: String) -> Response {
    let request: SignRequest = serde_json::from_str(&body).expect("a SignRequest");
    let mut csr = CertificateSigningRequestParams::from_pem(&request.csr).expect("a CSR");
    let mut seen = Seen {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        sans: csr.params.subject_alt_names.clone(),
        public_key: csr.public_key.der_bytes().to_vec(),
        issued: None,
    };
    let refusal = ca.0.refuse.lock().expect("lock").clone();
    if let Some((status, text)) = refusal {
        ca.0.seen.lock().expect("lock").push(seen);
        return (status, text).into_response();
    }
    let now = SystemTime::now();
    csr.params.not_before = now.into();
    csr.params.not_after = (now + ca.0.ttl).into();
    let cert = csr.signed_by(&ca.0.pki.issuer).expect("signed").pem();
    seen.issued = Some(cert.clone());
    ca.0.seen.lock().expect("lock").push(seen);
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    axum::Json(SignResponse {
        identity: spiffe_id("example.org", &orders()),
        certificate_chain: cert,
        ca_bundle: ca.0.pki.ca_pem.clone(),
        not_after_unix: unix(now + ca.0.ttl),
        not_before_unix: unix(now),
    })
    .into_response()
}

fn orders() -> ServiceName {
    ServiceName::new("orders").expect("name")
}

fn ca_config(url: &str, socket: &Path) -> IdentityConfig {
    ca_config_for(url, socket, "orders", "example.org")
}

fn ca_config_for(url: &str, socket: &Path, service: &str, trust_domain: &str) -> IdentityConfig {
    let mut config = IdentityConfig::new(
        IdentitySource::ControlPlaneCa {
            ca_bundle: None,
            admin_urls: vec![url.to_owned()],
            token: Some("s3cret-token".into()),
            service: ServiceName::new(service).expect("name"),
            trust_domain: trust_domain.into(),
        },
        socket.to_owned(),
    );
    config.retry_min = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(800);
    config
}

#[tokio::test]
async fn ca_identity_is_renewed_before_expiry_with_new_keys() {
    let shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(Duration::from_secs(4), &shutdown).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sds.sock");
    let handle = identity::start(ca_config(&url, &socket), shutdown.clone())
        .await
        .expect("start");
    let expected_id = spiffe_id("example.org", &orders());
    assert_eq!(handle.current().identity.as_deref(), Some(&*expected_id));

    let mut stream = SdsStream::open(&socket).await;
    let first = stream.next().await;
    assert_eq!(served_ca(&first), ca.0.pki.ca_pem);

    // Two renewals, each before the certificate it replaces expires.
    let mut info_rx = handle.subscribe();
    let mut previous = info_rx.borrow_and_update().clone();
    while previous.generation < 3 {
        tokio::time::timeout(WAIT, info_rx.changed())
            .await
            .expect("renewed in time")
            .expect("running");
        let next = info_rx.borrow_and_update().clone();
        assert!(
            SystemTime::now() < previous.not_after,
            "renewed only after expiry"
        );
        assert_ne!(next.serial_hex, previous.serial_hex);
        previous = next;
    }

    let seen = ca.seen();
    assert!(seen.len() >= 3, "{seen:?}");
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some("Bearer s3cret-token"));
        assert!(
            !s.body.contains("PRIVATE KEY"),
            "a key was sent: {}",
            s.body
        );
        assert_eq!(
            s.sans,
            vec![SanType::URI(expected_id.as_str().try_into().expect("uri"))]
        );
    }
    let mut keys: Vec<&Vec<u8>> = seen.iter().map(|s| &s.public_key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), seen.len(), "a key was reused");

    // The stream follows: it ends up with the latest certificate and its own key.
    let latest = seen.last().and_then(|s| s.issued.clone()).expect("issued");
    let deadline = tokio::time::Instant::now() + WAIT;
    let (cert, key) = loop {
        let pair = served_pair(&stream.next().await);
        if pair.0 == latest || tokio::time::Instant::now() > deadline {
            break pair;
        }
    };
    assert_eq!(cert, latest);
    let key = KeyPair::from_pem(&key).expect("served key");
    assert_eq!(key.public_key_raw(), seen.last().expect("seen").public_key);

    shutdown.cancel();
    wait_gone(&socket).await;
}

#[tokio::test]
async fn failed_identity_renewals_are_retried_while_the_old_one_is_served() {
    let shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(Duration::from_secs(6), &shutdown).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sds.sock");
    let handle = identity::start(ca_config(&url, &socket), shutdown.clone())
        .await
        .expect("start");
    let first = served_pair(&fetch(&socket).await);
    ca.refuse(Some((StatusCode::SERVICE_UNAVAILABLE, "CA restarting")));

    // The first request and at least three retries.
    wait_for_requests(&ca, 4).await;
    assert_eq!(handle.current().generation, 1);
    assert_eq!(served_pair(&fetch(&socket).await), first);

    ca.refuse(None);
    wait_for_generation(&handle, 2).await;
    let renewed = served_pair(&fetch(&socket).await);
    assert_ne!(renewed.0, first.0);
    assert_ne!(renewed.1, first.1, "a renewal uses a new key");
    shutdown.cancel();
}

#[tokio::test]
async fn ca_refusal_and_unreachable_ca_fail_identity_start_clearly() {
    let shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(Duration::from_secs(60), &shutdown).await;
    ca.refuse(Some((
        StatusCode::FORBIDDEN,
        "service `orders` may not request identities with this token",
    )));
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sds.sock");
    let err = identity::start(ca_config(&url, &socket), shutdown.clone())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("403"), "{text}");
    assert!(text.contains("may not request identities"), "{text}");
    assert!(text.contains(&format!("{url}/api/ca/sign")), "{text}");
    assert!(!format!("{text} {err:?}").contains("s3cret-token"));
    assert!(!socket.exists());

    // Nothing listens on this port any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let closed_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let err = identity::start(ca_config(&closed_url, &socket), shutdown.clone())
        .await
        .expect_err("unreachable");
    let text = err.to_string();
    assert!(text.contains("cannot reach"), "{text}");
    assert!(text.contains(&closed_url), "{text}");
    shutdown.cancel();
}

// === control-plane CA: the certificate cache ===

/// Lifetime of cached certificates: renewing at half of it would take far longer than
/// [`WAIT`], so a renewal seen in time can only be the immediate one after a cached start.
const LONG_TTL: Duration = Duration::from_secs(3600);

/// A sidecar's work directory: the SDS socket and the certificate cache.
struct WorkDir {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    cache_dir: PathBuf,
}

impl WorkDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        WorkDir {
            socket: dir.path().join("sds.sock"),
            cache_dir: dir.path().join("work").join("identity"),
            _dir: dir,
        }
    }

    fn cache_file(&self) -> PathBuf {
        self.cache_dir.join("identity.pem")
    }

    fn config(&self, url: &str) -> IdentityConfig {
        self.config_for(url, "orders", "example.org")
    }

    fn config_for(&self, url: &str, service: &str, trust_domain: &str) -> IdentityConfig {
        let mut config = ca_config_for(url, &self.socket, service, trust_domain);
        config.cache_dir = Some(self.cache_dir.clone());
        config
    }

    /// Runs an identity until it has served its first certificate, then stops it; returns
    /// the pair served.
    async fn run_once(&self, config: IdentityConfig) -> (String, String) {
        let shutdown = CancellationToken::new();
        identity::start(config, shutdown.clone())
            .await
            .expect("start");
        let pair = served_pair(&fetch(&self.socket).await);
        shutdown.cancel();
        wait_gone(&self.socket).await;
        pair
    }
}

/// Stops the CA served until `shutdown` and waits until nothing answers at `url` (the
/// control plane is down; the sidecar's configuration is unchanged).
async fn stop_ca(shutdown: &CancellationToken, url: &str) {
    shutdown.cancel();
    let addr = url.trim_start_matches("http://").to_owned();
    eventually(&format!("the CA at {url} to stop"), WAIT, || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
}

/// An admin URL nothing listens on.
async fn closed_url() -> String {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    url
}

/// (serial, lowercase hex; subject public key) of the first certificate in `pem`.
fn cert_facts(pem: &str) -> (String, Vec<u8>) {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    let (_, cert) = X509Certificate::from_der(&block.contents).expect("certificate");
    (
        format!("{:x}", cert.serial),
        cert.public_key().subject_public_key.data.to_vec(),
    )
}

/// The private key blocks of `pem`.
fn private_keys(pem: &str) -> Vec<KeyPair> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|b| b.expect("PEM"))
        .filter(|b| b.label.ends_with("PRIVATE KEY"))
        .map(|b| KeyPair::try_from(b.contents.as_slice()).expect("a key"))
        .collect()
}

/// Waits until the CA has seen `count` signing requests.
async fn wait_for_requests(ca: &TestCa, count: usize) {
    eventually(&format!("{count} signing requests"), WAIT, || {
        let seen = ca.seen().len();
        ready(if seen >= count {
            Ok(())
        } else {
            Err(format!("the CA saw {seen}"))
        })
    })
    .await;
}

#[tokio::test]
async fn ca_identity_is_cached_privately_with_its_key() {
    let ca_shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(LONG_TTL, &ca_shutdown).await;
    let work = WorkDir::new();
    let shutdown = CancellationToken::new();
    let handle = identity::start(work.config(&url), shutdown.clone())
        .await
        .expect("start");
    let (cert, key) = served_pair(&fetch(&work.socket).await);

    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&work.cache_file()), 0o600);
    assert_eq!(mode(&work.cache_dir), 0o700);

    let cached = std::fs::read_to_string(work.cache_file()).expect("cache file");
    assert!(cached.contains(&cert), "the served chain is cached");
    assert!(cached.contains(&ca.0.pki.ca_pem), "the CA bundle is cached");
    let (serial, public_key) = cert_facts(&cached);
    assert_eq!(serial, handle.current().serial_hex);
    let keys = private_keys(&cached);
    assert_eq!(keys.len(), 1, "one private key");
    assert_eq!(
        keys[0].public_key_raw(),
        public_key,
        "the certificate's key"
    );
    assert_eq!(keys[0].serialize_pem(), key, "the key served");
    shutdown.cancel();
    wait_gone(&work.socket).await;
    ca_shutdown.cancel();
}

#[tokio::test]
async fn a_restart_during_a_ca_outage_serves_the_cached_identity_then_renews() {
    let ca_shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(LONG_TTL, &ca_shutdown).await;
    let work = WorkDir::new();
    let first = work.run_once(work.config(&url)).await;
    let (first_serial, _) = cert_facts(&first.0);

    // The control plane is down: nothing listens.
    stop_ca(&ca_shutdown, &url).await;
    let shutdown = CancellationToken::new();
    let handle = identity::start(work.config(&url), shutdown.clone())
        .await
        .expect("start from the cache with the CA unreachable");
    assert_eq!(handle.current().serial_hex, first_serial);
    assert_eq!(served_pair(&fetch(&work.socket).await), first);
    shutdown.cancel();
    wait_gone(&work.socket).await;

    // The control plane is up again but its CA answers 503.
    let ca_shutdown = CancellationToken::new();
    ca.serve(url.trim_start_matches("http://"), &ca_shutdown)
        .await;
    ca.refuse(Some((StatusCode::SERVICE_UNAVAILABLE, "CA restarting")));
    let before = ca.seen().len();
    let shutdown = CancellationToken::new();
    let handle = identity::start(work.config(&url), shutdown.clone())
        .await
        .expect("start from the cache with the CA answering 503");
    let mut stream = SdsStream::open(&work.socket).await;
    assert_eq!(served_pair(&stream.next().await), first);
    assert_eq!(handle.current().serial_hex, first_serial);
    // Retried at once, not after half the cached certificate's lifetime.
    wait_for_requests(&ca, before + 2).await;
    assert_eq!(handle.current().generation, 1);

    ca.refuse(None);
    let renewed = served_pair(&stream.next().await);
    assert_ne!(renewed, first);
    let (renewed_serial, _) = cert_facts(&renewed.0);
    assert_ne!(renewed_serial, first_serial);
    wait_for_generation(&handle, 2).await;
    assert_eq!(handle.current().serial_hex, renewed_serial);
    // The renewal replaced the cached certificate.
    let cached = std::fs::read_to_string(work.cache_file()).expect("cache file");
    assert_eq!(cert_facts(&cached).0, renewed_serial);
    shutdown.cancel();
    wait_gone(&work.socket).await;
    ca_shutdown.cancel();
}

#[tokio::test]
async fn a_ca_refusal_at_restart_fails_identity_start_even_with_a_valid_cache() {
    let ca_shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(LONG_TTL, &ca_shutdown).await;
    let work = WorkDir::new();
    work.run_once(work.config(&url)).await;
    assert!(work.cache_file().exists());

    ca.refuse(Some((
        StatusCode::FORBIDDEN,
        "service `orders` may not request identities with this token",
    )));
    let err = identity::start(work.config(&url), CancellationToken::new())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("403"), "{text}");
    assert!(text.contains("may not request identities"), "{text}");
    assert!(
        !text.contains("cached"),
        "a refusal does not look at the cache: {text}"
    );
    assert!(!work.socket.exists(), "no socket without an identity");
    ca_shutdown.cancel();
}

#[tokio::test]
async fn an_expired_or_foreign_cached_identity_is_not_served_during_a_ca_outage() {
    let ca_shutdown = CancellationToken::new();
    let (ca, url) = TestCa::start(LONG_TTL, &ca_shutdown).await;
    let start_err = |work: &WorkDir, url: &str| {
        let config = work.config(url);
        async move {
            identity::start(config, CancellationToken::new())
                .await
                .expect_err("no usable cache")
                .to_string()
        }
    };

    // Nothing cached yet.
    let down = closed_url().await;
    let work = WorkDir::new();
    let text = start_err(&work, &down).await;
    assert!(
        text.contains("cannot reach") && text.contains(&down),
        "{text}"
    );
    assert!(text.contains("no usable cached certificate"), "{text}");
    assert!(text.contains("none has been cached"), "{text}");
    assert!(!work.socket.exists());

    // Another service's certificate, from this CA, which then goes down.
    let payments = WorkDir::new();
    payments
        .run_once(payments.config_for(&url, "payments", "example.org"))
        .await;
    // This service's certificate, from another trust domain.
    let other_domain = WorkDir::new();
    other_domain
        .run_once(other_domain.config_for(&url, "orders", "other.org"))
        .await;
    stop_ca(&ca_shutdown, &url).await;
    let text = start_err(&payments, &url).await;
    assert!(text.contains("cannot reach"), "{text}");
    assert!(
        text.contains("names spiffe://example.org/service/payments"),
        "{text}"
    );
    let text = start_err(&other_domain, &url).await;
    assert!(text.contains("trust domain `other.org`"), "{text}");

    // An expired certificate, while the CA answers 503.
    let ca_shutdown = CancellationToken::new();
    ca.serve(url.trim_start_matches("http://"), &ca_shutdown)
        .await;
    let work = WorkDir::new();
    let (cert, key) = mk_leaf_between(&ca.0.pki, 2000, 2001);
    std::fs::create_dir_all(&work.cache_dir).expect("dir");
    let header = format!(
        "# meshplane identity cache\n# trust-domain: example.org\n# ca-url: {url}{}\n",
        meshplane_model::identity::SIGN_PATH
    );
    std::fs::write(
        work.cache_file(),
        format!("{header}{cert}{key}{}", ca.0.pki.ca_pem),
    )
    .expect("write");
    ca.refuse(Some((StatusCode::SERVICE_UNAVAILABLE, "CA restarting")));
    let text = start_err(&work, &url).await;
    assert!(
        text.contains("503") && text.contains("CA restarting"),
        "{text}"
    );
    assert!(text.contains("no usable cached certificate"), "{text}");
    assert!(text.contains("expired"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(!work.socket.exists());
    ca_shutdown.cancel();
}

#[tokio::test]
async fn a_cached_identity_of_another_ca_is_discarded_and_never_served() {
    // The same instance (same work directory) first belongs to CA A's mesh, then to CA B's.
    let a_shutdown = CancellationToken::new();
    let (ca_a, url_a) = TestCa::start(LONG_TTL, &a_shutdown).await;
    let b_shutdown = CancellationToken::new();
    let (ca_b, url_b) = TestCa::start(LONG_TTL, &b_shutdown).await;
    let work = WorkDir::new();
    let from_a = work.run_once(work.config(&url_a)).await;
    assert!(
        std::fs::read_to_string(work.cache_file())
            .expect("cached")
            .contains(&ca_a.0.pki.ca_pem)
    );

    // B is down at the first start in its mesh: A's certificate is not served.
    stop_ca(&b_shutdown, &url_b).await;
    let err = identity::start(work.config(&url_b), CancellationToken::new())
        .await
        .expect_err("A's certificate is not B's")
        .to_string();
    assert!(err.contains("no usable cached certificate"), "{err}");
    assert!(
        err.contains("discarded") && err.contains(&url_a),
        "says it came from A: {err}"
    );
    assert!(!work.cache_file().exists(), "A's certificate is discarded");
    assert!(!work.socket.exists());

    // B answers: a certificate from B, cached for B.
    let b_shutdown = CancellationToken::new();
    ca_b.serve(url_b.trim_start_matches("http://"), &b_shutdown)
        .await;
    let from_b = work.run_once(work.config(&url_b)).await;
    assert_ne!(from_b, from_a);
    assert!(
        ca_b.seen()
            .iter()
            .any(|s| s.issued.as_deref() == Some(from_b.0.as_str()))
    );
    let cached = std::fs::read_to_string(work.cache_file()).expect("cached");
    assert!(cached.contains(&ca_b.0.pki.ca_pem) && !cached.contains(&ca_a.0.pki.ca_pem));

    // Back to A while A is down: B's certificate is not served there either.
    stop_ca(&a_shutdown, &url_a).await;
    let err = identity::start(work.config(&url_a), CancellationToken::new())
        .await
        .expect_err("B's certificate is not A's")
        .to_string();
    assert!(err.contains("no usable cached certificate"), "{err}");
    assert!(!work.cache_file().exists(), "B's certificate is discarded");
    b_shutdown.cancel();
}

// === control-plane CA: several instances sharing it ===

/// [`ca_config`] for several control-plane instances, tried in order.
fn ca_config_many(urls: &[&str], socket: &Path) -> IdentityConfig {
    let mut config = ca_config(urls[0], socket);
    if let IdentitySource::ControlPlaneCa { admin_urls, .. } = &mut config.source {
        *admin_urls = urls.iter().map(|u| (*u).to_owned()).collect();
    }
    config
}

#[tokio::test]
async fn an_unreachable_or_failing_ca_instance_is_passed_over_and_a_refusal_is_final() {
    let shutdown = CancellationToken::new();
    let (failing, failing_url) = TestCa::start(Duration::from_secs(60), &shutdown).await;
    failing.refuse(Some((StatusCode::SERVICE_UNAVAILABLE, "not ready")));
    let (live, live_url) = TestCa::start(Duration::from_secs(60), &shutdown).await;
    let dead_url = closed_url().await;
    let dir = tempfile::tempdir().expect("tempdir");

    let socket = dir.path().join("a.sock");
    let config = ca_config_many(&[&dead_url, &failing_url, &live_url], &socket);
    let handle = identity::start(config, shutdown.clone())
        .await
        .expect("the live instance signs");
    assert_eq!(
        handle.current().identity.as_deref(),
        Some(spiffe_id("example.org", &orders()).as_str())
    );
    assert_eq!((failing.seen().len(), live.seen().len()), (1, 1));

    // A refusal is the control plane's decision: its other instances are not asked.
    let (refusing, refusing_url) = TestCa::start(Duration::from_secs(60), &shutdown).await;
    refusing.refuse(Some((StatusCode::FORBIDDEN, "not this token")));
    let socket = dir.path().join("b.sock");
    let err = identity::start(
        ca_config_many(&[&refusing_url, &live_url], &socket),
        shutdown.clone(),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    assert_eq!(live.seen().len(), 1, "the live instance was not asked");
    shutdown.cancel();
}

#[tokio::test]
async fn renewals_move_to_the_other_instance_when_the_first_stops() {
    let (a_shutdown, b_shutdown) = (CancellationToken::new(), CancellationToken::new());
    // One CA served by two instances, as control planes sharing --ca-cert/--ca-key.
    let (ca, a_url) = TestCa::start(Duration::from_secs(2), &a_shutdown).await;
    let b_url = ca.serve("127.0.0.1:0", &b_shutdown).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sds.sock");
    let shutdown = CancellationToken::new();
    let handle = identity::start(ca_config_many(&[&a_url, &b_url], &socket), shutdown.clone())
        .await
        .expect("A signs");
    wait_for_requests(&ca, 1).await;
    stop_ca(&a_shutdown, &a_url).await;
    wait_for_generation(&handle, 2).await;
    assert!(ca.seen().len() >= 2, "B signed the renewal");
    shutdown.cancel();
    b_shutdown.cancel();
}
