"""Dual-clip, DPO drift and detached-weight (CISPO) gates: weights and values against closed forms
and against the stacks' formulas transcribed in numpy (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import detached, gates, losses

pytestmark = pytest.mark.usefixtures("x64")

# Ratios avoiding the kinks (1 ± ε, c, caps), both advantage signs, some with |Â| ≠ 1.
RATIOS = np.concatenate([np.linspace(0.013, 3.9, 61), [4.3, 5.3, 11.0, 47.0]])
ADVANTAGES = (0.7, -0.7, 2.5, -1.9)


def _sech2(x):
  return 1.0 / np.cosh(x) ** 2


CLOSED_FORMS = {  # (gate, w(r, a)) written out in numpy
    "dual_clip": (gates.dual_clip(0.2, c=3.0),
                  lambda r, a: r * np.where(a >= 0, r < 1.2, (r > 0.8) & (r < 3.0))),
    "dual_clip_higher": (gates.dual_clip(0.2, epsilon_high=0.28, c=2.0),
                         lambda r, a: r * np.where(a >= 0, r < 1.28, (r > 0.8) & (r < 2.0))),
    "dpo_drift": (gates.dpo_drift(2.0, 0.6), lambda r, a: np.where(
        a >= 0, np.where(r > 1, r * _sech2((r - 1) * a / 2.0), r),
        np.where(r < 1, r - 1 + _sech2(a * np.log(r) / 0.6), r))),
    "cispo": (detached.cispo(0.2, epsilon_high=0.28), lambda r, a: np.clip(r, 0.8, 1.28)),
    "cispo_cap": (detached.cispo_cap(5.0), lambda r, a: np.minimum(r, 5.0)),
    "detached_sigmoid": (detached.detached(gates.sigmoid(4.0)), lambda r, a: (
        4.0 * r * np.exp(-4 * (r - 1)) / (1 + np.exp(-4 * (r - 1))) ** 2)),
    "detached_ppo_clip_by_name": (detached.detached("ppo_clip", epsilon=0.2), lambda r, a: (
        r * (((a >= 0) & (r < 1.2)) | ((a < 0) & (r > 0.8))))),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_autodiff_weight_equals_closed_form(name):
  gate, closed_form = CLOSED_FORMS[name]
  r = jnp.asarray(RATIOS)
  for adv in ADVANTAGES:
    a = np.full_like(RATIOS, adv)
    np.testing.assert_allclose(gate.weight(r, jnp.asarray(a)), closed_form(RATIOS, a),
                               rtol=1e-11, atol=1e-14)


def _batch(n=48, seed=0, scale=0.8):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-1.0, 0.5, n)
  old = lp - rng.normal(0.0, scale, n)
  adv = rng.normal(0.0, 1.0, n)
  return lp, old, adv


@jax.jit
def _loss_and_grad(gate, lp, old, adv):
  return jax.value_and_grad(lambda x: losses.policy_loss(gate, x, old, adv)[0])(lp)


def test_dual_clip_matches_verl_vanilla_loss():
  lp, old, adv = _batch()
  r = np.exp(lp - old)
  assert ((adv < 0) & (r > 3.0)).any()  # the dual clip binds somewhere
  # verl compute_policy_loss_vanilla, transcribed (cliprange 0.2, clip_ratio_c 3).
  pg1, pg2 = -adv * r, -adv * np.clip(r, 0.8, 1.2)
  clip1 = np.maximum(pg1, pg2)
  pg = np.where(adv < 0, np.minimum(-adv * 3.0, clip1), clip1)
  live = np.where(adv < 0, (clip1 < -adv * 3.0) & (pg1 >= pg2), pg1 >= pg2)
  value, grad = _loss_and_grad(gates.dual_clip(0.2, c=3.0), lp, old, adv)
  assert float(value) == pytest.approx(pg.mean(), rel=1e-12)
  np.testing.assert_allclose(grad, -adv * r * live / lp.size, rtol=1e-12, atol=1e-15)


def test_dpo_drift_objective_matches_stoix_dpo_loss():
  lp, old, adv = _batch(seed=1)
  log_diff = lp - old
  r = np.exp(log_diff)
  # Stoix stoix/utils/loss.py dpo_loss, transcribed (alpha 2, beta 0.6).
  drift1 = np.maximum(0, (r - 1) * adv - 2.0 * np.tanh((r - 1) * adv / 2.0))
  drift2 = np.maximum(0, log_diff * adv - 0.6 * np.tanh(log_diff * adv / 0.6))
  stoix = -(r * adv - np.where(adv >= 0, drift1, drift2)).mean()
  value, _ = _loss_and_grad(gates.dpo_drift(), lp, old, adv)
  assert float(value) == pytest.approx(stoix, rel=1e-12)
  assert float(gates.dpo_drift().value(1.7, 0.0)) == pytest.approx(1.7)  # Â = 0: g = r, no NaN


@pytest.mark.parametrize("gate,weight", [
    (detached.cispo(0.2), lambda r: np.clip(r, 0.8, 1.2)),        # verl compute_policy_loss_cispo
    (detached.cispo_cap(5.0), lambda r: np.minimum(r, 5.0)),      # TRL loss_type="cispo"
])
def test_cispo_gradient_is_the_stacks_detached_clipped_weight(gate, weight):
  lp, old, adv = _batch(scale=1.2)
  r = np.exp(lp - old)
  # The stacks' loss −sg(clip(r))·Â·log π: gradient −clip(r)·Â/N, value up to a constant.
  _, grad = _loss_and_grad(gate, lp, old, adv)
  np.testing.assert_allclose(grad, -weight(r) * adv / lp.size, rtol=1e-12, atol=1e-15)


def test_detached_gate_loss_is_linear_in_log_prob():
  # sg(w)·log r: the second derivative vanishes, while the sigmoid gate's does not.
  lp, old, adv = _batch(n=6)
  # The loss is a sum of per-sample terms, so the Hessian's diagonal is ∇(Σ ∇L).
  second = jax.jit(jax.grad(lambda x, g: jnp.sum(jax.grad(
      lambda y: losses.policy_loss(g, y, old, adv)[0])(x))))
  np.testing.assert_allclose(second(lp, detached.detached(gates.sigmoid(4.0))), 0.0, atol=1e-15)
  assert np.abs(np.asarray(second(lp, gates.sigmoid(4.0)))).max() > 1e-3


def test_new_families_are_built_by_name_and_vmap_over_parameters():
  assert gates.make("dual_clip", c=2.5).params["c"] == 2.5
  assert gates.make("cispo_cap", epsilon_max=3.0).name == "cispo_cap"
  assert gates.make("detached", gate="sigmoid", k=8.0).name == "detached_sigmoid"
  stacked = jax.tree.map(lambda *x: jnp.stack(x), gates.dual_clip(c=2.0), gates.dual_clip(c=4.0))
  w = jax.vmap(lambda g: g.weight(jnp.asarray(3.0), jnp.asarray(-1.0)))(stacked)
  np.testing.assert_allclose(w, [0.0, 3.0])


@pytest.mark.parametrize("build,message", [
    (lambda: gates.dual_clip(c=1.0), "c=1.0"),
    (lambda: gates.dual_clip(c=0.5), "c=0.5"),
    (lambda: detached.cispo_cap(-1.0), "epsilon_max=-1.0"),
    (lambda: detached.cispo(epsilon=1.5), "epsilon=1.5"),
    (lambda: gates.dpo_drift(alpha=0.0), "alpha=0.0"),
    (lambda: detached.detached(gates.sigmoid(), k=2.0), "k"),
    (lambda: gates.make("detached", gate="nope"), "'nope'"),
])
def test_bad_parameters_raise_errors_naming_the_value(build, message):
  with pytest.raises(ValueError, match=message):
    build()
