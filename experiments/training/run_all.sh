#!/bin/bash
# Reproduces experiments/training/: run from the repository root.
set -e
export PYTHONPATH=$PWD
PY=${PY:-python}
D=experiments/training
$PY -m rgpo_jax.cli train --algo rgpo --k 4 --seeds 16 --total-steps 500000 --no-progress --out $D/cartpole_rgpo_k4
$PY -m rgpo_jax.cli train --algo ppo --seeds 16 --total-steps 500000 --no-progress --out $D/cartpole_ppo
$PY -m rgpo_jax.cli plot $D/cartpole_rgpo_k4 $D/cartpole_ppo --out $D/cartpole_plots
$PY -m rgpo_jax.cli train --env Acrobot-v1 --algo rgpo --k 4 --seeds 4 --total-steps 500000 --no-progress --out $D/acrobot_rgpo_k4
$PY -m rgpo_jax.cli train --env Acrobot-v1 --algo ppo --seeds 4 --total-steps 500000 --no-progress --out $D/acrobot_ppo
$PY -m rgpo_jax.cli plot $D/acrobot_rgpo_k4 $D/acrobot_ppo --out $D/acrobot_plots
