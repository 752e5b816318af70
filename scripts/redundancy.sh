#!/usr/bin/env bash
# Regenerates docs/redundancy.md's Results: the chain of disjoint sufficient circuits
# (`kmshc redundancy`) on SmolLM2-135M-Instruct for IOI and BLiMP determiner_noun_agreement_1 (and
# induction with ONLY=induction).
#   bash scripts/redundancy.sh                                  # both tasks, cold searches
#   TRAIN=runs/analysis ONLY=det_noun bash scripts/redundancy.sh  # warm from $TRAIN/det_noun_s0 if it has gates.json
#     (its C1 is the warm search scripts/analysis.sh ran on that run: same config, same result)
#   TRAIN=runs/analysis ONLY=induction EPSILON=0.5 OUT=runs/redundancy-eps0.5 bash scripts/redundancy.sh  # a lower target
#   MODEL=tiny-gpt2 OUT=runs/smoke-red FIG=runs/smoke-red/fig LIMIT=60 MAX_EVALS=200 bash scripts/redundancy.sh  # smoke run
# Resumable: each circuit is its own search run directory (C1/, C2/, ...); a rerun reuses the finished
# ones and resumes an interrupted one. The report, plots and redundancy.json are copied to $FIG/<task>/.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-smollm2-135m}
OUT=${OUT:-runs/redundancy}            # one folder per task: C1/, C2/, ..., redundancy.json, report.md
FIG=${FIG:-docs/figures/redundancy}    # report.md, knockout.png, mix.png and redundancy.json per task
ONLY=${ONLY:-"ioi det_noun"}
LIMIT=${LIMIT:-400}                    # items per task before the split
MAX_CIRCUITS=${MAX_CIRCUITS:-5}
MAX_EVALS=${MAX_EVALS:-3000}           # search evaluations for the whole chain of one task
DTYPE=${DTYPE:-auto}                   # auto: bf16 on CUDA or a CPU with native bf16, else float32
TRAIN=${TRAIN:-}                       # a folder of train.py runs named <task>_s0: start warm from them
EXTRA=${EXTRA:-}                       # more search flags, e.g. "--metric margin"

# BLiMP paradigm files: kmshc reads $KMSHC_DATA/blimp/ (README, Data; a clear error when it is unset)
BLIMP=${BLIMP:-'$KMSHC_DATA/blimp'}

# name | config | overrides: both use configs/search/default.yaml (margin metric, confident adaptive
# decisions); IOI at its epsilon 1.0, det_noun at the analysis grid's 0.9. A warm chain reads the
# experiment (task, items, splits) from the train run; the overrides here shape cold chains only.
TASKS=(
  "ioi|configs/search/default.yaml|--experiment.n $LIMIT"
  "det_noun|configs/search/default.yaml|--epsilon 0.9 --experiment.task blimp --experiment.data $BLIMP/determiner_noun_agreement_1.jsonl --experiment.n null --experiment.limit $LIMIT"
  "induction|configs/search/default.yaml|--epsilon 0.9 --experiment.task induction --experiment.n $LIMIT"
)
EPSILON=${EPSILON:-}                   # one epsilon for every task instead of the ones above

for task in $ONLY; do
  spec=$(printf '%s\n' "${TASKS[@]}" | grep "^$task|") || { echo "unknown task $task"; exit 2; }
  IFS='|' read -r _ config args <<<"$spec"
  mode=(--mode cold)
  if [[ -n $TRAIN && -f $TRAIN/${task}_s0/gates.json ]]; then
    mode=(--mode warm --from_run "$TRAIN/${task}_s0")
  fi
  echo "== redundancy $task (${mode[*]})"
  # shellcheck disable=SC2086
  $PY -m kmshc redundancy --config "$config" --out "$OUT/$task" --max_circuits "$MAX_CIRCUITS" \
    --max_evaluations "$MAX_EVALS" --dtype "$DTYPE" --experiment.model "$MODEL" --experiment.dtype "$DTYPE" \
    --progress false "${mode[@]}" $args ${EPSILON:+--epsilon "$EPSILON"} $EXTRA
  mkdir -p "$FIG/$task"
  for f in report.md redundancy.json knockout.png mix.png; do
    [[ -f $OUT/$task/$f ]] && cp "$OUT/$task/$f" "$FIG/$task/"
  done
done
