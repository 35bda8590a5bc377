"""Gymnax (>= 1.0) environments as `base.Env`: auto-reset, termination vs truncation, episode stats.

Gymnax 1.0's `step` already auto-resets and returns (obs, state, reward, terminated, truncated,
info) with the pre-reset observation in `info["final_observation"]`. This layer adds, on device,
the return and length of each episode as it ends, casts observations to float32 (MinAtar's are
boolean) and exposes the static `EnvSpec` the trainer builds its networks from.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax.envs.base import Env, EnvSpec, Timestep

Array = jax.Array


class GymnaxState(NamedTuple):
  """Wrapper state: the Gymnax state plus the running return and length of the episode."""

  env_state: Any
  episode_return: Array  # float32 []
  episode_length: Array  # int32 []


def _registered() -> list[str]:
  import gymnax
  return list(gymnax.registered_envs)


def check_name(name: str) -> None:
  """Raise a ValueError naming `name` and the Gymnax ids allowed if it is not registered."""
  envs = _registered()
  if name not in envs:
    raise ValueError(f"unknown env {name!r}; allowed: any Gymnax id ({', '.join(envs)}) or "
                     f"'brax:<name>' for Brax")


def make_gymnax_env(name: str, max_episode_steps: int | None = None, **env_kwargs) -> Env:
  """Wrap the Gymnax environment `name` as an `Env` (single environment; the trainer vmaps).

  Args:
    name: a registered Gymnax id, e.g. "CartPole-v1", "Acrobot-v1", "Breakout-MinAtar".
    max_episode_steps: optional time limit replacing the environment's default
      (`params.max_steps_in_episode`); episodes reaching it are *truncated*.
    **env_kwargs: passed to the Gymnax environment's constructor.

  Returns:
    An `Env` whose `step` auto-resets and reports `Timestep`s.
  """
  import gymnax
  check_name(name)
  env, params = gymnax.make(name, **env_kwargs)
  if max_episode_steps is not None:
    if int(max_episode_steps) <= 0:
      raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
    params = params.replace(max_steps_in_episode=int(max_episode_steps))

  obs_space = env.observation_space(params)
  action_space = env.action_space(params)
  if hasattr(action_space, "n"):
    kind, size = "discrete", int(action_space.n)
  else:
    kind, size = "continuous", int(action_space.shape[0] if action_space.shape else 1)
  spec = EnvSpec(name=name, obs_shape=tuple(int(d) for d in obs_space.shape), action_kind=kind,
                 action_size=size, max_episode_steps=int(params.max_steps_in_episode))

  def reset(key: Array) -> tuple[GymnaxState, Array]:
    obs, env_state = env.reset(key, params)
    state = GymnaxState(env_state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    return state, jnp.asarray(obs, jnp.float32)

  def step(key: Array, state: GymnaxState, action: Array) -> tuple[GymnaxState, Timestep]:
    if kind == "continuous" and jnp.ndim(action) == 0:
      action = action[None]
    obs, env_state, reward, terminated, truncated, info = env.step(key, state.env_state, action,
                                                                   params)
    reward = jnp.asarray(reward, jnp.float32)
    terminated = jnp.asarray(terminated, bool)
    truncated = jnp.logical_and(jnp.asarray(truncated, bool), jnp.logical_not(terminated))
    done = jnp.logical_or(terminated, truncated)
    ret = state.episode_return + reward
    length = state.episode_length + 1
    new_state = GymnaxState(env_state, jnp.where(done, 0.0, ret), jnp.where(done, 0, length))
    timestep = Timestep(
        obs=jnp.asarray(obs, jnp.float32),
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        final_obs=jnp.asarray(info["final_observation"], jnp.float32),
        episode_return=jnp.where(done, ret, 0.0),
        episode_length=jnp.where(done, length, 0),
    )
    return new_state, timestep

  return Env(spec=spec, reset=reset, step=step)
