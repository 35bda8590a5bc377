"""`rgpo rlhf`'s driver end to end on a tiny random tunix Llama (tunix's mock vocabulary): the
run folder's files, evaluation at step 0 against the reference, and a run stopped after a
checkpoint and resumed that ends exactly where an uninterrupted run ends.

Compilation dominates (each runner compiles tunix's sampler and train step): the module shares
one persistent compilation cache, so only the first run compiles.
"""

import json
import os

import numpy as np
import pytest

from rgpo_jax.rlhf_cli import RLHFConfig
from rgpo_jax.rlhf import driver, prompts
from rgpo_jax.training.io import TrainingInterrupted
from conftest import persistent_compilation_cache

WORDS = ("hello world", "My name", "hello there", "input string", "Tunix library",
         "distributed training")
# A reward the tiny model can move: how often it says "hello".
TASK = prompts.Task("tiny", tuple({"prompt": w} for w in WORDS),
                    tuple({"prompt": w} for w in WORDS[:2]),
                    lambda prompts, completions, **kw: [float(c.count("hello")) for c in completions])
CONFIG = RLHFConfig(method="rgpo_dual", seeds=1, steps=3, batch_size=2, num_generations=2,
                    max_new_tokens=4, eval_every=2, learning_rate=1e-2, save_policy=True)


def tiny_model(config):
  from flax import nnx
  from tunix.models.llama3 import model as llama
  from tunix.tests import test_common as tunix_testing
  vocab = tunix_testing.MockVocab()
  cfg = llama.ModelConfig(num_layers=1, vocab_size=vocab.GetPieceSize(), embed_dim=16,
                          hidden_dim=32, num_heads=2, head_dim=8, num_kv_heads=1,
                          rope_theta=10_000, norm_eps=1e-5, weight_tying=True)
  return llama.Llama3(cfg, rngs=nnx.Rngs(0)), vocab


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  with persistent_compilation_cache(str(tmp_path_factory.mktemp("jax_cache"))):
    yield


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("rlhf") / "run")
  summary = driver.run_rlhf(CONFIG, out, load_model=tiny_model, task=TASK, progress=False)
  return out, summary


def test_a_run_writes_config_metrics_samples_summary_and_plots(finished):
  out, summary = finished
  assert sorted(os.listdir(out)) == ["config.json", "metrics.jsonl", "plots", "policy", "runs",
                                     "samples.jsonl", "summary.json"]
  assert sorted(os.listdir(os.path.join(out, "plots"))) == ["pareto.png", "reward.png"]
  assert not os.path.exists(os.path.join(out, "checkpoints"))  # removed when the seed finished
  assert json.load(open(os.path.join(out, "config.json")))["config"] == CONFIG.to_dict()
  records = _records(os.path.join(out, "metrics.jsonl"))
  assert [r["step"] for r in records] == [0, 1, 2, 3]
  assert [("eval_kl" in r) for r in records] == [True, False, True, True]  # 0, every 2, end
  for r in records[1:]:
    assert np.isfinite(r["loss"]) and 0.0 <= r["reward_mean"] <= 4.0
    assert r["gate/acceptance_fraction"] > 0  # rgpo_dual's gate diagnostics reach the file
  # Step 0: policy = reference, so every completion's KL estimate is exactly 0.
  assert records[0]["eval_kl"] == 0.0
  samples = _records(os.path.join(out, "samples.jsonl"))
  before = [s for s in samples if s["when"] == "before"]
  after = [s for s in samples if s["when"] == "after"]
  assert len(before) == len(after) == len(TASK.eval) * CONFIG.eval_samples
  assert all(s["kl"] == 0.0 for s in before)
  # The summary's final numbers are the last evaluation's, which are the samples' means.
  np.testing.assert_allclose(summary["final_eval_kl_mean"], np.mean([s["kl"] for s in after]),
                             rtol=1e-6)
  np.testing.assert_allclose(summary["final_eval_reward_mean"],
                             np.mean([s["reward"] for s in after]))
  assert summary["final_eval_kl_mean"] != 0.0  # three steps at lr 1e-2 moved the policy
  assert records[-1]["eval_kl"] == pytest.approx(summary["final_eval_kl_mean"], rel=1e-6)


def test_a_saved_policy_loads_back_with_the_final_parameters(finished):
  from flax import nnx
  from rgpo_jax.training.checkpoint import params_checksum
  checksum = lambda model: params_checksum(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  out, summary = finished
  model, _ = driver.load_policy(out, CONFIG.seed, load_model=tiny_model)
  assert checksum(model) == summary["per_seed"][0]["params_checksum"]
  assert checksum(model) != checksum(tiny_model(CONFIG)[0])  # the trained, not the initial, one
  with pytest.raises(FileNotFoundError, match=r"no saved policy for seed 7 .*saved: seed0\)"):
    driver.load_policy(out, 7, load_model=lambda config: pytest.fail("loaded a model"))


def test_a_stopped_run_resumes_to_the_uninterrupted_result(finished, tmp_path):
  reference_out, reference = finished
  out = str(tmp_path / "run")
  with pytest.raises(TrainingInterrupted) as stopped:
    driver.run_rlhf(CONFIG, out, load_model=tiny_model, task=TASK, progress=False,
                    should_stop=lambda seed, step: step == 2)
  assert stopped.value.update == 2
  assert os.listdir(os.path.join(out, "checkpoints", "seed0")) == ["2"]
  assert [r["step"] for r in _records(os.path.join(out, "metrics.jsonl"))] == [0, 1, 2]
  with pytest.raises(ValueError, match="already holds files"):
    driver.run_rlhf(CONFIG, out, load_model=tiny_model, task=TASK, progress=False)

  summary = driver.run_rlhf(driver.load_config(out), out, resume=True, load_model=tiny_model,
                            task=TASK, progress=False)
  assert summary["per_seed"][0]["params_checksum"] == reference["per_seed"][0]["params_checksum"]
  drop_time = lambda r: {k: v for k, v in r.items() if "seconds" not in k}
  assert ([drop_time(r) for r in _records(os.path.join(out, "metrics.jsonl"))]
          == [drop_time(r) for r in _records(os.path.join(reference_out, "metrics.jsonl"))])
  assert (_records(os.path.join(out, "samples.jsonl"))
          == _records(os.path.join(reference_out, "samples.jsonl")))
  with pytest.raises(ValueError, match="already finished"):
    driver.run_rlhf(CONFIG, out, resume=True, load_model=tiny_model, task=TASK, progress=False)


def test_a_binary_task_reports_pass_at_k_and_trains_with_the_chosen_advantage(finished, tmp_path):
  """A verifiable (0/1) tiny task with the closed-form Pass@k advantages: every evaluation
  reports pass@1 and pass@k, equal to the unbiased estimator on the written samples."""
  from rgpo_jax.rlhf import tasks
  task = prompts.Task("tiny_binary", TASK.train, TASK.eval, binary=True,
                      reward_fn=lambda prompts, completions, **kw: [float("hello" in c)
                                                                    for c in completions])
  config = RLHFConfig(**{**CONFIG.to_dict(), "method": "grpo", "advantage": "pass_at_k",
                         "pass_k": 2, "beta": 0.0, "steps": 1, "eval_samples": 3})
  out = str(tmp_path / "run")
  summary = driver.run_rlhf(config, out, load_model=tiny_model, task=task, progress=False)
  records = _records(os.path.join(out, "metrics.jsonl"))
  samples = _records(os.path.join(out, "samples.jsonl"))
  for record, when in zip(records, ("before", "after")):
    rewards = np.array([s["reward"] for s in samples if s["when"] == when]).reshape(-1, 3)
    for k in (1, 2):
      assert record[f"eval_pass@{k}"] == pytest.approx(tasks.pass_at_k_of_rewards(rewards, k))
  assert summary["advantage"] == "pass_at_k"
  assert summary["final_eval_pass@2_mean"] == pytest.approx(records[-1]["eval_pass@2"])
  finished_out, _ = finished  # a non-binary task reports no pass@k
  assert not any("eval_pass@1" in r for r in _records(os.path.join(finished_out,
                                                                   "metrics.jsonl")))


def _never_loaded(config):
  raise AssertionError("the model was loaded before the configuration was checked")


@pytest.mark.parametrize("change, named", [
    (dict(method="reinforce_pp"), "'reinforce_pp'"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(num_iterations=-1), "num_iterations=-1"),
    (dict(task="poetry"), "'poetry'"),
])
def test_bad_input_is_refused_before_the_model_is_loaded(tmp_path, change, named):
  config = RLHFConfig(**{**CONFIG.to_dict(), **change})
  with pytest.raises(ValueError, match=named):
    driver.run_rlhf(config, str(tmp_path / "run"), load_model=_never_loaded, task=TASK)
  assert not os.path.exists(tmp_path / "run")


def test_a_missing_model_file_is_named_before_anything_is_loaded(tmp_path):
  config = RLHFConfig(**{**CONFIG.to_dict(), "model": str(tmp_path / "absent.gguf")})
  with pytest.raises(FileNotFoundError, match="absent.gguf"):
    driver.run_rlhf(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_rlhf_plot_compares_finished_runs(finished, tmp_path, capsys):
  from rgpo_jax import cli
  out, summary = finished
  assert cli.main(["rlhf-plot", out, out, "--out", str(tmp_path / "cmp")]) == 0
  assert sorted(os.listdir(tmp_path / "cmp")) == ["pareto.png", "results.md", "reward.png"]
  table = (tmp_path / "cmp" / "results.md").read_text()
  assert table.count("| rgpo_dual | run | 1 × 3 |") == 2
  assert f"{summary['final_eval_kl_mean']:.3f} ± 0.000" in table
  with pytest.raises(SystemExit, match="no summary.json"):
    cli.main(["rlhf-plot", str(tmp_path), "--out", str(tmp_path / "x")])
