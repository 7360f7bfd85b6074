#!/usr/bin/env bash
# Installs the third-party test clients. Idempotent: re-running only installs what is missing.
#
#   scripts/install-test-deps.sh
#
# - py-consul in a project-local venv at .tools/venv (never touches system Python), for
#   crates/registry-embedded/tests/py_consul.rs (a real Consul client against the embedded
#   registry); grpcio and opentelemetry-proto in the same venv for tests/otlp/receiver.py,
#   the OTLP trace receiver of crates/cli/tests/tracing.rs, and grpcio for tests/grpc/echo.py,
#   the gRPC client and server of crates/cli/tests/mesh_protocols.rs; requests for
#   examples/python-requests (the egress flags' reference interceptor), driven by
#   crates/cli/tests/sidecar_egress_flags.rs.
# - Debian's chromium (apt, only when /usr/bin/chromium is missing: needs root, as in CI) and
#   playwright-core (npm, pinned by tests/browser/package-lock.json) for the web panel's
#   browser test, crates/cli/tests/panel.rs. Playwright drives the system Chromium; it never
#   downloads browsers.
# - @grpc/grpc-js and @grpc/grpc-js-xds (npm, pinned by tests/grpc-node/package-lock.json)
#   for the proxyless Node client of crates/cli/tests/proxyless_grpc.rs.
# - Debian's prometheus (apt, only when missing) for crates/cli/tests/prometheus.rs: a real
#   Prometheus discovers and scrapes the mesh through deploy/prometheus/http-sd.yml.
# - .tools/bin/prometheus-consul-sd, built with Go from tests/prometheus-consul-sd (modules
#   pinned by its go.sum, from the Go module proxy): Prometheus's own Consul discovery and
#   relabelling, which Debian's Prometheus is built without, to check
#   deploy/prometheus/consul-sd.yml against the embedded registry.
set -euo pipefail

PY_CONSUL_VERSION="1.8.0"
# name==version of each Python package the tests use.
PY_PACKAGES=("py-consul==$PY_CONSUL_VERSION" "grpcio==1.85.1" "opentelemetry-proto==1.45.2" "requests==2.34.2")

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

missing=()
for package in "${PY_PACKAGES[@]}"; do
    if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('${package%%==*}') == '${package##*==}' else 1)" 2>/dev/null; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "Python test packages already installed in $venv"
else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    echo "installed ${missing[*]} into $venv"
fi

apt_updated=""
# Installs Debian package $1 with apt-get when $2 is missing (as root only); else warns.
apt_install() {
    local package="$1" binary="$2"
    if [[ -x "$binary" ]]; then
        echo "$package already installed: $binary"
    elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $package with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        if [[ -z "$apt_updated" ]]; then
            apt-get update -qq >/dev/null
            apt_updated=1
        fi
        apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    else
        echo "warning: $binary is missing; install Debian's $package (as root:" \
            "apt-get install $package) for the tests that use it" >&2
    fi
}

apt_install chromium /usr/bin/chromium
apt_install prometheus /usr/bin/prometheus

sd_src="$root/tests/prometheus-consul-sd"
sd_bin="$root/.tools/bin/prometheus-consul-sd"
if [[ -x "$sd_bin" && -z "$(find "$sd_src" -newer "$sd_bin" -type f)" ]]; then
    echo "prometheus-consul-sd already built: $sd_bin"
elif command -v go >/dev/null; then
    (cd "$sd_src" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -o "$sd_bin" .)
    echo "built $sd_bin"
else
    echo "warning: go is missing; install Go >= 1.26 to build $sd_bin for the Prometheus tests" >&2
fi

browser="$root/tests/browser"
if ! command -v npm >/dev/null; then
    echo "warning: node/npm are missing; install Node.js >= 20 for the browser test" >&2
elif [[ -f "$browser/node_modules/.package-lock.json" ]] \
    && cmp -s <(node -p "require('$browser/package-lock.json').packages['node_modules/playwright-core'].version" 2>/dev/null) \
              <(node -p "require('$browser/node_modules/playwright-core/package.json').version" 2>/dev/null); then
    echo "playwright-core $(node -p "require('$browser/node_modules/playwright-core/package.json').version") already installed in $browser"
else
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "installed playwright-core into $browser/node_modules"
fi

grpc_node="$root/tests/grpc-node"
if ! command -v npm >/dev/null; then
    echo "warning: node/npm are missing; install Node.js >= 20 for the proxyless gRPC test" >&2
elif [[ -f "$grpc_node/node_modules/.package-lock.json" ]] \
    && cmp -s <(cd "$grpc_node" && node -p "['@grpc/grpc-js', '@grpc/grpc-js-xds'].map((p) => require('./package-lock.json').packages['node_modules/' + p].version).join()" 2>/dev/null) \
              <(cd "$grpc_node" && node -p "['@grpc/grpc-js', '@grpc/grpc-js-xds'].map((p) => require('./node_modules/' + p + '/package.json').version).join()" 2>/dev/null); then
    echo "@grpc/grpc-js-xds already installed in $grpc_node"
else
    (cd "$grpc_node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "installed @grpc/grpc-js and @grpc/grpc-js-xds into $grpc_node/node_modules"
fi
