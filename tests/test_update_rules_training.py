"""TRPO and AWR inside the trainer: data-parallel equals one device, exact resume, learning.

(The gated rule's versions of these are tests/test_train_data_parallel.py, tests/test_resume.py
and tests/test_train.py; these cover the other two update rules with the same checks.)
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from rgpo_jax import cli
from rgpo_jax.training import checkpoint as ckpt_lib
from conftest import persistent_compilation_cache, repo_subprocess_env

DP_SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    import numpy as np
    from rgpo_jax.training import TrainConfig, Trainer, hparams_from_config, make_train
    from rgpo_jax.training.sweep import data_parallel_train

    flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                     for x in jax.tree.leaves(jax.device_get(t))])

    def check(algo):
      cfg = TrainConfig(algo=algo, num_envs=4, num_steps=16, total_steps=4 * 16 * 3,
                        update_epochs=2, num_minibatches=4, hidden=(16,), normalize_obs=True)
      hp, key = hparams_from_config(cfg), jax.random.key(3)
      state, metrics = data_parallel_train(Trainer(cfg, num_devices=2), key, hp,
                                           cfg.num_updates)
      assert len(state.obs.sharding.device_set) == 2
      ref_state, ref_metrics = jax.jit(make_train(cfg))(key)
      np.testing.assert_allclose(flat(state.params), flat(ref_state.params), rtol=1e-4,
                                 atol=1e-6, err_msg=algo)
      np.testing.assert_allclose(flat(state.opt_state), flat(ref_state.opt_state), rtol=1e-3,
                                 atol=1e-7, err_msg=algo)
      for name, value in metrics.items():
        # CG's final relative residual sits at float32 round-off (1e-8..1e-5), where the order of
        # the devices' reduction decides its digits: compare that both runs converged, not bits.
        atol = 1e-4 if name == "cg_residual" else 1e-6
        np.testing.assert_allclose(np.asarray(value), np.asarray(ref_metrics[name]), rtol=2e-3,
                                   atol=atol, err_msg=f"{algo} {name}")
      assert not np.allclose(flat(state.params), flat(Trainer(cfg).init(key, hp).params))
      if algo == "trpo":
        assert np.all(np.asarray(metrics["step_accepted"]) == 1), metrics["step_accepted"]

    for algo in ("trpo", "awr"):
      check(algo)
    print("OK")
""")


def test_two_device_data_parallel_equals_one_device_for_trpo_and_awr():
  """TRPO: gradient and F·v averaged inside CG, line search on averaged surrogate and KL; AWR:
  weights from globally normalised advantages. 2 devices == 1 device, same global batch."""
  env = repo_subprocess_env()
  proc = subprocess.run([sys.executable, "-c", DP_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=400)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


TINY = ["train", "--env", "CartPole-v1", "--num-envs", "2", "--num-steps", "8", "--total-steps",
        "64", "--num-minibatches", "2", "--update-epochs", "2", "--hidden", "8", "--seeds", "2",
        "--normalize-obs", "--checkpoint-every", "2", "--no-progress", "--no-cpu-devices"]


class _Stop(Exception):
  pass


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """The full, stopped and resumed runs compile the same programs: compile them once."""
  with persistent_compilation_cache(str(tmp_path_factory.mktemp("jax_cache"))):
    yield


@pytest.mark.usefixtures("compile_cache")
@pytest.mark.parametrize("algo", ["trpo", "awr"])
def test_resumed_run_ends_with_identical_params_checksum(algo, tmp_path):
  full, stopped = str(tmp_path / "full"), str(tmp_path / "stopped")
  # TRPO as a max_kl sweep (one compiled program for both radii), AWR with 2 seeds.
  argv = TINY + ["--algo", algo] + (["--max-kl", "0.005,0.02", "--seeds", "1"]
                                    if algo == "trpo" else [])
  assert cli.main(argv + ["--out", full]) == 0
  save = ckpt_lib.Checkpointer.save

  def save_then_stop(self, step, state):
    save(self, step, state)
    if step == 2:
      raise _Stop()

  ckpt_lib.Checkpointer.save = save_then_stop
  try:
    with pytest.raises(_Stop):
      cli.main(argv + ["--out", stopped])
  finally:
    ckpt_lib.Checkpointer.save = save
  assert cli.main(["train", "--resume", stopped, "--no-progress", "--no-cpu-devices"]) == 0
  a, b = (json.load(open(os.path.join(run, "summary.json"))) for run in (full, stopped))
  assert b["resumed_from_update"] == 2
  assert a["params_checksum_per_run"] == b["params_checksum_per_run"]
  lines = [json.loads(l) for l in open(os.path.join(full, "metrics.jsonl"))]
  assert len(lines) == 2 * 4
  if algo == "trpo":
    assert {l["hparams"]["max_kl"] for l in lines} == {0.005, 0.02}
    assert all(l["step_accepted"] in (0.0, 1.0) for l in lines)
    assert all(l["kl_after_step"] <= l["hparams"]["max_kl"] for l in lines)
    # The trust region also bounds the k3 estimate that the trainer reports.
    assert all(l["approx_kl"] <= l["hparams"]["max_kl"] * (1 + 1e-4) for l in lines)
    assert any(l["kl_after_step"] > 0.005 for l in lines)  # the larger radius was used
  else:
    assert all(l["gate_mean"] is None and 0 < l["weight_max"] <= 20.0 for l in lines)


def test_awr_learns_cartpole_with_its_defaults():
  from rgpo_jax.training import TrainConfig, make_train
  from rgpo_jax.training.io import final_returns
  cfg = TrainConfig(algo="awr", total_steps=40_960)  # 80 updates of 4 envs × 128 steps
  _, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
  ret, eps = np.asarray(metrics["episode_return"]), np.asarray(metrics["episodes"])
  first = np.nansum(ret[:5] * eps[:5]) / eps[:5].sum()
  last = final_returns(ret[None], eps[None])[0]
  assert first < 40  # random policy: ~20
  assert last > 100, (first, last)
  weight_max = np.asarray(metrics["weight_max"])
  assert np.all((weight_max > 1) & (weight_max <= 20.0))  # the clip w_max = 20 holds
