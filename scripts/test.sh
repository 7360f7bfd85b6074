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
# One TLS crypto provider, aws-lc-rs (ARCHITECTURE.md says why): ring must not come back
# through a dependency's default features.
if cargo tree --workspace -e normal,dev --locked --prefix none | grep -q '^ring v'; then
  echo "ring is in the dependency tree again (cargo tree -i ring): enable aws-lc-rs features instead" >&2
  exit 1
fi
# MSRV (README, "Rust version"): no dependency may need a newer Rust than the workspace states;
# clippy's incompatible_msrv (below, under -D warnings) checks our own use of std.
cargo metadata --format-version 1 --locked --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
  python3 -c '
import json, sys
meta = json.load(sys.stdin)
version = lambda v: (tuple(int(x) for x in v.split(".")) + (0, 0))[:3]
ours = {p["id"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
msrv = min(version(p["rust_version"]) for p in ours.values())
newer = ["%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
         for p in meta["packages"] if p.get("rust_version") and version(p["rust_version"]) > msrv]
missing = [p["name"] for p in ours.values() if not p.get("rust_version")]
if newer or missing:
    sys.exit("MSRV check failed: " + "; ".join(newer + ["%s states no rust-version" % m for m in missing]))
'
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
