//! What a service's `incoming` section and `mtls` mode mean for one caller, without a
//! request at hand: whether every request it sends is let through, some, or none. The dry
//! run uses it to name the callers a proposed descriptor would start denying.
//!
//! The same rules as the ingress's RBAC filters (crates/translate): a request is let through
//! when some endpoint rule matching it lets its caller through (the rule names no clients,
//! names the caller directly or through a role, or logs unlisted clients), or when it matches
//! no rule and `unlisted_endpoints` is `log`. A caller is known only by its verified
//! certificate: a plaintext request (sent straight to the service, or through a sidecar to a
//! service with `mtls: disabled`) is anonymous and matches only rules open to anyone, and
//! `mtls: strict` refuses it outright.

use serde::Serialize;

use super::{Client, Descriptor, EndpointRule, Incoming, MtlsMode, PathMatch, Unlisted};
use crate::ServiceName;

/// How a caller's requests reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through the caller's sidecar: with the caller's certificate, unless the service has
    /// `mtls: disabled`.
    Mesh,
    /// Straight from the app to the service's registered address, in plaintext: anonymous.
    Direct,
}

/// What the service lets through of one caller's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "access", rename_all = "snake_case")]
pub enum Access {
    /// Every request (no `incoming` section, or every rule lets the caller through).
    Allowed,
    /// Requests to these endpoints only (as written: `GET,POST /api/*`, `/status/health`);
    /// everything else is denied.
    Some {
        /// The endpoint rules that let the caller through.
        endpoints: Vec<String>,
    },
    /// None: answered 403 (or refused at the handshake under `mtls: strict`).
    Denied {
        /// Why, for people.
        reason: String,
    },
}

impl Access {
    /// Whether `self` lets through less than `before` did.
    pub fn narrower_than(&self, before: &Access) -> bool {
        match (before, self) {
            (_, Access::Allowed) => false,
            (Access::Denied { .. }, _) => false,
            (Access::Allowed, _) => true,
            (Access::Some { .. }, Access::Denied { .. }) => true,
            (Access::Some { endpoints: was }, Access::Some { endpoints: now }) => {
                was.iter().any(|e| !now.contains(e))
            }
        }
    }
}

impl Descriptor {
    /// What this service would let through of `caller`'s requests arriving `via`.
    pub fn access(&self, caller: &ServiceName, via: Via) -> Access {
        let identified = match (via, self.mtls) {
            (Via::Direct, MtlsMode::Strict) => {
                return Access::Denied {
                    reason:
                        "mtls: strict refuses plaintext, and calls sent direct carry no certificate"
                            .to_owned(),
                };
            }
            (Via::Direct, _) | (Via::Mesh, MtlsMode::Disabled) => None,
            (Via::Mesh, _) => Some(caller),
        };
        match &self.incoming {
            None => Access::Allowed,
            Some(incoming) => incoming.access(identified),
        }
    }
}

impl Incoming {
    /// What these rules let through of requests from `caller` (`None`: anonymous).
    pub fn access(&self, caller: Option<&ServiceName>) -> Access {
        let open: Vec<&EndpointRule> = self
            .endpoints
            .iter()
            .filter(|rule| self.lets_through(rule, caller))
            .collect();
        let unlisted_open = self.unlisted_endpoints == Unlisted::Log;
        if open.len() == self.endpoints.len() && (unlisted_open || !self.endpoints.is_empty()) {
            return Access::Allowed;
        }
        if open.is_empty() && !unlisted_open {
            let who = match caller {
                Some(c) => format!("`{c}`"),
                None => "an anonymous (plaintext) caller".to_owned(),
            };
            return Access::Denied {
                reason: format!(
                    "no endpoint rule lets {who} through and unlisted endpoints are blocked"
                ),
            };
        }
        let mut endpoints: Vec<String> = open.iter().map(|rule| describe(rule)).collect();
        if unlisted_open {
            endpoints.push("unlisted endpoints (logged)".to_owned());
        }
        Access::Some { endpoints }
    }

    fn lets_through(&self, rule: &EndpointRule, caller: Option<&ServiceName>) -> bool {
        if rule.clients.is_empty() || rule.unlisted_clients == Unlisted::Log {
            return true;
        }
        let Some(caller) = caller else {
            return false;
        };
        rule.clients.iter().any(|client| match client {
            Client::Service(s) => s == caller,
            Client::Role(name) => self
                .roles
                .iter()
                .any(|role| &role.name == name && role.clients.contains(caller)),
        })
    }
}

/// An endpoint rule as people read it: `GET,POST /api/*`, `/status/health`, `~ ^/v[0-9]+/`.
fn describe(rule: &EndpointRule) -> String {
    let path = match &rule.path {
        PathMatch::Exact(p) => p.clone(),
        PathMatch::Prefix(p) => format!("{p}*"),
        PathMatch::Regex(r) => format!("~ {r}"),
    };
    match rule.methods.is_empty() {
        true => path,
        false => format!("{} {path}", rule.methods.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(extra: &str) -> Descriptor {
        Descriptor::from_yaml(&format!(
            "service: payments\nport: 8080\ningress: {{ port: 31001 }}\n{extra}"
        ))
        .expect("descriptor")
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).expect("name")
    }

    const RULES: &str = "incoming:\n  endpoints:\n    - { path_prefix: /api/, methods: [GET, POST], clients: [web, \"role:backoffice\"] }\n    - { path: /status/health }\n  roles:\n    - { name: backoffice, clients: [reports] }\n";

    #[test]
    fn without_incoming_everyone_is_let_through_unless_strict_refuses_plaintext() {
        let open = descriptor("");
        assert_eq!(open.access(&name("orders"), Via::Mesh), Access::Allowed);
        assert_eq!(open.access(&name("orders"), Via::Direct), Access::Allowed);
        let strict = descriptor("mtls: strict\n");
        assert_eq!(strict.access(&name("orders"), Via::Mesh), Access::Allowed);
        assert!(matches!(
            strict.access(&name("orders"), Via::Direct),
            Access::Denied { .. }
        ));
    }

    #[test]
    fn named_callers_directly_or_by_role_get_their_endpoints_others_only_open_ones() {
        let d = descriptor(RULES);
        assert_eq!(d.access(&name("web"), Via::Mesh), Access::Allowed);
        assert_eq!(d.access(&name("reports"), Via::Mesh), Access::Allowed);
        let some = Access::Some {
            endpoints: vec!["/status/health".to_owned()],
        };
        assert_eq!(d.access(&name("orders"), Via::Mesh), some);
        // Sent direct, even a named caller is anonymous.
        assert_eq!(d.access(&name("web"), Via::Direct), some);
    }

    #[test]
    fn a_caller_no_rule_names_is_denied_unless_something_logs() {
        let d =
            descriptor("incoming:\n  endpoints:\n    - { path_prefix: /api/, clients: [web] }\n");
        assert!(matches!(
            d.access(&name("orders"), Via::Mesh),
            Access::Denied { .. }
        ));
        let logs_unlisted = descriptor(
            "incoming:\n  unlisted_endpoints: log\n  endpoints:\n    - { path_prefix: /api/, clients: [web], unlisted_clients: block }\n",
        );
        assert_eq!(
            logs_unlisted.access(&name("orders"), Via::Mesh),
            Access::Some {
                endpoints: vec!["unlisted endpoints (logged)".to_owned()]
            }
        );
        let logs_clients = descriptor(
            "incoming:\n  endpoints:\n    - { path_prefix: /api/, clients: [web], unlisted_clients: log }\n",
        );
        assert_eq!(
            logs_clients.access(&name("orders"), Via::Mesh),
            Access::Allowed
        );
    }

    #[test]
    fn narrower_means_something_let_through_before_is_not_any_more() {
        let allowed = Access::Allowed;
        let api = Access::Some {
            endpoints: vec!["GET /api/*".to_owned()],
        };
        let health = Access::Some {
            endpoints: vec!["/status/health".to_owned()],
        };
        let denied = Access::Denied {
            reason: String::new(),
        };
        assert!(api.narrower_than(&allowed));
        assert!(denied.narrower_than(&api));
        assert!(health.narrower_than(&api));
        assert!(!allowed.narrower_than(&denied));
        assert!(!api.narrower_than(&api));
        assert!(!denied.narrower_than(&denied));
    }
}
