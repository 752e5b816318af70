#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct), indirect-object identification:
#  1. learn head gates (train.py, configs/train/default.yaml) -> runs/default/;
#  2. refine them to a 1-minimal sufficient head set, deciding each removal with confidence on the
#     val split, and certify it on the held-out test split (docs/certificate.md)
#     -> runs/default/circuit_searched.json;
#  3. print the circuit and its certificate (with the full and all-ablated model's scores);
#  4. write runs/default/report.html (opens offline; logged to W&B as an HTML artifact) and print its path.
# Idempotent: re-running replaces runs/default/. Threads: torch's default unless OMP_NUM_THREADS
# is set (on a busy machine OMP_NUM_THREADS=1 uses the least CPU time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
RUN=runs/default
echo "== 1. learning head gates: train.py fit --config configs/train/default.yaml"
$PY train.py fit --config configs/train/default.yaml --overwrite
echo "== 2. warm search + certificate: search.py --config configs/search/default.yaml --mode warm --from_run $RUN"
$PY search.py --config configs/search/default.yaml --mode warm --from_run "$RUN" --overwrite true > /dev/null
echo "== 3. the certified circuit ($RUN/circuit_searched.json)"
$PY -m kmshc show "$RUN/circuit_searched.json"
echo "== 4. the report: kmshc report $RUN --wandb"
WANDB_SILENT=${WANDB_SILENT:-true} $PY -m kmshc report "$RUN" --wandb
