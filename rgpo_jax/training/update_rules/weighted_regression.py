"""Advantage-weighted regression: AWR's update rule (Peng et al. 2019, arXiv 1910.00177).

    w = min(exp(Â/β), w_max)                       (stop-gradient; β = awr_beta, w_max clip)
    L(θ) = −mean(w · log π_θ(a|s)) + c_v·½ E[(V_θ − V_target)²] − c_e·H[π_θ]

minimised by update_epochs × num_minibatches Adam steps, with V_target the TD(λ) return
(GAE's advantage + V_old, λ = gae_lambda) and Â = V_target − V_old.

Follows the paper and its reference implementation (github.com/xbpeng/awr) in: exponentiated
advantages with temperature β = 1.0 and weight clip w_max = 20 (their defaults), advantages
normalised over the batch to mean 0 and std 1 before exp(Â/β) (as the reference does;
`normalize_advantages`, over all devices when data-parallel), TD(λ) value targets with
λ = 0.95, policy and value fitted by regression. Differs in: (1) on-policy batches: each update
uses only the latest rollout, where the paper samples from a replay buffer of the last 50k
transitions (so π_old is the current policy and nothing is off-policy); (2) the weights use
the advantages of the pre-update critic, where the reference first fits the critic and
recomputes Â with it; (3) one Adam optimiser for policy and value with the shared learning
rate, gradient clip and update_epochs × num_minibatches steps (the reference: SGD with
momentum, step sizes 5e-5 / 1e-2, 1000 actor and 500 critic steps per 2048 samples) and the
shared entropy bonus ent_coef (the reference has none; set --ent-coef 0 for that).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rgpo_jax import advantages as adv_lib
from rgpo_jax import losses
from rgpo_jax.training.update_rules.base import Batch, minibatch_epochs, value_regression_loss

Array = jax.Array


def awr_weights(advantage: Array, beta: Array, max_weight: Array) -> Array:
  """w = min(exp(Â/β), w_max), any shape; computed as exp(min(Â/β, log w_max)) (no overflow).

  Args:
    advantage: Â, any shape; beta: temperature > 0; max_weight: clip w_max > 0 (broadcast).
  Returns:
    weights, the shape of `advantage`, in (0, w_max].
  """
  return jnp.exp(jnp.minimum(advantage / beta, jnp.log(max_weight)))


class WeightedRegression:
  """AWR's update rule (see the module docstring)."""

  name = "weighted_regression"

  def __init__(self, trainer):
    self.trainer = trainer
    self.config = trainer.config

  def loss(self, params, hp, batch: Batch):
    """Total loss on a minibatch whose `advantage` field holds the weights w."""
    dist, value = self.trainer.network.apply(params, batch.obs)
    pg_loss = -jnp.mean(batch.advantage * dist.log_prob(batch.action))
    v_loss = value_regression_loss(value, batch, hp, self.config.clip_value)
    entropy = jnp.mean(dist.entropy())
    total = pg_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
    return total, (pg_loss, v_loss, entropy)

  def update(self, params, opt_state, hp, batch: Batch, key, lr, env_ids,
             axis_name: str | None = None):
    cfg = self.config
    advantage = batch.advantage
    if cfg.normalize_advantages:
      advantage = adv_lib.normalize(advantage, axis_name=axis_name)
    weights = jax.lax.stop_gradient(
        awr_weights(advantage, hp.rule["awr_beta"], hp.rule["awr_max_weight"]))
    indices = self.trainer.minibatch_indices(key, env_ids).reshape(
        cfg.update_epochs, cfg.num_minibatches, -1)
    (params, opt_state), ((pg, vl, ent), gn) = minibatch_epochs(
        self.loss, self.trainer.tx, params, opt_state, hp, batch._replace(advantage=weights),
        indices, lr, axis_name)
    metrics = {"weight_mean": jnp.mean(weights), "weight_max": jnp.max(weights),
               "entropy": jnp.mean(ent), "policy_loss": jnp.mean(pg),
               "value_loss": jnp.mean(vl), "grad_norm": jnp.mean(gn)}
    return params, opt_state, metrics
