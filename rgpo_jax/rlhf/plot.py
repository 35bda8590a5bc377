"""Plots of `rgpo rlhf` runs: reward over steps, and reward vs KL to the reference (Pareto view).

One curve per run folder (its method; the folder name too where two runs share a method), mean
over seeds with a ±1 std band where there is more than one seed:
  reward.png  the training batches' mean reward (thin; for an offline method such as dpo, the
              reward of its fixed pairs, dashed) and the evaluation reward (markers) against the
              step: only the markers compare methods;
  pareto.png  evaluation reward against KL̂(π_θ‖π_ref) at every evaluation (mean over seeds),
              from step 0 (open circle) to the end (filled): up and to the left is better.
`plot_rlhf_runs([run, ...], out)` compares several methods' folders in one figure, and
`results_table([run, ...])` lists their final evaluation (`rgpo rlhf-plot RUN ... --out DIR`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Sequence

import numpy as np

from rgpo_jax.rlhf_cli import OFFLINE_METHODS


def _load(run: str) -> tuple[str, list[dict]]:
  with open(os.path.join(run, "config.json")) as f:
    method = json.load(f)["config"]["method"]
  with open(os.path.join(run, "metrics.jsonl")) as f:
    return method, [json.loads(line) for line in f if line.strip()]


def _curve(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, std) over seeds of `key` where recorded."""
  by_step = defaultdict(list)
  for r in records:
    if r.get(key) is not None:
      by_step[r["step"]].append(r[key])
  steps = np.array(sorted(by_step))
  values = [np.asarray(by_step[s], np.float64) for s in steps]
  return (steps, np.array([v.mean() for v in values]), np.array([v.std() for v in values]))


def _labels(runs: Sequence[str], methods: Sequence[str]) -> list[str]:
  return [m if methods.count(m) == 1 else f"{m} [{os.path.basename(os.path.normpath(r))}]"
          for r, m in zip(runs, methods)]


def plot_rlhf_runs(runs: Sequence[str], out: str) -> list[str]:
  """Writes `<out>/reward.png` and `<out>/pareto.png`; returns their paths."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  loaded = [_load(r) for r in runs]
  labels = _labels(runs, [m for m, _ in loaded])
  os.makedirs(out, exist_ok=True)
  seeds = lambda records: len({r["seed"] for r in records})

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, (method, records) in zip(labels, loaded):
    steps, mean, std = _curve(records, "reward_mean")
    offline = method in OFFLINE_METHODS
    line, = ax.plot(steps, mean, "--" if offline else "-", lw=1, alpha=0.6,
                    label=f"{label}: " + ("its offline pairs" if offline else "training batches"))
    if seeds(records) > 1:
      ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
    steps, mean, std = _curve(records, "eval_reward")
    ax.errorbar(steps, mean, yerr=std if seeds(records) > 1 else None, fmt="o-",
                color=line.get_color(), ms=4, label=f"{label}: evaluation")
  ax.set(xlabel="step", ylabel="reward", title="Reward (mean ± std over seeds)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths = [os.path.join(out, "reward.png")]
  fig.savefig(paths[0], dpi=120)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4.5))
  for label, (_, records) in zip(labels, loaded):
    _, kl, _ = _curve(records, "eval_kl")
    _, reward, _ = _curve(records, "eval_reward")
    line, = ax.plot(kl, reward, "-", lw=1, label=label)
    ax.plot(kl[:1], reward[:1], "o", mfc="none", color=line.get_color())
    ax.plot(kl[-1:], reward[-1:], "o", color=line.get_color())
  ax.set(xlabel="KL̂(π_θ‖π_ref) per completion (nats)", ylabel="evaluation reward",
         title="Reward vs KL to the reference (open: step 0, filled: end)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(os.path.join(out, "pareto.png"))
  fig.savefig(paths[1], dpi=120)
  plt.close(fig)
  return paths


def results_table(runs: Sequence[str]) -> str:
  """A markdown table of the runs' summary.json: final evaluation reward and KL (mean ± std
  over seeds), seeds, steps and seconds per step."""
  fmt = lambda m, s: "n/a" if m is None else f"{m:.3f} ± {s:.3f}"
  lines = ["| method | run | seeds × steps | final reward | final KL to π_ref | s/step | "
           "CPU-s/step |", "|---|---|---|---|---|---|---|"]
  for run in runs:
    with open(os.path.join(run, "summary.json")) as f:
      s = json.load(f)
    per_step = lambda key: "n/a" if s.get(key) is None else f"{s[key]:.1f}"
    lines.append(f"| {s['method']} | {os.path.basename(os.path.normpath(run))} | "
                 f"{s['num_seeds']} × {s['steps']} | "
                 f"{fmt(s['final_eval_reward_mean'], s['final_eval_reward_std'])} | "
                 f"{fmt(s['final_eval_kl_mean'], s['final_eval_kl_std'])} | "
                 f"{per_step('seconds_per_step')} | {per_step('cpu_seconds_per_step')} |")
  return "\n".join(lines)
