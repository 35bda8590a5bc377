"""`rgpo compare RUN... --out DIR`: training runs side by side, one table and one plot per env.

Every hyperparameter setting of every run folder (written by `rgpo train`) becomes one row:

    run, env, algo, settings, seeds, env steps per run,
    final return mean ± std over seeds, coefficient of variation std/|mean|,
    interquartile mean (IQM) with a 95% bootstrap interval,
    KL-spike rate, mean and max approx KL(π_old‖π_new), mean acceptance fraction (the gate's;
    n/a for AWR), fraction of TRPO steps the line search accepted (n/a for other rules),
    wall time of the run folder (compile + train, all its settings together).

The final return of a seed is `io.final_returns` (episodes of the last 10% of updates). The
IQM is `rliable.metrics.aggregate_iqm` (the 25%-trimmed mean, arXiv 2108.13264); its interval
is the percentile bootstrap over seeds (2000 resamples, seeded), what rliable's stratified
bootstrap does for a single task. (rliable's own `get_interval_estimates` needs `arch` < 8,
and arch 7.2 does not import with pandas 3, so the resampling is done here in numpy.)

Writes `compare.md` (Markdown table), `compare.csv` (the same columns, unrounded) and, per env,
a learning-curve PNG (mean ± std over seeds per row; `plot.plot_runs`). Runs of different envs
share the table; each plot holds the rows of one env. Every folder is checked before anything
is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np

from rgpo_jax.cli import HelpFormatter
from rgpo_jax.training.config import RULE_HPARAMS, TrainConfig
from rgpo_jax.training.io import final_returns
from rgpo_jax.training.plot import load_run, plot_runs, run_curves

COLUMNS = ("run", "env", "algo", "settings", "seeds", "env_steps", "final_return_mean",
           "final_return_std", "cv", "iqm", "iqm_ci_low", "iqm_ci_high", "kl_spike_rate",
           "approx_kl_mean", "approx_kl_max", "acceptance_fraction", "step_accepted",
           "wall_seconds")


def iqm_with_ci(scores: np.ndarray, reps: int = 2000, seed: int = 0,
                size: float = 0.95) -> tuple[float, float, float]:
  """(IQM, low, high): the 25%-trimmed mean of `scores` [seeds] and its percentile bootstrap
  interval (resampling seeds with replacement `reps` times). NaN scores are dropped."""
  from rliable import metrics  # pylint: disable=import-outside-toplevel
  scores = np.asarray(scores, np.float64)
  scores = scores[np.isfinite(scores)]
  if scores.size == 0:
    return (np.nan,) * 3
  point = float(metrics.aggregate_iqm(scores[:, None]))
  rng = np.random.default_rng(seed)
  samples = scores[rng.integers(0, scores.size, size=(reps, scores.size))]
  boot = np.array([metrics.aggregate_iqm(s[:, None]) for s in samples])
  alpha = 100 * (1 - size) / 2
  return point, float(np.percentile(boot, alpha)), float(np.percentile(boot, 100 - alpha))


def _algo_settings(config: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
  """The values that define the algorithm (gate and update-rule parameters), with the swept
  values of this setting and anything else the setting varies."""
  cfg = TrainConfig.from_dict({**config, **setting})
  shown = dict(cfg.gate_params())
  if cfg.algo == "trpo":
    shown["trpo_gate"] = cfg.trpo_gate
  for name in RULE_HPARAMS[cfg.update_rule]:
    shown[name] = getattr(cfg, name)
  shown.update(setting)
  return shown


def _mean(values: np.ndarray) -> float:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def compare_rows(runs: Sequence[str]) -> list[dict[str, Any]]:
  """One row (see `COLUMNS`) per setting of every run folder, in the order given."""
  loaded = [(run, *load_run(run)) for run in runs]  # raises for a folder that is not a run
  rows = []
  for run, config, records in loaded:
    summary_path = os.path.join(run, "summary.json")
    wall = float("nan")
    if os.path.exists(summary_path):
      with open(summary_path) as f:
        summary = json.load(f)
      wall = float(summary.get("compile_seconds") or 0) + float(summary.get("train_seconds") or 0)
    per_metric = {m: run_curves(run, config, records, m)
                  for m in ("episode_return", "episodes", "kl_spike", "approx_kl",
                            "acceptance_fraction", "step_accepted")}
    for i, curve in enumerate(per_metric["episode_return"]):
      get = lambda m, i=i: per_metric[m][i].values  # [seeds, updates]
      finals = final_returns(curve.values, get("episodes"))
      ok = finals[np.isfinite(finals)]
      mean = float(np.mean(ok)) if ok.size else float("nan")
      std = float(np.std(ok)) if ok.size else float("nan")
      iqm, low, high = iqm_with_ci(finals)
      swept = records[0].get("hparams") or {}
      setting = {k: v for k, v in curve.settings.items() if k in swept}
      rows.append({
          "run": run, "env": config["config"]["env"], "algo": config["config"]["algo"],
          "settings": _algo_settings(config["config"], setting),
          "seeds": int(curve.values.shape[0]), "env_steps": int(curve.steps[-1]),
          "final_return_mean": mean, "final_return_std": std,
          "cv": std / abs(mean) if mean else float("nan"),
          "iqm": iqm, "iqm_ci_low": low, "iqm_ci_high": high,
          "kl_spike_rate": _mean(get("kl_spike")), "approx_kl_mean": _mean(get("approx_kl")),
          "approx_kl_max": float(np.nanmax(get("approx_kl"))),
          "acceptance_fraction": _mean(get("acceptance_fraction")),
          "step_accepted": _mean(get("step_accepted")), "wall_seconds": wall})
  return rows


def _fmt(value: Any, digits: int = 3) -> str:
  if isinstance(value, dict):
    return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
  if isinstance(value, float):
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}g}"
  return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  """The rows as a Markdown table (returns and KL rounded for reading)."""
  head = ("run", "env", "algo", "settings", "seeds", "env steps", "final return", "CV",
          "IQM [95% CI]", "KL-spike rate", "KL mean / max", "acceptance", "TRPO steps accepted",
          "wall s")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    ret = f"{_fmt(r['final_return_mean'], 4)} ± {_fmt(r['final_return_std'], 3)}"
    iqm = f"{_fmt(r['iqm'], 4)} [{_fmt(r['iqm_ci_low'], 4)}, {_fmt(r['iqm_ci_high'], 4)}]"
    kl = f"{_fmt(r['approx_kl_mean'])} / {_fmt(r['approx_kl_max'])}"
    cells = (r["run"], r["env"], r["algo"], _fmt(r["settings"]), r["seeds"],
             f"{r['env_steps']:.3g}", ret, _fmt(r["cv"], 2), iqm, _fmt(r["kl_spike_rate"]), kl,
             _fmt(r["acceptance_fraction"]), _fmt(r["step_accepted"]), _fmt(r["wall_seconds"], 4))
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(lines) + "\n"


def compare_runs(runs: Sequence[str], out: str) -> list[str]:
  """Write compare.md, compare.csv and one return-curve PNG per env to `out`; return the
  paths. Raises ValueError (before writing anything) for a folder that is not a run."""
  if not runs:
    raise ValueError("rgpo compare needs at least one run folder")
  try:
    import rliable.metrics  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise ValueError(f"rgpo compare needs rliable ({e}); install it with "
                     f"pip install 'rgpo_jax[analysis]'") from None
  for run in runs:
    if not os.path.isdir(run):
      raise ValueError(f"{run!r} is not a run folder (not a directory)")
  rows = compare_rows(runs)
  os.makedirs(out, exist_ok=True)
  md, csv_path = os.path.join(out, "compare.md"), os.path.join(out, "compare.csv")
  with open(md, "w") as f:
    f.write(markdown_table(rows))
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
      writer.writerow({**r, "settings": json.dumps(r["settings"], sort_keys=True)})
  return [md, csv_path] + plot_runs(runs, out=out, metrics=("episode_return",))


def _compare(args: argparse.Namespace) -> int:
  try:
    paths = compare_runs(args.runs, args.out)
  except ValueError as e:
    print(f"rgpo compare: error: {e}", file=sys.stderr)
    return 2
  envs = {}
  for run in args.runs:
    with open(os.path.join(run, "config.json")) as f:
      envs.setdefault(json.load(f)["config"]["env"], []).append(run)
  for p in paths:
    print(f"wrote {p}")
  for env, runs in envs.items():
    print(f"  {env}: {', '.join(runs)}")
  return 0


def register(subparsers) -> None:
  """Add `compare` to the `rgpo` command."""
  p = subparsers.add_parser(
      "compare", help="several training runs side by side: one table, one plot per env",
      description="Summarise run folders written by `rgpo train` (different algorithms, envs, "
                  "seeds, sweeps) into one table, compare.md and compare.csv, with one row "
                  "per run folder and setting: final return mean ± std over seeds, "
                  "coefficient of variation, IQM with a 95% bootstrap interval, KL-spike "
                  "rate, mean/max approx KL, acceptance fraction, wall time. Also one "
                  "learning-curve PNG per env (mean ± std band per row).",
      formatter_class=HelpFormatter)
  p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (config.json + "
                 "metrics.jsonl or metrics.jsonl.gz)")
  p.add_argument("--out", required=True, help="folder for compare.md, compare.csv and the PNGs")
  p.set_defaults(func=_compare)
