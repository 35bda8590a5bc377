#!/bin/bash
# Reproduces experiments/kl_stability/ (run from the repository root). Cells already present
# (summary.json written) are skipped, so an interrupted run continues where it stopped. Each cell
# is one `rgpo train` call: one compiled program for its whole grid × seeds. Checkpoints are
# deleted and metrics gzipped afterwards (the repository keeps no checkpoints).
# Usage: experiments/kl_stability/run.sh [SECTION...]   (sections: pendulum invpend mujoco
#        breakout, the default, in that order; mujoco_hopper: the standard MuJoCo settings on
#        Brax hopper, CPU-sized; hopper_grid, hopper_grid4: k × lr at those settings with 10
#        and 4 epochs, CPU-sized; hopper: the full grid, accelerator only, see below)
set -e
export PYTHONPATH=${KL_CODE:-$PWD}  # KL_CODE: a frozen copy of the library to run the study with
export PYTHONSAFEPATH=1  # else python -m runs the working tree, not KL_CODE (docs/pitfalls.md)
RGPO=${RGPO:-"python -m rgpo_jax.cli"}
D=experiments/kl_stability

trpo_cell() {  # TRPO landed on main during the study: these cells ran with a later copy (commit 0b30836)
  PYTHONPATH=${KL_CODE_TRPO:-$PWD} cell "$@"
}

cell() {  # cell NAME ARGS...: one `rgpo train` run into $D/NAME
  local name=$1; shift
  if [ -f "$D/$name/summary.json" ]; then  # done (tidy it in case the run was cut off there)
    echo "skip $name (done)"; rm -rf "$D/$name/checkpoints"
    [ -f "$D/$name/metrics.jsonl" ] && gzip -f "$D/$name/metrics.jsonl"
    return 0
  fi
  rm -rf "$D/$name"
  echo "== $name: $*"
  $RGPO train "$@" --no-progress --out "$D/$name" || { echo "FAILED $name"; return 0; }
  rm -rf "$D/$name/checkpoints"
  gzip -f "$D/$name/metrics.jsonl"
}

# Pendulum-v1, the first check (issue 10): 16 envs × 256 steps, 10 epochs × 16
# minibatches, lr 1e-3 (annealed), γ 0.95, other settings default; 3 seeds × 1e6 steps, the k grid
# of each gate in one program. sapo with τ_pos = τ_neg = k is the same sigmoid normalised to
# on-policy weight 1, (4/k)·σ(k(r−1)); at k = 4 it is the rgpo_sigmoid gate itself (a check that the two
# code paths agree).
pendulum() {
  local P="--env Pendulum-v1 --num-envs 16 --num-steps 256 --update-epochs 10 --num-minibatches 16
           --lr 1e-3 --gamma 0.95 --seeds 3 --total-steps 1000000"
  cell pendulum_rgpo_sigmoid $P --algo rgpo_sigmoid --k 2,4,8,16
  cell pendulum_ppo $P --algo ppo --epsilon 0.2
  # rgpo_pessimistic is the same gate as `rgpo` since this study made it the default.
  cell pendulum_rgpo_pessimistic $P --algo rgpo_pessimistic --k 4,16
  # sapo's τ and τ_neg lists would sweep as a product; one call per τ (4 seeds: 4 runs split over
  # the 2 CPU devices). τ = 4 is the rgpo_sigmoid k = 4 row.
  for t in 2 8; do
    cell pendulum_sapo_tau$t ${P/--seeds 3/--seeds 4} --algo sapo --tau $t --tau-neg $t
  done
}

# The issue's check of the new default, with the library as landed (commit 0b30836): `--algo rgpo`
# on Pendulum must end within 20% of PPO's return (pendulum_ppo).
verify() {
  local P="--env Pendulum-v1 --num-envs 16 --num-steps 256 --update-epochs 10 --num-minibatches 16
           --lr 1e-3 --gamma 0.95 --seeds 3 --total-steps 1000000"
  trpo_cell pendulum_rgpo $P --algo rgpo
}

# TRPO on the Pendulum check: its own surrogate (importance) and the paper's sigmoid inside the
# trust region (does a hard KL limit rescue the plain sigmoid?). The second cell ran with commit
# d5a1e53 (the copy of 0b30836 refused --k with --algo trpo).
trpo_pendulum() {
  local P="--env Pendulum-v1 --num-envs 16 --num-steps 256 --update-epochs 10 --num-minibatches 16
           --lr 1e-3 --gamma 0.95 --seeds 3 --total-steps 1000000"
  trpo_cell pendulum_trpo $P --algo trpo --max-kl 0.01
  trpo_cell pendulum_trpo_rgpo_sigmoid $P --algo trpo --trpo-gate rgpo_sigmoid --k 4 --max-kl 0.01
}

# Breakout-MinAtar (experiments/training settings: 16 envs × 128 steps, 4 minibatches, lr
# annealed, 128×128 relu), k ∈ {4, 16} × lr ∈ {3e-4, 1e-3} × 3 seeds in one program per gate and
# epochs value, 1e5 steps per run (sized to the shared 2-core machine: the full k ∈ {2, 4, 8, 16}
# × lr ∈ {1e-4, 3e-4, 1e-3} grid at 1.5e5 steps ran at ~2.5k steps/s beside the other jobs, on
# course for 36 minutes per gate, and was stopped). sapo only at τ = 16, where it differs most from rgpo_sigmoid k = 16 (on-policy
# weight 1 against 4).
BREAKOUT_STEPS=${BREAKOUT_STEPS:-100000}
breakout() {
  local B="--env Breakout-MinAtar --num-envs 16 --num-steps 128 --num-minibatches 4
           --hidden 128,128 --activation relu --lr 3e-4,1e-3 --seeds 3
           --total-steps $BREAKOUT_STEPS"
  for e in ${EPOCHS:-4 10}; do
    cell breakout_e${e}_rgpo_sigmoid $B --update-epochs $e --algo rgpo_sigmoid --k 4,16
    cell breakout_e${e}_ppo $B --update-epochs $e --algo ppo --epsilon 0.2
    cell breakout_e${e}_rgpo_pessimistic $B --update-epochs $e --algo rgpo_pessimistic --k 4,16
    cell breakout_e${e}_sapo_tau16 $B --update-epochs $e --algo sapo --tau 16 --tau-neg 16
    # TRPO: lr and epochs set only its value-function fit; the policy step stays within max-kl.
    trpo_cell breakout_e${e}_trpo $B --update-epochs $e --algo trpo --max-kl 0.01
    # PPO without the global gradient-norm clip (0.5 above), in the most aggressive setting.
    if [ $e = 10 ]; then
      cell breakout_e${e}_ppo_noclip $B --update-epochs $e --algo ppo --epsilon 0.2 --max-grad-norm 0
    fi
  done
}

# Brax inverted_pendulum with the Brax family defaults (64 envs × 32 steps, 4 epochs × 4
# minibatches, lr 1e-3 constant, obs normalisation, 4e5 steps), the second check; 2 seeds.
invpend() {
  local I="--env brax:inverted_pendulum --seeds 2"
  cell invpend_rgpo $I --algo rgpo --k 4
  cell invpend_ppo $I --algo ppo --epsilon 0.2
  cell invpend_rgpo_sigmoid $I --algo rgpo_sigmoid --k 4
}

# "Standard MuJoCo PPO settings" (2048 steps per update, 10 epochs, 32 minibatches of 64, lr 3e-4
# annealed, no entropy bonus; PPO also without the gradient-norm clip, as in the original PPO),
# under which the paper's PPO spiked, on Pendulum-v1 (8 envs × 256
# steps; γ 0.95 kept as Pendulum's discount), 3 seeds × 3e5 steps.
mujoco() {
  local M="--env Pendulum-v1 --num-envs 8 --num-steps 256 --update-epochs 10 --num-minibatches 32
           --lr 3e-4 --ent-coef 0 --gamma 0.95 --seeds 3 --total-steps 300000"
  cell mujocostd_pendulum_ppo $M --algo ppo --epsilon 0.2 --max-grad-norm 0.5,0
  cell mujocostd_pendulum_rgpo_sigmoid $M --algo rgpo_sigmoid --k 4
  cell mujocostd_pendulum_rgpo_pessimistic $M --algo rgpo_pessimistic --k 4
}

# The standard MuJoCo PPO settings on Brax hopper itself, sized to the 2-core CPU machine (code
# 5f2e9c8): 64 envs × 32 steps = 2048 steps per update, 10 epochs × 32 minibatches of 64, lr 3e-4
# annealed, no entropy bonus, Brax family defaults otherwise; 3 seeds × 5e5 steps (244 updates per
# run); PPO with and without the gradient-norm clip, both RGPO gates at k = 4 and 16, the
# sigmoid normalised to w(1) = 1 at τ = 16, TRPO. One cell per k (the k = 16 cells were added
# after the k = 4 ones had run; each takes about 3 minutes on the idle machine).
mujoco_hopper() {
  local S="--env brax:hopper --num-envs 64 --num-steps 32 --update-epochs 10 --num-minibatches 32
           --lr 3e-4 --anneal-lr --ent-coef 0 --seeds 3 --total-steps ${HOPPER_STEPS:-500000}"
  cell mujocostd_hopper_ppo $S --algo ppo --epsilon 0.2 --max-grad-norm 0.5,0
  cell mujocostd_hopper_rgpo_sigmoid $S --algo rgpo_sigmoid --k 4
  cell mujocostd_hopper_rgpo_pessimistic $S --algo rgpo_pessimistic --k 4
  cell mujocostd_hopper_rgpo_sigmoid_k16 $S --algo rgpo_sigmoid --k 16
  cell mujocostd_hopper_rgpo_pessimistic_k16 $S --algo rgpo_pessimistic --k 16
  cell mujocostd_hopper_sapo_tau16 $S --algo sapo --tau 16 --tau-neg 16
  cell mujocostd_hopper_trpo $S --algo trpo --max-kl 0.01
}

# The k × lr grid on Brax hopper at those standard settings, CPU-sized, 3 seeds × 5e5 steps per
# run, one program per gate (sapo one per τ: its τ and τ_neg lists would sweep as a product):
# - hopper_grid (run 2026-12-06 with main's library at b461707, whose training code computes
#   what 5f2e9c8's does): 10 epochs, k ∈ {2, 4, 8, 16} × lr ∈ {3e-4, 1e-3}; lr 1e-3 with 320
#   minibatch steps per update is the most aggressive setting here, the place to look for PPO's
#   spikes. The lr 3e-4, k = 4 and 16 runs repeat the mujocostd_hopper cells above inside a
#   larger vmapped program. About 2 minutes per 6-run cell and 6 per 24-run cell.
# - hopper_grid4 (run 2026-12-06): the same at 4 epochs with lr ∈ {1e-4, 3e-4, 1e-3}.
# Each cell's summary.json records its commit (`software`).
hopper_grid() {
  local e=${EPOCHS:-10} lrs=${LRS:-3e-4,1e-3}
  local name=hoppergrid$([ "$e" = 10 ] || echo "_e$e")
  local S="--env brax:hopper --num-envs 64 --num-steps 32 --update-epochs $e --num-minibatches 32
           --lr $lrs --anneal-lr --ent-coef 0 --seeds 3 --total-steps ${HOPPER_STEPS:-500000}"
  cell ${name}_ppo $S --algo ppo --epsilon 0.2
  cell ${name}_rgpo_sigmoid $S --algo rgpo_sigmoid --k 2,4,8,16
  cell ${name}_rgpo_pessimistic $S --algo rgpo_pessimistic --k 2,4,8,16
  for t in 2 8 16; do
    cell ${name}_sapo_tau$t $S --algo sapo --tau $t --tau-neg $t
  done
}
hopper_grid4() { EPOCHS=4 LRS=1e-4,3e-4,1e-3 hopper_grid; }

# Brax hopper, the full grid (lr 1e-4 too, 4 and 10 epochs, 1e6+ steps): NOT run here; at the
# measured 43k env steps/s for 24 runs on the 2 idle cores, one gate's 36 runs × 1e6 steps take
# about 15 minutes, so it fits a CPU session too. On an accelerator (one program per gate
# and epochs value, every k × lr × seed vmapped):
hopper() {
  local H="--env brax:hopper --num-envs 2048 --total-steps 50000000 --lr 1e-4,3e-4,1e-3 --seeds 3"
  for e in 4 10; do
    cell hopper_e${e}_rgpo_sigmoid $H --update-epochs $e --algo rgpo_sigmoid --k 2,4,8,16
    cell hopper_e${e}_rgpo_pessimistic $H --update-epochs $e --algo rgpo_pessimistic --k 2,4,8,16
    cell hopper_e${e}_ppo ${H/--seeds 3/--seeds 4} --update-epochs $e --algo ppo --epsilon 0.2
    for t in 2 8 16; do
      cell hopper_e${e}_sapo_tau$t ${H/--seeds 3/--seeds 4} --update-epochs $e --algo sapo --tau $t --tau-neg $t
    done
  done
  # The standard MuJoCo PPO settings on hopper itself at the paper's length (the CPU-sized cells
  # are mujoco_hopper above).
  HOPPER_STEPS=${HOPPER_STEPS:-1000000} mujoco_hopper
}

sections=${*:-"pendulum invpend mujoco breakout verify trpo_pendulum"}
# The study ran: pendulum invpend breakout4 mujoco breakout10 verify trpo_pendulum, then
# mujoco_hopper (2026-11-24), hopper_grid and hopper_grid4 (2026-12-06).
breakout4() { EPOCHS=4 breakout; }
breakout10() { EPOCHS=10 breakout; }
for s in $sections; do $s; done
