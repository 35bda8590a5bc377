"""Builds the kl_stability table from the run folders (config.json, summary.json, metrics.jsonl[.gz]).

One row per (env, settings, epochs, gate, gate parameter, lr): final return mean ± std over seeds
(from summary.json: episodes finishing in the last 10% of updates), the return at the first update
and the peak of the seed-mean return curve (a run that learns and then collapses shows a peak far
above its final return), the KL-spike rate (updates with approx KL > the run's threshold), mean
and max approx KL(π_old‖π_new) over all updates and seeds, the acceptance fraction (samples whose
gate slope is at least half its on-policy value) and the largest ratio seen.

Usage (repository root):  python experiments/kl_stability/summarize.py [DIR] [--write]
(--write: put the table into DIR/README.md between its table markers; otherwise print it).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections import defaultdict

import numpy as np

_GATE_PARAM = {"rgpo": "k", "rgpo_sigmoid": "k", "rgpo_pessimistic": "k", "sapo": "tau", "ppo": "epsilon",
               "trpo": "max_kl"}
_GATE_ORDER = ["ppo", "trpo", "rgpo_sigmoid", "sapo", "rgpo_pessimistic", "rgpo"]
_K_GRID = "hoppergrid_"  # folder prefix of the hopper k × lr grid cells (run.sh hopper_grid)


def _load(run: str) -> tuple[dict, dict, list[dict]]:
  with open(os.path.join(run, "config.json")) as f:
    config = json.load(f)
  with open(os.path.join(run, "summary.json")) as f:
    summary = json.load(f)
  path = os.path.join(run, "metrics.jsonl")
  opener = open
  if not os.path.exists(path):
    path, opener = path + ".gz", gzip.open
  with opener(path, "rt") as f:
    records = [json.loads(line) for line in f if line.strip()]
  return config, summary, records


def _mean_return(records: list[dict]) -> float:
  """Mean over seeds of one update's episode return (None: no episode ended in that update)."""
  values = [r["episode_return"] for r in records if r["episode_return"] is not None]
  return float(np.mean(values)) if values else float("nan")


def _settings_label(cfg: dict) -> str:
  """The rollout / optimisation shape shared by every row of a block."""
  batch = cfg["num_envs"] * cfg["num_steps"]
  return (f"{cfg['env']}: {cfg['num_envs']}×{cfg['num_steps']} = {batch} steps/update, "
          f"{cfg['num_minibatches']} minibatches, γ {cfg['gamma']:g}, entropy {cfg['ent_coef']:g}, "
          f"lr {'annealed' if cfg['anneal_lr'] else 'constant'}, {cfg['total_steps']:,} steps per run")


def rows(root: str) -> list[dict]:
  """One dict per (run folder, hyperparameter setting)."""
  out = []
  order = ("pendulum_", "invpend_", "breakout_", "mujocostd_", _K_GRID)  # blocks in the README's order
  rank = lambda n: next((i for i, p in enumerate(order) if n.startswith(p)), len(order))
  for name in sorted(os.listdir(root), key=lambda n: (rank(n), n)):
    run = os.path.join(root, name)
    if not os.path.exists(os.path.join(run, "summary.json")):
      continue
    config, summary, records = _load(run)
    cfg = config["config"]
    by_setting = defaultdict(lambda: defaultdict(list))  # hparams -> metric -> [records]
    for r in records:
      by_setting[json.dumps(r["hparams"], sort_keys=True)][r["update"]].append(r)
    for per in summary["per_setting"]:
      hp = dict(cfg, **per["hparams"])
      updates = by_setting[json.dumps(per["hparams"], sort_keys=True)]
      recs = [r for u in sorted(updates) for r in updates[u]]
      curve = [_mean_return(updates[u]) for u in sorted(updates)]
      kl = np.array([r["approx_kl"] for r in recs])
      algo = cfg["algo"]
      param = _GATE_PARAM.get(algo)
      out.append({
          "folder": name, "epochs": cfg["update_epochs"],
          # the grid re-runs some of the single cells' settings: its own block keeps them apart
          "block": _settings_label(cfg) + (" (the k × lr grid, one program per gate)"
                                           if name.startswith(_K_GRID) else ""),
          "algo": algo, "param": param, "value": hp.get(param) if param else None,
          "lr": hp["lr"], "seeds": len(per["final_return_per_seed"]),
          "trpo_gate": hp.get("trpo_gate"), "max_grad_norm": hp["max_grad_norm"],
          "final_mean": per["final_return_mean"], "final_std": per["final_return_std"],
          "start": curve[0], "peak": float(np.nanmax(curve)),
          "spike_rate": float(np.mean([r["kl_spike"] for r in recs])),
          "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
          "acceptance": float(np.mean([r["acceptance_fraction"] for r in recs])),
          "ratio_max": float(np.max([r["ratio_max"] for r in recs])),
      })
  return out


def _num(x: float, like: float | None = None) -> str:
  """Returns: integers from 100 up, one decimal from 10, else two (`like`: take its precision)."""
  size = abs(x if like is None else like)
  return f"{x:.0f}" if size >= 100 else f"{x:.1f}" if size >= 10 else f"{x:.2f}"


def _on_policy_weight(row: dict) -> str:
  """w(1) of the gate: k/4 for the RGPO sigmoids, 1 for PPO and the normalised sigmoid."""
  if row["algo"] in ("rgpo", "rgpo_sigmoid", "rgpo_pessimistic"):
    return f"{row['value'] / 4:g}"
  if row["algo"] == "trpo":
    return "–"  # a natural-gradient step scaled to the KL radius
  return "1"


def markdown(table: list[dict]) -> str:
  lines = []
  blocks = defaultdict(list)
  for row in table:
    blocks[row["block"]].append(row)
  for block, rs in blocks.items():
    lines += [f"**{block}**", "",
              "| epochs | lr | gate | w(1) | seeds | return: start → peak → final (mean ± std) "
              "| KL-spike rate | mean KL | max KL | acceptance | max ratio |",
              "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    rs.sort(key=lambda r: (r["epochs"], r["lr"], _GATE_ORDER.index(r["algo"])
                           if r["algo"] in _GATE_ORDER else 99, r["value"] or 0))
    for r in rs:
      symbol = {"tau": "τ", "epsilon": "ε"}.get(r["param"], r["param"])
      name = {"rgpo": "rgpo (pessimistic)",
              "trpo": f"trpo, surrogate {r['trpo_gate']}"}.get(r["algo"], r["algo"])
      gate = name + (f" {symbol}={r['value']:g}" if r["param"] else "")
      gate += ", no grad-norm clip" if r["max_grad_norm"] <= 0 else ""
      lines.append(
          f"| {r['epochs']} | {r['lr']:g} | {gate} | {_on_policy_weight(r)} | {r['seeds']} | "
          f"{_num(r['start'])} → {_num(r['peak'])} → **{_num(r['final_mean'])} ± {_num(r['final_std'], r['final_mean'])}** | "
          f"{r['spike_rate']:.3f} | {r['kl_mean']:.3g} | {r['kl_max']:.3g} | "
          f"{r['acceptance']:.2f} | {r['ratio_max']:.3g} |")
    lines.append("")
  return "\n".join(lines)


def plot_k_grid(table: list[dict], path: str, epochs: int) -> bool:
  """The hopper k × lr grid at `epochs` in one PNG: final return (mean ± std over seeds) and
  KL-spike rate against k for each gate, one column per lr, PPO as a horizontal line. False if
  that grid did not run."""
  grid = [r for r in table if r["folder"].startswith(_K_GRID) and r["epochs"] == epochs]
  if not grid:
    return False
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  lrs = sorted({r["lr"] for r in grid})
  fig, axes = plt.subplots(2, len(lrs), figsize=(5.2 * len(lrs), 7), sharex=True, sharey="row",
                           squeeze=False)
  styles = {"rgpo_sigmoid": ("tab:red", "rgpo_sigmoid (paper's gate)"),
            "sapo": ("tab:orange", "sigmoid normalised to w(1) = 1 (sapo, τ = k)"),
            "rgpo_pessimistic": ("tab:blue", "rgpo_pessimistic (the default at k = 4)")}
  for col, lr in enumerate(lrs):
    top, bottom = axes[0, col], axes[1, col]
    for algo, (color, label) in styles.items():
      rs = sorted((r for r in grid if r["algo"] == algo and r["lr"] == lr), key=lambda r: r["value"])
      if not rs:
        continue
      k = [r["value"] for r in rs]
      mean, std = np.array([r["final_mean"] for r in rs]), np.array([r["final_std"] for r in rs])
      top.plot(k, mean, "o-", color=color, label=label)
      top.fill_between(k, mean - std, mean + std, color=color, alpha=0.15)
      bottom.plot(k, [100 * r["spike_rate"] for r in rs], "o-", color=color)
    for r in (r for r in grid if r["algo"] == "ppo" and r["lr"] == lr):
      top.axhline(r["final_mean"], color="k", ls="--", label=f"PPO ε = {r['value']:g}")
      top.axhspan(r["final_mean"] - r["final_std"], r["final_mean"] + r["final_std"], color="k",
                  alpha=0.07)
      bottom.axhline(100 * r["spike_rate"], color="k", ls="--")
    top.set_title(f"lr {lr:g}")
    bottom.set_xscale("log", base=2)
    bottom.set_xticks([2, 4, 8, 16], ["2", "4", "8", "16"])
    bottom.set_xlabel("gate sharpness k (τ for sapo)")
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
  axes[0, 0].set_ylabel("final return (mean ± std, 3 seeds)")
  axes[1, 0].set_ylabel("KL-spike rate, % of updates")
  axes[0, 0].legend(fontsize=8, loc="lower left")
  fig.suptitle(f"Brax hopper: 2,048 steps per update, {epochs} epochs × 32 "
               "minibatches, lr annealed")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def write_into_readme(root: str, table: str) -> None:
  """Replaces the text between the README's table markers with `table`."""
  path = os.path.join(root, "README.md")
  with open(path) as f:
    text = f.read()
  start, end = "<!-- table -->\n", "<!-- /table -->"
  head, rest = text.split(start)
  text = head + start + table + "\n" + end + rest.split(end, 1)[1]
  with open(path, "w") as f:
    f.write(text)


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if a != "--write"]
  root = args[0] if args else os.path.dirname(os.path.abspath(__file__))
  table_rows = rows(root)
  table = markdown(table_rows)
  if "--write" in sys.argv:
    write_into_readme(root, table)
    for epochs in (10, 4):
      plot_k_grid(table_rows, os.path.join(root, "hopper_k_grid.png" if epochs == 10 else
                                           f"hopper_k_grid_e{epochs}.png"), epochs)
  else:
    print(table)
