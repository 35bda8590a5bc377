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
# Pendulum-v1 with the settings of experiments/kl_stability (where the fixed plain sigmoid
# collapsed at every k), k = 4, 3 seeds.
tmp=$(mktemp -d)
nice -n 15 rgpo train --env Pendulum-v1 --num-envs 16 --num-steps 256 --update-epochs 10 \
  --num-minibatches 16 --lr 1e-3 --gamma 0.95 --seeds 3 --total-steps 1000000 \
  --algo rgpo_sigmoid --k 4 --target-kl 0.02 --no-progress --out "$tmp/run"
mkdir -p "$out/pendulum_target_kl_0.02"
cp "$tmp/run/config.json" "$tmp/run/summary.json" "$out/pendulum_target_kl_0.02/"
gzip -c "$tmp/run/metrics.jsonl" > "$out/pendulum_target_kl_0.02/metrics.jsonl.gz"
rm -rf "$tmp"
python "$out/summarize.py"
