"""A single-file PPO on CartPole-v1 (PureJaxRL style) whose policy loss is a gated loss.

The whole training (rollouts, GAE, minibatch epochs) is one jitted function; the only line that
decides the algorithm is the gate given to `losses.policy_loss`: `gates.sigmoid(4.0)` is RGPO,
`gates.ppo_clip(0.2)` is PPO, `gates.importance()` the IS surrogate.

Gymnax >= 1.0: `env.step` returns (obs, state, reward, terminated, truncated, info), resets by
itself, and leaves the last observation of a finished episode in `info["final_observation"]`:
a truncated step bootstraps from it, a terminated one does not.

    python examples/ppo_cartpole.py                  # RGPO (sigmoid gate, k = 4), 2 seeds, 5e5 steps
    python examples/ppo_cartpole.py --gate ppo_clip  # PPO
    python examples/ppo_cartpole.py --quick          # a few updates (smoke test)

Needs the `train` extra (flax, optax, gymnax).
"""

import argparse
import time
from typing import NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgpo_jax import advantages, gates, losses
from rgpo_jax.distributions import Categorical
from rgpo_jax.networks import orthogonal  # flax's orthogonal init, without LAPACK's QR: a
# vmapped QR (seeds vmapped below) can deadlock XLA:CPU's thread pool (docs/pitfalls.md).


class Config(NamedTuple):
  num_envs: int = 4
  num_steps: int = 128
  total_steps: int = 500_000
  epochs: int = 4
  minibatches: int = 4
  lr: float = 2.5e-4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  vf_coef: float = 0.5
  ent_coef: float = 0.01
  max_grad_norm: float = 0.5


class ActorCritic(nn.Module):
  num_actions: int

  @nn.compact
  def __call__(self, obs):
    def dense(features, gain):
      return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros)
    actor = nn.tanh(dense(64, np.sqrt(2))(obs))
    actor = nn.tanh(dense(64, np.sqrt(2))(actor))
    logits = dense(self.num_actions, 0.01)(actor)
    critic = nn.tanh(dense(64, np.sqrt(2))(obs))
    critic = nn.tanh(dense(64, np.sqrt(2))(critic))
    return logits, jnp.squeeze(dense(1, 1.0)(critic), -1)


class Transition(NamedTuple):
  obs: jax.Array
  action: jax.Array
  log_prob: jax.Array
  value: jax.Array
  reward: jax.Array
  terminated: jax.Array
  truncated: jax.Array
  final_obs: jax.Array
  episode_return: jax.Array  # return of the episode that ended at this step, else 0
  done: jax.Array


def make_train(config: Config, gate: gates.Gate):
  env, env_params = gymnax.make("CartPole-v1")
  network = ActorCritic(env.action_space(env_params).n)
  num_updates = config.total_steps // (config.num_envs * config.num_steps)
  minibatch_size = config.num_envs * config.num_steps // config.minibatches
  schedule = optax.linear_schedule(
      config.lr, 0.0, num_updates * config.epochs * config.minibatches)
  optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                          optax.adam(schedule, eps=1e-5))
  reset = jax.vmap(env.reset, in_axes=(0, None))
  step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def env_step(carry, key):
    params, env_state, obs, running_return = carry
    k_act, k_env = jax.random.split(key)
    logits, value = network.apply(params, obs)
    policy = Categorical(logits)
    action = policy.sample(k_act)
    # gymnax 1.0: six outputs, auto-reset, final observation in info.
    next_obs, env_state, reward, terminated, truncated, info = step(
        jax.random.split(k_env, config.num_envs), env_state, action, env_params)
    done = jnp.logical_or(terminated, truncated)
    running_return = running_return + reward
    transition = Transition(obs, action, policy.log_prob(action), value, reward, terminated,
                            truncated, info["final_observation"],
                            jnp.where(done, running_return, 0.0), done)
    running_return = jnp.where(done, 0.0, running_return)
    return (params, env_state, next_obs, running_return), transition

  def loss_fn(params, batch):
    logits, value = network.apply(params, batch.obs)
    policy = Categorical(logits)
    adv = advantages.normalize(batch.advantage)
    # The gated policy loss: its gradient is −w(r)·Â·∇log π / N with w(r) = g'(r)·r.
    pg_loss, aux = losses.policy_loss(gate, policy.log_prob(batch.action), batch.log_prob, adv)
    vf_loss = losses.value_loss(value, batch.target, old_value=batch.value, clip_epsilon=0.2)
    ent_loss = losses.entropy_loss(policy.entropy())  # −H: adding it rewards entropy
    return pg_loss + config.vf_coef * vf_loss + config.ent_coef * ent_loss, aux

  def update(carry, key):
    params, opt_state, env_state, obs, running_return = carry
    k_roll, k_epochs = jax.random.split(key)
    (params, env_state, obs, running_return), traj = jax.lax.scan(
        env_step, (params, env_state, obs, running_return),
        jax.random.split(k_roll, config.num_steps))
    # Bootstrap: V(next obs) inside an episode, V(final obs) where it ended (zeroed by GAE if
    # terminated), V(current obs) after the last step.
    _, last_value = network.apply(params, obs)
    _, final_value = network.apply(params, traj.final_obs)
    next_value = jnp.concatenate([traj.value[1:], last_value[None]])
    next_value = jnp.where(traj.done, final_value, next_value)
    adv, target = advantages.gae(traj.reward, traj.value, next_value, traj.terminated,
                                 traj.truncated, config.gamma, config.gae_lambda)
    batch = {"obs": traj.obs, "action": traj.action, "log_prob": traj.log_prob,
             "value": traj.value, "advantage": adv, "target": target}
    batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)

    def epoch(carry, key):
      params, opt_state = carry
      order = jax.random.permutation(key, config.num_envs * config.num_steps)
      minibatches = jax.tree.map(
          lambda x: x[order].reshape((config.minibatches, minibatch_size) + x.shape[1:]), batch)

      def minibatch(carry, mb):
        params, opt_state = carry
        grads, aux = jax.grad(loss_fn, has_aux=True)(params, _Batch(**mb))
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), aux.acceptance_fraction

      return jax.lax.scan(minibatch, (params, opt_state), minibatches)

    (params, opt_state), acceptance = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(k_epochs, config.epochs))
    finished = jnp.sum(traj.done)
    mean_return = jnp.where(finished > 0, jnp.sum(traj.episode_return) / finished, jnp.nan)
    metrics = {"episode_return": mean_return, "acceptance_fraction": jnp.mean(acceptance)}
    return (params, opt_state, env_state, obs, running_return), metrics

  def train(key):
    k_init, k_reset, k_train = jax.random.split(key, 3)
    params = network.init(k_init, jnp.zeros(env.observation_space(env_params).shape))
    obs, env_state = reset(jax.random.split(k_reset, config.num_envs), env_params)
    carry = (params, optimizer.init(params), env_state, obs, jnp.zeros(config.num_envs))
    _, metrics = jax.lax.scan(update, carry, jax.random.split(k_train, num_updates))
    return metrics

  return train


class _Batch(NamedTuple):
  obs: jax.Array
  action: jax.Array
  log_prob: jax.Array
  value: jax.Array
  advantage: jax.Array
  target: jax.Array


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--gate", default="sigmoid",
                      help="a gates.make name: sigmoid (RGPO), ppo_clip, importance, sapo, ...")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--quick", action="store_true", help="4 updates (smoke test)")
  args = parser.parse_args()
  config = Config(total_steps=4 * 4 * 128) if args.quick else Config()
  gate = gates.make(args.gate)
  train = jax.jit(jax.vmap(make_train(config, gate)))
  keys = jax.random.split(jax.random.key(0), args.seeds)
  start = time.time()
  metrics = jax.block_until_ready(train(keys))
  seconds = time.time() - start
  returns = np.asarray(metrics["episode_return"])  # [seeds, updates]
  last = returns[:, -max(1, returns.shape[1] // 10):]
  print(f"gate {args.gate}: {args.seeds} seeds x {config.total_steps} steps in {seconds:.1f} s "
        f"(compile included)")
  print(f"mean episode return, first update: {np.nanmean(returns[:, 0]):.1f}; "
        f"last 10% of updates, per seed: {np.round(np.nanmean(last, axis=1).astype(float), 1).tolist()} "
        f"(CartPole-v1's maximum is 500)")
  print(f"acceptance fraction (samples still passing gradient), last update: "
        f"{float(np.mean(metrics['acceptance_fraction'][:, -1])):.3f}")


if __name__ == "__main__":
  main()
