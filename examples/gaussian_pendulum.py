"""A continuous-action agent: a gated PPO-style learner with a Gaussian policy on Pendulum-v1.

The policy is `rgpo_jax.distributions.Gaussian(mean, log_std)`: a state-dependent mean from an
MLP and a learned, state-independent log standard deviation. Its `log_prob` of the sampled
(unclipped) action feeds the gated loss; the environment clips the torque to [−2, 2] itself.
Pendulum never terminates: every episode is truncated after 200 steps, so each one bootstraps
from the value of its final observation (`info["final_observation"]`, Gymnax >= 1.0).

The default gate is `pessimistic_sigmoid` (RGPO's sigmoid, with PPO's pessimism on the side
where a sample moved against its advantage). With this config's large steps (10 epochs × 8
minibatches per rollout, lr 1e-3) the plain `sigmoid` gate drifted and did not learn (measured:
−1306 and −1416 after 6e5 steps on 2 seeds), while `pessimistic_sigmoid` reached −171 and −224
after 3e5 steps and `ppo_clip` stayed between −160 and −220 over the second half of 6e5 steps
(see docs/method.md for why).

    python examples/gaussian_pendulum.py                  # 2 seeds, 3e5 steps each
    python examples/gaussian_pendulum.py --gate ppo_clip  # PPO
    python examples/gaussian_pendulum.py --quick          # a few updates (smoke test)

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
from rgpo_jax.distributions import Gaussian
from rgpo_jax.networks import orthogonal  # flax's orthogonal init, without LAPACK's QR: a
# vmapped QR (seeds vmapped below) can deadlock XLA:CPU's thread pool (docs/pitfalls.md).


class Config(NamedTuple):
  num_envs: int = 16
  num_steps: int = 128
  total_steps: int = 300_000
  epochs: int = 10
  minibatches: int = 8
  lr: float = 1e-3
  gamma: float = 0.9  # Pendulum's reward is dense: a short horizon learns much faster
  gae_lambda: float = 0.95
  vf_coef: float = 0.5
  ent_coef: float = 0.0
  max_grad_norm: float = 0.5
  reward_scale: float = 0.1  # rewards lie in [−16.3, 0]; scaled for the critic only


class ActorCritic(nn.Module):
  action_size: int
  max_action: float

  @nn.compact
  def __call__(self, obs):
    def dense(features, gain):
      return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros)
    actor = nn.tanh(dense(64, np.sqrt(2))(obs))
    actor = nn.tanh(dense(64, np.sqrt(2))(actor))
    mean = self.max_action * dense(self.action_size, 0.01)(actor)
    log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
    critic = nn.tanh(dense(64, np.sqrt(2))(obs))
    critic = nn.tanh(dense(64, np.sqrt(2))(critic))
    return Gaussian(mean, log_std), jnp.squeeze(dense(1, 1.0)(critic), -1)


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
  env, env_params = gymnax.make("Pendulum-v1")
  action_space = env.action_space(env_params)
  network = ActorCritic(action_space.shape[0], float(action_space.high))
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
    policy, value = network.apply(params, obs)
    action = policy.sample(k_act)
    # gymnax 1.0: six outputs, auto-reset, final observation in info.
    next_obs, env_state, reward, terminated, truncated, info = step(
        jax.random.split(k_env, config.num_envs), env_state, action, env_params)
    done = jnp.logical_or(terminated, truncated)
    running_return = running_return + reward  # unscaled, for reporting
    transition = Transition(obs, action, policy.log_prob(action), value,
                            config.reward_scale * reward, terminated,
                            truncated, info["final_observation"],
                            jnp.where(done, running_return, 0.0), done)
    running_return = jnp.where(done, 0.0, running_return)
    return (params, env_state, next_obs, running_return), transition

  def loss_fn(params, batch):
    policy, value = network.apply(params, batch.obs)
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
  parser.add_argument("--gate", default="pessimistic_sigmoid",
                      help="a gates.make name: sigmoid (RGPO), ppo_clip, importance, sapo, ...")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--quick", action="store_true", help="2 updates (smoke test)")
  args = parser.parse_args()
  config = Config(total_steps=2 * 16 * 128) if args.quick else Config()
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
  first = returns[:, np.argmax(np.isfinite(returns).all(axis=0))]  # first update ending episodes
  print(f"mean episode return, first episodes: {np.nanmean(first):.1f}; "
        f"last 10% of updates, per seed: {np.round(np.nanmean(last, axis=1).astype(float), 1).tolist()} "
        f"(random policy about −1200; near −150 to −200 is swung up and balanced)")
  chunks = np.array_split(np.arange(returns.shape[1]), 10)
  curve = [float(np.nanmean(returns[:, c])) for c in chunks]
  print("return over training (mean over seeds, 10 equal stretches):", np.round(curve).tolist())
  print(f"acceptance fraction (samples still passing gradient), last update: "
        f"{float(np.mean(metrics['acceptance_fraction'][:, -1])):.3f}")


if __name__ == "__main__":
  main()
