"""Loss aggregation modes: numpy closed forms, gradient accumulation, data-parallel axis, masks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import aggregation

pytestmark = pytest.mark.usefixtures("x64")

# 4 sequences of 6 tokens with 6, 2, 0 and 4 valid tokens (one all-masked row).
LENGTHS = np.array([6, 2, 0, 4])
MASK = np.arange(6)[None, :] < LENGTHS[:, None]
LOSS = np.random.default_rng(0).normal(size=MASK.shape)


def _coefficients(mode, mask=MASK, max_length=None):
  """∂L/∂ℓ_{i,t} written out per mode, by loops (the value is Σ coef·ℓ: every mode is linear)."""
  rows, length = mask.shape
  tokens = mask.sum()
  nonempty = sum(mask[i].any() for i in range(rows))
  coef = np.zeros(mask.shape)
  for i in range(rows):
    n_i = mask[i].sum()
    for t in range(length):
      if not mask[i, t]:
        continue
      coef[i, t] = {
          "token-mean": 1 / tokens,
          "token-sum": 1.0,
          "seq-mean-token-sum": 1 / nonempty,
          "seq-mean-token-mean": 1 / (nonempty * n_i),
          "seq-mean-token-sum-norm": 1 / (rows * (max_length or length)),
      }[mode]
  return coef


@pytest.mark.parametrize("mode", aggregation.MODES)
def test_value_and_gradient_match_closed_form(mode):
  coef = _coefficients(mode)
  f = lambda x: aggregation.aggregate(x, MASK, mode)
  assert float(f(LOSS)) == pytest.approx(float((coef * LOSS).sum()), rel=1e-13)
  np.testing.assert_allclose(jax.grad(f)(LOSS), coef, rtol=1e-13, atol=0)
  np.testing.assert_allclose(jax.jit(jax.grad(f))(LOSS), coef, rtol=1e-13, atol=0)


def test_dr_grpo_constant_normaliser_is_configurable():
  coef = _coefficients("seq-mean-token-sum-norm", max_length=10)
  got = aggregation.aggregate(LOSS, MASK, "seq-mean-token-sum-norm", max_length=10)
  assert float(got) == pytest.approx(float((coef * LOSS).sum()), rel=1e-13)


def test_old_reduction_names_map_onto_modes():
  for old, new in (("token_mean", "token-mean"), ("sequence_mean", "seq-mean-token-mean"),
                   ("seq_mean_token_sum", "seq-mean-token-sum")):
    assert float(aggregation.aggregate(LOSS, MASK, old)) == float(
        aggregation.aggregate(LOSS, MASK, new))


@pytest.mark.parametrize("mode", aggregation.MODES)
def test_gradient_accumulation_with_global_counts_equals_the_full_batch(mode):
  full = aggregation.aggregate(LOSS, MASK, mode)
  counts = dict(num_tokens=MASK.sum(), num_sequences=(
      MASK.shape[0] if mode == "seq-mean-token-sum-norm" else MASK.any(-1).sum()))
  kw = {"token-mean": dict(num_tokens=counts["num_tokens"]), "token-sum": {}}.get(
      mode, dict(num_sequences=counts["num_sequences"]))
  micro = [aggregation.aggregate(LOSS[s], MASK[s], mode, **kw) for s in (slice(0, 2), slice(2, 4))]
  assert float(sum(micro)) == pytest.approx(float(full), rel=1e-13)
  if mode == "token-mean":  # and the naive mean of micro-batch means is a different objective
    naive = np.mean([aggregation.aggregate(LOSS[s], MASK[s]) for s in (slice(0, 2), slice(2, 4))])
    assert abs(float(naive) - float(full)) > 1e-3


@pytest.mark.parametrize("mode", aggregation.MODES)
def test_axis_name_mean_over_shards_equals_the_global_batch(mode):
  shards = (LOSS.reshape(2, 2, 6), MASK.reshape(2, 2, 6))
  per_shard = jax.vmap(functools.partial(aggregation.aggregate, mode=mode, axis_name="dp"),
                       axis_name="dp")(*shards)
  assert float(jnp.mean(per_shard)) == pytest.approx(
      float(aggregation.aggregate(LOSS, MASK, mode)), rel=1e-13)


@pytest.mark.parametrize("mode", aggregation.MODES)
def test_masked_nan_and_inf_are_inert(mode):
  bad = LOSS.copy()
  bad[~MASK] = np.where(np.arange((~MASK).sum()) % 2, np.nan, np.inf)
  f = lambda x: aggregation.aggregate(x, MASK, mode)
  for fun in (jax.value_and_grad(f), jax.jit(jax.value_and_grad(f))):
    value, grad = fun(bad)
    assert float(value) == pytest.approx(float(f(LOSS)), rel=1e-13)
    np.testing.assert_allclose(grad, _coefficients(mode), rtol=1e-13, atol=0)


def test_all_masked_gives_zero():
  assert float(aggregation.aggregate(LOSS, np.zeros_like(MASK), "token-mean")) == 0.0
  assert float(aggregation.aggregate(LOSS, np.zeros_like(MASK), "seq-mean-token-mean")) == 0.0


def test_bad_input_errors_name_the_value():
  with pytest.raises(ValueError, match="mode='token-median'"):
    aggregation.aggregate(LOSS, MASK, "token-median")
  with pytest.raises(ValueError, match=r"mask\(6,\)"):
    aggregation.aggregate(LOSS, MASK[0])
  with pytest.raises(ValueError, match="num_tokens=0"):
    aggregation.aggregate(LOSS, MASK, num_tokens=0)
  with pytest.raises(ValueError, match="max_length=-3"):
    aggregation.aggregate(LOSS, MASK, "seq-mean-token-sum-norm", max_length=-3)
