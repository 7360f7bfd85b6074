//! An authenticated xDS port: with client certificates required, a proxy gets configuration
//! only for the service its certificate proves (`spiffe://<trust-domain>/service/<name>`).

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use meshplane_runtime::ControlPlaneConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, sans: Vec<SanType>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = sans;
    let cert = params.signed_by(&key, &ca.issuer).expect("cert");
    (cert.pem(), key.serialize_pem())
}

fn spiffe(service: &str) -> SanType {
    SanType::URI(
        format!("spiffe://meshplane.local/service/{service}")
            .try_into()
            .expect("uri"),
    )
}

fn node(service: &str) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let n = |v: f64| Value {
        kind: Some(Kind::NumberValue(v)),
    };
    let port = |p: f64| Value {
        kind: Some(Kind::StructValue(Struct {
            fields: [("port".to_string(), n(p))].into_iter().collect(),
        })),
    };
    let metadata = Struct {
        fields: [
            ("service".to_string(), s(service)),
            ("port".to_string(), n(8080.0)),
            ("ingress".to_string(), port(31001.0)),
        ]
        .into_iter()
        .collect(),
    };
    Node {
        id: format!("{service}-1"),
        cluster: service.into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

async fn ask(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
    service: &str,
) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(DiscoveryRequest {
        node: Some(node(service)),
        type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(tonic::Status::cancelled("ended")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_gets_configuration_only_for_the_service_its_certificate_proves() {
    let dir = tempfile::tempdir().expect("tmp");
    let mesh_ca = ca("mesh CA");
    let (server_cert, server_key) = leaf(
        &mesh_ca,
        vec![SanType::DnsName("localhost".try_into().expect("dns"))],
    );
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let config = ControlPlaneConfig {
        xds_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        registry_addr: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("data"),
        xds_tls_cert: Some(write("server.pem", &server_cert)),
        xds_tls_key: Some(write("server-key.pem", &server_key)),
        xds_client_ca: Some(write("ca.pem", &mesh_ca.pem)),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let cp = meshplane_runtime::control_plane::start(config, shutdown.clone())
        .await
        .expect("starts");
    let tls_with = |cert: Option<(String, String)>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&mesh_ca.pem))
            .domain_name("localhost");
        if let Some((c, k)) = cert {
            tls = tls.identity(Identity::from_pem(c, k));
        }
        tls
    };
    let orders_cert = leaf(&mesh_ca, vec![spiffe("orders")]);

    // The certificate proves `orders`: configuration for orders.
    ask(cp.xds_addr, tls_with(Some(orders_cert.clone())), "orders")
        .await
        .expect("served");
    // The same certificate claiming `payments` in its metadata: refused.
    let status = ask(cp.xds_addr, tls_with(Some(orders_cert)), "payments")
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("spiffe://meshplane.local/service/payments"),
        "{}",
        status.message()
    );
    // No client certificate, or one from another CA: the handshake fails.
    assert!(ask(cp.xds_addr, tls_with(None), "orders").await.is_err());
    let rogue = ca("rogue CA");
    let rogue_cert = leaf(&rogue, vec![spiffe("orders")]);
    let err = ask(cp.xds_addr, tls_with(Some(rogue_cert)), "orders")
        .await
        .expect_err("untrusted");
    assert_ne!(err.code(), tonic::Code::Ok);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_with_a_host_certificate_is_served_over_authenticated_xds() {
    let pki = tempfile::tempdir().expect("tmp");
    let mesh_ca = ca("mesh CA");
    let (server_cert, server_key) = leaf(
        &mesh_ca,
        vec![
            SanType::DnsName("localhost".try_into().expect("dns")),
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        ],
    );
    let (orders_cert, orders_key) = leaf(&mesh_ca, vec![spiffe("orders")]);
    let write = |name: &str, text: &str| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let (sc, sk, ca_file) = (
        write("s.pem", &server_cert),
        write("sk.pem", &server_key),
        write("ca.pem", &mesh_ca.pem),
    );
    let (oc, ok) = (
        write("orders.pem", &orders_cert),
        write("orders-key.pem", &orders_key),
    );
    let mut mesh = support::Mesh::start(move |c, _| {
        c.xds_tls_cert = Some(sc);
        c.xds_tls_key = Some(sk);
        c.xds_client_ca = Some(ca_file);
    })
    .await;
    let d = support::caller(
        "orders",
        support::free_port(),
        support::free_port(),
        support::free_port(),
        "  - service: payments\n",
    );
    let (oc, ok, ca) = (
        oc.display().to_string(),
        ok.display().to_string(),
        pki.path().join("ca.pem").display().to_string(),
    );
    // Envoy presents the host certificate proving `orders` and gets both listeners.
    mesh.sidecar_with(
        "orders-1",
        &d,
        2,
        &[
            "--cert-file",
            &oc,
            "--key-file",
            &ok,
            "--ca-file",
            &ca,
            "--xds-tls",
        ],
    )
    .await;
    assert_eq!(mesh.cp.status.proxies().len(), 1);
}

/// Serial numbers (lowercase hex, no leading zeros) of the certificates Envoy presents, in
/// every TLS context it has (listeners, mesh clusters and the xDS cluster).
async fn presented_serials(http: &reqwest::Client, admin_port: u16) -> Vec<String> {
    let Ok(response) = http
        .get(format!("http://127.0.0.1:{admin_port}/certs"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let certs: serde_json::Value = response.json().await.unwrap_or_default();
    let mut serials: Vec<String> = certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|context| context["cert_chain"].as_array().into_iter().flatten())
        .filter_map(|cert| cert["serial_number"].as_str())
        .map(|serial| serial.trim_start_matches('0').to_ascii_lowercase())
        .collect();
    serials.sort();
    serials.dedup();
    serials
}

/// `text` without ANSI colour sequences (the sidecar's log colours field names).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the sequence (`ESC [ … m`).
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The serials of the certificates the sidecar has served, in order (first, renewals).
fn served_serials(log: &str) -> Vec<String> {
    without_colours(log)
        .lines()
        .filter(|l| {
            l.contains("serving the service identity over SDS")
                || l.contains("renewed the service certificate")
        })
        .filter_map(|l| l.split("serial=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|serial| serial.trim_start_matches('0').to_ascii_lowercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_issued_identity_authenticates_xds_and_renews_under_the_live_stream() {
    let pki = tempfile::tempdir().expect("tmp");
    // The control plane's own server certificate comes from the operator's PKI; proxies
    // present certificates from the generated built-in CA.
    let server_pki = support::TestCa::new(pki.path(), "control-plane");
    let (server_cert, server_key) = server_pki.issue_server("xds");
    let mut mesh = support::Mesh::start(move |c, _| {
        c.xds_tls_cert = Some(server_cert.into());
        c.xds_tls_key = Some(server_key.into());
        // The generated CA's certificate: it exists before the xDS port reads it.
        c.xds_client_ca = Some(c.data_dir.join("ca").join("ca.crt"));
        c.cert_ttl = "10s".into();
    })
    .await;
    let (d, egress) = support::orders_to_payments();
    let cp_ca = server_pki.ca_file().to_owned();
    mesh.sidecar_with(
        "orders-1",
        &d,
        2,
        &["--xds-tls", "--control-plane-ca-file", &cp_ca],
    )
    .await;
    let admin = mesh.sidecar_admin("orders-1");
    let stream = |mesh: &support::Mesh| {
        let proxies = mesh.cp.status.proxies();
        assert_eq!(proxies.len(), 1, "{proxies:?}");
        assert_eq!(proxies[0].stream.service, "orders");
        proxies[0].stream.stream_id
    };
    let stream_id = stream(&mesh);
    let xds_connections = "cluster.meshplane_xds.upstream_cx_total";
    let connections = support::envoy_stat(&mesh.http, admin, xds_connections)
        .await
        .expect("stat");

    // Certificates live 10 s and are renewed at half their remaining life: wait for two
    // renewals, and for Envoy to present only the newest one (the xDS cluster included).
    let renewed = support::poll(|| async {
        let served = served_serials(&mesh.sidecar_log("orders-1"));
        served.len() >= 3
            && presented_serials(&mesh.http, admin).await == [served[served.len() - 1].clone()]
    })
    .await;
    assert!(
        renewed,
        "two renewals, the newest presented everywhere: {:?} presented {:?}\n{}",
        served_serials(&mesh.sidecar_log("orders-1")),
        presented_serials(&mesh.http, admin).await,
        mesh.sidecar_log("orders-1")
    );

    // Configuration keeps flowing on the same stream: a new instance reaches Envoy.
    let upstream = support::upstream("payments-1").await;
    mesh.register("payments-1", "payments", upstream, &[], 1)
        .await;
    let reached = support::poll(|| async {
        support::via_egress(&mesh.http, egress, "payments", None).await
            == (200, "payments-1".to_owned())
    })
    .await;
    assert!(reached, "{}", mesh.sidecar_log("orders-1"));
    assert_eq!(stream(&mesh), stream_id, "the xDS stream was not replaced");
    assert_eq!(
        support::envoy_stat(&mesh.http, admin, xds_connections).await,
        Some(connections),
        "Envoy opened no new xDS connection"
    );
    assert_eq!(
        support::envoy_stat(&mesh.http, admin, "control_plane.connected_state").await,
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_rooted_ca_checks_the_control_plane_with_the_trust_bundle() {
    let pki = tempfile::tempdir().expect("tmp");
    // One operator CA: the built-in CA signs with it, and it signed the xDS certificate.
    let operator = support::TestCa::new(pki.path(), "operator");
    let (server_cert, server_key) = operator.issue_server("xds");
    let (ca_cert, ca_key) = (
        operator.ca_file().to_owned(),
        operator.key_file().to_owned(),
    );
    let mut mesh = support::Mesh::start(move |c, _| {
        c.xds_tls_cert = Some(server_cert.into());
        c.xds_tls_key = Some(server_key.into());
        c.xds_client_ca = Some(ca_cert.clone().into());
        c.ca_cert = Some(ca_cert.into());
        c.ca_key = Some(ca_key.into());
    })
    .await;
    let d = support::caller(
        "orders",
        support::free_port(),
        support::free_port(),
        support::free_port(),
        "  - service: payments\n",
    );
    // No --control-plane-ca-file: the control plane is checked against `meshplane_trust`.
    mesh.sidecar_with("orders-1", &d, 2, &["--xds-tls"]).await;
    let proxies = mesh.cp.status.proxies();
    assert_eq!(proxies.len(), 1);
    assert_eq!(proxies[0].stream.service, "orders");
}
