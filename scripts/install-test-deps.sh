#!/usr/bin/env bash
# Installs the third-party test clients into a project-local venv at .tools/venv.
# Idempotent: re-running only installs what is missing. Never touches system Python.
#
#   scripts/install-test-deps.sh
#
# Used by crates/registry-embedded/tests/py_consul.rs (a real PyPI Consul client
# driving the embedded registry unmodified).
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
