"""Clip-Cov and KL-Cov: selections and gradients against numpy, padding, keys, errors."""

import jax
import numpy as np
import pytest

from rgpo_jax import covariance, gates

pytestmark = pytest.mark.usefixtures("x64")

MASK = np.array([[1] * 8, [1] * 5 + [0] * 3, [1] * 7 + [0]], bool)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-1.5, 1.0, MASK.shape)
  old = lp - rng.normal(0.0, 0.3, MASK.shape)
  adv = rng.normal(0.0, 1.5, MASK.shape)
  return lp, old, adv


def _numpy_cov(lp, adv):
  a, l = adv[MASK], lp[MASK]
  cov = np.zeros(MASK.shape)
  cov[MASK] = (a - a.mean()) * (l - l.mean())
  return cov


def test_covariance_scores_match_numpy():
  lp, _, adv = _batch()
  np.testing.assert_allclose(covariance.covariance_scores(lp, adv, MASK), _numpy_cov(lp, adv),
                             rtol=1e-13, atol=1e-15)


def test_kl_cov_penalises_the_top_covariance_tokens():
  lp, old, adv = _batch()
  n_valid = MASK.sum()
  fraction = 3.5 / n_valid  # ⌊fraction·N⌋ = 3 tokens
  cov = _numpy_cov(lp, adv)
  top = np.zeros(MASK.shape, bool)
  top.flat[np.argsort(np.where(MASK, cov, -np.inf).ravel())[::-1][:3]] = True
  got = covariance.kl_cov_selection(lp, adv, MASK, fraction=fraction)
  np.testing.assert_array_equal(got, top)
  r = np.exp(lp - old)
  f = lambda x: covariance.kl_cov_policy_loss(x, old, adv, MASK, fraction=fraction, coef=0.5)[0]
  value, grad = jax.jit(jax.value_and_grad(f))(lp)
  expected = (-r * adv + 0.5 * top * np.abs(lp - old))[MASK].sum() / n_valid
  c = np.linspace(0.5, 1.5, MASK.size).reshape(MASK.shape)  # a detached per-token weight
  weighted = jax.jit(jax.grad(lambda x: covariance.kl_cov_policy_loss(
      x, old, adv, MASK, fraction=fraction, coef=0.5, sample_weight=c)[0]))(lp)
  assert float(value) == pytest.approx(expected, rel=1e-12)
  expected_grad = np.where(MASK, -r * adv + 0.5 * top * np.sign(lp - old), 0.0) / n_valid
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(weighted, c * expected_grad, rtol=1e-12, atol=1e-15)


def test_clip_cov_detaches_a_random_subset_of_eligible_tokens():
  lp, old, adv = _batch(seed=2)
  r = np.exp(lp - old)
  gate = gates.ppo_clip(0.2)
  clipped = ((adv >= 0) & (r > 1.2)) | ((adv < 0) & (r < 0.8))
  cov = _numpy_cov(lp, adv)
  eligible = MASK & ~clipped & (cov > 0.05) & (cov < 5.0)
  assert eligible.sum() >= 4
  fraction = 2.5 / MASK.sum()  # 2 tokens
  kw = dict(gate=gate, fraction=fraction, lower=0.05, upper=5.0)
  f = jax.jit(jax.value_and_grad(
      lambda x, key: covariance.clip_cov_policy_loss(key, x, old, adv, MASK, **kw), has_aux=True))
  picks = set()
  for seed in range(6):
    key = jax.random.key(seed)
    (_, aux), grad = f(lp, key)
    grad = np.asarray(grad)
    weight = r * np.where(adv >= 0, r < 1.2, r > 0.8)
    zeroed = MASK & (grad == 0) & (weight != 0)
    assert zeroed.sum() == 2 and np.all(eligible[zeroed])
    np.testing.assert_allclose(grad[~zeroed], (-weight * adv * MASK / MASK.sum())[~zeroed],
                               rtol=1e-12, atol=1e-15)
    assert float(aux.selected_fraction) == pytest.approx(2 / MASK.sum())
    picks.add(tuple(np.flatnonzero(zeroed)))
  assert len(picks) > 1  # the key decides which eligible tokens


def test_padding_nan_is_inert():
  lp, old, adv = _batch()
  bad_lp, bad_adv = lp.copy(), adv.copy()
  bad_lp[~MASK], bad_adv[~MASK] = np.nan, np.inf
  f = jax.jit(jax.value_and_grad(lambda x, a: covariance.kl_cov_policy_loss(x, old, a, MASK,
                                                                            fraction=0.2)[0]))
  value, grad = f(bad_lp, bad_adv)
  clean_value, clean_grad = f(lp, adv)
  assert float(value) == pytest.approx(float(clean_value), rel=1e-13)
  np.testing.assert_allclose(grad, clean_grad, rtol=1e-13, atol=0)


def test_bad_input_errors_name_the_value():
  lp, old, adv = _batch()
  with pytest.raises(ValueError, match="fraction=0"):
    covariance.kl_cov_selection(lp, adv, MASK, fraction=0)
  with pytest.raises(ValueError, match="coef=-1"):
    covariance.kl_cov_policy_loss(lp, old, adv, MASK, coef=-1)
  with pytest.raises(ValueError, match="fraction='0.2'"):
    covariance.kl_cov_selection(lp, adv, MASK, fraction="0.2")
  with pytest.raises(ValueError, match=r"mask\(8,\)"):
    covariance.kl_cov_selection(lp, adv, MASK[0])
