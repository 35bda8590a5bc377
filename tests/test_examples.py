"""Every script in examples/ runs (with --quick) and prints its result.

The three run at once in subprocesses (compile dominates and is mostly single-threaded).
"""

import os
import subprocess
import sys

import pytest
from conftest import repo_subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ("ppo_cartpole.py", "gaussian_pendulum.py", "custom_gate_variance.py")


@pytest.fixture(scope="module")
def outputs():
  env = repo_subprocess_env(JAX_PLATFORMS="cpu")
  procs = {name: subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", name),
                                   "--quick"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
           for name in EXAMPLES}
  results = {}
  for name, proc in procs.items():
    try:
      out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      proc.kill()
      out, _ = proc.communicate()
    results[name] = (proc.returncode, out)
  return results


def test_every_example_is_tested():
  assert sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")) == \
      sorted(EXAMPLES)


@pytest.mark.parametrize("name", ["ppo_cartpole.py", "gaussian_pendulum.py"])
def test_agent_examples_train_and_report_returns(outputs, name):
  code, out = outputs[name]
  assert code == 0, out
  assert "mean episode return" in out and "per seed: [" in out, out
  assert "acceptance fraction" in out, out


def test_custom_gate_example_bounds_the_variance(outputs):
  code, out = outputs["custom_gate_variance.py"]
  assert code == 0, out
  assert "sup_r w of the custom gate: 4.0000" in out, out
  for row in ("IS", "saturating IS (custom)", "RGPO sigmoid k=4"):
    assert row in out, row
