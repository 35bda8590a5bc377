"""The core losses under `pmap` on forced host CPU devices (run in a subprocess with a timeout)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from rgpo_jax import advantages, gates, losses
    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    lp, b, a = (jnp.asarray(rng.normal(0, 0.4, (2, 16))) for _ in range(3))
    gate = gates.sigmoid(4.0)

    def grad_fn(lp, b, a):
      g = jax.grad(lambda x: losses.policy_loss(gate, x, b, a)[0])(lp)
      return jax.lax.pmean(jnp.sum(g * lp), "devices")

    per_device = jax.pmap(grad_fn, axis_name="devices")(lp, b, a)
    # Reference: each half's loss is a mean over 16, so the data-parallel pmean of the
    # per-device gradients equals the gradient of the mean loss over all 32 samples.
    full = jax.grad(lambda x: losses.policy_loss(gate, x, b.ravel(), a.ravel())[0])(lp.ravel())
    np.testing.assert_allclose(per_device, np.full(2, float(jnp.sum(full * lp.ravel()))),
                               rtol=1e-12)
    adv = jax.pmap(lambda r: advantages.grpo_advantages(r))(a)
    np.testing.assert_allclose(adv, advantages.grpo_advantages(a), rtol=1e-12)
    print("ok")
""")


def test_policy_loss_and_advantages_under_pmap_on_two_devices():
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(),
                                                                  os.environ.get("PYTHONPATH")])))
  out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                       env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith("ok")
