"""Token-level returns with a batch or greedy baseline: REINFORCE++ and ReMax.

Inputs are per-token rewards `[..., T]` (an outcome reward sits on a response's last valid
token, 0 elsewhere) with a mask of the valid tokens; outputs are per-token advantages, 0 on
padding. Returns G_t = r_t + γ·G_{t+1} run backwards over the valid tokens (a padded position
does not pass its return back), as verl's REINFORCE++ loop does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rgpo_jax._checks import as_bool_mask, check_number, check_same_shape
from rgpo_jax.advantages.group import dr_grpo_advantages, group_size

Array = jax.Array


def _valid(fn: str, x: Array, mask: Array | None) -> Array:
  if mask is None:
    return jnp.ones(jnp.shape(x), bool)
  check_same_shape(fn, token_rewards=x, mask=mask)
  return as_bool_mask(fn, mask)


def discounted_returns(token_rewards: Array, mask: Array | None = None,
                       gamma: float = 1.0) -> Array:
  """G_t = r_t + γ·m_{t+1}·G_{t+1} along the last axis, 0 on padding (verl's REINFORCE++ loop)."""
  check_number("discounted_returns", "gamma", gamma, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  valid = _valid("discounted_returns", token_rewards, mask)
  r = jnp.where(valid, token_rewards, 0.0)
  carry = jnp.zeros(jnp.shape(r)[:-1], r.dtype)

  def step(next_return, inputs):
    reward, keep = inputs
    g = reward + gamma * next_return
    return g * keep, g

  _, returns = jax.lax.scan(step, carry, (jnp.moveaxis(r, -1, 0),
                                          jnp.moveaxis(valid.astype(r.dtype), -1, 0)),
                            reverse=True)
  return jnp.where(valid, jnp.moveaxis(returns, 0, -1), 0.0)


def masked_whiten(x: Array, mask: Array | None = None, eps: float = 1e-8,
                  axis_name: str | None = None) -> Array:
  """(x − mean)/√(var + eps) over the valid entries, with the unbiased variance (n/(n−1)), as
  verl's `masked_whiten`; 0 on padding. `axis_name` takes the statistics over a mapped axis."""
  valid = _valid("masked_whiten", x, mask)
  psum = (lambda v: v) if axis_name is None else (lambda v: jax.lax.psum(v, axis_name))
  x = jnp.where(valid, x, 0.0)
  n = psum(jnp.sum(valid).astype(x.dtype))
  mean = psum(jnp.sum(x)) / jnp.maximum(n, 1.0)
  squares = psum(jnp.sum(jnp.where(valid, jnp.square(x - mean), 0.0)))
  var = squares / jnp.maximum(n - 1.0, 1.0)
  return jnp.where(valid, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def reinforce_pp_advantages(token_rewards: Array, mask: Array | None = None, gamma: float = 1.0,
                            axis_name: str | None = None) -> Array:
  """REINFORCE++ (arXiv 2501.03262): token returns whitened over the whole batch.

      A_t = (G_t − mean G)/√(var G + 1e-8),  mean and var over every valid token of the batch

  (no critic, no group: the batch statistics are the baseline; verl `reinforce_plus_plus`).
  Longer responses weigh more in the statistics (each token counts once).

  Args:
    token_rewards: [..., T]; mask: [..., T] (valid tokens); gamma: discount in [0, 1].
    axis_name: data-parallel axis to take the batch statistics over.
  """
  returns = discounted_returns(token_rewards, mask, gamma)
  return masked_whiten(returns, mask, axis_name=axis_name)


def reinforce_pp_baseline_advantages(rewards: Array, mask: Array,
                                     axis_name: str | None = None) -> Array:
  """REINFORCE++ with a group baseline (arXiv 2501.03262; verl `reinforce_plus_plus_baseline`).

      A_{i,t} = whiten_batch(R_i − mean_group R)   on every valid token t of sample i,

  the group mean removes the prompt's difficulty, the batch whitening (over tokens) sets the
  scale, instead of GRPO's per-group std.

  Args:
    rewards: [..., N] outcome rewards of the N samples of each prompt.
    mask: [..., N, T] valid tokens.
    axis_name: data-parallel axis to take the batch statistics over.

  Returns:
    [..., N, T] advantages.
  """
  group_size("reinforce_pp_baseline_advantages", rewards, 2)
  if jnp.shape(mask)[:-1] != jnp.shape(rewards):
    raise ValueError("reinforce_pp_baseline_advantages: mask must be shaped rewards.shape + "
                     f"(T,), got rewards{tuple(jnp.shape(rewards))}, mask{tuple(jnp.shape(mask))}")
  centred = jnp.broadcast_to(dr_grpo_advantages(rewards)[..., None], jnp.shape(mask))
  return masked_whiten(centred, mask, axis_name=axis_name)


def remax_advantages(token_rewards: Array, greedy_reward: Array,
                     mask: Array | None = None) -> Array:
  """ReMax (arXiv 2310.10505): A_t = G_t − R(greedy response), G_t = Σ_{u ≥ t} r_u.

  The baseline is the reward of the greedy (argmax) decoding of the same prompt, which the caller
  generates and scores (verl `remax`: `reward_baselines`). γ = 1 as in verl.

  Args:
    token_rewards: [..., T]; greedy_reward: [...] one baseline per response; mask: [..., T].
  """
  if jnp.shape(greedy_reward) != jnp.shape(token_rewards)[:-1]:
    raise ValueError("remax_advantages: greedy_reward must be shaped token_rewards.shape[:-1], got "
                     f"token_rewards{tuple(jnp.shape(token_rewards))}, "
                     f"greedy_reward{tuple(jnp.shape(greedy_reward))}")
  valid = _valid("remax_advantages", token_rewards, mask)
  returns = discounted_returns(token_rewards, valid, 1.0)
  return jnp.where(valid, returns - jax.lax.stop_gradient(greedy_reward)[..., None], 0.0)
