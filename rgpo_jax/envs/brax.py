"""Brax continuous-control environments behind the one `Env` interface of `envs/base.py`.

`make_brax_env("ant", backend="positional", episode_length=1000, action_repeat=1)` wraps ONE
Brax environment (the trainer `vmap`s it) and adds what Brax's own `EpisodeWrapper` /
`AutoResetWrapper` do, with three differences that matter for a correct policy gradient:

* **Termination vs truncation.** `terminated` is the physics' own `done` (e.g. the ant fell);
  `truncated` is the time limit reached without termination. GAE bootstraps from `final_obs`
  on truncation and not on termination (see `advantages.gae`).
* **Action repeat stops at termination.** With `action_repeat = k` one agent step applies the
  action for k Brax steps and returns the summed reward; if the episode terminates after j < k
  Brax steps, the remaining k − j steps are not simulated and give no reward (Brax's wrapper
  keeps stepping a fallen body and adds its rewards).
* **Fresh random resets.** An ended episode restarts from `reset(key)` with this step's key, so
  every episode has its own random initial state (Brax's `AutoResetWrapper` replays the first
  initial state of each env forever).

Time limit: `episode_length` counts *Brax* steps, as in Brax (so Brax's published settings carry
over unchanged); the agent sees ⌈episode_length / action_repeat⌉ decisions per episode, which is
`spec.max_episode_steps`. Episode statistics (`episode_return`, `episode_length` in agent steps)
are accumulated on device and reported on the step where an episode ends.

Actions are clipped to Brax's action box [−1, 1] before simulation, so a policy may output an
unbounded Gaussian sample (the "clip" convention) or a tanh-squashed one.

Scan-carry types: Brax states returned by `reset` and by `step` differ in weak types (a reward
of `0.0` vs a computed float32), which makes `jit` compile twice and `lax.scan` reject the
carry. Every state leaving this module is cast once to strong dtypes (`_strong`).

Per-family PPO defaults (`PPO_DEFAULTS`, `ppo_defaults(name, budget)`) follow Brax's published
PPO settings (Freeman et al. 2021, arXiv 2106.13281; brax/training/learner configs), with a
`"cpu"` budget scaled down to run on two CPU cores.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rgpo_jax.envs.base import Env, EnvSpec, Timestep

Array = jax.Array

BACKENDS = ("generalized", "positional", "spring", "mjx")
"""Physics pipelines Brax offers. positional is the fastest on CPU; generalized is the most
accurate maximal-coordinates solver; mjx is MuJoCo's JAX port."""

DEFAULT_BACKEND = "positional"


class BraxEnvState(NamedTuple):
  """State of one wrapped Brax env.

  brax_state: the Brax `State` (physics, obs, reward, done, metrics, info), strongly typed.
  time: int32 number of agent steps taken in the current episode.
  episode_return: float32 undiscounted return of the current episode so far.
  """

  brax_state: Any
  time: Array
  episode_return: Array


# mujoco.mjx (imported by brax) prints these two lines when the optional GPU package `warp` is
# absent; they say nothing about our environments, so importing brax drops exactly them.
_WARP_NOISE = ("Failed to import warp:", "Failed to import mujoco_warp:")


def _brax_envs():
  """`brax.envs`, imported without mujoco's "Failed to import warp" lines on stdout."""
  if "brax.envs" in sys.modules:
    return sys.modules["brax.envs"]
  captured = io.StringIO()
  try:
    with contextlib.redirect_stdout(captured):
      from brax import envs as brax_envs  # pylint: disable=import-outside-toplevel
  except ModuleNotFoundError as e:
    if e.name and e.name.split(".")[0] in ("brax", "mujoco"):
      raise ValueError(f"Brax environments (--env brax:NAME) need the 'brax' extra (module "
                       f"{e.name!r} is not installed): pip install 'rgpo_jax[brax]'") from None
    raise
  finally:
    kept = [l for l in captured.getvalue().splitlines(keepends=True)
            if not l.startswith(_WARP_NOISE)]
    sys.stdout.write("".join(kept))
  return brax_envs


def available_envs() -> tuple[str, ...]:
  """Names of the registered Brax environments (`brax.envs`), sorted."""
  brax_envs = _brax_envs()
  return tuple(sorted(brax_envs._envs))  # pylint: disable=protected-access


def _strong(tree: Any) -> Any:
  """Casts every array leaf to its own dtype with `weak_type=False` (no-op for strong leaves)."""
  def cast(x):
    x = jnp.asarray(x)
    return lax.convert_element_type(x, x.dtype)
  return jax.tree.map(cast, tree)


def _select(pred: Array, on_true: Any, on_false: Any) -> Any:
  """Leafwise `where(pred, on_true, on_false)` for a scalar boolean `pred` (one env)."""
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def validate_brax_args(name: str, backend: str, episode_length: int, action_repeat: int) -> None:
  """Raises ValueError naming the bad value and what is allowed (before anything compiles)."""
  names = available_envs()
  if name not in names:
    raise ValueError(f"unknown Brax environment {name!r}; available: {', '.join(names)} "
                     f"(select one as --env brax:NAME)")
  if backend not in BACKENDS:
    raise ValueError(f"unknown Brax backend {backend!r}; available: {', '.join(BACKENDS)}")
  if not isinstance(episode_length, int) or isinstance(episode_length, bool) \
      or episode_length < 1:
    raise ValueError(f"episode_length must be a positive integer, got {episode_length!r}")
  if not isinstance(action_repeat, int) or isinstance(action_repeat, bool) or action_repeat < 1:
    raise ValueError(f"action_repeat must be a positive integer, got {action_repeat!r}")


def make_brax_env(name: str,
                  backend: str = DEFAULT_BACKEND,
                  episode_length: int = 1000,
                  action_repeat: int = 1,
                  **kwargs: Any) -> Env:
  """Wraps one Brax environment as an `Env` (single env; auto-reset; episode stats).

  Args:
    name: a Brax environment name, e.g. "ant", "halfcheetah", "hopper", "walker2d",
      "humanoid", "inverted_pendulum", "inverted_double_pendulum", "reacher" (without the
      "brax:" prefix `make_env` strips). `available_envs()` lists all.
    backend: physics pipeline, one of `BACKENDS`.
    episode_length: time limit in Brax steps (truncation, with bootstrap).
    action_repeat: Brax steps per agent step (rewards summed; stops at termination).
    **kwargs: passed to the Brax environment's constructor (e.g. `ctrl_cost_weight`).

  Returns:
    An `Env` with `spec.name == "brax:" + name`, `action_kind == "continuous"`,
    `spec.max_episode_steps == ceil(episode_length / action_repeat)`.

  Raises:
    ValueError: unknown name or backend, or a non-positive episode_length / action_repeat.
  """
  validate_brax_args(name, backend, episode_length, action_repeat)
  env = _brax_envs().get_environment(name, backend=backend, **kwargs)
  obs_size = env.observation_size
  if not isinstance(obs_size, int):
    raise ValueError(f"Brax environment {name!r} has a dict observation {obs_size!r}; only "
                     "flat vector observations are supported")
  max_steps = math.ceil(episode_length / action_repeat)
  spec = EnvSpec(name=f"brax:{name}", obs_shape=(int(obs_size),), action_kind="continuous",
                 action_size=int(env.action_size), max_episode_steps=max_steps)

  def reset_brax(key: Array) -> Any:
    return _strong(env.reset(key))

  def reset(key: Array) -> tuple[BraxEnvState, Array]:
    bs = reset_brax(key)
    state = BraxEnvState(brax_state=bs, time=jnp.zeros((), jnp.int32),
                         episode_return=jnp.zeros((), jnp.float32))
    return state, bs.obs

  def physics_step(bs: Any, action: Array) -> tuple[Any, Array, Array]:
    """`action_repeat` Brax steps that stop at termination: (state, summed reward, done)."""
    if action_repeat == 1:
      nbs = _strong(env.step(bs, action))
      return nbs, nbs.reward, nbs.done > 0

    def body(carry, _):
      bs, reward_sum, done = carry
      nbs = _strong(env.step(bs, action))
      bs = _select(done, bs, nbs)  # a terminated episode is not simulated further
      reward_sum = reward_sum + jnp.where(done, 0.0, nbs.reward)
      done = done | (nbs.done > 0)
      return (bs, reward_sum, done), None

    init = (bs, jnp.zeros((), jnp.float32), jnp.zeros((), bool))
    (bs, reward_sum, done), _ = lax.scan(body, init, None, length=action_repeat)
    return bs, reward_sum, done

  def step(key: Array, state: BraxEnvState, action: Array) -> tuple[BraxEnvState, Timestep]:
    action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    if action.shape != (spec.action_size,):
      raise ValueError(f"{spec.name}: action must have shape ({spec.action_size},) for one env, "
                       f"got {action.shape}")
    bs, reward, terminated = physics_step(state.brax_state, action)
    reward = reward.astype(jnp.float32)
    time = state.time + 1
    truncated = (time >= max_steps) & ~terminated
    ended = terminated | truncated
    episode_return = state.episode_return + reward
    final_obs = bs.obs
    fresh = reset_brax(key)
    bs = _select(ended, fresh, bs)
    new_state = BraxEnvState(
        brax_state=bs,
        time=jnp.where(ended, 0, time).astype(jnp.int32),
        episode_return=jnp.where(ended, 0.0, episode_return).astype(jnp.float32))
    timestep = Timestep(
        obs=bs.obs,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        final_obs=final_obs,
        episode_return=jnp.where(ended, episode_return, 0.0).astype(jnp.float32),
        episode_length=jnp.where(ended, time, 0).astype(jnp.int32))
    return new_state, timestep

  return Env(spec=spec, reset=reset, step=step)


# ------------------------------------------------------------------------------------------
# Per-family PPO defaults.
# ------------------------------------------------------------------------------------------

Budget = Literal["accelerator", "cpu"]

# Brax's published PPO settings (brax README / training colab, arXiv 2106.13281), in Brax's own
# vocabulary: num_timesteps total env steps; num_envs parallel envs; unroll_length steps per env
# per rollout; batch_size × num_minibatches = transitions per SGD epoch; num_updates_per_batch
# epochs; discounting γ; entropy_cost; reward_scaling multiplies rewards; episode_length and
# action_repeat as in `make_brax_env`; all use observation normalisation.
PPO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ant": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1,
                num_envs=4096, unroll_length=5, batch_size=2048, num_minibatches=32,
                num_updates_per_batch=4, discounting=0.97, learning_rate=3e-4,
                entropy_cost=1e-2, reward_scaling=10.0),
    "halfcheetah": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1,
                        num_envs=2048, unroll_length=20, batch_size=512, num_minibatches=32,
                        num_updates_per_batch=8, discounting=0.95, learning_rate=3e-4,
                        entropy_cost=1e-3, reward_scaling=1.0),
    "hopper": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1,
                   num_envs=2048, unroll_length=20, batch_size=512, num_minibatches=32,
                   num_updates_per_batch=8, discounting=0.97, learning_rate=3e-4,
                   entropy_cost=1e-3, reward_scaling=1.0),
    "walker2d": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1,
                     num_envs=2048, unroll_length=20, batch_size=512, num_minibatches=32,
                     num_updates_per_batch=8, discounting=0.97, learning_rate=3e-4,
                     entropy_cost=1e-3, reward_scaling=1.0),
    "humanoid": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1,
                     num_envs=2048, unroll_length=10, batch_size=1024, num_minibatches=32,
                     num_updates_per_batch=8, discounting=0.97, learning_rate=3e-4,
                     entropy_cost=1e-3, reward_scaling=0.1),
    "inverted_pendulum": dict(num_timesteps=2_000_000, episode_length=1000, action_repeat=1,
                              num_envs=2048, unroll_length=5, batch_size=1024,
                              num_minibatches=32, num_updates_per_batch=4, discounting=0.97,
                              learning_rate=3e-4, entropy_cost=1e-2, reward_scaling=10.0),
    "inverted_double_pendulum": dict(num_timesteps=20_000_000, episode_length=1000,
                                     action_repeat=1, num_envs=2048, unroll_length=5,
                                     batch_size=1024, num_minibatches=32,
                                     num_updates_per_batch=4, discounting=0.97,
                                     learning_rate=3e-4, entropy_cost=1e-2,
                                     reward_scaling=10.0),
    "reacher": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=4,
                    num_envs=2048, unroll_length=50, batch_size=256, num_minibatches=32,
                    num_updates_per_batch=8, discounting=0.95, learning_rate=3e-4,
                    entropy_cost=1e-3, reward_scaling=5.0),
    "pusher": dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1,
                   num_envs=2048, unroll_length=30, batch_size=512, num_minibatches=16,
                   num_updates_per_batch=8, discounting=0.95, learning_rate=3e-4,
                   entropy_cost=1e-2, reward_scaling=5.0),
}
_GENERIC = dict(num_timesteps=50_000_000, episode_length=1000, action_repeat=1, num_envs=2048,
                unroll_length=10, batch_size=512, num_minibatches=32, num_updates_per_batch=4,
                discounting=0.97, learning_rate=3e-4, entropy_cost=1e-3, reward_scaling=1.0)

# CPU budget (2 cores): same algorithmic settings, fewer envs and steps, so that one run takes
# minutes. Only num_timesteps, num_envs and the minibatch count change (an accelerator run is the
# same config with the accelerator numbers).
_CPU_OVERRIDES: dict[str, dict[str, Any]] = {
    "inverted_pendulum": dict(num_timesteps=300_000, num_envs=64, unroll_length=16,
                              num_minibatches=4, episode_length=1000),
    "inverted_double_pendulum": dict(num_timesteps=1_000_000, num_envs=64, unroll_length=16,
                                     num_minibatches=4),
    "ant": dict(num_timesteps=1_000_000, num_envs=128, unroll_length=10, num_minibatches=8),
    "halfcheetah": dict(num_timesteps=1_000_000, num_envs=128, unroll_length=20,
                        num_minibatches=8),
    "hopper": dict(num_timesteps=1_000_000, num_envs=128, unroll_length=20, num_minibatches=8),
    "walker2d": dict(num_timesteps=1_000_000, num_envs=128, unroll_length=20, num_minibatches=8),
}


def ppo_defaults(name: str, budget: Budget = "accelerator") -> dict[str, Any]:
  """PPO hyperparameters for Brax env `name` (Brax's vocabulary; see `PPO_DEFAULTS`).

  Args:
    name: Brax env name (no "brax:" prefix).
    budget: "accelerator" for Brax's published settings, "cpu" for the scaled-down version that
      runs in minutes on two CPU cores (only step and env counts differ).

  Returns:
    A fresh dict with keys num_timesteps, episode_length, action_repeat, num_envs,
    unroll_length, batch_size, num_minibatches, num_updates_per_batch, discounting,
    learning_rate, entropy_cost, reward_scaling, normalize_observations, backend.
  """
  if budget not in ("accelerator", "cpu"):
    raise ValueError(f"budget must be 'accelerator' or 'cpu', got {budget!r}")
  out = dict(PPO_DEFAULTS.get(name, _GENERIC))
  out.update(normalize_observations=True, backend=DEFAULT_BACKEND)
  if budget == "cpu":
    out.update(_CPU_OVERRIDES.get(name, dict(num_timesteps=1_000_000, num_envs=128,
                                              num_minibatches=8)))
  return out


# TrainConfig fields for Brax runs of `rgpo train --env brax:NAME` (fields given on the command
# line win). Sized for two CPU cores: 64 envs × 32 steps per update, 4 epochs × 4 minibatches,
# Adam 1e-3 (3e-4 for the 3D locomotion bodies), γ = 0.99, λ = 0.95, no entropy bonus, observation
# normalisation, 64×64 tanh actor and critic, Gaussian policy clipped to [-1, 1] by the env. On an
# accelerator change only --num-envs (e.g. 2048) and --total-steps (e.g. 5e7).
_TRAIN_FAMILY = dict(normalize_obs=True, num_envs=64, num_steps=32, num_minibatches=4,
                     update_epochs=4, lr=1e-3, anneal_lr=False, gamma=0.99, gae_lambda=0.95,
                     ent_coef=0.0, max_grad_norm=0.5, hidden=(64, 64), activation="tanh",
                     total_steps=1_000_000)
_TRAIN_OVERRIDES: dict[str, dict[str, Any]] = {
    "inverted_pendulum": dict(total_steps=400_000),
    "inverted_double_pendulum": dict(total_steps=1_000_000),
    # std 0.37: the initial control cost 0.5·Σa² (8 joints) stays below the healthy reward 1;
    # at std 1 it is ≈ 3 per step and PPO learns to end episodes early (results/ppo_ant_std1).
    "ant": dict(lr=3e-4, num_envs=128, total_steps=1_000_000, init_log_std=-1.0),
    "humanoid": dict(lr=3e-4, num_envs=128, total_steps=2_000_000),
    "halfcheetah": dict(lr=3e-4, total_steps=1_000_000),
    "hopper": dict(lr=3e-4, total_steps=1_000_000),
    "walker2d": dict(lr=3e-4, total_steps=1_000_000),
}


def trainer_defaults(name: str) -> dict[str, Any]:
  """`TrainConfig` field values for Brax env `name` (see `_TRAIN_FAMILY` for the reasoning)."""
  out = dict(_TRAIN_FAMILY)
  out.update(_TRAIN_OVERRIDES.get(name, {}))
  return out
