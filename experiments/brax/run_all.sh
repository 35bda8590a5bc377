#!/usr/bin/env bash
# Brax results on CPU budgets: `rgpo train` with the Brax family defaults, 1 seed.
# Usage (repo root): PYTHONPATH=$PWD ALGO=ppo bash experiments/brax/run_all.sh [OUT] [ENVS...]
set -uo pipefail
OUT=${1:-experiments/brax/results}
shift || true
ENVS=${*:-inverted_pendulum halfcheetah hopper ant}
ALGO=${ALGO:-ppo}
PY=${PY:-python}
for env in $ENVS; do
  run="$OUT/${ALGO}_$env"
  $PY -m rgpo_jax.cli train --env brax:$env --algo $ALGO --checkpoint-every 50 --no-progress \
    --out "$run" 2>&1 | grep -v -i "warp\|warn" | tee "$run.log.txt"
  $PY -m rgpo_jax.cli evaluate "$run" --episodes 16 2>&1 | grep -v -i "warp\|warn" \
    | tee -a "$run.log.txt"
done
