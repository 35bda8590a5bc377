"""Table of the runs under experiments/passk/ (every folder holding a metrics.jsonl): pass@1 and
pass@4 on the 32 held-out problems before and after training, per run.

Before = the step-0 evaluation (the untrained model; for a given seed the same samples whatever
the advantage), after = the last evaluation; mean ± std over the seeds that reached it.
Writes results.md next to this file."""

import json
import os

import numpy as np

D = os.path.dirname(os.path.abspath(__file__))


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _fmt(values):
  if not values:
    return "n/a"
  return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _row(name, run):
  with open(os.path.join(run, "config.json")) as f:
    config = json.load(f)["config"]
  records = _records(os.path.join(run, "metrics.jsonl"))
  seeds = sorted({r["seed"] for r in records})
  evals = {s: sorted((r for r in records if r["seed"] == s and "eval_pass@1" in r),
                     key=lambda r: r["step"]) for s in seeds}
  done = [s for s in seeds if evals[s][-1]["step"] > 0]
  first = lambda key: [evals[s][0][key] for s in done]
  last = lambda key: [evals[s][-1][key] for s in done]
  secs = [r["seconds"] for r in records if r.get("step", 0) > 1 and "seconds" in r]
  return (f"| {name} | {config['advantage']} | {len(done)} "
          f"| {max((evals[s][-1]['step'] for s in done), default=0)} "
          f"| {_fmt(first('eval_pass@1'))} | {_fmt(last('eval_pass@1'))} "
          f"| {_fmt(first('eval_pass@4'))} | {_fmt(last('eval_pass@4'))} "
          f"| {_fmt(last('eval_kl'))} | {f'{np.mean(secs):.0f}' if secs else 'n/a'} |")


def main():
  rows = ["| run | advantage | seeds | steps | pass@1 before | pass@1 after | pass@4 before "
          "| pass@4 after | KL to π_ref after | s/step (wall) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  for root, _, files in sorted(os.walk(D)):
    if "metrics.jsonl" in files and "config.json" in files:
      rows.append(_row(os.path.relpath(root, D), root))
  text = "\n".join(rows) + "\n"
  with open(os.path.join(D, "results.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
