//! Property tests for the descriptor's `incoming` section: random sections, valid and not,
//! parse exactly when an independent oracle says they are valid; valid ones keep every
//! rule as written; invalid ones are reported on a field under `incoming`, never a panic.

use meshplane_model::descriptor::{Client, PathMatch, Unlisted};
use meshplane_model::{Descriptor, DescriptorError, ServiceName};
use proptest::prelude::*;

const ROLE_NAMES: &[&str] = &["backoffice", "ops", "ro:le", ""];
const SERVICES: &[&str] = &["web", "admin-ui", "reports", "Bad Name", ""];
const CLIENTS: &[&str] = &[
    "web",
    "reports",
    "role:backoffice",
    "role:ops",
    "role:nope",
    "bad name",
];
const PATHS: &[&str] = &[
    "/api/",
    "/status/health",
    "api",
    "",
    "/x/[a-z]+",
    "(",
    "/a(b",
];
const METHODS: &[&str] = &["GET", "post", "DELETE", "FETCH"];
const UNLISTED: &[&str] = &["block", "log", "sometimes"];

#[derive(Debug, Clone)]
struct Role {
    name: &'static str,
    clients: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// 0 path, 1 path_prefix, 2 path_regex, 3 none, 4 path and path_prefix.
    kind: u8,
    path: &'static str,
    methods: Vec<&'static str>,
    clients: Vec<&'static str>,
    unlisted_clients: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Incoming {
    unlisted_endpoints: &'static str,
    endpoints: Vec<Endpoint>,
    roles: Vec<Role>,
}

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(list)
}

fn incoming() -> impl Strategy<Value = Incoming> {
    let role = (
        pick(ROLE_NAMES),
        proptest::collection::vec(pick(SERVICES), 0..3),
    )
        .prop_map(|(name, clients)| Role { name, clients });
    let endpoint = (
        0u8..5,
        pick(PATHS),
        proptest::collection::vec(pick(METHODS), 0..3),
        proptest::collection::vec(pick(CLIENTS), 0..3),
        proptest::option::of(pick(UNLISTED)),
    )
        .prop_map(
            |(kind, path, methods, clients, unlisted_clients)| Endpoint {
                kind,
                path,
                methods,
                clients,
                unlisted_clients,
            },
        );
    (
        pick(UNLISTED),
        proptest::collection::vec(endpoint, 0..4),
        proptest::collection::vec(role, 0..3),
    )
        .prop_map(|(unlisted_endpoints, endpoints, roles)| Incoming {
            unlisted_endpoints,
            endpoints,
            roles,
        })
}

fn yaml(i: &Incoming) -> String {
    let mut out = format!(
        "service: orders\nport: 8080\ningress: {{ port: 31001 }}\nincoming:\n  unlisted_endpoints: {:?}\n  endpoints:\n",
        i.unlisted_endpoints
    );
    if i.endpoints.is_empty() {
        out = out.replace("  endpoints:\n", "  endpoints: []\n");
    }
    for e in &i.endpoints {
        let path = match e.kind {
            0 => format!("path: {:?}", e.path),
            1 => format!("path_prefix: {:?}", e.path),
            2 => format!("path_regex: {:?}", e.path),
            3 => String::new(),
            _ => format!("path: {:?}, path_prefix: {:?}", e.path, e.path),
        };
        let mut fields = vec![];
        if !path.is_empty() {
            fields.push(path);
        }
        fields.push(format!("methods: {:?}", e.methods));
        fields.push(format!("clients: {:?}", e.clients));
        if let Some(u) = e.unlisted_clients {
            fields.push(format!("unlisted_clients: {u:?}"));
        }
        out.push_str(&format!("    - {{ {} }}\n", fields.join(", ")));
    }
    out.push_str("  roles:\n");
    if i.roles.is_empty() {
        out = out.replace("  roles:\n", "  roles: []\n");
    }
    for r in &i.roles {
        out.push_str(&format!(
            "    - {{ name: {:?}, clients: {:?} }}\n",
            r.name, r.clients
        ));
    }
    out
}

/// Independent statement of the rules in docs/descriptor.md (`incoming`).
fn oracle_valid(i: &Incoming) -> bool {
    let unlisted_ok = |u: &str| matches!(u, "block" | "log");
    let service_ok = |s: &str| ServiceName::new(s).is_ok();
    let mut names = std::collections::BTreeSet::new();
    for r in &i.roles {
        if r.name.is_empty() || r.name.contains(':') || !names.insert(r.name) {
            return false;
        }
        if !r.clients.iter().all(|c| service_ok(c)) {
            return false;
        }
    }
    if !unlisted_ok(i.unlisted_endpoints) {
        return false;
    }
    i.endpoints.iter().all(|e| {
        let path_ok = match e.kind {
            0 | 1 => e.path.starts_with('/'),
            2 => !e.path.is_empty() && !e.path.contains('('),
            _ => false,
        };
        let methods_ok = e
            .methods
            .iter()
            .all(|m| ["GET", "POST", "DELETE"].contains(&m.to_ascii_uppercase().as_str()));
        let clients_ok = e.clients.iter().all(|c| match c.strip_prefix("role:") {
            Some(role) => names.contains(role),
            None => service_ok(c),
        });
        path_ok && methods_ok && clients_ok && e.unlisted_clients.is_none_or(unlisted_ok)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn incoming_sections_parse_exactly_when_valid(i in incoming()) {
        let text = yaml(&i);
        let parsed = Descriptor::from_yaml(&text);
        prop_assert_eq!(parsed.is_ok(), oracle_valid(&i), "{}\n{:?}", text, parsed);
        match parsed {
            Err(DescriptorError::Field { field, message }) => {
                prop_assert!(field.starts_with("incoming"), "{field}: {message}");
                prop_assert!(!message.is_empty());
            }
            Err(other) => prop_assert!(false, "not a field error: {other}\n{text}"),
            Ok(d) => {
                let inc = d.incoming.clone().expect("incoming kept");
                prop_assert_eq!(inc.endpoints.len(), i.endpoints.len());
                let default = if i.unlisted_endpoints == "log" { Unlisted::Log } else { Unlisted::Block };
                prop_assert_eq!(inc.unlisted_endpoints, default);
                for (got, want) in inc.endpoints.iter().zip(&i.endpoints) {
                    let path = match &got.path {
                        PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Regex(p) => p,
                    };
                    prop_assert_eq!(path.as_str(), want.path);
                    let methods: Vec<String> = want.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
                    prop_assert_eq!(&got.methods, &methods);
                    prop_assert_eq!(got.clients.len(), want.clients.len());
                    let unlisted = match want.unlisted_clients {
                        Some("log") => Unlisted::Log,
                        Some(_) => Unlisted::Block,
                        None => default,
                    };
                    prop_assert_eq!(got.unlisted_clients, unlisted);
                    for c in &got.clients {
                        if let Client::Role(r) = c {
                            prop_assert!(inc.roles.iter().any(|role| &role.name == r));
                        }
                    }
                }
                // Every service that may call, directly or through a role, is a named client.
                let named = d.named_clients();
                for e in &inc.endpoints {
                    for c in &e.clients {
                        match c {
                            Client::Service(s) => prop_assert!(named.contains(s)),
                            Client::Role(r) => {
                                for role in inc.roles.iter().filter(|x| &x.name == r) {
                                    for s in &role.clients {
                                        prop_assert!(named.contains(s));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
