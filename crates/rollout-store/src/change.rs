//! What a write changed, one line per setting: the audit log's summary.

use std::collections::BTreeMap;

use meshplane_rollout::Flags;

/// One line per setting added, removed or changed between `before` and `after`, named by its
/// path in the document (`services.orders.dependencies.payments`).
pub fn summary(before: &Flags, after: &Flags) -> Vec<String> {
    let (before, after) = (settings(before), settings(after));
    let mut lines = Vec::new();
    for (path, old) in &before {
        match after.get(path) {
            None => lines.push(format!("removed {path} (was {old})")),
            Some(new) if new != old => lines.push(format!("{path}: {old} -> {new}")),
            Some(_) => {}
        }
    }
    for (path, new) in &after {
        if !before.contains_key(path) {
            lines.push(format!("added {path}: {new}"));
        }
    }
    if lines.is_empty() {
        lines.push("no change".to_owned());
    }
    lines
}

/// Every setting of the document by its path, as compact JSON.
fn settings(flags: &Flags) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("default".to_owned(), compact(&flags.default));
    for (service, s) in &flags.services {
        if let Some(rule) = &s.default {
            out.insert(format!("services.{service}.default"), compact(rule));
        }
        for (dependency, rule) in &s.dependencies {
            out.insert(
                format!("services.{service}.dependencies.{dependency}"),
                compact(rule),
            );
        }
    }
    out
}

/// Compact JSON of a document part.
fn compact<T: serde::Serialize>(part: &T) -> String {
    serde_json::to_value(part)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn flags(json: Value) -> Flags {
        Flags::from_json(json).expect("valid flags")
    }

    #[test]
    fn names_each_setting_added_removed_or_changed() {
        let before = flags(serde_json::json!({
            "services": { "orders": { "dependencies": {
                "payments": { "proxy": false },
                "stock": { "proxy": true },
            }}}
        }));
        let after = flags(serde_json::json!({
            "default": { "proxy": true },
            "services": { "orders": { "dependencies": {
                "payments": { "proxy": true, "rollout": 10 },
                "users": { "proxy": true },
            }}}
        }));
        assert_eq!(
            summary(&before, &after),
            [
                r#"default: {"proxy":false} -> {"proxy":true}"#,
                r#"services.orders.dependencies.payments: {"proxy":false} -> {"proxy":true,"rollout":10.0}"#,
                r#"removed services.orders.dependencies.stock (was {"proxy":true})"#,
                r#"added services.orders.dependencies.users: {"proxy":true}"#,
            ]
        );
        assert_eq!(summary(&after, &after), ["no change"]);
    }
}
