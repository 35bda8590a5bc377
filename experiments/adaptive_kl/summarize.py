"""Per-run KL and width figures of experiments/adaptive_kl (printed as a markdown table)."""

import gzip
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def rows(name):
  with gzip.open(os.path.join(HERE, name, "metrics.jsonl.gz"), "rt") as f:
    records = [json.loads(line) for line in f]
  with open(os.path.join(HERE, name, "summary.json")) as f:
    summary = json.load(f)
  for run in sorted({r["run"] for r in records}):
    rec = sorted((r for r in records if r["run"] == run), key=lambda r: r["update"])
    col = lambda k: np.array([np.nan if r[k] is None else r[k] for r in rec], float)
    kl, spike, width = col("approx_kl"), col("kl_spike"), col("gate_width")
    half = len(rec) // 2
    yield (name, run, summary["final_return_per_run"][run], kl.mean(), kl[half:].mean(),
           np.median(kl[half:]), spike.mean(), spike[half:].mean(), np.median(width[half:]),
           width.max(), width[-1])


print("| run | seed | final return | mean KL | mean KL, 2nd half | median KL, 2nd half | "
      "spike rate | spike rate, 2nd half | median k, 2nd half | max k | final k |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in ("fixed_k4", "target_kl_0.02", "pendulum_target_kl_0.02"):
  for r in rows(name):
    print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.3f} | {r[4]:.4f} | {r[5]:.4f} | {r[6]:.3f} | "
          f"{r[7]:.3f} | {r[8]:.1f} | {r[9]:.1f} | {r[10]:.2f} |")
