"""`rgpo compare`: run folders (written here by hand, no training) into one table and plots."""

import csv
import json
import os

import numpy as np
import pytest
import scipy.stats

from rgpo_jax import cli
from rgpo_jax.training.compare import compare_rows, iqm_with_ci

UPDATES = 20  # the final-return window is the last 2 updates


def _write_run(path, env, algo, returns_by_setting, grid=None, kl=0.01, extra=None):
  """A run folder: returns_by_setting[h][s] is seed s's constant episode return."""
  os.makedirs(path)
  config = {"config": {"env": env, "algo": algo, "num_envs": 1, "num_steps": 10,
                       "total_steps": 10 * UPDATES, **(extra or {})},
            "grid": grid or {}, "seeds": len(returns_by_setting[0]), "seed": 0}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  settings = [dict(zip(grid, v)) for v in zip(*grid.values())] if grid else [{}]
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for u in range(UPDATES):
      for h, seeds in enumerate(returns_by_setting):
        for s, ret in enumerate(seeds):
          rec = {"run": h * len(seeds) + s, "seed": s, "hparams": settings[h], "update": u + 1,
                 "env_steps": 10 * (u + 1), "episode_return": ret if u >= 2 else None,
                 "episodes": 1.0 if u >= 2 else 0.0, "approx_kl": kl * (u + 1) / UPDATES,
                 "kl_spike": float(u == UPDATES - 1), "acceptance_fraction": 0.5,
                 "step_accepted": None}
          f.write(json.dumps(rec) + "\n")
  with open(os.path.join(path, "summary.json"), "w") as f:
    json.dump({"compile_seconds": 1.5, "train_seconds": 10.0}, f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  a, b, c = str(base / "ppo"), str(base / "trpo_grid"), str(base / "acrobot")
  _write_run(a, "CartPole-v1", "ppo", [[100.0, 200.0, 300.0, 400.0, 500.0]])
  _write_run(b, "CartPole-v1", "trpo", [[450.0, 500.0], [20.0, 40.0]],
             grid={"max_kl": [0.005, 0.02]})
  _write_run(c, "Acrobot-v1", "awr", [[-90.0, -80.0, -85.0]], kl=0.1)
  return a, b, c


def test_rows_match_closed_forms(runs):
  rows = compare_rows(runs)
  assert [r["algo"] for r in rows] == ["ppo", "trpo", "trpo", "awr"]
  ppo, trpo_small, trpo_large, awr = rows
  scores = np.array([100.0, 200.0, 300.0, 400.0, 500.0])
  assert ppo["final_return_mean"] == pytest.approx(300.0)
  assert ppo["final_return_std"] == pytest.approx(np.std(scores))
  assert ppo["cv"] == pytest.approx(np.std(scores) / 300.0)
  assert ppo["iqm"] == pytest.approx(scipy.stats.trim_mean(scores, 0.25))
  assert ppo["iqm_ci_low"] <= ppo["iqm"] <= ppo["iqm_ci_high"]
  assert 100.0 <= ppo["iqm_ci_low"] < ppo["iqm_ci_high"] <= 500.0
  assert ppo["kl_spike_rate"] == pytest.approx(1 / UPDATES)
  assert ppo["approx_kl_max"] == pytest.approx(0.01)
  assert ppo["approx_kl_mean"] == pytest.approx(0.01 * (UPDATES + 1) / 2 / UPDATES)
  assert ppo["acceptance_fraction"] == 0.5 and np.isnan(ppo["step_accepted"])
  assert ppo["wall_seconds"] == pytest.approx(11.5) and ppo["seeds"] == 5
  assert ppo["settings"] == {"epsilon": 0.2}
  assert trpo_small["settings"]["max_kl"] == 0.005 and trpo_large["settings"]["max_kl"] == 0.02
  assert trpo_small["settings"]["trpo_gate"] == "importance"
  assert trpo_small["final_return_mean"] == pytest.approx(475.0)
  assert trpo_large["final_return_mean"] == pytest.approx(30.0)
  assert awr["env"] == "Acrobot-v1" and awr["settings"]["awr_beta"] == 1.0


def test_bootstrap_interval_of_constant_scores_is_a_point():
  assert iqm_with_ci(np.full(4, 7.0)) == (7.0, 7.0, 7.0)
  assert all(np.isnan(iqm_with_ci(np.array([np.nan, np.nan]))))


def test_cli_writes_table_csv_and_one_plot_per_env(runs, tmp_path, capsys):
  out = str(tmp_path / "cmp")
  assert cli.main(["compare", *runs, "--out", out]) == 0
  files = sorted(os.listdir(out))
  assert files == ["compare.csv", "compare.md", "episode_return-Acrobot-v1.png",
                   "episode_return-CartPole-v1.png"]
  md = open(os.path.join(out, "compare.md")).read()
  assert md.count("\n") == 2 + 4 and "300 ± 141" in md and "max_kl=0.005" in md
  with open(os.path.join(out, "compare.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and float(rows[0]["final_return_mean"]) == 300.0
  printed = capsys.readouterr().out
  assert "CartPole-v1:" in printed and "Acrobot-v1:" in printed


def test_folder_that_is_not_a_run_fails_before_writing(runs, tmp_path, capsys):
  out = str(tmp_path / "never")
  not_run = str(tmp_path / "empty")
  os.makedirs(not_run)
  assert cli.main(["compare", runs[0], not_run, "--out", out]) == 2
  err = capsys.readouterr().err
  assert f"{not_run!r} is not a run folder: config.json is missing" in err
  assert not os.path.exists(out)
  assert cli.main(["compare", str(tmp_path / "nowhere"), "--out", out]) == 2
  assert "is not a run folder (not a directory)" in capsys.readouterr().err
  assert not os.path.exists(out)
