"""REINFORCE++, ReMax, OPO, GPG, GDPO against numpy transcriptions of verl/TRL (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import advantages

pytestmark = pytest.mark.usefixtures("x64")

RNG = np.random.default_rng(0)
GROUPS = np.array([[1.0, 0.0, 0.5, 0.25], [2.0, 2.0, 2.0, 2.0], [0.0, 3.0, 1.0, 0.0]])
LENGTHS = np.array([[3, 5, 2, 6], [4, 4, 1, 2], [6, 2, 3, 5]])
TOKEN_MASK = np.arange(6) < LENGTHS[..., None]                       # [3, 4, 6]
TOKEN_REWARDS = np.where(TOKEN_MASK, RNG.normal(0, 0.1, TOKEN_MASK.shape), 0.0)


def _verl_returns(rewards, mask, gamma):
  """verl compute_reinforce_plus_plus_outcome_advantage's loop, in numpy."""
  returns = np.zeros_like(rewards)
  running = np.zeros(rewards.shape[:-1])
  for t in reversed(range(rewards.shape[-1])):
    running = rewards[..., t] + gamma * running
    returns[..., t] = running
    running = running * mask[..., t]
  return returns


def _verl_whiten(x, mask):
  v = x[mask]
  mean, var = v.mean(), v.var(ddof=1)
  return np.where(mask, (x - mean) / np.sqrt(var + 1e-8), 0.0)


def test_opo_baseline_is_length_weighted():
  got = advantages.opo_advantages(GROUPS, LENGTHS)
  for g in range(3):
    b = (LENGTHS[g] * GROUPS[g]).sum() / LENGTHS[g].sum()
    np.testing.assert_allclose(got[g], GROUPS[g] - b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("alpha", ["groups", "nonzero_rewards"])
def test_gpg_rescales_by_the_valid_fraction(alpha):
  b = GROUPS.size
  if alpha == "groups":  # the paper: B/(B − M), M = samples of all-equal groups (row 1)
    scale = b / (b - 4)
  else:                  # verl: B / count_nonzero(scores)
    scale = b / np.count_nonzero(GROUPS)
  expected = scale * (GROUPS - GROUPS.mean(-1, keepdims=True)) / 2.0
  np.testing.assert_allclose(advantages.gpg_advantages(GROUPS, f_norm=2.0, alpha=alpha), expected,
                             rtol=1e-13, atol=1e-15)


def test_gdpo_matches_trl_normalize_then_sum():
  rewards = RNG.normal(size=(3, 4, 2)) * np.array([1.0, 50.0])  # two rewards of very different scale
  weights = np.array([1.0, 0.5])
  # TRL GRPOTrainer multi_objective_aggregation="normalize_then_sum", transcribed.
  mean_k = rewards.mean(1, keepdims=True)
  std_k = rewards.std(1, ddof=1, keepdims=True)
  summed = (((rewards - mean_k) / (std_k + 1e-4)) * weights).sum(-1)
  expected = (summed - summed.mean()) / (summed.std(ddof=1) + 1e-4)
  np.testing.assert_allclose(advantages.gdpo_advantages(rewards, weights), expected, rtol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_discounted_returns_match_verl_loop(gamma):
  got = advantages.discounted_returns(TOKEN_REWARDS, TOKEN_MASK, gamma)
  expected = np.where(TOKEN_MASK, _verl_returns(TOKEN_REWARDS, TOKEN_MASK, gamma), 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_reinforce_pp_whitens_returns_over_the_batch():
  got = advantages.reinforce_pp_advantages(TOKEN_REWARDS, TOKEN_MASK, 0.95)
  expected = _verl_whiten(_verl_returns(TOKEN_REWARDS, TOKEN_MASK, 0.95), TOKEN_MASK)
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_reinforce_pp_baseline_subtracts_group_mean_then_whitens():
  got = advantages.reinforce_pp_baseline_advantages(GROUPS, TOKEN_MASK)
  tiled = np.broadcast_to((GROUPS - GROUPS.mean(-1, keepdims=True))[..., None], TOKEN_MASK.shape)
  np.testing.assert_allclose(got, _verl_whiten(tiled, TOKEN_MASK), rtol=1e-12, atol=1e-15)


def test_remax_subtracts_the_greedy_reward_from_returns_to_go():
  greedy = RNG.normal(size=LENGTHS.shape)
  got = advantages.remax_advantages(TOKEN_REWARDS, greedy, TOKEN_MASK)
  to_go = np.flip(np.cumsum(np.flip(TOKEN_REWARDS, -1), -1), -1)  # verl: flip-cumsum-flip
  np.testing.assert_allclose(got, np.where(TOKEN_MASK, to_go - greedy[..., None], 0.0),
                             rtol=1e-12, atol=1e-15)


def test_reinforce_pp_padding_nan_is_inert_and_axis_name_gives_batch_statistics():
  bad = TOKEN_REWARDS.copy()
  bad[~TOKEN_MASK] = np.nan
  full = advantages.reinforce_pp_advantages(TOKEN_REWARDS, TOKEN_MASK)
  np.testing.assert_allclose(advantages.reinforce_pp_advantages(bad, TOKEN_MASK), full, rtol=1e-13)
  fn = functools.partial(advantages.reinforce_pp_advantages, axis_name="dp")
  sharded = jax.vmap(fn, axis_name="dp")(TOKEN_REWARDS.reshape(3, 4, 6), TOKEN_MASK.reshape(3, 4, 6))
  np.testing.assert_allclose(sharded, full, rtol=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda: advantages.grpo_advantages(jnp.ones((2, 1))), "ddof=1 needs groups of at least 2"),
    (lambda: advantages.grpo_advantages(GROUPS, ddof=2), "ddof=2"),
    (lambda: advantages.gpg_advantages(GROUPS, alpha="batch"), "alpha='batch'"),
    (lambda: advantages.gdpo_advantages(np.ones((3, 4, 2)), np.ones(3)), r"weights\(3,\)"),
    (lambda: advantages.opo_advantages(GROUPS, LENGTHS[:, :3]), r"lengths\(3, 3\)"),
    (lambda: advantages.remax_advantages(TOKEN_REWARDS, np.ones(3)), r"greedy_reward\(3,\)"),
    (lambda: advantages.discounted_returns(TOKEN_REWARDS, TOKEN_MASK, 1.5), "gamma=1.5"),
])
def test_bad_inputs_raise_errors_naming_the_value(call, message):
  with pytest.raises(ValueError, match=message):
    call()
