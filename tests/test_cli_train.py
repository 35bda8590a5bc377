"""`rgpo train` / `rgpo plot` end to end, and every bad input's message (before compiling)."""

import json
import os

import numpy as np
import pytest

from rgpo_jax.cli import build_parser, main
from rgpo_jax.training import cli as train_cli
from rgpo_jax.training.cli import config_from_args
from rgpo_jax.training.config import TrainConfig
from rgpo_jax.training.io import last_finite_return

TINY = ["--num-envs", "2", "--num-steps", "16", "--total-steps", "128", "--update-epochs", "1",
        "--num-minibatches", "2", "--hidden", "16", "--no-progress", "--no-cpu-devices"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "x")
  rc = main(["train", *TINY, "--seeds", "2", "--k", "2,4", "--out", out])
  assert rc == 0
  return out


def test_train_writes_config_metrics_summary(run_dir):
  assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.json", "metrics.jsonl",
                                         "plots", "summary.json"]
  with open(os.path.join(run_dir, "plots", "episode_return.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"  # the learning curve, written at the end
  config = json.load(open(os.path.join(run_dir, "config.json")))
  assert config["config"]["algo"] == "rgpo" and config["grid"] == {"k": [2.0, 4.0]}
  assert config["seeds"] == 2
  assert config["run"] == {"checkpoint_every": 0, "checkpoint_minutes": 5.0,
                           "keep_checkpoints": 3, "data_parallel": None, "cpu_devices": False}
  lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  assert len(lines) == 2 * 2 * 4  # settings × seeds × updates
  assert {(l["hparams"]["k"], l["seed"]) for l in lines} == {(2.0, 0), (2.0, 1), (4.0, 0),
                                                              (4.0, 1)}
  assert sorted({l["update"] for l in lines}) == [1, 2, 3, 4]
  assert lines[-1]["env_steps"] == 128
  for key in ("episode_return", "approx_kl", "kl_spike", "gate_mean", "acceptance_fraction",
              "effective_update_ratio", "entropy", "value_loss", "grad_norm"):
    assert key in lines[0]
  summary = json.load(open(os.path.join(run_dir, "summary.json")))
  for key in ("final_return_mean", "final_return_std", "final_return_per_run", "kl_spike_rate",
              "steps_per_second", "compile_seconds", "train_seconds"):
    assert key in summary
  assert len(summary["final_return_per_run"]) == 4
  assert summary["steps_per_second"] > 0 and summary["num_runs"] == 4


def test_plot_writes_pngs(run_dir, tmp_path):
  assert main(["plot", run_dir, "--out", str(tmp_path), "--metrics", "episode_return,approx_kl"]) == 0
  for name in ("episode_return.png", "approx_kl.png"):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_existing_run_is_never_overwritten(run_dir, capsys, snapshot):
  before = snapshot(run_dir)
  assert main(["train", *TINY, "--out", run_dir]) == 2
  assert "already holds a run" in capsys.readouterr().err
  assert before == snapshot(run_dir)


@pytest.mark.parametrize("argv,message", [
    (["--env", "NoSuchEnv-v9"], "unknown env 'NoSuchEnv-v9'; allowed"),
    (["--algo", "sac"], "unknown algo 'sac'; allowed: rgpo, ppo"),
    (["--total-steps", "0"], "total_steps must be a positive integer, got total_steps=0"),
    (["--num-envs", "-2"], "num_envs must be a positive integer, got num_envs=-2"),
    (["--num-minibatches", "3"], "num_minibatches=3 must divide the batch"),
    (["--k", "0"], "k must be > 0"),
    (["--k", "2,-1"], "k must be > 0"),
    (["--algo", "ppo", "--epsilon", "1.5"], "epsilon must be in (0, 1)"),
    (["--algo", "truncated", "--low", "3", "--high", "2"], "low must be < high"),
    (["--algo", "ppo", "--k", "2,4"], "k is not a parameter of algo 'ppo'"),
    (["--algo", "ppo", "--k", "8"], "k is not a parameter of algo 'ppo' (its gate parameters: "
                                    "epsilon)"),
    (["--algo", "rgpo", "--epsilon", "0.1"], "epsilon is not a parameter of algo 'rgpo'"),
    (["--algo", "awr", "--k", "2"], "k is not a parameter of algo 'awr'"),
    (["--algo", "ppo", "--max-kl", "0.02"], "max_kl is not a parameter of algo 'ppo' (its "
                                            "update-rule parameters: none)"),
    (["--env-kwarg", "foo=1"], "--env-kwarg foo=1: not accepted by env 'CartPole-v1'"),
    (["--env-kwarg", "max_episode_steps=abc"], "--env-kwarg max_episode_steps=abc: not "
                                               "accepted by env 'CartPole-v1'"),
    (["--checkpoint-minutes", "-1"], "checkpoint_minutes must be a number >= 0"),
    (["--keep-checkpoints", "0"], "keep_checkpoints must be an integer >= 1"),
    (["--checkpoint-every", "-3"], "checkpoint_every must be an integer >= 0"),
    (["--gamma", "1.2"], "gamma must be in [0, 1], got gamma=1.2"),
    (["--lr", "0"], "lr must be > 0"),
    (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    (["--data-parallel", "0"], "--data-parallel must be a positive integer, got 0"),
    (["--data-parallel", "{too_many}"], "data_parallel={too_many} exceeds the {devices} "
                                          "available device(s)"),
])
def test_bad_input_fails_with_message(argv, message, capsys, tmp_path):
  # Another test in this process may have started the backend with forced host devices, so the
  # over-large request is one more device than this process has.
  import jax  # pylint: disable=import-outside-toplevel
  fill = dict(devices=jax.device_count(), too_many=jax.device_count() + 1)
  argv = [a.format(**fill) for a in argv]
  message = message.format(**fill)
  out = str(tmp_path / "never")
  assert main(["train", "--no-progress", "--no-cpu-devices", "--out", out, *argv]) == 2
  err = capsys.readouterr().err
  assert message in err, err
  assert not os.path.exists(out)  # failed before writing anything


def test_help_explains_every_flag(capsys):
  with pytest.raises(SystemExit):
    main(["train", "--help"])
  text = capsys.readouterr().out
  for flag in ("--env", "--algo", "--k", "--epsilon", "--tau", "--num-envs", "--num-steps",
               "--update-epochs", "--num-minibatches", "--lr", "--anneal-lr", "--ent-coef",
               "--seeds", "--out", "--total-steps", "--normalize-obs", "--kl-spike-threshold",
               "--checkpoint-every", "--checkpoint-minutes", "--keep-checkpoints", "--resume"):
    assert flag in text, flag
  flat = "".join(text.split())  # help lines wrap anywhere
  assert "Default:anewfolderruns/ENV-ALGO-YYYYmmdd-HHMMSS" in flat
  assert "(default:5.0)" in flat and "onCtrl-C" in flat and "status130" in flat


def test_defaults_are_rgpo_on_cartpole():
  args = build_parser().parse_args(["train"])
  config, grid = config_from_args(args)
  assert (config.env, config.algo, config.k, config.num_envs, config.num_steps) == (
      "CartPole-v1", "rgpo", 4.0, 4, 128)
  assert (config.update_epochs, config.num_minibatches, config.total_steps) == (4, 4, 500_000)
  assert grid == {} and args.seeds == 1
  args = build_parser().parse_args(["train", "--kl-spike-threshold", "0.05", "--lr", "1e-3,3e-3",
                                    "--total-steps", "1e5", "--no-anneal-lr"])
  config, grid = config_from_args(args)
  assert config.kl_spike_threshold == 0.05 and config.total_steps == 100_000
  assert grid == {"lr": [1e-3, 3e-3]} and config.anneal_lr is False


def _fake_run(folder, **changes):
  """A run folder as `rgpo train` leaves it before its first checkpoint (no compile needed)."""
  os.makedirs(folder)
  config = TrainConfig(**changes).to_dict()
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({"config": config, "grid": {}, "seeds": 2, "seed": 0}, f)
  open(os.path.join(folder, "metrics.jsonl"), "w").close()
  return folder


def test_resume_with_changed_settings_is_refused_naming_each(tmp_path, capsys, snapshot):
  run = _fake_run(str(tmp_path / "run"))
  before = snapshot(run)
  argv = ["train", "--resume", run, "--no-progress", "--no-cpu-devices"]
  assert main(argv + ["--lr", "1e-3", "--algo", "ppo", "--seeds", "3",
                      "--hidden", "16"]) == 2
  err = capsys.readouterr().err
  assert "continues the run with its own settings, but these flags differ" in err
  for part in ("--lr 0.001 (the run has 0.00025)", "--algo ppo (the run has rgpo)",
               "--seeds 3 (the run has 2)", "--hidden 16 (the run has 64,64)"):
    assert part in err, err
  assert main(argv + ["--k", "4,8"]) == 2  # a sweep where the run had one value
  assert "--k 4,8 (the run has 4)" in capsys.readouterr().err
  assert main(argv + ["--out", str(tmp_path / "other")]) == 2
  assert "drop --out" in capsys.readouterr().err
  assert snapshot(run) == before


def test_unfinished_run_folder_names_the_command_that_continues_it(tmp_path, capsys, snapshot):
  run = _fake_run(str(tmp_path / "run"))
  before = snapshot(run)
  assert main(["train", "--out", run, "--no-progress", "--no-cpu-devices"]) == 2
  err = " ".join(capsys.readouterr().err.split())
  assert "already holds a run" in err
  assert "it stopped before its first checkpoint, so it restarts from update 0" in err
  assert f"continue it with `rgpo train --resume {run}`" in err
  assert snapshot(run) == before


def test_default_out_folder_is_new_and_named_from_env_algo_time(tmp_path, monkeypatch):
  monkeypatch.setattr(train_cli.time, "strftime", lambda fmt: "20261123-120000")
  base = str(tmp_path / "runs")
  config = TrainConfig(env="brax:ant", algo="ppo")
  first = train_cli.default_out_dir(config, base)
  assert first == os.path.join(base, "brax-ant-ppo-20261123-120000")
  os.makedirs(first)
  assert train_cli.default_out_dir(config, base) == first + "-2"  # no collision


def test_total_steps_not_a_multiple_of_the_batch_is_said():
  note = train_cli.total_steps_note(TrainConfig())
  assert note == ("note: --total-steps 500000 is not a multiple of the batch 512 (--num-envs × "
                  "--num-steps); training 976 updates = 499712 env steps per run")
  assert train_cli.total_steps_note(TrainConfig(total_steps=1024)) is None


def test_many_minibatch_steps_with_a_wide_pessimistic_gate_are_said():
  many = dict(update_epochs=10, num_minibatches=32)
  note = train_cli.gate_width_note(TrainConfig(**many))
  assert note.startswith("note: --algo rgpo with k = 4 and 320 minibatch steps per update")
  assert "--k 16" in note
  assert train_cli.gate_width_note(TrainConfig(**many), {"k": [16.0, 2.0]}).startswith(
      "note: --algo rgpo with k = 2 ")  # the widest gate of a sweep
  assert train_cli.gate_width_note(TrainConfig()) is None  # 4 × 4 = 16 steps
  assert train_cli.gate_width_note(TrainConfig(k=16.0, **many)) is None
  assert train_cli.gate_width_note(TrainConfig(algo="ppo", **many)) is None
  assert train_cli.gate_width_note(TrainConfig(target_kl=0.02, **many)) is None


def test_progress_shows_last_finite_return_never_nan():
  chunk = np.array([[np.nan, 10.0, np.nan], [np.nan, np.nan, np.nan], [1.0, 2.0, 4.0]])
  assert last_finite_return(chunk) == 7.0  # runs 0 and 2: 10 and 4; run 1 has no episode
  assert last_finite_return(np.full((2, 3), np.nan)) is None  # the bar keeps its last value


def test_run_control_flags_are_restored_and_explicit_ones_replace_them():
  args = build_parser().parse_args(["train", "--resume", "x", "--keep-checkpoints", "5"])
  stored = {"checkpoint_every": 50, "checkpoint_minutes": 1.0, "keep_checkpoints": 2,
            "data_parallel": None, "cpu_devices": False}
  control = train_cli._run_control(args, stored)  # pylint: disable=protected-access
  assert control.to_dict() == dict(stored, keep_checkpoints=5)


def test_host_loop_functions_are_at_most_80_lines():
  import ast  # pylint: disable=import-outside-toplevel
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rgpo_jax",
                      "training")
  long = {}
  for name in ("io", "cli", "checkpoint", "resume", "plot"):
    path = os.path.join(root, name + ".py")
    with open(path) as f:
      for node in ast.walk(ast.parse(f.read())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          if node.end_lineno - node.lineno + 1 > 80:
            long[f"{name}.py:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
  assert long == {}


def test_metric_lines_are_the_json_dumps_of_each_record():
  from rgpo_jax.training import io  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.sweep import Sweep  # pylint: disable=import-outside-toplevel
  from rgpo_jax.training.train import METRICS  # pylint: disable=import-outside-toplevel
  sweep = Sweep(TrainConfig(num_envs=2, num_steps=8, total_steps=64, num_minibatches=2,
                            hidden=(8,)), {"lr": [1e-3, 3e-4]}, num_seeds=2)
  rng = np.random.default_rng(0)
  chunk = {k: (rng.standard_normal((4, 3)) * 10.0 ** rng.integers(-30, 30, (4, 3)))
           .astype(np.float32) for k in METRICS}
  chunk["episode_return"][0, :2] = np.nan
  chunk["approx_kl"][3, 2] = np.inf
  chunk["episodes"] = rng.integers(0, 5, (4, 3)).astype(np.int32)
  expected = []
  for u in range(3):  # update-major, one record per run
    for r in range(4):
      rec = {"run": r, "seed": r % 2, "hparams": {"lr": [1e-3, 3e-4][r // 2]},
             "update": 10 + u + 1, "env_steps": (10 + u + 1) * 16}
      for name in METRICS:
        x = float(chunk[name][r, u])
        rec[name] = float(f"{x:.7g}") if np.isfinite(x) else None
      expected.append(json.dumps(rec))
  assert io._metric_lines(sweep, chunk, 10) == expected  # pylint: disable=protected-access


def test_gate_parameter_of_trpos_gate_is_accepted():
  config = TrainConfig(algo="trpo", trpo_gate="rgpo", k=8.0)
  train_cli.check_algo_params(config, {"k", "max_kl", "lr"})  # all used: no error
  with pytest.raises(ValueError, match="epsilon is not a parameter of algo 'trpo'"):
    train_cli.check_algo_params(config, {"epsilon"})


_PREPARE_THEN_COUNT = """
import sys
from rgpo_jax.cli import build_parser
from rgpo_jax.training import cli
cli._prepare(build_parser().parse_args(sys.argv[1:]))
import jax
print(jax.device_count())
"""


def test_cpu_devices_are_requested_before_the_config_check_starts_jax(tmp_path):
  # Checking the config imports gymnax, which starts JAX's backend; the host-device request
  # must come first or `rgpo train` silently runs a sweep on one device. A fresh process.
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", _PREPARE_THEN_COUNT, "train", "--seeds", "2",
                         "--out", str(tmp_path / "x")], env=env, capture_output=True, text=True,
                        check=True)
  expected = 2 if (os.cpu_count() or 1) >= 2 else 1
  assert int(proc.stdout.split()[-1]) == expected, proc.stderr
