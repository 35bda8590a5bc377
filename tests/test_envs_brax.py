"""Brax env wrapper: auto-reset, truncation with action repeat, termination, final_obs, stats.

One env (inverted_pendulum, positional backend: the fastest compile) and one compiled rollout
for the whole module; the reference is a plain Python loop over Brax's raw env.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

brax_envs = pytest.importorskip("brax.envs")

from rgpo_jax.envs import brax as rbrax  # pylint: disable=g-import-not-at-top

NAME = "inverted_pendulum"
BACKEND = "positional"
EPISODE_LENGTH = 7   # Brax steps
ACTION_REPEAT = 3    # → ceil(7 / 3) = 3 agent steps per episode
T = 10               # agent steps rolled out
# Per-env constant actions: two small (balanced, so episodes run to the time limit) and two
# large ones that knock the pole over; 5.0 must act exactly like 1.0 (clipping to [-1, 1]).
ACTIONS = np.array([0.0, 0.0, 1.0, 5.0], np.float32)
N = len(ACTIONS)


@pytest.fixture(scope="module")
def env():
  return rbrax.make_brax_env(NAME, backend=BACKEND, episode_length=EPISODE_LENGTH,
                             action_repeat=ACTION_REPEAT)


@pytest.fixture(scope="module")
def rollout(env):
  """Runs T agent steps of N envs under jit(scan(vmap(step))); returns keys and outputs."""
  reset_keys = jax.random.split(jax.random.key(0), N)
  step_keys = jax.random.split(jax.random.key(1), T * N).reshape(T, N)
  # envs 2 and 3 share every key, so their trajectories must be identical.
  reset_keys = reset_keys.at[3].set(reset_keys[2])
  step_keys = step_keys.at[:, 3].set(step_keys[:, 2])
  actions = jnp.broadcast_to(jnp.asarray(ACTIONS)[:, None], (N, 1))

  @jax.jit
  def run(reset_keys, step_keys):
    state, obs0 = jax.vmap(env.reset)(reset_keys)

    def body(state, keys):
      state, ts = jax.vmap(env.step)(keys, state, actions)
      return state, ts

    state, traj = jax.lax.scan(body, state, step_keys)
    return obs0, traj

  obs0, traj = run(reset_keys, step_keys)
  return reset_keys, step_keys, jax.tree.map(np.asarray, obs0), jax.tree.map(np.asarray, traj)


def _reference(raw, reset, raw_step, reset_key, step_keys, action):
  """Plain Python loop over the raw Brax env: the behaviour the wrapper must reproduce."""
  max_steps = math.ceil(EPISODE_LENGTH / ACTION_REPEAT)
  s = reset(reset_key)
  t, ep_ret = 0, 0.0
  out = []
  a = jnp.clip(jnp.array([action], jnp.float32), -1, 1)
  for key in step_keys:
    reward, done = 0.0, False
    for _ in range(ACTION_REPEAT):
      s = raw_step(s, a)
      reward += float(s.reward)
      if float(s.done) > 0:
        done = True
        break
    t += 1
    ep_ret += reward
    truncated = (t >= max_steps) and not done
    final_obs = np.asarray(s.obs)
    ended = done or truncated
    row = dict(reward=reward, terminated=done, truncated=truncated, final_obs=final_obs,
               episode_return=ep_ret if ended else 0.0, episode_length=t if ended else 0)
    if ended:
      s = reset(key)
      t, ep_ret = 0, 0.0
    row["obs"] = np.asarray(s.obs)
    out.append(row)
  return out


def test_spec(env):
  assert env.spec.name == "brax:inverted_pendulum"
  assert env.spec.obs_shape == (4,)
  assert env.spec.action_kind == "continuous"
  assert env.spec.action_size == 1
  assert env.spec.max_episode_steps == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="antt"), "unknown Brax environment 'antt'.*inverted_pendulum"),
    (dict(name="ant", backend="physx"), "unknown Brax backend 'physx'.*positional"),
    (dict(name="ant", episode_length=0), "episode_length must be a positive integer, got 0"),
    (dict(name="ant", action_repeat=-2), "action_repeat must be a positive integer, got -2"),
])
def test_bad_arguments_raise_before_building(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rbrax.make_brax_env(**kwargs)


def test_balanced_episodes_truncate_at_ceil_limit_with_summed_rewards(rollout):
  _, _, _, traj = rollout
  for i in (0, 1):
    # inverted_pendulum pays 1 per Brax step: an agent step of 3 repeats earns 3.
    np.testing.assert_allclose(traj.reward[:, i], 3.0)
    assert not traj.terminated[:, i].any()
    # Episodes last 3 agent steps: truncated at t = 3, 6, 9 (1-based), i.e. indices 2, 5, 8.
    np.testing.assert_array_equal(np.flatnonzero(traj.truncated[:, i]), [2, 5, 8])
    ended = traj.truncated[:, i]
    np.testing.assert_array_equal(traj.episode_length[ended, i], 3)
    np.testing.assert_allclose(traj.episode_return[ended, i], 9.0)
    assert (traj.episode_length[~ended, i] == 0).all()
    assert (traj.episode_return[~ended, i] == 0).all()


def test_final_obs_differs_from_obs_only_where_episode_ended(rollout):
  _, _, _, traj = rollout
  ended = traj.terminated | traj.truncated
  same = np.all(traj.final_obs == traj.obs, axis=-1)
  np.testing.assert_array_equal(same, ~ended)
  # A fresh inverted_pendulum starts within 0.01 of upright at rest (Brax's reset noise).
  assert np.abs(traj.obs[ended]).max() <= 0.01 + 1e-6


def test_clipped_action_matches_unit_action(rollout):
  _, _, _, traj = rollout
  for field in traj._fields:
    np.testing.assert_array_equal(getattr(traj, field)[:, 3], getattr(traj, field)[:, 2],
                                  err_msg=field)


def test_matches_plain_loop_over_raw_brax_env(rollout):
  reset_keys, step_keys, obs0, traj = rollout
  raw = brax_envs.get_environment(NAME, backend=BACKEND)
  # one compile each: float32 casts so that reset and step states share dtypes
  reset = jax.jit(lambda k: jax.tree.map(lambda x: jnp.asarray(x, x.dtype) * 1, raw.reset(k)))
  raw_step = jax.jit(lambda s, a: jax.tree.map(lambda x: x * 1, raw.step(s, a)))
  assert traj.terminated[:, 2].any(), "the large action must knock the pole over"
  for i in (0, 2):
    ref = _reference(raw, reset, raw_step, reset_keys[i], step_keys[:, i], ACTIONS[i])
    np.testing.assert_allclose(obs0[i], np.asarray(reset(reset_keys[i]).obs), atol=1e-6)
    for t, row in enumerate(ref):
      for field, value in row.items():
        np.testing.assert_allclose(getattr(traj, field)[t, i], value, atol=1e-4, rtol=1e-4,
                                   err_msg=f"env {i} step {t} field {field}")


def test_terminating_repeat_stops_reward_at_termination(rollout):
  _, _, _, traj = rollout
  term = traj.terminated[:, 2]
  # reward counts only the Brax steps simulated up to termination: an integer in [1, 3]
  r = traj.reward[term, 2]
  assert ((r >= 1) & (r <= 3)).all() and np.allclose(r, np.round(r))
  assert not (traj.truncated[:, 2] & traj.terminated[:, 2]).any()


def test_reset_and_step_states_have_identical_types(env):
  """Same tree, shapes, dtypes and weak types: jit compiles step once; scan accepts the carry."""
  key = jax.random.key(3)
  reset_state, _ = jax.eval_shape(env.reset, key)
  step_state, _ = jax.eval_shape(env.step, key, reset_state, jax.ShapeDtypeStruct((1,),
                                                                                 jnp.float32))
  assert jax.tree.structure(reset_state) == jax.tree.structure(step_state)
  for a, b in zip(jax.tree.leaves(reset_state), jax.tree.leaves(step_state)):
    assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type)
  assert not any(x.weak_type for x in jax.tree.leaves(reset_state))


def test_ppo_defaults_cpu_budget_changes_only_counts():
  acc = rbrax.ppo_defaults("ant")
  cpu = rbrax.ppo_defaults("ant", "cpu")
  assert acc["num_envs"] == 4096 and cpu["num_envs"] < acc["num_envs"]
  changed = {k for k in acc if acc[k] != cpu[k]}
  assert changed <= {"num_timesteps", "num_envs", "unroll_length", "num_minibatches",
                     "episode_length"}
  assert acc["discounting"] == cpu["discounting"] and cpu["normalize_observations"]
  with pytest.raises(ValueError, match="budget must be"):
    rbrax.ppo_defaults("ant", "tpu")
