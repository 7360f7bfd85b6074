//! Mutual TLS between sidecars: the transport sockets on both ends.
//!
//! Every proxy gets its certificate and the trust bundle from its own sidecar over SDS
//! (secrets [`IDENTITY_SECRET`] and [`TRUST_SECRET`] through the bootstrap cluster
//! [`SDS_CLUSTER`]), so these resources name the secrets but never hold key material, and
//! are identical for every proxy (shared per service, cacheable per group).
//!
//! Callers pick mTLS per endpoint: instances registered with `mtls: permissive|strict`
//! carry [`TLS_MATCH_KEY`] in their endpoint metadata and the service cluster's
//! transport-socket match sends them mTLS (checking the peer's SPIFFE id); everything else
//! (plaintext-only instances, apps without a sidecar) gets plaintext.

use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, TransportSocket, api_config_source,
    config_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher, TlsParameters,
    UpstreamTlsContext, common_tls_context, downstream_tls_context, subject_alt_name_matcher,
    tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;
use meshplane_model::ServiceName;
use meshplane_model::identity::{IDENTITY_SECRET, SDS_CLUSTER, TRUST_SECRET, spiffe_id};

use crate::proto::any;
use crate::protocol::UpstreamProtocol;

/// Endpoint metadata namespace Envoy matches transport sockets against.
pub(crate) const TLS_MATCH_NAMESPACE: &str = "envoy.transport_socket_match";
/// Key in [`TLS_MATCH_NAMESPACE`]; value [`TLS_MATCH_MTLS`] marks an instance that accepts mTLS.
pub const TLS_MATCH_KEY: &str = "tls";
/// Value of [`TLS_MATCH_KEY`] for instances that accept mTLS.
pub(crate) const TLS_MATCH_MTLS: &str = "mtls";
/// Transport socket name in the service cluster's `transport_socket_matches`.
pub(crate) const TLS_MATCH_NAME: &str = "mtls";

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
/// ALPN names of HTTP/2 and HTTP/1.1.
const ALPN_H2: &str = "h2";
const ALPN_HTTP11: &str = "http/1.1";

/// Whether a registered instance accepts mTLS (its `mtls` registry metadata).
pub(crate) fn accepts_mtls(meta: &std::collections::BTreeMap<String, String>) -> bool {
    matches!(
        meta.get(meshplane_model::identity::MTLS_META_KEY)
            .map(String::as_str),
        Some("permissive" | "strict")
    )
}

/// A secret fetched from the proxy's own sidecar.
fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: SDS_CLUSTER.to_owned(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

/// TLS 1.2 or newer on mesh connections.
fn tls_params() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
        ..Default::default()
    }
}

/// Our certificate plus the trust bundle, with `validation` (SAN checks) on top.
fn common(validation: CertificateValidationContext) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(tls_params()),
        tls_certificate_sds_secret_configs: vec![sds(IDENTITY_SECRET)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(validation),
                    validation_context_sds_secret_config: Some(sds(TRUST_SECRET)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// What a caller uses towards an instance of `service` that accepts mTLS: present our
/// certificate, and accept only a peer proving `service`'s SPIFFE id.
/// Over HTTP/2 it offers ALPN `h2` (a callee's ingress picks its codec from it); over
/// HTTP/1.1 it offers none, as before protocols, which every ingress reads as HTTP/1.1.
pub(crate) fn upstream_mtls(
    service: &ServiceName,
    trust_domain: &str,
    protocol: UpstreamProtocol,
) -> TransportSocket {
    let validation = CertificateValidationContext {
        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(spiffe_id(
                    trust_domain,
                    service,
                ))),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut common_tls_context = common(validation);
    if protocol == UpstreamProtocol::Http2 {
        common_tls_context.alpn_protocols = vec![ALPN_H2.to_owned()];
    }
    let tls = UpstreamTlsContext {
        common_tls_context: Some(common_tls_context),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}

/// What a proxyless gRPC client uses towards an instance of `service` that accepts mTLS
/// (gRFC A29): its certificate and the CA bundle from the certificate provider instance
/// `provider` its bootstrap defines (gRPC reads the files itself), and accept only a peer
/// proving `service`'s SPIFFE id.
///
/// Only what gRPC reads, since it NACKs a cluster with fields it cannot honour
/// (grpc-js rejects `tls_params`, for one): the two provider instances in the
/// `validation_context` form and the SAN check in `match_subject_alt_names`, the field gRPC
/// implements (Envoy reads it too, though it prefers `match_typed_subject_alt_names`, which
/// grpc-js ignores). No ALPN list: gRPC always offers `h2` itself, and the callee's ingress
/// picks HTTP/2 from it.
pub(crate) fn grpc_upstream_mtls(
    service: &ServiceName,
    trust_domain: &str,
    provider: &str,
) -> TransportSocket {
    let instance = || CertificateProviderPluginInstance {
        instance_name: provider.to_owned(),
        certificate_name: String::new(),
    };
    #[allow(deprecated)] // the SAN field gRPC reads (see above)
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(instance()),
        match_subject_alt_names: vec![StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(spiffe_id(
                trust_domain,
                service,
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(instance()),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}

/// The ingress side: present our certificate and require a client certificate from the
/// trust bundle. Which service may call what is decided per request by RBAC (on the SAN).
pub(crate) fn downstream_mtls() -> TransportSocket {
    // Both HTTP versions are offered: the listener's codec follows what the caller picks.
    let common_tls_context = CommonTlsContext {
        alpn_protocols: vec![ALPN_H2.to_owned(), ALPN_HTTP11.to_owned()],
        ..common(CertificateValidationContext::default())
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common_tls_context),
        require_client_certificate: Some(BoolValue { value: true }),
        // Resumed sessions would skip certificate validation after a rotation of the trust
        // bundle; mesh connections are long-lived, so full handshakes cost little.
        session_ticket_keys_type: Some(
            downstream_tls_context::SessionTicketKeysType::DisableStatelessSessionResumption(true),
        ),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}
