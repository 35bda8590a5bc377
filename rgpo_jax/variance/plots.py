"""Figures of `rgpo variance` (matplotlib, imported only when plotting)."""

from __future__ import annotations

import math
import os


def save_panels(fig, path: str, title: str, bottom: float) -> None:
  """Finish a figure of panels: one legend for all of them below (labels gathered from every
  panel; panels without data are hidden), a title, then save to `path` and close."""
  import matplotlib.pyplot as plt
  seen = {}
  for ax in fig.axes:
    if not ax.has_data():
      ax.axis("off")
    for h, name in zip(*ax.get_legend_handles_labels()):
      seen.setdefault(name, h)
  fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=7, fontsize=8,
             bbox_to_anchor=(0.5, 0.0))
  fig.suptitle(title, fontsize=11)
  fig.tight_layout(rect=(0, bottom, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_synthetic(out, laws, labels, n_values, summary, exact, frontier):
  """variance_vs_n.png (median per-sample variance against n, one panel per law) and
  bias_variance_frontier.png (the sigmoid's exact bias and variance over k, other gates as
  points)."""
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
    ax.set_ylabel("median per-sample variance of C·S (C = w·Â for a gate)")
    ax.grid(True, which="both", alpha=0.3)
  save_panels(fig, os.path.join(out, "variance_vs_n.png"),
               "Per-sample gradient variance s²_n vs batch size (median over batches); "
               "IS diverges for α ≤ 2, bounded gates stay flat", bottom=0.07)

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
  save_panels(fig, os.path.join(out, "bias_variance_frontier.png"),
               "Bias-variance frontier of the RGPO sigmoid over k (IS: bias 0, variance ∞ "
               "when α ≤ 2)", bottom=0.07)


def plot_env(out, env, staleness, labels, rows, log_r_by_s, ratio_rows):
  """variance_vs_staleness.png (covariance trace, cosine and errors against staleness) and
  ratio_distribution.png (histograms of log r per staleness)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  cmap = plt.get_cmap("tab20")
  colors = {label: cmap(i % 20) for i, label in enumerate(labels)}
  fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
  for label in labels:
    sel = [r for r in rows if r["estimator"] == label]
    xs = [r["staleness"] for r in sel]
    kw = dict(marker="o", ms=3, color=colors[label], label=label,
              lw=2.2 if label in ("is", "sigmoid(k=4)") else 1.2,
              ls="--" if label.startswith("reinforce") else "-")
    axes[0].plot(xs, [r["trace_covariance"] for r in sel], **kw)
    axes[1].plot(xs, [r["cosine"] for r in sel], **kw)
    axes[2].plot(xs, [r["relative_error"] for r in sel], **kw)
    axes[3].plot(xs, [r["relative_distance_to_is"] for r in sel], **kw)
  axes[0].set_yscale("log")
  axes[0].set_ylabel("tr Cov of per-sample gradients")
  axes[1].set_ylabel("cos(mean gradient, on-policy gradient)")
  axes[2].set_ylabel("‖mean − on-policy‖ / ‖on-policy‖")
  axes[3].set_ylabel("‖mean − IS mean‖ / ‖IS mean‖ (same samples)")
  for ax in axes:
    ax.set_xlabel("staleness s (optimiser steps after collection)")
    ax.grid(True, alpha=0.3)
  save_panels(fig, os.path.join(out, "variance_vs_staleness.png"),
               f"{env}: per-sample policy gradients of stale data", bottom=0.1)

  fig, ax = plt.subplots(figsize=(6.5, 4.4))
  for s in staleness:
    lr = log_r_by_s[s]
    if np.std(lr) < 1e-6:  # on-policy: r ≡ 1 up to float rounding
      ax.axvline(0.0, color="k", lw=1, label=f"s={s}: r ≡ 1 (on-policy)")
      continue
    info = next(r for r in ratio_rows if r["staleness"] == s)
    ax.hist(lr, bins=80, histtype="step", density=True, lw=1.3,
            label=f"s={s}: std(log r)={info['log_std']:.3f}, Hill α̂={info['tail_index']:.2f}")
  ax.set_yscale("log")
  ax.set_xlabel("log r = log π_θs − log π_old")
  ax.set_ylabel("density")
  ax.set_title(f"{env}: distribution of the ratios of stale data")
  ax.legend(fontsize=8)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "ratio_distribution.png"), dpi=110)
  plt.close(fig)
