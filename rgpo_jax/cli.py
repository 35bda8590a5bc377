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
    "rgpo_jax.variance.cli",
)


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

      raise
    module.register(subparsers)
  return parser


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
