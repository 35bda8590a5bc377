"""`rgpo train` / `rgpo plot` end to end, and every bad input's message (before compiling)."""

import json
import os

import pytest

from rgpo_jax.cli import build_parser, main
from rgpo_jax.training.cli import config_from_args

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
                                         "summary.json"]
  config = json.load(open(os.path.join(run_dir, "config.json")))
  assert config["config"]["algo"] == "rgpo" and config["grid"] == {"k": [2.0, 4.0]}
  assert config["seeds"] == 2
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
    (["--gamma", "1.2"], "gamma must be in [0, 1], got gamma=1.2"),
    (["--lr", "0"], "lr must be > 0"),
    (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    (["--data-parallel", "0"], "--data-parallel must be a positive integer, got 0"),
    (["--data-parallel", "2"], "data_parallel=2 exceeds the 1 available device(s)"),
])
def test_bad_input_fails_with_message(argv, message, capsys, tmp_path):
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
               "--seeds", "--out", "--total-steps", "--normalize-obs", "--kl-spike-threshold"):
    assert flag in text, flag


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
