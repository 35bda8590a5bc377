"""Group methods through tunix's `GRPOLearner`: `grpo` (tunix's loss), `rgpo_dual`, `rgpo_sigmoid`.

The three differ only in the policy loss (`GRPOConfig.policy_loss_fn`): tunix's clipped GRPO
loss with β·KL(π_θ‖π_ref) in the loss, or one of this library's registered gates
(`rgpo_jax.rlhf.policy_loss`): RGPO's sigmoid gate on π_θ/π_old with the same β·KL penalty, or
the dual-ratio gate g(r_old)·g(r_ref)/g(1), which is anchored to π_ref by its second factor and
adds no penalty (β > 0 only makes tunix compute π_ref's log-probs). Each step samples G
completions per prompt, scores them, forms group advantages (tunix's "grpo" estimator, or
`config.advantage`: the Pass@k choices of `rgpo_jax.rlhf.advantage_estimators`) and takes `num_iterations` optimizer steps on that batch; with one iteration every
ratio r_old is 1 and the gates only act through their weight at 1, so the default is 2.

`TunixRunner` is the step loop shared with any tunix `RLLearner` (PPO uses it with a critic):
it calls, per step, what `RLLearner.train` calls for one global step of a colocated cluster
(vanilla rollout on the actor's own weights, one mini-batch, no gradient accumulation):
`_generate_and_compute_advantage`, then `update_actor` (and `update_critic` when the cluster
has a critic) once per iteration. Driving the step from here (instead of `learner.train` over a
dataset) lets the driver choose each step's prompts and sampling key, evaluate between steps,
checkpoint and stop cleanly. Pinned to google-tunix 0.1.7 (these are its internal methods).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax
from flax import nnx

from rgpo_jax.rlhf import methods
from rgpo_jax.rlhf import policy_loss  # noqa: F401  (registers rgpo_dual, rgpo_sigmoid, ...)

MAX_GRAD_NORM = 1.0  # global-norm gradient clipping before Adam, for every method


def optimizer(learning_rate: float) -> optax.GradientTransformation:
  """The optimizer of every method: Adam after global-norm clipping at `MAX_GRAD_NORM`."""
  return optax.chain(optax.clip_by_global_norm(MAX_GRAD_NORM), optax.adam(learning_rate))


def make_cluster(ctx: methods.MethodContext, *, critic=None, critic_optimizer=None):
  """A colocated tunix `RLCluster` (one mesh for every role, vanilla rollout) on ctx's models."""
  from tunix.rl import rl_cluster as rlc  # pylint: disable=import-outside-toplevel
  from tunix.rl.rollout import base_rollout  # pylint: disable=import-outside-toplevel
  cfg = ctx.config
  roles = {rlc.Role.ACTOR: ctx.mesh, rlc.Role.REFERENCE: ctx.mesh, rlc.Role.ROLLOUT: ctx.mesh}
  if critic is not None:
    roles[rlc.Role.CRITIC] = ctx.mesh
  training = rlc.RLTrainingConfig(
      actor_optimizer=optimizer(cfg.learning_rate), critic_optimizer=critic_optimizer,
      eval_every_n_steps=1 << 30, max_steps=None)
  rollout = base_rollout.RolloutConfig(
      max_tokens_to_generate=cfg.max_new_tokens, max_prompt_length=ctx.max_prompt_length,
      kv_cache_size=ctx.max_prompt_length + cfg.max_new_tokens, temperature=cfg.temperature,
      top_p=1.0, top_k=None)
  return rlc.RLCluster(actor=ctx.policy, critic=critic, reference=ctx.reference,
                       tokenizer=ctx.tokenizer, cluster_config=rlc.ClusterConfig(
                           role_to_mesh=roles, rollout_engine="vanilla", offload_to_cpu=False,
                           training_config=training, rollout_config=rollout))


def _record_train_steps(trainer, sink: list[dict[str, Any]]) -> None:
  """Append {"loss", "grad_norm", **aux} of every optimizer step of a tunix trainer to `sink`
  (the trainer hands its step's aux to `_post_process_train_step`, after buffering the loss)."""
  original = trainer._post_process_train_step  # pylint: disable=protected-access

  def record(aux):
    original(aux)
    buffered = trainer._buffered_train_metrics  # pylint: disable=protected-access
    sink.append({"loss": buffered.losses[-1],
                 "grad_norm": buffered.additional_metrics["grad_norm"][0][-1],
                 **{k: v for k, v in (aux or {}).items() if np.ndim(v) == 0}})

  trainer._post_process_train_step = record  # pylint: disable=protected-access


def _mean_metrics(records: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
  keys = [k for k in records[0] if all(k in r for r in records)] if records else []
  return {prefix + k: float(np.mean([np.asarray(r[k], np.float64) for r in records]))
          for k in keys}


class TunixRunner:
  """A method's step on a tunix RL learner (see the module docstring).

  Args:
    ctx: the method context.
    build_learner: `(cluster, reward_fn) -> learner` (a tunix `RLLearner`).
    critic, critic_optimizer: passed to the cluster (PPO).
  """

  def __init__(self, ctx: methods.MethodContext,
               build_learner: Callable[[Any, Callable[..., list[float]]], Any], *,
               critic=None, critic_optimizer=None):
    self.ctx = ctx
    self._rewards: list[float] = []
    self.cluster = make_cluster(ctx, critic=critic, critic_optimizer=critic_optimizer)
    self.learner = build_learner(self.cluster, self._reward_fn)
    self._actor_steps: list[dict[str, Any]] = []
    self._critic_steps: list[dict[str, Any]] = []
    _record_train_steps(self.cluster.actor_trainer, self._actor_steps)
    if self._has_critic:
      _record_train_steps(self.cluster.critic_trainer, self._critic_steps)

  @property
  def _has_critic(self) -> bool:
    return getattr(self.cluster, "_critic_trainer", None) is not None

  def _reward_fn(self, prompts, completions, **fields):
    rewards = self.ctx.task.reward_fn(prompts=prompts, completions=completions, **fields)
    self._rewards = [float(r) for r in rewards]
    return rewards

  @property
  def policy(self):
    return self.cluster.actor_trainer.model

  def _trainers(self) -> dict[str, Any]:
    trainers = {"actor": self.cluster.actor_trainer}
    if self._has_critic:
      trainers["critic"] = self.cluster.critic_trainer
    return trainers

  def checkpoint_state(self) -> dict[str, Any]:
    return {role: {"params": nnx.to_pure_dict(nnx.state(t.model, nnx.Param)),
                   "opt_state": nnx.to_pure_dict(nnx.state(t.optimizer, nnx.optimizer.OptState))}
            for role, t in self._trainers().items()}

  def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
    for role, t in self._trainers().items():
      for obj, kind, key in ((t.model, nnx.Param, "params"),
                             (t.optimizer, nnx.optimizer.OptState, "opt_state")):
        current = nnx.state(obj, kind)
        # Restored arrays take the placement of the ones they replace (the cluster's mesh):
        # the compiled programs then match, and the sampler accepts the weights.
        placed = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                              state[role][key], nnx.to_pure_dict(current))
        nnx.replace_by_pure_dict(current, placed)
        nnx.update(obj, current)

  def step(self, batch: dict[str, list], key: jax.Array) -> dict[str, float]:
    from tunix.rl import rl_cluster as rlc  # pylint: disable=import-outside-toplevel
    self.cluster.cluster_config.rollout_config.seed = key  # sampled from (seed, step) only
    repeat = self.learner._num_generations()  # pylint: disable=protected-access
    training_input = {k: list(np.repeat(np.asarray(v, dtype=object), repeat))
                      for k, v in batch.items()}
    self._actor_steps.clear()
    self._critic_steps.clear()
    # What `RLLearner.train` sets from the first batch: one micro-batch of the whole batch.
    self.learner._rollout_micro_batch_size = len(batch["prompts"])  # pylint: disable=protected-access
    self.learner._compute_logps_micro_batch_size = len(batch["prompts"])  # pylint: disable=protected-access
    example = self.learner._generate_and_compute_advantage(  # pylint: disable=protected-access
        training_input, rlc.Mode.TRAIN)
    for _ in range(self.learner._num_iterations()):  # pylint: disable=protected-access
      self.cluster.update_actor([example], None)
      if self._has_critic:
        self.cluster.update_critic([example], None)
    if self.learner.should_sync_weights:
      self.cluster.sync_weights()
    else:
      self.cluster.global_steps += 1
    metrics = {"reward_mean": float(np.mean(self._rewards)),
               "reward_std": float(np.std(self._rewards)),
               "completion_tokens": float(np.mean(np.sum(np.asarray(example.completion_mask),
                                                         axis=-1)))}
    metrics.update(_mean_metrics(self._actor_steps))
    metrics.update(_mean_metrics(self._critic_steps, prefix="critic/"))
    return metrics

  def close(self) -> None:
    self.learner.executor.shutdown(wait=False)


def _group_runner(ctx: methods.MethodContext) -> TunixRunner:
  from tunix.rl.grpo import grpo_learner  # pylint: disable=import-outside-toplevel
  from rgpo_jax.rlhf import advantage_estimators  # pylint: disable=import-outside-toplevel
  cfg = ctx.config
  algo = grpo_learner.GRPOConfig(
      policy_loss_fn=ctx.name, advantage_estimator=advantage_estimators.advantage_estimator_name(
          cfg.advantage, cfg.pass_k, cfg.num_generations), num_generations=cfg.num_generations,
      num_iterations=cfg.num_iterations, beta=cfg.beta, epsilon=0.2)
  return TunixRunner(ctx, lambda cluster, reward_fn: grpo_learner.GRPOLearner(
      rl_cluster=cluster, algo_config=algo, reward_fns=reward_fn))


for _name in ("grpo", "rgpo_dual", "rgpo_sigmoid"):
  methods.register_method(_name)(_group_runner)
