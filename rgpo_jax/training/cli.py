"""`rgpo train` and `rgpo plot`.

The argument building (`add_config_arguments`) and config building (`config_from_args`) are
separate functions so other trainers (e.g. Brax flags, checkpoint/resume) can extend them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from rgpo_jax.training.config import ALGOS, SWEEPABLE, TrainConfig

FIELD_HELP: dict[str, str] = {
    "env": "environment: a Gymnax id (CartPole-v1, Acrobot-v1, Breakout-MinAtar, ...) or "
           "brax:<name>",
    "normalize_obs": "running mean/std observation normalisation",
    "algo": "the gate that defines the algorithm: " + ", ".join(ALGOS),
    "k": "RGPO sigmoid sharpness k > 0 (gate σ(k(r−1)); k=4 gives weight 1 on-policy)",
    "epsilon": "PPO clip ε in (0, 1)",
    "tau": "temperature τ > 0 of sapo (τ_pos, default 1.0) / erf / arctan / softsign "
           "(default 1.0)",
    "tau_neg": "temperature for negative advantages (default: sapo 1.05, others = tau)",
    "low": "truncated gate: lower end of the acceptance band, >= 0",
    "high": "truncated gate: upper end of the acceptance band, > low",
    "num_envs": "parallel environments per run",
    "num_steps": "rollout length per update (batch = num_envs × num_steps)",
    "total_steps": "environment steps per run (updates = total_steps // batch)",
    "update_epochs": "passes over each batch",
    "num_minibatches": "minibatches per pass (must divide the batch)",
    "lr": "Adam learning rate > 0",
    "anneal_lr": "anneal the learning rate linearly to 0",
    "gamma": "discount in [0, 1]",
    "gae_lambda": "GAE λ in [0, 1]",
    "ent_coef": "entropy bonus coefficient >= 0",
    "vf_coef": "value-loss coefficient >= 0",
    "max_grad_norm": "global gradient-norm clip (<= 0 disables)",
    "clip_value": "PPO-style value clipping",
    "value_clip_epsilon": "value clipping range > 0",
    "normalize_advantages": "per-minibatch advantage normalisation",
    "hidden": "hidden layer widths, e.g. 64,64",
    "activation": "activation: tanh, relu, gelu, silu",
    "kl_spike_threshold": "a KL spike is approx KL(π_old‖π_new) over an update above this",
    "updates_per_chunk": "updates per compiled chunk between progress/metrics writes "
                         "(0 = automatic)",
}


def _flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def _number_list(kind):
  def parse(text: str):
    try:
      values = [kind(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list of "
                                       f"numbers, got {text!r}") from None
    if not values:
      raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
    return values
  return parse


def _int_arg(text: str) -> int:
  try:
    return int(float(text)) if float(text).is_integer() else int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
  """One flag per `TrainConfig` field (sweepable ones accept comma-separated lists)."""
  defaults = TrainConfig()
  group = parser.add_argument_group("training configuration (defaults: PureJaxRL CartPole)")
  for field in dataclasses.fields(TrainConfig):
    name, default = field.name, getattr(defaults, field.name)
    help_text = FIELD_HELP.get(name, name)
    if name == "env_kwargs":
      group.add_argument("--env-kwarg", dest="env_kwargs", action="append", default=[],
                         metavar="KEY=VALUE",
                         help="extra env constructor argument (repeatable), e.g. "
                              "max_episode_steps=200")
    elif isinstance(default, bool):
      group.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction,
                         default=default, help=help_text)
    elif name == "hidden":
      group.add_argument(_flag(name), dest=name, type=_number_list(int), default=list(default),
                         metavar="W1,W2", help=help_text)
    elif name in SWEEPABLE:
      group.add_argument(_flag(name), dest=name, type=_number_list(float), default=None,
                         metavar="X[,Y,...]",
                         help=f"{help_text} (default {default}; a comma list sweeps)")
    elif isinstance(default, int):
      group.add_argument(_flag(name), dest=name, type=_int_arg, default=default, help=help_text)
    elif isinstance(default, float):
      group.add_argument(_flag(name), dest=name, type=float, default=default, help=help_text)
    else:
      group.add_argument(_flag(name), dest=name, type=str, default=default, help=help_text)


def _parse_env_kwargs(items: list[str]) -> tuple[tuple[str, Any], ...]:
  out = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--env-kwarg must look like KEY=VALUE, got {item!r}")
    k, v = item.split("=", 1)
    for kind in (int, float):
      try:
        v = kind(v)
        break
      except ValueError:
        continue
    out[k] = v
  return tuple(sorted(out.items()))


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, list[float]]]:
  """(config, sweep grid) from parsed flags. Single values set the config; lists sweep."""
  values, grid = {}, {}
  for field in dataclasses.fields(TrainConfig):
    name = field.name
    if not hasattr(args, name):
      continue
    v = getattr(args, name)
    if name == "env_kwargs":
      values[name] = _parse_env_kwargs(v)
    elif name == "hidden":
      values[name] = tuple(v)
    elif name in SWEEPABLE:
      if v is None:
        continue
      if len(v) == 1:
        values[name] = v[0]
      else:
        grid[name] = v
    else:
      values[name] = v
  return TrainConfig(**values), grid


def _train(args: argparse.Namespace) -> int:
  from rgpo_jax.training.io import run_training
  try:
    config, grid = config_from_args(args)
    if args.seeds <= 0:
      raise ValueError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.cpu_devices:  # before anything starts JAX's backend
      from rgpo_jax.training.sweep import expand_grid, use_host_devices
      use_host_devices(len(expand_grid(grid)) * args.seeds)
    config.validate()
    summary = run_training(config, grid, num_seeds=args.seeds, seed=args.seed, out=args.out,
                           progress=not args.no_progress, cpu_multi_run=args.cpu_devices)
  except ValueError as e:
    print(f"rgpo train: error: {e}", file=sys.stderr)
    return 2
  ret, std = summary["final_return_mean"], summary["final_return_std"]
  fmt = lambda x: "n/a" if x is None else f"{x:.1f}"
  print(f"final return {fmt(ret)} ± {fmt(std)} over {summary['num_runs']} run(s); "
        f"KL spike rate {summary['kl_spike_rate']:.3f}; "
        f"{summary['steps_per_second']:.0f} env steps/s (compile {summary['compile_seconds']:.1f} s,"
        f" train {summary['train_seconds']:.1f} s)")
  if args.out:
    print(f"wrote {args.out}/config.json, metrics.jsonl, summary.json")
  return 0


def _plot(args: argparse.Namespace) -> int:
  from rgpo_jax.training.plot import plot_runs
  try:
    paths = plot_runs(args.runs, out=args.out, metrics=args.metrics.split(","))
  except ValueError as e:
    print(f"rgpo plot: error: {e}", file=sys.stderr)
    return 2
  for p in paths:
    print(f"wrote {p}")
  return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "train", help="train agents on device (any gate, many seeds/hyperparameters at once)",
      description="Train an actor-critic agent whose whole loop runs on the accelerator. "
                  "Comma-separated values of a sweepable flag (e.g. --k 1,2,4,8 --lr 1e-4,3e-4) "
                  "train every combination × --seeds seeds in one compiled program. With no "
                  "flags: RGPO (k=4) on CartPole-v1, 5e5 steps, 1 seed.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--seeds", type=_int_arg, default=1, help="seeds per hyperparameter setting")
  p.add_argument("--seed", type=_int_arg, default=0, help="base PRNG seed")
  p.add_argument("--out", type=str, default=None,
                 help="output folder for config.json, metrics.jsonl, summary.json (must not "
                      "hold another run)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--cpu-devices", action=argparse.BooleanOptionalAction, default=False,
                 help="EXPERIMENTAL, CPU only: split the runs over one forced host device per "
                      "core (1.2-1.5x faster on 2 cores for 16 seeds, but such programs hung "
                      "in about 1 of 6 runs: see rgpo_jax/training/sweep.py)")
  add_config_arguments(p)
  p.set_defaults(func=_train)
  return p


def add_plot_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "plot", help="learning curves of one or more training runs",
      description="Write learning-curve PNGs (mean and spread across seeds; one line per "
                  "algorithm / hyperparameter setting) from runs written by `rgpo train`.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("runs", nargs="+", help="run folders (each with config.json, metrics.jsonl)")
  p.add_argument("--out", default=None, help="folder for the PNGs (default: <first run>/plots)")
  p.add_argument("--metrics", default="episode_return,approx_kl,effective_update_ratio,entropy",
                 help="comma-separated metrics to plot, one PNG each")
  p.set_defaults(func=_plot)
  return p


def register(subparsers) -> None:
  """Add `train` and `plot` to the `rgpo` command."""
  add_train_parser(subparsers)
  add_plot_parser(subparsers)
