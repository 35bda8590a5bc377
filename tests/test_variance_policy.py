"""Real-policy variance instruments: per-sample gradients, their statistics, ratio statistics."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import gates
from rgpo_jax import variance as V


def _linear_softmax_log_prob(params, obs, action):
  logits = obs @ params["w"] + params["b"]
  return jax.nn.log_softmax(logits)[action]


def _tiny_batch(dtype):
  rng = np.random.default_rng(0)
  n, d, a = 6, 3, 4
  params = {"w": jnp.asarray(rng.normal(size=(d, a)), dtype),
            "b": jnp.asarray(rng.normal(size=(a,)) * 0.1, dtype)}
  obs = jnp.asarray(rng.normal(size=(n, d)), dtype)
  action = jnp.asarray(rng.integers(0, a, size=n), jnp.int32)
  # behaviour log-probs = current ones shifted, so ratios spread around 1 (0.5 … 2).
  lp = jax.vmap(_linear_softmax_log_prob, in_axes=(None, 0, 0))(params, obs, action)
  behavior = lp + jnp.asarray(rng.uniform(-0.7, 0.7, size=n), dtype)
  adv = jnp.asarray(rng.normal(size=n), dtype)
  return params, V.PolicyBatch(obs, action, behavior, adv)


@pytest.mark.parametrize("gate_name,gate", [("sigmoid", gates.sigmoid(4.0)),
                                            ("importance", gates.importance()),
                                            ("sapo", gates.sapo(1.0, 1.05))])
def test_per_sample_gradients_match_finite_differences(gate_name, gate):
  with jax.enable_x64(True):
    params, batch = _tiny_batch(jnp.float64)
    gate64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), gate)
    grads = np.asarray(V.per_sample_policy_gradients(gate64, _linear_softmax_log_prob, params,
                                                     batch))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    flat = np.asarray(flat)

    # Independent reference: −g(r)·Â with the gate written out in numpy, central differences.
    def g(r, adv):
      if gate_name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (r - 1.0)))
      if gate_name == "importance":
        return r
      tau = 1.0 if adv >= 0 else 1.05
      return 4.0 / tau / (1.0 + np.exp(-tau * (r - 1.0)))

    def loss(theta, i):
      p = jax.tree.map(np.asarray, unravel(jnp.asarray(theta)))
      logits = np.asarray(batch.obs[i]) @ p["w"] + p["b"]
      log_p = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
      r = np.exp(log_p[int(batch.action[i])] - float(batch.behavior_log_prob[i]))
      return -g(r, float(batch.advantage[i])) * float(batch.advantage[i])

    h = 1e-6
    for i in range(batch.obs.shape[0]):
      fd = np.array([(loss(flat + h * e, i) - loss(flat - h * e, i)) / (2 * h)
                     for e in np.eye(flat.size)])
      np.testing.assert_allclose(grads[i], fd, rtol=1e-6, atol=1e-8)


def test_per_sample_gradients_average_to_the_batch_gradient():
  from rgpo_jax import losses
  params, batch = _tiny_batch(jnp.float32)
  gate = gates.ppo_clip(0.2)
  per = V.per_sample_policy_gradients(gate, _linear_softmax_log_prob, params, batch)

  def batch_loss(p):
    lp = jax.vmap(_linear_softmax_log_prob, in_axes=(None, 0, 0))(p, batch.obs, batch.action)
    return losses.policy_loss(gate, lp, batch.behavior_log_prob, batch.advantage)[0]

  full = jax.flatten_util.ravel_pytree(jax.grad(batch_loss)(params))[0]
  np.testing.assert_allclose(per.mean(axis=0), full, rtol=1e-5, atol=1e-7)


def test_gradient_statistics_against_numpy():
  rng = np.random.default_rng(1)
  g = rng.normal(size=(50, 7)) + np.arange(7)
  ref = rng.normal(size=7)
  s = V.gradient_statistics(jnp.asarray(g), jnp.asarray(ref))
  mean = g.mean(0)
  assert float(s.trace_covariance) == pytest.approx(np.trace(np.cov(g.T)), rel=1e-5)
  assert float(s.cosine) == pytest.approx(mean @ ref / np.linalg.norm(mean) / np.linalg.norm(ref),
                                          rel=1e-5)
  assert float(s.relative_error) == pytest.approx(np.linalg.norm(mean - ref) /
                                                  np.linalg.norm(ref), rel=1e-5)
  with pytest.raises(ValueError, match=r"\(50, 7\)"):
    V.gradient_statistics(jnp.asarray(g), jnp.zeros(6))


def test_ratio_statistics_ess_and_hill_on_pareto():
  # Pareto(α = 1.5, x_m = 1): Hill estimator is consistent for α; ESS by its definition.
  rng = np.random.default_rng(2)
  x = (1.0 - rng.uniform(size=200_000)) ** (-1 / 1.5)
  s = V.ratio_statistics(jnp.asarray(np.log(x), jnp.float32))
  assert float(s.tail_index) == pytest.approx(1.5, rel=0.15)
  assert float(s.ess_fraction) == pytest.approx(x.sum() ** 2 / (x.size * (x ** 2).sum()),
                                                rel=1e-3)
  # On-policy data: ESS = 1, KL = 0.
  z = V.ratio_statistics(jnp.zeros(100))
  assert float(z.ess_fraction) == pytest.approx(1.0) and float(z.approx_kl) == 0.0
