"""The `rgpo` command. Each subcommand lives with the code it drives and registers itself here.

A subcommand module exposes `register(subparsers)`, which adds its parser(s) and sets
`func(args) -> int` as the parser default. Modules are imported only when listed here, so
`rgpo --help` shows what is installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands (train/plot/evaluate: the trainer; variance: the instrument).
SUBCOMMAND_MODULES = (
    "rgpo_jax.training.cli",
    "rgpo_jax.training.compare",
    "rgpo_jax.variance.cli",
    "rgpo_jax.rlhf_cli",
)

# For a module whose third-party dependencies are not installed: the extra that installs them
# and the commands it would have added (they then print how to install it instead of failing).
# A listed module missing from here is left out of `rgpo` when its dependencies are absent.
MODULE_EXTRAS = {
    "rgpo_jax.training.cli": ("train", ("train", "plot", "evaluate")),
    "rgpo_jax.training.compare": ("train", ("compare",)),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows "(default: X)" only where there is a default worth showing (not None, not a help
  text that already states its default)."""

  def _get_help_string(self, action):
    if action.default is None or "default" in (action.help or ""):
      return action.help
    return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="rgpo",
      description="Rejection-Gated Policy Optimization (RGPO) in JAX: train agents with any "
                  "acceptance gate (RGPO, PPO, IS, REINFORCE, SAPO, ...), sweep seeds and "
                  "hyperparameters, and measure gradient variance.",
      formatter_class=HelpFormatter)
  parser.add_argument("--version", action="version", version=_version())
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name in SUBCOMMAND_MODULES:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name and (name == e.name or name.startswith(e.name + ".")):
        continue  # that part of the package is not installed
      if e.name and e.name.split(".")[0] != "rgpo_jax":  # a third-party dependency
        if name in MODULE_EXTRAS:
          _register_missing_extra(subparsers, *MODULE_EXTRAS[name], missing=e.name)
        continue
      raise
    module.register(subparsers)
  return parser


def _register_missing_extra(subparsers, extra: str, commands, missing: str) -> None:
  """Commands whose dependencies are absent: each exits with how to install them."""
  message = (f"needs the '{extra}' extra (module {missing!r} is not installed): "
             f"pip install 'rgpo_jax[{extra}]'")
  for command in commands:
    # No options at all (prefix_chars NUL): every argument lands in `ignored`, even --help.
    p = subparsers.add_parser(command, help=f"(not installed) {message}", add_help=False,
                              prefix_chars="\0")
    p.add_argument("ignored", nargs=argparse.REMAINDER)

    def fail(args, command=command):
      raise SystemExit(f"rgpo {command} {message}")
    p.set_defaults(func=fail)


def _version() -> str:
  from rgpo_jax import __version__
  return f"rgpo {__version__}"


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if getattr(args, "func", None) is None:
    parser.print_help()
    return 0
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
