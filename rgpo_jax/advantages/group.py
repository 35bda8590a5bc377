"""Group-relative advantages for outcome rewards: `[..., N]` arrays whose last axis holds the N
samples (completions) of one prompt (a group); the leading axes are the batch of prompts.

| estimator | A_i | source |
|---|---|---|
| `grpo_advantages` | (R_i − mean R)/(std R + eps), std with `ddof` (default 1) | arXiv 2402.03300; verl, TRL, tunix |
| `dr_grpo_advantages` | R_i − mean R | arXiv 2503.20783 |
| `rloo_advantages` | R_i − mean_{j≠i} R_j | arXiv 2402.14740 |
| `opo_advantages` | R_i − Σ_j L_j R_j / Σ_j L_j (length-weighted baseline) | arXiv 2505.23585; verl `opo` |
| `gpg_advantages` | α·(R_i − mean R)/F_norm, α = B/(valid samples) | arXiv 2504.02546; verl `gpg` |
| `gdpo_advantages` | each reward normalised in its group, weighted sum, then normalised over the batch | arXiv 2601.05242; TRL `multi_objective_aggregation="normalize_then_sum"` |

All are stop-gradient-free pure functions of the rewards (no parameters flow into them).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from rgpo_jax._checks import check_number, check_same_shape

Array = jax.Array


def group_size(fn: str, rewards: Array, minimum: int) -> int:
  """N, the size of the last axis; ValueError naming the shape if it is below `minimum`."""
  n = jnp.shape(rewards)[-1] if jnp.ndim(rewards) else 0
  if n < minimum:
    raise ValueError(f"{fn}: needs groups of at least {minimum} samples on the last axis, got "
                     f"shape {tuple(jnp.shape(rewards))}")
  return n


def _check_ddof(fn: str, ddof, n: int):
  if ddof not in (0, 1) or isinstance(ddof, bool):
    raise ValueError(f"{fn}: ddof must be 0 (population std) or 1 (sample std), got ddof={ddof!r}")
  if n <= ddof:
    raise ValueError(f"{fn}: ddof={ddof} needs groups of at least {ddof + 1} samples, got "
                     f"groups of {n}")


def grpo_advantages(rewards: Array, eps: float = 1e-6, ddof: int = 1) -> Array:
  """GRPO (arXiv 2402.03300): A_i = (R_i − mean_j R_j)/(std_j R_j + eps) within each group.

  The std is the sample std (ddof = 1) by default, as verl (`torch.std`), TRL (`nanstd`, eps
  1e-4) and tunix (`std(ddof=1)`) compute it. ddof = 0 (the population std, `jnp.std`, this
  library's default until 2026-11-23) makes the advantages √(N/(N−1)) times larger when eps is
  negligible: 1.155 at N = 4, 1.069 at N = 8, 1.033 at N = 16.

  Args:
    rewards: [..., N].
    eps: added to the std.
    ddof: 1 (sample std, default) or 0 (population std); ddof = 1 needs N ≥ 2.
  """
  n = group_size("grpo_advantages", rewards, 1)
  _check_ddof("grpo_advantages", ddof, n)
  mean = jnp.mean(rewards, axis=-1, keepdims=True)
  std = jnp.std(rewards, axis=-1, keepdims=True, ddof=ddof)
  return (rewards - mean) / (std + eps)


def dr_grpo_advantages(rewards: Array) -> Array:
  """Dr.GRPO (arXiv 2503.20783): A_i = R_i − mean_j R_j (no std normalisation)."""
  group_size("dr_grpo_advantages", rewards, 1)
  return rewards - jnp.mean(rewards, axis=-1, keepdims=True)


def rloo_advantages(rewards: Array) -> Array:
  """RLOO (arXiv 2402.14740): A_i = R_i − mean_{j≠i} R_j = N/(N−1)·(R_i − mean_j R_j)."""
  n = group_size("rloo_advantages", rewards, 2)
  return n / (n - 1) * dr_grpo_advantages(rewards)




def opo_advantages(rewards: Array, lengths: Array) -> Array:
  """OPO's length-weighted baseline (On-Policy RL with Optimal reward baseline, arXiv 2505.23585):

      A_i = R_i − b,   b = Σ_j L_j·R_j / Σ_j L_j   (L_j the number of tokens of sample j),

  the baseline that minimises the gradient variance when each token's score contributes equally
  (verl `compute_opo_outcome_advantage`). Groups whose lengths are all 0 get b = 0.

  Args:
    rewards: [..., N].
    lengths: [..., N], response lengths (≥ 0), e.g. `mask.sum(-1)`.
  """
  group_size("opo_advantages", rewards, 2)
  check_same_shape("opo_advantages", rewards=rewards, lengths=lengths)
  lengths = jnp.asarray(lengths, jnp.result_type(rewards, float))
  total = jnp.sum(lengths, axis=-1, keepdims=True)
  weighted = jnp.sum(lengths * rewards, axis=-1, keepdims=True)
  return rewards - jnp.where(total > 0, weighted / jnp.where(total > 0, total, 1.0), 0.0)


def gpg_advantages(rewards: Array, *, f_norm: float = 1.0,
                   alpha: Literal["groups", "nonzero_rewards"] = "groups") -> Array:
  """GPG (Group Policy Gradient, arXiv 2504.02546): A_i = α·(R_i − mean_group R)/F_norm.

  α rescales the batch so that samples without a learning signal do not dilute the gradient:
  "groups" (the paper): α = B/(B − M), M the samples of groups whose rewards are all equal
  (zero advantage); "nonzero_rewards" (verl `compute_gpg_outcome_advantage`): α = B/#{R_i ≠ 0}.
  B is the number of samples in the whole batch (all leading axes × N). GPG's loss is the plain
  REINFORCE surrogate −A·log π (`gates.reinforce()`).

  Args:
    rewards: [..., N].
    f_norm: F_norm > 0 (1 in both sources).
    alpha: "groups" or "nonzero_rewards".
  """
  group_size("gpg_advantages", rewards, 1)
  if alpha not in ("groups", "nonzero_rewards"):
    raise ValueError(f"gpg_advantages: alpha must be 'groups' or 'nonzero_rewards', got "
                     f"alpha={alpha!r}")
  check_number("gpg_advantages", "f_norm", f_norm, lambda v: v > 0, "> 0 (finite)")
  dtype = jnp.result_type(rewards, float)
  centred = dr_grpo_advantages(rewards)
  if alpha == "groups":
    spread = jnp.max(rewards, axis=-1, keepdims=True) > jnp.min(rewards, axis=-1, keepdims=True)
    valid = jnp.broadcast_to(spread, jnp.shape(rewards))
  else:
    valid = rewards != 0
  scale = jnp.size(rewards) / jnp.maximum(jnp.sum(valid), 1).astype(dtype)
  return scale * centred / f_norm


def _standardise(x: Array, axis, eps: float, ddof: int) -> Array:
  mean = jnp.mean(x, axis=axis, keepdims=True)
  return (x - mean) / (jnp.std(x, axis=axis, keepdims=True, ddof=ddof) + eps)


def gdpo_advantages(rewards: Array, weights: Array | None = None, *, eps: float = 1e-4,
                    ddof: int = 1) -> Array:
  """GDPO: normalise each reward within its group, sum, then normalise over the batch.

      Ã_i^k = (R_i^k − mean_group R^k)/(std_group R^k + eps),   s_i = Σ_k w_k·Ã_i^k,
      A_i = (s_i − mean_batch s)/(std_batch s + eps),

  so a reward with a large scale or spread cannot drown the others (summing first, GRPO-style,
  lets it). arXiv 2601.05242; TRL `multi_objective_aggregation="normalize_then_sum"` (eps 1e-4,
  sample std).

  Args:
    rewards: [..., N, K]: K reward functions for the N samples of each group.
    weights: optional [K] reward weights (default 1 each).
    eps: added to both stds.
    ddof: 1 (sample std, as TRL) or 0.

  Returns:
    advantages [..., N].
  """
  if jnp.ndim(rewards) < 2:
    raise ValueError(f"gdpo_advantages: rewards must be shaped [..., N, K], got shape "
                     f"{tuple(jnp.shape(rewards))}")
  n, k = jnp.shape(rewards)[-2:]
  _check_ddof("gdpo_advantages", ddof, n)
  weights = jnp.ones((k,), jnp.result_type(rewards, float)) if weights is None else weights
  if jnp.shape(weights) != (k,):
    raise ValueError(f"gdpo_advantages: weights must have shape ({k},) (one per reward), got "
                     f"weights{tuple(jnp.shape(weights))}")
  summed = jnp.sum(_standardise(rewards, -2, eps, ddof) * weights, axis=-1)
  return _standardise(summed, None, eps, ddof)
