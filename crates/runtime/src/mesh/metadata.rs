//! Node metadata (a protobuf `Struct`) to JSON, so the descriptor parser can read it.

use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use serde_json::Value as Json;

/// Converts metadata to JSON. Protobuf numbers are doubles; integral ones become JSON
/// integers so `port: 8080` reads as the integer it was written as.
pub fn to_json(s: &Struct) -> Json {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    Json::Object(
        keys.into_iter()
            .map(|k| (k.clone(), value_to_json(&s.fields[k])))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Json::Number)
                    .unwrap_or(Json::Null)
            }
        }
        Some(Kind::StructValue(s)) => to_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_to_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_numbers_become_integers() {
        let s = Struct {
            fields: [
                (
                    "port".to_string(),
                    Value {
                        kind: Some(Kind::NumberValue(8080.0)),
                    },
                ),
                (
                    "ratio".to_string(),
                    Value {
                        kind: Some(Kind::NumberValue(0.5)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(to_json(&s), serde_json::json!({"port": 8080, "ratio": 0.5}));
    }
}
