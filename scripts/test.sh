#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs what the tests need
# (Envoy, Python test clients) into .tools/, then format, lint and every test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

MESHPLANE_ENVOY="${MESHPLANE_ENVOY:-$("$root/scripts/install-envoy.sh" | tail -n1)}"
export MESHPLANE_ENVOY
if [[ -x "$root/scripts/install-test-deps.sh" ]]; then
  "$root/scripts/install-test-deps.sh"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
