"""One functional environment interface for the trainer, over Gymnax and Brax.

An `Env` acts on a *single* environment; the trainer `vmap`s it over its batch. `step` resets
finished episodes itself (auto-reset) and reports what GAE needs to tell termination from
truncation, plus on-device episode statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple

import jax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """Static facts about an environment (hashable: safe as a jit static argument).

  name: e.g. "CartPole-v1" or "brax:ant".
  obs_shape: shape of one observation.
  action_kind: "discrete" or "continuous".
  action_size: number of actions (discrete) or action dimension (continuous).
  max_episode_steps: the time limit after which an episode is truncated.
  """

  name: str
  obs_shape: tuple[int, ...]
  action_kind: Literal["discrete", "continuous"]
  action_size: int
  max_episode_steps: int


class Timestep(NamedTuple):
  """What one `step` returns besides the new state (single env; the trainer adds [T, B]).

  obs: observation to act on next (after an auto-reset if the episode ended).
  reward: r_t.
  terminated: the episode reached a terminal state (no bootstrap).
  truncated: the episode hit its time limit without terminating (bootstrap from final_obs).
  final_obs: the true next observation s'_t (before any auto-reset): equals `obs` unless the
    episode ended this step.
  episode_return, episode_length: return and length of the episode that ended this step
    (meaningful where terminated | truncated; 0 elsewhere).
  """

  obs: Array
  reward: Array
  terminated: Array
  truncated: Array
  final_obs: Array
  episode_return: Array
  episode_length: Array


@dataclasses.dataclass(frozen=True)
class Env:
  """`reset(key) -> (state, obs)`; `step(key, state, action) -> (state, Timestep)`."""

  spec: EnvSpec
  reset: Callable[[Array], tuple[Any, Array]]
  step: Callable[[Array, Any, Array], tuple[Any, Timestep]]
