#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct): score the full model and the
# all-heads-ablated model on the built-in grammar task.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
echo "== full model, grammar task (200 pairs)"
$PY -m kmshc score --model smollm2-135m --task grammar --limit 200 --dtype bfloat16
echo "== every head ablated (zero)"
$PY -m kmshc score --model smollm2-135m --task grammar --limit 200 --dtype bfloat16 --keep none --ablation zero
