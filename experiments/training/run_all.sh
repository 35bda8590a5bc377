#!/bin/bash
# Reproduces experiments/training/: run from the repository root.
set -e
export PYTHONPATH=$PWD
PY=${PY:-python}
D=experiments/training
$PY -m rgpo_jax.cli train --algo rgpo_sigmoid --k 4 --seeds 16 --total-steps 500000 --no-progress --out $D/cartpole_rgpo_k4
$PY -m rgpo_jax.cli train --algo ppo --seeds 16 --total-steps 500000 --no-progress --out $D/cartpole_ppo
$PY -m rgpo_jax.cli train --algo rgpo_pessimistic --k 4 --seeds 16 --total-steps 500000 --no-progress --out $D/cartpole_rgpo_pessimistic_k4
$PY -m rgpo_jax.cli plot $D/cartpole_rgpo_k4 $D/cartpole_ppo --out $D/cartpole_plots
$PY -m rgpo_jax.cli train --algo trpo --seeds 4 --total-steps 500000 --no-progress --out $D/cartpole_trpo
$PY -m rgpo_jax.cli train --algo awr --seeds 4 --total-steps 500000 --no-progress --out $D/cartpole_awr
P="--env Pendulum-v1 --num-envs 16 --num-steps 256 --update-epochs 10 --num-minibatches 16 --lr 1e-3 --gamma 0.95 --seeds 3 --total-steps 1000000 --no-progress"
$PY -m rgpo_jax.cli train $P --algo trpo --out $D/pendulum_trpo
$PY -m rgpo_jax.cli train $P --algo trpo --trpo-gate rgpo_sigmoid --k 4 --out $D/pendulum_trpo_sigmoid_k4
$PY -m rgpo_jax.cli train $P --algo awr --out $D/pendulum_awr
$PY -m rgpo_jax.cli compare $D/cartpole_ppo $D/cartpole_trpo $D/cartpole_awr experiments/kl_stability/pendulum_ppo $D/pendulum_trpo $D/pendulum_trpo_sigmoid_k4 $D/pendulum_awr --out $D/rules_compare
$PY -m rgpo_jax.cli train --env Acrobot-v1 --algo rgpo_sigmoid --k 4 --seeds 4 --total-steps 500000 --no-progress --out $D/acrobot_rgpo_k4
$PY -m rgpo_jax.cli train --env Acrobot-v1 --algo ppo --seeds 4 --total-steps 500000 --no-progress --out $D/acrobot_ppo
$PY -m rgpo_jax.cli plot $D/acrobot_rgpo_k4 $D/acrobot_ppo --out $D/acrobot_plots
MINATAR="--env Breakout-MinAtar --num-envs 16 --num-steps 128 --num-minibatches 4 --lr 5e-4 --hidden 128,128 --activation relu --total-steps 1000000 --seeds 2 --no-progress"
$PY -m rgpo_jax.cli train --algo rgpo_sigmoid --k 4 $MINATAR --out $D/breakout_rgpo_k4
$PY -m rgpo_jax.cli train --algo ppo $MINATAR --out $D/breakout_ppo
$PY -m rgpo_jax.cli plot $D/breakout_rgpo_k4 $D/breakout_ppo --out $D/breakout_plots
# Why does the RGPO sigmoid drift on Breakout? Sharper k (8, 16) and the pessimistic variant.
$PY -m rgpo_jax.cli train --algo rgpo_sigmoid --k 8,16 $MINATAR --out $D/breakout_rgpo_k8_k16
$PY -m rgpo_jax.cli train --algo rgpo_pessimistic --k 4 $MINATAR --out $D/breakout_rgpo_pessimistic_k4
$PY -m rgpo_jax.cli plot $D/breakout_rgpo_k4 $D/breakout_rgpo_k8_k16 $D/breakout_rgpo_pessimistic_k4 $D/breakout_ppo --out $D/breakout_gate_plots --metrics episode_return,approx_kl
