"""The host loop: compiled chunks of updates, progress, metrics.jsonl, checkpoints, summary.json.

The host only does I/O. Chunk i+1 is dispatched (asynchronously) before chunk i's metrics are
written, so writing overlaps with training. Compilation is ahead-of-time (`.lower().compile()`)
and timed separately: `steps_per_second` counts environment steps of all runs per second of
training, compile excluded.

`run_training` is five steps, one function each: open the run folder (`resume.open_run`:
check it, write or reload config.json, restore the latest good checkpoint or initialise),
compile the chunks (`_compile`), run the chunk loop (`_train_chunks`, which stops cleanly after
the current chunk on Ctrl-C), and finish (`_finish`: summary.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rgpo_jax.training.config import TrainConfig
from rgpo_jax.training.sweep import Sweep
from rgpo_jax.training.train import METRICS

DEFAULT_CHECKPOINT_MINUTES = 5.0


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C stopped `run_training` after a chunk; its checkpoint and metrics are on disk.

  Attributes: out (the run folder), update (the checkpointed update), num_updates (the total).
  """

  def __init__(self, out: str, update: int, num_updates: int):
    super().__init__(f"interrupted at update {update} of {num_updates}")
    self.out, self.update, self.num_updates = out, update, num_updates


def _positive_int(name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class RunControl:
  """How a run is executed and saved, not what it computes. Saved in config.json["run"] and
  restored by `--resume` (where a flag given again explicitly replaces the saved value).

  checkpoint_every: also checkpoint every N updates (0: only by time, at the end and on Ctrl-C).
  checkpoint_minutes: checkpoint after the first chunk that ends this many minutes after the
    previous save (0: off). Default 5: a killed run loses at most ~5 minutes (plus a chunk).
  keep_checkpoints: the last K checkpoints are kept.
  data_parallel: devices per run (None: automatic; see `Sweep`).
  cpu_devices: the CLI's `--cpu-devices` (split runs over forced host CPU devices).
  """

  checkpoint_every: int = 0
  checkpoint_minutes: float = DEFAULT_CHECKPOINT_MINUTES
  keep_checkpoints: int = 3
  data_parallel: int | None = None
  cpu_devices: bool = True

  def validate(self) -> "RunControl":
    _positive_int("checkpoint_every", self.checkpoint_every, 0)
    _positive_int("keep_checkpoints", self.keep_checkpoints, 1)
    if self.data_parallel is not None:
      _positive_int("data_parallel", self.data_parallel, 1)
    m = self.checkpoint_minutes
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
      raise ValueError(f"checkpoint_minutes must be a number >= 0 (0: off), got "
                       f"checkpoint_minutes={m!r}")
    return self

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any] | None) -> "RunControl":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (d or {}).items() if k in names})


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


def _mean_std(values: np.ndarray) -> tuple[float | None, float | None]:
  """(mean, std) of the finite entries as JSON floats, (None, None) if there are none."""
  ok = values[np.isfinite(values)]
  if not ok.size:
    return None, None
  return _json_float(np.mean(ok)), _json_float(np.std(ok))


def summarize(sweep: Sweep, metrics: dict[str, np.ndarray], compile_seconds: float,
              train_seconds: float) -> dict[str, Any]:
  """summary.json content from [H, S, U] metrics."""
  cfg = sweep.config
  finals = final_returns(metrics["episode_return"], metrics["episodes"])  # [H, S]
  steps = sweep.num_runs * cfg.num_updates * cfg.batch_size
  per_setting = []
  for h, setting in enumerate(sweep.settings):
    mean, std = _mean_std(finals[h])
    per_setting.append({
        "hparams": setting, "final_return_mean": mean, "final_return_std": std,
        "final_return_per_seed": [_json_float(v) for v in finals[h]],
        "kl_spike_rate": _json_float(np.mean(metrics["kl_spike"][h])),
        "approx_kl_mean": _json_float(np.mean(metrics["approx_kl"][h])),
    })
  mean, std = _mean_std(finals.reshape(-1))
  return {
      "env": cfg.env, "algo": cfg.algo, "num_settings": sweep.num_settings,
      "num_seeds": sweep.num_seeds, "num_runs": sweep.num_runs,
      "num_updates": cfg.num_updates, "env_steps_per_run": cfg.num_updates * cfg.batch_size,
      "final_return_window_updates": final_window(cfg.num_updates),
      "final_return_mean": mean, "final_return_std": std,
      "final_return_per_run": [_json_float(v) for v in finals.reshape(-1)],
      "kl_spike_rate": _json_float(np.mean(metrics["kl_spike"])),
      "kl_spike_threshold": cfg.kl_spike_threshold,
      "approx_kl_mean": _json_float(np.mean(metrics["approx_kl"])),
      "steps_per_second": steps / train_seconds if train_seconds > 0 else None,
      "compile_seconds": compile_seconds, "train_seconds": train_seconds,
      "devices": [str(d) for d in sweep.devices], "data_parallel": sweep.data_parallel,
      "per_setting": per_setting,
  }


# The packages whose versions can change a run's numbers (a Brax env's physics, XLA's kernels,
# the optimiser), recorded in summary.json["software"]; those not installed are left out.
_RECORDED_PACKAGES = ("rgpo_jax", "jax", "jaxlib", "flax", "optax", "chex", "gymnax", "brax",
                      "mujoco", "numpy", "orbax-checkpoint")


def _source_commit(package_dir: str) -> str | None:
  """The git commit of the checkout the library was imported from ("+dirty" if its tracked
  files differ from it); None outside a git checkout or without git."""
  try:
    def git(*args):
      return subprocess.run(["git", "-C", package_dir, *args], capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    commit = git("rev-parse", "HEAD")
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.SubprocessError):
    return None


def software_versions() -> dict[str, Any]:
  """What a run's numbers depend on besides its config: Python, the installed versions of the
  packages above, the library's source commit (when imported from a git checkout), the
  platform, CPU model and accelerator kind. The same config, seeds, versions and machine type
  give bit-identical results (tested); another version or CPU type may not (docs/pitfalls.md:
  a Brax hopper cell re-run on another day with the same code, config and seeds ended with
  other parameters)."""
  versions = {"python": platform.python_version()}
  for name in _RECORDED_PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  versions["rgpo_jax_commit"] = _source_commit(os.path.dirname(os.path.abspath(__file__)))
  versions["platform"] = f"{platform.system()} {platform.machine()}"
  versions["cpu"] = _cpu_model()
  versions["device_kind"] = jax.devices()[0].device_kind
  return versions


def _cpu_model() -> str:
  """The CPU's model name: XLA compiles for the host's instruction set, so two CPU types may
  round differently and give different bits from the same run."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def json_floats(values: np.ndarray) -> list[str]:
  """JSON texts of `values` (row-major) at float32 precision: `json.dumps(_json_float(x, 7))`
  for each, i.e. the shortest repr of x rounded to 7 significant digits, `null` if not finite."""
  return [repr(float("%.7g" % v)) if math.isfinite(v) else "null"
          for v in np.asarray(values, np.float64).ravel().tolist()]


def _metric_lines(sweep: Sweep, chunk: dict[str, np.ndarray], first_update: int) -> list[str]:
  """metrics.jsonl lines of a chunk ([R, U] metrics), update-major: the text of
  `json.dumps({"run", "seed", "hparams", "update", "env_steps", *METRICS})` for each, built
  from a %-template (formatting dominates the host loop's CPU time)."""
  batch = sweep.config.batch_size
  template = ('{"run": %d, "seed": %d, "hparams": %s, "update": %d, "env_steps": %d, '
              + ", ".join(f'"{name}": %s' for name in METRICS) + "}")
  runs = [(r, int(sweep.seed_of_run[r]), json.dumps(sweep.settings[sweep.setting_of_run[r]]))
          for r in range(sweep.num_runs)]
  columns = [json_floats(np.asarray(chunk[name]).T) for name in METRICS]  # [U·R] each
  lines = []
  for i, values in enumerate(zip(*columns)):
    u, r = divmod(i, sweep.num_runs)
    update = first_update + u + 1
    lines.append(template % (runs[r] + (update, update * batch) + values))
  return lines


# ---------------------------------------------------------------------------------------------
# The chunk loop's host side: metrics, progress, checkpoint timing, Ctrl-C.


def last_finite_return(episode_return: np.ndarray) -> float | None:
  """Mean over runs of each run's last finite per-update return in a [R, U] chunk (None if no
  episode ended in the chunk): what the progress bar shows instead of `nan`."""
  finite = np.isfinite(episode_return)
  if not finite.any():
    return None
  last = episode_return.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)  # [R]
  values = episode_return[np.arange(len(last)), last]
  return float(np.mean(values[finite.any(axis=1)]))


class _MetricsSink:
  """Fetches each chunk's metrics, appends metrics.jsonl lines, updates the progress bar."""

  def __init__(self, sweep: Sweep, metrics_file, progress: bool, done_updates: int):
    self.sweep, self.file, self.chunks = sweep, metrics_file, []
    self.pending = None  # (metrics on device, first update)
    self.bar, self.shown_return = None, None
    if progress:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      cfg = sweep.config
      self.bar = tqdm(total=sweep.num_runs * cfg.num_updates * cfg.batch_size, unit="step",
                      unit_scale=True, desc=f"{cfg.algo} {cfg.env}",
                      initial=sweep.num_runs * done_updates * cfg.batch_size)

  def push(self, device_metrics, first_update: int) -> None:
    """Queue a dispatched chunk's metrics; write the previous chunk's (overlapping)."""
    self.drain()
    self.pending = (device_metrics, first_update)

  def drain(self) -> None:
    """Write the queued chunk's metrics (blocks until that chunk has finished)."""
    if self.pending is None:
      return
    m = {k: np.asarray(v) for k, v in jax.device_get(self.pending[0]).items()}
    first, self.pending = self.pending[1], None
    self.chunks.append(m)
    if self.file is not None:
      self.file.write("\n".join(_metric_lines(self.sweep, m, first)) + "\n")
    if self.bar is not None:
      self.bar.update(self.sweep.num_runs * m["lr"].shape[1] * self.sweep.config.batch_size)
      ret = last_finite_return(m["episode_return"])
      self.shown_return = self.shown_return if ret is None else ret
      shown = "-" if self.shown_return is None else f"{self.shown_return:.1f}"
      self.bar.set_postfix(ret=shown, kl=f"{np.mean(m['approx_kl'][:, -1]):.4f}")

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.file is not None:
      self.file.close()


class _CheckpointClock:
  """When to checkpoint: every `checkpoint_every` updates, after `checkpoint_minutes`, at the
  end, and when stopping."""

  def __init__(self, control: RunControl, num_updates: int):
    self.control, self.num_updates, self.last = control, num_updates, time.monotonic()

  def due(self, done_updates: int, stopping: bool) -> bool:
    c = self.control
    return (stopping or done_updates == self.num_updates
            or bool(c.checkpoint_every and done_updates % c.checkpoint_every == 0)
            or bool(c.checkpoint_minutes
                    and time.monotonic() - self.last >= 60 * c.checkpoint_minutes))

  def saved(self) -> None:
    self.last = time.monotonic()


@contextlib.contextmanager
def graceful_sigint(enabled: bool = True):
  """Within the block the first Ctrl-C (SIGINT) only sets `flag.requested`, so the caller can
  finish its unit of work and save; a second one raises KeyboardInterrupt at once.

  Inactive (a plain flag that stays False) when disabled, off the main thread, or when SIGINT
  is ignored (e.g. a job started in the background by a shell).
  """
  flag = type("StopFlag", (), {"requested": False})()
  if (not enabled or threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None)):
    yield flag
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    if flag.requested:
      raise KeyboardInterrupt
    flag.requested = True
    os.write(2, b"\nCtrl-C: stopping after the current chunk and saving a checkpoint "
                b"(Ctrl-C again to stop at once, without saving)\n")

  previous = signal.signal(signal.SIGINT, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGINT, previous)


def _train_chunks(sweep: Sweep, run, compiled: dict, sizes: list[int], control: RunControl,
                  sink: _MetricsSink):
  """Runs the chunks; checkpoints when due. Returns (state, done updates, stopped early)."""
  cfg, state, done = sweep.config, run.state, run.start_update
  hp = sweep.place(sweep.hparams)
  clock = _CheckpointClock(control, cfg.num_updates)
  with graceful_sigint(enabled=run.checkpointer is not None) as stop:
    for size in sizes:
      state, m = compiled[size](state, hp)  # dispatched asynchronously
      sink.push(m, done)  # writes the previous chunk's metrics meanwhile
      done += size
      if run.checkpointer is not None and clock.due(done, stop.requested):
        sink.drain()  # metrics up to the checkpoint are on disk before it is
        sink.file.flush()
        run.checkpointer.save(done, state)
        clock.saved()
      if stop.requested:
        break
    sink.drain()
    jax.block_until_ready(state)
  return state, done, stop.requested and done < cfg.num_updates


# ---------------------------------------------------------------------------------------------
# The steps of a run.


def _compile(sweep: Sweep, run, control: RunControl, log: Callable[[str], None]):
  """AOT-compiles every chunk size of the schedule. Returns (programs, sizes, seconds)."""
  cfg = sweep.config
  t0 = time.perf_counter()
  sizes = chunk_schedule(run.start_update, cfg.num_updates, cfg.chunk_size,
                         control.checkpoint_every)
  compiled = {s: sweep.compile_chunk(run.state, s) for s in sorted(set(sizes))}
  jax.block_until_ready(run.state)
  seconds = run.init_seconds + time.perf_counter() - t0
  dp = sweep.data_parallel
  log(f"compiled in {seconds:.1f} s: {sweep.num_runs} run(s) on {len(sweep.devices)} "
      f"device(s){f' (each run data-parallel over {dp})' if dp > 1 else ''}, "
      f"{cfg.num_updates - run.start_update} updates in {len(sizes)} chunk(s) of "
      f"{sizes[0] if sizes else 0}")
  return compiled, sizes, seconds


def _finish(sweep: Sweep, run, state, chunks: list[dict[str, np.ndarray]],
            compile_seconds: float, train_seconds: float) -> dict[str, Any]:
  """summary.json (with the parameters' checksums) from the metrics of all updates."""
  from rgpo_jax.training import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training import resume as resume_lib  # pylint: disable=import-outside-toplevel
  cfg = sweep.config
  if run.prior_records:
    chunks = [resume_lib.metrics_from_records(run.prior_records, sweep.num_runs,
                                              run.start_update, METRICS)] + chunks
  metrics = {k: np.concatenate([m[k] for m in chunks], axis=1) for k in chunks[0]}
  summary = summarize(sweep, sweep.reshape(metrics), compile_seconds, train_seconds)
  params = jax.device_get(state.params)
  summary["params_checksum"] = ckpt_lib.params_checksum(params)
  summary["params_checksum_per_run"] = [
      ckpt_lib.params_checksum(jax.tree.map(lambda x, r=r: x[r], params))
      for r in range(sweep.num_runs)]
  summary["resumed_from_update"] = run.start_update if run.resumed else None
  summary["software"] = software_versions()
  if run.start_update:
    steps = sweep.num_runs * (cfg.num_updates - run.start_update) * cfg.batch_size
    summary["steps_per_second"] = steps / train_seconds if train_seconds > 0 else None
  if run.out is not None:
    with open(os.path.join(run.out, "summary.json"), "x") as f:
      json.dump(summary, f, indent=2)
  summary["_final_state"] = state
  return summary


def run_training(config: TrainConfig, grid: dict[str, Sequence[Any]] | None = None,
                 num_seeds: int = 1, seed: int = 0, out: str | None = None,
                 progress: bool = True, log: Callable[[str], None] = print,
                 extra_config: dict[str, Any] | None = None,
                 control: RunControl | None = None, resume: bool = False) -> dict[str, Any]:
  """Validate, compile, train in chunks, write files; return the summary.

  Files in `out` (if given): config.json (the config, sweep grid, seeds, and the run-control
  settings under "run"), metrics.jsonl (one line per update per run, with its seed and
  hyperparameters), summary.json (with a sha256 `params_checksum` of the final parameters),
  and checkpoints/ (the full training state, see `RunControl` for when; the last K kept).

  Ctrl-C (with `out`, on the main thread): the current chunk finishes, a checkpoint and the
  metrics so far are written, and `TrainingInterrupted` (a KeyboardInterrupt) is raised.

  With `resume=True`, `out` is a stopped run (config.json present, summary.json absent): its
  latest good checkpoint is restored (refused with a clear error if it belongs to another
  config; a corrupt newest checkpoint falls back to the newest good one with a warning; a run
  stopped before its first checkpoint restarts from update 0) and training continues to
  `num_updates`; metrics.jsonl keeps its lines up to the checkpoint and continues from there.
  The caller passes the run's own config (see `resume.sweep_from_run`).
  """
  from rgpo_jax.training import resume as resume_lib  # pylint: disable=import-outside-toplevel
  control = (control or RunControl()).validate()
  resume_lib.check_run_folder(out, resume)
  sweep = Sweep(config, grid, num_seeds=num_seeds, seed=seed,  # validates before compiling
                data_parallel=control.data_parallel)
  run_config = {"config": sweep.config.to_dict(), "grid": sweep.grid, "seeds": num_seeds,
                "seed": seed, **(extra_config or {}), "run": control.to_dict()}
  run = resume_lib.open_run(sweep, out, run_config, control, resume, log)
  sink = None
  try:
    compiled, sizes, compile_seconds = _compile(sweep, run, control, log)
    sink = _MetricsSink(sweep, run.metrics_file, progress, run.start_update)
    t1 = time.perf_counter()
    state, done, stopped = _train_chunks(sweep, run, compiled, sizes, control, sink)
    train_seconds = time.perf_counter() - t1
  finally:
    if sink is not None:
      sink.close()
    elif run.metrics_file is not None:
      run.metrics_file.close()
    if run.checkpointer is not None:
      run.checkpointer.close()
  if stopped:
    raise TrainingInterrupted(out, done, sweep.config.num_updates)
  return _finish(sweep, run, state, sink.chunks, compile_seconds, train_seconds)
