//! Compiles the descriptors of the Envoy types Meshplane emits (and everything they import)
//! from the `.proto` files the `envoy-types` crate ships, into `$OUT_DIR/envoy.bin`.
//!
//! Cargo gives a build script no path to a dependency's sources, so the protos are looked up
//! in Cargo's registry (`$CARGO_HOME/registry/src/*/envoy-types-<version>/proto`);
//! `ENVOY_TYPES_PROTO_DIR` overrides that for vendored or offline layouts.

use std::path::{Path, PathBuf};

use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

/// Keep equal to the `envoy-types` version in Cargo.lock: the Rust types and the schemas used
/// for JSON must describe the same messages.
const ENVOY_TYPES_VERSION: &str = "0.7.7";

/// The resources and the extension types that travel inside their `Any` fields.
const FILES: &[&str] = &[
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.proto",
    "envoy/extensions/filters/http/grpc_stats/v3/config.proto",
    "envoy/extensions/filters/http/health_check/v3/health_check.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto",
    "envoy/extensions/common/dynamic_forward_proxy/v3/dns_cache.proto",
    "envoy/extensions/http/header_formatters/preserve_case/v3/preserve_case.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
];

/// Folders of `proto/` that imports resolve against.
const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec",
    "opentelemetry-proto",
    "client_model",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_PROTO_DIR");
    let root = proto_root()?;
    let mut files = ChainFileResolver::new();
    for dir in INCLUDES.iter().map(|d| root.join(d)).filter(|d| d.is_dir()) {
        files.add(IncludeFileResolver::new(dir));
    }
    files.add(GoogleFileResolver::new());
    let set = protox::Compiler::with_file_resolver(EnvoyProtos(files))
        // Comments and spans would triple the size for nothing the JSON mapping uses.
        .include_source_info(false)
        .include_imports(true)
        .open_files(FILES)?
        .file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("envoy.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&set))?;
    Ok(())
}

/// A relative type name in Envoy's dynamic forward proxy protos that protoc resolves (it only
/// considers packages of directly imported files) and protox does not (it also sees
/// `envoy.extensions.clusters.common`, imported indirectly): written fully qualified instead.
const RELATIVE_DNS_CACHE: &str = " common.dynamic_forward_proxy.v3.DnsCacheConfig ";
const ABSOLUTE_DNS_CACHE: &str =
    " .envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig ";

/// The include folders, with the one name fix above.
struct EnvoyProtos(ChainFileResolver);

impl FileResolver for EnvoyProtos {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.0.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let file = self.0.open_file(name)?;
        match file.source() {
            Some(source) if source.contains(RELATIVE_DNS_CACHE) => File::from_source(
                name,
                &source.replace(RELATIVE_DNS_CACHE, ABSOLUTE_DNS_CACHE),
            ),
            _ => Ok(file),
        }
    }
}

fn proto_root() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ENVOY_TYPES_PROTO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set; set ENVOY_TYPES_PROTO_DIR")?;
    let registries = cargo_home.join("registry").join("src");
    let package = format!("envoy-types-{ENVOY_TYPES_VERSION}");
    std::fs::read_dir(&registries)
        .map_err(|e| format!("cannot list {}: {e}", registries.display()))?
        .filter_map(Result::ok)
        .map(|r| r.path().join(&package).join("proto"))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            format!(
                "no {package}/proto under {}; run `cargo fetch` or set ENVOY_TYPES_PROTO_DIR",
                registries.display()
            )
        })
}
