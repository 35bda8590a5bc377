"""`rgpo rlhf`: bad input is refused with the value named, before any model is loaded;
and the VADER reward scores sentiment offline."""

import os
import subprocess
import sys

import pytest

from rgpo_jax import cli
from rgpo_jax.rlhf import rewards


def _refused(tmp_path, *flags):
  with pytest.raises(SystemExit) as e:
    cli.main(["rlhf", "--out", str(tmp_path / "run"), *flags])
  assert not os.path.exists(tmp_path / "run")
  return str(e.value)


@pytest.mark.parametrize("flags, named", [
    (("--method", "reinforce_pp"), "'reinforce_pp'"),
    (("--batch-size", "0"), "batch_size=0"),
    (("--steps", "-3"), "steps=-3"),
    (("--method", "grpo", "--num-generations", "1"), "num_generations=1"),
    (("--learning-rate", "0"), "learning_rate=0"),
    (("--beta", "0"), "beta=0"),                       # rgpo_dual needs π_ref's log-probs
    (("--model", "/nonexistent/model.gguf"), "/nonexistent/model.gguf"),
    (("--advantage", "gae"), "'gae'"),
    (("--method", "grpo", "--advantage", "pass_at_k", "--pass-k", "8"), "pass_k=8"),
    (("--method", "ppo", "--advantage", "surrogate"), "method='ppo'"),
    (("--task", "arithmetic", "--eval-samples", "2", "--pass-k", "4"), "eval_samples=2"),
])
def test_bad_input_is_refused_with_the_value_named(tmp_path, flags, named):
  assert named in _refused(tmp_path, *flags)


def test_an_output_folder_holding_files_is_refused(tmp_path):
  out = tmp_path / "used"
  out.mkdir()
  (out / "config.json").write_text("{}")
  with pytest.raises(SystemExit, match="already holds files"):
    cli.main(["rlhf", "--out", str(out)])


def test_resume_needs_a_run_folder_and_its_own_settings(tmp_path):
  with pytest.raises(SystemExit, match="config.json"):
    cli.main(["rlhf", "--resume", str(tmp_path)])
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text('{"config": {"method": "grpo", "steps": 5}}')
  with pytest.raises(SystemExit, match=r"--steps 7 \(run: 5\)"):
    cli.main(["rlhf", "--resume", str(run), "--steps", "7"])
  with pytest.raises(SystemExit, match=r"--save-policy True \(run: False\)"):
    cli.main(["rlhf", "--resume", str(run), "--save-policy"])


def test_rgpo_help_does_not_import_tunix():
  code = ("import sys; from rgpo_jax import cli; cli.build_parser(); "
          "bad = [m for m in sys.modules if m.split('.')[0] == 'tunix']; assert not bad, bad[:3]")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_vader_positivity_orders_sentiment():
  scores = rewards.vader_positivity(
      prompts=["p"] * 4, completions=["I love this, it is wonderful!", "The table is brown.",
                                      "This is terrible and sad.", ""])
  assert scores[0] > 0.5 and scores[2] < -0.5 and scores[1] == 0.0 and scores[3] == 0.0
