"""Learning curves from `rgpo train` runs: mean and spread across seeds, one line per setting."""

from __future__ import annotations

import gzip
import json
import os
import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np


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


def curves(config: dict, records: list[dict], metric: str):
  """{label: (env_steps [U], values [S, U])} for one run folder."""
  cfg = config["config"]
  algo = cfg["algo"]
  fixed = {"rgpo": ("k",), "rgpo_pessimistic": ("k",), "rgpo_sigmoid": ("k",), "ppo": ("epsilon",),
           "truncated": ("low", "high")}.get(algo, ("tau",))
  fixed = [f for f in fixed if cfg.get(f) is not None and f not in (config.get("grid") or {})]
  if fixed:
    algo += " " + ", ".join(f"{f}={cfg[f]:g}" for f in fixed)
  grouped = defaultdict(lambda: defaultdict(dict))
  for rec in records:
    hp = rec.get("hparams") or {}
    label = algo + ("" if not hp else " " + ", ".join(f"{k}={v:g}" for k, v in hp.items()))
    value = rec.get(metric)
    grouped[label][rec["seed"]][rec["env_steps"]] = np.nan if value is None else value
  out = {}
  for label, by_seed in grouped.items():
    steps = sorted(next(iter(by_seed.values())))
    values = np.array([[by_seed[s].get(t, np.nan) for t in steps] for s in sorted(by_seed)])
    out[label] = (np.asarray(steps), values)
  return out


def _smooth_forward_fill(values: np.ndarray) -> np.ndarray:
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


def plot_runs(runs: Sequence[str], out: str | None = None,
              metrics: Sequence[str] = ("episode_return",)) -> list[str]:
  """One PNG per metric: mean across seeds (line) and its min–max and ±1 std bands.

  Returns:
    the written file paths (`<out>/<metric>.png`, out defaulting to `<first run>/plots`).
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  loaded = [(run, *load_run(run)) for run in runs]
  out = out or os.path.join(runs[0], "plots")
  os.makedirs(out, exist_ok=True)
  env = loaded[0][1]["config"]["env"]
  paths = []
  for metric in metrics:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, config, records in loaded:
      if records and metric not in records[0]:
        raise ValueError(f"unknown metric {metric!r}; allowed: "
                         f"{', '.join(k for k in records[0] if k not in ('run', 'seed', 'hparams', 'update', 'env_steps'))}")
      for label, (steps, values) in curves(config, records, metric).items():
        if metric in ("episode_return", "episode_length"):
          values = _smooth_forward_fill(values)
        with warnings.catch_warnings():  # updates before any finished episode are NaN
          warnings.simplefilter("ignore", RuntimeWarning)
          mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        n = values.shape[0]
        line, = ax.plot(steps, mean, label=f"{label} ({n} seed{'s' if n > 1 else ''})")
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                        linewidth=0)
    ax.set_xlabel("environment steps per run")
    ax.set_ylabel(metric)
    ax.set_title(f"{env}: {metric} (mean ± std across seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out, f"{metric}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths
