#!/usr/bin/env bash
# The test command: sets up .venv from scratch if needed, then runs the suite (CI runs this).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k gates`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -rs "$@"
