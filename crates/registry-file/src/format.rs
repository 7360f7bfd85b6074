use std::collections::{BTreeMap, BTreeSet};

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use serde::Deserialize;

/// The file's root.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default)]
    services: Vec<ServiceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    name: ServiceName,
    #[serde(default)]
    instances: Vec<InstanceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceEntry {
    id: String,
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default = "default_weight")]
    weight: u32,
    datacenter: Option<String>,
    zone: Option<String>,
    node: Option<String>,
    #[serde(default)]
    health: Health,
}

/// Why a services file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// YAML syntax or a field with the wrong type/name; `line` and `column` are 1-based.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, from the YAML parser.
        message: String,
    },
    /// Well-formed YAML with a value that makes no sense.
    #[error("service `{service}`: {message}")]
    Invalid {
        /// The service concerned.
        service: String,
        /// What to fix.
        message: String,
    },
    /// A service is listed twice.
    #[error("service `{0}` is listed twice; merge its instances into one entry")]
    DuplicateService(String),
}

fn default_weight() -> u32 {
    1
}

/// Parses a services file. `default_dc` applies to instances without `datacenter`.
pub fn parse(
    text: &str,
    default_dc: &str,
) -> Result<BTreeMap<ServiceName, Vec<Instance>>, ParseError> {
    let file: ServicesFile = serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ParseError::Syntax {
            line,
            column,
            message: e.to_string(),
        }
    })?;
    let mut services = BTreeMap::new();
    for entry in file.services {
        let name = entry.name;
        let mut ids = BTreeSet::new();
        let mut instances = Vec::with_capacity(entry.instances.len());
        for i in entry.instances {
            let invalid = |message: String| ParseError::Invalid {
                service: name.to_string(),
                message,
            };
            if !ids.insert(i.id.clone()) {
                return Err(invalid(format!(
                    "instance id `{}` is used twice; ids must be unique",
                    i.id
                )));
            }
            if i.port == 0 {
                return Err(invalid(format!(
                    "instance `{}` has port 0; use the port it listens on (1-65535)",
                    i.id
                )));
            }
            if i.address.is_empty() {
                return Err(invalid(format!("instance `{}` has an empty address", i.id)));
            }
            let id = InstanceId::new(i.id).map_err(|e| invalid(e.to_string()))?;
            instances.push(Instance {
                id,
                service: name.clone(),
                node: i.node.unwrap_or_else(|| "file".into()),
                address: i.address,
                port: i.port,
                tags: i.tags,
                meta: i.meta,
                weight: i.weight,
                health: i.health,
                locality: Locality {
                    datacenter: i.datacenter.unwrap_or_else(|| default_dc.to_string()),
                    zone: i.zone,
                },
            });
        }
        if services.insert(name.clone(), instances).is_some() {
            return Err(ParseError::DuplicateService(name.to_string()));
        }
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = "services:\n  - name: payments\n    instances:\n      - { id: payments-1, address: 10.0.0.5, port: 31001, tags: [canary], weight: 100, datacenter: dc1 }\n";
        let services = parse(text, "dc9").expect("valid");
        let payments = &services[&ServiceName::new("payments").expect("name")];
        assert_eq!(payments.len(), 1);
        let i = &payments[0];
        assert_eq!(
            (i.id.as_str(), i.address.as_str(), i.port, i.weight),
            ("payments-1", "10.0.0.5", 31001, 100)
        );
        assert_eq!(i.tags, ["canary"]);
        assert_eq!(i.locality.datacenter, "dc1");
        assert_eq!(i.health, Health::Passing);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = "services:\n  - name: web\n    instances:\n      - { id: w1, address: 10.0.0.1, port: nope }\n";
        match parse(text, "dc1") {
            Err(ParseError::Syntax { line, column, .. }) => {
                assert_eq!(line, 4);
                assert!(column > 1, "column {column}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let unknown = "services:\n  - name: web\n    instanses: []\n";
        let err = parse(unknown, "dc1").expect_err("unknown field");
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(err.to_string().contains("instanses"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_service() {
        let dup = "services:\n  - name: web\n    instances:\n      - { id: a, address: x, port: 1 }\n      - { id: a, address: y, port: 2 }\n";
        assert!(
            parse(dup, "dc1")
                .expect_err("dup")
                .to_string()
                .contains("`web`")
        );
        let bad_name = "services:\n  - name: 'bad name'\n";
        assert!(matches!(
            parse(bad_name, "dc1"),
            Err(ParseError::Syntax { line: 2, .. })
        ));
        let twice = "services:\n  - name: web\n  - name: web\n";
        assert_eq!(
            parse(twice, "dc1"),
            Err(ParseError::DuplicateService("web".into()))
        );
    }
}
