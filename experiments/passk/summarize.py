"""Tables and a plot of the runs under experiments/passk/ (every folder holding a metrics.jsonl):
pass@1 and pass@4 on the 32 held-out problems before and after training.

Before = the step-0 evaluation (the untrained model; for a given seed the same samples whatever
the advantage), after = the last evaluation; Δ = after − before of the same seed, so the seeds'
shared step-0 noise cancels. Mean ± std over the seeds that reached the end.

Evaluation noise: one evaluation scores each problem from 8 samples, so its pass@k carries a
sampling error even on the same 32 problems. `noise` is its standard deviation by a parametric
bootstrap of the step-0 evaluation (each problem's 8 samples redrawn at its observed success
rate, 2000 draws; mean over seeds); the Δ of two independent evaluations has √2 times that, so
a |Δ| below about 2√2 × noise is not distinguishable from sampling alone.
"Batches with signal" is the fraction of training steps whose batch had a non-zero advantage
anywhere (a group with mixed rewards): the others make no update.

Writes results.md, passk.png (the Δs) and passk_training.png (the training batches' reward per
step) next to this file (needs `rgpo_jax` importable for the pass@k
estimator)."""

import json
import os
from collections import defaultdict

import numpy as np

from rgpo_jax.rlhf.tasks import pass_at_k

D = os.path.dirname(os.path.abspath(__file__))
KS = (1, 4)


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _fmt(values, signed=False):
  if not values:
    return "n/a"
  spec = "+.3f" if signed else ".3f"
  if len(values) == 1:
    return format(values[0], spec)
  return f"{format(float(np.mean(values)), spec)} ± {np.std(values):.3f}"


def _noise(samples, seed, k, draws=2000):
  """Std of one evaluation's mean pass@k under resampling (the seed's step-0 samples)."""
  by_prompt = defaultdict(list)
  for s in samples:
    if s["seed"] == seed and s["when"] == "before":
      by_prompt[s["prompt"]].append(s["reward"] > 0.5)
  if not by_prompt:
    return None
  n = np.array([len(v) for v in by_prompt.values()])
  c = np.array([sum(v) for v in by_prompt.values()])
  redrawn = np.random.default_rng(seed).binomial(n, c / n, size=(draws, len(n)))
  return float(pass_at_k(np.broadcast_to(n, redrawn.shape), redrawn, k).mean(axis=1).std())


def load(run):
  """One run folder → (config, per-seed results of the seeds that reached their last step,
  metrics records)."""
  with open(os.path.join(run, "config.json")) as f:
    config = json.load(f)["config"]
  records = _records(os.path.join(run, "metrics.jsonl"))
  samples_path = os.path.join(run, "samples.jsonl")
  samples = _records(samples_path) if os.path.exists(samples_path) else []
  seeds = []
  for seed in sorted({r["seed"] for r in records}):
    mine = [r for r in records if r["seed"] == seed]
    evals = sorted((r for r in mine if "eval_pass@1" in r), key=lambda r: r["step"])
    if not evals or evals[-1]["step"] == 0:
      continue
    steps = [r for r in mine if r["step"] > 0 and "grad_norm" in r]
    seeds.append({
        "seed": seed, "steps": evals[-1]["step"],
        **{f"pass@{k} {when}": evals[i][f"eval_pass@{k}"]
           for k in KS for when, i in (("before", 0), ("after", -1))},
        **{f"delta@{k}": evals[-1][f"eval_pass@{k}"] - evals[0][f"eval_pass@{k}"] for k in KS},
        **{f"noise@{k}": _noise(samples, seed, k) for k in KS},
        "kl": evals[-1]["eval_kl"],
        "signal": float(np.mean([r["grad_norm"] > 0 for r in steps])) if steps else None,
        "seconds": [r["seconds"] for r in steps if r["step"] > 1],
    })
  return config, seeds, records


def tables(runs):
  head = ("| run | advantage | seeds × steps | pass@1 before → after | Δ pass@1 | pass@4 before "
          "→ after | Δ pass@4 | noise (pass@1, pass@4) | KL̂ to π_ref after | batches with "
          "signal | s/step (wall) |")
  rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
  per_seed = ["| run | seed | pass@1 before → after | pass@4 before → after | KL̂ after | "
              "batches with signal |", "|---|---|---|---|---|---|"]
  for name, (config, seeds, _) in runs.items():
    if not seeds:  # no seed finished yet
      continue
    get = lambda key: [s[key] for s in seeds if s[key] is not None]
    secs = [x for s in seeds for x in s["seconds"]]
    rows.append(
        f"| {name} | {config['advantage']} | {len(seeds)} × {max(get('steps'), default=0)} "
        f"| {_fmt(get('pass@1 before'))} → {_fmt(get('pass@1 after'))} "
        f"| {_fmt(get('delta@1'), signed=True)} "
        f"| {_fmt(get('pass@4 before'))} → {_fmt(get('pass@4 after'))} "
        f"| {_fmt(get('delta@4'), signed=True)} "
        f"| ±{np.mean(get('noise@1')):.3f}, ±{np.mean(get('noise@4')):.3f} "
        f"| {_fmt(get('kl'))} | {_fmt(get('signal'))} "
        f"| {f'{np.mean(secs):.0f}' if secs else 'n/a'} |")
    for s in seeds:
      signal = "n/a" if s["signal"] is None else f"{s['signal']:.2f}"
      per_seed.append(
          f"| {name} | {s['seed']} | {s['pass@1 before']:.3f} → {s['pass@1 after']:.3f} "
          f"| {s['pass@4 before']:.3f} → {s['pass@4 after']:.3f} | {s['kl']:.2f} | {signal} |")
  return rows, per_seed


def plot(runs, path):
  """Δ pass@1 and Δ pass@4 per seed (dots) and their mean (bar) for each run, beside ±2√2 × the
  evaluation noise around 0 (grey: what two evaluations of an unchanged model could differ by)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = [n for n, (_, seeds, _) in runs.items() if seeds]
  fig, axes = plt.subplots(1, len(KS), figsize=(2 + 2.4 * max(len(names), 1), 4), sharey=True)
  for ax, k in zip(axes, KS):
    noise = [s[f"noise@{k}"] for n in names for s in runs[n][1] if s[f"noise@{k}"] is not None]
    if noise:
      band = 2 * np.sqrt(2) * float(np.mean(noise))
      ax.axhspan(-band, band, color="0.85", lw=0, label="unchanged model, ±2 std")
    ax.axhline(0, color="0.5", lw=0.8)
    for i, name in enumerate(names):
      d = [s[f"delta@{k}"] for s in runs[name][1]]
      ax.bar(i, np.mean(d), width=0.6, alpha=0.35, color=f"C{i}")
      ax.plot(np.full(len(d), i) + np.linspace(-0.12, 0.12, len(d)), d, "o", color=f"C{i}")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_title(f"Δ pass@{k}, per seed", fontsize=10)
  axes[0].set_ylabel("after − before, 32 held-out problems")
  if names:
    axes[0].legend(fontsize=7, loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_training(runs, path):
  """Each training batch's mean reward (fraction of the 4 × 8 completions right) per step: one
  thin line per seed, one colour per run."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, (name, records) in enumerate(runs.items()):
    for j, seed in enumerate(sorted({r["seed"] for r in records})):
      steps = sorted((r["step"], r["reward_mean"]) for r in records
                     if r["seed"] == seed and "reward_mean" in r)
      ax.plot(*zip(*steps), "-", color=f"C{i}", lw=1, alpha=0.8,
              label=name if j == 0 else None)
  ax.set(xlabel="training step", ylabel="batch reward (fraction right)",
         title="Training batches, one line per seed")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  runs = {}
  for root, _, files in sorted(os.walk(D)):
    if "metrics.jsonl" in files and "config.json" in files:
      runs[os.path.relpath(root, D)] = load(root)
  rows, per_seed = tables(runs)
  text = "\n".join(rows + ["", "Per seed:", ""] + per_seed) + "\n"
  with open(os.path.join(D, "results.md"), "w") as f:
    f.write(text)
  study = [n for n in runs if not n.startswith("partial")]
  plot({n: runs[n] for n in study}, os.path.join(D, "passk.png"))
  plot_training({n: runs[n][2] for n in study}, os.path.join(D, "passk_training.png"))
  print(text)


if __name__ == "__main__":
  main()
