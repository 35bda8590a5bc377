"""Any registered variant as a gradient estimator: coefficients C_t = −N·∂L/∂log π_t (autodiff of
`variants.policy_loss`) against independent closed forms and brute force, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import variance as V
from rgpo_jax import variants

RNG = np.random.default_rng(7)
# 3 sequences × 4 tokens: log π_θ, log π_old (ratios in ~[0.5, 2]), mixed-sign advantages.
LOG_PROB = RNG.uniform(-3.0, -0.2, (3, 4))
OLD_LOG_PROB = LOG_PROB - RNG.uniform(-0.7, 0.7, (3, 4))
ADVANTAGE = RNG.normal(0.0, 1.5, (3, 4))


def coefficients(name, **kw):
  with jax.enable_x64(True):
    return np.asarray(V.gradient_coefficients(name, jnp.asarray(LOG_PROB), jnp.asarray(OLD_LOG_PROB),
                                              jnp.asarray(ADVANTAGE), **kw))


def sigmoid_weight(r, k):
  sig = 1.0 / (1.0 + np.exp(-k * (r - 1.0)))
  return k * sig * (1.0 - sig) * r


def test_token_gate_variants_give_w_times_advantage():
  """For every registered variant that is an elementwise gate on token ratios with a token- or
  sequence-mean loss (equal lengths), C_t = w(r_t; Â_t)·Â_t: the autodiff path agrees with the
  gate's own weight (which the exact moments use)."""
  r = np.exp(LOG_PROB - OLD_LOG_PROB)
  names = [n for n, v in variants.VARIANTS.items() if v.gate is not None and v.granularity == "token"]
  assert {"ppo", "dual_clip", "cispo", "rgpo", "sapo", "dpo_drift"} <= set(names)
  with jax.enable_x64(True):
    for name in names:
      w = np.asarray(variants.make_gate(name).weight(jnp.asarray(r), jnp.asarray(ADVANTAGE)))
      np.testing.assert_allclose(coefficients(name), w * ADVANTAGE, rtol=1e-10, atol=1e-12,
                                 err_msg=name)


def test_sequence_ratio_coefficients_match_the_closed_form():
  """GSPO with the gradient through the mean (granularity "sequence"): s_i = exp(mean log r),
  ∂s_i/∂ℓ_t = s_i/L and the loss is −(1/B)Σ_i (1/L)Σ_u g(s_i; Â_u)·Â_u, so
  C_t = mean_u w(s_i; Â_u)·Â_u with w = s·1[unclipped] (PPO's pessimistic band) — the same for
  every token of a sequence. RGPO's sigmoid on s: C_t = w_k(s_i)·mean_u Â_u."""
  s = np.exp(np.mean(LOG_PROB - OLD_LOG_PROB, axis=1, keepdims=True))  # [3, 1]
  eps = 0.05
  unclipped = np.where(ADVANTAGE >= 0, s < 1 + eps, s > 1 - eps)
  expected = np.broadcast_to(np.mean(s * unclipped * ADVANTAGE, axis=1, keepdims=True), (3, 4))
  assert 0 < np.mean(unclipped) < 1  # the band binds for some tokens, not all
  np.testing.assert_allclose(coefficients("gspo_sequence", epsilon=eps, epsilon_high=eps),
                             expected, rtol=1e-10)
  expected_sigmoid = sigmoid_weight(s, 4.0) * np.mean(ADVANTAGE, axis=1, keepdims=True)
  np.testing.assert_allclose(coefficients("rgpo_sequence"), np.broadcast_to(expected_sigmoid,
                                                                             (3, 4)), rtol=1e-10)
  # GSPO-token: the token's own advantage, the sequence's ratio: C_t = w(s_i; Â_t)·Â_t.
  np.testing.assert_allclose(coefficients("gspo", epsilon=eps, epsilon_high=eps),
                             s * unclipped * ADVANTAGE, rtol=1e-10)


def test_dpo_drift_coefficients_match_the_closed_form():
  """Discovered PO (arXiv 2210.05639), α = 2, β = 0.6: w = r·sech²((r−1)Â/α) for Â ≥ 0, r > 1;
  r − 1 + sech²(Â·log r/β) for Â < 0, r < 1; r otherwise. It depends on |Â|."""
  r = np.exp(LOG_PROB - OLD_LOG_PROB)
  a = ADVANTAGE
  sech2 = lambda x: 1.0 / np.cosh(x) ** 2
  w = np.where((a >= 0) & (r > 1), r * sech2((r - 1) * a / 2.0),
               np.where((a < 0) & (r < 1), r - 1 + sech2(a * np.log(r) / 0.6), r))
  assert np.any((a >= 0) & (r > 1)) and np.any((a < 0) & (r < 1))
  np.testing.assert_allclose(coefficients("dpo_drift"), w * a, rtol=1e-10)
  assert isinstance(V.variant_estimator("dpo_drift"), V.VariantEstimator)  # not sign-only


def test_batch_variant_coefficients_match_brute_force():
  """KL-Cov (fraction 1/4 → the 3 tokens of largest Cov_t = (Â_t − mean Â)(log π_t − mean log π)
  over the batch): C_t = r_t·Â_t − coef·sign(log r_t) on them, r_t·Â_t elsewhere. Clip-Cov: PPO's
  w·Â with exactly max(⌊fraction·N⌋, 1) eligible tokens (lower < Cov < upper, not clipped) set
  to 0, chosen by the key."""
  r = np.exp(LOG_PROB - OLD_LOG_PROB)
  cov = (ADVANTAGE - ADVANTAGE.mean()) * (LOG_PROB - LOG_PROB.mean())
  top = np.zeros(12, bool)
  top[np.argsort(-cov.ravel())[:3]] = True
  top = top.reshape(3, 4)
  expected = r * ADVANTAGE - np.where(top, 0.5 * np.sign(LOG_PROB - OLD_LOG_PROB), 0.0)
  np.testing.assert_allclose(coefficients("kl_cov", fraction=0.25, coef=0.5), expected,
                             rtol=1e-10)

  ppo = np.where(ADVANTAGE >= 0, r < 1.2, r > 0.8) * r * ADVANTAGE
  eligible = (np.where(ADVANTAGE >= 0, r < 1.2, r > 0.8)) & (cov > -1.0) & (cov < 5.0)
  assert eligible.sum() > 2
  for seed in range(3):
    with jax.enable_x64(True):
      c = coefficients("clip_cov", key=jax.random.key(seed), fraction=0.2, lower=-1.0)
    zeroed = (c == 0) & (ppo != 0)
    assert zeroed.sum() == 2 and not np.any(zeroed & ~eligible)
    np.testing.assert_allclose(np.where(zeroed, 0.0, ppo), c, rtol=1e-10)


def test_unknown_names_are_refused_naming_the_allowed_ones():
  for bad in ("is,nope", "nope"):
    with pytest.raises(ValueError, match="'nope'.*allowed: .*gspo.*kl_cov"):
      V.estimator_set(bad)
  with pytest.raises(ValueError, match="'nope'.*allowed: "):
    V.gradient_coefficients("nope", jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.zeros((1, 2)))


def test_grid_variant_path_equals_the_gate_path():
  """IS as a gate and IS through autodiff of the registered "importance" loss see the same
  samples: the same batch means; the variant's per-sequence variance (L = 10) estimates the same
  Var(X) as the gate's per-token one. A sequence variant's row is finite and its per-token-
  equivalent variance stays below its bound."""
  law = V.lognormal(0.5)
  est = [V.variant_estimator("is"), V.VariantEstimator("importance"),
         V.VariantEstimator("rgpo_sequence")]
  summary = V.synthetic_grid(jax.random.key(0), [law], est, n_values=(100, 1000),
                             replications=8, chunk=1000, sequence_length=10)
  np.testing.assert_allclose(summary.estimator_mean[0, 1], summary.estimator_mean[0, 0],
                             rtol=1e-5)
  np.testing.assert_allclose(summary.estimator_variance[0, 1], summary.estimator_variance[0, 0],
                             rtol=1e-4)
  exact_var = V.exact_moments(est[0], law).variance
  assert summary.sample_variance_mean[0, 1, 1] == pytest.approx(exact_var, rel=0.1)
  bound = V.weight_sup(variants.make_gate("rgpo_sequence")) ** 2 * V.exact_moments(
      est[0], law).adv_score_second_moment
  assert np.all(np.isfinite(summary.sample_variance_median[0, 2]))
  assert np.all(summary.sample_variance_median[0, 2] <= bound)
  with pytest.raises(ValueError, match="sequence_length=30"):
    V.synthetic_grid(jax.random.key(0), [law], est, n_values=(100, 1000), chunk=1000,
                     sequence_length=30)
