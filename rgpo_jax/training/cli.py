"""`rgpo train`, `rgpo plot` and `rgpo evaluate`.

The argument building (`add_config_arguments`) and config building (`config_from_args`) are
separate functions so other trainers (e.g. Brax flags, checkpoint/resume) can extend them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any

from rgpo_jax.cli import HelpFormatter
from rgpo_jax.training.config import ALGOS, SWEEPABLE, TrainConfig

FIELD_HELP: dict[str, str] = {
    "env": "environment: a Gymnax id (CartPole-v1, Acrobot-v1, Breakout-MinAtar, ...) or "
           "brax:<name>",
    "normalize_obs": "running mean/std observation normalisation",
    "algo": "the algorithm: a gate (gated minibatch epochs) " + ", ".join(ALGOS)
            + "; or trpo (natural gradient in a KL trust region) or awr (advantage-weighted "
              "regression)",
    "trpo_gate": "trpo: the gate of the surrogate, one of " + ", ".join(ALGOS)
                 + " (importance = TRPO's own; rgpo = RGPO's pessimistic sigmoid in a trust region)",
    "max_kl": "trpo: trust-region radius on the mean KL(π_old‖π_new) > 0",
    "cg_iters": "trpo: conjugate-gradient iterations >= 1",
    "cg_damping": "trpo: Fisher damping λ >= 0 in (F + λI)x = g",
    "backtrack_iters": "trpo: line-search trials >= 1",
    "backtrack_coef": "trpo: line-search step shrink factor in (0, 1)",
    "awr_beta": "awr: temperature β > 0 of the weights exp(Â/β) (normalised Â)",
    "awr_max_weight": "awr: weight clip w_max > 0",
    "k": "sharpness k > 0 of rgpo / rgpo_sigmoid (σ(k(r−1)); k=4 gives weight 1 on-policy)",
    "epsilon": "clip ε in (0, 1) of ppo, dual_clip and cispo (cispo: the detached weight "
               "sg(clip(r, 1−ε, 1+ε)), arXiv 2506.13585)",
    "dual_clip_c": "dual_clip: bound c > 1 on r for negative advantages (weight 0 beyond c; "
                   "arXiv 1912.09729)",
    "dpo_alpha": "dpo_drift: drift scale α > 0 for positive advantages (Discovered PO, "
                 "arXiv 2210.05639)",
    "dpo_beta": "dpo_drift: drift scale β > 0 for negative advantages",
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
    "init_log_std": "initial log-std of the Gaussian policy (continuous actions)",
    "kl_spike_threshold": "a KL spike is approx KL(π_old‖π_new) over an update above this",
    "target_kl": "adaptive gate width: steer k (rgpo sigmoids, normalised to keep w(1)=k₀/4) "
                 "or ε (ppo) between updates towards this post-update approx KL > 0 "
                 "(default: fixed width)",
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
                         help=f"{help_text} ("
                              + ("" if default is None else f"default {default}; ")
                              + "a comma list sweeps)")
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


# ---------------------------------------------------------------------------------------------
# `rgpo train`: a new run or a resumed one.

SEED_FLAGS = ("seeds", "seed")
RUN_CONTROL_FLAGS = ("checkpoint_every", "checkpoint_minutes", "keep_checkpoints",
                     "data_parallel", "cpu_devices")
INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's code for a Ctrl-C'd command


@dataclasses.dataclass
class TrainPlan:
  """What `rgpo train` runs: settings, folder, run control."""

  config: TrainConfig
  grid: dict[str, list[float]]
  seeds: int
  seed: int
  out: str
  resume: bool
  control: Any  # io.RunControl


def check_algo_params(config: TrainConfig, explicit: set[str]) -> None:
  """Refuse a gate or update-rule parameter given on the command line that the chosen algo
  does not use, exactly as a swept one is refused (`sweep.check_grid`, same message)."""
  from rgpo_jax.training.sweep import check_grid  # pylint: disable=import-outside-toplevel
  given = sorted(explicit & set(SWEEPABLE))
  check_grid(config, {name: [getattr(config, name)] for name in given})


def default_out_dir(config: TrainConfig, base: str = "runs") -> str:
  """A new folder name under `base` from env, algo and local time, e.g.
  runs/CartPole-v1-rgpo-20261123-141503 (-2, -3 ... appended if taken)."""
  env = "".join(c if c.isalnum() or c in "-_." else "-" for c in config.env)
  stem = os.path.join(base, f"{env}-{config.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
  out, n = stem, 1
  while os.path.exists(out):
    n += 1
    out = f"{stem}-{n}"
  return out


def _comparable(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_comparable(v) for v in value]
  if isinstance(value, dict):
    return {k: _comparable(v) for k, v in sorted(value.items())}
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  return value


def _shown(value: Any) -> str:
  if isinstance(value, list):
    return ",".join(_shown(v) for v in value)
  if isinstance(value, dict):
    return ",".join(f"{k}={_shown(v)}" for k, v in value.items())
  return f"{value:g}" if isinstance(value, float) else str(value)


def changed_settings(args: argparse.Namespace, run_config: dict[str, Any]) -> list[str]:
  """'--flag NEW (the run has OLD)' for every training setting given on the command line of
  `--resume` whose value differs from the run's own (config fields, sweeps, seeds, Brax)."""
  explicit = getattr(args, "_explicit", set())
  given, given_grid = config_from_args(args)
  run_cfg = TrainConfig.from_dict(run_config["config"])
  run_grid = run_config.get("grid") or {}
  pairs = []
  for field in dataclasses.fields(TrainConfig):
    if field.name in explicit:
      new = given_grid.get(field.name, getattr(given, field.name))
      old = run_grid.get(field.name, getattr(run_cfg, field.name))
      if field.name == "env_kwargs":
        new, old = dict(new), dict(old)
      pairs.append((field.name, new, old))
  for name in SEED_FLAGS:
    if name in explicit:
      pairs.append((name, getattr(args, name), run_config.get(name)))
  for name in BRAX_FLAGS:
    if name in explicit:
      pairs.append((name, getattr(args, name), dict(run_cfg.env_kwargs).get(name)))
  return [f"{_flag(name)} {_shown(_comparable(new))} (the run has {_shown(_comparable(old))})"
          for name, new, old in pairs if _comparable(new) != _comparable(old)]


def _run_control(args: argparse.Namespace, stored: dict[str, Any] | None = None):
  """The run-control settings: `stored` (a resumed run's) with the flags given explicitly on
  this command line replacing them; a new run takes the flags."""
  from rgpo_jax.training.io import RunControl  # pylint: disable=import-outside-toplevel
  explicit = getattr(args, "_explicit", set())
  values = RunControl.from_dict(stored).to_dict() if stored is not None else {}
  for name in RUN_CONTROL_FLAGS:
    if stored is None or name in explicit:
      values[name] = getattr(args, name)
  return RunControl(**values)


def _request_host_devices(control, grid: dict[str, list[float]], seeds: int) -> None:
  """`--cpu-devices`: ask for one forced host device per core (`sweep.use_host_devices`).

  Must come before anything starts JAX's backend, which includes checking the config (importing
  gymnax creates arrays): afterwards the request would silently do nothing (one device).
  """
  if control.cpu_devices and isinstance(seeds, int) and seeds > 0:
    from rgpo_jax.training.sweep import expand_grid, use_host_devices  # pylint: disable=import-outside-toplevel
    use_host_devices(len(expand_grid(grid)) * seeds)


def _new_run_plan(args: argparse.Namespace) -> TrainPlan:
  config, grid = config_from_args(args)
  control = _run_control(args)
  _request_host_devices(control, grid, args.seeds)
  config = apply_env_family_defaults(config, getattr(args, "_explicit", set()))
  config = apply_brax_flags(config, args)
  check_algo_params(config, getattr(args, "_explicit", set()))
  out = args.out if args.out is not None else default_out_dir(config)
  return TrainPlan(config, grid, args.seeds, args.seed, out, False, control)


def _resume_plan(args: argparse.Namespace) -> TrainPlan:
  from rgpo_jax.training.resume import load_run_config  # pylint: disable=import-outside-toplevel
  if args.out is not None:
    raise ValueError(f"--resume {args.resume} continues the run in its own folder; drop "
                     f"--out {args.out}")
  run_config = load_run_config(args.resume)
  changed = changed_settings(args, run_config)
  if changed:
    raise ValueError(f"--resume {args.resume} continues the run with its own settings, but "
                     f"these flags differ: {'; '.join(changed)}. Start a new run (--out) to "
                     f"train with other settings")
  grid, seeds = run_config.get("grid") or {}, int(run_config["seeds"])
  control = _run_control(args, run_config.get("run") or {})
  _request_host_devices(control, grid, seeds)
  config = TrainConfig.from_dict(run_config["config"])
  return TrainPlan(config, grid, seeds, int(run_config["seed"]), args.resume, True, control)


def check_env_kwargs(config: TrainConfig, items: list[str]) -> None:
  """Build the env once if --env-kwarg was given, so that a keyword the env does not take or a
  bad value is an error naming the flag (not a TypeError from deep inside)."""
  if not items:
    return
  from rgpo_jax.envs import make_env  # pylint: disable=import-outside-toplevel
  try:
    make_env(config.env, **dict(config.env_kwargs))
  except (TypeError, ValueError) as e:
    given = " ".join(f"--env-kwarg {i}" for i in items)
    raise ValueError(f"{given}: not accepted by env {config.env!r} ({e})") from None


def total_steps_note(config: TrainConfig) -> str | None:
  """The line saying how many steps are trained when total_steps is not a multiple of the
  batch (training runs whole updates: total_steps // batch of them)."""
  if config.total_steps % config.batch_size == 0:
    return None
  return (f"note: --total-steps {config.total_steps} is not a multiple of the batch "
          f"{config.batch_size} (--num-envs × --num-steps); training {config.num_updates} "
          f"updates = {config.num_updates * config.batch_size} env steps per run")


# Minibatch steps per update from which the pessimistic sigmoid at k <= 4 was seen to drift
# (experiments/kl_stability: Breakout-MinAtar at 10 × 4 and lr 1e-3, 46% of updates; Brax hopper
# at 10 × 32, 8% at lr 3e-4 and 99% at lr 1e-3; k = 16 had no spike in either).
_MANY_MINIBATCH_STEPS = 40


def gate_width_note(config: TrainConfig, grid: dict[str, Any] | None = None) -> str | None:
  """The line advising a sharper pessimistic gate when many minibatch steps per update meet a
  wide one (k <= 4, fixed width); None otherwise."""
  steps = config.update_epochs * config.num_minibatches
  ks = [float(k) for k in (grid or {}).get("k", [config.k])]
  gate = ALGOS.get(config.algo, (None,))[0]
  if (gate != "pessimistic_sigmoid" or config.target_kl is not None
      or steps < _MANY_MINIBATCH_STEPS or min(ks) > 4):
    return None
  return (f"note: --algo {config.algo} with k = {min(ks):g} and {steps} minibatch steps per update "
          f"(--update-epochs × --num-minibatches): at {_MANY_MINIBATCH_STEPS}-320 such steps "
          f"this gate with k = 4 "
          f"drifted (KL spikes in 5-99% of updates on Brax hopper and Breakout, "
          f"experiments/kl_stability) where k = 16 had none; consider --k 16")


def _prepare(args: argparse.Namespace) -> TrainPlan:
  """The plan of this `rgpo train` call, validated before anything is compiled or written."""
  plan = _resume_plan(args) if args.resume is not None else _new_run_plan(args)
  if plan.seeds <= 0:
    raise ValueError(f"--seeds must be a positive integer, got {plan.seeds}")
  dp = plan.control.data_parallel
  if dp is not None and dp < 1:
    raise ValueError(f"--data-parallel must be a positive integer, got {dp}")
  plan.control.validate()
  plan.config.validate()
  if not plan.resume:
    check_env_kwargs(plan.config, args.env_kwargs)
  return plan


def _write_learning_curve(out: str) -> None:
  from rgpo_jax.training.plot import plot_runs  # pylint: disable=import-outside-toplevel
  try:
    paths = plot_runs([out], metrics=("episode_return",))
    print(f"learning curve: {', '.join(paths)}")
  except Exception as e:  # pylint: disable=broad-except  # a plot never fails a finished run
    print(f"rgpo train: warning: no learning-curve plot ({type(e).__name__}: {e})",
          file=sys.stderr)


def _report(summary: dict[str, Any], out: str) -> None:
  ret, std = summary["final_return_mean"], summary["final_return_std"]
  fmt = lambda x: "n/a" if x is None else f"{x:.1f}"
  sps = summary["steps_per_second"]
  print(f"final return {fmt(ret)} ± {fmt(std)} over {summary['num_runs']} run(s); "
        f"KL spike rate {summary['kl_spike_rate']:.3f}; "
        f"{0 if sps is None else sps:.0f} env steps/s (compile {summary['compile_seconds']:.1f} s,"
        f" train {summary['train_seconds']:.1f} s)")
  print(f"params checksum {summary['params_checksum']}")
  print(f"wrote {out}/config.json, metrics.jsonl, summary.json, checkpoints/")


def _train(args: argparse.Namespace) -> int:
  from rgpo_jax.training.io import TrainingInterrupted, run_training  # pylint: disable=import-outside-toplevel
  plan = None
  try:
    plan = _prepare(args)
    for note in (total_steps_note(plan.config), gate_width_note(plan.config, plan.grid)):
      if note:
        print(note, file=sys.stderr)
    if not plan.resume:
      print(f"run folder: {plan.out}")
    summary = run_training(plan.config, plan.grid, num_seeds=plan.seeds, seed=plan.seed,
                           out=plan.out, progress=not args.no_progress, control=plan.control,
                           resume=plan.resume)
  except ValueError as e:
    print(f"rgpo train: error: {e}", file=sys.stderr)
    return 2
  except TrainingInterrupted as e:
    print(f"rgpo train: interrupted at update {e.update} of {e.num_updates}; checkpoint and "
          f"metrics saved; resume with: rgpo train --resume {e.out}", file=sys.stderr)
    return INTERRUPTED_EXIT
  except KeyboardInterrupt:  # before the chunk loop (compiling) or a second Ctrl-C
    if plan is not None and os.path.isfile(os.path.join(plan.out, "config.json")):
      print(f"\nrgpo train: interrupted before a new checkpoint was written; resume from the "
            f"last one (or from the start) with: rgpo train --resume {plan.out}",
            file=sys.stderr)
    else:
      print("\nrgpo train: interrupted; nothing was written", file=sys.stderr)
    return INTERRUPTED_EXIT
  _report(summary, plan.out)
  _write_learning_curve(plan.out)
  return 0


# ---------------------------------------------------------------------------------------------
# Brax flags and per-family defaults.

BRAX_FLAGS = ("backend", "episode_length", "action_repeat")


def apply_brax_flags(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
  """--backend / --episode-length / --action-repeat → env_kwargs of a brax:NAME env."""
  given = {k: getattr(args, k) for k in BRAX_FLAGS if getattr(args, k, None) is not None}
  if not given:
    return config
  if not config.env.startswith("brax:"):
    flags = ", ".join("--" + k.replace("_", "-") for k in given)
    raise ValueError(f"{flags} only apply to Brax environments (--env brax:NAME), got "
                     f"env={config.env!r}")
  kwargs = dict(config.env_kwargs)
  kwargs.update(given)
  return config.replace(env_kwargs=tuple(sorted(kwargs.items())))


def apply_env_family_defaults(config: TrainConfig, explicit: set[str]) -> TrainConfig:
  """For brax:NAME, the Brax family's defaults (`envs.brax.trainer_defaults`) replace every
  config field the command line did not set explicitly."""
  if not config.env.startswith("brax:"):
    return config
  from rgpo_jax.envs.brax import trainer_defaults
  defaults = trainer_defaults(config.env[len("brax:"):])
  return config.replace(**{k: v for k, v in defaults.items() if k not in explicit})


class _Explicit(argparse.Action):
  """Wraps a config flag's action to record that the user gave it (in `namespace._explicit`)."""

  def __init__(self, inner: argparse.Action):  # pylint: disable=super-init-not-called
    self.__dict__.update(inner.__dict__)
    self._inner = inner

  def __call__(self, parser, namespace, values, option_string=None):
    explicit = getattr(namespace, "_explicit", set())
    explicit.add(self.dest)
    setattr(namespace, "_explicit", explicit)
    self._inner(parser, namespace, values, option_string)


def _track_explicit(parser: argparse.ArgumentParser) -> None:
  """Records in `args._explicit` which flags the user gave: every config field, the seeds,
  the Brax flags and the run-control flags (resume compares or restores them)."""
  fields = ({f.name for f in dataclasses.fields(TrainConfig)} | set(SEED_FLAGS)
            | set(BRAX_FLAGS) | set(RUN_CONTROL_FLAGS))
  for i, action in enumerate(parser._actions):  # pylint: disable=protected-access
    if action.dest in fields:
      wrapped = _Explicit(action)
      parser._actions[i] = wrapped  # pylint: disable=protected-access
      for opt in action.option_strings:
        parser._option_string_actions[opt] = wrapped  # pylint: disable=protected-access
      for group in parser._action_groups:  # pylint: disable=protected-access
        group._group_actions[:] = [wrapped if a is action else a  # pylint: disable=protected-access
                                   for a in group._group_actions]  # pylint: disable=protected-access


def add_run_arguments(p: argparse.ArgumentParser) -> None:
  """Checkpoint / resume and Brax flags of `rgpo train`."""
  from rgpo_jax.training.io import DEFAULT_CHECKPOINT_MINUTES  # pylint: disable=import-outside-toplevel
  g = p.add_argument_group(
      "checkpoints and resume",
      "A checkpoint (the full training state, atomic) is written every --checkpoint-minutes "
      "of training and every --checkpoint-every updates, at the end, and on Ctrl-C: the "
      "first Ctrl-C finishes the current chunk of updates, saves, prints the command that "
      "resumes the run and exits with status 130 (a second Ctrl-C stops at once). These "
      "run-control flags are saved in config.json and restored by --resume, where giving "
      "one again replaces it.")
  g.add_argument("--checkpoint-every", type=_int_arg, default=0, metavar="N",
                 help="also save every N updates (0: by time only); a run killed mid-save "
                      "resumes from the previous checkpoint")
  g.add_argument("--checkpoint-minutes", type=float, default=DEFAULT_CHECKPOINT_MINUTES,
                 metavar="M", help="save after the first chunk that ends M minutes after the "
                                   "previous save (0: off)")
  g.add_argument("--keep-checkpoints", type=_int_arg, default=3, metavar="K",
                 help="keep the last K checkpoints")
  g.add_argument("--resume", type=str, default=None, metavar="RUN",
                 help="continue the stopped run in folder RUN from its newest good "
                      "checkpoint (a corrupt newer one is skipped with a warning; a run "
                      "stopped before its first checkpoint restarts from update 0), with "
                      "RUN's own config.json: a training flag given with a different value "
                      "is refused, naming it. Ends with the same parameters as an "
                      "uninterrupted run")
  b = p.add_argument_group(
      "Brax (--env brax:NAME, e.g. brax:ant, brax:halfcheetah, brax:hopper, brax:walker2d, "
      "brax:humanoid, brax:inverted_pendulum, brax:inverted_double_pendulum, brax:reacher); "
      "settings not given on the command line come from the Brax family defaults "
      "(rgpo_jax.envs.brax.trainer_defaults: obs normalisation on, 64×64 tanh, CPU-sized "
      "batches; scale with --num-envs / --total-steps on an accelerator)")
  b.add_argument("--backend", type=str, default=None,
                 help="physics pipeline: positional (default, fastest on CPU), generalized, "
                      "spring, mjx")
  b.add_argument("--episode-length", type=_int_arg, default=None,
                 help="time limit in Brax steps (default 1000); truncation bootstraps")
  b.add_argument("--action-repeat", type=_int_arg, default=None,
                 help="Brax steps per agent step (default 1; rewards summed, stops at "
                      "termination)")


def _evaluate(args: argparse.Namespace) -> int:
  import json  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.resume import evaluate_run  # pylint: disable=import-outside-toplevel
  try:
    if args.episodes <= 0:
      raise ValueError(f"--episodes must be a positive integer, got {args.episodes}")
    result = evaluate_run(args.run, num_episodes=args.episodes, seed=args.seed,
                          warn=lambda line: print(line, file=sys.stderr))
  except (ValueError, CheckpointError) as e:
    print(f"rgpo evaluate: error: {e}", file=sys.stderr)
    return 2
  print(f"{args.run}: deterministic-policy return {result['deterministic_return_mean']:.1f} ± "
        f"{result['deterministic_return_std']:.1f} over {len(result['deterministic_return_per_run'])}"
        f" run(s) × {args.episodes} episodes (checkpoint at update "
        f"{result['checkpoint_update']} of {result['num_updates']})")
  path = os.path.join(args.run, "eval.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=2)
  os.replace(tmp, path)  # the newest evaluation replaces an earlier one
  print(f"wrote {path}")
  if args.json:
    print(json.dumps(result, indent=2))
  return 0


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "evaluate", help="deterministic-policy returns of a trained run (from its checkpoint)",
      description="Load the newest good checkpoint of a run written by `rgpo train` and "
                  "report the undiscounted returns of the deterministic policy (Gaussian mean, "
                  "argmax for discrete actions) on fresh episodes, per run of the sweep. The "
                  "result is also written to RUN/eval.json (replacing an earlier one).",
      formatter_class=HelpFormatter)
  p.add_argument("run", help="run folder (config.json + checkpoints/)")
  p.add_argument("--episodes", type=_int_arg, default=16, help="episodes per run")
  p.add_argument("--seed", type=_int_arg, default=0, help="PRNG seed of the env resets")
  p.add_argument("--json", action="store_true", help="also print the full result as JSON")
  p.set_defaults(func=_evaluate)
  return p


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
      formatter_class=HelpFormatter)
  p.add_argument("--seeds", type=_int_arg, default=1, help="seeds per hyperparameter setting")
  p.add_argument("--seed", type=_int_arg, default=0, help="base PRNG seed")
  p.add_argument("--out", type=str, default=None,
                 help="run folder for config.json, metrics.jsonl, summary.json, checkpoints/ "
                      "and plots/ (must not hold another run). Default: a new folder "
                      "runs/ENV-ALGO-YYYYmmdd-HHMMSS, printed at the start")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--cpu-devices", action=argparse.BooleanOptionalAction, default=True,
                 help="CPU only: split the runs over forced host devices, up to one per core "
                      "(a number that divides the runs); about 1.9x faster for 16 CartPole "
                      "seeds on 2 cores. No effect on accelerators")
  p.add_argument("--data-parallel", type=_int_arg, default=None, metavar="N",
                 help="devices each run's envs are split over (gradients and statistics "
                      "averaged across them; same result as one device). Must divide "
                      "--num-envs, and --num-minibatches must divide --num-steps. Default: on "
                      "accelerators the devices left after splitting the runs one per device, "
                      "on CPU 1")
  add_config_arguments(p)
  add_run_arguments(p)
  _track_explicit(p)
  p.set_defaults(func=_train)
  return p


def add_plot_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "plot", help="learning curves of one or more training runs",
      description="Write learning-curve PNGs (mean and spread across seeds; one line per "
                  "algorithm / hyperparameter setting) from runs written by `rgpo train`.",
      formatter_class=HelpFormatter)
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
  add_evaluate_parser(subparsers)
