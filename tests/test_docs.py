"""The documentation: the site builds with warnings as errors, and no file points outside.

The build runs mkdocs (mkdocs-material + mkdocstrings, in the `dev` extra) in a subprocess into a
temporary folder; griffe warnings about docstrings (a documented parameter missing from the
signature, an unresolvable cross-reference) fail it.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  out = tmp_path_factory.mktemp("site")
  env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
  result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  return out


def test_site_builds_strict_with_the_api_reference(site):
  gates_page = (site / "api" / "gates" / "index.html").read_text()
  for name in ("rgpo_jax.gates.sigmoid", "rgpo_jax.gates.ppo_clip", "rgpo_jax.gates.Gate"):
    assert f'id="{name}"' in gates_page, name
  variance_page = (site / "api" / "variance" / "index.html").read_text()
  assert 'id="rgpo_jax.variance.grid.synthetic_grid"' in variance_page
  rlhf_page = (site / "api" / "rlhf" / "index.html").read_text()
  for name in ("rgpo_jax.rlhf.policy_loss.register_policy_loss", "rgpo_jax.rlhf.driver.run_rlhf",
               "rgpo_jax.rlhf.driver.load_policy", "rgpo_jax.rlhf_cli.RLHFConfig"):
    assert f'id="{name}"' in rlhf_page, name
  for page in ("method", "advantages", "pitfalls", "architecture", "results"):
    assert (site / page / "index.html").stat().st_size > 0, page


def test_grouped_parameters_render_one_row_each(site):
  page = (site / "api" / "advantages" / "index.html").read_text()
  start = page.index('id="rgpo_jax.advantages.control.gae"')
  gae = page[start:page.index('id="rgpo_jax.advantages.control.normalize"')]
  for name in ("terminated", "truncated", "gamma", "lambda_"):
    assert f"<code>{name}</code>" in gae, name
  assert "terminated, truncated" not in gae
  losses_page = (site / "api" / "losses" / "index.html").read_text()
  start = losses_page.index('id="rgpo_jax.losses.policy_loss"')
  policy_loss = losses_page[start:start + 30_000]
  assert "<code>mask</code>" in policy_loss and "Padded" in policy_loss  # shared `_MASK_DOC`


def _grouped_params_module():
  path = os.path.join(ROOT, "docs", "_ext", "grouped_params.py")
  spec = importlib.util.spec_from_file_location("grouped_params", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_grouped_parameter_expansion():
  expand = _grouped_params_module().expand_grouped_parameters
  text = ("Summary: a, b: not a parameter section.\n\nArgs:\n"
          "  x: first.\n  lo, hi (inclusive): the band,\n    continued.\n  key: a key.\n\n"
          "Returns:\n  a, b: untouched outside Args.")
  assert expand(text) == (
      "Summary: a, b: not a parameter section.\n\nArgs:\n"
      "  x: first.\n  lo: the band,\n    continued.\n  hi: (inclusive) the band,\n    continued.\n"
      "  key: a key.\n\nReturns:\n  a, b: untouched outside Args.")


# Notes that live outside the repository; no project file may point at them.
_OUTSIDE = ("../" + "shared", "shared" + "/", "PIT" + "FALLS", "RESEARCH" + ".md",
            "ARCHITECTURE" + ".md")


def test_no_file_points_outside_the_repository():
  args = ["git", "grep", "-I", "-n", "-F"] + [x for m in _OUTSIDE for x in ("-e", m)]
  result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  assert result.returncode in (0, 1), result.stderr  # 1: no match
  assert result.stdout == "", result.stdout  # every tracked text file, this one included
