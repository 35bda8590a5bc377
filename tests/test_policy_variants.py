"""losses.policy_loss composed with ratio granularity, aggregation and detached sample weights:
GSPO and GMPO against verl's formulas, RGPO on the sequence ratio, correction weights."""

import functools

import jax
import numpy as np
import pytest

from rgpo_jax import aggregation, gates, losses

pytestmark = pytest.mark.usefixtures("x64")

MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]], bool)


def _batch(seed=0, scale=0.15):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-1.0, 0.5, MASK.shape)
  old = lp - rng.normal(0.0, scale, MASK.shape)
  adv = np.broadcast_to(rng.normal(0.0, 1.0, (3, 1)), MASK.shape).copy()  # one Â per sequence
  return lp, old, adv


@functools.partial(jax.jit, static_argnames=("kw",))
def _value_and_grad(gate, lp, old, adv, kw):
  return jax.value_and_grad(lambda x: losses.policy_loss(gate, x, old, adv, MASK, **dict(kw))[0])(lp)


def _seq_ratio(lp, old):
  return np.array([np.exp((lp[i] - old[i])[MASK[i]].mean()) for i in range(3)])


def test_gspo_token_equals_verl_compute_policy_loss_gspo():
  lp, old, adv = _batch(seed=2, scale=0.3)
  eps_low, eps_high = 0.05, 0.08
  s = _seq_ratio(lp, old)
  a = adv[:, 0]
  # verl compute_policy_loss_gspo: −min(s·Â, clip(s)·Â) per token, seq-mean-token-mean.
  per_seq = -np.minimum(s * a, np.clip(s, 1 - eps_low, 1 + eps_high) * a)
  unclipped = np.where(a >= 0, s < 1 + eps_high, s > 1 - eps_low)
  assert 0 < unclipped.sum() < 3
  # ∂/∂lp_t of s_{i,t} is s_i: gradient −s_i·Â_i·1[unclipped]/(B·|y_i|).
  grad = np.where(MASK, (-s * a * unclipped / (3 * MASK.sum(-1)))[:, None], 0.0)
  kw = (("granularity", "sequence_token"), ("reduction", "seq-mean-token-mean"))
  value, g = _value_and_grad(gates.ppo_clip(eps_low, eps_high), lp, old, adv, kw)
  assert float(value) == pytest.approx(per_seq.mean(), rel=1e-12)
  np.testing.assert_allclose(g, grad, rtol=1e-12, atol=1e-15)
  # TRL's form (gradient through the mean) agrees here: per-sequence Â, seq-mean-token-mean.
  kw_trl = (("granularity", "sequence"), ("reduction", "seq-mean-token-mean"))
  np.testing.assert_allclose(
      _value_and_grad(gates.ppo_clip(eps_low, eps_high), lp, old, adv, kw_trl)[1], grad, rtol=1e-12)


def test_gmpo_equals_verl_compute_policy_loss_geo_mean():
  lp, old, adv = _batch(seed=1, scale=0.6)
  nakl = lp - old
  sign = np.sign(adv)
  clamped = np.clip(nakl, -0.4, 0.4)
  kl_min = sign * np.minimum(sign * nakl, sign * clamped)
  g = np.exp((kl_min * MASK).sum(-1) / MASK.sum(-1))
  a = (adv * MASK).sum(-1) / MASK.sum(-1)
  verl = np.mean(-a * g)  # pg_loss = torch.mean(−advantage · ratio)
  live = np.where(MASK, kl_min == nakl, False)
  grad = np.where(live, (-a * g / (3 * MASK.sum(-1)))[:, None], 0.0)
  kw = (("granularity", "geometric_mean"), ("log_clip", (0.4, 0.4)),
        ("reduction", "seq-mean-token-mean"))
  value, got = _value_and_grad(gates.importance(), lp, old, adv, kw)
  assert float(value) == pytest.approx(verl, rel=1e-12)
  np.testing.assert_allclose(got, grad, rtol=1e-12, atol=1e-15)


def test_sigmoid_gate_on_the_sequence_ratio():
  lp, old, adv = _batch(seed=2, scale=0.4)
  s, a, k = _seq_ratio(lp, old), adv[:, 0], 4.0
  sig = 1 / (1 + np.exp(-k * (s - 1)))
  # L = −(1/B) Σ_i σ(k(s_i−1))·Â_i; ∂s_i/∂lp_t = s_i/|y_i|.
  grad = np.where(MASK, (-k * sig * (1 - sig) * s * a / (3 * MASK.sum(-1)))[:, None], 0.0)
  kw = (("granularity", "sequence"), ("reduction", "sequence_mean"))
  value, got = _value_and_grad(gates.sigmoid(k), lp, old, adv, kw)
  assert float(value) == pytest.approx(float(np.mean(-sig * a)), rel=1e-12)
  np.testing.assert_allclose(got, grad, rtol=1e-12, atol=1e-15)


def test_sample_weight_scales_each_tokens_gradient_and_is_detached():
  lp, old, adv = _batch(seed=3)
  c = np.random.default_rng(0).uniform(0, 2, MASK.shape)
  r = np.exp(lp - old)
  f = lambda x, w: losses.policy_loss(gates.importance(), x, old, adv, MASK, sample_weight=w)[0]
  grad_lp, grad_w = jax.jit(jax.grad(f, argnums=(0, 1)))(lp, c)
  np.testing.assert_allclose(grad_lp, np.where(MASK, -c * r * adv, 0.0) / MASK.sum(), rtol=1e-12)
  assert np.all(np.asarray(grad_w) == 0)


def test_callable_reduction_with_global_count_makes_micro_batches_add_up():
  lp, old, adv = _batch(seed=4)
  gate, n = gates.sigmoid(4.0), MASK.sum()
  reduce = functools.partial(aggregation.aggregate, mode="token-mean", num_tokens=n)

  @jax.jit
  def full_and_micro(lp, old, adv):
    full = losses.policy_loss(gate, lp, old, adv, MASK)[0]
    parts = [losses.policy_loss(gate, lp[s], old[s], adv[s], MASK[s], reduction=reduce)[0]
             for s in (slice(0, 1), slice(1, 3))]
    return full, sum(parts)

  full, micro = full_and_micro(lp, old, adv)
  assert float(micro) == pytest.approx(float(full), rel=1e-12)


def test_dr_grpo_constant_normaliser_through_policy_loss():
  lp, old, adv = _batch(seed=5)
  r = np.exp(lp - old)
  value, _ = _value_and_grad(gates.importance(), lp, old, adv,
                             (("reduction", "seq-mean-token-sum-norm"),))
  assert float(value) == pytest.approx(-(r * adv)[MASK].sum() / (3 * 6), rel=1e-12)


def test_padding_nan_is_inert_at_sequence_granularity():
  lp, old, adv = _batch(seed=6)
  bad_lp, bad_old = lp.copy(), old.copy()
  bad_lp[~MASK], bad_old[~MASK] = np.nan, -np.inf
  kw = (("granularity", "sequence"), ("reduction", "sequence_mean"))
  value, grad = _value_and_grad(gates.sigmoid(4.0), bad_lp, bad_old, adv, kw)
  clean_value, clean_grad = _value_and_grad(gates.sigmoid(4.0), lp, old, adv, kw)
  assert float(value) == pytest.approx(float(clean_value), rel=1e-13)
  np.testing.assert_allclose(grad, clean_grad, rtol=1e-13, atol=0)


def test_bad_input_errors_name_the_value():
  lp, old, adv = _batch()
  with pytest.raises(ValueError, match="needs mask"):
    losses.policy_loss(gates.sigmoid(), lp, old, adv, granularity="sequence")
  with pytest.raises(ValueError, match="granularity='sentence'"):
    losses.policy_loss(gates.sigmoid(), lp, old, adv, MASK, granularity="sentence")
  with pytest.raises(ValueError, match="reduction='seq-median'"):
    losses.policy_loss(gates.sigmoid(), lp, old, adv, MASK, reduction="seq-median")
  with pytest.raises(ValueError, match=r"sample_weight\(6,\)"):
    losses.policy_loss(gates.sigmoid(), lp, old, adv, MASK, sample_weight=np.ones(6))
