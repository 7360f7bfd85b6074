#!/usr/bin/env bash
# The main job: installs Envoy if needed, builds Meshplane and runs `meshplane demo`
# (control plane, embedded registry, three services with Envoy sidecars, live traffic).
# Pass --once to run one round and exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
MESHPLANE_ENVOY="${MESHPLANE_ENVOY:-$("$root/scripts/install-envoy.sh" | tail -n1)}"
export MESHPLANE_ENVOY
cargo build --release --locked -p meshplane
exec "$root/target/release/meshplane" demo "$@"
