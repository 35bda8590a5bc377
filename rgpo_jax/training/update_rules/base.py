"""What every update rule shares: the batch, value regression and Adam minibatch epochs.

An update rule turns one rollout's batch into new parameters. The trainer (`train.Trainer`)
does everything around it (rollout, GAE, observation statistics, KL and episode metrics,
sweeps, devices, checkpoints); a rule only implements

    rule.update(params, opt_state, hp, batch, key, lr, env_ids, axis_name)
        -> (params, opt_state, metrics)

where `metrics` holds the rule's entries of `METRICS` (per-update scalars on this device; the
trainer averages them over devices, `MAX_METRICS` by maximum, and fills the entries a rule
does not have with NaN, written as null in metrics.jsonl). All rules keep the Adam state of
the whole network in `opt_state` (the same pytree for every rule, so checkpoints look alike).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rgpo_jax import losses

Array = jax.Array

# Metrics written for every update, in order: the trainer's shared ones (episode statistics,
# approx_kl, kl_spike, lr) and the rules' own. A rule's metric it does not compute is NaN:
#   gated: NaN for line_search_steps, step_accepted, kl_after_step, cg_residual;
#   natural_gradient: gate statistics of the surrogate at the accepted parameters (relative to
#     π_old), grad_norm = ‖∇surrogate‖, all set;
#   weighted_regression: weight_mean / weight_max are the AWR weights; NaN for gate_mean,
#     acceptance/rejection fractions, effective_update_ratio, ratio_max and the TRPO metrics.
METRICS = ("episode_return", "episode_length", "episodes", "approx_kl", "kl_spike", "gate_mean",
           "acceptance_fraction", "rejection_fraction", "effective_update_ratio", "weight_mean",
           "weight_max", "ratio_max", "entropy", "policy_loss", "value_loss", "grad_norm", "lr",
           "line_search_steps", "step_accepted", "kl_after_step", "cg_residual", "gate_width")

# Metrics of the trainer (gate_width: the width k or ε the update's gate used, NaN without
# one); the rest are produced by the rules. MAX_METRICS are reduced over devices by maximum.
TRAINER_METRICS = ("episode_return", "episode_length", "episodes", "approx_kl", "kl_spike", "lr",
                   "gate_width")
RULE_METRICS = tuple(name for name in METRICS if name not in TRAINER_METRICS)
MAX_METRICS = ("weight_max", "ratio_max")


class Batch(NamedTuple):
  """One rollout, flattened to [N] = [T·B] samples (index t·B + b).

  obs: normalised observations [N, *obs]; action [N, ...]; log_prob: log π_old(a|s) [N];
  value: V_old(s) [N]; advantage: GAE advantages [N] (not normalised); target: TD(λ) value
  targets advantage + value [N].
  """

  obs: Array
  action: Array
  log_prob: Array
  value: Array
  advantage: Array
  target: Array


def rollout_kl(batch: Batch, new_log_prob: Array) -> Array:
  """The trainer's `approx_kl`: mean k3 estimate of KL(π_old‖π_new) on the rollout's own actions
  (this device's batch). One definition, because TRPO's line search bounds this very number.

  Args:
    batch: the rollout (its `log_prob` is log π_old(a|s)).
    new_log_prob: log π_new(a|s) of the batch's actions [N].
  """
  return jnp.mean(losses.kl_k3(batch.log_prob, new_log_prob))


def value_regression_loss(values: Array, batch: Batch, hp, clip_value: bool) -> Array:
  """½ E[(V − target)²], PPO-clipped around V_old by `hp.value_clip_epsilon` if `clip_value`."""
  if clip_value:
    return losses.value_loss(values, batch.target, old_value=batch.value,
                             clip_epsilon=hp.value_clip_epsilon)
  return losses.value_loss(values, batch.target)


def minibatch_epochs(loss_fn: Callable[..., tuple[Array, Any]], tx: optax.GradientTransformation,
                     params, opt_state, hp, batch: Batch, indices: Array, lr: Array,
                     axis_name: str | None = None):
  """Adam steps on `loss_fn` over epochs × minibatches: ((params, opt_state), (aux, grad_norm)).

  Args:
    loss_fn: (params, hp, minibatch: Batch) -> (loss, aux).
    tx: the gradient transformation (Adam without learning rate; the step is −lr·update).
    indices: [epochs, M, minibatch] indices into the flat batch (`Trainer.minibatch_indices`).
    lr: learning rate (traced scalar).
    axis_name: data-parallel axis; gradients are averaged over it before the global-norm clip
      (`hp.max_grad_norm`, <= 0 disables), so every device takes the same step.
  Returns:
    final (params, opt_state) and the per-minibatch aux and gradient norms, [epochs, M, ...].
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def minibatch_step(carry, mb):
    params, opt_state = carry
    (_, aux), grads = grad_fn(params, hp, mb)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    grad_norm = optax.global_norm(grads)
    scale = jnp.where((hp.max_grad_norm > 0) & (grad_norm > hp.max_grad_norm),
                      hp.max_grad_norm / jnp.maximum(grad_norm, 1e-12), 1.0)
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = tx.update(grads, opt_state)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return (params, opt_state), (aux, grad_norm)

  def epoch(carry, epoch_idx):  # epoch_idx [M, minibatch]
    shuffled = jax.tree.map(lambda x: jnp.take(x, epoch_idx.reshape(-1), axis=0).reshape(
        epoch_idx.shape + x.shape[1:]), batch)
    return jax.lax.scan(minibatch_step, carry, shuffled)

  # One gather per epoch, scanned over its minibatches. (Gathering all epochs at once and
  # scanning the flat [epochs·M] stack measured 30% slower per update on XLA:CPU.)
  return jax.lax.scan(epoch, (params, opt_state), indices)
