"""Fault-tolerant runs: checkpoint metadata, resuming a stopped run, evaluating a finished one.

A run folder written by `rgpo train --out runs/x` holds config.json, metrics.jsonl,
summary.json and `checkpoints/` (see `training/checkpoint.py`). The checkpointed object is the
sweep's whole training state `TrainState[R, ...]` (params, Adam state, observation statistics,
env states, last observations, PRNG keys, update counter, for all R runs), so a resumed run
continues bit-for-bit where the checkpoint was taken: no env is reset and no key is re-drawn.

`rgpo evaluate runs/x` restores the latest checkpoint (the final state of a finished run) and
reports the returns of the deterministic policy (Gaussian mean, clipped by the env; argmax for
discrete actions) on fresh episodes.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax.training import checkpoint as ckpt_lib

CHECKPOINT_DIR = "checkpoints"


def config_hash(run_config: dict[str, Any]) -> str:
  """sha256 (first 16 hex) of the canonical JSON of config.json's content."""
  text = json.dumps(run_config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_metadata(sweep, run_config: dict[str, Any]) -> dict[str, Any]:
  """Facts that must agree between a checkpoint and the run restoring it."""
  cfg, spec = sweep.config, sweep.trainer.env.spec
  return {
      "env": cfg.env,
      "env_kwargs": dict(cfg.env_kwargs),
      "obs_shape": list(spec.obs_shape),
      "action_kind": spec.action_kind,
      "action_size": spec.action_size,
      "network": {"hidden": list(cfg.hidden), "activation": cfg.activation},
      "algo": cfg.algo,
      "num_runs": sweep.num_runs,
      "config_hash": config_hash(run_config),
  }


def load_run_config(run_dir: str) -> dict[str, Any]:
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{run_dir!r} is not a run folder (no config.json)")
  with open(path) as f:
    return json.load(f)


def sweep_from_run(run_dir: str):
  """(Sweep, run_config) rebuilt from a run folder's config.json."""
  from rgpo_jax.training.config import TrainConfig  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.sweep import Sweep  # pylint: disable=import-outside-toplevel
  run_config = load_run_config(run_dir)
  config = TrainConfig.from_dict(run_config["config"])
  sweep = Sweep(config, run_config.get("grid") or None, num_seeds=int(run_config["seeds"]),
                seed=int(run_config["seed"]))
  return sweep, run_config


def restore_state(run_dir: str, sweep, run_config: dict[str, Any], target=None):
  """(update, state) from the latest good checkpoint of `run_dir`, placed on the sweep's devices.

  Raises a `checkpoint.CheckpointError` subclass (mismatch / corrupt / missing) otherwise.
  """
  target = sweep.init() if target is None else target
  step, state = ckpt_lib.restore(os.path.join(run_dir, CHECKPOINT_DIR), target,
                                 checkpoint_metadata(sweep, run_config))
  return step, sweep.place_state(state)


def truncate_metrics(run_dir: str, update: int) -> list[dict[str, Any]]:
  """Keeps metrics.jsonl lines with update <= `update` (rewritten atomically); returns them."""
  path = os.path.join(run_dir, "metrics.jsonl")
  records = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        line = line.strip()
        if not line:
          continue
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:
          break  # a line cut by the interruption: everything after it is lost anyway
        if rec.get("update", 0) <= update:
          records.append(rec)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for rec in records:
      f.write(json.dumps(rec) + "\n")
  os.replace(tmp, path)
  return records


def metrics_from_records(records: list[dict[str, Any]], num_runs: int, num_updates: int,
                         names: tuple[str, ...]) -> dict[str, np.ndarray]:
  """[R, U] arrays (NaN for missing values) from metrics.jsonl records."""
  out = {n: np.full((num_runs, num_updates), np.nan, np.float64) for n in names}
  for rec in records:
    r, u = int(rec["run"]), int(rec["update"]) - 1
    if 0 <= u < num_updates and 0 <= r < num_runs:
      for n in names:
        v = rec.get(n)
        out[n][r, u] = np.nan if v is None else v
  return out


# ------------------------------------------------------------------------------------------
# Evaluation.
# ------------------------------------------------------------------------------------------

def deterministic_returns(trainer, params, obs_stats, key, num_episodes: int) -> jax.Array:
  """Undiscounted returns of the first episode of `num_episodes` envs under the mean policy.

  Args:
    trainer: the run's `Trainer` (env, network, normalisation switch).
    params, obs_stats: one run's parameters and observation statistics.
    key: PRNG key for the env resets.
    num_episodes: number of parallel envs (one episode each).

  Returns:
    [num_episodes] returns (each episode runs to termination or the time limit).
  """
  from rgpo_jax.networks import ActorCritic  # pylint: disable=import-outside-toplevel
  env = trainer.env
  k_reset, k_steps = jax.random.split(key)
  state, obs = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))

  def act(obs):
    dist = trainer.network.apply(params, trainer._norm(obs_stats, obs),  # pylint: disable=protected-access
                                 method=ActorCritic.policy)
    return dist.mode()

  def step(carry, key):
    state, obs, ret, active = carry
    state, ts = jax.vmap(env.step)(jax.random.split(key, num_episodes), state, act(obs))
    ret = ret + jnp.where(active, ts.reward, 0.0)
    active = active & ~(ts.terminated | ts.truncated)
    return (state, ts.obs, ret, active), None

  init = (state, obs, jnp.zeros(num_episodes, jnp.float32), jnp.ones(num_episodes, bool))
  (_, _, ret, _), _ = jax.lax.scan(step, init, jax.random.split(k_steps,
                                                               env.spec.max_episode_steps))
  return ret


def evaluate_run(run_dir: str, num_episodes: int = 16, seed: int = 0) -> dict[str, Any]:
  """Deterministic-policy returns of every run in `run_dir`, from its latest checkpoint."""
  sweep, run_config = sweep_from_run(run_dir)
  step, state = restore_state(run_dir, sweep, run_config)
  state = jax.device_get(state)
  trainer = sweep.trainer
  keys = jax.random.split(jax.random.key(seed), sweep.num_runs)
  fn = jax.jit(jax.vmap(lambda p, s, k: deterministic_returns(trainer, p, s, k, num_episodes)))
  returns = np.asarray(fn(state.params, state.obs_stats, keys))  # [R, episodes]
  per_run = returns.mean(axis=1)
  return {
      "run_dir": run_dir, "checkpoint_update": int(step),
      "num_updates": sweep.config.num_updates, "episodes_per_run": num_episodes,
      "deterministic_return_mean": float(per_run.mean()),
      "deterministic_return_std": float(per_run.std()),
      "deterministic_return_per_run": [float(x) for x in per_run],
      "seed_of_run": [int(s) for s in sweep.seed_of_run],
      "hparams_of_run": [sweep.settings[h] for h in sweep.setting_of_run],
  }
