"""The library core imports with only jax, jaxlib, chex and numpy; the CLI names missing extras.

A subprocess installs an import blocker on `sys.meta_path` that makes the heavy packages (the
`train` and `brax` extras, scipy) look uninstalled, then imports the core and runs `rgpo`.
"""

import subprocess
import sys
import textwrap

from conftest import repo_subprocess_env

BLOCKED = ("flax", "optax", "gymnax", "brax", "orbax", "matplotlib", "tqdm", "scipy", "mujoco",
           "six")

_BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
    return None

sys.meta_path.insert(0, Blocker())
"""


def _run_blocked(code: str, blocked=BLOCKED) -> subprocess.CompletedProcess:
  env = repo_subprocess_env(JAX_PLATFORMS="cpu")
  blocker = _BLOCKER.format(blocked=tuple(blocked))
  return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)], env=env,
                        capture_output=True, text=True, timeout=300)


def test_core_imports_and_differentiates_without_heavy_packages():
  result = _run_blocked("""
      import importlib, pkgutil, sys
      import rgpo_jax
      import rgpo_jax.advantages, rgpo_jax.distributions, rgpo_jax.gates, rgpo_jax.losses
      import rgpo_jax.variance
      # Every other top-level library module too (networks is the trainer's flax model).
      for m in pkgutil.iter_modules(rgpo_jax.__path__):
        if not m.ispkg and m.name not in ("networks", "cli"):
          importlib.import_module("rgpo_jax." + m.name)
      import jax, jax.numpy as jnp
      from rgpo_jax import gates, losses
      # d loss / d log_prob = -w(1)·Â/N = -1·1/4 for the k = 4 sigmoid on on-policy samples.
      grad = jax.grad(lambda lp: losses.policy_loss(gates.sigmoid(4.0), lp, jnp.zeros(4),
                                                    jnp.ones(4))[0])(jnp.zeros(4))
      print("grad", [round(float(g), 6) for g in grad])
      print("heavy", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
  """)
  assert result.returncode == 0, result.stderr
  assert "grad [-0.25, -0.25, -0.25, -0.25]" in result.stdout
  assert "heavy []" in result.stdout


def test_the_blocker_really_blocks():
  result = _run_blocked("import optax")
  assert result.returncode != 0 and "blocked by the test" in result.stderr


def test_cli_names_the_extra_to_install_instead_of_a_traceback():
  result = _run_blocked("""
      from rgpo_jax import cli
      for argv in (["train", "--out", "runs/x"], ["evaluate", "--help"],
                   ["variance", "--synthetic", "--out", "/nonexistent/never"]):
        try:
          cli.main(argv)
        except SystemExit as e:
          print("EXIT", e)
      cli.main(["--help"])
  """)
  assert result.returncode == 0, result.stderr
  assert ("EXIT rgpo train needs the 'train' extra (module 'optax' is not installed): "
          "pip install 'rgpo_jax[train]'") in result.stdout
  assert "EXIT rgpo evaluate needs the 'train' extra" in result.stdout
  assert "EXIT rgpo variance --synthetic needs the 'train' extra" in result.stdout
  assert "Traceback" not in result.stdout + result.stderr
  assert "(not installed)" in result.stdout  # `rgpo --help` lists the commands it lacks


def test_brax_env_without_brax_names_the_extra(tmp_path):
  out = tmp_path / "never"
  result = _run_blocked(f"""
      from rgpo_jax import cli
      try:
        cli.main(["train", "--env", "brax:ant", "--no-progress", "--out", {str(out)!r}])
      except SystemExit as e:
        print("EXIT", e.code)
  """, blocked=("brax", "mujoco"))
  assert result.returncode == 0, result.stderr
  assert ("need the 'brax' extra (module 'brax' is not installed): pip install 'rgpo_jax[brax]'"
          in result.stdout + result.stderr), result.stdout + result.stderr
  assert "Traceback" not in result.stdout + result.stderr
  assert not out.exists()
