"""Property-based tests (hypothesis): every registered gate family in `policy_loss` and as the
old-policy gate of `dual_ratio_policy_loss`, over random token layouts, masks, parameters,
log-ratios up to ±1e4, and NaN/±inf padding, in float64:

    ∂L/∂log π_i = −w(r_i)·Â_i / N   on valid entries (r clamped as `losses.clamped_ratio`:
                                    r = exp(clip(log r, ±20)), w at the clamped ratio),
    ∂L/∂log π_i = 0                 on padding,

with N the number of valid entries (token_mean) or, for sequence_mean, (valid sequences) ×
(valid tokens of entry i's sequence). The loss value and the max/mean diagnostics are checked
against the same numpy reference over the valid entries.

Compile budget: one jitted program per (layout, reduction) evaluates every family at once (gate
parameters are traced pytree leaves, so new parameters do not recompile); the derandomized "ci"
profile of tests/conftest.py keeps the file well under a minute.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from rgpo_jax import gates, losses  # noqa: E402

# Layouts (one compile each): a flat batch of tokens, [sequences, tokens], and for the per-sequence
# mean [batch, sequences, tokens].
LAYOUTS = {"token_mean": ((12,), (3, 5)), "sequence_mean": ((2, 2, 4),)}
REDUCTIONS = tuple(LAYOUTS)
GARBAGE = (math.nan, math.inf, -math.inf, 1e300, -1e300)
CLAMP = losses.DEFAULT_MAX_LOG_RATIO


def _pos(low, high):
  return st.floats(low, high, allow_nan=False, allow_subnormal=False)


def _eps():
  return st.floats(0.01, 0.99, allow_subnormal=False)


def _two_temperatures(first):
  return st.fixed_dictionaries({first: _pos(0.05, 20.0), "tau_neg": _pos(0.05, 20.0)})


def _truncated_params():
  return st.tuples(_pos(0.0, 1.5), _pos(0.01, 5.0)).map(
      lambda lh: {"low": lh[0], "high": lh[0] + lh[1]})


# Valid parameters of every registered family. A new family must be added here (the test below
# fails otherwise), so the property covers everything `gates.make` can build.
FAMILY_PARAMS = {
    "sigmoid": st.fixed_dictionaries({"k": _pos(0.1, 50.0)}),
    "pessimistic_sigmoid": st.fixed_dictionaries({"k": _pos(0.1, 50.0)}),
    "sapo": _two_temperatures("tau_pos"),
    "erf": _two_temperatures("tau"),
    "arctan": _two_temperatures("tau"),
    "softsign": _two_temperatures("tau"),
    "importance": st.just({}),
    "reinforce": st.just({}),
    "ppo_clip": st.fixed_dictionaries({"epsilon": _eps(), "epsilon_high": _pos(0.01, 5.0)}),
    "dual_clip": st.fixed_dictionaries({"epsilon": _eps(), "epsilon_high": _pos(0.01, 5.0),
                                        "c": _pos(1.01, 10.0)}),
    "dpo_drift": st.fixed_dictionaries({"alpha": _pos(0.05, 10.0), "beta": _pos(0.05, 10.0)}),
    "truncated": _truncated_params(),
    "cispo": st.fixed_dictionaries({"epsilon": _eps(), "epsilon_high": _pos(0.01, 5.0)}),
    "cispo_cap": st.fixed_dictionaries({"epsilon_max": _pos(0.1, 10.0)}),
    "detached": st.fixed_dictionaries({"gate": st.just("sigmoid"), "k": _pos(0.1, 50.0)}),
}
FAMILIES = tuple(sorted(FAMILY_PARAMS))


def test_every_registered_family_has_a_parameter_strategy():
  missing = sorted(set(gates.FAMILIES) - set(FAMILY_PARAMS))
  assert not missing, f"add valid-parameter strategies for {missing} to FAMILY_PARAMS"


@st.composite
def gate_sets(draw):
  """One gate of every family with drawn valid parameters, and a sigmoid reference gate."""
  params = {name: draw(FAMILY_PARAMS[name]) for name in FAMILIES}
  return tuple(gates.make(name, **params[name]) for name in FAMILIES), draw(_pos(0.1, 20.0))


@st.composite
def batches(draw, reduction):
  """(layout, mask, log_prob, behaviour, reference log-probs, advantage), padding = garbage."""
  shape = draw(st.sampled_from(LAYOUTS[reduction]))
  n = math.prod(shape)
  floats = lambda lo, hi: st.lists(st.floats(lo, hi, allow_nan=False, allow_subnormal=False),
                                   min_size=n, max_size=n)
  mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
  log_ratio = np.array(draw(floats(-1e4, 1e4)))
  ref_log_ratio = np.array(draw(floats(-1e4, 1e4)))
  behavior = np.array(draw(floats(-30.0, 0.0)))
  advantage = np.array(draw(floats(-10.0, 10.0)))
  garbage = lambda: np.array(draw(st.lists(st.sampled_from(GARBAGE), min_size=n, max_size=n)))
  pad = lambda x: np.where(mask, x, garbage()).reshape(shape)
  log_prob = behavior + log_ratio
  return (shape, mask.reshape(shape), pad(log_prob), pad(behavior),
          pad(log_prob - ref_log_ratio), pad(advantage))


@functools.partial(jax.jit, static_argnames="reduction")
def _losses_and_grads(gate_set, k_ref, log_prob, behavior, ref, advantage, mask, reduction):
  """policy_loss (every family) and dual_ratio_policy_loss (every family as gate_old, a sigmoid
  as gate_ref): values, aux and gradients, in one program."""
  out = []
  for gate in gate_set:
    single = jax.value_and_grad(
        lambda x: losses.policy_loss(gate, x, behavior, advantage, mask, reduction=reduction),
        has_aux=True)(log_prob)
    dual = jax.value_and_grad(
        lambda x: losses.dual_ratio_policy_loss(gate, gates.sigmoid(k_ref), x, behavior, ref,
                                                advantage, mask, reduction=reduction),
        has_aux=True)(log_prob)
    out.append((single, dual))
  return out


@jax.jit
def _gate_values_and_weights(gate_set, k_ref, ratio, ref_ratio, advantage):
  """g(r) and w(r) of every gate, and g_ref, w_ref, g_ref(1) for the dual loss (references)."""
  ref = gates.sigmoid(k_ref)
  per_gate = [(g.value(ratio, advantage), g.weight(ratio, advantage)) for g in gate_set]
  return per_gate, (ref.value(ref_ratio, advantage), ref.weight(ref_ratio, advantage),
                    ref.value(jnp.ones_like(ratio), advantage))


def _denominator(mask, reduction):
  """N_i of ∂L/∂log π_i = −w·Â/N_i for each entry (inf on padding)."""
  if reduction == "token_mean":
    return np.where(mask, max(mask.sum(), 1), np.inf)
  tokens = mask.sum(axis=-1, keepdims=True)
  sequences = max(int((tokens > 0).sum()), 1)
  return np.where(mask, sequences * np.maximum(tokens, 1), np.inf)


def _clamped(x):
  return np.exp(np.clip(x, -CLAMP, CLAMP))


def _check(name, loss, aux, grad, weight, value, advantage, mask, reduction, magnitude):
  """Gradient, loss and diagnostics of one gate against the references. `magnitude` bounds the
  terms that autodiff adds up per entry (|g| + |w| + 1 for a single gate): float64 rounding is
  relative to those, not to the result (e.g. softsign's g' = (1+τ²x²)^(−3/2) at r = e^20 is the
  difference of two terms ~1/(τx) apart by 1e−17 of their size)."""
  denominator = _denominator(mask, reduction)
  expected_grad = np.where(mask, -weight * advantage / denominator, 0.0)
  tolerance = 1e-12 * magnitude * np.abs(advantage) / denominator
  assert np.all(np.isfinite(grad)), f"{name}: non-finite gradient"
  assert np.all(grad[~mask] == 0.0), f"{name}: gradient on padding"
  np.testing.assert_array_less(np.abs(grad - expected_grad),
                               1e-9 * np.abs(expected_grad) + tolerance + 1e-300,
                               err_msg=f"{name}: gradient != -w(r)·Â/N")
  expected_loss = -np.sum(np.where(mask, value * advantage / denominator, 0.0))
  assert abs(float(loss) - expected_loss) <= 1e-9 * abs(expected_loss) + np.sum(tolerance), (
      f"{name}: loss {float(loss)} != {expected_loss}")
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(aux)), f"{name}: non-finite aux"


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data())
def test_gradient_is_minus_weight_times_advantage_over_n_and_zero_on_padding(reduction, data):
  with jax.enable_x64(True):
    gate_set, k_ref = data.draw(gate_sets(), "gates")
    shape, mask, log_prob, behavior, ref, advantage = data.draw(batches(reduction), "batch")
    results = _losses_and_grads(gate_set, k_ref, *map(jnp.asarray, (
        log_prob, behavior, ref, advantage, mask)), reduction=reduction)
    # References at the clamped ratios, computed on safe inputs (padding: r = 1, Â = 0).
    safe = lambda x, fill: np.where(mask, x, fill)
    adv = safe(advantage, 0.0)
    ratio = _clamped(safe(log_prob, 0.0) - safe(behavior, 0.0))
    ref_ratio = _clamped(safe(log_prob, 0.0) - safe(ref, 0.0))
    per_gate, (g_ref, w_ref, g_ref_1) = jax.tree.map(np.asarray, _gate_values_and_weights(
        gate_set, k_ref, ratio, ref_ratio, adv))
    for gate, ((g, w), (single, dual)) in zip(gate_set, zip(per_gate, results)):
      (loss, aux), grad = jax.tree.map(np.asarray, single)
      _check(gate.name, loss, aux, grad, w, g, adv, mask, reduction, np.abs(g) + np.abs(w) + 1)
      if reduction == "token_mean" and mask.any():
        assert float(aux.ratio_max) == pytest.approx(ratio[mask].max(), rel=1e-12)
        assert float(aux.weight_max) == pytest.approx(w[mask].max(), rel=1e-9, abs=1e-12)
        assert float(aux.gate_mean) == pytest.approx(g[mask].mean(), rel=1e-9, abs=1e-12)
      (loss, aux), grad = jax.tree.map(np.asarray, dual)
      dual_weight = (w * g_ref + g * w_ref) / g_ref_1
      magnitude = (np.abs(g) + np.abs(w) + 1) * (np.abs(g_ref) + np.abs(w_ref) + 1) / g_ref_1
      _check(f"dual[{gate.name}]", loss, aux, grad, dual_weight, g * g_ref / g_ref_1, adv, mask,
             reduction, magnitude)
