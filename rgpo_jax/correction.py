"""Rollout–trainer mismatch: a detached correction weight on ρ = π_old / π_rollout.

In LLM RL the sampler (vLLM, SGLang: bf16, other kernels) and the trainer (FSDP/JAX, fp32)
compute different probabilities for the same tokens, so even the first, "on-policy" update is
off-policy: tokens were drawn from π_rollout, not from the trainer's π_old. The stacks keep the
PPO/gated loss on r = π_θ/π_old and multiply each token's loss by a stop-gradiented weight
c(ρ), ρ = π_old/π_rollout (the third log-prob, the sampler's):

| mode       | c(ρ)                               | name in the stacks |
|------------|------------------------------------|--------------------|
| `truncate` | min(ρ, C) (and ≥ low if given)     | TIS: verl `rollout_is` + `rollout_is_threshold` (C = 2), TRL `vllm_importance_sampling_mode="token_truncate"` (C = 3) |
| `mask`     | ρ·1[lo ≤ ρ ≤ hi]                   | MIS / IcePop (Ling team, arXiv 2510.18855), TRL `"token_mask"` |
| `reject`   | 1[lo ≤ ρ ≤ hi]                     | verl `rollout_rs` (rejection sampling: drop, do not reweight) |
| `gate`     | w(ρ) = g'(ρ)·ρ of any `Gate`       | this library: a smooth, bounded correction (no stack has one) |

Level: `token` uses each token's ρ_t; `sequence` uses the sequence's ρ_i = Π_{t∈y_i} ρ_t =
exp(Σ_t log ρ_t) (verl, TRL `sequence_*` modes: the product, not GSPO's geometric mean) for every
token of sequence i. Sequence-level IS is unbiased for the sequence distribution and has far
higher variance; truncation bounds it. With `gates.sigmoid(4)` the `gate` mode gives
w(1) = 1, w → 0 for ρ → 0 and ρ → ∞: a smooth TIS+MIS in one.

The weight multiplies the per-token loss (`losses.policy_loss(..., sample_weight=c)`), so the
gradient of token t becomes c_t·w(r_t)·Â_t·∇log π_θ. Diagnostics (`CorrectionAux`): the
effective sample size ESS/N = (mean c)²/mean(c²) (Kish; 1 for equal weights, 1/N when one unit
carries all the weight), the fraction corrected (units whose ρ fell outside the band, or, for
`gate`, whose gate slope is below half its value at ρ = 1), and the raw ratio's mean and max.
Units are tokens at token level and sequences (with a valid token) at sequence level.
Padding is inert (selected before any exp), log ρ is clamped at ±20 before exp as in verl.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax import gates as gates_lib
from rgpo_jax._checks import as_bool_mask, check_same_shape

Array = jax.Array
Level = Literal["token", "sequence"]
Mode = Literal["truncate", "mask", "reject", "gate"]
LEVELS = ("token", "sequence")
MODES = ("truncate", "mask", "reject", "gate")
SAFETY_BOUND = 20.0  # |log ρ| clamp before exp (verl's SAFETY_BOUND)


class CorrectionAux(NamedTuple):
  """Diagnostics of the correction weights (scalars, over valid units, stop-gradiented).

  effective_sample_size: ESS/N = (mean c)²/mean(c²) ∈ (0, 1].
  fraction_corrected: fraction of units outside the band (truncate/mask/reject) or with gate
    slope g'(ρ) < ½·g'(1) (gate).
  ratio_mean, ratio_max: ρ before correction (clamped at e^20).
  weight_mean: mean c.
  """

  effective_sample_size: Array
  fraction_corrected: Array
  ratio_mean: Array
  ratio_max: Array
  weight_mean: Array


def _check_positive(name: str, value, allow_zero: bool = False):
  if value is None or isinstance(value, jax.core.Tracer):
    return
  v = float(value)
  if not (v >= 0 if allow_zero else v > 0) or v != v:
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"correction: {name} must be {bound}, got {name}={value!r}")


def rollout_log_ratio(old_log_prob: Array, rollout_log_prob: Array, mask: Array | None = None,
                      level: Level = "token") -> Array:
  """log ρ = log π_old − log π_rollout per token, or its sum over each sequence's valid tokens
  (level="sequence", broadcast over the tokens). 0 on padding; stop-gradiented."""
  check_same_shape("rollout_log_ratio", old_log_prob=old_log_prob,
                   rollout_log_prob=rollout_log_prob, mask=mask)
  if level not in LEVELS:
    raise ValueError(f"rollout_log_ratio: level must be one of {LEVELS}, got level={level!r}")
  valid = (jnp.ones(jnp.shape(old_log_prob), bool) if mask is None
           else as_bool_mask("rollout_log_ratio", mask))
  old, rollout = jax.lax.stop_gradient((old_log_prob, rollout_log_prob))
  log_rho = jnp.where(valid, old, 0.0) - jnp.where(valid, rollout, 0.0)
  if level == "sequence":
    if jnp.ndim(log_rho) < 1:
      raise ValueError("rollout_log_ratio: level='sequence' needs arrays shaped [..., token]")
    log_rho = jnp.broadcast_to(jnp.sum(log_rho, axis=-1, keepdims=True), jnp.shape(log_rho))
  return log_rho


def _band(log_rho, low, high):
  """1[low ≤ ρ ≤ high], compared in log space (exact for huge/tiny ρ)."""
  inside = jnp.ones(jnp.shape(log_rho), bool)
  if low is not None:
    inside &= log_rho >= jnp.log(jnp.asarray(low, log_rho.dtype))  # log 0 = −inf: no bound
  if high is not None:
    inside &= log_rho <= jnp.log(high)
  return inside


def _weights(mode, log_rho, rho, cap, low, high, gate):
  if mode == "truncate":
    c = jnp.minimum(rho, cap)
    return (c if low is None else jnp.maximum(c, low)), ~_band(log_rho, low, cap)
  if mode in ("mask", "reject"):
    inside = _band(log_rho, low, high)
    return jnp.where(inside, rho if mode == "mask" else 1.0, 0.0), ~inside
  ones = jnp.ones_like(rho)
  slope = gate.derivative(rho, ones)
  return slope * rho, slope < 0.5 * gate.derivative(ones, ones)


def correction_weights(
    old_log_prob: Array,
    rollout_log_prob: Array,
    mask: Array | None = None,
    *,
    level: Level = "token",
    mode: Mode = "truncate",
    cap: float = 2.0,
    low: float | None = None,
    high: float | None = None,
    gate: gates_lib.Gate | None = None,
) -> tuple[Array, CorrectionAux]:
  """Stop-gradiented per-token correction weights c(ρ) for the rollout–trainer mismatch.

  Args:
    old_log_prob: log π_old (the trainer's log-probs of the sampled tokens), [..., T].
    rollout_log_prob: log π_rollout (the sampler's), same shape.
    mask: optional, same shape; padding gets weight 0.
    level: "token" or "sequence" (ρ_i = Π_t ρ_t over the sequence's valid tokens).
    mode: "truncate" (min(ρ, cap), and max(·, low) if low is given), "mask" (ρ inside
      [low, high], 0 outside), "reject" (1 inside, 0 outside) or "gate" (w(ρ) of `gate`).
    cap: C of truncate, > 0.
    low, high: the band of mask/reject (defaults 0.5 and 2.0: IcePop's), low ≥ 0 < high;
      `low` is also truncate's optional lower clip.
    gate: the `Gate` of mode="gate" (e.g. `gates.sigmoid(4.0)`).

  Returns:
    (weights of the shape of old_log_prob, CorrectionAux).
  """
  if mode not in MODES:
    raise ValueError(f"correction_weights: mode must be one of {MODES}, got mode={mode!r}")
  if mode in ("mask", "reject"):
    low, high = (0.5 if low is None else low), (2.0 if high is None else high)
  _check_positive("cap", cap)
  _check_positive("low", low, allow_zero=True)
  _check_positive("high", high)
  for lo, hi, names in ((low, high, "low, high"), (low, cap if mode == "truncate" else None,
                                                   "low, cap")):
    if lo is not None and hi is not None and not isinstance(lo, jax.core.Tracer) \
        and not isinstance(hi, jax.core.Tracer) and float(lo) >= float(hi):
      raise ValueError(f"correction_weights: need {names.replace(', ', ' < ')}, got {names} = "
                       f"{lo!r}, {hi!r}")
  if mode == "gate" and not isinstance(gate, gates_lib.Gate):
    raise ValueError(f"correction_weights: mode='gate' needs a gates.Gate, got gate={gate!r}")
  log_rho = rollout_log_ratio(old_log_prob, rollout_log_prob, mask, level)
  rho = jnp.exp(jnp.clip(log_rho, -SAFETY_BOUND, SAFETY_BOUND))
  weights, corrected = _weights(mode, log_rho, rho, cap, low, high, gate)
  valid = (jnp.ones(jnp.shape(log_rho), bool) if mask is None
           else as_bool_mask("correction_weights", mask))
  aux = _diagnostics(weights, corrected, rho, valid, level)
  return jax.lax.stop_gradient(jnp.where(valid, weights, 0.0)), aux


def _diagnostics(weights, corrected, rho, valid, level) -> CorrectionAux:
  if level == "sequence":  # one unit per sequence with a valid token (values constant along T)
    weights, corrected, rho = weights[..., 0], corrected[..., 0], rho[..., 0]
    valid = jnp.any(valid, axis=-1)
  weights, rho = jax.lax.stop_gradient((weights, rho))
  n = jnp.maximum(jnp.sum(valid), 1).astype(rho.dtype)
  mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0)) / n
  mean_w, mean_w2 = mean(weights), mean(jnp.square(weights))
  return CorrectionAux(
      effective_sample_size=jnp.where(mean_w2 > 0, mean_w**2 / jnp.where(mean_w2 > 0, mean_w2, 1.0),
                                      0.0),
      fraction_corrected=mean(corrected.astype(rho.dtype)),
      ratio_mean=mean(rho),
      ratio_max=jnp.max(jnp.where(valid, rho, 0.0)),
      weight_mean=mean_w,
  )
