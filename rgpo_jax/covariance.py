"""Clip-Cov and KL-Cov: policy losses that act on the tokens with the largest covariance.

Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models"
(arXiv 2505.22617), show that policy entropy falls by the covariance between a token's
log-probability and its advantage, and restrain the few high-covariance tokens:

    Cov_t = (Â_t − mean Â)·(log π_θ(y_t) − mean log π_θ),     means over the batch's valid tokens,

- Clip-Cov: among tokens with lower < Cov_t < upper that the gate has not already clipped,
  n = max(⌊fraction·N⌋, 1) chosen uniformly at random get no gradient (w = 0);
- KL-Cov: the n = max(⌊fraction·N⌋, 1) tokens of largest Cov_t get a penalty coef·|log r_t|
  added to their loss (verl's `ppo_kl_coef`).

Source: verl `compute_policy_loss_clip_cov` / `compute_policy_loss_kl_cov` (defaults fraction
2e-4, lower 1, upper 5, coef 1), from PRIME-RL/Entropy-Mechanism-of-RL. Unlike verl, the gate is
any `Gate` (Clip-Cov defaults to PPO-clip as verl, KL-Cov to plain IS as verl) and the random
choice takes an explicit PRNG key. Selections are batch statistics, not elementwise, and are
stop-gradiented (they only choose tokens). Under `jit` the count n may be traced: tokens are
ranked (a double argsort) instead of `top_k`, so nothing needs a static size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax import aggregation
from rgpo_jax import gates as gates_lib
from rgpo_jax import ratios
from rgpo_jax._checks import as_bool_mask, check_number, check_same_shape

Array = jax.Array


def _check_fraction(fn: str, fraction):
  check_number(fn, "fraction", fraction, lambda v: 0 < v <= 1, "in (0, 1]")


def _valid(fn: str, log_prob: Array, mask: Array | None) -> Array:
  if mask is None:
    return jnp.ones(jnp.shape(log_prob), bool)
  if jnp.shape(mask) != jnp.shape(log_prob):
    raise ValueError(f"{fn}: mask must have the shape of log_prob {tuple(jnp.shape(log_prob))}, "
                     f"got mask{tuple(jnp.shape(mask))}")
  return as_bool_mask(fn, mask)


def covariance_scores(log_prob: Array, advantage: Array, mask: Array | None = None) -> Array:
  """Cov_t = (Â_t − mean Â)(log π_t − mean log π) over the valid tokens; 0 on padding.

  Both inputs are stop-gradiented (this only selects tokens)."""
  check_same_shape("covariance_scores", log_prob=log_prob, advantage=advantage)
  valid = _valid("covariance_scores", log_prob, mask)
  lp, adv = jax.lax.stop_gradient((log_prob, advantage))
  lp, adv = jnp.where(valid, lp, 0.0), jnp.where(valid, adv, 0.0)
  n = jnp.maximum(jnp.sum(valid), 1).astype(lp.dtype)
  centred = lambda x: jnp.where(valid, x - jnp.sum(x) / n, 0.0)
  return centred(adv) * centred(lp)


def _select_top(priority: Array, eligible: Array, count: Array) -> Array:
  """The `count` eligible entries of largest priority (ties: first in flat order)."""
  flat = jnp.where(eligible, priority, -jnp.inf).ravel()
  rank = jnp.argsort(jnp.argsort(-flat, stable=True), stable=True).reshape(priority.shape)
  return eligible & (rank < count)


def _count(fraction, valid: Array) -> Array:
  return jnp.maximum(jnp.floor(fraction * jnp.sum(valid)), 1.0)


def clip_cov_selection(key: Array, log_prob: Array, advantage: Array, mask: Array | None,
                       already_clipped: Array, *, fraction: float = 2e-4, lower: float = 1.0,
                       upper: float = 5.0) -> Array:
  """Clip-Cov's tokens (bool, shape of log_prob): n = max(⌊fraction·N⌋, 1) drawn uniformly
  (with `key`) among valid tokens with lower < Cov < upper not `already_clipped` (fewer if
  fewer qualify)."""
  fn = "clip_cov_selection"
  _check_fraction(fn, fraction)
  valid = _valid(fn, log_prob, mask)
  cov = covariance_scores(log_prob, advantage, valid)
  eligible = valid & ~already_clipped & (cov > lower) & (cov < upper)
  return _select_top(jax.random.uniform(key, jnp.shape(log_prob)), eligible,
                     _count(fraction, valid))


def kl_cov_selection(log_prob: Array, advantage: Array, mask: Array | None = None, *,
                     fraction: float = 2e-4) -> Array:
  """KL-Cov's tokens (bool): the n = max(⌊fraction·N⌋, 1) valid tokens of largest Cov."""
  _check_fraction("kl_cov_selection", fraction)
  valid = _valid("kl_cov_selection", log_prob, mask)
  return _select_top(covariance_scores(log_prob, advantage, valid), valid,
                     _count(fraction, valid))


class CovarianceAux(NamedTuple):
  """selected_fraction: fraction of valid tokens chosen; approx_kl: mean k3 KL(π_old‖π_θ)."""
  selected_fraction: Array
  approx_kl: Array


def _gated_objective(gate, log_prob, old_log_prob, advantage, valid, max_log_ratio):
  adv = jax.lax.stop_gradient(jnp.where(valid, advantage, 0.0))
  log_r = ratios.masked_log_ratio(log_prob, old_log_prob, valid)
  r = ratios.exp_clamped(log_r, max_log_ratio)
  return gate.value(r, adv) * adv, log_r, r, adv


def _weighted(per_token, sample_weight, valid):
  """per_token·sg(c) (verl multiplies each token's loss by the rollout-correction weight)."""
  if sample_weight is None:
    return per_token
  return per_token * jax.lax.stop_gradient(jnp.where(valid, sample_weight, 0.0))


def _aux(selected, valid, log_r):
  lr = jax.lax.stop_gradient(jnp.clip(log_r, -20.0, 20.0))
  k3 = jnp.expm1(-lr) + lr
  mean = lambda x: aggregation.aggregate(x.astype(lr.dtype), valid, "token-mean")
  return CovarianceAux(selected_fraction=mean(selected), approx_kl=mean(k3))


def clip_cov_policy_loss(key: Array, log_prob: Array, old_log_prob: Array, advantage: Array,
                         mask: Array | None = None, *, gate: gates_lib.Gate | None = None,
                         fraction: float = 2e-4, lower: float = 1.0, upper: float = 5.0,
                         aggregation_mode: str = "token-mean", sample_weight: Array | None = None,
                         max_log_ratio: float = ratios.DEFAULT_MAX_LOG_RATIO,
                         ) -> tuple[Array, CovarianceAux]:
  """Clip-Cov: L = −agg[(1 − sel_t)·g(r_t)·Â_t], sel = `clip_cov_selection` (stop-gradiented).

  Per-token weight: w(r_t) for unselected tokens, 0 for selected ones. "Already clipped"
  tokens (not eligible) are those where the gate passes almost no gradient,
  g'(r) < 0.01·g'(1) (for PPO-clip exactly verl's `clip_by_origin`).

  Args:
    key: PRNG key of the random choice.
    log_prob (differentiated), old_log_prob, advantage (stop-gradiented), mask: [..., T].
    gate: default `gates.ppo_clip(0.2)` (verl).
    fraction, lower, upper: verl's clip_cov_ratio, clip_cov_lb, clip_cov_ub.
    aggregation_mode: an `aggregation` mode.
    sample_weight: optional detached per-token weight (e.g. a rollout correction), same shape.
  """
  gate = gates_lib.ppo_clip(0.2) if gate is None else gate
  check_same_shape("clip_cov_policy_loss", log_prob=log_prob, old_log_prob=old_log_prob,
                   advantage=advantage, mask=mask, sample_weight=sample_weight)
  valid = _valid("clip_cov_policy_loss", log_prob, mask)
  objective, log_r, r, adv = _gated_objective(gate, log_prob, old_log_prob, advantage, valid,
                                              max_log_ratio)
  r0 = jax.lax.stop_gradient(r)
  slope = gate.derivative(r0, adv)
  already_clipped = slope < 0.01 * gate.derivative(jnp.ones_like(r0), adv)
  selected = clip_cov_selection(key, log_prob, advantage, valid, already_clipped,
                                fraction=fraction, lower=lower, upper=upper)
  objective = _weighted(jnp.where(selected, 0.0, objective), sample_weight, valid)
  loss = -aggregation.aggregate(objective, valid, aggregation_mode)
  return loss, _aux(selected, valid, log_r)


def kl_cov_policy_loss(log_prob: Array, old_log_prob: Array, advantage: Array,
                       mask: Array | None = None, *, gate: gates_lib.Gate | None = None,
                       fraction: float = 2e-4, coef: float = 1.0,
                       aggregation_mode: str = "token-mean", sample_weight: Array | None = None,
                       max_log_ratio: float = ratios.DEFAULT_MAX_LOG_RATIO,
                       ) -> tuple[Array, CovarianceAux]:
  """KL-Cov: L = agg[−g(r_t)·Â_t + coef·sel_t·|log r_t|], sel = `kl_cov_selection`.

  Per-token gradient on log π_θ: −w(r_t)·Â_t + coef·sign(log r_t) on selected tokens (the
  penalty pulls them back towards π_old), −w(r_t)·Â_t elsewhere.

  Args:
    log_prob (differentiated), old_log_prob, advantage (stop-gradiented), mask: [..., T].
    gate: default `gates.importance()` (verl's KL-Cov has no clip).
    fraction, coef: verl's kl_cov_ratio and ppo_kl_coef.
    aggregation_mode: an `aggregation` mode.
    sample_weight: optional detached per-token weight, same shape (multiplies the whole term).
  """
  gate = gates_lib.importance() if gate is None else gate
  check_same_shape("kl_cov_policy_loss", log_prob=log_prob, old_log_prob=old_log_prob,
                   advantage=advantage, mask=mask, sample_weight=sample_weight)
  check_number("kl_cov_policy_loss", "coef", coef, lambda v: v >= 0, ">= 0")
  valid = _valid("kl_cov_policy_loss", log_prob, mask)
  objective, log_r, _, _ = _gated_objective(gate, log_prob, old_log_prob, advantage, valid,
                                            max_log_ratio)
  selected = kl_cov_selection(log_prob, advantage, valid, fraction=fraction)
  per_token = -objective + jnp.where(selected, coef * jnp.abs(log_r), 0.0)
  loss = aggregation.aggregate(_weighted(per_token, sample_weight, valid), valid, aggregation_mode)
  return loss, _aux(selected, valid, log_r)
