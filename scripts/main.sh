#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct): 561 s (9 min 21 s) on the idle
# 2-core CPU with .venv already set up (measured 2026-11-29; docs/training.md):
#  1. score the full model and the all-heads-ablated model on the built-in grammar task;
#  2. learn head gates (train.py, configs/train/default.yaml) -> runs/default/;
#  3. refine them to a 1-minimal sufficient head set and certify it on the held-out test split
#     (search.py --mode warm) -> runs/default/circuit_searched.json;
#  4. print the certified circuit.
# Idempotent: re-running replaces runs/default/. Threads: torch's default unless OMP_NUM_THREADS
# is set (on a busy machine OMP_NUM_THREADS=1 uses the least CPU time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
RUN=runs/default
echo "== 1. full model, grammar task (150 pairs)"
$PY -m kmshc score --model smollm2-135m --task grammar --limit 150 --dtype auto
echo "== 1. every head ablated (mean ablation, 150 pairs)"
$PY -m kmshc score --model smollm2-135m --task grammar --limit 150 --dtype auto --keep none --ablation mean
echo "== 2. learning head gates: $PY train.py fit --config configs/train/default.yaml --overwrite"
$PY train.py fit --config configs/train/default.yaml --overwrite
echo "== 2. run directory: $RUN/ (gates.json, circuit_learned.json, gates_heatmap.png, wandb/)"
echo "== 3. warm search + certificate: search.py --config configs/search/default.yaml --mode warm --from_run $RUN"
$PY search.py --config configs/search/default.yaml --mode warm --from_run "$RUN" --overwrite true \
    --progress false > /dev/null
echo "== 4. certified circuit ($RUN/circuit_searched.json)"
$PY - "$RUN" <<'EOF'
import json, sys
run = sys.argv[1]
learned = json.load(open(f"{run}/circuit_learned.json"))
c = json.load(open(f"{run}/circuit_searched.json"))
cert = c["certificate"]
circ, thr, full, base = cert["circuit"], cert["threshold"], cert["full"], cert["baseline"]
ci = lambda d: f"[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"
print(f"model {c['model']}, task {c['task']}, ablation {c['ablation']}, epsilon {c['epsilon']}")
print(f"learned (gate > 0.5): {len(learned['heads'])} heads; searched: {len(c['heads'])} of "
      f"{c['n_heads_total']} heads, {c['evaluations']} evaluations")
print(f"heads: {' '.join(c['heads'])}")
print(f"test split (n={cert['n']}): circuit {circ['accuracy']:.3f} {ci(circ)}, full {full['accuracy']:.3f}, "
      f"all ablated {base['accuracy']:.3f}, U = {thr['value']:.3f} {ci(thr)}")
print(f"verified: {cert['verified']}" + (f" (failing: {cert['failing_heads']}; {cert['reasons']})"
                                         if not cert["verified"] else ""))
for r in cert["removals"]:
    print(f"  without {r['head']:>7}: {r['accuracy']:.3f} (delta {r['delta']:+.3f}, p = {r['p_value']:.3g})  {r['class']}")
EOF
