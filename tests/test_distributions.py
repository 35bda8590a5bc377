"""Distributions: log-probs and entropies against closed forms and numerical integration."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from rgpo_jax import distributions as D

pytestmark = pytest.mark.usefixtures("x64")


def test_categorical_log_prob_and_entropy():
  logits = jnp.array([[0.1, 1.0, -2.0], [3.0, 3.0, 3.0]])
  p = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
  dist = D.Categorical(logits)
  np.testing.assert_allclose(dist.log_prob(jnp.array([1, 2])), np.log([p[0, 1], p[1, 2]]))
  np.testing.assert_allclose(dist.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-12)
  assert float(dist.entropy()[1]) == pytest.approx(math.log(3))


def test_categorical_entropy_with_masked_actions_is_the_entropy_over_allowed_actions():
  logits = jnp.array([[0.3, -jnp.inf, 1.0, -jnp.inf], [0.3, 1.0, 2.0, -1.0],
                      [-jnp.inf, -jnp.inf, -jnp.inf, -jnp.inf]])
  allowed = jnp.array([0.3, 1.0])
  entropy = lambda x: jnp.sum(D.categorical_entropy(x) * jnp.array([1.0, 0.0, 1.0]))
  for fn in (D.categorical_entropy, jax.jit(D.categorical_entropy)):
    h = fn(logits)
    assert float(h[0]) == pytest.approx(float(D.categorical_entropy(allowed)), rel=1e-14)
    assert float(h[2]) == 0.0  # no allowed action
  for grad_fn in (jax.grad(entropy), jax.jit(jax.grad(entropy))):
    g = np.asarray(grad_fn(logits))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[0, [0, 2]], jax.grad(D.categorical_entropy)(allowed), rtol=1e-12)
    assert np.all(g[0, [1, 3]] == 0.0) and np.all(g[2] == 0.0)
  # log-probs of allowed actions stay finite with finite gradients
  dist = D.Categorical(logits[:1])
  assert float(dist.log_prob(jnp.array([2]))[0]) == pytest.approx(
      float(jax.nn.log_softmax(allowed)[1]), rel=1e-14)
  assert np.all(np.isfinite(jax.grad(lambda x: D.Categorical(x).log_prob(jnp.array([2]))[0])(
      logits[:1])))


def test_categorical_kl_with_masked_actions_is_the_kl_over_allowed_actions():
  p = jnp.array([[0.3, -jnp.inf, 1.0, -jnp.inf], [-jnp.inf] * 4])
  q = jnp.array([[-0.2, -jnp.inf, 0.4, 2.0], [0.0, 1.0, 2.0, 3.0]])
  kl = D.categorical_kl(p, q)
  sub_p, sub_q = np.array([0.3, 1.0]), np.array([-0.2, 0.4, 2.0])
  log_p = sub_p - np.log(np.exp(sub_p).sum())
  log_q = sub_q - np.log(np.exp(sub_q).sum())
  assert float(kl[0]) == pytest.approx(np.sum(np.exp(log_p) * (log_p - log_q[:2])), rel=1e-12)
  assert float(kl[1]) == 0.0
  for grad_fn in (jax.grad(lambda a, b: jnp.sum(D.categorical_kl(a, b)), argnums=(0, 1)),
                  jax.jit(jax.grad(lambda a, b: jnp.sum(D.categorical_kl(a, b)), argnums=(0, 1)))):
    assert all(np.all(np.isfinite(g)) for g in grad_fn(p, q))
  # allowed under p, impossible under q: infinite KL
  assert float(D.categorical_kl(jnp.array([0.0, 0.0]), jnp.array([0.0, -jnp.inf]))) == np.inf


def test_gaussian_log_prob_and_entropy_match_scipy():
  mean, log_std = jnp.array([0.3, -1.0]), jnp.array([-0.5, 0.2])
  x = jnp.array([1.0, 0.5])
  dist = D.Gaussian(mean, log_std)
  std = np.exp(np.asarray(log_std))
  assert float(dist.log_prob(x)) == pytest.approx(
      stats.norm(np.asarray(mean), std).logpdf(np.asarray(x)).sum(), rel=1e-12)
  assert float(dist.entropy()) == pytest.approx(stats.norm(0, std).entropy().sum(), rel=1e-12)


def test_tanh_gaussian_density_integrates_to_one_and_entropy_estimate_is_unbiased():
  mean, log_std = 0.4, -0.3
  dist = D.TanhGaussian(jnp.array([mean]), jnp.array([log_std]))
  density = lambda a: float(jnp.exp(dist.log_prob(jnp.array([a]))))
  total, _ = integrate.quad(density, -1 + 1e-9, 1 - 1e-9, limit=200)
  assert total == pytest.approx(1.0, abs=1e-6)
  exact_entropy, _ = integrate.quad(lambda a: -density(a) * math.log(max(density(a), 1e-300)),
                                    -1 + 1e-9, 1 - 1e-9, limit=200)
  keys = jax.random.split(jax.random.key(0), 200_000)
  estimate = jax.vmap(lambda k: dist.entropy(k))(keys)
  assert float(jnp.mean(estimate)) == pytest.approx(exact_entropy, abs=4 * float(jnp.std(estimate)) / math.sqrt(2e5))


def test_tanh_gaussian_samples_lie_in_open_interval_and_mode_is_tanh_mean():
  dist = D.TanhGaussian(jnp.zeros(3) + 2.0, jnp.zeros(3))
  a = dist.sample(jax.random.key(1))
  assert a.shape == (3,) and bool(jnp.all(jnp.abs(a) < 1))
  np.testing.assert_allclose(dist.mode(), np.tanh(2.0) * np.ones(3))
  assert bool(jnp.all(jnp.isfinite(dist.log_prob(jnp.ones(3)))))  # a rounded-to-1 action


DISTRIBUTIONS = {  # built inside the tests, where float64 is on
    "categorical": lambda: D.Categorical(jnp.array([[0.1, 1.0, -jnp.inf], [2.0, 0.0, 0.5]])),
    "gaussian": lambda: D.Gaussian(jnp.array([[0.3, -1.0], [0.0, 2.0]]), jnp.array([-0.5, 0.2])),
    "tanh_gaussian": lambda: D.TanhGaussian(jnp.array([[0.3, -1.0], [0.0, 2.0]]),
                                            jnp.array([-0.5, 0.2])),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_sample_takes_distrax_seed_keyword_and_sample_shape(name):
  dist = DISTRIBUTIONS[name]()
  key = jax.random.key(3)
  positional = dist.sample(key)
  np.testing.assert_array_equal(dist.sample(seed=key), positional)
  np.testing.assert_array_equal(dist.sample(seed=3), positional)  # integer seed, as distrax
  batch = positional.shape
  assert dist.sample(seed=key, sample_shape=(5, 4)).shape == (5, 4) + batch
  action, log_prob = dist.sample_and_log_prob(seed=key, sample_shape=7)
  assert action.shape == (7,) + batch and log_prob.shape == (7, 2)
  np.testing.assert_allclose(log_prob, dist.log_prob(action), rtol=1e-9)
  np.testing.assert_array_equal(dist.sample_and_log_prob(key)[0], positional)
  for call in (lambda: dist.sample(), lambda: dist.sample(key, seed=key),
               lambda: dist.sample_and_log_prob()):
    with pytest.raises(ValueError, match="pass exactly one PRNG key, positionally or as seed="):
      call()


def test_categorical_never_samples_masked_actions_and_sample_shape_draws_match_probabilities():
  dist = DISTRIBUTIONS["categorical"]()
  actions = np.asarray(dist.sample(seed=0, sample_shape=20_000))
  assert not np.any(actions[:, 0] == 2)
  p = np.exp(np.asarray(jax.nn.log_softmax(dist.logits[1])))
  counts = np.bincount(actions[:, 1], minlength=3) / 20_000
  np.testing.assert_allclose(counts, p, atol=4 * np.sqrt(p * (1 - p) / 20_000).max())


def test_tanh_gaussian_sample_and_log_prob_is_exact_where_the_action_rounds_to_one():
  dist = D.TanhGaussian(jnp.array([25.0]), jnp.array([-3.0]))  # tanh(u) == 1.0 in float64
  action, log_prob = dist.sample_and_log_prob(seed=0)
  assert float(action[0]) == 1.0
  u = 25.0 + math.exp(-3.0) * float(jax.random.normal(jax.random.key(0), (1,), jnp.float64)[0])
  exact = stats.norm(25.0, math.exp(-3.0)).logpdf(u) - 2 * (math.log(2) - u - math.log1p(
      math.exp(-2 * u)))
  assert float(log_prob) == pytest.approx(exact, rel=1e-10)
  assert float(dist.log_prob(action)) < float(log_prob) - 5  # the clipped log_prob is off
