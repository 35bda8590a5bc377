"""Rollout–trainer mismatch correction: weights and diagnostics against numpy, masks, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import correction, gates

pytestmark = pytest.mark.usefixtures("x64")

MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], bool)


def _logps(seed=0, scale=0.6):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.0, 0.5, MASK.shape)
  return old, old - rng.normal(0.0, scale, MASK.shape)


def _kish(w):
  return w.mean() ** 2 / (w ** 2).mean()


@pytest.mark.parametrize("mode", ["truncate", "mask", "reject", "gate"])
def test_token_level_weights_and_diagnostics(mode):
  old, rollout = _logps()
  rho = np.exp(old - rollout)
  gate = gates.sigmoid(4.0)
  kw = dict(truncate=dict(cap=1.5), mask=dict(low=0.6, high=1.5), reject=dict(low=0.6, high=1.5),
            gate=dict(gate=gate))[mode]
  sig = 1 / (1 + np.exp(-4 * (rho - 1)))
  expected, corrected = {
      "truncate": (np.minimum(rho, 1.5), rho > 1.5),
      "mask": (np.where((rho >= 0.6) & (rho <= 1.5), rho, 0.0), (rho < 0.6) | (rho > 1.5)),
      "reject": (((rho >= 0.6) & (rho <= 1.5)).astype(float), (rho < 0.6) | (rho > 1.5)),
      "gate": (4 * sig * (1 - sig) * rho, 4 * sig * (1 - sig) < 0.5),
  }[mode]
  assert 0 < corrected[MASK].mean() < 1
  weights, aux = correction.correction_weights(old, rollout, MASK, mode=mode, **kw)
  np.testing.assert_allclose(weights, np.where(MASK, expected, 0.0), rtol=1e-12, atol=1e-15)
  assert float(aux.effective_sample_size) == pytest.approx(_kish(expected[MASK]), rel=1e-12)
  assert float(aux.fraction_corrected) == pytest.approx(corrected[MASK].mean(), rel=1e-12)
  assert float(aux.ratio_mean) == pytest.approx(rho[MASK].mean(), rel=1e-12)
  assert float(aux.ratio_max) == pytest.approx(rho[MASK].max(), rel=1e-12)


def test_sequence_level_uses_the_product_of_token_ratios():
  old, rollout = _logps(scale=0.3)
  rho_seq = np.array([np.exp((old[i] - rollout[i])[MASK[i]].sum()) for i in range(len(MASK))])
  weights, aux = correction.correction_weights(old, rollout, MASK, level="sequence", cap=1.2)
  expected = np.minimum(rho_seq, 1.2)
  np.testing.assert_allclose(weights, np.where(MASK, expected[:, None], 0.0), rtol=1e-12)
  units = MASK.any(-1)  # the all-padding row is not a unit
  assert float(aux.effective_sample_size) == pytest.approx(_kish(expected[units]), rel=1e-12)
  assert float(aux.fraction_corrected) == pytest.approx((rho_seq[units] > 1.2).mean())


def test_weights_are_detached_and_padding_is_inert():
  old, rollout = _logps()
  bad_old, bad_rollout = old.copy(), rollout.copy()
  bad_old[~MASK], bad_rollout[~MASK] = np.nan, -np.inf

  def f(o):
    w, _ = correction.correction_weights(o, bad_rollout, MASK, mode="mask", level="sequence")
    return jnp.sum(w * o)  # gradient = w exactly if the weight itself carries no gradient

  grad = jax.grad(lambda o: f(jnp.where(MASK, o, 0.0)))(bad_old)
  w, _ = correction.correction_weights(old, rollout, MASK, mode="mask", level="sequence")
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, w, rtol=1e-13)
  w_jit, aux = jax.jit(lambda o, r: correction.correction_weights(o, r, MASK))(bad_old, bad_rollout)
  assert np.all(np.isfinite(w_jit)) and np.isfinite(float(aux.effective_sample_size))


def test_equal_weights_have_full_effective_sample_size():
  old, _ = _logps()
  _, aux = correction.correction_weights(old, old, MASK)
  assert float(aux.effective_sample_size) == pytest.approx(1.0)
  assert float(aux.fraction_corrected) == 0.0


@pytest.mark.parametrize("kwargs,message", [
    (dict(cap=-1.0), "cap=-1.0"),
    (dict(cap=0.0), "cap=0.0"),
    (dict(mode="mask", low=-0.1), "low=-0.1"),
    (dict(mode="reject", low=2.0, high=1.5), "low, high = 2.0, 1.5"),
    (dict(mode="clip"), "mode='clip'"),
    (dict(level="batch"), "level='batch'"),
    (dict(mode="gate"), "gate=None"),
])
def test_bad_input_errors_name_the_value(kwargs, message):
  old, rollout = _logps()
  with pytest.raises(ValueError, match=message):
    correction.correction_weights(old, rollout, MASK, **kwargs)
