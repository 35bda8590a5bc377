"""Data-parallel training on 2 forced host CPU devices equals the same program vmapped on one.

Runs in a subprocess with a timeout (forced host devices must be set before JAX starts, and
multi-device CPU programs can hang: ../shared/PITFALLS.md).
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    import jax.numpy as jnp
    import numpy as np
    from rgpo_jax.training import TrainConfig, Trainer, hparams_from_config
    from rgpo_jax.training.sweep import data_parallel_train

    assert len(jax.devices()) == 2
    cfg = TrainConfig(num_envs=2, num_steps=16, total_steps=96, update_epochs=2,
                      num_minibatches=2, hidden=(16,), normalize_obs=True)
    trainer = Trainer(cfg)
    hp = hparams_from_config(cfg)
    key = jax.random.key(3)
    state, metrics = data_parallel_train(trainer, key, hp, cfg.num_updates)

    def per_device(k):
      s = trainer.init(k, hp, axis_name="dp")
      return trainer.train_chunk(s, hp, cfg.num_updates, axis_name="dp")
    ref_state, ref_metrics = jax.jit(jax.vmap(per_device, axis_name="dp"))(
        jnp.stack([key, key]))

    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    p, rp = flat(jax.device_get(state.params)), flat(ref_state.params)
    np.testing.assert_allclose(p, rp, rtol=2e-5, atol=2e-6)
    # Both devices hold the same params, but saw different environments.
    p0 = flat(jax.tree.map(lambda x: x[0], jax.device_get(state.params)))
    p1 = flat(jax.tree.map(lambda x: x[1], jax.device_get(state.params)))
    np.testing.assert_array_equal(p0, p1)
    obs = np.asarray(state.obs)
    assert not np.allclose(obs[0], obs[1])
    np.testing.assert_allclose(np.asarray(state.obs_stats.mean),
                               np.asarray(ref_state.obs_stats.mean), rtol=1e-5, atol=1e-6)
    # devices × (num_envs initial obs + num_envs × num_steps per update)
    assert float(state.obs_stats.count[0]) == 2 * (2 + 2 * 16 * cfg.num_updates)
    np.testing.assert_allclose(np.asarray(metrics["approx_kl"]),
                               np.asarray(ref_metrics["approx_kl"]), rtol=1e-3, atol=1e-7)

    # A sweep split over the 2 host devices, one run per device (the CPU default; several runs
    # per CPU device can hang, see sweep.py), equals the 1-device vmapped sweep.
    from rgpo_jax.training.sweep import Sweep
    tiny = cfg.replace(normalize_obs=False, total_steps=64)
    split = Sweep(tiny, {"k": [2.0, 4.0]}, num_seeds=1)
    assert len(split.devices) == 2
    _, m2 = split.run()
    _, m1 = Sweep(tiny, {"k": [2.0, 4.0]}, num_seeds=1, devices=jax.devices()[:1]).run()
    for name in ("value_loss", "approx_kl", "gate_mean"):
      np.testing.assert_allclose(m2[name], m1[name], rtol=1e-3, atol=1e-6)
    print("OK")
""")


def test_two_device_data_parallel_equals_single_device_vmap():
  env = dict(os.environ)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                        text=True, timeout=240)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
