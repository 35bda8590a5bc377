"""Ratio granularity: which importance ratio a gate sees (token, sequence, geometric mean).

The gate decides *how* a ratio is weighted (RGPO's w = g'·r); the granularity decides *which*
ratio it weights. Any gate works at any granularity (a sigmoid gate on GSPO's sequence ratio is
`gates.sigmoid(k)` with `granularity="sequence"`). With r_t = π_θ(y_t)/π_old(y_t) and the valid
tokens t ∈ y_i of sequence i (|y_i| of them):

| granularity      | ratio at token t of sequence i                      | ∂ ratio / ∂ log π_θ(y_t)         | source |
|------------------|-----------------------------------------------------|----------------------------------|--------|
| `token`          | r_t                                                 | r_t                              | PPO    |
| `sequence`       | s_i = exp(mean_{u∈y_i} log r_u)                     | s_i / |y_i|                      | GSPO (arXiv 2507.18071), TRL `importance_sampling_level="sequence"` |
| `sequence_token` | s_{i,t} = sg(s_i)·π_θ(y_t)/sg(π_θ(y_t)) (value s_i)  | s_i                              | GSPO-token, verl `compute_policy_loss_gspo` |
| `geometric_mean` | G_i = exp(mean_{u∈y_i} clip_Â(log r_u))             | G_i/|y_i| · 1[token u unclipped] | GMPO (arXiv 2507.20673), verl `compute_policy_loss_geo_mean` |

(sg = stop-gradient.) `sequence` and `sequence_token` have the same value; with a per-sequence
advantage and the seq-mean-token-mean aggregation their gradients agree too (the |y_i| of the
mean cancels the token mean's 1/|y_i|); they differ for token-level advantages and for other
aggregations, where `sequence_token` lets each token carry its own advantage.

GMPO's clip_Â is PPO's pessimistic clip in log space: for Â ≥ 0 min(log r, ε_high), for Â < 0
max(log r, −ε_low). In ratio space that is the `ppo_clip` gate with 1+ε_h = e^{ε_high} and
1−ε_l = e^{−ε_low}, so G_i is the geometric mean of PPO-clipped token ratios; GMPO's loss is
then the plain IS gate on G_i. (verl takes sign(Â), which is 0 at Â = 0; we count Â = 0 as
positive, as everywhere in this library: the ratio differs only where the loss term Â·G is 0.)

Masked (padding) tokens are inert: inputs are selected (`jnp.where`) before any exp, so NaN or
±inf log-probs there reach neither the value nor the gradient. A sequence-level ratio needs the
mask (which tokens belong to y_i); asking for one without a mask is an error.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from rgpo_jax._checks import as_bool_mask, check_number, check_same_shape

Array = jax.Array
Granularity = Literal["token", "sequence", "sequence_token", "geometric_mean"]
GRANULARITIES = ("token", "sequence", "sequence_token", "geometric_mean")

# exp(20) ≈ 4.9e8: far beyond any ratio a useful update sees, far below float32 overflow (≈ e^88).
DEFAULT_MAX_LOG_RATIO = 20.0


def check_max_log_ratio(fn: str, max_log_ratio) -> None:
  """ValueError naming `max_log_ratio` unless it is > 0 (+inf: no clamp)."""
  check_number(fn, "max_log_ratio", max_log_ratio, lambda v: v > 0, "> 0 (+inf: no clamp)",
               allow_inf=True)


def exp_clamped(log_ratio: Array, max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """exp(log_ratio) with |log_ratio| clamped at `max_log_ratio` by a straight-through estimator.

  The value is exp(clamp(x)) and the derivative is exp(clamp(x)) as well (the clamp is invisible
  to the gradient), so inside the band values and gradients are exactly those of exp, and outside
  it the weight is the band edge's: finite, never inf or NaN.
  """
  clamped = jax.lax.stop_gradient(jnp.clip(log_ratio, -max_log_ratio, max_log_ratio))
  return jnp.exp(clamped + (log_ratio - jax.lax.stop_gradient(log_ratio)))


def clamped_ratio(log_prob: Array, base_log_prob: Array,
                  max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """r = exp(log_prob − stop_gradient(base_log_prob)), safe against overflow.

  The log-ratio is clamped to [−max_log_ratio, max_log_ratio] with a straight-through estimator:
  the forward value is exp(clamped), and ∂r/∂log_prob = r_clamped. Inside the band (|log r| ≤ 20
  by default, i.e. r ∈ [2e−9, 4.9e8]) values and gradients are exactly those of the unclamped
  ratio; outside it a sample's gradient weight is w evaluated at the band's edge (finite, and
  non-zero for gates such as REINFORCE whose weight does not vanish), never inf or NaN.

  Args:
    log_prob: differentiated log-probabilities.
    base_log_prob: stop-gradiented log-probabilities of the same shape (π_old or π_ref).
    max_log_ratio: the clamp, > 0 (+inf disables it); NaN, 0 and negative values are refused.
  """
  check_max_log_ratio("clamped_ratio", max_log_ratio)
  log_ratio = jax.lax.stop_gradient(log_prob - base_log_prob)
  clamped = jnp.clip(log_ratio, -max_log_ratio, max_log_ratio)
  # Forward: exactly exp(clamped) (log_prob − log_prob = 0); gradient: exp(clamped)·∂log_prob.
  return jnp.exp(clamped + (log_prob - jax.lax.stop_gradient(log_prob)))


def _bool_mask(fn: str, mask: Array | None, shape) -> Array | None:
  if mask is None:
    return None
  if jnp.shape(mask) != tuple(shape):
    raise ValueError(f"{fn}: mask must have the shape of log_prob {tuple(shape)}, got "
                     f"mask{tuple(jnp.shape(mask))}")
  return as_bool_mask(fn, mask)


def masked_log_ratio(log_prob: Array, old_log_prob: Array, mask: Array | None = None) -> Array:
  """log r = log_prob − sg(old_log_prob), exactly 0 at masked positions (selected, not multiplied).

  Both inputs are selected before the subtraction, so a NaN/inf log-prob at padding gives neither
  a NaN value nor a NaN gradient.
  """
  check_same_shape("masked_log_ratio", log_prob=log_prob, old_log_prob=old_log_prob)
  m = _bool_mask("masked_log_ratio", mask, jnp.shape(log_prob))
  old_log_prob = jax.lax.stop_gradient(old_log_prob)
  if m is not None:
    log_prob = jnp.where(m, log_prob, 0.0)
    old_log_prob = jnp.where(m, old_log_prob, 0.0)
  return log_prob - old_log_prob


def _require_mask(fn: str, granularity: str, mask: Array | None, log_prob: Array) -> Array:
  if mask is None:
    raise ValueError(f"{fn}: granularity={granularity!r} averages over each sequence's valid "
                     "tokens and needs mask (shape [..., sequence, token]; pass "
                     "jnp.ones_like(log_prob, bool) if every token is valid), got mask=None")
  if jnp.ndim(log_prob) < 1:
    raise ValueError(f"{fn}: granularity={granularity!r} needs arrays shaped [..., token], got "
                     f"shape {tuple(jnp.shape(log_prob))}")
  return _bool_mask(fn, mask, jnp.shape(log_prob))


def _sequence_mean(x: Array, m: Array) -> Array:
  """Mean of x over the valid tokens of each sequence (last axis), kept as [..., 1]; x must
  already be 0 at masked positions. An all-masked sequence gives 0."""
  count = jnp.sum(m, axis=-1, keepdims=True).astype(x.dtype)
  return jnp.sum(jnp.where(m, x, 0.0), axis=-1, keepdims=True) / jnp.maximum(count, 1.0)


def token_ratio(log_prob: Array, old_log_prob: Array, mask: Array | None = None,
                max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """Per-token ratio r_t = π_θ/π_old = exp(log_prob − sg(old_log_prob)) (PPO, arXiv 1707.06347).

  Overflow-safe (`clamped_ratio`); 1 at masked positions. Same shape as `log_prob`.
  """
  check_same_shape("token_ratio", log_prob=log_prob, old_log_prob=old_log_prob)
  m = _bool_mask("token_ratio", mask, jnp.shape(log_prob))
  if m is not None:
    log_prob, old_log_prob = jnp.where(m, log_prob, 0.0), jnp.where(m, old_log_prob, 0.0)
  return clamped_ratio(log_prob, old_log_prob, max_log_ratio)


def sequence_ratio(log_prob: Array, old_log_prob: Array, mask: Array,
                   max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """GSPO's sequence ratio s_i = exp((1/|y_i|) Σ_{t∈y_i} log r_t), broadcast over the tokens.

  The gradient flows through the mean: ∂s_i/∂log π_θ(y_t) = s_i/|y_i| for valid t (GSPO,
  arXiv 2507.18071; TRL `importance_sampling_level="sequence"`).

  Args:
    log_prob, old_log_prob: [..., T] (old_log_prob stop-gradiented).
    mask: [..., T], required (which tokens belong to each sequence).
    max_log_ratio: clamp of |log s_i| against overflow (straight-through).

  Returns:
    s of shape [..., T] (constant along the last axis).
  """
  m = _require_mask("sequence_ratio", "sequence", mask, log_prob)
  log_s = _sequence_mean(masked_log_ratio(log_prob, old_log_prob, m), m)
  return jnp.broadcast_to(exp_clamped(log_s, max_log_ratio), jnp.shape(log_prob))


def sequence_token_ratio(log_prob: Array, old_log_prob: Array, mask: Array,
                         max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """GSPO-token's straight-through ratio s_{i,t} = sg(s_i) · π_θ(y_t)/sg(π_θ(y_t)).

  Its value is the sequence ratio s_i at every token and ∂s_{i,t}/∂log π_θ(y_t) = s_i (GSPO,
  arXiv 2507.18071 eq. for GSPO-token; verl `compute_policy_loss_gspo`). Masked tokens: value
  s_i, gradient 0.

  Args and Returns: as `sequence_ratio`.
  """
  m = _require_mask("sequence_token_ratio", "sequence_token", mask, log_prob)
  lp = jnp.where(m, log_prob, 0.0)
  log_s = _sequence_mean(masked_log_ratio(log_prob, old_log_prob, m), m)
  log_s = jax.lax.stop_gradient(jnp.clip(log_s, -max_log_ratio, max_log_ratio))
  # exp(sg(log s) + lp − sg(lp)): value s_i, derivative s_i.
  return jnp.exp(log_s + (lp - jax.lax.stop_gradient(lp)))


def geometric_mean_ratio(log_prob: Array, old_log_prob: Array, mask: Array,
                         advantage: Array | None = None, *, log_clip_low: float | None = None,
                         log_clip_high: float | None = None,
                         max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """GMPO's geometric mean of token ratios, clipped per token in log space (arXiv 2507.20673).

      G_i = exp((1/|y_i|) Σ_{t∈y_i} c_t),
      c_t = min(log r_t, ε_high) if Â_t ≥ 0,  max(log r_t, −ε_low) if Â_t < 0,

  so ∂G_i/∂log π_θ(y_t) = G_i/|y_i| where token t is not clipped and 0 where it is. GMPO's loss
  is −Â_i·G_i (the IS gate on G); any other gate can be put on G. Without clip bounds G equals
  the `sequence` ratio. verl `compute_policy_loss_geo_mean`; the GMPO paper uses ε = 0.4.

  Args:
    log_prob, old_log_prob: [..., T] (old_log_prob stop-gradiented).
    mask: [..., T], required.
    advantage: [..., T], stop-gradiented; needed (for its sign) when a clip bound is given.
    log_clip_low, log_clip_high: ε_low, ε_high > 0 in log space, or None for no clip.
    max_log_ratio: clamp of |log G_i| against overflow.

  Returns:
    G of shape [..., T] (constant along the last axis).
  """
  fn = "geometric_mean_ratio"
  m = _require_mask(fn, "geometric_mean", mask, log_prob)
  for name, value in (("log_clip_low", log_clip_low), ("log_clip_high", log_clip_high)):
    if value is not None and not isinstance(value, jax.core.Tracer) and not float(value) > 0:
      raise ValueError(f"{fn}: {name} must be > 0 or None, got {name}={value!r}")
  log_r = masked_log_ratio(log_prob, old_log_prob, m)
  if log_clip_low is not None or log_clip_high is not None:
    if advantage is None:
      raise ValueError(f"{fn}: a clipped geometric mean needs the advantage (its sign picks the "
                       "clip side), got advantage=None")
    check_same_shape(fn, log_prob=log_prob, advantage=advantage)
    positive = jax.lax.stop_gradient(advantage) >= 0
    upper = log_r if log_clip_high is None else jnp.minimum(log_r, log_clip_high)
    lower = log_r if log_clip_low is None else jnp.maximum(log_r, -log_clip_low)
    log_r = jnp.where(positive, upper, lower)
  log_g = _sequence_mean(log_r, m)
  return jnp.broadcast_to(exp_clamped(log_g, max_log_ratio), jnp.shape(log_prob))


def ratio(log_prob: Array, old_log_prob: Array, mask: Array | None = None, *,
          granularity: Granularity = "token", advantage: Array | None = None,
          log_clip_low: float | None = None, log_clip_high: float | None = None,
          max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """The importance ratio at the chosen granularity, shaped like `log_prob` (see module table).

  Args:
    log_prob: log π_θ, [..., T] (differentiated).
    old_log_prob: log π_old, same shape (stop-gradiented).
    mask: same shape; required for every granularity but "token".
    granularity: one of `GRANULARITIES`.
    advantage, log_clip_low, log_clip_high: GMPO's per-token clip ("geometric_mean" only).
    max_log_ratio: overflow clamp of the log-ratio (straight-through).
  """
  check_max_log_ratio("ratio", max_log_ratio)
  if granularity not in GRANULARITIES:
    raise ValueError(f"ratio: granularity must be one of {GRANULARITIES}, got "
                     f"granularity={granularity!r}")
  if granularity != "geometric_mean" and (log_clip_low is not None or log_clip_high is not None):
    raise ValueError(f"ratio: log_clip_low/log_clip_high apply to granularity='geometric_mean' "
                     f"only, got granularity={granularity!r}")
  if granularity == "token":
    return token_ratio(log_prob, old_log_prob, mask, max_log_ratio)
  if granularity == "sequence":
    return sequence_ratio(log_prob, old_log_prob, mask, max_log_ratio)
  if granularity == "sequence_token":
    return sequence_token_ratio(log_prob, old_log_prob, mask, max_log_ratio)
  return geometric_mean_ratio(log_prob, old_log_prob, mask, advantage, log_clip_low=log_clip_low,
                              log_clip_high=log_clip_high, max_log_ratio=max_log_ratio)
