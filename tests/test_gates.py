"""Gates: autodiff effective weights against closed forms, boundedness, pytree behaviour, errors."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import gates

pytestmark = pytest.mark.usefixtures("x64")


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _by_sign(a, pos, neg):
  return np.where(a >= 0, pos, neg)


# (gate, closed-form w(r, a)) pairs, written independently of rgpo_jax in numpy.
CLOSED_FORMS = {
    "sigmoid_k2": (gates.sigmoid(2.0),
                   lambda r, a: 2.0 * _sig(2.0 * (r - 1)) * (1 - _sig(2.0 * (r - 1))) * r),
    "sigmoid_k8": (gates.sigmoid(8.0),
                   lambda r, a: 8.0 * _sig(8.0 * (r - 1)) * (1 - _sig(8.0 * (r - 1))) * r),
    "pessimistic_sigmoid": (
        gates.pessimistic_sigmoid(4.0),
        lambda r, a: np.where((a >= 0) == (r > 1),
                              4.0 * _sig(4.0 * (r - 1)) * (1 - _sig(4.0 * (r - 1))) * r, r)),
    "sapo": (gates.sapo(1.0, 1.05),
             lambda r, a: 4 * _sig(_by_sign(a, 1.0, 1.05) * (r - 1))
             * (1 - _sig(_by_sign(a, 1.0, 1.05) * (r - 1))) * r),
    "erf": (gates.erf(2.0, tau_neg=3.0),
            lambda r, a: np.exp(-_by_sign(a, 2.0, 3.0) ** 2 * (r - 1) ** 2 / 2) * r),
    "arctan": (gates.arctan(1.5),
               lambda r, a: r / (1 + 1.5 ** 2 * (r - 1) ** 2)),
    "softsign": (gates.softsign(0.7),
                 lambda r, a: r * (1 + 0.7 ** 2 * (r - 1) ** 2) ** -1.5),
    "importance": (gates.importance(), lambda r, a: r),
    "reinforce": (gates.reinforce(), lambda r, a: np.ones_like(r)),
    "ppo_clip": (gates.ppo_clip(0.2),
                 lambda r, a: r * (((a >= 0) & (r < 1.2)) | ((a < 0) & (r > 0.8)))),
    "ppo_clip_asymmetric": (gates.ppo_clip(0.2, epsilon_high=0.28),
                            lambda r, a: r * (((a >= 0) & (r < 1.28)) | ((a < 0) & (r > 0.8)))),
    "truncated": (gates.truncated(0.5, 2.0), lambda r, a: r * ((r > 0.5) & (r < 2.0))),
}

# Ratios avoiding the kinks of the piecewise gates (1 ± ε, band edges), both advantage signs.
RATIOS = np.concatenate([np.linspace(0.013, 3.0, 97), [5.3, 11.0, 47.0]])


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_autodiff_weight_equals_closed_form(name):
  gate, closed_form = CLOSED_FORMS[name]
  for sign in (1.0, -1.0):
    a = np.full_like(RATIOS, sign * 0.7)
    got = np.asarray(gate.weight(jnp.asarray(RATIOS), jnp.asarray(a)))
    np.testing.assert_allclose(got, closed_form(RATIOS, a), rtol=1e-12, atol=1e-14)


def test_sigmoid_gate_value_is_centred_at_one_half():
  assert float(gates.sigmoid(3.0).value(1.0, 1.0)) == pytest.approx(0.5)
  # On-policy weight is k/4, so k = 4 gives the REINFORCE weight 1 at r = 1.
  for k in (1.0, 4.0, 10.0):
    assert float(gates.sigmoid(k).weight(1.0, 1.0)) == pytest.approx(k / 4)


@pytest.mark.parametrize("k,expected_sup", [(1.0, 0.394), (2.0, 0.599), (4.0, 1.058),
                                            (8.0, 2.031), (20.0, 5.013)])
def test_sigmoid_weight_supremum_matches_research_table(k, expected_sup):
  r = jnp.linspace(0.0, 20.0, 2_000_001)
  sup = float(jnp.max(gates.sigmoid(k).weight(r, jnp.ones_like(r))))
  assert sup == pytest.approx(expected_sup, abs=1.5e-3)


SMOOTH = {
    "sigmoid": gates.sigmoid(4.0), "sapo": gates.sapo(), "erf": gates.erf(1.0),
    "arctan": gates.arctan(1.0), "softsign": gates.softsign(1.0),
}


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_gates_have_bounded_weight_up_to_a_million(name):
  gate = SMOOTH[name]
  r = jnp.concatenate([jnp.linspace(0.0, 10.0, 100_001), jnp.logspace(1, 6, 100_001)])
  for sign in (1.0, -1.0):
    w = gate.weight(r, jnp.full_like(r, sign))
    assert bool(jnp.all(jnp.isfinite(w)))
    assert float(jnp.max(w)) < 2.0          # every default smooth gate: sup w ≈ 1
    assert float(w[-1]) < 1.5e-5            # the weight vanishes in the tail (arctan ~ 1/r)
  # while the IS weight is the ratio itself
  assert float(gates.importance().weight(1e6, 1.0)) == pytest.approx(1e6)


def test_custom_gate_weight_by_autodiff():
  gate = gates.custom(lambda r, a: jnp.tanh(r) * jnp.where(a > 0, 1.0, 2.0), name="tanh")
  r = jnp.linspace(0.1, 4.0, 9)
  np.testing.assert_allclose(gate.weight(r, jnp.ones_like(r)), r / np.cosh(r) ** 2, rtol=1e-12)
  np.testing.assert_allclose(gate.weight(r, -jnp.ones_like(r)), 2 * r / np.cosh(r) ** 2,
                             rtol=1e-12)


def test_gate_broadcasts_ratio_against_advantage():
  w = gates.sapo(1.0, 2.0).weight(jnp.array([[0.5], [1.5]]), jnp.array([1.0, -1.0, 2.0]))
  assert w.shape == (2, 3)
  np.testing.assert_allclose(w[:, 0], w[:, 2])


def test_gates_are_pytrees_that_vmap_over_parameters():
  ks = jnp.array([1.0, 2.0, 4.0, 8.0])
  stacked = jax.vmap(lambda k: gates.sigmoid(k))(ks)
  r = jnp.linspace(0.2, 2.0, 5)
  got = jax.vmap(lambda g: g.weight(r, jnp.ones_like(r)))(stacked)
  expected = np.stack([gates.sigmoid(float(k)).weight(r, jnp.ones_like(r)) for k in ks])
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  # jit takes a gate as an argument; the family is static, k is traced (no recompile per k).
  traces = []

  @jax.jit
  def weight_at_two(g):
    traces.append(1)
    return g.weight(2.0, 1.0)

  for k in (1.0, 2.0, 3.0):
    assert float(weight_at_two(gates.sigmoid(k))) == pytest.approx(
        k * _sig(k) * (1 - _sig(k)) * 2.0)
  assert len(traces) == 1


def test_gates_with_constant_parameters_can_be_built_inside_jit():
  # Constants are still validated inside a trace; traced parameters are skipped.
  assert float(jax.jit(lambda: gates.ppo_clip(0.2).weight(1.1, 1.0))()) == pytest.approx(1.1)
  assert float(jax.jit(lambda e: gates.ppo_clip(e).weight(1.3, 1.0))(0.2)) == 0.0
  with pytest.raises(ValueError, match="epsilon must be in"):
    jax.jit(lambda: gates.ppo_clip(2.0).weight(1.1, 1.0))()


def _valid_params(name):
  """Valid non-default parameters for every registered family (numbers only)."""
  return {"sigmoid": dict(k=2.0), "pessimistic_sigmoid": dict(k=8.0), "sapo": dict(tau_pos=2.0),
          "erf": dict(tau=2.0), "arctan": dict(tau=2.0), "softsign": dict(tau=2.0),
          "ppo_clip": dict(epsilon=0.3), "truncated": dict(low=0.25, high=4.0),
          "dual_clip": dict(epsilon=0.3, c=4.0), "dpo_drift": dict(alpha=1.5, beta=0.5),
          "cispo": dict(epsilon=0.3), "cispo_cap": dict(epsilon_max=4.0)}.get(name, {})


def test_every_family_accepts_numpy_scalars_and_refuses_bools_and_strings():
  checked = 0
  for name in sorted(set(gates.FAMILIES) - {"detached"}):  # detached wraps a gate: no numbers
    params = _valid_params(name)
    reference = gates.make(name, **params)
    for key, value in params.items():
      as_numpy = dict(params, **{key: np.float32(value)})
      assert gates.make(name, **as_numpy).params == pytest.approx(reference.params), name
      for bad in (str(value), True):
        with pytest.raises(ValueError, match=rf"must be a number .*got \w+={re.escape(repr(bad))}"):
          gates.make(name, **dict(params, **{key: bad}))
      checked += 1
  assert checked >= 12  # the families with parameters were all covered


def test_make_builds_by_name_and_rejects_unknown_names():
  assert gates.make("sigmoid", k=2.0).params["k"] == 2.0
  with pytest.raises(ValueError, match=r"unknown gate 'sigmiod'.*allowed: arctan"):
    gates.make("sigmiod")
  with pytest.raises(ValueError, match=r"'sigmoid' got unexpected parameters \['tau'\]"):
    gates.make("sigmoid", tau=1.0)


@pytest.mark.parametrize("build,message", [
    (lambda: gates.sigmoid(0.0), "sigmoid gate: k must be > 0 (finite), got k=0.0"),
    (lambda: gates.sigmoid(-2), "k must be > 0 (finite), got k=-2"),
    (lambda: gates.sigmoid(math.inf), "got k=inf"),
    (lambda: gates.sapo(tau_neg=-1.0), "sapo gate: tau_neg must be > 0"),
    (lambda: gates.erf(0.0), "erf gate: tau_pos must be > 0"),
    (lambda: gates.arctan(1.0, tau_neg=0.0), "arctan gate: tau_neg must be > 0"),
    (lambda: gates.softsign(-1.0), "softsign gate: tau_pos must be > 0"),
    (lambda: gates.ppo_clip(1.5), r"ppo_clip gate: epsilon must be in (0, 1), got epsilon=1.5"),
    (lambda: gates.ppo_clip(0.2, epsilon_high=0.0), "epsilon_high must be > 0"),
    (lambda: gates.truncated(2.0, 1.0), "truncated gate: low must be < high, got low=2.0, high=1.0"),
    (lambda: gates.truncated(-1.0, 1.0), "low must be >= 0, got low=-1.0"),
    (lambda: gates.sigmoid("big"), "k must be a number"),
    (lambda: gates.custom(3), "custom gate: fn must be callable, got 3"),
    # Python would convert these ("4" → 4.0, True → 1.0); a gate refuses them.
    (lambda: gates.sigmoid("4"), "sigmoid gate: k must be a number > 0 (finite), got k='4' (str)"),
    (lambda: gates.sigmoid(True), "sigmoid gate: k must be a number > 0 (finite), got k=True (bool)"),
    (lambda: gates.ppo_clip(np.bool_(False)), "ppo_clip gate: epsilon must be a number in (0, 1)"),
    (lambda: gates.erf("1.0"), "erf gate: tau_pos must be a number > 0 (finite), got tau_pos='1.0'"),
    (lambda: gates.truncated(0.5, "2"), "truncated gate: high must be a number > 0"),
    (lambda: gates.sigmoid(float("nan")), "got k=nan"),
])
def test_bad_parameters_raise_errors_naming_the_value(build, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    build()
