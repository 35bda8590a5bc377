"""Advantages: GAE against a plain loop, group estimators and Pass@K against brute force."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import advantages

pytestmark = pytest.mark.usefixtures("x64")


def _gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam):
  T, B = rewards.shape
  adv = np.zeros((T, B))
  for b in range(B):
    running = 0.0
    for t in reversed(range(T)):
      delta = rewards[t, b] + gamma * (1 - terminated[t, b]) * next_values[t, b] - values[t, b]
      if terminated[t, b] or truncated[t, b]:
        running = 0.0
      running = delta + gamma * lam * running
      adv[t, b] = running
  return adv


def test_gae_equals_plain_loop_with_terminations_and_truncations():
  rng = np.random.default_rng(0)
  T, B = 13, 3
  rewards, values, next_values = (rng.normal(size=(T, B)) for _ in range(3))
  terminated = rng.random((T, B)) < 0.15
  truncated = (rng.random((T, B)) < 0.15) & ~terminated
  adv, ret = advantages.gae(*map(jnp.asarray, (rewards, values, next_values, terminated,
                                               truncated)), gamma=0.97, lambda_=0.9)
  expected = _gae_loop(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
  np.testing.assert_allclose(adv, expected, rtol=1e-12)
  np.testing.assert_allclose(ret, expected + values, rtol=1e-12)


def test_truncated_step_bootstraps_from_final_observation_value_and_terminated_does_not():
  # One env, 2 steps: step 0 ends the episode; V(final obs) = 10.
  rewards = jnp.array([[1.0], [1.0]])
  values = jnp.array([[0.0], [0.0]])
  next_values = jnp.array([[10.0], [5.0]])
  kw = dict(gamma=0.5, lambda_=1.0)
  no = jnp.zeros((2, 1), bool)
  ends = jnp.array([[True], [False]])
  adv_trunc, _ = advantages.gae(rewards, values, next_values, no, ends, **kw)
  adv_term, _ = advantages.gae(rewards, values, next_values, ends, no, **kw)
  assert float(adv_trunc[0, 0]) == pytest.approx(1.0 + 0.5 * 10.0)   # bootstraps, trace cut
  assert float(adv_term[0, 0]) == pytest.approx(1.0)                # no bootstrap
  assert float(adv_trunc[1, 0]) == pytest.approx(1.0 + 0.5 * 5.0)


def test_gae_vmaps_and_jits():
  rng = np.random.default_rng(1)
  x = [jnp.asarray(rng.normal(size=(4, 5, 2))) for _ in range(3)]
  flags = jnp.zeros((4, 5, 2), bool)
  f = jax.jit(jax.vmap(lambda r, v, nv: advantages.gae(r, v, nv, flags[0], flags[0])[0]))
  out = f(*x)
  for i in range(4):
    ref, _ = advantages.gae(x[0][i], x[1][i], x[2][i], flags[0], flags[0])
    np.testing.assert_allclose(out[i], ref, rtol=1e-12)


def test_normalize_has_zero_mean_unit_std_over_valid_entries():
  a = jnp.array([1.0, 2.0, 3.0, 100.0])
  out = advantages.normalize(a, jnp.array([True, True, True, False]))
  np.testing.assert_allclose(out[:3], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
  # NaN/inf padding is inert (value and gradient); padded outputs are 0; 0/1 masks work.
  padded = a.at[3].set(jnp.nan)
  for mask in (jnp.array([True, True, True, False]), np.array([1, 1, 1, 0])):
    out = advantages.normalize(padded, mask)
    np.testing.assert_allclose(out, [-np.sqrt(1.5), 0.0, np.sqrt(1.5), 0.0], rtol=1e-6)
  grad = jax.grad(lambda x: advantages.normalize(x, mask)[0])(padded)
  assert np.all(np.isfinite(grad)) and float(grad[3]) == 0.0
  with pytest.raises(ValueError, match=re.escape("normalize: mask must be boolean or 0/1 (it "
                                                 "selects entries, it is not a weight), got mask "
                                                 "values [0.5]")):
    advantages.normalize(a, jnp.array([1.0, 0.5, 1.0, 1.0]))


def test_gae_promotes_integer_and_mixed_precision_inputs_to_one_float_dtype():
  T, B = 5, 2
  rng = np.random.default_rng(4)
  rewards = rng.normal(size=(T, B))
  values = rng.integers(-3, 3, (T, B))
  next_values = rng.integers(-3, 3, (T, B))
  terminated = np.zeros((T, B))
  truncated = (rng.random((T, B)) < 0.3).astype(np.int32)   # 0/1 numbers work as flags
  expected = _gae_loop(rewards, values, next_values, terminated.astype(bool),
                       truncated.astype(bool), 0.9, 0.8)
  adv, ret = advantages.gae(rewards, values, next_values, terminated, truncated, 0.9, 0.8)
  assert adv.dtype == ret.dtype == jnp.float64
  np.testing.assert_allclose(adv, expected, rtol=1e-12)
  # float64 rewards with float32 values: float64 out; integer rewards and values: a float out.
  adv, _ = advantages.gae(rewards, values.astype(np.float32), next_values.astype(np.float32),
                          terminated, truncated, 0.9, 0.8)
  assert adv.dtype == jnp.float64
  np.testing.assert_allclose(adv, expected, rtol=1e-6)
  adv, _ = advantages.gae(values, values, next_values, terminated, truncated, 0.9, 0.8)
  assert jnp.issubdtype(adv.dtype, jnp.floating)
  with jax.enable_x64(False):
    adv, _ = advantages.gae(jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.int32),
                            jnp.asarray(next_values, jnp.int32), terminated, truncated, 0.9, 0.8)
    assert adv.dtype == jnp.float32
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)


def test_numpy_integers_are_accepted_where_ints_are():
  rewards = jnp.asarray([[1.0, 0.0, 0.0, 1.0, 0.0]])
  for k in (np.int64(2), np.uint8(2)):
    np.testing.assert_array_equal(advantages.pass_at_k_advantages(rewards, k=k),
                                  advantages.pass_at_k_advantages(rewards, k=2))
    np.testing.assert_array_equal(advantages.surrogate_advantages(rewards, "pass_at_k", k=k),
                                  advantages.surrogate_advantages(rewards, "pass_at_k", k=2))
  np.testing.assert_array_equal(advantages.grpo_advantages(rewards, ddof=np.int64(0)),
                                advantages.grpo_advantages(rewards, ddof=0))


def test_group_relative_advantages_against_plain_formulas():
  r = np.array([[1.0, 0.0, 0.5, 0.25], [2.0, 2.0, 2.0, 4.0]])
  for g in range(2):
    row = r[g]
    grpo = (row - row.mean()) / (row.std(ddof=1) + 1e-6)  # sample std, as verl/TRL/tunix
    rloo = [row[i] - np.mean(np.delete(row, i)) for i in range(4)]
    np.testing.assert_allclose(advantages.grpo_advantages(jnp.asarray(r))[g], grpo, rtol=1e-12)
    population = advantages.grpo_advantages(jnp.asarray(r), eps=0.0, ddof=0)[g]
    np.testing.assert_allclose(population, (row - row.mean()) / row.std(), rtol=1e-12)
    np.testing.assert_allclose(population / advantages.grpo_advantages(jnp.asarray(r), eps=0.0)[g],
                               np.sqrt(4 / 3), rtol=1e-12)  # the √(N/(N−1)) factor at N = 4
    np.testing.assert_allclose(advantages.dr_grpo_advantages(jnp.asarray(r))[g], row - row.mean())
    np.testing.assert_allclose(advantages.rloo_advantages(jnp.asarray(r))[g], rloo, rtol=1e-12)


def _pass_at_k_brute_force(rewards, k):
  n = len(rewards)
  subsets = list(itertools.combinations(range(n), k))
  group_reward = np.array([max(rewards[i] for i in s) for s in subsets])
  mean, std = group_reward.mean(), group_reward.std()
  if std == 0:
    return np.zeros(n)
  norm = (group_reward - mean) / std
  return np.array([np.mean([norm[j] for j, s in enumerate(subsets) if i in s]) for i in range(n)])


@pytest.mark.parametrize("n,k", [(6, 1), (6, 2), (6, 3), (8, 4), (7, 7)])
def test_pass_at_k_advantages_equal_subset_enumeration(n, k):
  rng = np.random.default_rng(n * 10 + k)
  groups = [rng.integers(0, 2, n).astype(float) for _ in range(5)]
  groups += [np.zeros(n), np.ones(n), np.eye(1, n, 0)[0]]
  got = advantages.pass_at_k_advantages(jnp.asarray(np.stack(groups)), k, eps=0.0)
  for g, rewards in enumerate(groups):
    np.testing.assert_allclose(got[g], _pass_at_k_brute_force(rewards, k), rtol=1e-9, atol=1e-12)


def test_surrogate_advantages_recover_dr_grpo_and_grpo():
  r = jnp.asarray(np.array([[1, 0, 0, 1, 0, 0, 0, 0], [1, 1, 1, 0, 1, 1, 1, 1],
                            [0, 0, 0, 0, 0, 0, 0, 0]], float))
  np.testing.assert_allclose(advantages.surrogate_advantages(r, "pass_at_1"),
                             advantages.dr_grpo_advantages(r) * (np.asarray(r).std(-1) > 0)[:, None],
                             atol=1e-12)
  np.testing.assert_allclose(advantages.surrogate_advantages(r, "arcsin"),
                             advantages.grpo_advantages(r, eps=0.0, ddof=0)[:2].tolist() + [[0.0] * 8],
                             rtol=1e-12)
  # a callable surrogate gives the same as the named one (F' by autodiff)
  f = lambda rho: 1 - (1 - rho) ** 3
  np.testing.assert_allclose(advantages.surrogate_advantages(r, f),
                             advantages.surrogate_advantages(r, "pass_at_k", k=3), rtol=1e-12)


def test_pass_at_k_surrogate_weights_hard_prompts_more():
  r = jnp.asarray(np.array([[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]], float))
  a = advantages.surrogate_advantages(r, "pass_at_k", k=4)
  rho = np.array([1 / 8, 7 / 8])
  omega = 4 * rho * (1 - rho) ** 4
  np.testing.assert_allclose(a[:, 0], omega / rho, rtol=1e-12)
  np.testing.assert_allclose(a[0, 1], -omega[0] / (1 - rho[0]), rtol=1e-12)
  assert float(a[0, 0]) > 10 * float(a[1, 0])


@pytest.mark.parametrize("call,message", [
    (lambda: advantages.gae(*(jnp.zeros((3, 2)),) * 4, jnp.zeros((3, 1))),
     "gae: arrays must have the same shape; got rewards(3, 2)"),
    (lambda: advantages.gae(*(jnp.zeros((3, 2)),) * 5, gamma=1.5), "gamma must be in [0, 1], got gamma=1.5"),
    (lambda: advantages.pass_at_k_advantages(jnp.zeros((2, 4)), 5),
     "k must be an integer in [1, group size 4], got k=5"),
    (lambda: advantages.rloo_advantages(jnp.zeros((2, 1))), "needs groups of at least 2 samples"),
    (lambda: advantages.surrogate_advantages(jnp.zeros((2, 4)), "pass@k"),
     "surrogate must be one of ['arcsin', 'pass_at_1', 'pass_at_k'] or a callable F(rho), got surrogate='pass@k'"),
    (lambda: advantages.gae(*(jnp.zeros((3, 2)),) * 5, gamma="0.9"),
     "gae: gamma must be a number in [0, 1], got gamma='0.9' (str)"),
    (lambda: advantages.gae(*(jnp.zeros((3, 2)),) * 5, lambda_=True),
     "gae: lambda_ must be a number in [0, 1], got lambda_=True (bool)"),
    (lambda: advantages.gae(*(jnp.zeros((3, 2)),) * 5, gamma=float("nan")), "got gamma=nan"),
    (lambda: advantages.pass_at_k_advantages(jnp.zeros((2, 4)), True),
     "k must be an integer in [1, group size 4], got k=True"),
    (lambda: advantages.pass_at_k_advantages(jnp.zeros((2, 4)), 2.0),
     "k must be an integer in [1, group size 4], got k=2.0"),
    (lambda: advantages.surrogate_advantages(jnp.zeros((2, 4)), "pass_at_k", k=np.int64(9)),
     "surrogate_advantages: k must be an integer in [1, group size 4], got k=9"),
    (lambda: advantages.gpg_advantages(jnp.zeros((2, 4)), f_norm="2"),
     "gpg_advantages: f_norm must be a number > 0 (finite), got f_norm='2' (str)"),
    (lambda: advantages.gpg_advantages(jnp.zeros((2, 4)), f_norm=float("nan")), "got f_norm=nan"),
    (lambda: advantages.discounted_returns(jnp.zeros((2, 4)), gamma="1"),
     "discounted_returns: gamma must be a number in [0, 1], got gamma='1' (str)"),
])
def test_bad_inputs_raise_clear_errors(call, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    call()
