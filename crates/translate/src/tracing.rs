//! Tracing without library changes: both HTTP connection managers of every proxy trace with
//! Envoy's OpenTelemetry tracer, sending spans over OTLP/gRPC to the control plane's collector
//! (`--tracing-collector`) through one cluster, [`names::TRACING_COLLECTOR`].
//!
//! Each hop makes one span: the caller's egress a client span, the callee's ingress a server
//! span, named after the mesh service (`service.name`), linked by the W3C `traceparent`
//! header Envoy sends upstream. An app that copies `traceparent` (and `x-request-id`) from
//! its incoming request onto its outgoing calls gets one connected trace across services.
//! Sampling: the descriptor's `tracing.sampling`, else the control plane's; a request that
//! arrives sampled (`traceparent`) stays sampled, so a trace is never cut in the middle.
//! Spans are batched and sent in the background: an unreachable collector costs dropped
//! spans, never a request.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::envoy::r#type::v3::Percent;
use meshplane_model::Descriptor;

use crate::proto::{any, duration};
use crate::{MeshOptions, TracingOptions, cluster, names};

/// How long Envoy waits for the collector to take a batch of spans.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The tracing of an HTTP connection manager of `d`'s proxies; `None` without a collector.
pub(crate) fn hcm(
    d: &Descriptor,
    options: &MeshOptions,
) -> Option<http_connection_manager::Tracing> {
    let t = options.tracing.as_ref()?;
    let sampling = d.tracing.sampling.unwrap_or(t.sampling);
    let config = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: names::TRACING_COLLECTOR.to_owned(),
                    ..Default::default()
                },
            )),
            timeout: Some(duration(EXPORT_TIMEOUT)),
            ..Default::default()
        }),
        service_name: d.service.to_string(),
        ..Default::default()
    };
    Some(http_connection_manager::Tracing {
        random_sampling: Some(Percent {
            value: sampling.value(),
        }),
        provider: Some(tracing::Http {
            name: "envoy.tracers.opentelemetry".to_owned(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(any(&config))),
        }),
        ..Default::default()
    })
}

/// The collector's cluster (HTTP/2 for gRPC).
pub(crate) fn collector(t: &TracingOptions) -> Cluster {
    cluster::grpc_cluster(names::TRACING_COLLECTOR, &t.host, t.port)
}
