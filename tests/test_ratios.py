"""Ratio granularity: values and gradients against numpy loops in float64, masks, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import ratios

pytestmark = pytest.mark.usefixtures("x64")

# Two sequences of 5 tokens: 5 and 3 valid, per-token advantages of mixed sign.
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)


def _inputs(seed=0, scale=0.5):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-1.0, 0.5, MASK.shape)
  old = lp - rng.normal(0.0, scale, MASK.shape)
  adv = rng.normal(0.0, 1.0, MASK.shape)
  coef = rng.normal(0.0, 1.0, MASK.shape)  # an arbitrary linear functional to differentiate
  return lp, old, adv, coef


def _grad(fn, lp, coef):
  return np.asarray(jax.grad(lambda x: jnp.sum(jnp.asarray(coef) * fn(x)))(jnp.asarray(lp)))


def test_token_ratio_value_and_gradient():
  lp, old, _, coef = _inputs()
  r = np.exp(lp - old)
  np.testing.assert_allclose(ratios.token_ratio(lp, old), r, rtol=1e-13)
  np.testing.assert_allclose(_grad(lambda x: ratios.token_ratio(x, old), lp, coef), coef * r,
                             rtol=1e-13)


def _numpy_sequence(lp, old, clip=None, adv=None):
  """Per-row (G_i, d G_i / d lp_t) by an explicit loop."""
  g = np.zeros(MASK.shape)
  dg = np.zeros(MASK.shape)
  for i in range(MASK.shape[0]):
    valid = np.flatnonzero(MASK[i])
    c, live = [], []
    for t in valid:
      lr = lp[i, t] - old[i, t]
      if clip is not None:
        lo, hi = clip
        clipped = min(lr, hi) if adv[i, t] >= 0 else max(lr, -lo)
        live.append(clipped == lr)
        lr = clipped
      else:
        live.append(True)
      c.append(lr)
    gi = np.exp(np.mean(c))
    g[i, :] = gi
    for t, alive in zip(valid, live):
      dg[i, t] = gi / len(valid) * alive
  return g, dg


def test_sequence_ratio_is_exp_mean_log_ratio_with_gradient_through_the_mean():
  lp, old, _, coef = _inputs()
  g, dg = _numpy_sequence(lp, old)
  np.testing.assert_allclose(ratios.sequence_ratio(lp, old, MASK), g, rtol=1e-13)
  # s_i sits at every position of row i (padding too), so every coef_u chains through the mean.
  expected = coef.sum(-1, keepdims=True) * dg
  np.testing.assert_allclose(_grad(lambda x: ratios.sequence_ratio(x, old, MASK), lp, coef),
                             expected, rtol=1e-12)


def test_sequence_token_ratio_has_sequence_value_and_token_gradient():
  lp, old, _, coef = _inputs()
  g, _ = _numpy_sequence(lp, old)
  np.testing.assert_allclose(ratios.sequence_token_ratio(lp, old, MASK), g, rtol=1e-13)
  got = _grad(lambda x: ratios.sequence_token_ratio(x, old, MASK), lp, coef)
  np.testing.assert_allclose(got, coef * g * MASK, rtol=1e-13)


def test_geometric_mean_ratio_clips_per_token_by_advantage_sign():
  lp, old, adv, coef = _inputs(scale=0.8)
  clip = (0.3, 0.2)
  g, dg = _numpy_sequence(lp, old, clip, adv)
  assert 0 < (dg[MASK] == 0).sum() < MASK.sum()  # some tokens clipped, some not
  fn = lambda x: ratios.geometric_mean_ratio(x, old, MASK, adv, log_clip_low=0.3,
                                             log_clip_high=0.2)
  np.testing.assert_allclose(fn(lp), g, rtol=1e-13)
  np.testing.assert_allclose(_grad(fn, lp, coef), coef.sum(-1, keepdims=True) * dg,
                             rtol=1e-12)


def test_geometric_mean_matches_verl_gmpo_ratio():
  # verl compute_policy_loss_geo_mean, transcribed: sign(A)-pessimistic clamp in log space.
  lp, old, adv, _ = _inputs(seed=3, scale=0.8)
  nakl = lp - old
  s = np.sign(adv)
  clamped = np.clip(nakl, -0.4, 0.4)
  kl_min = s * np.minimum(s * nakl, s * clamped)
  verl = np.exp((kl_min * MASK).sum(-1) / MASK.sum(-1))
  ours = ratios.geometric_mean_ratio(lp, old, MASK, adv, log_clip_low=0.4, log_clip_high=0.4)
  np.testing.assert_allclose(ours[:, 0], verl, rtol=1e-13)


def test_unclipped_geometric_mean_equals_sequence_ratio():
  lp, old, _, _ = _inputs()
  np.testing.assert_allclose(ratios.geometric_mean_ratio(lp, old, MASK),
                             ratios.sequence_ratio(lp, old, MASK), rtol=1e-14)


@pytest.mark.parametrize("granularity", ratios.GRANULARITIES)
def test_padding_nan_and_inf_never_reach_value_or_gradient(granularity):
  lp, old, adv, coef = _inputs()
  bad_lp, bad_old = lp.copy(), old.copy()
  bad_lp[1, 3:] = [np.nan, -np.inf]
  bad_old[1, 3:] = [np.inf, np.nan]
  kw = dict(granularity=granularity, advantage=adv)
  if granularity == "geometric_mean":
    kw.update(log_clip_low=0.2, log_clip_high=0.2)

  def f(x, o):
    return jnp.sum(jnp.where(MASK, coef * ratios.ratio(x, o, MASK, **kw), 0.0))

  clean_value, clean_grad = jax.value_and_grad(f)(lp, old)
  for fun in (jax.value_and_grad(f), jax.jit(jax.value_and_grad(f))):
    value, grad = fun(bad_lp, bad_old)
    assert float(value) == pytest.approx(float(clean_value), rel=1e-13)
    np.testing.assert_allclose(grad, clean_grad, rtol=1e-13, atol=0)
    assert np.all(np.asarray(grad)[~MASK] == 0)


def test_ratio_vmaps_over_sequences():
  lp, old, _, _ = _inputs()
  batched = jax.vmap(lambda a, b, m: ratios.ratio(a, b, m, granularity="sequence"))(lp, old, MASK)
  np.testing.assert_allclose(batched, ratios.sequence_ratio(lp, old, MASK), rtol=1e-14)


def test_bad_input_errors_name_the_value():
  lp, old, adv, _ = _inputs()
  with pytest.raises(ValueError, match="granularity='word'"):
    ratios.ratio(lp, old, MASK, granularity="word")
  with pytest.raises(ValueError, match="needs mask.*mask=None"):
    ratios.ratio(lp, old, granularity="sequence")
  with pytest.raises(ValueError, match=r"mask\(5,\)"):
    ratios.ratio(lp, old, MASK[0], granularity="sequence_token")
  with pytest.raises(ValueError, match="advantage=None"):
    ratios.geometric_mean_ratio(lp, old, MASK, log_clip_high=0.2)
  with pytest.raises(ValueError, match="log_clip_low=-0.1"):
    ratios.geometric_mean_ratio(lp, old, MASK, adv, log_clip_low=-0.1)
  with pytest.raises(ValueError, match="granularity='token'"):
    ratios.ratio(lp, old, MASK, log_clip_low=0.2)
