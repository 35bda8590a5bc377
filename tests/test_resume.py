"""`rgpo train --resume`: a run stopped after a checkpoint and resumed ends bit-identical to an
uninterrupted run, also when its newest checkpoint is corrupt (fallback to the one before) or
when it stopped before its first checkpoint (restart from update 0); mismatched checkpoints are
refused touching nothing; run-control flags are restored; Brax flags/defaults."""

import contextlib
import glob
import io
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from rgpo_jax import cli
from rgpo_jax.training import checkpoint as ckpt_lib
from rgpo_jax.training import cli as train_cli
from conftest import flip_bytes, persistent_compilation_cache

TINY = ["train", "--env", "CartPole-v1", "--num-envs", "2", "--num-steps", "8", "--total-steps", "128",
        "--num-minibatches", "2", "--update-epochs", "2", "--hidden", "16", "--seeds", "2",
        "--normalize-obs", "--checkpoint-every", "4", "--no-progress",
        "--target-kl", "0.02"]  # 8 updates; the adaptive gate width is part of the resumed state


def _summary(run):
  with open(os.path.join(run, "summary.json")) as f:
    return json.load(f)


class _Stop(Exception):
  pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  # The three runs compile the same programs: a persistent compilation cache compiles them once.
  with persistent_compilation_cache(str(base / "jax_cache")):
    yield _make_runs(base)


def _corrupt_step(run, step):
  """Flips bytes in every data file of a checkpoint step (tensorstore then fails its CRC)."""
  state = os.path.join(run, "checkpoints", str(step), "state")
  for path in glob.glob(os.path.join(state, "**", "d", "*"), recursive=True):
    flip_bytes(path)


def _unfinished_copy(full, folder):
  """A copy of the finished run `full` as it would be if stopped before writing summary.json."""
  shutil.copytree(full, folder)
  os.remove(os.path.join(folder, "summary.json"))
  shutil.rmtree(os.path.join(folder, "plots"))
  return folder


def _resume_capturing(run):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(["train", "--resume", run, "--no-progress"])
  return rc, out.getvalue(), err.getvalue()


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
  # Newest checkpoint (8) corrupt: falls back to 4.
  corrupt = _unfinished_copy(full, str(base / "corrupt"))
  _corrupt_step(corrupt, 8)
  corrupt_output = _resume_capturing(corrupt)
  # Stopped before its first checkpoint, with an interrupted save's tmp folder left behind.
  fresh = _unfinished_copy(full, str(base / "fresh"))
  shutil.rmtree(os.path.join(fresh, "checkpoints"))
  os.makedirs(os.path.join(fresh, "checkpoints", "4.orbax-checkpoint-tmp-1700000000", "state"))
  fresh_output = _resume_capturing(fresh)
  return {"full": full, "stopped": stopped, "mismatched": mismatched, "corrupt": corrupt,
          "corrupt_output": corrupt_output, "fresh": fresh, "fresh_output": fresh_output}


def test_resumed_run_ends_with_identical_params_checksum(runs):
  full, stopped = runs["full"], runs["stopped"]
  a, b = _summary(full), _summary(stopped)
  assert b["resumed_from_update"] == 4 and a["resumed_from_update"] is None
  assert a["params_checksum"] == b["params_checksum"]
  assert a["params_checksum_per_run"] == b["params_checksum_per_run"]
  assert a["params_checksum_per_run"][0] != a["params_checksum_per_run"][1]  # 2 seeds differ


def test_summary_records_the_software_the_numbers_depend_on(runs):
  software = _summary(runs["full"])["software"]
  assert software["jax"] == jax.__version__ and software["numpy"] == np.__version__
  commit = software["rgpo_jax_commit"]  # this checkout's HEAD (CI runs from a git clone)
  assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), commit


def test_resumed_metrics_equal_uninterrupted_metrics(runs):
  full, stopped = runs["full"], runs["stopped"]
  with open(os.path.join(full, "metrics.jsonl")) as f:
    a = [json.loads(line) for line in f]
  with open(os.path.join(stopped, "metrics.jsonl")) as f:
    b = [json.loads(line) for line in f]
  assert len(a) == len(b) == 2 * 8
  assert a == b
  assert _summary(full)["final_return_per_run"] == _summary(stopped)["final_return_per_run"]


def test_run_control_flags_are_restored_on_resume(runs):
  with open(os.path.join(runs["stopped"], "config.json")) as f:
    assert json.load(f)["run"]["checkpoint_every"] == 4  # not the flag's default, 0
  assert sorted(e for e in os.listdir(os.path.join(runs["stopped"], "checkpoints"))) == [
      "4", "8"]


def test_corrupt_newest_checkpoint_falls_back_to_the_one_before(runs):
  full, corrupt = runs["full"], runs["corrupt"]
  rc, out, err = runs["corrupt_output"]
  assert rc == 0, err
  ckpts = os.path.join(os.path.abspath(corrupt), "checkpoints")
  warning = (f"warning: checkpoint {ckpts}/8 is corrupt; using the newest good one, "
             f"{ckpts}/4")
  assert [l for l in out.splitlines() if "is corrupt" in l] == [warning]
  assert "resuming " + corrupt + " from update 4 of 8" in out
  assert "Traceback" not in err and "Event loop is closed" not in err, err
  assert _summary(corrupt)["params_checksum"] == _summary(full)["params_checksum"]
  assert sorted(os.listdir(ckpts)) == ["4", "8", "8.corrupt"]  # set aside, then saved anew
  with open(os.path.join(full, "metrics.jsonl")) as f, \
      open(os.path.join(corrupt, "metrics.jsonl")) as g:
    assert f.read() == g.read()


def test_run_stopped_before_its_first_checkpoint_restarts_from_scratch(runs):
  full, fresh = runs["full"], runs["fresh"]
  rc, out, err = runs["fresh_output"]
  assert rc == 0, err
  assert f"{fresh} has no complete checkpoint (it stopped before its first one): restarting " \
         f"it from update 0 with its own settings" in out
  assert _summary(fresh)["params_checksum"] == _summary(full)["params_checksum"]
  assert _summary(fresh)["resumed_from_update"] == 0
  assert sorted(os.listdir(os.path.join(fresh, "checkpoints"))) == ["4", "8"]  # tmp removed


def test_finished_run_cannot_be_resumed(runs, capsys):
  full = runs["full"]
  assert cli.main(["train", "--resume", full, "--no-progress"]) == 2
  assert "already finished" in capsys.readouterr().err


def test_checkpoint_of_another_network_is_refused_touching_nothing(runs, capsys, snapshot):
  mismatched = runs["mismatched"]
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


def test_evaluate_reports_final_checkpoint_and_writes_eval_json(runs, capsys):
  full = runs["full"]
  assert cli.main(["evaluate", full, "--episodes", "2"]) == 0
  out = capsys.readouterr().out
  assert "checkpoint at update 8 of 8" in out and "over 2 run(s) × 2 episodes" in out
  with open(os.path.join(full, "eval.json")) as f:
    result = json.load(f)
  assert f"wrote {os.path.join(full, 'eval.json')}" in out
  assert result["checkpoint_update"] == 8 and len(result["deterministic_return_per_run"]) == 2
  assert f"deterministic-policy return {result['deterministic_return_mean']:.1f}" in out


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
