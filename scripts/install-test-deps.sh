#!/usr/bin/env bash
# Installs the third-party test clients. Idempotent: re-running only installs what is missing.
#
#   scripts/install-test-deps.sh
#
# - py-consul in a project-local venv at .tools/venv (never touches system Python), for
#   crates/registry-embedded/tests/py_consul.rs (a real Consul client against the embedded
#   registry).
# - Debian's chromium (apt, only when /usr/bin/chromium is missing: needs root, as in CI) and
#   playwright-core (npm, pinned by tests/browser/package-lock.json) for the web panel's
#   browser test, crates/cli/tests/panel.rs. Playwright drives the system Chromium; it never
#   downloads browsers.
set -euo pipefail

PY_CONSUL_VERSION="1.8.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

if "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('py-consul') == '$PY_CONSUL_VERSION' else 1)" 2>/dev/null; then
    echo "py-consul $PY_CONSUL_VERSION already installed in $venv"
else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "py-consul==$PY_CONSUL_VERSION"
    echo "installed py-consul $PY_CONSUL_VERSION into $venv"
fi

if [[ -x /usr/bin/chromium ]]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
else
    echo "warning: /usr/bin/chromium is missing; install Debian's chromium (as root:" \
        "apt-get install chromium) for the browser test" >&2
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
