"""Code shape: the variance instrument keeps every function short (one concept each)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rgpo_jax"


def _function_lengths(folder: pathlib.Path):
  for path in sorted(folder.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}", (
            node.end_lineno - node.lineno + 1)


def test_variance_functions_are_at_most_80_lines():
  lengths = dict(_function_lengths(PACKAGE / "variance"))
  assert len(lengths) > 40  # the walk found the package
  assert {name: n for name, n in lengths.items() if n > 80} == {}
