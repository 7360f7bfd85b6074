//! Envoy resources as JSON in the form Envoy itself prints in `/config_dump`: the protobuf JSON
//! mapping with proto field names (`connect_timeout`), `@type` on every `Any`, durations as
//! `"1s"`, enums by name, 64-bit integers as strings and default values omitted. The admin API
//! shows the control plane's resources this way so they compare field by field with a proxy's
//! dump.
//!
//! Start at [`to_json`]. The schemas are compiled at build time (`build.rs`) from the `.proto`
//! files of the `envoy-types` crate, limited to the types Meshplane emits; an `Any` of a type
//! outside them is shown as its type URL and base64 bytes, never an error.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value as Field,
};
use serde_json::{Map, Value};

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/envoy.bin")).as_ref())
        .map_err(|e| format!("the compiled Envoy schemas do not load: {e}"))
});

/// Envoy's config dump uses proto field names; the rest are the protobuf JSON defaults.
const OPTIONS: SerializeOptions = SerializeOptions::new().use_proto_field_name(true);

const ANY: &str = "google.protobuf.Any";
const STRING_VALUE: &str = "google.protobuf.StringValue";
/// Prefix of the stand-in for an `Any` of an unknown type while the message is serialized
/// (the JSON mapping cannot print an `Any` it has no schema for); replaced afterwards.
const OPAQUE_MARK: &str = "\u{0}meshplane-opaque-any\u{0}";

/// Key of an opaque `Any`'s bytes.
pub const OPAQUE_VALUE_KEY: &str = "@value_base64";
/// Key saying why a message could not be shown field by field.
pub const OPAQUE_ERROR_KEY: &str = "@error";

/// The message `value` of type `type_url` (`type.googleapis.com/envoy.config.cluster.v3.Cluster`)
/// as Envoy's JSON, with `@type` first like an `Any` in a config dump. A type without a schema
/// or bytes that do not decode give `{"@type", "@value_base64"[, "@error"]}`.
pub fn to_json(type_url: &str, value: &[u8]) -> Value {
    render(type_url, value)
        .unwrap_or_else(|reason| opaque(type_url, &BASE64.encode(value), Some(reason)))
}

fn render(type_url: &str, value: &[u8]) -> Result<Value, String> {
    let pool = POOL.as_ref().map_err(Clone::clone)?;
    let Some(descriptor) = message_for(pool, type_url) else {
        return Ok(opaque(type_url, &BASE64.encode(value), None));
    };
    let mut message = DynamicMessage::decode(descriptor, value)
        .map_err(|e| format!("the bytes are not a valid message of this type: {e}"))?;
    mark_opaque_anys(pool, &mut message);
    let json = message
        .serialize_with_options(serde_json::value::Serializer, &OPTIONS)
        .map_err(|e| e.to_string())?;
    let mut out = Map::new();
    out.insert("@type".to_owned(), Value::String(type_url.to_owned()));
    match unmark(json) {
        Value::Object(fields) => out.extend(fields),
        // Well-known types map to non-objects; an `Any` holds them under `value`.
        other => {
            out.insert("value".to_owned(), other);
        }
    }
    Ok(Value::Object(out))
}

fn message_for(pool: &DescriptorPool, type_url: &str) -> Option<MessageDescriptor> {
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, name)| name);
    pool.get_message_by_name(name)
}

fn opaque(type_url: &str, base64: &str, error: Option<String>) -> Value {
    let mut out = Map::new();
    out.insert("@type".to_owned(), Value::String(type_url.to_owned()));
    out.insert(
        OPAQUE_VALUE_KEY.to_owned(),
        Value::String(base64.to_owned()),
    );
    if let Some(e) = error {
        out.insert(OPAQUE_ERROR_KEY.to_owned(), Value::String(e));
    }
    Value::Object(out)
}

// === opaque Any fields ===

/// Replaces every `Any` (at any depth, inside other `Any`s too) whose type has no schema or
/// whose bytes do not decode by a marked `StringValue`. Returns whether anything changed.
fn mark_opaque_anys(pool: &DescriptorPool, message: &mut DynamicMessage) -> bool {
    if message.descriptor().full_name() == ANY {
        return mark_any(pool, message);
    }
    message.fields_mut().fold(false, |changed, (_, field)| {
        mark_field(pool, field) | changed
    })
}

fn mark_field(pool: &DescriptorPool, field: &mut Field) -> bool {
    match field {
        Field::Message(m) => mark_opaque_anys(pool, m),
        Field::List(items) => items
            .iter_mut()
            .fold(false, |changed, i| mark_field(pool, i) | changed),
        Field::Map(entries) => entries
            .values_mut()
            .fold(false, |changed, v| mark_field(pool, v) | changed),
        _ => false,
    }
}

fn mark_any(pool: &DescriptorPool, any: &mut DynamicMessage) -> bool {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let value = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let inner =
        message_for(pool, &type_url).and_then(|d| DynamicMessage::decode(d, value.as_ref()).ok());
    match inner {
        Some(mut inner) => {
            let changed = mark_opaque_anys(pool, &mut inner);
            if changed {
                any.set_field_by_name("value", Field::Bytes(inner.encode_to_vec().into()));
            }
            changed
        }
        None => {
            let Some(string_value) = pool.get_message_by_name(STRING_VALUE) else {
                return false;
            };
            let mut stand_in = DynamicMessage::new(string_value);
            stand_in.set_field_by_name(
                "value",
                Field::String(format!(
                    "{OPAQUE_MARK}{type_url}\u{0}{}",
                    BASE64.encode(&value)
                )),
            );
            any.set_field_by_name(
                "type_url",
                Field::String(format!("type.googleapis.com/{STRING_VALUE}")),
            );
            any.set_field_by_name("value", Field::Bytes(stand_in.encode_to_vec().into()));
            true
        }
    }
}

/// Turns the stand-ins left by [`mark_opaque_anys`] into `{"@type", "@value_base64"}`.
fn unmark(json: Value) -> Value {
    match json {
        Value::Object(map) => {
            let stand_in = map
                .get("value")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix(OPAQUE_MARK))
                .and_then(|s| s.split_once('\u{0}'));
            if let Some((type_url, base64)) = stand_in {
                return opaque(type_url, base64, None);
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, unmark(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(unmark).collect()),
        other => other,
    }
}
