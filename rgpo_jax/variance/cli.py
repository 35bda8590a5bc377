"""`rgpo variance`: measure gradient variance and bias of gated estimators against IS.

    rgpo variance --synthetic --out runs/var-synth          # heavy-tailed ratio laws, exact truth
    rgpo variance --synthetic --quick --out /tmp/v          # small grid (seconds)
    rgpo variance --env CartPole-v1 --out runs/var-cartpole # real policies, stale data

Writes CSV tables and PNG plots under --out only (a new or empty folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from typing import Sequence

from rgpo_jax.variance.env_experiment import (check_sequence_length, parse_staleness, run_env,
                                              sizes_from_args)
from rgpo_jax.variance.report import RUN_MARKER, prepare_out
from rgpo_jax.variance.synthetic_experiment import run_synthetic


def register(subparsers) -> None:
  """Add the `variance` subcommand to `rgpo`."""
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
  p.add_argument("--estimators", default="default",
                 help="estimators compared with IS: 'default' (the RGPO/smooth-gate benchmark), "
                      "'variants' (LLM-stack variants: dual-clip, CISPO two-sided and capped, "
                      "detached sigmoid, GSPO, GSPO-token, GMPO, RGPO on the sequence ratio, "
                      "Clip-Cov, KL-Cov, DPO drift, with IS/PPO/RGPO for reference), 'all', or a "
                      "comma list of any registered rgpo_jax.variants names (e.g. "
                      "is,dual_clip,gspo,clip_cov,dpo_drift)")
  p.add_argument("--sequence-length", type=int, default=None,
                 help="tokens per sequence for the variants that are not elementwise gates "
                      "(sequence ratios, batch statistics): synthetic: L iid tokens, default 10, "
                      "must divide 100 at least twice; env: L consecutive steps of one "
                      "environment, default 16, must divide the steps per environment")
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
                    help="env steps of PPO training before collecting (default 5e4; quick: 2e4)")
  real.add_argument("--samples", type=int, default=None,
                    help="transitions in the stale batch (default 131072; quick: 8192); the "
                         "on-policy reference averages 6 (quick: 2) fresh batches of that size")
  real.add_argument("--per-sample", type=int, default=None,
                    help="random subset of the batch for per-sample gradients / covariance "
                         "(default 8192; quick: 1024)")
  real.add_argument("--drift-gate", default="ppo_clip",
                    help="gate (family, default parameters) of the policy loss whose optimiser "
                         "steps make the data stale")
  real.add_argument("--drift-lr", type=float, default=1e-3,
                    help="Adam learning rate of the staleness steps (full batch)")
  p.set_defaults(func=run)


# Third-party modules each mode needs beyond the library core, all in the 'train' extra.
_MODE_MODULES = {"synthetic": ("matplotlib",),
                 "env": ("matplotlib", "flax", "optax", "gymnax")}


def _require_extra(mode: str) -> None:
  """SystemExit naming the extra to install if a module that `mode` needs is absent."""
  for module in _MODE_MODULES[mode]:
    try:
      found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
      found = False
    if not found:
      raise SystemExit(f"rgpo variance --{mode} needs the 'train' extra (module {module!r} is "
                       f"not installed): pip install 'rgpo_jax[train]'")


def _validate(args) -> None:
  """Argument checks that need no compile, before anything is written."""
  _require_extra("synthetic" if args.synthetic else "env")
  from rgpo_jax.variance.estimators import estimator_set
  try:
    estimator_set(getattr(args, "estimators", "default"))
  except ValueError as e:
    raise SystemExit(f"rgpo variance --estimators: {e}")
  if args.sequence_length is not None and args.sequence_length < 1:
    raise SystemExit(f"rgpo variance: --sequence-length must be >= 1, got {args.sequence_length}")
  if args.synthetic:
    if args.sequence_length is not None and (100 % args.sequence_length
                                             or 100 // args.sequence_length < 2):
      raise SystemExit(f"rgpo variance: --sequence-length must divide 100 (the smallest n) at "
                       f"least twice, got {args.sequence_length}")
    n_max = float(args.n_max or 1e4)
    decades = math.log10(n_max) if n_max > 0 else 0.0
    if n_max < 1000 or abs(decades - round(decades)) > 1e-9:
      raise SystemExit(f"rgpo variance: --n-max must be a power of 10 >= 1e3, got {args.n_max}")
    if args.replications is not None and args.replications < 2:
      raise SystemExit(f"rgpo variance: --replications must be >= 2, got {args.replications}")
    return
  parse_staleness(args.staleness)
  check_sequence_length(sizes_from_args(args), args.sequence_length)
  from rgpo_jax.envs import check_env_name
  try:
    check_env_name(args.env)
  except ValueError as e:
    raise SystemExit(f"rgpo variance --env: {e}")


def run(args) -> int:
  """Validate, create --out with its run marker, then run the synthetic or the env experiment."""
  _validate(args)
  out = prepare_out(args.out)
  config = {k: v for k, v in vars(args).items() if k != "func"}
  config["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
  with open(os.path.join(out, RUN_MARKER), "w") as f:
    json.dump(config, f, indent=1)
  if args.synthetic:
    return run_synthetic(args, out)
  return run_env(args, out)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m rgpo_jax.variance.cli ARGS` = `rgpo variance ARGS` (works without the trainer)."""
  parser = argparse.ArgumentParser(prog="rgpo")
  register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["variance"] + list(sys.argv[1:] if argv is None else argv))
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
