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

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax.training import checkpoint as ckpt_lib

CHECKPOINT_DIR = "checkpoints"


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")


def config_hash(run_config: dict[str, Any]) -> str:
  """sha256 (first 16 hex) of the canonical JSON of config.json's content, without its "run"
  section (run control: checkpoint interval, devices ... which may change on resume)."""
  what = {k: v for k, v in run_config.items() if k != "run"}
  text = json.dumps(what, sort_keys=True, default=str)
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


def restore_latest_good(run_dir: str, sweep, run_config: dict[str, Any], target,
                        warn: Callable[[str], None] = print):
  """(update, state, corrupt steps) from the newest good checkpoint of `run_dir`, the state
  placed on the sweep's devices; None if there is no complete checkpoint at all.

  A corrupt checkpoint (unreadable, or not matching its checksum) is skipped for the next
  older one, with a one-line warning naming both. A checkpoint of another run (other env,
  network, config ...) is refused: `checkpoint.CheckpointMismatchError`, nothing touched.

  Raises:
    checkpoint.CheckpointCorruptError: every checkpoint is corrupt.
  """
  directory = os.path.join(run_dir, CHECKPOINT_DIR)
  metadata = checkpoint_metadata(sweep, run_config)
  corrupt = []
  for step in sorted(ckpt_lib.all_steps(directory), reverse=True):
    try:
      step, state = ckpt_lib.restore(directory, target, metadata, step=step)
    except ckpt_lib.CheckpointCorruptError as e:
      corrupt.append((step, e))
      continue
    if corrupt:
      bad = ", ".join(os.path.join(directory, str(s)) for s, _ in corrupt)
      warn(f"warning: checkpoint {bad} is corrupt; using the newest good one, "
           f"{os.path.join(directory, str(step))}")
    return step, sweep.place_state(state), [s for s, _ in corrupt]
  if corrupt:
    raise ckpt_lib.CheckpointCorruptError(
        f"every checkpoint in {directory} is corrupt (steps {[s for s, _ in corrupt]}); the "
        f"newest: {corrupt[0][1]}")
  return None


def restore_state(run_dir: str, sweep, run_config: dict[str, Any], target=None,
                  warn: Callable[[str], None] = print):
  """(update, state) from the newest good checkpoint (see `restore_latest_good`).

  Raises a `checkpoint.CheckpointError` subclass (mismatch / all corrupt / none) otherwise.
  """
  target = sweep.init() if target is None else target
  restored = restore_latest_good(run_dir, sweep, run_config, target, warn)
  if restored is None:
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    contents = sorted(os.listdir(directory)) if os.path.isdir(directory) else "no folder"
    raise ckpt_lib.CheckpointError(f"no complete checkpoint in {directory} ({contents})")
  return restored[0], restored[1]


# ------------------------------------------------------------------------------------------
# Opening a run folder: new, or resumed.
# ------------------------------------------------------------------------------------------

def check_run_folder(out: str | None, resume: bool) -> None:
  """Refuse, before anything is compiled or written, a folder that cannot take this run.

  New run: `out` must not hold a run (earlier runs are never overwritten; an unfinished one
  is named with the command that continues it). Resume: `out` holds config.json and no
  summary.json.
  """
  if out is None:
    if resume:
      raise ValueError("--resume needs a run folder")
    return
  if resume:
    if not os.path.isfile(os.path.join(out, "config.json")):
      raise ValueError(f"--resume needs a run folder holding config.json, got {out!r}")
    if os.path.exists(os.path.join(out, "summary.json")):
      raise ValueError(f"run {out!r} already finished (summary.json exists); nothing to resume")
    return
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out!r} exists and is not a directory")
  existing = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
  if not existing:
    return
  hint = "choose a new folder (earlier runs are never overwritten)"
  if "summary.json" not in existing and "config.json" in existing:
    step = ckpt_lib.latest_step(os.path.join(out, CHECKPOINT_DIR))
    where = ("it stopped before its first checkpoint, so it restarts from update 0"
             if step is None else f"its last checkpoint is at update {step}")
    hint = (f"it is unfinished ({where}): continue it with `rgpo train --resume {out}`, or "
            + hint)
  raise ValueError(f"--out {out!r} already holds a run ({', '.join(existing)}); {hint}")


@dataclasses.dataclass
class OpenRun:
  """A run folder ready for the chunk loop (all None/empty for a run without a folder)."""

  out: str | None
  run_config: dict[str, Any]
  state: Any  # the sweep's TrainState to continue from
  start_update: int
  resumed: bool
  prior_records: list[dict[str, Any]]  # metrics.jsonl records up to start_update
  metrics_file: Any
  checkpointer: Any
  init_seconds: float  # initialising (or restoring) the state


def strong_types(state):
  """`state` with every weak-typed leaf made strong (same dtype and values). A restored state is
  strong throughout; casting a fresh one too gives both the same compiled chunk program (one
  persistent-cache entry for a run and its resumption)."""
  def cast(x):
    if getattr(x, "weak_type", False):
      return jax.lax.convert_element_type(x, x.dtype)
    return x
  return jax.tree.map(cast, state)


def _checkpointer(out: str, sweep, run_config: dict[str, Any], control):
  return ckpt_lib.Checkpointer(os.path.join(out, CHECKPOINT_DIR),
                               checkpoint_metadata(sweep, run_config),
                               keep=control.keep_checkpoints)


def _write_json_atomically(path: str, content: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(content, f, indent=2)
  os.replace(tmp, path)


def open_run(sweep, out: str | None, run_config: dict[str, Any], control, resume: bool,
             log: Callable[[str], None] = print) -> OpenRun:
  """A new run: writes config.json (`run_config`) and an empty metrics.jsonl into `out` and
  initialises the state. A resumed run: see `_reopen`."""
  if resume:
    return _reopen(sweep, out, control, log)
  files, checkpointer = None, None
  if out is not None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "x") as f:
      json.dump(run_config, f, indent=2)
    files = open(os.path.join(out, "metrics.jsonl"), "x")
    checkpointer = _checkpointer(out, sweep, run_config, control)
  t0 = time.perf_counter()
  state = strong_types(sweep.init())
  return OpenRun(out, run_config, state, 0, False, [], files, checkpointer,
                 time.perf_counter() - t0)


def _reopen(sweep, out: str, control, log: Callable[[str], None]) -> OpenRun:
  """Restores the newest good checkpoint of a stopped run (refusing one of another run before
  writing anything), sets corrupt newer steps aside (`<step>.corrupt`), truncates metrics.jsonl
  to the checkpoint and records `control` in config.json. A run stopped before its first
  checkpoint restarts from update 0."""
  run_config = load_run_config(out)
  t0 = time.perf_counter()
  target = sweep.init()
  restored = restore_latest_good(out, sweep, run_config, target, warn=log)
  init_seconds = time.perf_counter() - t0
  if restored is None:
    log(f"{out} has no complete checkpoint (it stopped before its first one): restarting it "
        f"from update 0 with its own settings")
    start, state, corrupt = 0, strong_types(target), []
  else:
    start, state, corrupt = restored
  for step in corrupt:
    ckpt_lib.set_aside(os.path.join(out, CHECKPOINT_DIR), step)
  if run_config.get("run") != control.to_dict():
    run_config["run"] = control.to_dict()
    _write_json_atomically(os.path.join(out, "config.json"), run_config)
  prior = truncate_metrics(out, start)
  files = open(os.path.join(out, "metrics.jsonl"), "a")
  checkpointer = _checkpointer(out, sweep, run_config, control)
  if start:
    log(f"resuming {out} from update {start} of {sweep.config.num_updates}")
  return OpenRun(out, run_config, state, start, True, prior, files, checkpointer, init_seconds)


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


def evaluate_run(run_dir: str, num_episodes: int = 16, seed: int = 0,
                 warn: Callable[[str], None] = print) -> dict[str, Any]:
  """Deterministic-policy returns of every run in `run_dir`, from its newest good checkpoint
  (a corrupt newer one is skipped with a warning)."""
  sweep, run_config = sweep_from_run(run_dir)
  step, state = restore_state(run_dir, sweep, run_config, warn=warn)
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
