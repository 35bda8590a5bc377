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


def test_all_masked_batch_gives_zero_not_nan():
  lp, b, a = _batch(n=4)
  loss, aux = losses.policy_loss(gates.sigmoid(), lp, b, a, jnp.zeros(4, bool))
  assert float(loss) == 0.0 and float(aux.gate_mean) == 0.0


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


def test_entropy_loss_is_negative_masked_mean():
  h = jnp.array([1.0, 2.0, 3.0])
  assert float(losses.entropy_loss(h, jnp.array([True, False, True]))) == pytest.approx(-2.0)


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
     "reduction must be one of ('token_mean', 'sequence_mean'), got reduction='mean'"),
    (lambda: losses.policy_loss(gates.sigmoid(), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3),
                                reduction="sequence_mean"),
     "reduction='sequence_mean' needs arrays shaped [..., sequence, token], got 1-d arrays"),
    (lambda: losses.dual_ratio_policy_loss(gates.sigmoid(), gates.sigmoid(), jnp.zeros(3),
                                           jnp.zeros(3), jnp.zeros(2), jnp.zeros(3)),
     "ref_log_prob(2,)"),
])
def test_bad_inputs_raise_clear_errors(call, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    call()
