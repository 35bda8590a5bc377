#!/bin/bash
# Reproduces experiments/continuous_control/ (run from the repository root): Brax hopper, walker2d,
# ant and halfcheetah × RGPO (the default pessimistic sigmoid and the paper's plain sigmoid), PPO,
# TRPO, AWR and unclipped importance sampling, 6 seeds per cell trained in one compiled program
# (split over 2 forced host devices on CPU). Every cell uses the Brax family defaults of
# `rgpo_jax.envs.brax.trainer_defaults` (64 envs × 32 steps per update, 128 envs for ant; 4 epochs
# × 4 minibatches; Adam 3e-4; 64×64 tanh actor and critic; observation normalisation) and each
# algorithm's documented defaults (rgpo k = 4, ppo ε = 0.2, trpo max-kl 0.01, awr β and weight
# clip as in `rgpo train --help`). Nothing is tuned per env or per algorithm.
#
# Cells already done (summary.json present) are skipped and a stopped cell (config.json and
# checkpoints/, written every 5 minutes) is resumed with `rgpo train --resume`, bit-identical to an
# uninterrupted run with the same code (keep CC_CODE fixed across the pieces), so the study can
# run piecewise. Checkpoints are deleted and metrics gzipped afterwards (the repository keeps no
# checkpoints). Then: python experiments/continuous_control/summarize.py
#
# Usage: experiments/continuous_control/run.sh [ENV...]     (default: hopper walker2d ant halfcheetah)
#   STEPS=1000000  env steps per seed (2-core CPU sizing: see README.md)
#   SEEDS=6        seeds per cell
#   ALGOS="rgpo rgpo_sigmoid ppo trpo awr importance"
# On an accelerator (the paper-sized study; rgpo train splits the 6 seeds one per device or
# data-parallel by itself):
#   STEPS=50000000 EXTRA="--num-envs 2048 --num-steps 16 --num-minibatches 32" experiments/continuous_control/run.sh
set -e
export PYTHONPATH=${CC_CODE:-$PWD}
# Without this, `python -m` puts the current directory (the repository root) ahead of
# PYTHONPATH and runs the working tree's library, not CC_CODE's (docs/pitfalls.md).
export PYTHONSAFEPATH=1
RGPO=${RGPO:-"python -m rgpo_jax.cli"}
D=experiments/continuous_control
STEPS=${STEPS:-1000000}
SEEDS=${SEEDS:-6}
ALGOS=${ALGOS:-"rgpo rgpo_sigmoid ppo trpo awr importance"}

cell() {  # cell NAME ARGS...: one `rgpo train` run into $D/runs/NAME
  local name=$1; shift
  local out=$D/runs/$name
  if [ -f "$out/summary.json" ]; then
    echo "skip $name (done)"; rm -rf "$out/checkpoints"
    [ -f "$out/metrics.jsonl" ] && gzip -f "$out/metrics.jsonl"
    return 0
  fi
  mkdir -p "$D/runs"
  if [ -f "$out/config.json" ] && [ -d "$out/checkpoints" ]; then  # stopped (session end, kill)
    echo "== $name: resume ($(date -u +%H:%M:%S))"
    $RGPO train --resume "$out" --no-progress >> "$out.log.txt" 2>&1 || { echo "FAILED $name"; return 0; }
  else
    rm -rf "$out"
    echo "== $name: $* ($(date -u +%H:%M:%S))"
    $RGPO train "$@" --no-progress --out "$out" > "$out.log.txt" 2>&1 || { echo "FAILED $name"; return 0; }
  fi
  rm -rf "$out/checkpoints"
  gzip -f "$out/metrics.jsonl"
}

for env in ${@:-hopper walker2d ant halfcheetah}; do
  for algo in $ALGOS; do
    cell ${env}_${algo} --env brax:$env --algo $algo --seeds $SEEDS --total-steps $STEPS $EXTRA
  done
done
