"""Real policies: per-sample policy gradients of a gated loss and their statistics."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp

from rgpo_jax import gates as gates_lib
from rgpo_jax import losses

Array = jax.Array


class PolicyBatch(NamedTuple):
  """A flat batch of N collected samples (any leading shape is flattened by the caller).

  obs: [N, *obs_shape].  action: [N, ...].  behavior_log_prob: log π_old(a|s), [N].
  advantage: Â, [N] (computed at collection time, stop-gradiented).
  """

  obs: Array
  action: Array
  behavior_log_prob: Array
  advantage: Array


def per_sample_policy_gradients(gate: gates_lib.Gate,
                                log_prob_fn: Callable[[Any, Array, Array], Array],
                                params: Any, batch: PolicyBatch) -> Array:
  """Per-sample gradients of the gated policy loss, flattened: [N, P].

  For sample i, ∇_θ L_i with L_i = `losses.policy_loss`(gate, log π_θ(a_i|s_i), log π_old,
  Â_i) on that single sample, i.e.

      ∇_θ L_i = −w(r_i; Â_i)·Â_i·∇_θ log π_θ(a_i|s_i),     r_i = π_θ(a_i|s_i)/π_old(a_i|s_i),

  computed as `vmap` over samples of `grad` (no per-sample loop). The mean over i is the
  batch loss gradient (token_mean reduction).

  Args:
    gate: any `gates.Gate`.
    log_prob_fn: `log_prob_fn(params, obs, action) -> log π_θ(action|obs)` for ONE sample
      (obs [*obs_shape], action [...]) returning a scalar.
    params: the policy parameters θ (any pytree).
    batch: `PolicyBatch` of N samples.

  Returns:
    [N, P] float array, P = number of parameters (pytree flattened in `ravel_pytree` order).
  """
  n = batch.behavior_log_prob.shape[0]
  for name, x in batch._asdict().items():
    if x.shape[0] != n:
      raise ValueError(f"per_sample_policy_gradients: batch.{name} has {x.shape[0]} samples, "
                       f"behavior_log_prob has {n}")
  flat_params, unravel = jax.flatten_util.ravel_pytree(params)

  def single_loss(flat, obs, action, behavior_log_prob, advantage):
    log_prob = log_prob_fn(unravel(flat), obs, action)
    loss, _ = losses.policy_loss(gate, jnp.reshape(log_prob, (1,)),
                                 jnp.reshape(behavior_log_prob, (1,)),
                                 jnp.reshape(advantage, (1,)))
    return loss

  return jax.vmap(jax.grad(single_loss), in_axes=(None, 0, 0, 0, 0))(
      flat_params, batch.obs, batch.action, batch.behavior_log_prob, batch.advantage)


class GradientStatistics(NamedTuple):
  """Statistics of N per-sample gradients g_i ∈ R^P against a reference gradient g*.

  trace_covariance: tr Cov(g) = Σ_p Var_i(g_ip) (ddof 1): the per-sample variance; the variance
    of the N-sample mean is trace_covariance/N.
  mean_norm: ‖ḡ‖.  reference_norm: ‖g*‖.
  cosine: cos(ḡ, g*).  relative_error: ‖ḡ − g*‖/‖g*‖ (bias + noise of the batch mean).
  """

  trace_covariance: Array
  mean_norm: Array
  reference_norm: Array
  cosine: Array
  relative_error: Array


def gradient_statistics(per_sample: Array, reference: Array) -> GradientStatistics:
  """`GradientStatistics` of per-sample gradients [N, P] against a reference gradient [P]."""
  if per_sample.ndim != 2 or reference.shape != per_sample.shape[1:]:
    raise ValueError(f"gradient_statistics: need per_sample [N, P] and reference [P], got "
                     f"{per_sample.shape} and {reference.shape}")
  mean = jnp.mean(per_sample, axis=0)
  trace = jnp.sum(jnp.var(per_sample, axis=0, ddof=1))
  mean_norm, ref_norm = jnp.linalg.norm(mean), jnp.linalg.norm(reference)
  tiny = jnp.finfo(mean.dtype).tiny
  cosine = jnp.dot(mean, reference) / jnp.maximum(mean_norm * ref_norm, tiny)
  return GradientStatistics(trace_covariance=trace, mean_norm=mean_norm, reference_norm=ref_norm,
                            cosine=cosine,
                            relative_error=jnp.linalg.norm(mean - reference) / jnp.maximum(
                                ref_norm, tiny))


class RatioStatistics(NamedTuple):
  """Distribution of the importance ratios of a batch.

  ess_fraction: Kish effective sample size (Σr)²/(N·Σr²) ∈ (0, 1].
  tail_index: Hill estimate α̂ = k / Σ_{j<k} log(r_(j)/r_(k)) on the k = max(10, ⌈√N⌉) largest
    ratios (r_(0) ≥ r_(1) ≥ …); α̂ ≤ 2 signals infinite IS variance; inf when std(log r) < 1e−6
    (on-policy data).
  mean, max, log_std: of r and log r.  approx_kl: mean k3 estimate of KL(π_old‖π_θ).
  """

  ess_fraction: Array
  tail_index: Array
  mean: Array
  max: Array
  log_std: Array
  approx_kl: Array


def ratio_statistics(log_ratio: Array) -> RatioStatistics:
  """`RatioStatistics` from log r = log π_θ − log π_old, shape [N]."""
  if log_ratio.ndim != 1 or log_ratio.shape[0] < 20:
    raise ValueError(f"ratio_statistics: need a flat array of >= 20 log-ratios, got shape "
                     f"{log_ratio.shape}")
  n = log_ratio.shape[0]
  k = max(10, math.ceil(math.sqrt(n)))
  # ESS in log space: (Σr)²/(N Σr²) = exp(2·lse(l) − lse(2l) − log N).
  ess = jnp.exp(2 * jax.nn.logsumexp(log_ratio) - jax.nn.logsumexp(2 * log_ratio) - math.log(n))
  # On-policy data (log r ≡ 0 up to float rounding) has no tail: report α̂ = inf.
  hill = jnp.where(jnp.std(log_ratio) < 1e-6, jnp.inf, _hill_from_logs(log_ratio, k))
  r = jnp.exp(jnp.clip(log_ratio, -losses.DEFAULT_MAX_LOG_RATIO, losses.DEFAULT_MAX_LOG_RATIO))
  return RatioStatistics(ess_fraction=ess, tail_index=hill, mean=jnp.mean(r), max=jnp.max(r),
                         log_std=jnp.std(log_ratio),
                         approx_kl=jnp.mean(losses.kl_k3_from_log_ratio(log_ratio)))


def hill_tail_index(samples: Array, k: int) -> Array:
  """Hill estimator α̂ = k / Σ_{j<k} log(x_(j)/x_(k)) of the tail index of positive samples."""
  return _hill_from_logs(jnp.log(samples), k)


def _hill_from_logs(log_x, k):
  top = jax.lax.top_k(log_x, k + 1)[0]
  return k / jnp.maximum(jnp.sum(top[:k] - top[k]), jnp.finfo(log_x.dtype).tiny)
