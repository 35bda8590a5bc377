"""KL estimators, k3+, in-reward penalty and the adaptive controller against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import kl, losses

pytestmark = pytest.mark.usefixtures("x64")

RNG = np.random.default_rng(0)
LP = RNG.normal(-1.0, 0.6, (3, 5))
REF = LP + RNG.normal(0.0, 0.4, (3, 5))
MASK = np.arange(5)[None] < np.array([[5], [2], [4]])


@pytest.mark.parametrize("estimator,value,grad", [
    ("k1", lambda d: d, lambda d: np.ones_like(d)),                 # d = log π − log π_ref
    ("k2", lambda d: 0.5 * d ** 2, lambda d: d),
    ("k3", lambda d: np.exp(-d) - 1 + d, lambda d: 1 - np.exp(-d)),
    ("k3+", lambda d: np.exp(-d) - 1 + d, lambda d: d),             # k3 value, k2 gradient
    ("k1+", lambda d: d, lambda d: d),
])
def test_kl_penalty_value_and_gradient(estimator, value, grad):
  d = LP - REF
  f = lambda x: kl.kl_penalty(x, REF, estimator, MASK)
  np.testing.assert_allclose(f(LP), np.where(MASK, value(d), 0.0), rtol=1e-12, atol=1e-15)
  g = jax.grad(lambda x: jnp.sum(f(x)))(LP)
  np.testing.assert_allclose(g, np.where(MASK, grad(d), 0.0), rtol=1e-12, atol=1e-15)


def test_clamp_bounds_the_estimate():
  far = LP - 30.0  # π_ref ≪ π_θ: k3 ≈ 30
  out = kl.kl_penalty(LP, far, "k3", clamp=10.0)
  np.testing.assert_allclose(out, 10.0)
  assert np.all(np.asarray(jax.grad(lambda x: jnp.sum(kl.kl_penalty(x, far, "k3", clamp=10.0)))(LP)) == 0)


def test_padding_nan_is_inert():
  bad = LP.copy()
  bad[~MASK] = np.nan
  g = jax.grad(lambda x: jnp.sum(kl.kl_penalty(x, REF, "k3+", MASK)))(bad)
  assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~MASK] == 0)


def test_losses_estimators_are_the_kl_module_ones():
  for name in ("kl_k1", "kl_k2", "kl_k3", "kl_k3_from_log_ratio"):
    assert getattr(losses, name) is getattr(kl, name)


def test_kl_in_reward_subtracts_detached_k1():
  rewards = np.zeros(LP.shape)
  rewards[:, -1] = 1.0
  out = kl.kl_in_reward(rewards, LP, REF, 0.1, MASK)
  np.testing.assert_allclose(out, rewards - 0.1 * np.where(MASK, LP - REF, 0.0), rtol=1e-13)
  g = jax.grad(lambda x: jnp.sum(kl.kl_in_reward(rewards, x, REF, 0.1, MASK)))(LP)
  assert np.all(np.asarray(g) == 0)


def test_adaptive_controller_follows_ziegler_update_and_scans():
  # β ← β(1 + clip(KL/target − 1, ±0.2)·n/horizon), written out in Python.
  kls = [0.01, 0.2, 0.06, 0.0]
  beta, expected = 0.1, []
  for x in kls:
    beta *= 1 + np.clip(x / 0.05 - 1, -0.2, 0.2) * 256 / 10_000
    expected.append(beta)
  step = lambda s, x: (kl.adaptive_kl_update(s, x, 256, target=0.05, horizon=10_000),) * 2
  _, states = jax.lax.scan(step, kl.adaptive_kl_init(0.1), jnp.asarray(kls))
  np.testing.assert_allclose(states.coef, expected, rtol=1e-13)


def test_adaptive_controller_error_band_is_configurable():
  # The gate width's asymmetric band: an overshoot of 35× moves by +100%, an undershoot by −20%.
  up = kl.adaptive_kl_update(kl.adaptive_kl_init(2.0), 0.72, 1, target=0.02, horizon=1.0,
                             error_clip=(-0.2, 1.0))
  down = kl.adaptive_kl_update(kl.adaptive_kl_init(2.0), 0.0, 1, target=0.02, horizon=1.0,
                               error_clip=(-0.2, 1.0))
  mid = kl.adaptive_kl_update(kl.adaptive_kl_init(2.0), 0.03, 1, target=0.02, horizon=1.0,
                              error_clip=(-0.2, 1.0))
  assert float(up.coef) == pytest.approx(4.0, rel=1e-12)
  assert float(down.coef) == pytest.approx(1.6, rel=1e-12)
  assert float(mid.coef) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("build,message", [
    (lambda: kl.kl_penalty(LP, REF, "k4"), "estimator='k4'"),
    (lambda: kl.kl_penalty(LP, REF, clamp=-1.0), "clamp=-1.0"),
    (lambda: kl.kl_in_reward(LP, LP, REF, -0.1), "coef=-0.1"),
    (lambda: kl.adaptive_kl_init(-1.0), "init_coef=-1.0"),
    (lambda: kl.adaptive_kl_update(kl.adaptive_kl_init(0.1), 0.1, 1, target=0.0, horizon=1.0),
     "target=0.0"),
    (lambda: kl.adaptive_kl_update(kl.adaptive_kl_init(0.1), 0.1, 1, target=0.1, horizon=1.0,
                                   error_clip=(-1.0, 0.2)), r"error_clip=\(-1.0, 0.2\)"),
    (lambda: kl.kl_penalty(LP, REF[0]), r"ref_log_prob\(5,\)"),
    # Strings and bools are not numbers, although float() would take them.
    (lambda: kl.kl_penalty(LP, REF, clamp="3"), "clamp='3'"),
    (lambda: kl.kl_in_reward(LP, LP, REF, True), "coef=True"),
    (lambda: kl.adaptive_kl_update(kl.adaptive_kl_init(0.1), 0.1, 1, target="0.1", horizon=1.0),
     "target='0.1'"),
])
def test_bad_input_errors_name_the_value(build, message):
  with pytest.raises(ValueError, match=message):
    build()
