"""Table of the Brax runs under experiments/brax/results: return early vs late, eval, speed.

"first episodes": episodes completed in the first 10% of updates, or at the first update that
completed any (64 halfcheetah envs all end together at 1000 steps).

Usage: python experiments/brax/summarize.py [RUNS_DIR]
"""

import json
import math
import os
import re
import sys


def window_mean(records, lo, hi):
  """Episode-weighted mean return of updates in [lo, hi)."""
  tot = n = 0.0
  for r in records:
    if lo <= r["update"] - 1 < hi and r["episodes"] and r["episode_return"] is not None:
      tot += r["episode_return"] * r["episodes"]
      n += r["episodes"]
  return tot / n if n else math.nan


def main(root):
  print(f"| run | env steps | return, first episodes | return, last 10% | deterministic eval "
        f"| env steps/s | compile s |")
  print("|---|---|---|---|---|---|---|")
  for name in sorted(os.listdir(root)):
    run = os.path.join(root, name)
    if not os.path.isfile(os.path.join(run, "summary.json")):
      continue
    with open(os.path.join(run, "summary.json")) as f:
      s = json.load(f)
    with open(os.path.join(run, "metrics.jsonl")) as f:
      recs = [json.loads(line) for line in f]
    u = s["num_updates"]
    w = max(1, u // 10)
    ev = ""
    log = run + ".log.txt"
    if os.path.exists(log):
      m = re.search(r"deterministic-policy return ([-\d.]+) ± ([-\d.]+)", open(log).read())
      if m:
        ev = f"{float(m.group(1)):.1f} ± {float(m.group(2)):.1f}"
    first = min((r["update"] for r in recs if r["episodes"]), default=1)
    print(f"| {name} | {s['env_steps_per_run']:,} | {window_mean(recs, 0, max(w, first)):.1f} | "
          f"{window_mean(recs, u - w, u):.1f} | {ev} | {s['steps_per_second']:,.0f} | "
          f"{s['compile_seconds']:.0f} |")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "experiments/brax/results")
