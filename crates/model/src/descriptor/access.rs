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
    /// Every request (no `incoming` section; or no rule shuts the caller out and the rest is
    /// let through, `unlisted_endpoints: log`; or a rule open to it matches every request).
    Allowed,
    /// Some requests: those to `endpoints` (the rules that let the caller through, as
    /// written: `GET,POST /api/*`), and to the paths no rule lists when `unlisted_endpoints`
    /// is `true` (`log`); those to `denied_endpoints` are answered 403.
    Some {
        endpoints: Vec<String>,
        denied_endpoints: Vec<String>,
        unlisted_endpoints: bool,
    },
    /// None but the health path: answered 403 (or refused at the handshake under
    /// `mtls: strict`).
    Denied {
        /// Why, for people.
        reason: String,
    },
}

impl Access {
    /// Whether `self` may let through less than `before` did. Conservative: it says so
    /// whenever some request `before` let through might be refused now.
    pub fn narrower_than(&self, before: &Access) -> bool {
        match (before, self) {
            (_, Access::Allowed) => false,
            (Access::Denied { .. }, _) => false,
            (Access::Allowed, _) => true,
            (Access::Some { .. }, Access::Denied { .. }) => true,
            (
                Access::Some {
                    endpoints: was_open,
                    denied_endpoints: was_denied,
                    unlisted_endpoints: was_unlisted,
                },
                Access::Some {
                    endpoints: open,
                    denied_endpoints: denied,
                    unlisted_endpoints: unlisted,
                },
            ) => {
                // What was let through as unlisted may now be refused, by the unlisted
                // rule tightened or by a new rule shutting the caller out.
                let unlisted_lost =
                    *was_unlisted && (!*unlisted || denied.iter().any(|d| !was_denied.contains(d)));
                // A rule that let it through gone, its requests not let through otherwise.
                let rule_lost = was_open
                    .iter()
                    .any(|e| !open.contains(e) && (!*unlisted || denied.contains(e)));
                unlisted_lost || rule_lost
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
                    reason: "mtls: strict refuses plaintext, and calls sent direct carry no certificate (the health path excepted)".to_owned(),
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
    /// What these rules let through of requests from `caller` (`None`: anonymous), as the
    /// ingress's enforcing RBAC filter decides: a request is let through when a rule matching
    /// it lets the caller through, or when it matches no rule and unlisted endpoints are
    /// `log`; a request matching only rules that shut the caller out is refused.
    pub fn access(&self, caller: Option<&ServiceName>) -> Access {
        let (open, closed): (Vec<&EndpointRule>, Vec<&EndpointRule>) = self
            .endpoints
            .iter()
            .partition(|rule| self.lets_through(rule, caller));
        let unlisted_open = self.unlisted_endpoints == Unlisted::Log;
        if open.iter().any(|rule| matches_everything(rule)) || (closed.is_empty() && unlisted_open)
        {
            return Access::Allowed;
        }
        if open.is_empty() && !unlisted_open {
            let who = match caller {
                Some(c) => format!("`{c}`"),
                None => "an anonymous (plaintext) caller".to_owned(),
            };
            return Access::Denied {
                reason: format!(
                    "no endpoint rule lets {who} through and unlisted endpoints are blocked (the health path excepted)"
                ),
            };
        }
        Access::Some {
            endpoints: open.iter().map(|rule| describe(rule)).collect(),
            denied_endpoints: closed.iter().map(|rule| describe(rule)).collect(),
            unlisted_endpoints: unlisted_open,
        }
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

/// A rule every request matches: any method under `/`.
fn matches_everything(rule: &EndpointRule) -> bool {
    rule.methods.is_empty() && rule.path == PathMatch::Prefix("/".to_owned())
}

/// An endpoint rule as people read it: `GET,POST /api/*`, `/status/health`, `~ ^/v[0-9]+/`
/// (methods sorted, so the same rule always reads the same).
fn describe(rule: &EndpointRule) -> String {
    let path = match &rule.path {
        PathMatch::Exact(p) => p.clone(),
        PathMatch::Prefix(p) => format!("{p}*"),
        PathMatch::Regex(r) => format!("~ {r}"),
    };
    let mut methods = rule.methods.clone();
    methods.sort();
    match methods.is_empty() {
        true => path,
        false => format!("{} {path}", methods.join(",")),
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

    fn some(open: &[&str], denied: &[&str], unlisted: bool) -> Access {
        Access::Some {
            endpoints: open.iter().map(|e| e.to_string()).collect(),
            denied_endpoints: denied.iter().map(|e| e.to_string()).collect(),
            unlisted_endpoints: unlisted,
        }
    }

    const RULES: &str = "incoming:\n  endpoints:\n    - { path_prefix: /api/, methods: [POST, GET], clients: [web, \"role:backoffice\"] }\n    - { path: /status/health }\n  roles:\n    - { name: backoffice, clients: [reports] }\n";

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
        // Unlisted endpoints blocked: even `web` reaches only what the rules list.
        let web = some(&["GET,POST /api/*", "/status/health"], &[], false);
        assert_eq!(d.access(&name("web"), Via::Mesh), web);
        assert_eq!(d.access(&name("reports"), Via::Mesh), web);
        let others = some(&["/status/health"], &["GET,POST /api/*"], false);
        assert_eq!(d.access(&name("orders"), Via::Mesh), others);
        // Sent direct, even a named caller is anonymous.
        assert_eq!(d.access(&name("web"), Via::Direct), others);
    }

    #[test]
    fn a_caller_no_rule_names_is_denied_unless_something_logs_or_opens_everything() {
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
            some(&[], &["/api/*"], true)
        );
        assert_eq!(
            logs_unlisted.access(&name("web"), Via::Mesh),
            Access::Allowed
        );
        let logs_clients = descriptor(
            "incoming:\n  endpoints:\n    - { path_prefix: /api/, clients: [web], unlisted_clients: log }\n",
        );
        assert_eq!(
            logs_clients.access(&name("orders"), Via::Mesh),
            some(&["/api/*"], &[], false)
        );
        let everything = descriptor(
            "incoming:\n  endpoints:\n    - { path_prefix: /, clients: [web] }\n    - { path_prefix: /admin/, clients: [ops] }\n",
        );
        assert_eq!(everything.access(&name("web"), Via::Mesh), Access::Allowed);
    }

    #[test]
    fn narrower_means_something_let_through_before_may_not_be_any_more() {
        let allowed = Access::Allowed;
        let api = some(&["GET /api/*"], &[], false);
        let health = some(&["/status/health"], &["GET /api/*"], false);
        let denied = Access::Denied {
            reason: String::new(),
        };
        assert!(api.narrower_than(&allowed));
        assert!(denied.narrower_than(&api));
        assert!(health.narrower_than(&api));
        assert!(!allowed.narrower_than(&denied));
        assert!(!api.narrower_than(&api));
        assert!(!denied.narrower_than(&denied));
        // Unlisted endpoints logged: a new rule shutting the caller out carves into them...
        let unlisted = some(&[], &[], true);
        let carved = some(&[], &["/admin/*"], true);
        assert!(carved.narrower_than(&unlisted));
        assert!(!unlisted.narrower_than(&carved));
        // ...and a rule that let it through, removed, leaves its paths unlisted: still open.
        assert!(!unlisted.narrower_than(&some(&["/api/*"], &[], true)));
        assert!(some(&[], &[], false).narrower_than(&unlisted));
    }
}
