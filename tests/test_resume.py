"""`rgpo train --resume`: a run stopped after a checkpoint and resumed ends bit-identical to an
uninterrupted run; mismatched checkpoints are refused touching nothing; Brax flags/defaults."""

import json
import os
import shutil

import jax
import pytest

from rgpo_jax import cli
from rgpo_jax.training import checkpoint as ckpt_lib
from rgpo_jax.training import cli as train_cli

TINY = ["train", "--env", "CartPole-v1", "--num-envs", "2", "--num-steps", "8", "--total-steps", "128",
        "--num-minibatches", "2", "--update-epochs", "2", "--hidden", "16", "--seeds", "2",
        "--normalize-obs", "--checkpoint-every", "4", "--no-progress"]  # 8 updates


def _summary(run):
  with open(os.path.join(run, "summary.json")) as f:
    return json.load(f)


class _Stop(Exception):
  pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  # The three runs compile the same programs: a persistent compilation cache compiles them once.
  saved_config = {k: getattr(jax.config, k) for k in _CACHE_CONFIG}
  jax.config.update("jax_compilation_cache_dir", str(base / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  try:
    yield _make_runs(base)
  finally:
    for k, v in saved_config.items():
      jax.config.update(k, v)


_CACHE_CONFIG = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                 "jax_persistent_cache_min_entry_size_bytes")


def _make_runs(base):
  full, stopped = str(base / "full"), str(base / "stopped")
  assert cli.main(TINY + ["--out", full]) == 0
  # The same run, killed right after its checkpoint at update 4 (as a preemption would).
  save = ckpt_lib.Checkpointer.save

  def save_then_stop(self, step, state):
    save(self, step, state)
    if step == 4:
      raise _Stop()

  ckpt_lib.Checkpointer.save = save_then_stop
  try:
    with pytest.raises(_Stop):
      cli.main(TINY + ["--out", stopped])
  finally:
    ckpt_lib.Checkpointer.save = save
  assert not os.path.exists(os.path.join(stopped, "summary.json"))
  mismatched = str(base / "mismatched")
  shutil.copytree(stopped, mismatched)
  assert cli.main(["train", "--resume", stopped, "--no-progress"]) == 0
  return full, stopped, mismatched


def test_resumed_run_ends_with_identical_params_checksum(runs):
  full, stopped, _ = runs
  a, b = _summary(full), _summary(stopped)
  assert b["resumed_from_update"] == 4 and a["resumed_from_update"] is None
  assert a["params_checksum"] == b["params_checksum"]
  assert a["params_checksum_per_run"] == b["params_checksum_per_run"]
  assert a["params_checksum_per_run"][0] != a["params_checksum_per_run"][1]  # 2 seeds differ


def test_resumed_metrics_equal_uninterrupted_metrics(runs):
  full, stopped, _ = runs
  with open(os.path.join(full, "metrics.jsonl")) as f:
    a = [json.loads(line) for line in f]
  with open(os.path.join(stopped, "metrics.jsonl")) as f:
    b = [json.loads(line) for line in f]
  assert len(a) == len(b) == 2 * 8
  assert a == b
  assert _summary(full)["final_return_per_run"] == _summary(stopped)["final_return_per_run"]


def test_finished_run_cannot_be_resumed(runs, capsys):
  full, _, _ = runs
  assert cli.main(["train", "--resume", full, "--no-progress"]) == 2
  assert "already finished" in capsys.readouterr().err


def test_checkpoint_of_another_network_is_refused_touching_nothing(runs, capsys, snapshot):
  _, _, mismatched = runs
  path = os.path.join(mismatched, "config.json")
  with open(path) as f:
    run_config = json.load(f)
  run_config["config"]["hidden"] = [32]
  with open(path, "w") as f:
    json.dump(run_config, f)
  before = snapshot(mismatched)
  assert cli.main(["train", "--resume", mismatched, "--no-progress"]) == 2
  err = capsys.readouterr().err
  assert "was written by a different run; refusing to resume" in err
  assert "network: checkpoint has {'activation': 'tanh', 'hidden': [16]}" in err
  assert snapshot(mismatched) == before


def test_evaluate_reports_final_checkpoint(runs, capsys):
  full, _, _ = runs
  assert cli.main(["evaluate", full, "--episodes", "2"]) == 0
  out = capsys.readouterr().out
  assert "checkpoint at update 8 of 8" in out and "over 2 run(s) × 2 episodes" in out


def test_evaluate_without_checkpoint_fails_clearly(tmp_path, capsys):
  assert cli.main(["evaluate", str(tmp_path)]) == 2
  assert "is not a run folder (no config.json)" in capsys.readouterr().err


def _parse(argv):
  parser = cli.build_parser()
  return parser.parse_args(["train"] + argv)


def test_brax_family_defaults_fill_only_unset_flags():
  args = _parse(["--env", "brax:hopper", "--num-envs", "32", "--lr", "5e-4"])
  config, _ = train_cli.config_from_args(args)
  config = train_cli.apply_env_family_defaults(config, args._explicit)  # pylint: disable=protected-access
  assert config.num_envs == 32 and config.lr == 5e-4  # given on the command line
  assert config.normalize_obs and config.gamma == 0.99 and config.num_steps == 32  # family


def test_brax_flags_go_to_env_kwargs_and_are_refused_for_gymnax():
  args = _parse(["--env", "brax:ant", "--backend", "generalized", "--action-repeat", "2"])
  config, _ = train_cli.config_from_args(args)
  config = train_cli.apply_brax_flags(config, args)
  assert dict(config.env_kwargs) == {"backend": "generalized", "action_repeat": 2}
  args = _parse(["--env", "CartPole-v1", "--episode-length", "100"])
  config, _ = train_cli.config_from_args(args)
  with pytest.raises(ValueError, match="--episode-length only apply to Brax environments"):
    train_cli.apply_brax_flags(config, args)
