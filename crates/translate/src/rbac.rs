//! Incoming permissions (`incoming` in the descriptor) as Envoy RBAC filters on the ingress
//! listener.
//!
//! Callers are identified only by the URI SAN of the client certificate Envoy verified
//! (`authenticated.principal_name`); no header grants anything, and plaintext callers
//! (permissive mode) match only rules open to anyone.
//!
//! Two filters, so every request gets exactly one decision:
//! - `meshplane.rbac.enforce` (ALLOW rules, enforced): what `block` forbids is answered with
//!   403 (`rbac_access_denied_matched_policy[none]`); a `log` rule lets the request through.
//! - `meshplane.rbac.audit` (shadow rules only, present when something is in `log` mode):
//!   the same rules as if everything were `block`. Denied requests never reach it, so its
//!   `shadow_denied` counts exactly the requests let through by a `log` rule.
//!
//! Each denied or logged request writes one JSON access-log line
//! (`{"meshplane":"rbac","decision":"denied"|"logged","caller",...}`) and increments
//! `http.ingress.rbac.enforce_.denied` or `http.ingress.rbac.audit_.shadow_denied`.
//! Rules are a union: a request is allowed when any rule matching it allows its caller.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, MetadataFilter, access_log_filter,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher, metadata_matcher,
    path_matcher, string_matcher, value_matcher,
};
use meshplane_model::descriptor::{Client, EndpointRule, Incoming, PathMatch, Unlisted};
use meshplane_model::identity::spiffe_id;
use meshplane_model::{Descriptor, ServiceName};

use crate::access_log;
use crate::proto::{merged_any, stable_map};

/// Dynamic-metadata namespace both RBAC filters write to.
const RBAC_NAMESPACE: &str = "envoy.filters.http.rbac";
/// Stat (and metadata key) prefix of the enforcing filter.
pub const ENFORCE_PREFIX: &str = "enforce_";
/// Stat (and metadata key) prefix of the auditing (shadow) filter.
pub const AUDIT_PREFIX: &str = "audit_";

/// Whether one rule lets unlisted callers through (`log`) or not (`block`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// What Envoy enforces: `log` lets through.
    Enforce,
    /// Everything treated as `block`: what `log` mode reports.
    Audit,
}

/// The ingress RBAC filters for `d`, in order; none when it has no `incoming` section.
pub(crate) fn filters(d: &Descriptor, trust_domain: &str) -> Vec<HttpFilter> {
    let Some(incoming) = &d.incoming else {
        return Vec::new();
    };
    let mut out = vec![rbac_filter(
        Mode::Enforce,
        rules(d, incoming, trust_domain, Mode::Enforce),
    )];
    if has_log_mode(incoming) {
        out.push(rbac_filter(
            Mode::Audit,
            rules(d, incoming, trust_domain, Mode::Audit),
        ));
    }
    out
}

/// One RBAC filter: enforced `rules` or, for the audit filter, `shadow_rules`. Written as a
/// head part plus one part per policy (see `merged_any`), so its bytes are the same in every
/// process.
fn rbac_filter(mode: Mode, policies: BTreeMap<String, Policy>) -> HttpFilter {
    let wrap = |rules: Rbac| match mode {
        Mode::Enforce => RbacFilter {
            rules: Some(rules),
            ..Default::default()
        },
        Mode::Audit => RbacFilter {
            shadow_rules: Some(rules),
            ..Default::default()
        },
    };
    let mut head = wrap(Rbac {
        action: rbac::Action::Allow as i32,
        ..Default::default()
    });
    let name = match mode {
        Mode::Enforce => {
            head.rules_stat_prefix = ENFORCE_PREFIX.to_owned();
            "meshplane.rbac.enforce"
        }
        Mode::Audit => {
            head.shadow_rules_stat_prefix = AUDIT_PREFIX.to_owned();
            "meshplane.rbac.audit"
        }
    };
    let parts: Vec<RbacFilter> = std::iter::once(head)
        .chain(
            policies
                .into_iter()
                .map(|(name, p)| wrap(one_policy(name, p))),
        )
        .collect();
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(merged_any(&parts))),
        ..Default::default()
    }
}

/// One JSON line per denied (and per logged) request, on Envoy's stdout.
pub(crate) fn access_logs(d: &Descriptor) -> Vec<AccessLog> {
    let Some(incoming) = &d.incoming else {
        return Vec::new();
    };
    let mut logs = vec![decision_log(
        d,
        "denied",
        &format!("{ENFORCE_PREFIX}enforced_engine_result"),
        &format!("{ENFORCE_PREFIX}enforced_effective_policy_id"),
    )];
    if has_log_mode(incoming) {
        logs.push(decision_log(
            d,
            "logged",
            &format!("{AUDIT_PREFIX}shadow_engine_result"),
            &format!("{ENFORCE_PREFIX}enforced_effective_policy_id"),
        ));
    }
    logs
}

fn has_log_mode(incoming: &Incoming) -> bool {
    incoming.unlisted_endpoints == Unlisted::Log
        || incoming
            .endpoints
            .iter()
            .any(|e| !e.clients.is_empty() && e.unlisted_clients == Unlisted::Log)
}

/// An `Rbac` holding one policy (merged with the others on the wire, see `merged_any`).
fn one_policy(name: String, policy: Policy) -> Rbac {
    let mut policies = stable_map();
    policies.insert(name, policy);
    Rbac {
        policies,
        ..Default::default()
    }
}

/// The ALLOW policies by name (sorted).
fn rules(
    d: &Descriptor,
    incoming: &Incoming,
    trust_domain: &str,
    mode: Mode,
) -> BTreeMap<String, Policy> {
    let mut policies = BTreeMap::new();
    // The health path is always open: the registry's check calls it.
    policies.insert(
        "health".to_owned(),
        policy(
            path(&PathMatch::Exact(d.ingress.health_path.clone())),
            vec![any_principal()],
        ),
    );
    for (i, rule) in incoming.endpoints.iter().enumerate() {
        let principals = if rule.clients.is_empty()
            || (mode == Mode::Enforce && rule.unlisted_clients == Unlisted::Log)
        {
            vec![any_principal()]
        } else {
            clients(rule, incoming, trust_domain)
        };
        policies.insert(
            format!("endpoints[{i}]"),
            policy(endpoint(rule), principals),
        );
    }
    if mode == Mode::Enforce && incoming.unlisted_endpoints == Unlisted::Log {
        let mut listed: Vec<Permission> = incoming.endpoints.iter().map(endpoint).collect();
        listed.push(path(&PathMatch::Exact(d.ingress.health_path.clone())));
        let unlisted = Permission {
            rule: Some(permission::Rule::NotRule(Box::new(or(listed)))),
        };
        policies.insert(
            "unlisted_endpoints".to_owned(),
            policy(unlisted, vec![any_principal()]),
        );
    }
    policies
}

fn policy(permission: Permission, principals: Vec<Principal>) -> Policy {
    Policy {
        permissions: vec![permission],
        principals,
        ..Default::default()
    }
}

/// Services allowed by a rule, roles expanded, as certificate SAN matchers.
fn clients(rule: &EndpointRule, incoming: &Incoming, trust_domain: &str) -> Vec<Principal> {
    let mut names: BTreeSet<&ServiceName> = BTreeSet::new();
    for client in &rule.clients {
        match client {
            Client::Service(s) => {
                names.insert(s);
            }
            Client::Role(role) => {
                for r in incoming.roles.iter().filter(|r| &r.name == role) {
                    names.extend(r.clients.iter());
                }
            }
        }
    }
    names
        .into_iter()
        .map(|s| Principal {
            identifier: Some(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(exact(&spiffe_id(trust_domain, s))),
                },
            )),
        })
        .collect()
}

fn any_principal() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Any(true)),
    }
}

/// Path and methods of one rule.
fn endpoint(rule: &EndpointRule) -> Permission {
    let mut and = vec![path(&rule.path)];
    if !rule.methods.is_empty() {
        and.push(or(rule
            .methods
            .iter()
            .map(|m| Permission {
                rule: Some(permission::Rule::Header(HeaderMatcher {
                    name: ":method".to_owned(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::StringMatch(exact(m)),
                    ),
                    ..Default::default()
                })),
            })
            .collect()));
    }
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules: and })),
    }
}

/// The path without its query string.
fn path(p: &PathMatch) -> Permission {
    let matcher = match p {
        PathMatch::Exact(s) => exact(s),
        PathMatch::Prefix(s) => StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Prefix(s.clone())),
            ..Default::default()
        },
        PathMatch::Regex(r) => StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                regex: r.clone(),
                ..Default::default()
            })),
            ..Default::default()
        },
    };
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(matcher)),
        })),
    }
}

fn or(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_owned())),
        ..Default::default()
    }
}

/// A stdout access log for requests whose RBAC metadata `result_key` is `denied`.
fn decision_log(d: &Descriptor, decision: &str, result_key: &str, policy_key: &str) -> AccessLog {
    let filter = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::MetadataFilter(
            MetadataFilter {
                matcher: Some(MetadataMatcher {
                    filter: RBAC_NAMESPACE.to_owned(),
                    path: vec![metadata_matcher::PathSegment {
                        segment: Some(metadata_matcher::path_segment::Segment::Key(
                            result_key.to_owned(),
                        )),
                    }],
                    value: Some(ValueMatcher {
                        match_pattern: Some(value_matcher::MatchPattern::StringMatch(exact(
                            "denied",
                        ))),
                    }),
                    invert: false,
                }),
                match_if_key_not_found: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
            },
        )),
    };
    let fields = [
        ("meshplane", "rbac".to_owned()),
        ("service", d.service.to_string()),
        ("decision", decision.to_owned()),
        ("caller", "%DOWNSTREAM_PEER_URI_SAN%".to_owned()),
        ("method", "%REQ(:METHOD)%".to_owned()),
        // Without the query string, which can carry secrets (see `access_log`).
        ("path", "%PATH(NQ:PATH):2048%".to_owned()),
        ("request_id", "%REQ(X-REQUEST-ID):256%".to_owned()),
        (
            "policy",
            format!("%DYNAMIC_METADATA({RBAC_NAMESPACE}:{policy_key})%"),
        ),
        ("peer", "%DOWNSTREAM_REMOTE_ADDRESS%".to_owned()),
        ("status", "%RESPONSE_CODE%".to_owned()),
        ("time", "%START_TIME%".to_owned()),
    ];
    access_log::json_stdout(&fields, Some(filter))
}
