"""The on-device trainer: rollout, GAE, an update rule, metrics, as `lax.scan`s.

One loop for every algorithm; what differs is the update rule, chosen once when the `Trainer`
is built (`update_rules.make_rule`, from `config.algo`), and for the gated rule the gate
(`config.algo` → `gates.make`), the only thing that differs between RGPO, PPO, IS, REINFORCE,
SAPO, ... (see docs/architecture.md).

    TrainState ──update──► rollout (scan over num_steps, vmapped envs)
                           next_values: V(obs[t+1]), V(final_obs) where truncated
                           advantages.gae (terminated: no bootstrap; truncated: bootstrap)
                           update rule (lax.pmean over `axis_name` when data-parallel):
                             gated: epochs × minibatches of policy_loss(gate) + value + entropy
                             natural_gradient (TRPO): CG on F·v, KL-bounded line search, then
                               value regression
                             weighted_regression (AWR): exp(Â/β)-weighted log-likelihood
                           metrics: returns, KL(π_old‖π_new), the rule's statistics

`Trainer(config)` holds the static parts (env, network); its methods are pure functions of a
`TrainState` and traced `HParams`, so they jit, vmap (sweeps) and shard (devices).
`make_train(config)(key)` runs a whole training in one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rgpo_jax import advantages as adv_lib
from rgpo_jax import gates as gates_lib
from rgpo_jax import normalization
from rgpo_jax.envs import Env, make_env
from rgpo_jax.networks import ActorCritic
from rgpo_jax.training import gate_width as width_lib
from rgpo_jax.training.config import HParams, TrainConfig, gate_template, hparams_from_config
from rgpo_jax.training.update_rules import (MAX_METRICS, METRICS, RULE_METRICS, Batch,
                                            make_rule, rollout_kl)

Array = jax.Array


class TrainState(NamedTuple):
  """Everything a bit-exact resume needs.

  params: network parameters; opt_state: Adam moments and count; env_state: batched env
  states [B]; obs: last observations [B, *obs_shape] (raw); obs_stats: running observation
  statistics (`normalization.RunningStats`); key: PRNG key; update: updates done ([] int32);
  gate_width: the gate's width (k or ε) for the next update ([] float32; fixed unless
  `target_kl` is set, see `gate_width`; NaN for a gate without width and for awr).
  """

  params: Any
  opt_state: Any
  env_state: Any
  obs: Array
  obs_stats: normalization.RunningStats
  key: Array
  update: Array
  gate_width: Array


class Transition(NamedTuple):
  """One rollout step for the whole env batch (time-major [T, B, ...] after the scan)."""

  obs: Array
  action: Array
  log_prob: Array
  value: Array
  reward: Array
  terminated: Array
  truncated: Array
  final_obs: Array
  episode_return: Array
  episode_length: Array


def bootstrap_advantages(traj: Transition, next_values: Array, hp: HParams) -> tuple[Array, Array]:
  """GAE for a rollout: next_values[t] = V(s'_t), the value of the *true* next observation.

  For a step inside an episode s'_t = obs[t+1]; where an episode ended, s'_t is the final
  observation before the auto-reset: a truncated step bootstraps from it, a terminated step
  does not (gae masks it).
  """
  return adv_lib.gae(traj.reward, traj.value, next_values, traj.terminated, traj.truncated,
                     hp.gamma, hp.gae_lambda)


def env_keys(key: Array, env_ids: Array) -> Array:
  """One key per env, [E]: env e's key depends only on `key` and its global index e.

  Keys derived by env index (not by device) make data-parallel training over N devices draw
  exactly the random numbers of one device holding all envs.
  """
  return jax.vmap(jax.random.fold_in, (None, 0))(key, env_ids)


def sample_per_env(dist, keys: Array) -> Array:
  """Actions [E, ...] from a distribution over E envs, env e's drawn with its own `keys[e]`.

  For the `distributions` classes (leaves [E, event] or a shared [event], like the Gaussian's
  state-independent log-std, which is broadcast to every env).
  """
  n = keys.shape[0]
  batched = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)[-1:]), dist)
  return jax.vmap(lambda d, k: d.sample(k))(batched, keys)


def minibatch_permutations(key: Array, num: int, n: int) -> Array:
  """`num` independent random permutations of range(n), [num, n] int32, with one sort.

  For n ≤ 2¹² each entry is packed into one uint32 sort key, (random bits << b) | index with
  b = ⌈log₂ n⌉, so a single-operand sort (much faster on CPU than the key-value sort of
  `jax.random.permutation`) yields the permutation in the low bits. Ties in the ≥ 20 random
  bits are broken by index, a bias below 2⁻²⁰ per pair. Larger n use `jax.random.permutation`.
  """
  b = max(1, (n - 1).bit_length())
  if b > 12:
    return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, num))
  bits = jax.random.bits(key, (num, n), jnp.uint32)
  mask = jnp.uint32((1 << b) - 1)
  packed = (bits & ~mask) | jnp.arange(n, dtype=jnp.uint32)
  return (jnp.sort(packed, axis=-1) & mask).astype(jnp.int32)


class Trainer:
  """Static parts of training (env, network, shapes, the update rule `rule`) and the pure
  functions that use them.

  `num_devices` > 1 makes the methods the per-device program of data-parallel training (call
  them inside `shard_map` / `pmap` with `axis_name`): each device holds num_envs/num_devices of
  the envs, and gradients, advantage and observation statistics and metrics are averaged over
  the devices. Random numbers are drawn per env (by global env index) and minibatches are
  stratified by env (`minibatch_indices`), so N devices reproduce one device holding all envs, to
  float tolerance (tests/test_train_data_parallel.py).
  """

  def __init__(self, config: TrainConfig, env: Env | None = None, num_devices: int = 1):
    self.config = config.validate()
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
      raise ValueError(f"num_devices must be a positive integer, got {num_devices!r}")
    if config.num_envs % num_devices:
      raise ValueError(f"num_envs={config.num_envs} must be divisible by the number of "
                       f"data-parallel devices ({num_devices})")
    if num_devices > 1 and config.num_steps % config.num_minibatches:
      raise ValueError(
          f"data-parallel training over {num_devices} devices needs num_minibatches="
          f"{config.num_minibatches} to divide num_steps={config.num_steps} (each minibatch "
          f"takes num_steps/num_minibatches steps of every env)")
    self.num_devices = num_devices
    self.local_envs = config.num_envs // num_devices
    self.env = env if env is not None else make_env(config.env, **dict(config.env_kwargs))
    spec = self.env.spec
    self.network = ActorCritic(action_kind=spec.action_kind, action_size=spec.action_size,
                               obs_ndim=len(spec.obs_shape), hidden=tuple(config.hidden),
                               activation=config.activation,
                               init_log_std=config.init_log_std)
    self.tx = optax.scale_by_adam(eps=1e-5)
    self._gate_template = gate_template(self.config)
    # The adaptive width's spec (None: fixed width), chosen once like the rule.
    self.width_spec = (width_lib.ADAPTIVE_FAMILIES[config.gate_family]
                       if config.target_kl is not None else None)
    self.rule = make_rule(self)  # the update rule, chosen once (see update_rules)

  def env_ids(self, axis_name: str | None = None) -> Array:
    """Global indices of this device's envs, [local_envs] (all envs without `axis_name`)."""
    ids = jnp.arange(self.local_envs, dtype=jnp.uint32)
    if axis_name is None:
      return ids
    return ids + jnp.uint32(self.local_envs) * jax.lax.axis_index(axis_name).astype(jnp.uint32)

  # ------------------------------------------------------------------------------------------
  def gate(self, hp: HParams) -> gates_lib.Gate:
    """The gate with the (traced) parameters of `hp` (structure from `gate_template`)."""
    if self._gate_template is None:
      raise ValueError(f"algo {self.config.algo!r} has no gate")
    return dataclasses.replace(self._gate_template, params=hp.gate)

  def _norm(self, stats, obs):
    if self.config.normalize_obs:
      return normalization.normalize(stats, obs)
    return obs

  def init_params(self, key: Array):
    """Network parameters of the run with PRNG key `key` (the same key `init` takes)."""
    k_params = jax.random.split(key, 3)[0]
    return self.network.init(k_params, jnp.zeros((1,) + self.env.spec.obs_shape, jnp.float32))

  def init(self, key: Array, hp: HParams, axis_name: str | None = None) -> TrainState:
    """Initial state. With `axis_name`, params are shared and envs differ per device."""
    cfg, spec = self.config, self.env.spec
    _, k_env, k_state = jax.random.split(key, 3)
    params = self.init_params(key)
    env_state, obs = jax.vmap(self.env.reset)(env_keys(k_env, self.env_ids(axis_name)))
    stats = normalization.init(spec.obs_shape)
    if cfg.normalize_obs:
      stats = normalization.update(stats, obs, axis_name)
    width = width_lib.initial_width(hp.gate, self.config.gate_family)
    return TrainState(params, self.tx.init(params), env_state, obs, stats, k_state,
                      jnp.zeros((), jnp.int32), width)

  # ------------------------------------------------------------------------------------------
  def rollout(self, params, env_state, obs, stats, key, env_ids: Array | None = None):
    """`num_steps` steps of this device's envs: (env_state, obs, Transition[T, B]).

    Step t's random numbers for env e come from fold_in(split(key, T)[t], e) (`env_keys`);
    `env_ids` are the envs' global indices (default: all envs, one device).
    """
    cfg = self.config
    env_ids = self.env_ids() if env_ids is None else env_ids

    def step(carry, key):
      env_state, obs = carry
      keys = jax.vmap(jax.random.split)(env_keys(key, env_ids))  # [B, 2]
      dist, value = self.network.apply(params, self._norm(stats, obs))
      action = sample_per_env(dist, keys[:, 0])
      log_prob = dist.log_prob(action)
      env_state, ts = jax.vmap(self.env.step)(keys[:, 1], env_state, action)
      tr = Transition(obs, action, log_prob, value, ts.reward, ts.terminated, ts.truncated,
                      ts.final_obs, ts.episode_return, ts.episode_length)
      return (env_state, ts.obs), tr

    (env_state, obs), traj = jax.lax.scan(step, (env_state, obs),
                                          jax.random.split(key, cfg.num_steps))
    return env_state, obs, traj

  def minibatch_indices(self, key: Array, env_ids: Array) -> Array:
    """Minibatches of every epoch as indices into the flat [T·B] batch: [epochs·M, T·B/M].

    Stratified by env when M divides T: each minibatch takes T/M random steps of every env
    (env e's steps permuted with fold_in(key, e)). Every device then holds an equal, fixed part
    of each global minibatch, so the pmean of per-device gradients is the gradient of one
    device holding all envs. Otherwise (one device only) a plain shuffle of the whole batch.
    """
    cfg = self.config
    t, b, m, epochs = cfg.num_steps, self.local_envs, cfg.num_minibatches, cfg.update_epochs
    if t % m:
      return minibatch_permutations(key, epochs, t * b).reshape(epochs * m, t * b // m)
    steps = jax.vmap(lambda k: minibatch_permutations(k, epochs, t))(env_keys(key, env_ids))
    idx = steps * b + jnp.arange(b, dtype=jnp.int32)[:, None, None]  # [B, epochs, T]: t·B + e
    idx = idx.reshape(b, epochs, m, t // m)
    return jnp.transpose(idx, (1, 2, 3, 0)).reshape(epochs * m, (t // m) * b)

  def next_values(self, params, stats, traj: Transition, last_obs: Array) -> Array:
    """V(s'_t) for GAE, [T, B]: values[t+1] inside the rollout, V(last_obs) at its end, and
    V(final_obs[t]) where step t was truncated (terminated steps are masked by GAE).

    The truncated case needs a critic pass over the final observations: one batched call, made
    only when some step was truncated (`lax.cond`: skipped in a single-run program; under vmap
    both branches run, as an unconditional batched call would).
    """
    value_fn = lambda o: self.network.apply(params, self._norm(stats, o), method=ActorCritic.value)
    shifted = jnp.concatenate([traj.value[1:], value_fn(last_obs)[None]], axis=0)
    return jax.lax.cond(
        jnp.any(traj.truncated),
        lambda: jnp.where(traj.truncated, value_fn(traj.final_obs), shifted),
        lambda: shifted)

  def update(self, state: TrainState, hp: HParams,
             axis_name: str | None = None) -> tuple[TrainState, dict[str, Array]]:
    """One update: rollout, advantages, the update rule, metrics.

    With `axis_name` (inside pmap / shard_map over `num_devices` devices), each device steps
    its num_envs/num_devices envs, and gradients, advantage and observation statistics and
    metrics are averaged over that axis: the global batch is num_envs × num_steps, as on one
    device.
    """
    cfg = self.config
    key, k_roll, k_perm = jax.random.split(state.key, 3)
    env_ids = self.env_ids(axis_name)
    params, stats = state.params, state.obs_stats
    env_state, last_obs, traj = self.rollout(params, state.env_state, state.obs, stats, k_roll,
                                             env_ids)

    next_values = self.next_values(params, stats, traj, last_obs)
    advantage, target = bootstrap_advantages(traj, next_values, hp)

    n = cfg.num_steps * self.local_envs
    flat = lambda x: x.reshape((n,) + x.shape[2:])  # [T, B] → [T·B], index t·B + b
    batch = Batch(flat(self._norm(stats, traj.obs)), flat(traj.action), flat(traj.log_prob),
                  flat(traj.value), flat(advantage), flat(target))

    if cfg.anneal_lr:
      lr = hp.lr * (1.0 - state.update.astype(jnp.float32) / cfg.num_updates)
    else:
      lr = hp.lr

    rule_hp = hp
    if self.width_spec is not None:  # this update's gate: the width from the controller state
      rule_hp = hp._replace(gate=width_lib.gate_hparams(hp.gate, state.gate_width,
                                                        self.width_spec))
    params, opt_state, rule_metrics = self.rule.update(params, state.opt_state, rule_hp, batch,
                                                       k_perm, lr, env_ids, axis_name)

    # KL(π_old‖π_new) over the whole update, on the rollout's own samples (k3 estimator).
    new_log_prob = self.network.apply(params, batch.obs, method=ActorCritic.policy).log_prob(
        batch.action)
    approx_kl = rollout_kl(batch, new_log_prob)

    if cfg.normalize_obs:
      stats = normalization.update(stats, traj.obs, axis_name)

    done = jnp.logical_or(traj.terminated, traj.truncated).astype(jnp.float32)
    sums = {"episodes": jnp.sum(done), "ret": jnp.sum(traj.episode_return * done),
            "len": jnp.sum(traj.episode_length.astype(jnp.float32) * done)}
    rule_metrics = {name: jnp.asarray(v, jnp.float32) for name, v in rule_metrics.items()}
    means = {name: v for name, v in rule_metrics.items() if name not in MAX_METRICS}
    means.update(approx_kl=approx_kl, lr=jnp.asarray(lr, jnp.float32))
    maxes = {name: v for name, v in rule_metrics.items() if name in MAX_METRICS}
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
      means = jax.lax.pmean(means, axis_name)
      maxes = jax.lax.pmax(maxes, axis_name)
    episodes = sums["episodes"]
    safe = jnp.maximum(episodes, 1.0)
    # The rule's metrics it does not have are NaN (after the collectives: pmax turns NaN to −inf).
    metrics = {name: jnp.full((), jnp.nan, jnp.float32) for name in RULE_METRICS}
    metrics.update(means, **maxes)
    metrics.update(
        episode_return=jnp.where(episodes > 0, sums["ret"] / safe, jnp.nan),
        episode_length=jnp.where(episodes > 0, sums["len"] / safe, jnp.nan),
        episodes=episodes,
        kl_spike=(approx_kl > cfg.kl_spike_threshold).astype(jnp.float32),
        gate_width=state.gate_width)
    metrics = {name: metrics[name] for name in METRICS}
    width = state.gate_width
    if self.width_spec is not None:  # from the device-averaged KL: every device agrees
      width = width_lib.update_width(width, width_lib.initial_width(hp.gate, cfg.gate_family),
                                     means["approx_kl"], hp.target_kl, self.width_spec)
    new_state = TrainState(params, opt_state, env_state, last_obs, stats, key, state.update + 1,
                           width)
    return new_state, metrics

  # ------------------------------------------------------------------------------------------
  def train_chunk(self, state: TrainState, hp: HParams, num_updates: int,
                  axis_name: str | None = None) -> tuple[TrainState, dict[str, Array]]:
    """`num_updates` updates as one scan; metrics have a leading [num_updates] axis."""
    return jax.lax.scan(lambda s, _: self.update(s, hp, axis_name), state, None,
                        length=num_updates)

  def train(self, key: Array, hp: HParams | None = None) -> tuple[TrainState, dict[str, Array]]:
    """A whole run (init + all updates) as one pure function of the key."""
    hp = hparams_from_config(self.config) if hp is None else hp
    state = self.init(key, hp)
    return self.train_chunk(state, hp, self.config.num_updates)


def make_train(config: TrainConfig):
  """`train(key) -> (final_state, metrics)` for `config`: pure, jittable and vmappable.

  Metrics are a dict of [num_updates] arrays (see `METRICS`). Validation happens here, before
  any tracing. Example:

      train = jax.jit(make_train(TrainConfig(algo="ppo")))
      state, metrics = jax.vmap(train)(jax.random.split(jax.random.key(0), 16))
  """
  trainer = Trainer(config)
  hp = hparams_from_config(trainer.config)

  def train(key: Array):
    return trainer.train(key, hp)

  return train
