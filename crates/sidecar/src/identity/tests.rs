//! Unit tests: checking material, the secrets' shapes, the CSR, renewal timing and the
//! socket. The served-over-SDS behaviour is tested end to end in `tests/identity.rs`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret;
use meshplane_model::ServiceName;
use meshplane_model::identity::{IDENTITY_SECRET, TRUST_SECRET};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

use super::ca_client::Renewal;
use super::material::{Material, Origins};
use super::*;

const ID: &str = "spiffe://example.org/service/orders";

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

/// A leaf for `uri` valid between the two years; returns (cert PEM, key PEM).
fn mk_leaf(pki: &Pki, uri: &str, from: i32, to: i32) -> (String, String) {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &pki.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

fn mk_material(cert: &str, key: &str, ca: &str) -> Material {
    Material::new(cert.into(), key.into(), ca.into())
}

fn origins() -> Origins {
    Origins {
        cert: "`cert.pem`".into(),
        key: "`key.pem`".into(),
        ca: "`ca.pem`".into(),
    }
}

#[test]
fn a_matching_pair_is_accepted_and_described() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
    let leaf = mk_material(&cert, &key, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect("valid");
    assert_eq!(leaf.identity.as_deref(), Some(ID));
    assert!(leaf.not_after > SystemTime::now() + Duration::from_secs(365 * 24 * 3600));
    assert!(!leaf.serial_hex.is_empty());
    assert!(leaf.serial_hex.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let pki = mk_pki();
    let (cert, _) = mk_leaf(&pki, ID, 2020, 2100);
    let (_, other_key) = mk_leaf(&pki, ID, 2020, 2100);
    let err = mk_material(&cert, &other_key, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect_err("mismatch");
    assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`key.pem`") && text.contains("`cert.pem`"),
        "{text}"
    );
    assert!(text.contains("does not match"), "{text}");
}

#[test]
fn an_expired_certificate_is_refused() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2000, 2001);
    let err = mk_material(&cert, &key, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect_err("expired");
    let text = err.to_string();
    assert!(
        text.contains("`cert.pem`") && text.contains("expired"),
        "{text}"
    );
    assert!(text.contains("2001"), "names the expiry: {text}");
}

#[test]
fn unusable_files_are_refused_without_quoting_the_key() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);

    let err = mk_material(&cert, &key, "not a bundle")
        .check(&origins(), SystemTime::now())
        .expect_err("no CA");
    assert!(err.to_string().contains("`ca.pem`"), "{err}");

    let err = mk_material("", &key, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect_err("no cert");
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");

    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err = mk_material(&cert, encrypted, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect_err("encrypted");
    assert!(err.to_string().contains("encrypted"), "{err}");

    // A damaged key: the error says so without echoing the file.
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let damaged = key.replacen(&body[..20], "AAAAAAAAAAAAAAAAAAAA", 1);
    let err = mk_material(&cert, &damaged, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect_err("damaged");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("`key.pem`"), "{shown}");
    for line in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        assert!(!shown.contains(line), "key material in the error: {shown}");
    }
}

#[test]
fn secrets_have_the_shapes_envoy_expects_and_debug_hides_the_key() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
    let material = mk_material(&cert, &key, &pki.ca_pem);

    let identity = material.identity_secret();
    assert_eq!(identity.name, IDENTITY_SECRET);
    let Some(secret::Type::TlsCertificate(tls)) = identity.r#type else {
        panic!("not a TlsCertificate");
    };
    let inline = |d: Option<envoy_types::pb::envoy::config::core::v3::DataSource>| match d
        .and_then(|d| d.specifier)
    {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("not inline bytes: {other:?}"),
    };
    assert_eq!(inline(tls.certificate_chain), cert.as_bytes());
    assert_eq!(inline(tls.private_key), key.as_bytes());

    let trust = material.trust_secret();
    assert_eq!(trust.name, TRUST_SECRET);
    let Some(secret::Type::ValidationContext(ctx)) = trust.r#type else {
        panic!("not a validation context");
    };
    assert_eq!(inline(ctx.trusted_ca), pki.ca_pem.as_bytes());

    let debug = format!("{material:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn renewal_waits_for_the_fraction_of_the_lifetime_but_never_less_than_retry_min() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
    let mut leaf = mk_material(&cert, &key, &pki.ca_pem)
        .check(&origins(), SystemTime::now())
        .expect("valid");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    leaf.not_before = t0;
    leaf.not_after = t0 + Duration::from_secs(100);
    let renewal = Renewal {
        renew_fraction: 0.5,
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(8),
    };
    assert_eq!(
        renewal.delay(&leaf, t0 + Duration::from_secs(10)),
        Duration::from_secs(45)
    );
    assert_eq!(
        renewal.delay(&leaf, t0 + Duration::from_secs(70)),
        Duration::from_secs(15)
    );
    // A CA backdating not_before by 60 s for clock skew: 12 s left, renew in 6 s.
    leaf.not_before = t0 - Duration::from_secs(60);
    leaf.not_after = t0 + Duration::from_secs(12);
    assert_eq!(renewal.delay(&leaf, t0), Duration::from_secs(6));
    leaf.not_after = t0;
    assert_eq!(renewal.delay(&leaf, t0), Duration::from_secs(1));
}

#[test]
fn config_is_checked_and_debug_hides_the_token() {
    let source = IdentitySource::ControlPlaneCa {
        ca_bundle: None,
        admin_urls: vec!["http://127.0.0.1:18080".into()],
        token: Some("s3cret-token".into()),
        service: ServiceName::new("orders").expect("name"),
        trust_domain: "example.org".into(),
    };
    let mut config = IdentityConfig::new(source, "/tmp/x.sock".into());
    assert!(config.check().is_ok());
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret-token"), "{debug}");
    assert!(debug.contains("token_set: true"), "{debug}");

    for bad in [0.0, -1.0, 1.5, f64::NAN] {
        config.renew_fraction = bad;
        let err = config.check().expect_err("bad fraction");
        assert!(err.to_string().contains("renew_fraction"), "{err}");
    }
    config.renew_fraction = 0.5;
    config.retry_min = Duration::from_secs(10);
    config.retry_max = Duration::from_secs(1);
    assert!(config.check().is_err());
}

#[tokio::test]
async fn the_socket_is_private_and_replaces_only_stale_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run").join("sds.sock");

    let first = sds::bind(&path).expect("bind");
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let dir_mode = std::fs::metadata(path.parent().expect("parent"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o777,
        0o700,
        "created directory mode {dir_mode:o}"
    );

    // Still served: refused.
    let err = sds::bind(&path).expect_err("in use");
    assert!(err.to_string().contains("another process"), "{err}");

    // Stale (its server is gone): replaced.
    drop(first);
    let _second = sds::bind(&path).expect("stale socket replaced");

    // Not a socket: left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep me").expect("write");
    let err = sds::bind(&file).expect_err("not a socket");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "keep me");
    // No staging directories left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "sds.sock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// === cache ===

const CA_URL: &str = "http://ca.example:18080/api/ca/sign";

fn mk_binding(trust_domain: &str, ca_url: &str) -> cache::MeshBinding {
    cache::MeshBinding {
        trust_domain: trust_domain.into(),
        ca_url: ca_url.into(),
    }
}

fn mk_cache(dir: &std::path::Path) -> cache::CertCache {
    mk_cache_in(dir, mk_binding("example.org", CA_URL))
}

fn mk_cache_in(dir: &std::path::Path, binding: cache::MeshBinding) -> cache::CertCache {
    cache::CertCache::new(&dir.join("work").join("identity"), binding)
}

#[test]
fn the_cache_file_splits_back_into_the_same_parts() {
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
    let (intermediate, _) = mk_leaf(&pki, ID, 2020, 2100);
    let chain = format!("{cert}{intermediate}");
    let bundle = format!("{}{}", pki.ca_pem, mk_pki().ca_pem);
    let material = mk_material(&chain, &key, &bundle);

    let binding = mk_binding("example.org", CA_URL);
    let decoded = cache::decode(&cache::encode(&material, &binding)).expect("decodes");
    assert_eq!(decoded.material.parts(), material.parts());
    assert_eq!(decoded.binding, Some(binding.clone()));

    // Parts without a final newline still give separate PEM blocks.
    let trimmed = mk_material(cert.trim_end(), key.trim_end(), pki.ca_pem.trim_end());
    let decoded = cache::decode(&cache::encode(&trimmed, &binding)).expect("decodes");
    decoded
        .material
        .check(&origins(), SystemTime::now())
        .expect("still a valid pair");

    // A file without a header (an older version's) decodes, bound to no mesh.
    let legacy = format!("{cert}{key}{}", pki.ca_pem);
    let decoded = cache::decode(legacy.as_bytes()).expect("decodes");
    assert_eq!(decoded.binding, None);
    assert_eq!(decoded.material.parts().0, cert.as_bytes());

    assert!(cache::decode(cert.as_bytes()).is_none(), "no key block");
    let truncated = format!("{cert}{}", &key[..key.len() / 2]);
    assert!(cache::decode(truncated.as_bytes()).is_none(), "no key end");
}

#[test]
fn only_an_unreachable_ca_or_a_5xx_counts_as_an_outage() {
    let refused = |status: u16| IdentityError::CaRefused {
        url: "http://ca/api/ca/sign".into(),
        status: reqwest::StatusCode::from_u16(status).expect("status"),
        body: String::new(),
    };
    let unreachable = IdentityError::CaUnreachable {
        url: "http://ca/api/ca/sign".into(),
        reason: "connection refused".into(),
    };
    assert!(unreachable.is_ca_outage());
    assert!(refused(503).is_ca_outage());
    assert!(refused(500).is_ca_outage());
    assert!(!refused(403).is_ca_outage());
    assert!(!refused(400).is_ca_outage());
    let unusable = IdentityError::CaResponse {
        url: "http://ca/api/ca/sign".into(),
        reason: "not a signing response".into(),
    };
    assert!(!unusable.is_ca_outage());
}

#[tokio::test]
async fn the_cache_is_written_privately_and_replaced_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = mk_cache(dir.path());
    let pki = mk_pki();
    let (cert1, key1) = mk_leaf(&pki, ID, 2020, 2100);
    cache.store(&mk_material(&cert1, &key1, &pki.ca_pem)).await;
    let (cert2, key2) = mk_leaf(&pki, ID, 2020, 2100);
    cache.store(&mk_material(&cert2, &key2, &pki.ca_pem)).await;

    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(cache.path()), 0o600);
    assert_eq!(mode(cache.path().parent().expect("dir")), 0o700);
    let names: Vec<_> = std::fs::read_dir(cache.path().parent().expect("dir"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![cache::CACHE_FILE], "no temporary files left");

    let (material, leaf) = cache.load(ID, SystemTime::now()).await.expect("usable");
    assert_eq!(
        material.parts(),
        (cert2.as_bytes(), key2.as_bytes(), pki.ca_pem.as_bytes())
    );
    assert_eq!(leaf.identity.as_deref(), Some(ID));
}

#[tokio::test]
async fn an_unusable_cache_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = mk_cache(dir.path());
    let pki = mk_pki();
    let now = SystemTime::now();

    let err = cache.load(ID, now).await.expect_err("missing");
    assert!(err.contains("none has been cached"), "{err}");

    let (cert, key) = mk_leaf(&pki, ID, 2000, 2001);
    cache.store(&mk_material(&cert, &key, &pki.ca_pem)).await;
    let err = cache.load(ID, now).await.expect_err("expired");
    assert!(err.contains("expired") && err.contains("2001"), "{err}");

    let (cert, key) = mk_leaf(&pki, "spiffe://example.org/service/payments", 2020, 2100);
    cache.store(&mk_material(&cert, &key, &pki.ca_pem)).await;
    let err = cache.load(ID, now).await.expect_err("other service");
    assert!(
        err.contains("names spiffe://example.org/service/payments"),
        "{err}"
    );

    let (cert, key) = mk_leaf(&pki, "spiffe://other.org/service/orders", 2020, 2100);
    cache.store(&mk_material(&cert, &key, &pki.ca_pem)).await;
    let err = cache.load(ID, now).await.expect_err("other trust domain");
    assert!(
        err.contains("trust domain `other.org`, not `example.org`"),
        "{err}"
    );

    let (cert, _) = mk_leaf(&pki, ID, 2020, 2100);
    let (_, other_key) = mk_leaf(&pki, ID, 2020, 2100);
    cache
        .store(&mk_material(&cert, &other_key, &pki.ca_pem))
        .await;
    let err = cache.load(ID, now).await.expect_err("mismatched key");
    assert!(err.contains("does not match"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");

    std::fs::write(cache.path(), "garbage").expect("write");
    let err = cache.load(ID, now).await.expect_err("garbage");
    assert!(err.contains("not a cached identity"), "{err}");
}

#[tokio::test]
async fn a_cache_of_another_mesh_is_never_loaded_and_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let ours = mk_cache(dir.path());
    let pki = mk_pki();
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
    let material = mk_material(&cert, &key, &pki.ca_pem);

    // Same instance (same work directory), same service and trust domain in the SPIFFE id,
    // but cached while the sidecar belonged to the CA at another URL.
    let elsewhere = mk_cache_in(
        dir.path(),
        mk_binding("example.org", "http://old-ca:18080/api/ca/sign"),
    );
    elsewhere.store(&material).await;
    let err = ours.load(ID, now).await.expect_err("another CA");
    assert!(
        err.contains("another mesh") && err.contains("http://old-ca:18080"),
        "{err}"
    );
    assert!(matches!(
        ours.discard_foreign().await,
        cache::Sweep::Discarded { .. }
    ));
    assert!(!ours.path().exists(), "discarded");

    // Cached from another instance of this mesh's CA (the --ca-url list reordered): ours.
    let instance = "http://cp-b:18080/api/ca/sign".to_owned();
    let reordered = mk_cache_in(dir.path(), mk_binding("example.org", &instance))
        .with_instances(&[instance.clone(), CA_URL.to_owned()]);
    ours.store(&material).await;
    assert!(
        reordered.load(ID, now).await.is_ok(),
        "another instance's URL is ours"
    );
    let ours_with_b = mk_cache(dir.path()).with_instances(&[CA_URL.to_owned(), instance]);
    elsewhere.store(&material).await;
    assert!(ours_with_b.load(ID, now).await.is_err(), "still not old-ca");
    std::fs::remove_file(ours.path()).expect("remove");

    // Another trust domain.
    let other_domain = mk_cache_in(dir.path(), mk_binding("other.org", CA_URL));
    other_domain.store(&material).await;
    let err = ours.load(ID, now).await.expect_err("another trust domain");
    assert!(
        err.contains("trust domain `other.org`, not `example.org`"),
        "{err}"
    );
    assert!(matches!(
        ours.discard_foreign().await,
        cache::Sweep::Discarded { .. }
    ));
    assert!(!ours.path().exists(), "discarded");

    // A header-less cache of an older version: not known to be ours, so not served.
    std::fs::create_dir_all(ours.path().parent().expect("dir")).expect("dir");
    std::fs::write(ours.path(), format!("{cert}{key}{}", pki.ca_pem)).expect("write");
    let err = ours.load(ID, now).await.expect_err("unbound");
    assert!(err.contains("does not say which mesh"), "{err}");
    assert!(matches!(
        ours.discard_foreign().await,
        cache::Sweep::Discarded { .. }
    ));
    assert!(!ours.path().exists(), "discarded");

    // Our own mesh's cache stays, and tells its CA bundle.
    ours.store(&material).await;
    assert_eq!(
        ours.discard_foreign().await,
        cache::Sweep::Ours {
            ca_bundle: pki.ca_pem.clone().into_bytes()
        }
    );
    ours.load(ID, now).await.expect("ours is served");
}

/// A proxyless client's files: one directory per certificate behind the `current`
/// symlink the bootstrap names, replaced whole, the key 0600 in a 0700 directory.
#[test]
fn certificate_files_are_replaced_whole_behind_current() {
    let pki = mk_pki();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("certs");
    let files = files::CertFiles::new(dir.clone());
    let paths = CertPaths::under(&dir);
    let mut seen = Vec::new();
    for round in 1..=2u64 {
        let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
        let material = mk_material(&cert, &key, &pki.ca_pem);
        let leaf = material
            .check(&origins(), SystemTime::now())
            .expect("valid");
        assert_eq!(files.publish(&material, &leaf).expect("written"), round);
        assert_eq!(std::fs::read_to_string(&paths.cert).expect("cert"), cert);
        assert_eq!(std::fs::read_to_string(&paths.key).expect("key"), key);
        assert_eq!(std::fs::read_to_string(&paths.ca).expect("ca"), pki.ca_pem);
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let target = std::fs::read_link(dir.join("current")).expect("a symlink");
        let set = target.display().to_string();
        assert!(
            set.starts_with(&format!(".certs-{}-", leaf.serial_hex)),
            "{set}"
        );
        seen.push(target);
    }
    // Only the current set is kept.
    let sets: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".certs-"))
        .collect();
    assert_eq!(sets, vec![seen[1].display().to_string()]);
}

/// The certificate directory must be private: one open to others is made private, a fresh
/// writer (a restart with the same pid and certificate) never collides with the set in use.
#[test]
fn the_certificate_directory_is_made_private_and_restarts_never_collide() {
    let pki = mk_pki();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("certs");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (cert, key) = mk_leaf(&pki, ID, 2020, 2100);
    let material = mk_material(&cert, &key, &pki.ca_pem);
    let leaf = material
        .check(&origins(), SystemTime::now())
        .expect("valid");
    files::CertFiles::new(dir.clone())
        .publish(&material, &leaf)
        .expect("written");
    let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "made private");
    // A second writer from scratch (generation 1 again) writing the same certificate.
    files::CertFiles::new(dir.clone())
        .publish(&material, &leaf)
        .expect("written again");
    let paths = CertPaths::under(&dir);
    assert_eq!(std::fs::read_to_string(&paths.cert).expect("cert"), cert);
    // A symlink in its place is refused.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).expect("symlink");
    let refused = files::CertFiles::new(link).publish(&material, &leaf);
    assert!(refused.is_err(), "a symlinked directory is refused");
}

/// Serves certificates as the control plane's CA does, on 127.0.0.1; its admin URL.
async fn serve_ca(dir: &std::path::Path) -> String {
    use axum::extract::State;
    use meshplane_model::identity::{SIGN_PATH, SignRequest};
    let ca = std::sync::Arc::new(
        meshplane_ca::Authority::load_or_generate(
            dir,
            "meshplane.local",
            Duration::from_secs(3600),
        )
        .expect("CA"),
    );
    let app = axum::Router::new()
        .route(
            SIGN_PATH,
            axum::routing::post(
                |State(ca): State<std::sync::Arc<meshplane_ca::Authority>>,
                 axum::Json(req): axum::Json<SignRequest>| async move {
                    axum::Json(ca.sign(&req, SystemTime::now()).expect("signs"))
                },
            ),
        )
        .with_state(ca);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Serves nothing the first `fails` times it is asked, then everything.
struct FlakySink {
    fails: u64,
    asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    served: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Sink for FlakySink {
    fn publish(&self, _material: &Material, leaf: &material::Leaf) -> Result<u64, IdentityError> {
        let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n <= self.fails {
            return Err(IdentityError::Config(format!("write {n} failed")));
        }
        let _ = self.served.send(leaf.serial_hex.clone());
        Ok(n)
    }
}

/// A renewed certificate that cannot be served at once (its files cannot be written: a full
/// disk) is served as soon as it can be, with backoff, not left for the next renewal.
#[tokio::test]
async fn a_renewed_certificate_that_cannot_be_served_is_retried_until_it_is() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = serve_ca(tmp.path()).await;
    let service = ServiceName::new("orders").expect("name");
    let client = ca_client::CaClient::new(&[url], None, &service, "meshplane.local", None, None)
        .expect("client");
    let (_, leaf) = client.obtain().await.expect("a first certificate");
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (served, mut served_rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = FlakySink {
        fails: 3,
        asked: asked.clone(),
        served,
    };
    let renewal = Renewal {
        renew_fraction: 0.5,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task =
        tokio::spawn(client.keep_renewed(leaf.clone(), true, renewal, sink, shutdown.clone()));
    let serial = tokio::time::timeout(Duration::from_secs(10), served_rx.recv())
        .await
        .expect("served within 10 s")
        .expect("a serial");
    assert_ne!(serial, leaf.serial_hex, "the renewed certificate");
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "three failures, then served"
    );
    shutdown.cancel();
    task.await.expect("renewal loop");
}
