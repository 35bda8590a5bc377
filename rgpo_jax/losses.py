"""Loss functions: gated policy surrogates (single and dual ratio), value, entropy, KL estimators.

Every function is pure, works on arrays of any shape (plus an optional mask of the same shape),
and composes with `jit`, `vmap`, `grad` and `pmap`. Nothing here imports the trainer: take these
into your own agent (see README).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax import gates as gates_lib
from rgpo_jax._checks import check_same_shape
from rgpo_jax.distributions import (  # noqa: F401  (re-exported: entropy lives with the policies)
    categorical_entropy, gaussian_entropy, tanh_gaussian_entropy)
from rgpo_jax.kl import (  # noqa: F401  (re-exported: the KL estimators live in kl.py)
    kl_k1, kl_k2, kl_k3, kl_k3_from_log_ratio)

Array = jax.Array
Reduction = Literal["token_mean", "sequence_mean"]
REDUCTIONS = ("token_mean", "sequence_mean")

# exp(20) ≈ 4.9e8: far beyond any ratio a useful update sees, far below float32 overflow (≈ e^88).
DEFAULT_MAX_LOG_RATIO = 20.0


# ---------------------------------------------------------------------------------------------
# Shared pieces.


def _check_shapes(fn: str, **arrays):
  check_same_shape(fn, " (broadcast them explicitly, e.g. a per-sequence advantage as "
                       "advantage[:, None])", **arrays)


def _check_reduction(fn: str, reduction: str, ndim: int):
  if reduction not in REDUCTIONS:
    raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got reduction={reduction!r}")
  if reduction == "sequence_mean" and ndim < 2:
    raise ValueError(f"{fn}: reduction='sequence_mean' needs arrays shaped [..., sequence, token], "
                     f"got {ndim}-d arrays")


def masked_mean(x: Array, mask: Array | None = None, reduction: Reduction = "token_mean") -> Array:
  """Mean of `x` over the entries where `mask` is true.

  token_mean:    Σ m·x / Σ m over all entries (every valid token counts once).
  sequence_mean: per sequence (last axis) Σ_t m·x / Σ_t m, then the mean over sequences that have
                 at least one valid token (every sequence counts once, as in GRPO's original loss).
  An all-masked input gives 0 rather than NaN.
  """
  m = jnp.ones_like(x) if mask is None else mask.astype(x.dtype)
  if reduction == "token_mean":
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)
  tokens = jnp.sum(m, axis=-1)
  per_sequence = jnp.sum(x * m, axis=-1) / jnp.maximum(tokens, 1.0)
  has_tokens = (tokens > 0).astype(x.dtype)
  return jnp.sum(per_sequence * has_tokens) / jnp.maximum(jnp.sum(has_tokens), 1.0)


def _masked_max(x: Array, mask: Array | None) -> Array:
  if mask is None:
    return jnp.max(x)
  return jnp.max(jnp.where(mask.astype(bool), x, -jnp.inf), initial=0.0)


def clamped_ratio(log_prob: Array, base_log_prob: Array,
                  max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Array:
  """r = exp(log_prob − stop_gradient(base_log_prob)), safe against overflow.

  The log-ratio is clamped to [−max_log_ratio, max_log_ratio] with a straight-through estimator:
  the forward value is exp(clamped), and ∂r/∂log_prob = r_clamped. Inside the band (|log r| ≤ 20
  by default, i.e. r ∈ [2e−9, 4.9e8]) values and gradients are exactly those of the unclamped
  ratio; outside it a sample's gradient weight is w evaluated at the band's edge (finite, and
  non-zero for gates such as REINFORCE whose weight does not vanish), never inf or NaN.
  """
  log_ratio = log_prob - jax.lax.stop_gradient(base_log_prob)
  clamped = jnp.clip(log_ratio, -max_log_ratio, max_log_ratio)
  return jnp.exp(log_ratio + jax.lax.stop_gradient(clamped - log_ratio))


# ---------------------------------------------------------------------------------------------
# Gated policy losses.


class PolicyLossAux(NamedTuple):
  """Diagnostics of a gated policy loss (all stop-gradiented scalars over valid entries).

  gate_mean: mean α = g(r).
  acceptance_fraction: fraction of samples whose gate slope is at least half its on-policy
    value, g'(r) ≥ ½·g'(1): the samples that still pass gradient. (The raw test α > ½ only
    makes sense for gates valued in [0, 1] and, for the sigmoid, just means r > 1; the slope
    test means the same thing for every gate: for PPO-clip it is 1 − clip fraction.)
  rejection_fraction: fraction with g'(r) < 0.01·g'(1): effectively rejected (PPO: clipped;
    truncated: outside the band).
  weight_mean, weight_max: mean and max effective weight w(r) = g'(r)·r.
  effective_update_ratio: mean g'(r)/g'(1), the "EUR" of arXiv 2602.19345 (1 − clip fraction
    for PPO-clip, 1 for REINFORCE, mean f'(r) for SAPO-style gates).
  approx_kl: mean k3 estimate of KL(π_old‖π_θ).
  ratio_mean, ratio_max: the importance ratios.
  """

  gate_mean: Array
  acceptance_fraction: Array
  rejection_fraction: Array
  weight_mean: Array
  weight_max: Array
  effective_update_ratio: Array
  approx_kl: Array
  ratio_mean: Array
  ratio_max: Array


def gate_diagnostics(gate: gates_lib.Gate, ratio: Array, log_ratio: Array, advantage: Array,
                     mask: Array | None = None,
                     reduction: Reduction = "token_mean") -> PolicyLossAux:
  """The `PolicyLossAux` statistics of `gate` at the given ratios (no gradient flows)."""
  ratio, log_ratio, advantage = jax.lax.stop_gradient((ratio, log_ratio, advantage))
  value, slope = jax.jvp(lambda r: gate.value(r, advantage), (ratio,), (jnp.ones_like(ratio),))
  slope_on_policy = gate.derivative(jnp.ones_like(ratio), advantage)
  relative_slope = jnp.where(slope_on_policy != 0,
                             slope / jnp.where(slope_on_policy != 0, slope_on_policy, 1.0), 0.0)
  weight = slope * ratio
  mean = lambda x: masked_mean(x.astype(ratio.dtype), mask, reduction)
  return PolicyLossAux(
      gate_mean=mean(value),
      acceptance_fraction=mean(relative_slope >= 0.5),
      rejection_fraction=mean(relative_slope < 0.01),
      weight_mean=mean(weight),
      weight_max=_masked_max(weight, mask),
      effective_update_ratio=mean(relative_slope),
      approx_kl=mean(kl_k3_from_log_ratio(log_ratio)),
      ratio_mean=mean(ratio),
      ratio_max=_masked_max(ratio, mask),
  )


def policy_loss(
    gate: gates_lib.Gate,
    log_prob: Array,
    behavior_log_prob: Array,
    advantage: Array,
    mask: Array | None = None,
    *,
    reduction: Reduction = "token_mean",
    max_log_ratio: float = DEFAULT_MAX_LOG_RATIO,
) -> tuple[Array, PolicyLossAux]:
  """Gated policy-gradient loss L = −mean[g(r)·Â] (RGPO, arXiv 2604.14895).

  r = exp(log_prob − stop_gradient(behavior_log_prob)) (overflow-safe, see `clamped_ratio`) and
  Â = stop_gradient(advantage). Because ∇ g(r) = w(r)·∇ log π with w(r) = g'(r)·r,

      ∂L/∂log_prob_i = −w(r_i)·Â_i / N        (token_mean, N valid entries),

  so the gate alone decides the algorithm: `gates.sigmoid(k)` is RGPO, `gates.ppo_clip(ε)` is
  PPO, `gates.importance()` the IS/TRPO surrogate, `gates.reinforce()` REINFORCE.

  Args:
    gate: a `gates.Gate`.
    log_prob: log π_θ(a|s) of the taken actions, any shape (differentiated).
    behavior_log_prob: log π_old(a|s) of the same actions, same shape (stop-gradiented).
    advantage: Â, same shape (stop-gradiented). Broadcast per-sequence advantages yourself.
    mask: optional bool/0-1 array of the same shape; padded entries (False/0) are ignored.
    reduction: "token_mean" (mean over all valid entries) or "sequence_mean" (mean over the last
      axis per sequence, then over sequences).
    max_log_ratio: clamp of |log r| for overflow safety.

  Returns:
    (loss, aux): the scalar loss and a `PolicyLossAux` of diagnostics.
  """
  _check_shapes("policy_loss", log_prob=log_prob, behavior_log_prob=behavior_log_prob,
                advantage=advantage, mask=mask)
  _check_reduction("policy_loss", reduction, jnp.ndim(log_prob))
  advantage = jax.lax.stop_gradient(advantage)
  ratio = clamped_ratio(log_prob, behavior_log_prob, max_log_ratio)
  loss = -masked_mean(gate.value(ratio, advantage) * advantage, mask, reduction)
  log_ratio = jnp.log(ratio)
  aux = gate_diagnostics(gate, ratio, log_ratio, advantage, mask, reduction)
  return loss, aux


class DualRatioAux(NamedTuple):
  """Diagnostics of `dual_ratio_policy_loss`.

  old: `PolicyLossAux` of the old-policy gate alone.
  ref_gate_mean: mean normalised reference factor g_ref(r_ref)/g_ref(1).
  approx_kl_ref: mean k3 estimate of KL(π_ref‖π_θ) on the sampled tokens (sampled from π_old,
    so a diagnostic, not an unbiased estimate, off-policy).
  weight_mean, weight_max: the combined effective weight ∂α/∂log π_θ.
  """

  old: PolicyLossAux
  ref_gate_mean: Array
  approx_kl_ref: Array
  weight_mean: Array
  weight_max: Array


def dual_ratio_policy_loss(
    gate_old: gates_lib.Gate,
    gate_ref: gates_lib.Gate,
    log_prob: Array,
    old_log_prob: Array,
    ref_log_prob: Array,
    advantage: Array,
    mask: Array | None = None,
    *,
    reduction: Reduction = "token_mean",
    max_log_ratio: float = DEFAULT_MAX_LOG_RATIO,
) -> tuple[Array, DualRatioAux]:
  """RLHF gate anchored to both π_old and a reference model: L = −mean[α·Â].

      α = g_old(r_old) · g_ref(r_ref) / g_ref(1),   r_old = π_θ/π_old,  r_ref = π_θ/π_ref,

  both ratios differentiated, so each sample's weight is
      ∂α/∂log π_θ = [w_old(r_old)·g_ref(r_ref) + g_old(r_old)·w_ref(r_ref)] / g_ref(1).

  Reconstruction (the form in arXiv 2604.14895 is not public): the product of two gates, token
  level. We divide by g_ref(1) so that a policy equal to the reference (the start of RLHF, where
  a sigmoid gate would sit at ½) gets exactly the single-ratio RGPO update; as π_θ drifts from
  π_ref the factor moves the update towards/away from the reference through the gate's slope.
  Pass any `Gate` as `gate_ref` (e.g. a sharper sigmoid for a tighter anchor). No KL penalty is
  added here; add `kl_k3` yourself if you want one.

  Args:
    gate_old, gate_ref: gates on the old-policy and reference ratios.
    log_prob: log π_θ (differentiated); old_log_prob, ref_log_prob: stop-gradiented.
    advantage, mask, reduction, max_log_ratio: as in `policy_loss`.

  Returns:
    (loss, DualRatioAux).
  """
  _check_shapes("dual_ratio_policy_loss", log_prob=log_prob, old_log_prob=old_log_prob,
                ref_log_prob=ref_log_prob, advantage=advantage, mask=mask)
  _check_reduction("dual_ratio_policy_loss", reduction, jnp.ndim(log_prob))
  advantage = jax.lax.stop_gradient(advantage)

  def alpha_fn(lp):
    r_old = clamped_ratio(lp, old_log_prob, max_log_ratio)
    r_ref = clamped_ratio(lp, ref_log_prob, max_log_ratio)
    ref_scale = gate_ref.value(jnp.ones_like(r_ref), advantage)
    return gate_old.value(r_old, advantage) * gate_ref.value(r_ref, advantage) / ref_scale

  loss = -masked_mean(alpha_fn(log_prob) * advantage, mask, reduction)

  lp = jax.lax.stop_gradient(log_prob)
  _, weight = jax.jvp(alpha_fn, (lp,), (jnp.ones_like(lp),))
  r_old = clamped_ratio(lp, old_log_prob, max_log_ratio)
  r_ref = clamped_ratio(lp, ref_log_prob, max_log_ratio)
  ref_factor = gate_ref.value(r_ref, advantage) / gate_ref.value(jnp.ones_like(r_ref), advantage)
  aux = DualRatioAux(
      old=gate_diagnostics(gate_old, r_old, jnp.log(r_old), advantage, mask, reduction),
      ref_gate_mean=masked_mean(jax.lax.stop_gradient(ref_factor), mask, reduction),
      approx_kl_ref=masked_mean(kl_k3(jax.lax.stop_gradient(ref_log_prob), lp), mask, reduction),
      weight_mean=masked_mean(weight, mask, reduction),
      weight_max=_masked_max(weight, mask),
  )
  return loss, aux


# ---------------------------------------------------------------------------------------------
# Value and entropy losses.


def value_loss(value: Array, target: Array, mask: Array | None = None, *,
               old_value: Array | None = None, clip_epsilon: float | None = None,
               reduction: Reduction = "token_mean") -> Array:
  """Squared-error critic loss ½(V − R)², optionally PPO-clipped.

  With `old_value` and `clip_epsilon`: ½·max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²), as in
  PPO's reference implementation. `target` is stop-gradiented.
  """
  _check_shapes("value_loss", value=value, target=target, old_value=old_value, mask=mask)
  if (old_value is None) != (clip_epsilon is None):
    raise ValueError("value_loss: pass both old_value and clip_epsilon for the clipped loss, or "
                     f"neither; got old_value={'set' if old_value is not None else None}, "
                     f"clip_epsilon={clip_epsilon!r}")
  target = jax.lax.stop_gradient(target)
  error = jnp.square(value - target)
  if old_value is not None:
    old_value = jax.lax.stop_gradient(old_value)
    clipped = old_value + jnp.clip(value - old_value, -clip_epsilon, clip_epsilon)
    error = jnp.maximum(error, jnp.square(clipped - target))
  return 0.5 * masked_mean(error, mask, reduction)


def entropy_loss(entropy: Array, mask: Array | None = None,
                 reduction: Reduction = "token_mean") -> Array:
  """−mean entropy: add `coef · entropy_loss` to a loss to encourage exploration."""
  return -masked_mean(entropy, mask, reduction)
