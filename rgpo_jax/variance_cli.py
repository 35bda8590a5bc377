"""`rgpo variance`: measure gradient variance and bias of gated estimators against IS.

    rgpo variance --synthetic --out runs/var-synth          # heavy-tailed ratio laws, exact truth
    rgpo variance --synthetic --quick --out /tmp/v          # small grid (seconds)
    rgpo variance --env CartPole-v1 --out runs/var-cartpole # real policies, stale data

Writes CSV tables and PNG plots under --out only (a new or empty folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Sequence

RUN_MARKER = "variance_run.json"


def register(subparsers) -> None:
  p = subparsers.add_parser(
      "variance", help="gradient variance/bias of gated estimators vs importance sampling",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  mode = p.add_mutually_exclusive_group(required=True)
  mode.add_argument("--synthetic", action="store_true",
                    help="synthetic ratios (Lomax α ∈ {1.2,1.5,2,3}, log-normal σ ∈ {0.1,0.2,0.5,1,2})")
  mode.add_argument("--env", metavar="NAME",
                    help="real policies on a Gymnax env (CartPole-v1, Acrobot-v1)")
  p.add_argument("--out", required=True, help="output folder (created; must be new or empty)")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed")
  p.add_argument("--quick", action="store_true",
                 help="small configuration (tests / smoke runs)")
  syn = p.add_argument_group("synthetic")
  syn.add_argument("--replications", type=int, default=None,
                   help="independent streams of n_max samples (default 32; quick: 4)")
  syn.add_argument("--n-max", type=float, default=None,
                   help="largest sample size, a power of 10 >= 1e3 (default 1e6; quick: 1e4); "
                        "n runs over 1e2, 1e3, ..., n_max")
  real = p.add_argument_group("real policies")
  real.add_argument("--staleness", type=str, default="0,1,2,4,8",
                    help="comma-separated numbers of optimiser steps taken after collection")
  real.add_argument("--train-steps", type=float, default=None,
                    help="env steps of PPO training before collecting (default 1e5; quick: 1e4)")
  real.add_argument("--samples", type=int, default=None,
                    help="transitions in the collected batch (default 4096; quick: 512)")
  p.set_defaults(func=run)


def _prepare_out(path: str) -> str:
  path = os.path.abspath(path)
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise SystemExit(f"rgpo variance: --out {path} exists and is not a folder")
    entries = sorted(os.listdir(path))
    if entries:
      what = ("another variance run" if RUN_MARKER in entries
              else f"other files ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''})")
      raise SystemExit(f"rgpo variance: --out {path} is not empty (it holds {what}); refusing to "
                       f"overwrite it. Choose a new folder.")
  os.makedirs(path, exist_ok=True)
  return path


def _log(msg: str) -> None:
  print(f"[rgpo variance {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  if not rows:
    return
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def run(args) -> int:
  out = _prepare_out(args.out)
  config = {k: v for k, v in vars(args).items() if k != "func"}
  config["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
  with open(os.path.join(out, RUN_MARKER), "w") as f:
    json.dump(config, f, indent=1)
  if args.synthetic:
    return run_synthetic(args, out)
  return run_env(args, out)


# ---------------------------------------------------------------------------------------------
# Synthetic.


def run_synthetic(args, out: str) -> int:
  import jax
  import numpy as np
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import variance as V

  replications = args.replications or (4 if args.quick else 32)
  n_max = int(args.n_max or (1e4 if args.quick else 1e6))
  decades = math.log10(n_max) if n_max > 0 else 0
  if n_max < 1000 or abs(decades - round(decades)) > 1e-9:
    raise SystemExit(f"rgpo variance: --n-max must be a power of 10 >= 1e3, got {args.n_max}")
  if replications < 2:
    raise SystemExit(f"rgpo variance: --replications must be >= 2, got {replications}")
  n_values = tuple(10 ** j for j in range(2, int(round(decades)) + 1))
  chunk = min(10_000, n_max)
  laws = V.default_laws()
  estimators = V.default_estimators()
  labels = [name for name, _ in estimators]
  model = V.AdvantageModel()

  _log(f"synthetic grid: {len(laws)} laws x {len(estimators)} estimators x n={list(n_values)}, "
       f"{replications} streams of {n_max:.0e} samples each ({len(laws) * replications * n_max:.2e}"
       f" samples); model {model}")
  t0 = time.time()
  summary = V.synthetic_grid(jax.random.key(args.seed), laws, [g for _, g in estimators], model,
                             n_values=n_values, replications=replications, chunk=chunk)
  mc_seconds = time.time() - t0
  _log(f"Monte-Carlo grid done in {mc_seconds:.1f} s (one compiled call, compile included)")

  _log("exact moments by quadrature (float64) ...")
  sups = {label: V.weight_sup(g) for label, g in estimators}
  exact = {}
  for law in laws:
    for label, g in estimators:
      exact[law.name, label] = V.exact_moments(g, law, model, sup_weight=sups[label])
  exact_rows = []
  for law in laws:
    var_is = exact[law.name, "is"].variance
    for label, _ in estimators:
      e = exact[law.name, label]
      exact_rows.append(dict(law=law.name, estimator=label, E_r2=law.moment(2), **e._asdict(),
                             relative_bias=e.bias / e.target,
                             n_is_wins=V.mse_crossover(var_is, e.variance, e.bias)))
  write_csv(os.path.join(out, "synthetic_exact.csv"), exact_rows)

  rows = []
  for li, law in enumerate(laws):
    for ei, label in enumerate(labels):
      e = exact[law.name, label]
      for ni, n in enumerate(n_values):
        med = float(summary.sample_variance_median[li, ei, ni])
        est_var = float(summary.estimator_variance[li, ei, ni])
        est_mean = float(summary.estimator_mean[li, ei, ni])
        rows.append(dict(
            law=law.name, estimator=label, n=n,
            batches=int(summary.replications[ni]),
            sample_var_median=med,
            sample_var_mean=float(summary.sample_variance_mean[li, ei, ni]),
            sample_var_q90=float(summary.sample_variance_q90[li, ei, ni]),
            estimator_var=est_var, n_times_estimator_var=n * est_var,
            estimator_mean=est_mean, mc_bias=est_mean - e.target,
            exact_target=e.target, exact_bias=e.bias, exact_var=e.variance,
            sup_weight=e.sup_weight, bound=e.bound,
            median_below_bound=bool(med <= e.bound),
            mean_below_bound=bool(float(summary.sample_variance_mean[li, ei, ni]) <= e.bound),
            mse=est_var + (est_mean - e.target) ** 2))
  write_csv(os.path.join(out, "synthetic_mc.csv"), rows)

  # The exact bias-variance frontier of the RGPO sigmoid over k, with other gates as points.
  ks = [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32]
  frontier = []
  for law in laws:
    for k in ks:
      g = gates_lib.sigmoid(float(k))
      e = V.exact_moments(g, law, model)
      frontier.append(dict(law=law.name, k=float(k), bias=e.bias, variance=e.variance,
                           sup_weight=e.sup_weight, bound=e.bound,
                           mse_n1000=e.variance / 1000 + e.bias ** 2))
  write_csv(os.path.join(out, "synthetic_frontier_k.csv"), frontier)
  _log("tables written; plotting ...")
  _plot_synthetic(out, laws, labels, n_values, summary, exact, frontier)
  _write_summary_json(out, dict(mc_seconds=mc_seconds, n_values=list(n_values),
                                replications=replications, model=model._asdict()))
  _log(f"done: {out}")
  return 0


def _write_summary_json(out, extra):
  path = os.path.join(out, "summary.json")
  with open(path, "w") as f:
    json.dump(extra, f, indent=1, default=float)


def _figure_legend(fig, axes):
  """One legend for all panels, below them (labels gathered from every panel)."""
  seen = {}
  for ax in fig.axes:
    for h, name in zip(*ax.get_legend_handles_labels()):
      seen.setdefault(name, h)
  fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=7, fontsize=8,
             bbox_to_anchor=(0.5, 0.0))


def _plot_synthetic(out, laws, labels, n_values, summary, exact, frontier):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  cmap = plt.get_cmap("tab20")
  colors = {label: cmap(i % 20) for i, label in enumerate(labels)}
  cols = 3 if len(laws) == 9 else 4
  rows = math.ceil(len(laws) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
  for li, law in enumerate(laws):
    ax = axes[li // cols][li % cols]
    for ei, label in enumerate(labels):
      y = summary.sample_variance_median[li, ei]
      style = "--" if label.startswith("reinforce") else "-"
      lw = 2.2 if label in ("is", "sigmoid(k=4)") else 1.2
      ax.plot(n_values, np.maximum(y, 1e-12), style, lw=lw, marker="o", ms=3,
              color=colors[label], label=label)
    var_is = exact[law.name, "is"].variance
    if math.isfinite(var_is):
      ax.axhline(var_is, color=colors["is"], ls=":", lw=1.5, label="Var_IS (exact)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(law.name, fontsize=10)
    ax.set_xlabel("n (batch size)")
    ax.set_ylabel("median per-sample variance of w·Â·S")
    ax.grid(True, which="both", alpha=0.3)
  for j in range(len(laws), rows * cols):
    axes[j // cols][j % cols].axis("off")
  _figure_legend(fig, axes)
  fig.suptitle("Per-sample gradient variance s²_n vs batch size (median over batches); "
               "IS diverges for α ≤ 2, bounded gates stay flat", fontsize=11)
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  fig.savefig(os.path.join(out, "variance_vs_n.png"), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
  for li, law in enumerate(laws):
    ax = axes[li // cols][li % cols]
    pts = [f for f in frontier if f["law"] == law.name]
    ax.plot([p["bias"] for p in pts], [p["variance"] for p in pts], "-", color="k", lw=1,
            label="sigmoid, k sweep (exact)")
    for p in pts:
      if p["k"] in (0.5, 1, 2, 4, 8, 16, 32):
        ax.annotate(f"k={p['k']:g}", (p["bias"], p["variance"]), fontsize=7)
    for label in labels:
      e = exact[law.name, label]
      if math.isfinite(e.variance):
        ax.plot(e.bias, e.variance, "o", color=colors[label], ms=5, label=label)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_title(law.name, fontsize=10)
    ax.set_xlabel("bias E[w·Â·S] − E[r·Â·S]")
    ax.set_ylabel("Var(w·Â·S) (exact)")
    ax.grid(True, alpha=0.3)
  for j in range(len(laws), rows * cols):
    axes[j // cols][j % cols].axis("off")
  _figure_legend(fig, axes)
  fig.suptitle("Bias-variance frontier of the RGPO sigmoid over k (IS: bias 0, variance ∞ "
               "when α ≤ 2)", fontsize=11)
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  fig.savefig(os.path.join(out, "bias_variance_frontier.png"), dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Real policies.


def run_env(args, out: str) -> int:
  raise SystemExit("rgpo variance --env: not implemented yet")


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m rgpo_jax.variance_cli ARGS` = `rgpo variance ARGS` (works without the trainer)."""
  parser = argparse.ArgumentParser(prog="rgpo")
  register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["variance"] + list(sys.argv[1:] if argv is None else argv))
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
