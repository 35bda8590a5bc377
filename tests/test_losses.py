"""Losses: gradients against closed forms in float64, reference PPO/IS/REINFORCE, masks, errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import gates, losses

pytestmark = pytest.mark.usefixtures("x64")

ALL_GATES = {
    "sigmoid": gates.sigmoid(4.0), "sigmoid_k10": gates.sigmoid(10.0), "sapo": gates.sapo(),
    "pessimistic_sigmoid": gates.pessimistic_sigmoid(4.0),
    "erf": gates.erf(2.0), "arctan": gates.arctan(1.0), "softsign": gates.softsign(1.0),
    "importance": gates.importance(), "reinforce": gates.reinforce(),
    "ppo_clip": gates.ppo_clip(0.2), "truncated": gates.truncated(0.7, 1.4),
    "custom": gates.custom(lambda r, a: jnp.sqrt(r)),
}


def _batch(n=64, seed=0, scale=0.4):
  rng = np.random.default_rng(seed)
  log_prob = rng.normal(-1.0, 0.5, n)
  behavior = log_prob - rng.normal(0.0, scale, n)
  advantage = rng.normal(0.0, 1.0, n)
  return jnp.asarray(log_prob), jnp.asarray(behavior), jnp.asarray(advantage)


def _grad(gate, lp, b, a, **kw):
  return jax.grad(lambda x: losses.policy_loss(gate, x, b, a, **kw)[0])(lp)


@pytest.mark.parametrize("name", sorted(ALL_GATES))
def test_policy_loss_gradient_is_minus_weight_times_advantage_over_n(name):
  gate = ALL_GATES[name]
  lp, b, a = _batch()
  ratio = np.exp(np.asarray(lp) - np.asarray(b))
  expected = -np.asarray(gate.weight(jnp.asarray(ratio), a)) * np.asarray(a) / lp.size
  np.testing.assert_allclose(_grad(gate, lp, b, a), expected, rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(jax.jit(_grad)(gate, lp, b, a), expected, rtol=1e-10, atol=1e-14)


def test_ppo_clip_gate_reproduces_ppo_clipped_surrogate():
  lp, b, a = _batch(scale=0.5)

  def ppo(lp):  # PPO's reference objective, arXiv 1707.06347 eq. (7)
    r = jnp.exp(lp - b)
    return -jnp.mean(jnp.minimum(r * a, jnp.clip(r, 0.8, 1.2) * a))

  loss, aux = losses.policy_loss(gates.ppo_clip(0.2), lp, b, a)
  assert float(loss) == pytest.approx(float(ppo(lp)), rel=1e-12)
  np.testing.assert_allclose(_grad(gates.ppo_clip(0.2), lp, b, a), jax.grad(ppo)(lp), rtol=1e-12)
  r = np.exp(np.asarray(lp - b))
  a_ = np.asarray(a)
  clipped = ((a_ >= 0) & (r > 1.2)) | ((a_ < 0) & (r < 0.8))
  assert 0 < clipped.mean() < 1
  assert float(aux.rejection_fraction) == pytest.approx(clipped.mean())
  assert float(aux.effective_update_ratio) == pytest.approx(1 - clipped.mean())


def test_importance_gate_reproduces_is_surrogate_and_reinforce_the_score_function():
  lp, b, a = _batch()
  is_surrogate = lambda x: -jnp.mean(jnp.exp(x - b) * a)
  reinforce = lambda x: -jnp.mean(x * a)
  np.testing.assert_allclose(_grad(gates.importance(), lp, b, a), jax.grad(is_surrogate)(lp),
                             rtol=1e-12)
  np.testing.assert_allclose(_grad(gates.reinforce(), lp, b, a), jax.grad(reinforce)(lp),
                             rtol=1e-12)


def test_sigmoid_k4_has_the_gradient_of_sapo_with_tau_4():
  lp, b, a = _batch(scale=0.8)
  np.testing.assert_allclose(_grad(gates.sigmoid(4.0), lp, b, a),
                             _grad(gates.sapo(4.0, 4.0), lp, b, a), rtol=1e-12)


def test_on_policy_gradients_of_rgpo_k4_ppo_and_reinforce_coincide():
  lp, _, a = _batch()
  grads = [_grad(g, lp, lp, a) for g in (gates.sigmoid(4.0), gates.ppo_clip(), gates.reinforce(),
                                         gates.importance(), gates.sapo(1.0, 1.0))]
  for g in grads[1:]:
    np.testing.assert_allclose(g, grads[0], rtol=1e-12)


def test_extreme_log_ratios_give_finite_loss_and_gradient_in_float32():
  with jax.enable_x64(False):
    lp = jnp.array([500.0, -500.0, 0.0, 30.0], jnp.float32)
    b = jnp.zeros(4, jnp.float32)
    a = jnp.array([1.0, -1.0, 1.0, 1.0], jnp.float32)
    for gate in (gates.importance(), gates.reinforce(), gates.sigmoid(4.0)):
      loss, aux = losses.policy_loss(gate, lp, b, a)
      g = jax.grad(lambda x: losses.policy_loss(gate, x, b, a)[0])(lp)
      assert np.isfinite(float(loss)) and np.all(np.isfinite(g)), gate.name
      assert all(np.isfinite(float(v)) for v in aux)
    # REINFORCE keeps its unit weight even where the ratio is clamped.
    g = jax.grad(lambda x: losses.policy_loss(gates.reinforce(), x, b, a)[0])(lp)
    np.testing.assert_allclose(g, -a / 4, rtol=1e-6)


def test_ratio_is_exact_inside_the_clamp_band():
  lp = jnp.array([-19.0, 0.3, 19.0])
  r = losses.clamped_ratio(lp, jnp.zeros(3))
  np.testing.assert_allclose(r, np.exp([-19.0, 0.3, 19.0]), rtol=1e-14)
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(losses.clamped_ratio(x, 0.0 * x)))(lp),
                             np.exp([-19.0, 0.3, 19.0]), rtol=1e-14)


def test_masked_entries_are_ignored():
  lp, b, a = _batch(n=10)
  mask = jnp.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], bool)
  gate = gates.sigmoid(4.0)
  loss, aux = losses.policy_loss(gate, lp, b, a, mask)
  ref_loss, ref_aux = losses.policy_loss(gate, lp[mask], b[mask], a[mask])
  assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
  for got, ref in zip(aux, ref_aux):
    assert float(got) == pytest.approx(float(ref), rel=1e-12)
  g = _grad(gate, lp, b, a, mask=mask)
  assert np.all(np.asarray(g)[~np.asarray(mask)] == 0.0)
  # Garbage (even NaN-free huge values) in padded entries does not leak into the loss.
  lp2 = jnp.where(mask, lp, 1e3)
  assert float(losses.policy_loss(gate, lp2, b, a, mask)[0]) == pytest.approx(float(loss))


def test_sequence_mean_reduction_matches_a_plain_loop():
  rng = np.random.default_rng(3)
  lp, b, a = (jnp.asarray(rng.normal(0, 0.3, (4, 6))) for _ in range(3))
  lengths = [6, 2, 0, 4]
  mask = jnp.asarray(np.arange(6)[None, :] < np.array(lengths)[:, None])
  gate = gates.sigmoid(4.0)
  loss, _ = losses.policy_loss(gate, lp, b, a, mask, reduction="sequence_mean")
  r = np.exp(np.asarray(lp) - np.asarray(b))
  g = np.asarray(gate.value(jnp.asarray(r), a))
  per_seq = [np.mean(g[i, :n] * np.asarray(a)[i, :n]) for i, n in enumerate(lengths) if n > 0]
  assert float(loss) == pytest.approx(-np.mean(per_seq), rel=1e-12)
  token_loss, _ = losses.policy_loss(gate, lp, b, a, mask)
  m = np.asarray(mask)
  assert float(token_loss) == pytest.approx(-np.sum((g * np.asarray(a))[m]) / m.sum(), rel=1e-12)


def test_all_masked_batch_gives_zero_loss_zero_gradient_and_zero_diagnostics():
  lp, b, a = _batch(n=4)
  mask = jnp.zeros(4, bool)
  lp, b, a = lp.at[0].set(jnp.nan), b.at[1].set(-jnp.inf), a.at[2].set(jnp.inf)
  for reduction, shape in (("token_mean", (4,)), ("sequence_mean", (2, 2))):
    args = [x.reshape(shape) for x in (lp, b, a, mask)]
    loss, aux = losses.policy_loss(gates.sigmoid(), *args, reduction=reduction)
    assert float(loss) == 0.0 and all(float(v) == 0.0 for v in aux)
    g = jax.grad(lambda x: losses.policy_loss(gates.sigmoid(), x, *args[1:],
                                              reduction=reduction)[0])(args[0])
    assert np.all(np.asarray(g) == 0.0)


# Padding as LLM pipelines produce it: NaN, ±inf and huge values in every input.
_PAD = np.array([np.nan, np.inf, -np.inf, 1e30, -np.nan, -1e4])


def _padded(n=12, seed=1):
  """(valid lp, b, a), a mask with 4 padded entries, and the full arrays with garbage there."""
  lp, b, a = _batch(n=n, seed=seed)
  mask = np.ones(n, bool)
  mask[[1, 4, 5, n - 1]] = False
  rng = np.random.default_rng(seed)
  garbage = lambda x: jnp.where(jnp.asarray(mask), x, jnp.asarray(rng.choice(_PAD, n)))
  return (lp[mask], b[mask], a[mask]), jnp.asarray(mask), (garbage(lp), garbage(b), garbage(a))


def _assert_same(got, ref, rtol=1e-12):
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-15)


# Every gate family goes through this with random layouts in test_properties.py; here a few
# representative ones, eagerly and under jit, with the diagnostics.
@pytest.mark.parametrize("name", ["sigmoid", "ppo_clip", "reinforce", "custom"])
def test_nan_and_inf_padding_is_inert_in_policy_loss_value_diagnostics_and_gradient(name):
  gate = ALL_GATES[name]
  (lp, b, a), mask, (lp_pad, b_pad, a_pad) = _padded()
  value_and_grad = jax.value_and_grad(
      lambda x, b, a, m: losses.policy_loss(gate, x, b, a, m), has_aux=True)
  (ref_loss, ref_aux), ref_grad = value_and_grad(lp, b, a, None)
  for fn in (value_and_grad, jax.jit(value_and_grad)):
    (loss, aux), grad = fn(lp_pad, b_pad, a_pad, mask)
    _assert_same((loss, aux), (ref_loss, ref_aux))
    _assert_same(grad[np.asarray(mask)], ref_grad)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0.0)


def test_nan_and_inf_padding_is_inert_in_dual_ratio_loss():
  g_old, g_ref = gates.sigmoid(4.0), gates.arctan(2.0)
  (lp, b, a), mask, (lp_pad, b_pad, a_pad) = _padded(seed=2)
  ref_lp, ref_lp_pad = b - 0.3, jnp.where(mask, b_pad - 0.3, -jnp.inf)
  value_and_grad = jax.value_and_grad(
      lambda x, o, r, a, m: losses.dual_ratio_policy_loss(g_old, g_ref, x, o, r, a, m),
      has_aux=True)
  ref, ref_grad = value_and_grad(lp, b, ref_lp, a, None)
  for fn in (value_and_grad, jax.jit(value_and_grad)):
    got, grad = fn(lp_pad, b_pad, ref_lp_pad, a_pad, mask)
    _assert_same(got, ref)
    _assert_same(grad[np.asarray(mask)], ref_grad)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0.0)


def test_nan_padding_is_inert_in_value_entropy_masked_mean_and_kl():
  (v, t, old), mask, (v_pad, t_pad, old_pad) = _padded(seed=3)
  m = np.asarray(mask)
  value_grad = jax.value_and_grad(lambda v, t, o, m: losses.value_loss(
      v, t, m, old_value=o, clip_epsilon=0.2))
  ref, ref_grad = value_grad(v, t, old, None)
  for fn in (value_grad, jax.jit(value_grad)):
    got, grad = fn(v_pad, t_pad, old_pad, mask)
    _assert_same(got, ref)
    _assert_same(grad[m], ref_grad)
    assert np.all(np.asarray(grad)[~m] == 0.0)
  for fn in (losses.masked_mean, losses.entropy_bonus, losses.entropy_loss):
    got, grad = jax.value_and_grad(fn)(v_pad, mask)
    _assert_same(got, fn(v))
    assert np.all(np.asarray(grad)[~m] == 0.0)
  _assert_same(losses.approx_kl(t_pad, old_pad, mask), losses.approx_kl(t, old))
  # sequence_mean: rows with NaN padding equal the per-row means of their valid entries.
  x = jnp.asarray([[1.0, jnp.nan, 3.0], [jnp.inf, -jnp.inf, jnp.nan], [4.0, 5.0, -jnp.inf]])
  seq_mask = jnp.asarray([[1, 0, 1], [0, 0, 0], [1, 1, 0]])
  assert float(losses.masked_mean(x, seq_mask, "sequence_mean")) == pytest.approx((2 + 4.5) / 2)
  assert float(jax.jit(losses.masked_mean, static_argnums=2)(x, seq_mask, "sequence_mean")) == (
      pytest.approx(3.25))


def test_masked_max_is_the_max_over_valid_entries_even_when_negative():
  gate = gates.custom(lambda r, a: -2.0 * r)  # w(r) = −2r < 0 everywhere
  r = jnp.array([0.5, 3.0, 2.0])
  aux = losses.gate_diagnostics(gate, r, jnp.log(r), jnp.ones(3), jnp.array([True, False, True]))
  assert float(aux.weight_max) == pytest.approx(-1.0)
  assert float(aux.ratio_max) == pytest.approx(2.0)


def test_masks_must_be_boolean_or_zero_one_when_concrete():
  lp, b, a = _batch(n=3)
  with pytest.raises(ValueError, match=re.escape(
      "policy_loss: mask must be boolean or 0/1 (it selects entries, it is not a weight), got "
      "mask values [0.5, 2.0]")):
    losses.policy_loss(gates.sigmoid(), lp, b, a, np.array([2, 0, 0.5]))
  with pytest.raises(ValueError, match=re.escape("masked_mean: mask must be boolean or 0/1")):
    losses.masked_mean(lp, jnp.array([1.0, jnp.nan, 0.0]))
  with pytest.raises(ValueError, match=re.escape("value_loss: mask must be boolean or 0/1")):
    losses.value_loss(lp, b, [0, 3, 1])
  # 0/1 numbers are accepted and equal the boolean mask; a traced mask is read as mask != 0.
  as_bool = losses.policy_loss(gates.sigmoid(), lp, b, a, jnp.array([True, False, True]))[0]
  assert float(losses.policy_loss(gates.sigmoid(), lp, b, a, np.array([1.0, 0.0, 1.0]))[0]) == (
      float(as_bool))
  traced = jax.jit(lambda m: losses.policy_loss(gates.sigmoid(), lp, b, a, m)[0])
  assert float(traced(jnp.array([2.0, 0.0, 0.5]))) == pytest.approx(float(as_bool), rel=1e-12)


def test_diagnostics_against_hand_computation():
  r = np.array([0.5, 0.9, 1.0, 1.6, 4.0])
  a = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
  gate = gates.sigmoid(4.0)
  _, aux = losses.policy_loss(gate, jnp.log(jnp.asarray(r)), jnp.zeros(5), jnp.asarray(a))
  s = 1 / (1 + np.exp(-4 * (r - 1)))
  slope = 4 * s * (1 - s)                      # g'(1) = 1 for k = 4
  assert float(aux.gate_mean) == pytest.approx(s.mean())
  assert float(aux.weight_mean) == pytest.approx((slope * r).mean())
  assert float(aux.weight_max) == pytest.approx((slope * r).max())
  assert float(aux.effective_update_ratio) == pytest.approx(slope.mean())
  assert float(aux.acceptance_fraction) == pytest.approx((slope >= 0.5).mean())
  assert float(aux.rejection_fraction) == pytest.approx((slope < 0.01).mean())
  assert float(aux.approx_kl) == pytest.approx(((r - 1) - np.log(r)).mean())
  assert float(aux.ratio_max) == pytest.approx(4.0)


def test_dual_ratio_gradient_matches_closed_form():
  rng = np.random.default_rng(5)
  lp = jnp.asarray(rng.normal(-1, 0.3, 32))
  old = lp - jnp.asarray(rng.normal(0, 0.3, 32))
  ref = lp - jnp.asarray(rng.normal(0, 0.5, 32))
  a = jnp.asarray(rng.normal(0, 1, 32))
  g_old, g_ref = gates.sigmoid(4.0), gates.sigmoid(2.0)
  grad = jax.grad(lambda x: losses.dual_ratio_policy_loss(g_old, g_ref, x, old, ref, a)[0])(lp)
  r_o, r_r = np.exp(np.asarray(lp - old)), np.exp(np.asarray(lp - ref))
  sig = lambda x: 1 / (1 + np.exp(-x))
  go, gr = sig(4 * (r_o - 1)), sig(2 * (r_r - 1))
  wo, wr = 4 * go * (1 - go) * r_o, 2 * gr * (1 - gr) * r_r
  expected = -(wo * gr + go * wr) / 0.5 * np.asarray(a) / 32
  np.testing.assert_allclose(grad, expected, rtol=1e-10)
  _, aux = losses.dual_ratio_policy_loss(g_old, g_ref, lp, old, ref, a)
  np.testing.assert_allclose(float(aux.weight_mean), np.mean(-expected * 32 / np.asarray(a)),
                             rtol=1e-10)


def test_dual_ratio_equals_single_ratio_when_policy_equals_reference():
  lp, b, a = _batch()
  single, _ = losses.policy_loss(gates.sigmoid(4.0), lp, b, a)
  dual, aux = losses.dual_ratio_policy_loss(gates.sigmoid(4.0), gates.sigmoid(2.0), lp, b, lp, a)
  assert float(dual) == pytest.approx(float(single), rel=1e-12)
  assert float(aux.ref_gate_mean) == pytest.approx(1.0)


def test_kl_estimators_against_exact_kl():
  q = np.array([0.5, 0.3, 0.15, 0.05])
  p = np.array([0.25, 0.25, 0.25, 0.25])
  exact = np.sum(q * np.log(q / p))
  lq, lp = jnp.log(jnp.asarray(q)), jnp.log(jnp.asarray(p))
  # Expectation under q by exact enumeration: k1 and k3 are unbiased, k2 is not but is >= 0.
  assert float(jnp.sum(q * losses.kl_k1(lq, lp))) == pytest.approx(exact, rel=1e-12)
  assert float(jnp.sum(q * losses.kl_k3(lq, lp))) == pytest.approx(exact, rel=1e-12)
  assert np.all(np.asarray(losses.kl_k2(lq, lp)) >= 0)
  assert np.all(np.asarray(losses.kl_k3(lq, lp)) >= 0)
  assert float(jnp.sum(q * losses.kl_k2(lq, lp))) == pytest.approx(
      np.sum(q * 0.5 * np.log(p / q) ** 2), rel=1e-12)


def test_value_loss_plain_and_clipped():
  v = jnp.array([1.0, 2.0, 0.0])
  old = jnp.array([0.0, 2.5, 0.1])
  target = jnp.array([2.0, 2.0, -1.0])
  assert float(losses.value_loss(v, target)) == pytest.approx(0.5 * np.mean([1.0, 0.0, 1.0]))
  clipped = losses.value_loss(v, target, old_value=old, clip_epsilon=0.2)
  # clipped predictions 0.2, 2.3, 0.0 -> errors max((1,3.24),(0,0.09),(1,1))
  assert float(clipped) == pytest.approx(0.5 * np.mean([3.24, 0.09, 1.0]))
  with pytest.raises(ValueError, match="pass both old_value and clip_epsilon"):
    losses.value_loss(v, target, old_value=old)


def test_entropy_bonus_is_plus_and_entropy_loss_minus_the_masked_mean_entropy():
  h = jnp.array([1.0, 2.0, 3.0])
  mask = jnp.array([True, False, True])
  assert float(losses.entropy_bonus(h, mask)) == pytest.approx(2.0)
  assert float(losses.entropy_loss(h, mask)) == pytest.approx(-2.0)
  # The PureJaxRL habit `pg + c_v·vf − c_e·entropy` and `pg + c_v·vf + c_e·entropy_loss` agree:
  # both raise the entropy when minimised.
  grad_bonus = jax.grad(lambda h: -0.01 * losses.entropy_bonus(h))(h)
  grad_loss = jax.grad(lambda h: 0.01 * losses.entropy_loss(h))(h)
  np.testing.assert_array_equal(grad_bonus, grad_loss)
  assert np.all(np.asarray(grad_bonus) < 0)


def test_approx_kl_after_an_update_matches_exact_kl_by_enumeration():
  q = np.array([0.5, 0.3, 0.15, 0.05])   # π_old, the sampling policy
  p = np.array([0.4, 0.4, 0.1, 0.1])     # π_new after the update
  exact = np.sum(q * np.log(q / p))
  # Weighted enumeration of the samples: every action repeated in proportion to q (×20).
  actions = np.repeat(np.arange(4), (q * 20).astype(int))
  old, new = jnp.log(jnp.asarray(q[actions])), jnp.log(jnp.asarray(p[actions]))
  for estimator in ("k1", "k3"):
    assert float(losses.approx_kl(old, new, estimator=estimator)) == pytest.approx(exact, rel=1e-12)
  assert float(losses.approx_kl(old, old)) == 0.0
  with pytest.raises(ValueError, match=re.escape("estimator must be one of ['k1', 'k2', 'k3'], "
                                                 "got estimator='k4'")):
    losses.approx_kl(old, new, estimator="k4")


def test_policy_loss_vmaps_over_a_stack_of_gates_and_seeds():
  ks = jnp.array([1.0, 4.0, 8.0])
  lp, b, a = (jnp.stack(x) for x in zip(*[_batch(n=16, seed=s) for s in range(2)]))

  def loss_for(k, lp, b, a):
    return losses.policy_loss(gates.sigmoid(k), lp, b, a)[0]

  got = jax.jit(jax.vmap(jax.vmap(loss_for, (None, 0, 0, 0)), (0, None, None, None)))(ks, lp, b, a)
  assert got.shape == (3, 2)
  for i, k in enumerate([1.0, 4.0, 8.0]):
    for s in range(2):
      ref = losses.policy_loss(gates.sigmoid(k), lp[s], b[s], a[s])[0]
      assert float(got[i, s]) == pytest.approx(float(ref), rel=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(4)),
     "policy_loss: arrays must have the same shape (broadcast them explicitly, e.g. a per-sequence "
     "advantage as advantage[:, None]); got log_prob(3,), behavior_log_prob(3,), advantage(4,)"),
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3),
                                jnp.ones(2)), "mask(2,)"),
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3),
                                reduction="mean"),
     "got reduction='mean'"),
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3),
                                reduction="sequence_mean"),
     "reduction='sequence_mean' needs arrays shaped [..., sequence, token], got 1-d arrays"),
    (lambda: losses.dual_ratio_policy_loss(gates.sigmoid(), gates.sigmoid(), jnp.zeros(3),
                                           jnp.zeros(3), jnp.zeros(2), jnp.zeros(3)),
     "ref_log_prob(2,)"),
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3),
                                max_log_ratio=0.0),
     "policy_loss: max_log_ratio must be > 0 (+inf: no clamp), got max_log_ratio=0.0"),
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3),
                                max_log_ratio=-5), "got max_log_ratio=-5"),
    (lambda: losses.dual_ratio_policy_loss(gates.sigmoid(), gates.sigmoid(), *(jnp.zeros(3),) * 4,
                                           max_log_ratio=float("nan")),
     "dual_ratio_policy_loss: max_log_ratio must be > 0 (+inf: no clamp), got max_log_ratio=nan"),
    (lambda: losses.clamped_ratio(jnp.zeros(3), jnp.zeros(3), "20"), "got max_log_ratio='20'"),
    (lambda: losses.value_loss(jnp.zeros(3), jnp.zeros(3), old_value=jnp.zeros(3),
                               clip_epsilon=-0.2),
     "value_loss: clip_epsilon must be > 0 (finite), got clip_epsilon=-0.2"),
    (lambda: losses.value_loss(jnp.zeros(3), jnp.zeros(3), old_value=jnp.zeros(3),
                               clip_epsilon=float("nan")), "got clip_epsilon=nan"),
    (lambda: losses.value_loss(jnp.zeros(3), jnp.zeros(3), old_value=jnp.zeros(3),
                               clip_epsilon=0.0), "got clip_epsilon=0.0"),
    (lambda: losses.masked_mean(jnp.zeros(3), jnp.ones(4)), "masked_mean: arrays must have the "
                                                            "same shape; got x(3,), mask(4,)"),
])
def test_bad_inputs_raise_clear_errors(call, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    call()
