"""Advantage estimators: GAE for control, group-relative and Pass@K advantages for sequence RL.

All functions are pure and jittable. `gae` works on time-major `[T, ...]` arrays; the group
estimators on `[..., N]` arrays whose last axis holds the N samples of one prompt (group).
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp

from rgpo_jax._checks import check_same_shape

Array = jax.Array


def _check_unit_interval(fn: str, **params):
  for name, v in params.items():
    if not isinstance(v, jax.core.Tracer) and not 0.0 <= float(v) <= 1.0:
      raise ValueError(f"{fn}: {name} must be in [0, 1], got {name}={v!r}")


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
    stop-gradiented.
  """
  check_same_shape("gae", rewards=rewards, values=values, next_values=next_values,
                    terminated=terminated, truncated=truncated)
  _check_unit_interval("gae", gamma=gamma, lambda_=lambda_)
  rewards, values, next_values = jax.lax.stop_gradient((rewards, values, next_values))
  dtype = values.dtype
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
    mask: optional, same shape; entries with mask 0 do not count towards mean and std.
    eps: added to the std.
    axis_name: inside pmap / shard_map, take mean and std over the entries of every device on
      this axis (data-parallel training: the statistics of the global minibatch).
  """
  psum = (lambda x: x) if axis_name is None else (lambda x: jax.lax.psum(x, axis_name))
  m = jnp.ones_like(advantages) if mask is None else mask.astype(advantages.dtype)
  n = jnp.maximum(psum(jnp.sum(m)), 1.0)
  mean = psum(jnp.sum(advantages * m)) / n
  var = psum(jnp.sum(jnp.square(advantages - mean) * m)) / n
  return (advantages - mean) / (jnp.sqrt(var) + eps)


# ---------------------------------------------------------------------------------------------
# Group-relative advantages: rewards [..., N], N samples (completions) of one prompt per row.


def _group_size(fn: str, rewards: Array, minimum: int) -> int:
  n = jnp.shape(rewards)[-1] if jnp.ndim(rewards) else 0
  if n < minimum:
    raise ValueError(f"{fn}: needs groups of at least {minimum} samples on the last axis, got "
                     f"shape {tuple(jnp.shape(rewards))}")
  return n


def grpo_advantages(rewards: Array, eps: float = 1e-6) -> Array:
  """GRPO (arXiv 2402.03300): A_i = (R_i − mean_j R_j)/(std_j R_j + eps) within each group."""
  _group_size("grpo_advantages", rewards, 1)
  mean = jnp.mean(rewards, axis=-1, keepdims=True)
  std = jnp.std(rewards, axis=-1, keepdims=True)
  return (rewards - mean) / (std + eps)


def dr_grpo_advantages(rewards: Array) -> Array:
  """Dr.GRPO (arXiv 2503.20783): A_i = R_i − mean_j R_j (no std normalisation)."""
  _group_size("dr_grpo_advantages", rewards, 1)
  return rewards - jnp.mean(rewards, axis=-1, keepdims=True)


def rloo_advantages(rewards: Array) -> Array:
  """RLOO (arXiv 2402.14740): A_i = R_i − mean_{j≠i} R_j = N/(N−1)·(R_i − mean_j R_j)."""
  n = _group_size("rloo_advantages", rewards, 2)
  return n / (n - 1) * dr_grpo_advantages(rewards)


# ---------------------------------------------------------------------------------------------
# Pass@K (binary rewards).


def _log_comb(n: Array, k: Array) -> Array:
  """log C(n, k), −inf where k < 0 or k > n."""
  valid = (k >= 0) & (k <= n)
  n_, k_ = jnp.where(valid, n, 1.0), jnp.where(valid, k, 0.0)
  out = (jax.scipy.special.gammaln(n_ + 1) - jax.scipy.special.gammaln(k_ + 1)
         - jax.scipy.special.gammaln(n_ - k_ + 1))
  return jnp.where(valid, out, -jnp.inf)


def _check_k(fn: str, k: int, n: int):
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"{fn}: k must be an integer in [1, group size {n}], got k={k!r}")


def pass_at_k_advantages(rewards: Array, k: int, eps: float = 1e-6) -> Array:
  """Closed-form Pass@k training advantages (Chen et al., arXiv 2508.10751).

  With c correct samples out of N in a group (binary rewards), the group reward of a k-subset is
  its max; averaging the normalised subset advantages over the subsets containing each sample:

      ρ_k = 1 − C(N−c, k)/C(N, k),   σ = √(ρ_k(1−ρ_k)),
      A_correct = (1 − ρ_k)/σ,      A_wrong = (1 − ρ_k − C(N−c−1, k−1)/C(N−1, k−1))/σ.

  Groups with σ = 0 (every subset equally good) get zero advantages.

  Args:
    rewards: binary {0, 1} rewards, [..., N].
    k: subset size, integer in [1, N].

  Returns:
    advantages of the same shape as `rewards`.
  """
  n = _group_size("pass_at_k_advantages", rewards, 1)
  _check_k("pass_at_k_advantages", k, n)
  dtype = jnp.result_type(rewards, float)
  correct = (rewards > 0.5).astype(dtype)
  c = jnp.sum(correct, axis=-1, keepdims=True)
  n_f = jnp.asarray(n, dtype)
  rho = 1.0 - jnp.exp(_log_comb(n_f - c, k) - _log_comb(n_f, k))
  sigma = jnp.sqrt(jnp.maximum(rho * (1.0 - rho), 0.0))
  q_wrong = jnp.exp(_log_comb(n_f - c - 1, k - 1) - _log_comb(n_f - 1, k - 1))
  a_correct = (1.0 - rho) / (sigma + eps)
  a_wrong = (1.0 - rho - q_wrong) / (sigma + eps)
  advantages = jnp.where(correct > 0, a_correct, a_wrong)
  return jnp.where(sigma > 0, advantages, 0.0)


# Surrogate rewards F(ρ) (arXiv 2510.23049), as their weights ω(ρ) = F'(ρ)·ρ·(1−ρ).
SURROGATES: dict[str, Callable[..., Array]] = {
    # F = ρ: plain expected reward, ω = ρ(1−ρ) (RLOO / Dr.GRPO up to the N/(N−1) factor).
    "pass_at_1": lambda rho, k: rho * (1.0 - rho),
    # F = 2·arcsin(√ρ): GRPO's std normalisation, ω = √(ρ(1−ρ)).
    "arcsin": lambda rho, k: jnp.sqrt(rho * (1.0 - rho)),
    # F = 1 − (1−ρ)^K: direct Pass@K, ω = K·ρ·(1−ρ)^K.
    "pass_at_k": lambda rho, k: k * rho * (1.0 - rho) ** k,
}


def surrogate_advantages(
    rewards: Array,
    surrogate: Literal["pass_at_1", "arcsin", "pass_at_k"] | Callable[[Array], Array] = "pass_at_k",
    k: int = 1,
) -> Array:
  """Advantages that ascend a chosen surrogate reward F(ρ) (arXiv 2510.23049).

  With binary rewards and ρ̂ = c/N the fraction correct in a group, a zero-mean group advantage
  is the gradient of F when

      ω(ρ̂) = F'(ρ̂)·ρ̂·(1−ρ̂),   A_correct = ω/ρ̂,   A_wrong = −ω/(1−ρ̂).

  "pass_at_1" (F = ρ) gives Dr.GRPO's R − ρ̂; "arcsin" (F = 2 arcsin √ρ) gives GRPO's
  (R − ρ̂)/σ̂; "pass_at_k" (F = 1 − (1−ρ)^K) up-weights hard prompts with K(1−ρ̂)^(K−1).
  Groups with ρ̂ ∈ {0, 1} get zero advantages.

  Args:
    rewards: binary rewards [..., N].
    surrogate: a name from `SURROGATES` or a callable F(ρ) (its derivative by autodiff).
    k: K for "pass_at_k".

  Returns:
    advantages of the same shape as `rewards`.
  """
  n = _group_size("surrogate_advantages", rewards, 1)
  dtype = jnp.result_type(rewards, float)
  correct = (rewards > 0.5).astype(dtype)
  rho = jnp.mean(correct, axis=-1, keepdims=True)
  interior = (rho > 0) & (rho < 1)
  safe_rho = jnp.where(interior, rho, 0.5)
  if callable(surrogate):
    f_prime = jnp.vectorize(jax.grad(surrogate))(safe_rho)
    omega = f_prime * safe_rho * (1.0 - safe_rho)
  elif surrogate in SURROGATES:
    if surrogate == "pass_at_k":
      _check_k("surrogate_advantages", k, n)
    omega = SURROGATES[surrogate](safe_rho, k)
  else:
    raise ValueError(f"surrogate_advantages: surrogate must be one of {sorted(SURROGATES)} or a "
                     f"callable F(rho), got surrogate={surrogate!r}")
  advantages = jnp.where(correct > 0, omega / safe_rho, -omega / (1.0 - safe_rho))
  return jnp.where(interior, advantages, 0.0)
