//! Access logs: one JSON object per line on Envoy's stdout, which the sidecar collects and
//! writes where the operator wants it (`meshplane sidecar --access-log stdout|PATH`), so the
//! translated configuration is the same for every proxy of a group.
//!
//! Every access log Meshplane configures is built by [`json_stdout`]: the request lines of
//! both listeners (the descriptor's `access_log`, here) and the RBAC decision lines (`rbac`).
//! Each line has a `meshplane` key saying which kind it is (`access`, `rbac`).
//!
//! Request lines (`docs/descriptor.md#access_log`, README "Access logs") have fixed keys;
//! later work adds keys (`trace_id` and `grpc_status` were added so) without renaming or
//! removing one, so
//! consumers that ignore unknown keys keep working. Values that can be long or come from the
//! caller are cut to a bound, and the path never carries its query string (queries carry
//! tokens and other secrets). Envoy escapes what it writes (quotes, control characters,
//! bytes that are not UTF-8), so a hostile request still gives one JSON object per line.

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, AndFilter, ComparisonFilter, GrpcStatusFilter, HeaderFilter,
    OrFilter, ResponseFlagFilter, StatusCodeFilter, access_log, access_log_filter,
    comparison_filter, grpc_status_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    RuntimeUInt32, SubstitutionFormatString, substitution_format_string,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Struct;
use meshplane_model::identity::spiffe_id;
use meshplane_model::{AccessLog as Mode, Descriptor};

use crate::proto::{merged_any, stable_map, string_value};

/// Runtime key of the lowest status counted as an error (default 500); an operator can set it
/// to 400 through Envoy's admin runtime layer to log 4xx answers too.
pub const ERROR_STATUS_RUNTIME_KEY: &str = "meshplane.access_log.error_status";

/// Which listener a request line is written by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A call to this service (the public listener): the caller is the certificate's identity.
    Ingress,
    /// A call by this service's app (the local egress proxy): the caller is this service.
    Egress,
}

/// The request log of one listener, per the descriptor's `access_log`; none when `off`.
pub(crate) fn requests(d: &Descriptor, direction: Direction, trust_domain: &str) -> Vec<AccessLog> {
    let filter = match d.access_log {
        Mode::Off => return Vec::new(),
        Mode::All => None,
        Mode::Errors => Some(errors()),
    };
    let (name, caller, destination) = match direction {
        // Only the certificate Envoy verified names a caller (null for plaintext), never a
        // header.
        Direction::Ingress => (
            "ingress",
            "%DOWNSTREAM_PEER_URI_SAN%".to_owned(),
            d.service.to_string(),
        ),
        Direction::Egress => (
            "egress",
            spiffe_id(trust_domain, &d.service),
            "%UPSTREAM_CLUSTER%".to_owned(),
        ),
    };
    let fields = [
        ("meshplane", "access".to_owned()),
        ("time", "%START_TIME%".to_owned()),
        ("direction", name.to_owned()),
        ("service", d.service.to_string()),
        ("caller", caller),
        ("destination", destination),
        ("authority", "%REQ(:AUTHORITY):256%".to_owned()),
        ("method", "%REQ(:METHOD)%".to_owned()),
        // `NQ`: without the query string; `PATH`: the request's own `:path`, not
        // `x-envoy-original-path`, which a caller could send.
        ("path", "%PATH(NQ:PATH):2048%".to_owned()),
        ("protocol", "%PROTOCOL%".to_owned()),
        ("status", "%RESPONSE_CODE%".to_owned()),
        ("response_flags", "%RESPONSE_FLAGS%".to_owned()),
        ("response_details", "%RESPONSE_CODE_DETAILS%".to_owned()),
        ("duration_ms", "%DURATION%".to_owned()),
        (
            "upstream_service_time_ms",
            "%COMMON_DURATION(US_TX_BEG:US_RX_BEG:ms)%".to_owned(),
        ),
        ("upstream_host", "%UPSTREAM_HOST%".to_owned()),
        (
            "upstream_failure",
            "%UPSTREAM_TRANSPORT_FAILURE_REASON%".to_owned(),
        ),
        ("bytes_received", "%BYTES_RECEIVED%".to_owned()),
        ("bytes_sent", "%BYTES_SENT%".to_owned()),
        ("request_id", "%REQ(X-REQUEST-ID):256%".to_owned()),
        // gRPC calls: the status in `grpc-status` (`PERMISSION_DENIED`; `null` otherwise).
        ("grpc_status", "%GRPC_STATUS(SNAKE_STRING)%".to_owned()),
        // The trace the request belongs to, when tracing is on (`--tracing-collector`).
        ("trace_id", "%TRACE_ID%".to_owned()),
    ];
    vec![json_stdout(&fields, filter)]
}

/// `errors`: a status of 500 or more, or any response flag Envoy set (no healthy upstream,
/// timeout, reset, no route, downstream protocol error...). An `incoming` denial sets no
/// flag: its 403 has the RBAC decision line instead.
fn errors() -> AccessLogFilter {
    let status = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
            StatusCodeFilter {
                comparison: Some(ComparisonFilter {
                    op: comparison_filter::Op::Ge as i32,
                    value: Some(RuntimeUInt32 {
                        default_value: 500,
                        runtime_key: ERROR_STATUS_RUNTIME_KEY.to_owned(),
                    }),
                }),
            },
        )),
    };
    // No flags listed: any flag matches.
    let flagged = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
            ResponseFlagFilter { flags: Vec::new() },
        )),
    };
    // A gRPC call fails with HTTP 200 and a `grpc-status`: any but OK is an error. Only for
    // gRPC requests: Envoy infers a status from the HTTP code of any other response.
    let grpc = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::AndFilter(AndFilter {
            filters: vec![
                AccessLogFilter {
                    filter_specifier: Some(access_log_filter::FilterSpecifier::HeaderFilter(
                        HeaderFilter {
                            header: Some(HeaderMatcher {
                                name: "content-type".to_owned(),
                                header_match_specifier: Some(
                                    header_matcher::HeaderMatchSpecifier::StringMatch(
                                        StringMatcher {
                                            match_pattern: Some(
                                                string_matcher::MatchPattern::Prefix(
                                                    "application/grpc".to_owned(),
                                                ),
                                            ),
                                            ..Default::default()
                                        },
                                    ),
                                ),
                                ..Default::default()
                            }),
                        },
                    )),
                },
                AccessLogFilter {
                    filter_specifier: Some(access_log_filter::FilterSpecifier::GrpcStatusFilter(
                        GrpcStatusFilter {
                            statuses: vec![grpc_status_filter::Status::Ok as i32],
                            exclude: true,
                        },
                    )),
                },
            ],
        })),
    };
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::OrFilter(OrFilter {
            filters: vec![status, flagged, grpc],
        })),
    }
}

/// A stdout access log writing one JSON object per line with `fields` (key, Envoy format
/// string), for the requests `filter` lets through (all without one).
///
/// Written as one part per key (see `merged_any`): a `Struct` of several fields encoded at
/// once iterates its map in a per-process order, which would change the listener's version.
pub(crate) fn json_stdout(fields: &[(&str, String)], filter: Option<AccessLogFilter>) -> AccessLog {
    let mut sorted: Vec<&(&str, String)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<StdoutAccessLog> = sorted
        .into_iter()
        .map(|(key, format)| {
            let mut one = stable_map();
            one.insert((*key).to_owned(), string_value(format));
            StdoutAccessLog {
                access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
                    SubstitutionFormatString {
                        format: Some(substitution_format_string::Format::JsonFormat(Struct {
                            fields: one,
                        })),
                        ..Default::default()
                    },
                )),
            }
        })
        .collect();
    AccessLog {
        name: "envoy.access_loggers.stdout".to_owned(),
        filter,
        config_type: Some(access_log::ConfigType::TypedConfig(merged_any(&parts))),
    }
}

#[cfg(test)]
mod tests;
