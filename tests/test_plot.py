"""`rgpo plot` from hand-written run folders (no training): legend labels tell runs apart by
every differing setting, one figure per env, honest titles, bands within the return range."""

import json
import os

import numpy as np
import pytest

from rgpo_jax.cli import main
from rgpo_jax.training import plot
from rgpo_jax.training.config import TrainConfig


def _run(folder, seeds=2, returns=None, grid=None, **changes):
  """A run folder with `seeds` seeds × 3 updates of metrics (episode_return from `returns`)."""
  os.makedirs(folder)
  config = TrainConfig(**changes).to_dict()
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({"config": config, "grid": grid or {}, "seeds": seeds, "seed": 0}, f)
  settings = [dict(zip(grid, v)) for v in zip(*grid.values())] if grid else [{}]
  returns = np.full((len(settings) * seeds, 3), 100.0) if returns is None else returns
  with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
    for u in range(3):
      for r in range(len(settings) * seeds):
        f.write(json.dumps({"run": r, "seed": r % seeds, "hparams": settings[r // seeds],
                            "update": u + 1, "env_steps": 512 * (u + 1),
                            "episode_return": returns[r, u], "approx_kl": 0.01}) + "\n")
  return folder


def _curves(*runs, metric="episode_return"):
  return [c for run in runs for c in plot.run_curves(run, *plot.load_run(run), metric)]


def test_runs_differing_only_in_lr_get_different_labels(tmp_path):
  a = _run(str(tmp_path / "a"), lr=1e-3)
  b = _run(str(tmp_path / "b"), lr=3e-4)
  assert plot.legend_labels(_curves(a, b)) == ["rgpo k=4, lr=0.001 (2 seeds)",
                                               "rgpo k=4, lr=0.0003 (2 seeds)"]


def test_swept_setting_and_identical_runs_are_told_apart(tmp_path):
  a = _run(str(tmp_path / "sweep"), algo="ppo", grid={"epsilon": [0.1, 0.2]})
  b = _run(str(tmp_path / "same1"), seeds=1)
  c = _run(str(tmp_path / "same2"), seeds=1)
  assert plot.legend_labels(_curves(a)) == ["ppo epsilon=0.1 (2 seeds)",
                                            "ppo epsilon=0.2 (2 seeds)"]
  assert plot.legend_labels(_curves(b, c)) == ["rgpo k=4 [same1] (1 seed)",
                                               "rgpo k=4 [same2] (1 seed)"]


def test_other_algos_gate_parameters_are_not_shown(tmp_path):
  a = _run(str(tmp_path / "ppo"), algo="ppo", k=8.0)
  b = _run(str(tmp_path / "sapo"), algo="sapo", tau=2.0, tau_neg=2.0)
  assert plot.legend_labels(_curves(a, b)) == ["ppo epsilon=0.2 (2 seeds)",
                                               "sapo tau=2, tau_neg=2 (2 seeds)"]


def test_settings_missing_from_older_runs_are_not_differences(tmp_path):
  a = _run(str(tmp_path / "old"), algo="ppo")
  b = _run(str(tmp_path / "new"), algo="ppo", lr=1e-3)
  with open(os.path.join(a, "config.json")) as f:
    old = json.load(f)
  del old["config"]["max_grad_norm"]  # a field this run's version did not have
  with open(os.path.join(a, "config.json"), "w") as f:
    json.dump(old, f)
  assert plot.legend_labels(_curves(a, b)) == ["ppo epsilon=0.2, lr=0.00025 (2 seeds)",
                                               "ppo epsilon=0.2, lr=0.001 (2 seeds)"]


def test_title_says_mean_std_over_n_seeds_only_when_n_above_1(tmp_path):
  one = _curves(_run(str(tmp_path / "one"), seeds=1))
  four = _curves(_run(str(tmp_path / "four"), seeds=4))
  assert plot.figure_title("CartPole-v1", "episode_return", one) == "CartPole-v1: episode_return"
  assert plot.figure_title("CartPole-v1", "episode_return", four) == (
      "CartPole-v1: episode_return (mean ± std over 4 seeds)")
  assert "counts in the legend" in plot.figure_title("CartPole-v1", "x", one + four)


def test_return_range_of_known_envs():
  assert plot.return_range({"env": "CartPole-v1"}) == (0.0, 500.0)
  assert plot.return_range({"env": "CartPole-v1", "env_kwargs": {"max_episode_steps": 200}}) \
      == (0.0, 200.0)
  assert plot.return_range({"env": "Acrobot-v1"}) == (-500.0, 0.0)
  low, high = plot.return_range({"env": "Pendulum-v1"})
  assert high == 0.0 and low == pytest.approx(-16.2736 * 200, rel=1e-4)
  assert plot.return_range({"env": "brax:ant"}) is None


def test_one_figure_per_env_and_band_clipped_to_return_range(tmp_path):
  returns = np.array([[500.0, 500.0, 500.0], [500.0, 500.0, 500.0], [200.0, 500.0, 100.0]])
  cp = _run(str(tmp_path / "cp"), seeds=3, returns=returns)  # mean + std: 541 at update 1
  pend = _run(str(tmp_path / "pend"), env="Pendulum-v1")
  out = str(tmp_path / "plots")
  assert main(["plot", cp, pend, "--out", out, "--metrics", "episode_return"]) == 0
  assert sorted(os.listdir(out)) == ["episode_return-CartPole-v1.png",
                                     "episode_return-Pendulum-v1.png"]
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots()
  curve, = _curves(cp)
  assert curve.value_range == (0.0, 500.0)
  plot._draw(ax, curve, "x", "episode_return")  # pylint: disable=protected-access
  band = ax.collections[0].get_paths()[0].vertices[:, 1]
  plt.close(fig)
  assert band.max() == 500.0 and band.min() >= 0.0


def test_unknown_metric_is_named(tmp_path, capsys):
  run = _run(str(tmp_path / "a"))
  assert main(["plot", run, "--out", str(tmp_path / "p"), "--metrics", "nope"]) == 2
  assert "unknown metric 'nope'; allowed: episode_return, approx_kl" in capsys.readouterr().err
