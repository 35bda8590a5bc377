"""Running observation statistics: Chan's merge against numpy, and across a device axis."""

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax import normalization


def test_running_stats_match_numpy_over_batches():
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, size=(n, 3)).astype(np.float32) for n in (5, 17, 1, 40)]
  stats = normalization.init((3,))
  for b in batches:
    stats = normalization.update(stats, jnp.asarray(b))
  allx = np.concatenate(batches).astype(np.float64)
  assert float(stats.count) == len(allx)
  np.testing.assert_allclose(np.asarray(stats.mean), allx.mean(0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(stats.var), allx.var(0), rtol=1e-4)
  z = normalization.normalize(stats, jnp.asarray(allx, jnp.float32))
  np.testing.assert_allclose(np.asarray(z).mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(np.asarray(z).std(0), 1.0, rtol=1e-3)


def test_empty_stats_normalize_is_identity():
  stats = normalization.init((2,))
  x = jnp.array([[0.5, -3.0]])
  np.testing.assert_allclose(np.asarray(normalization.normalize(stats, x)), np.asarray(x))


def test_merge_over_device_axis_equals_pooled_batch():
  rng = np.random.default_rng(1)
  per_device = rng.normal(size=(4, 6, 2)).astype(np.float32) * np.array([1.0, 5.0]) + 2.0
  prior = normalization.update(normalization.init((2,)), jnp.ones((3, 2)))
  merged = jax.vmap(lambda b: normalization.update(prior, b, axis_name="d"), axis_name="d")(
      jnp.asarray(per_device))
  pooled = np.concatenate([np.ones((3, 2)), per_device.reshape(-1, 2)]).astype(np.float64)
  for dev in range(4):  # every device holds the same, pooled statistics
    local = jax.tree.map(lambda x: x[dev], merged)
    np.testing.assert_allclose(np.asarray(local.mean), pooled.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(local.var), pooled.var(0), rtol=1e-4)
    assert float(local.count) == len(pooled)
