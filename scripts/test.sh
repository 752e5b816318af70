#!/usr/bin/env bash
# The test command: sets up .venv from scratch if needed, then runs the suite (CI runs this).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k gates`.
# The suite runs on KMSHC_TEST_WORKERS pytest-xdist workers (default 2; 0 runs it in one process);
# `-n N` or `-p no:xdist` among the arguments overrides that, `--dist MODE` the distribution.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# BLiMP tests read $KMSHC_DATA/blimp (README, Data) and skip without it; a checkout that sits
# beside a shared data folder uses that one unless KMSHC_DATA says otherwise.
if [ -z "${KMSHC_DATA:-}" ] && [ -d ../shared/data ]; then KMSHC_DATA=$(cd ../shared/data && pwd); export KMSHC_DATA; fi
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
workers=(-n "${KMSHC_TEST_WORKERS:-2}")
# loadgroup: tests spread one by one, except those marked xdist_group (a module's expensive fixture
# computed once, on one worker)
dist=(--dist loadgroup)
for arg in "$@"; do
  case "$arg" in
    -n|-n[0-9]*|--numprocesses|--numprocesses=*) workers=() ;;
    no:xdist|-pno:xdist) workers=() dist=() ;;
    --dist|--dist=*) dist=() ;;
  esac
done
if [ "${#workers[@]}" -gt 0 ] && [ "${workers[1]}" = 0 ]; then dist=(); fi
exec .venv/bin/python -m pytest -q -rs ${workers[@]+"${workers[@]}"} ${dist[@]+"${dist[@]}"} "$@"
