#!/usr/bin/env bash
# Forward passes per certified circuit (docs/benchmarks.md, "Search cost"). For each task whose
# training run and adaptive warm search exist in $OUT/<task>_s$SEED (made by scripts/analysis.sh with
# configs/search/default.yaml, whose decisions are adaptive):
#   (a) the same warm search with fixed-n decisions          -> $OUT/<task>_s$SEED-fixed/
#   (b) kmshc rank --method attribution on the same experiment, then the warm search from that
#       ranking (same search settings; adaptive unless ATT_ADAPTIVE=false) -> $OUT/<task>_s$SEED-att/
# and then bench/search_cost.py over the three routes (one table per task, appended to $DOC).
# Both searches copy every setting of the run's search from its circuit file, so only the
# decision rule (a) or the ranking (b) differs.
#   bash scripts/search_cost.sh
#   ONLY="ioi induction" CPR=0 DOC=none bash scripts/search_cost.sh   # some tasks, no curves, print only
#   OUT=runs/cost-n2000 ATT=0 ONLY="ioi induction" bash scripts/search_cost.sh   # fixed-n vs adaptive only
#   FIXED=0 ONLY=ioi bash scripts/search_cost.sh   # attribution vs learned (adaptive) only
#   FIXED=0 ONLY=ioi ATT_METHOD=integrated_gradients ATT_ARGS="--steps 5" ATT_SUFFIX=-ig bash scripts/search_cost.sh
# Resumable: a finished output (gates.json, circuit_searched.json) is skipped; a half-finished
# search resumes from its search_state.json. Runs one process at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/analysis}
SEED=${SEED:-0}
ONLY=${ONLY:-"det_noun det_noun_2 ioi greater_than induction"}
ATT=${ATT:-1}                       # 0: skip the attribution route (fixed-n against adaptive only)
FIXED=${FIXED:-1}                   # 0: skip the fixed-n search (the table notes it as not run)
ATT_ADAPTIVE=${ATT_ADAPTIVE:-true}  # the attribution route's decisions; compared with the learned route alike
ATT_METHOD=${ATT_METHOD:-attribution}  # the ranking: attribution or integrated_gradients
ATT_ARGS=${ATT_ARGS:-}              # more `kmshc rank` flags, e.g. "--steps 5" or "--coverage 0.5"
ATT_SUFFIX=${ATT_SUFFIX:--att}      # the route's folder: $OUT/<task>_s$SEED$ATT_SUFFIX
CPR=${CPR:-1}                       # 1: also score each circuit's faithfulness curve (CPR) on test
DOC=${DOC:-results}                # where the tables go: results (a dated page in docs/results/), a file, or none

# search $run $out $adaptive: the warm search from $run into $out with the run's own search settings
search() {
  local run=$1 out=$2 adaptive=$3 cfg="$OUT/.search_cost_${task}_s$SEED.json" resume=false
  [[ -f $out/circuit_searched.json ]] && return 0
  [[ -f $out/search_state.json ]] && resume=true
  $PY -c 'import json, sys; from kmshc.types import read_circuit; from kmshc.search.config import settings_of
print(json.dumps(settings_of(read_circuit(sys.argv[1]))))' "$base/circuit_searched.json" > "$cfg"
  echo "== search ($run -> $out, adaptive $adaptive)"
  # a search can fail for a reason worth reporting (e.g. no gap): note it and go on with the others
  $PY search.py --config "$cfg" --mode warm --from_run "$run" --out "$out" --adaptive "$adaptive" \
    --progress false --resume $resume --overwrite false \
    || echo "$out: search failed (exit $?)" | tee -a "$OUT/search_cost_failures.txt"
}

cases=()
for task in $ONLY; do
  base="$OUT/${task}_s$SEED"
  if [[ ! -f $base/circuit_searched.json ]]; then
    echo "$base: no warm search yet (scripts/analysis.sh makes it); skipped" | tee -a "$OUT/search_cost_failures.txt"
    continue
  fi
  [[ $FIXED == 1 ]] && search "$base" "$base-fixed" false
  att="$base$ATT_SUFFIX"
  if [[ $ATT == 1 ]]; then
    if [[ ! -f $att/gates.json ]]; then
      echo "== rank $att"
      read -ra rank_args <<< "$ATT_ARGS"
      $PY -m kmshc rank --method "$ATT_METHOD" ${rank_args[@]+"${rank_args[@]}"} --experiment_from "$base" \
        --runs_dir "$OUT" --name "$(basename "$att")" --overwrite
    fi
    search "$att" "$att" "$ATT_ADAPTIVE"
  fi
  cases+=(--case "$task" "$base" "$base" "$att")
done

[[ ${#cases[@]} -gt 0 ]] || { echo "no task had its runs; nothing to report"; exit 1; }
extra=(); [[ $CPR == 1 ]] && extra+=(--cpr)
$PY bench/search_cost.py "${cases[@]}" --fixed_suffix=-fixed ${extra[@]+"${extra[@]}"} --doc "$DOC"
