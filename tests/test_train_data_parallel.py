"""Data-parallel training on 2 forced host CPU devices equals one device with the same batch.

Runs in a subprocess with a timeout (forced host devices must be set before JAX starts, and
multi-device CPU programs can hang: docs/pitfalls.md).
"""

import subprocess
import sys
import textwrap
from conftest import repo_subprocess_env

SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    import jax.numpy as jnp
    import numpy as np
    from rgpo_jax.training import TrainConfig, Trainer, hparams_from_config, make_train
    from rgpo_jax.training.sweep import data_parallel_train

    assert len(jax.devices()) == 2
    # Global batch: 4 envs × 16 steps; 2 devices hold 2 envs each. With the adaptive gate width
    # (--target-kl): the controller reads the post-update KL averaged over devices, so the
    # width k, carried in TrainState, must follow the same path. The target is near this tiny
    # run's KLs (3e-8 ... 9e-5), so some updates fall in the controller's linear range, where
    # k depends on the KL's exact (global) value, not only on its side of the target.
    cfg = TrainConfig(num_envs=4, num_steps=16, total_steps=4 * 16 * 6, update_epochs=2,
                      num_minibatches=4, hidden=(16,), normalize_obs=True, target_kl=1e-6)
    hp = hparams_from_config(cfg)
    key = jax.random.key(3)
    state, metrics = data_parallel_train(Trainer(cfg, num_devices=2), key, hp, cfg.num_updates)
    assert len(state.obs.sharding.device_set) == 2  # the envs really were split
    ref_state, ref_metrics = jax.jit(make_train(cfg))(key)  # one device, all 4 envs

    flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                     for x in jax.tree.leaves(jax.device_get(t))])
    np.testing.assert_allclose(flat(state.params), flat(ref_state.params), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(flat(state.opt_state), flat(ref_state.opt_state), rtol=1e-3,
                               atol=1e-7)
    # The same episodes: env states and observations, env by env.
    np.testing.assert_allclose(flat(state.env_state), flat(ref_state.env_state), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(flat(state.obs_stats), flat(ref_state.obs_stats), rtol=1e-5,
                               atol=1e-6)
    assert float(state.obs_stats.count) == 4 + 4 * 16 * cfg.num_updates
    for name, value in metrics.items():
      np.testing.assert_allclose(np.asarray(value), np.asarray(ref_metrics[name]), rtol=2e-3,
                                 atol=1e-6, err_msg=name)
    assert float(np.sum(metrics["episodes"])) > 0  # episodes ended (auto-reset was exercised)
    np.testing.assert_allclose(float(state.gate_width), float(ref_state.gate_width), rtol=1e-4)
    widths = np.asarray(metrics["gate_width"])
    assert widths[0] == 4.0 and len(set(np.round(widths, 4))) > 3, widths  # k really moved
    assert not np.allclose(flat(state.params), flat(Trainer(cfg).init(key, hp).params))

    # The same through a Sweep with a data-parallel axis (mesh [runs=1, dp=2]), as
    # `rgpo train --data-parallel 2` runs it.
    from rgpo_jax.training.sweep import Sweep
    dp_sweep = Sweep(cfg, num_seeds=1, data_parallel=2)
    assert dp_sweep.mesh.shape == {"runs": 1, "dp": 2}
    dp_state, dp_metrics = dp_sweep.run()
    _, one_metrics = Sweep(cfg, num_seeds=1, devices=jax.devices()[:1]).run()
    assert len(dp_state.obs.sharding.device_set) == 2
    for name in ("value_loss", "approx_kl", "gate_mean", "episode_return", "grad_norm"):
      np.testing.assert_allclose(dp_metrics[name], one_metrics[name], rtol=2e-3, atol=1e-6,
                                 err_msg=name)
    try:
      Sweep(cfg.replace(num_envs=3), num_seeds=1, data_parallel=2)
      raise AssertionError("num_envs=3 over 2 devices was accepted")
    except ValueError as e:
      assert "num_envs=3" in str(e), e

    # A sweep split over the 2 host devices, one run per device (the CPU default; several runs
    # per CPU device can hang, see sweep.py), equals the 1-device vmapped sweep.
    tiny = cfg.replace(normalize_obs=False, total_steps=64)
    split = Sweep(tiny, {"k": [2.0, 4.0]}, num_seeds=1)
    assert len(split.devices) == 2
    _, m2 = split.run()
    _, m1 = Sweep(tiny, {"k": [2.0, 4.0]}, num_seeds=1, devices=jax.devices()[:1]).run()
    for name in ("value_loss", "approx_kl", "gate_mean"):
      np.testing.assert_allclose(m2[name], m1[name], rtol=1e-3, atol=1e-6)
    print("OK")
""")


def test_two_device_data_parallel_equals_one_device_with_the_same_global_batch():
  env = repo_subprocess_env()
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                        text=True, timeout=240)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
