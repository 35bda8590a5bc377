"""Env steps per second of rgpo_jax's trainer against Brax's own PPO trainer, side by side.

Same env, backend and batch settings for both (default: ant, positional, 256 envs, unroll 10,
16 minibatches, 4 epochs per batch; one rollout of 256 × 10 steps per update, i.e. Brax's
batch_size = num_envs / num_minibatches), timing whole training iterations (rollout + GAE + SGD)
after compilation. Networks: Brax's defaults (policy 4×32, value 5×256, swish); ours is shown
with our default (64, 64) tanh actor and critic and with 5×256 silu actor *and* critic (more
work than Brax's).

Brax's trainer needs a shim on jax >= 0.10, applied here only (not in the library):
`jax.device_put_replicated` and `jax.device_put_sharded` were removed, so they are re-created
as stacks of copies / shards (`_shim_removed_jax_apis`). Nothing else in Brax is changed.

Usage:
  PYTHONPATH=$PWD python benchmarks/brax_throughput.py [--env ant] [--backend positional]
      [--num-envs 256] [--unroll 10] [--minibatches 16] [--epochs 4] [--iters 10]
      [--which both|brax|ours]

Timing: Brax reports `training/sps` per training epoch; the first epoch includes compilation,
so the table shows the second (compile excluded). Ours is timed the same way.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def _shim_removed_jax_apis() -> None:
  """Re-creates jax.device_put_replicated / device_put_sharded (removed in jax 0.10)."""
  if not hasattr(jax, "device_put_replicated"):
    def device_put_replicated(x, devices):
      return jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
    jax.device_put_replicated = device_put_replicated
  if not hasattr(jax, "device_put_sharded"):
    def device_put_sharded(shards, devices):
      del devices
      return jax.tree.map(lambda *a: jnp.stack(a), *shards)
    jax.device_put_sharded = device_put_sharded


def bench_brax(args, strong_types: bool = False) -> float:
  """Brax's PPO trainer; returns env steps/s of the second training epoch.

  strong_types: also cast the env's reset/step outputs to strong dtypes (as our wrapper does);
    Brax's ant returns weak-typed reward/done, which makes its rollout scan much slower on CPU.
  """
  _shim_removed_jax_apis()
  from brax import envs  # pylint: disable=import-outside-toplevel
  from brax.training.agents.ppo import train as ppo  # pylint: disable=import-outside-toplevel
  from rgpo_jax.envs.brax import _strong  # pylint: disable=import-outside-toplevel
  env = envs.get_environment(args.env, backend=args.backend)
  if strong_types:
    reset, step = env.reset, env.step
    env.reset = lambda rng: _strong(reset(rng))
    env.step = lambda state, action: _strong(step(state, action))
  if args.num_envs % args.minibatches:
    raise ValueError("num_envs must be divisible by minibatches")
  steps_per_iter = args.num_envs * args.unroll
  sps = []
  ppo.train(environment=env, num_timesteps=2 * args.iters * steps_per_iter, num_evals=3,
            run_evals=False, num_envs=args.num_envs, episode_length=1000, action_repeat=1,
            unroll_length=args.unroll, batch_size=args.num_envs // args.minibatches,
            num_minibatches=args.minibatches, num_updates_per_batch=args.epochs,
            normalize_observations=True, learning_rate=3e-4, entropy_cost=1e-2,
            discounting=0.97, reward_scaling=10.0, seed=0,
            progress_fn=lambda step, m: sps.append(float(m.get("training/sps", np.nan))))
  return sps[-1]


def bench_ours(args, hidden: tuple[int, ...], activation: str) -> float:
  """rgpo_jax's trainer (PPO gate, obs normalisation) on the same settings; steps/s after
  compilation, timing `args.iters` updates as one compiled chunk (as `rgpo train` runs them)."""
  from rgpo_jax.training.config import TrainConfig, hparams_from_config  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.train import Trainer  # pylint: disable=import-outside-toplevel
  cfg = TrainConfig(env=f"brax:{args.env}", env_kwargs=(("backend", args.backend),),
                    normalize_obs=True, algo="ppo", num_envs=args.num_envs,
                    num_steps=args.unroll, total_steps=2 * args.iters * args.num_envs * args.unroll,
                    update_epochs=args.epochs, num_minibatches=args.minibatches, lr=3e-4,
                    gamma=0.97, ent_coef=1e-2, hidden=hidden, activation=activation)
  trainer = Trainer(cfg)
  hp = hparams_from_config(cfg)
  run = jax.jit(lambda s: trainer.train_chunk(s, hp, args.iters))
  state = jax.jit(trainer.init)(jax.random.key(0), hp)
  state, _ = run(state)  # compile + first chunk
  jax.block_until_ready(state)
  t = time.time()
  state, _ = run(state)
  jax.block_until_ready(state)
  return args.iters * cfg.batch_size / (time.time() - t)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--env", default="ant")
  p.add_argument("--backend", default="positional")
  p.add_argument("--num-envs", type=int, default=256)
  p.add_argument("--unroll", type=int, default=10)
  p.add_argument("--minibatches", type=int, default=16)
  p.add_argument("--epochs", type=int, default=4)
  p.add_argument("--iters", type=int, default=10, help="training iterations timed per epoch")
  p.add_argument("--which", default="all", choices=("all", "brax", "brax-strong", "ours"))
  args = p.parse_args()
  rows = []
  if args.which in ("all", "brax"):
    t = time.time()
    rows.append(("brax ppo", bench_brax(args), time.time() - t))
  if args.which in ("all", "brax-strong"):
    t = time.time()
    rows.append(("brax ppo + strong env types", bench_brax(args, True), time.time() - t))
  if args.which in ("all", "ours"):
    t = time.time()
    rows.append(("rgpo_jax (64,64) tanh", bench_ours(args, (64, 64), "tanh"), time.time() - t))
    t = time.time()
    rows.append(("rgpo_jax 5x256 silu", bench_ours(args, (256,) * 5, "silu"), time.time() - t))
  print(f"\n{args.env} ({args.backend}), {args.num_envs} envs x unroll {args.unroll}, "
        f"{args.minibatches} minibatches x {args.epochs} epochs, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  print(f"{'trainer':<28} {'env steps/s':>12} {'wall s (incl. compile)':>24}")
  for name, sps, wall in rows:
    print(f"{name:<28} {sps:>12,.0f} {wall:>24.1f}")


if __name__ == "__main__":
  main()
