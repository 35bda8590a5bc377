"""Gated minibatch epochs: the PPO-style update rule of every gate (RGPO, PPO, IS, SAPO, ...).

For update_epochs passes over the rollout, in num_minibatches minibatches, one Adam step on

    L(θ) = −mean(g(r)·Â) + c_v·½ E[(V_θ − V_target)²] − c_e·H[π_θ],   r = π_θ/π_old,

with the gate g from `config.algo` (`gates.make`), advantages normalised per minibatch
(over all devices when data-parallel) and gradients averaged over devices before the
global-norm clip. RGPO (arXiv 2604.14895) and PPO (arXiv 1707.06347) differ only in g.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from rgpo_jax import advantages as adv_lib
from rgpo_jax import losses
from rgpo_jax.training.update_rules.base import Batch, minibatch_epochs, value_regression_loss


class GatedEpochs:
  """Minibatch epochs on the gated policy loss + value loss + entropy bonus (see module)."""

  name = "gated"

  def __init__(self, trainer):
    self.trainer = trainer
    self.config = trainer.config

  def loss(self, params, hp, batch: Batch, axis_name: str | None = None):
    """Total loss on a minibatch and (policy loss, value loss, entropy, `PolicyLossAux`)."""
    cfg = self.config
    dist, value = self.trainer.network.apply(params, batch.obs)
    log_prob = dist.log_prob(batch.action)
    advantage = batch.advantage
    if cfg.normalize_advantages:
      advantage = adv_lib.normalize(advantage, axis_name=axis_name)
    pg_loss, aux = losses.policy_loss(self.trainer.gate(hp), log_prob, batch.log_prob, advantage)
    v_loss = value_regression_loss(value, batch, hp, cfg.clip_value)
    entropy = dist.entropy()
    ent_loss = losses.entropy_loss(entropy)
    total = pg_loss + hp.vf_coef * v_loss + hp.ent_coef * ent_loss
    return total, (pg_loss, v_loss, -ent_loss, aux)

  def update(self, params, opt_state, hp, batch: Batch, key, lr, env_ids,
             axis_name: str | None = None):
    indices = self.trainer.minibatch_indices(key, env_ids).reshape(
        self.config.update_epochs, self.config.num_minibatches, -1)
    loss_fn = functools.partial(self.loss, axis_name=axis_name)
    (params, opt_state), ((pg, vl, ent, aux), gn) = minibatch_epochs(
        loss_fn, self.trainer.tx, params, opt_state, hp, batch, indices, lr, axis_name)
    metrics = {
        "gate_mean": jnp.mean(aux.gate_mean),
        "acceptance_fraction": jnp.mean(aux.acceptance_fraction),
        "rejection_fraction": jnp.mean(aux.rejection_fraction),
        "effective_update_ratio": jnp.mean(aux.effective_update_ratio),
        "weight_mean": jnp.mean(aux.weight_mean), "weight_max": jnp.max(aux.weight_max),
        "ratio_max": jnp.max(aux.ratio_max), "entropy": jnp.mean(ent),
        "policy_loss": jnp.mean(pg), "value_loss": jnp.mean(vl), "grad_norm": jnp.mean(gn)}
    return params, opt_state, metrics
