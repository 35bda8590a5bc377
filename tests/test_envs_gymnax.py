"""The Gymnax env layer: reset, step physics, auto-reset, termination vs truncation, stats."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax.envs import make_env
from rgpo_jax.envs.gymnax import GymnaxState


def _cartpole_step(s, action):
  """Hand-written CartPole-v1 Euler step (Barto et al. constants), float64."""
  x, x_dot, theta, theta_dot = s
  gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
  total = masscart + masspole
  pml = masspole * length
  force = force_mag if action == 1 else -force_mag
  c, sn = math.cos(theta), math.sin(theta)
  temp = (force + pml * theta_dot ** 2 * sn) / total
  thetaacc = (gravity * sn - c * temp) / (length * (4.0 / 3.0 - masspole * c ** 2 / total))
  xacc = temp - pml * thetaacc * c / total
  return np.array([x + tau * x_dot, x_dot + tau * xacc, theta + tau * theta_dot,
                   theta_dot + tau * thetaacc])


@pytest.fixture(scope="module")
def cartpole():
  env = make_env("CartPole-v1", max_episode_steps=3)
  return env, jax.jit(env.reset), jax.jit(env.step)


def test_spec_and_reset_obs():
  env = make_env("CartPole-v1")
  assert env.spec.obs_shape == (4,) and env.spec.action_kind == "discrete"
  assert env.spec.action_size == 2 and env.spec.max_episode_steps == 500
  state, obs = env.reset(jax.random.key(0))
  assert obs.dtype == jnp.float32 and obs.shape == (4,)
  assert np.all(np.abs(np.asarray(obs)) <= 0.05)
  assert isinstance(state, GymnaxState) and int(state.episode_length) == 0


def test_step_matches_hand_physics_and_counts(cartpole):
  env, reset, step = cartpole
  state, obs = reset(jax.random.key(1))
  expected = _cartpole_step(np.asarray(obs, np.float64), 1)
  state, ts = step(jax.random.key(2), state, jnp.int32(1))
  np.testing.assert_allclose(np.asarray(ts.obs), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ts.final_obs), expected, rtol=1e-5, atol=1e-6)
  assert float(ts.reward) == 1.0
  assert not bool(ts.terminated) and not bool(ts.truncated)
  assert float(ts.episode_return) == 0.0 and int(ts.episode_length) == 0  # episode not over
  assert float(state.episode_return) == 1.0 and int(state.episode_length) == 1


def test_truncation_auto_resets_and_reports_final_obs(cartpole):
  env, reset, step = cartpole  # time limit 3
  state, obs = reset(jax.random.key(3))
  s = np.asarray(obs, np.float64)
  for t in range(3):
    s = _cartpole_step(s, 0)
    state, ts = step(jax.random.key(10 + t), state, jnp.int32(0))
  assert bool(ts.truncated) and not bool(ts.terminated)
  np.testing.assert_allclose(np.asarray(ts.final_obs), s, rtol=1e-5, atol=1e-6)  # pre-reset
  assert np.all(np.abs(np.asarray(ts.obs)) <= 0.05)  # fresh episode
  assert not np.allclose(np.asarray(ts.obs), s)
  assert float(ts.episode_return) == 3.0 and int(ts.episode_length) == 3
  assert float(state.episode_return) == 0.0 and int(state.episode_length) == 0
  state, ts = step(jax.random.key(20), state, jnp.int32(0))
  assert not bool(ts.truncated) and float(state.episode_return) == 1.0


def test_termination_is_not_truncation(cartpole):
  env, reset, step = cartpole
  state, _ = reset(jax.random.key(4))
  # Pole almost at the 12° limit, falling: the next step terminates the episode.
  inner = state.env_state.replace(theta=jnp.float32(0.2090), theta_dot=jnp.float32(1.0))
  state = state._replace(env_state=inner, episode_return=jnp.float32(7.0),
                         episode_length=jnp.int32(1))
  expected = _cartpole_step(np.array([float(inner.x), float(inner.x_dot), 0.2090, 1.0]), 1)
  assert expected[2] > 12 * 2 * math.pi / 360
  state, ts = step(jax.random.key(5), state, jnp.int32(1))
  assert bool(ts.terminated) and not bool(ts.truncated)
  np.testing.assert_allclose(np.asarray(ts.final_obs), expected, rtol=1e-4, atol=1e-5)
  assert float(ts.episode_return) == 8.0 and int(ts.episode_length) == 2


def test_vmapped_step_and_minatar_obs():
  env = make_env("Breakout-MinAtar")
  assert env.spec.obs_shape == (10, 10, 4)
  states, obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 3))
  assert obs.shape == (3, 10, 10, 4) and obs.dtype == jnp.float32
  states, ts = jax.vmap(env.step)(jax.random.split(jax.random.key(1), 3), states,
                                  jnp.zeros(3, jnp.int32))
  assert ts.obs.shape == (3, 10, 10, 4) and ts.reward.shape == (3,)


def test_unknown_env_names_value_and_allowed():
  with pytest.raises(ValueError, match=r"unknown env 'NoSuchEnv-v0'.*CartPole-v1"):
    make_env("NoSuchEnv-v0")
  with pytest.raises(ValueError, match="max_episode_steps"):
    make_env("CartPole-v1", max_episode_steps=0)
