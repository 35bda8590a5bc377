"""Pass@K advantages for binary rewards: closed form (arXiv 2508.10751) and surrogate-reward
weights (arXiv 2510.23049). Rewards are `[..., N]`, the last axis holding one prompt's N samples.
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp

from rgpo_jax._checks import check_int
from rgpo_jax.advantages.group import group_size as _group_size

Array = jax.Array


def _log_comb(n: Array, k: Array) -> Array:
  """log C(n, k), −inf where k < 0 or k > n."""
  valid = (k >= 0) & (k <= n)
  n_, k_ = jnp.where(valid, n, 1.0), jnp.where(valid, k, 0.0)
  out = (jax.scipy.special.gammaln(n_ + 1) - jax.scipy.special.gammaln(k_ + 1)
         - jax.scipy.special.gammaln(n_ - k_ + 1))
  return jnp.where(valid, out, -jnp.inf)


def _check_k(fn: str, k: int, n: int) -> int:
  """k as a Python int (numpy integers accepted; bools and floats refused), in [1, n]."""
  return check_int(fn, "k", k, 1, n, range_name=f"[1, group size {n}]")


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
  k = _check_k("pass_at_k_advantages", k, n)
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
      k = _check_k("surrogate_advantages", k, n)
    omega = SURROGATES[surrogate](safe_rho, k)
  else:
    raise ValueError(f"surrogate_advantages: surrogate must be one of {sorted(SURROGATES)} or a "
                     f"callable F(rho), got surrogate={surrogate!r}")
  advantages = jnp.where(correct > 0, omega / safe_rho, -omega / (1.0 - safe_rho))
  return jnp.where(interior, advantages, 0.0)
