"""Environments behind one functional interface (`base.Env`): Gymnax and Brax.

`make_env("CartPole-v1")` builds a Gymnax environment; names starting with "brax:" (e.g.
"brax:ant") go to the Brax layer, imported only when asked for (Brax is slow to import).
"""

from __future__ import annotations

from rgpo_jax.envs.base import Env, EnvSpec, Timestep

BRAX_PREFIX = "brax:"


def make_env(name: str, **kwargs) -> Env:
  """Build an `Env` by name: "brax:<env>" for Brax, any registered Gymnax id otherwise.

  Args:
    name: environment id, e.g. "CartPole-v1", "Breakout-MinAtar", "brax:ant".
    **kwargs: passed to the backend's constructor (e.g. `max_episode_steps`).

  Raises:
    ValueError: unknown name (the message lists what is allowed).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"env must be a non-empty string, got env={name!r}")
  if name.startswith(BRAX_PREFIX):
    from rgpo_jax.envs import brax as brax_envs  # lazy: brax is heavy to import
    return brax_envs.make_brax_env(name[len(BRAX_PREFIX):], **kwargs)
  from rgpo_jax.envs import gymnax as gymnax_envs
  return gymnax_envs.make_gymnax_env(name, **kwargs)


def check_env_name(name: str) -> None:
  """Raise a ValueError naming `name` and the allowed ids if it is not a known environment.

  Cheap (no environment is built for Gymnax); used by config validation before any compile.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"env must be a non-empty string, got env={name!r}")
  if name.startswith(BRAX_PREFIX):
    return  # validated by the Brax layer when built
  from rgpo_jax.envs import gymnax as gymnax_envs
  gymnax_envs.check_name(name)


__all__ = ["BRAX_PREFIX", "Env", "EnvSpec", "Timestep", "check_env_name", "make_env"]
