#!/usr/bin/env bash
# The two runs of experiments/adaptive_kl/README.md (CartPole, the paper's plain sigmoid, k = 4,
# lr 0.003, 10 epochs): fixed width, then --target-kl 0.02. Keeps config/summary/metrics only.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=experiments/adaptive_kl
common=(--algo rgpo_sigmoid --k 4 --lr 0.003 --update-epochs 10 --total-steps 200000 --seeds 2
        --no-progress)
for name in fixed_k4 target_kl_0.02; do
  extra=()
  [ "$name" = target_kl_0.02 ] && extra=(--target-kl 0.02)
  tmp=$(mktemp -d)
  nice -n 15 rgpo train "${common[@]}" "${extra[@]}" --out "$tmp/run"
  mkdir -p "$out/$name"
  cp "$tmp/run/config.json" "$tmp/run/summary.json" "$out/$name/"
  gzip -c "$tmp/run/metrics.jsonl" > "$out/$name/metrics.jsonl.gz"
  rm -rf "$tmp"
done
/work/main/.venv/bin/python "$out/summarize.py"
