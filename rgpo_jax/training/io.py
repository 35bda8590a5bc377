"""The host loop: compiled chunks of updates, progress, metrics.jsonl, summary.json.

The host only does I/O. Chunk i+1 is dispatched (asynchronously) before chunk i's metrics are
written, so writing overlaps with training. Compilation is ahead-of-time (`.lower().compile()`)
and timed separately: `steps_per_second` counts environment steps of all runs per second of
training, compile excluded.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rgpo_jax.training.config import TrainConfig
from rgpo_jax.training.sweep import Sweep
from rgpo_jax.training.train import METRICS

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json")


def check_out_dir(out: str | None) -> None:
  """Refuse an --out folder that already holds a run (never overwrite an earlier run's files)."""
  if out is None:
    return
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out!r} exists and is not a directory")
  existing = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
  if existing:
    raise ValueError(f"--out {out!r} already holds a run ({', '.join(existing)}); choose a new "
                     f"folder (earlier runs are never overwritten)")


def chunk_schedule(start: int, total: int, chunk: int, checkpoint_every: int = 0) -> list[int]:
  """Chunk sizes covering updates [start, total): at most `chunk` each, and ending exactly on
  every multiple of `checkpoint_every` (> 0) so that checkpoints fall between chunks."""
  chunk = max(1, chunk)
  if checkpoint_every:  # equal chunks that divide the checkpoint interval: one compile
    chunk = min(chunk, checkpoint_every)
    while checkpoint_every % chunk:
      chunk -= 1
  sizes, u = [], start
  while u < total:
    end = min(total, u + chunk)
    if checkpoint_every:
      end = min(end, (u // checkpoint_every + 1) * checkpoint_every)
    sizes.append(end - u)
    u = end
  return sizes


def final_window(num_updates: int) -> int:
  """Updates averaged for a run's final return: the last 10% (at least 1)."""
  return max(1, num_updates // 10)


def final_returns(episode_return: np.ndarray, episodes: np.ndarray) -> np.ndarray:
  """Per-run final return: mean return of all episodes completed in the last 10% of updates.

  Args:
    episode_return, episodes: [..., U] per-update mean return (NaN if none) and episode count.
  Returns:
    [...] episode-weighted mean (NaN for a run with no completed episode in the window).
  """
  w = final_window(episode_return.shape[-1])
  ret, n = episode_return[..., -w:], episodes[..., -w:]
  total = np.sum(np.where(n > 0, ret * n, 0.0), axis=-1)
  count = np.sum(n, axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _json_float(x, digits: int | None = None):
  x = float(x)
  if not math.isfinite(x):
    return None
  return float(f"{x:.{digits}g}") if digits else x


def summarize(sweep: Sweep, metrics: dict[str, np.ndarray], compile_seconds: float,
              train_seconds: float) -> dict[str, Any]:
  """summary.json content from [H, S, U] metrics."""
  cfg = sweep.config
  finals = final_returns(metrics["episode_return"], metrics["episodes"])  # [H, S]
  steps = sweep.num_runs * cfg.num_updates * cfg.batch_size
  per_setting = []
  for h, setting in enumerate(sweep.settings):
    per_setting.append({
        "hparams": setting,
        "final_return_mean": _json_float(np.nanmean(finals[h])) if np.any(np.isfinite(finals[h])) else None,
        "final_return_std": _json_float(np.nanstd(finals[h])) if np.any(np.isfinite(finals[h])) else None,
        "final_return_per_seed": [_json_float(v) for v in finals[h]],
        "kl_spike_rate": _json_float(np.mean(metrics["kl_spike"][h])),
        "approx_kl_mean": _json_float(np.mean(metrics["approx_kl"][h])),
    })
  flat = finals.reshape(-1)
  ok = np.isfinite(flat)
  return {
      "env": cfg.env, "algo": cfg.algo, "num_settings": sweep.num_settings,
      "num_seeds": sweep.num_seeds, "num_runs": sweep.num_runs,
      "num_updates": cfg.num_updates, "env_steps_per_run": cfg.num_updates * cfg.batch_size,
      "final_return_window_updates": final_window(cfg.num_updates),
      "final_return_mean": _json_float(np.mean(flat[ok])) if ok.any() else None,
      "final_return_std": _json_float(np.std(flat[ok])) if ok.any() else None,
      "final_return_per_run": [_json_float(v) for v in flat],
      "kl_spike_rate": _json_float(np.mean(metrics["kl_spike"])),
      "kl_spike_threshold": cfg.kl_spike_threshold,
      "approx_kl_mean": _json_float(np.mean(metrics["approx_kl"])),
      "steps_per_second": steps / train_seconds if train_seconds > 0 else None,
      "compile_seconds": compile_seconds, "train_seconds": train_seconds,
      "devices": [str(d) for d in sweep.devices], "data_parallel": sweep.data_parallel,
      "per_setting": per_setting,
  }


def _metric_lines(sweep: Sweep, chunk: dict[str, np.ndarray], first_update: int) -> list[str]:
  cfg = sweep.config
  lines = []
  num = next(iter(chunk.values())).shape[1]
  for u in range(num):
    update = first_update + u
    for r in range(sweep.num_runs):
      rec = {"run": r, "seed": int(sweep.seed_of_run[r]),
             "hparams": sweep.settings[sweep.setting_of_run[r]], "update": update + 1,
             "env_steps": (update + 1) * cfg.batch_size}
      for name in METRICS:
        rec[name] = _json_float(chunk[name][r, u], digits=7)  # float32 precision
      lines.append(json.dumps(rec))
  return lines


def run_training(config: TrainConfig, grid: dict[str, Sequence[Any]] | None = None,
                 num_seeds: int = 1, seed: int = 0, out: str | None = None,
                 progress: bool = True, log: Callable[[str], None] = print,
                 extra_config: dict[str, Any] | None = None, checkpoint_every: int = 0,
                 keep_checkpoints: int = 3, resume: bool = False,
                 data_parallel: int | None = None) -> dict[str, Any]:
  """Validate, compile, train in chunks, write files; return the summary.

  Files in `out` (if given): config.json (the config, sweep grid, seeds), metrics.jsonl (one
  line per update per run, with its seed and hyperparameters), summary.json (with a sha256
  `params_checksum` of the final parameters), and checkpoints/ (the full training state every
  `checkpoint_every` updates if > 0, and always at the end; the last `keep_checkpoints` kept).

  With `resume=True`, `out` is a stopped run (config.json present, summary.json absent): its
  latest good checkpoint is restored (refused with a clear error if it belongs to another
  config) and training continues to `num_updates`; metrics.jsonl keeps its lines up to the
  checkpoint and continues from there. The caller passes the run's own config (see
  `resume.sweep_from_run`).
  """
  from rgpo_jax.training import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training import resume as resume_lib  # pylint: disable=import-outside-toplevel
  if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
      or checkpoint_every < 0:
    raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
  if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) \
      or keep_checkpoints < 1:
    raise ValueError(f"keep_checkpoints must be a positive integer, got {keep_checkpoints!r}")
  if resume:
    if out is None or not os.path.isfile(os.path.join(out, "config.json")):
      raise ValueError(f"--resume needs a run folder holding config.json, got {out!r}")
    if os.path.exists(os.path.join(out, "summary.json")):
      raise ValueError(f"run {out!r} already finished (summary.json exists); nothing to resume")
  else:
    check_out_dir(out)
  sweep = Sweep(config, grid, num_seeds=num_seeds, seed=seed,  # validates before compiling
                data_parallel=data_parallel)
  cfg = sweep.config
  run_config = {"config": cfg.to_dict(), "grid": sweep.grid, "seeds": num_seeds, "seed": seed,
                **(extra_config or {})}
  start_update, prior_records = 0, []
  if resume:
    run_config = resume_lib.load_run_config(out)
    step, state = resume_lib.restore_state(out, sweep, run_config)  # raises before any write
    start_update = int(step)
    prior_records = resume_lib.truncate_metrics(out, start_update)
    metrics_file = open(os.path.join(out, "metrics.jsonl"), "a")
    log(f"resuming {out} from update {start_update} of {cfg.num_updates}")
  elif out is not None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "x") as f:
      json.dump(run_config, f, indent=2)
    metrics_file = open(os.path.join(out, "metrics.jsonl"), "x")
  else:
    metrics_file = None
  checkpointer = None
  if out is not None:
    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(out, resume_lib.CHECKPOINT_DIR),
        resume_lib.checkpoint_metadata(sweep, run_config), keep=keep_checkpoints)

  t0 = time.perf_counter()
  if not resume:
    state = sweep.init()
  hp = sweep.place(sweep.hparams)
  sizes = chunk_schedule(start_update, cfg.num_updates, cfg.chunk_size, checkpoint_every)
  compiled = {s: sweep.compile_chunk(state, s) for s in sorted(set(sizes))}
  jax.block_until_ready(state)
  compile_seconds = time.perf_counter() - t0
  dp = sweep.data_parallel
  log(f"compiled in {compile_seconds:.1f} s: {sweep.num_runs} run(s) on {len(sweep.devices)} "
      f"device(s){f' (each run data-parallel over {dp})' if dp > 1 else ''}, "
      f"{cfg.num_updates - start_update} updates in {len(sizes)} chunk(s) of "
      f"{sizes[0] if sizes else 0}")

  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=sweep.num_runs * cfg.num_updates * cfg.batch_size, unit="step",
               unit_scale=True,
               desc=f"{cfg.algo} {cfg.env}")
  all_metrics = []
  pending = None  # (metrics on device, first update)
  done_updates = start_update
  t1 = time.perf_counter()

  def flush(pending):
    m = jax.device_get(pending[0])
    m = {k: np.asarray(v) for k, v in m.items()}
    all_metrics.append(m)
    if metrics_file is not None:
      metrics_file.write("\n".join(_metric_lines(sweep, m, pending[1])) + "\n")
    if bar is not None:
      bar.update(sweep.num_runs * m["lr"].shape[1] * cfg.batch_size)
      ret = np.nanmean(m["episode_return"][:, -1]) if np.any(np.isfinite(m["episode_return"][:, -1])) else float("nan")
      bar.set_postfix(ret=f"{ret:.1f}", kl=f"{np.mean(m['approx_kl'][:, -1]):.4f}")

  for size in sizes:
    state, m = compiled[size](state, hp)  # dispatched asynchronously
    if pending is not None:
      flush(pending)  # overlaps with the chunk just dispatched
    pending = (m, done_updates)
    done_updates += size
    if checkpointer is not None and (
        done_updates == cfg.num_updates
        or (checkpoint_every and done_updates % checkpoint_every == 0)):
      flush(pending)  # metrics up to the checkpoint are on disk before it is
      pending = None
      metrics_file.flush()
      checkpointer.save(done_updates, state)
  if pending is not None:
    flush(pending)
  jax.block_until_ready(state)
  train_seconds = time.perf_counter() - t1
  if bar is not None:
    bar.close()
  if metrics_file is not None:
    metrics_file.close()
  if checkpointer is not None:
    checkpointer.close()

  if prior_records:
    prior = resume_lib.metrics_from_records(prior_records, sweep.num_runs, start_update, METRICS)
    all_metrics.insert(0, prior)
  metrics = {k: np.concatenate([m[k] for m in all_metrics], axis=1) for k in all_metrics[0]}
  summary = summarize(sweep, sweep.reshape(metrics), compile_seconds, train_seconds)
  params = jax.device_get(state.params)
  summary["params_checksum"] = ckpt_lib.params_checksum(params)
  summary["params_checksum_per_run"] = [
      ckpt_lib.params_checksum(jax.tree.map(lambda x, r=r: x[r], params))
      for r in range(sweep.num_runs)]
  summary["resumed_from_update"] = start_update if resume else None
  if start_update:
    steps = sweep.num_runs * (cfg.num_updates - start_update) * cfg.batch_size
    summary["steps_per_second"] = steps / train_seconds if train_seconds > 0 else None
  if out is not None:
    with open(os.path.join(out, "summary.json"), "x") as f:
      json.dump(summary, f, indent=2)
  summary["_final_state"] = state
  return summary
