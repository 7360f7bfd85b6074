//! Small protobuf builders shared by the translation modules.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::OnceLock;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::google::protobuf::{self as pb, Any};
use prost::{Message, Name};

/// Wraps a message in `Any`.
pub fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Wraps parts of one message in `Any`, concatenated: protobuf parsers merge repeated
/// occurrences (nested messages merge, map entries accumulate), so Envoy reads the whole
/// message. Used for messages with multi-entry maps: each part carries one entry, in sorted
/// order, so the bytes (and so the version) are the same in every process — a single
/// encoded `HashMap` iterates in a per-process random order.
pub fn merged_any<M: Message + Name>(parts: &[M]) -> Any {
    let mut value = Vec::new();
    for part in parts {
        part.encode(&mut value)
            .expect("a Vec grows to fit the encoding");
    }
    Any {
        type_url: M::type_url(),
        value,
    }
}

/// A protobuf duration.
pub fn duration(d: Duration) -> pb::Duration {
    pb::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `ads: {}` config source.
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// A TCP socket address.
pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// An empty map whose iteration order is the same as every other map built here in this
/// process, so equal content encodes to equal bytes (and equal versions) even with several
/// entries. Protobuf map fields are `HashMap`s; with per-map random hashers the encoding
/// of a two-key map would change at every translation and defeat "unchanged is not re-sent".
pub fn stable_map<V>() -> HashMap<String, V> {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    HashMap::with_hasher(STATE.get_or_init(RandomState::new).clone())
}

/// `UInt32Value`.
pub fn u32_value(v: u32) -> pb::UInt32Value {
    pb::UInt32Value { value: v }
}

/// A string `Value`.
pub fn string_value(s: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::StringValue(s.to_owned())),
    }
}
