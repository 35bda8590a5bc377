"""GAE and per-minibatch normalisation: advantages for control (time-major `[T, ...]` arrays)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rgpo_jax._checks import as_bool_mask, check_number, check_same_shape

Array = jax.Array


def _check_unit_interval(fn: str, **params):
  for name, v in params.items():
    check_number(fn, name, v, lambda x: 0.0 <= x <= 1.0, "in [0, 1]")


def gae(
    rewards: Array,
    values: Array,
    next_values: Array,
    terminated: Array,
    truncated: Array,
    gamma: float = 0.99,
    lambda_: float = 0.95,
) -> tuple[Array, Array]:
  """Generalised advantage estimation (Schulman et al., arXiv 1506.02438) with auto-resets.

      δ_t = r_t + γ·(1 − term_t)·V(s'_t) − V(s_t)
      A_t = δ_t + γλ·(1 − done_t)·A_{t+1},        done_t = term_t ∨ trunc_t

  where s'_t is the true next state of step t (for a step that ended an episode, the final
  observation *before* the auto-reset). A terminated step does not bootstrap; a truncated one
  bootstraps from V(final observation) and stops the trace, since the next row belongs to a new
  episode.

  Args:
    rewards: r_t, [T, ...].
    values: V(s_t), [T, ...].
    next_values: V(s'_t), [T, ...]: values[t+1] inside an episode, V(final obs) at its end, the
      value of the last observation at t = T−1.
    terminated, truncated: bool or 0/1, [T, ...].
    gamma, lambda_: discount and trace parameter, in [0, 1].

  Returns:
    (advantages, returns) with returns = advantages + values (the λ-returns), both [T, ...];
    stop-gradiented, in the common float dtype of rewards, values and next_values (integer
    inputs are promoted to the default float; float32 with float64 gives float64).
  """
  check_same_shape("gae", rewards=rewards, values=values, next_values=next_values,
                    terminated=terminated, truncated=truncated)
  _check_unit_interval("gae", gamma=gamma, lambda_=lambda_)
  # One float dtype for the scan carry: integer inputs become floats, mixed precisions the wider.
  dtype = jnp.result_type(rewards, values, next_values, float)
  rewards, values, next_values = (jnp.asarray(x).astype(dtype) for x in
                                  jax.lax.stop_gradient((rewards, values, next_values)))
  terminated, truncated = jnp.asarray(terminated), jnp.asarray(truncated)
  not_terminated = 1.0 - terminated.astype(dtype)
  not_done = 1.0 - jnp.logical_or(terminated, truncated).astype(dtype)
  deltas = rewards + gamma * not_terminated * next_values - values
  decay = gamma * lambda_ * not_done

  def step(next_advantage, inputs):
    delta, d = inputs
    advantage = delta + d * next_advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(step, jnp.zeros_like(values[0]), (deltas, decay), reverse=True)
  return advantages, advantages + values


def normalize(advantages: Array, mask: Array | None = None, eps: float = 1e-8,
              axis_name: str | None = None) -> Array:
  """(A − mean)/(std + eps) over all (valid) entries, as in PPO's per-minibatch normalisation.

  Args:
    advantages: any shape.
    mask: optional, same shape, boolean or 0/1 (as `losses.masked_mean`): padded entries do not
      count towards mean and std and are 0 in the output (NaN/inf there is inert).
    eps: added to the std.
    axis_name: inside pmap / shard_map, take mean and std over the entries of every device on
      this axis (data-parallel training: the statistics of the global minibatch).
  """
  psum = (lambda x: x) if axis_name is None else (lambda x: jax.lax.psum(x, axis_name))
  check_same_shape("normalize", advantages=advantages, mask=mask)
  mask = as_bool_mask("normalize", mask)
  if mask is None:
    m = jnp.ones_like(advantages)
    n = jnp.maximum(psum(jnp.sum(m)), 1.0)
    mean = psum(jnp.sum(advantages)) / n
    var = psum(jnp.sum(jnp.square(advantages - mean))) / n
    return (advantages - mean) / (jnp.sqrt(var) + eps)
  # Select, not multiply: NaN/inf padding must not reach the statistics (0·NaN = NaN).
  dtype = jnp.result_type(advantages, float)
  zero = jnp.zeros((), dtype)
  advantages = jnp.where(mask, advantages, zero)
  n = jnp.maximum(psum(jnp.sum(mask, dtype=dtype)), 1.0)
  mean = psum(jnp.sum(advantages)) / n
  var = psum(jnp.sum(jnp.where(mask, jnp.square(advantages - mean), zero))) / n
  return jnp.where(mask, (advantages - mean) / (jnp.sqrt(var) + eps), zero)
