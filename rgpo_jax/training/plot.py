"""Learning curves from `rgpo train` runs: mean and spread across seeds, one line per setting,
one figure per environment and metric.

Legend labels name the algorithm, its gate parameters and every setting that differs between
the curves of a figure (e.g. two runs that differ only in lr are told apart by lr). The spread
band is ±1 std over seeds (drawn only with more than one seed) and, for `episode_return`,
clipped to the environment's possible returns where they are known (`return_range`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import warnings
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from rgpo_jax.training.config import ALGOS, RULE_HPARAMS, UPDATE_RULE_ALGOS

# Record keys that are not metrics.
_RECORD_KEYS = ("run", "seed", "hparams", "update", "env_steps")
# Config fields that do not change what is computed (never worth a legend entry).
_HOST_FIELDS = ("updates_per_chunk",)


def load_run(path: str) -> tuple[dict, list[dict]]:
  """(config.json content, metrics.jsonl records) of a run folder."""
  cfg_path, met_path = os.path.join(path, "config.json"), os.path.join(path, "metrics.jsonl")
  if not os.path.exists(met_path) and os.path.exists(met_path + ".gz"):
    met_path += ".gz"  # archived runs (experiments/) keep their metrics gzipped
  for p in (cfg_path, met_path):
    if not os.path.exists(p):
      raise ValueError(f"{path!r} is not a run folder: {os.path.basename(p)} is missing")
  with open(cfg_path) as f:
    config = json.load(f)
  opener = gzip.open if met_path.endswith(".gz") else open
  with opener(met_path, "rt") as f:
    records = [json.loads(line) for line in f if line.strip()]
  return config, records


def return_range(config: dict[str, Any]) -> tuple[float, float] | None:
  """(lowest, highest) possible episode return of the run's env, None where not known.

  CartPole: +1 per step up to the time limit (default 500); Acrobot and MountainCar: −1 per
  step (limits 500 and 200); Pendulum: cost ≤ π² + 0.1·8² + 0.001·2² per step (200 steps).
  """
  env = config["env"]
  limit = dict(config.get("env_kwargs") or {}).get("max_episode_steps")
  known = {"CartPole-v1": (500, lambda n: (0.0, float(n))),
           "Acrobot-v1": (500, lambda n: (-float(n), 0.0)),
           "MountainCar-v0": (200, lambda n: (-float(n), 0.0)),
           "Pendulum-v1": (200, lambda n: (-(np.pi ** 2 + 0.1 * 64 + 0.001 * 4) * n, 0.0))}
  if env not in known:
    return None
  default, bounds = known[env]
  try:
    return bounds(int(limit) if limit is not None else default)
  except (TypeError, ValueError):
    return None


@dataclasses.dataclass
class Curve:
  """One setting of one run folder: `values` [seeds, updates] at `steps` [updates]."""

  run: str
  env: str
  settings: dict[str, Any]  # the full config with this setting's swept values
  steps: np.ndarray
  values: np.ndarray
  value_range: tuple[float, float] | None


def run_curves(run: str, config: dict, records: list[dict], metric: str) -> list[Curve]:
  """One `Curve` per hyperparameter setting of a run folder."""
  base = dict(config["config"])
  grouped = defaultdict(lambda: defaultdict(dict))
  for rec in records:
    key = json.dumps(rec.get("hparams") or {}, sort_keys=True)
    value = rec.get(metric)
    grouped[key][rec["seed"]][rec["env_steps"]] = np.nan if value is None else value
  curves = []
  for key, by_seed in grouped.items():
    steps = sorted({t for per_seed in by_seed.values() for t in per_seed})
    values = np.array([[by_seed[s].get(t, np.nan) for t in steps] for s in sorted(by_seed)])
    settings = {**base, **json.loads(key), "seeds": values.shape[0]}
    curves.append(Curve(run, base["env"], settings, np.asarray(steps), values,
                        return_range(base) if metric == "episode_return" else None))
  return curves


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (list, tuple)):
    return "x".join(_fmt(v) for v in value)
  if isinstance(value, dict):
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(value.items()))
  return str(value)


def _algo_fields(settings: dict[str, Any]) -> tuple[str, ...]:
  """The settings that define the algo: its gate's parameters and its update rule's."""
  algo = settings["algo"]
  gate_algo = settings.get("trpo_gate") if algo == "trpo" else algo
  rule = RULE_HPARAMS.get(UPDATE_RULE_ALGOS.get(algo, "gated"), ())
  return tuple(ALGOS.get(gate_algo, (None, ()))[1]) + tuple(rule)


def legend_labels(curves: Sequence[Curve]) -> list[str]:
  """'ALGO gate params, other differing settings (N seeds)' for each curve of one figure.

  The algo's gate parameters are always shown, other algos' gate parameters never (a PPO run's
  unused k says nothing); any other setting appears when it differs between the curves (e.g. lr).
  Curves still alike are told apart by their run folder.
  """
  keys = sorted({k for c in curves for k in c.settings} - {"algo", "env", "seeds",
                                                           *_HOST_FIELDS})
  # A setting missing from some runs' config (written before the field existed) is not a difference.
  differing = [k for k in keys
               if len({_fmt(c.settings[k]) for c in curves if c.settings.get(k) is not None}) > 1]
  all_gate_fields = {f for _, fields in ALGOS.values() for f in fields}
  labels = []
  for c in curves:
    shown = [k for k in _algo_fields(c.settings) if c.settings.get(k) is not None]
    shown += [k for k in differing if k not in shown and k not in all_gate_fields]
    text = c.settings["algo"] + "".join(
        f"{' ' if i == 0 else ', '}{k}={_fmt(c.settings.get(k))}" for i, k in enumerate(shown))
    labels.append(text)
  for label in set(labels):
    same = [i for i, l in enumerate(labels) if l == label]
    if len(same) > 1:
      for i in same:
        labels[i] += f" [{os.path.basename(os.path.normpath(curves[i].run))}]"
  return [f"{l} ({c.values.shape[0]} seed{'s' if c.values.shape[0] > 1 else ''})"
          for l, c in zip(labels, curves)]


def figure_title(env: str, metric: str, curves: Sequence[Curve]) -> str:
  """'ENV: METRIC', with '(mean ± std over N seeds)' only where curves have N > 1 seeds."""
  counts = sorted({c.values.shape[0] for c in curves})
  if counts[-1] <= 1:
    return f"{env}: {metric}"
  if len(counts) == 1:
    return f"{env}: {metric} (mean ± std over {counts[0]} seeds)"
  return f"{env}: {metric} (mean ± std over seeds; counts in the legend)"


def _forward_fill(values: np.ndarray) -> np.ndarray:
  """Carry the last finite value forward (updates with no finished episode have NaN returns)."""
  out = values.copy()
  for row in out:
    last = np.nan
    for i, v in enumerate(row):
      if np.isfinite(v):
        last = v
      else:
        row[i] = last
  return out


def _draw(ax, curve: Curve, label: str, metric: str) -> None:
  values = curve.values
  if metric in ("episode_return", "episode_length"):
    values = _forward_fill(values)
  with warnings.catch_warnings():  # updates before any finished episode are NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
  line, = ax.plot(curve.steps, mean, label=label)
  if values.shape[0] > 1:
    low, high = mean - std, mean + std
    if curve.value_range is not None:
      low, high = np.clip(low, *curve.value_range), np.clip(high, *curve.value_range)
    ax.fill_between(curve.steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def _check_metric(metric: str, records: list[dict]) -> None:
  if records and metric not in records[0]:
    allowed = ", ".join(k for k in records[0] if k not in _RECORD_KEYS)
    raise ValueError(f"unknown metric {metric!r}; allowed: {allowed}")


def plot_runs(runs: Sequence[str], out: str | None = None,
              metrics: Sequence[str] = ("episode_return",)) -> list[str]:
  """One PNG per metric and environment: mean across seeds (line) and ±1 std band.

  Returns:
    the written paths: `<out>/<metric>.png` when all runs share one env, else
    `<out>/<metric>-<env>.png` per env (out defaults to `<first run>/plots`).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  loaded = [(run, *load_run(run)) for run in runs]
  out = out or os.path.join(runs[0], "plots")
  os.makedirs(out, exist_ok=True)
  envs = list(dict.fromkeys(config["config"]["env"] for _, config, _ in loaded))
  paths = []
  for metric in metrics:
    for _, _, records in loaded:
      _check_metric(metric, records)
    for env in envs:
      curves = [c for run, config, records in loaded if config["config"]["env"] == env
                for c in run_curves(run, config, records, metric)]
      fig, ax = plt.subplots(figsize=(7, 4.5))
      for curve, label in zip(curves, legend_labels(curves)):
        _draw(ax, curve, label, metric)
      ax.set_xlabel("environment steps per run")
      ax.set_ylabel(metric)
      ax.set_title(figure_title(env, metric, curves))
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
      slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in env)
      path = os.path.join(out, f"{metric}.png" if len(envs) == 1 else f"{metric}-{slug}.png")
      fig.tight_layout()
      fig.savefig(path, dpi=110)
      plt.close(fig)
      paths.append(path)
  return paths
