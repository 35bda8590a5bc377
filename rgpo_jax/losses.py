"""Loss functions: gated policy surrogates (single and dual ratio), value, entropy, KL estimators.

Every function is pure, works on arrays of any shape (plus an optional mask of the same shape),
and composes with `jit`, `vmap`, `grad` and `pmap`. Nothing here imports the trainer: take these
into your own agent (see README).

The policy loss is composed from one module per choice: the gate (`gates`, `detached`), the
ratio granularity (`ratios`: token, GSPO sequence, GMPO geometric mean), an optional detached
per-token weight such as a rollout-mismatch correction (`correction`), and the aggregation of the
per-token terms (`aggregation`: token-mean, seq-mean-token-mean, Dr.GRPO's constant, ...).
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple, Union

import jax
import jax.numpy as jnp

from rgpo_jax import aggregation
from rgpo_jax import gates as gates_lib
from rgpo_jax import ratios
from rgpo_jax._checks import as_bool_mask, check_number, check_same_shape
from rgpo_jax.distributions import (  # noqa: F401  (re-exported: entropy lives with the policies)
    categorical_entropy, gaussian_entropy, tanh_gaussian_entropy)
from rgpo_jax.kl import (  # noqa: F401  (re-exported: the KL estimators live in kl.py)
    kl_k1, kl_k2, kl_k3, kl_k3_from_log_ratio)

from rgpo_jax.ratios import (  # noqa: F401  (re-exported: the ratio lives in ratios.py)
    DEFAULT_MAX_LOG_RATIO, clamped_ratio)

Array = jax.Array
# A reduction is an aggregation mode (`aggregation.MODES`; the older names "token_mean" and
# "sequence_mean" are aliases of "token-mean" and "seq-mean-token-mean") or a callable
# `(per_token, mask) -> scalar`, e.g. `functools.partial(aggregation.aggregate,
# mode="token-mean", num_tokens=global_count)` for gradient accumulation.
Reduction = Union[str, Callable[[Array, Union[Array, None]], Array]]
REDUCTIONS = ("token_mean", "sequence_mean") + aggregation.MODES


# ---------------------------------------------------------------------------------------------
# Shared pieces.


def _check_shapes(fn: str, **arrays):
  check_same_shape(fn, " (broadcast them explicitly, e.g. a per-sequence advantage as "
                       "advantage[:, None])", **arrays)


def _check_reduction(fn: str, reduction, ndim: int):
  if callable(reduction):
    return
  if reduction not in REDUCTIONS:
    raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS} or a callable "
                     f"(per_token, mask) -> scalar, got reduction={reduction!r}")
  if aggregation.canonical_mode(reduction, fn).startswith("seq") and ndim < 2:
    raise ValueError(f"{fn}: reduction={reduction!r} needs arrays shaped [..., sequence, token], "
                     f"got {ndim}-d arrays")


def _diagnostic_mode(reduction) -> str:
  """Diagnostics are means: token-mean for token modes and callables, else seq-mean-token-mean."""
  if callable(reduction) or not aggregation.canonical_mode(reduction).startswith("seq"):
    return "token-mean"
  return "seq-mean-token-mean"


def _mask(fn: str, mask) -> Array | None:
  return as_bool_mask(fn, mask)


def _select(mask: Array | None, x: Array, safe: float) -> Array:
  """x where valid, `safe` on padding: applied to inputs before any log/exp/ratio, so NaN or ±inf
  on padding reaches neither the value nor the gradient (0·NaN = NaN makes a product no mask)."""
  return x if mask is None else jnp.where(mask, x, jnp.asarray(safe, jnp.result_type(x)))


def _mean(x: Array, mask: Array | None, reduction: Reduction) -> Array:
  """`masked_mean` for an already checked boolean mask (or None): `aggregation.aggregate`."""
  x = x.astype(jnp.result_type(x, float))
  if callable(reduction):
    return reduction(x if mask is None else jnp.where(mask, x, jnp.zeros((), x.dtype)), mask)
  return aggregation.aggregate(x, mask, reduction)


def masked_mean(x: Array, mask: Array | None = None, reduction: Reduction = "token_mean") -> Array:
  """Mean of `x` over the entries where `mask` is true; padded entries are inert.

  token_mean:    Σ_valid x / N_valid over all entries (every valid token counts once).
  sequence_mean: per sequence (last axis) the mean over its valid tokens, then the mean over
                 sequences that have at least one valid token (every sequence counts once, as in
                 GRPO's original loss).
  Any other `aggregation` mode (token-sum, seq-mean-token-sum, seq-mean-token-sum-norm, ...) or
  a callable `(x, mask) -> scalar` is accepted too (the logic lives in `aggregation.aggregate`).

  Padded entries are selected out (`jnp.where`), not multiplied by 0: NaN or ±inf there changes
  neither the value nor the gradient (which is exactly 0 on padding). An all-masked input gives
  0 (not NaN) with a zero gradient.

  Args:
    x: values, any shape.
    mask: optional, same shape, boolean or 0/1 (True/1 = valid). A mask selects, it does not
      weight: a concrete mask with other values (e.g. 0.5 or 2) is refused with a ValueError; a
      traced mask cannot be checked and is read as `mask != 0`.
    reduction: "token_mean", "sequence_mean" (needs at least 2-d arrays), an `aggregation`
      mode or a callable.
  """
  check_same_shape("masked_mean", x=x, mask=mask)
  _check_reduction("masked_mean", reduction, jnp.ndim(x))
  return _mean(x, _mask("masked_mean", mask), reduction)


def _masked_max(x: Array, mask: Array | None) -> Array:
  """Max of `x` over valid entries (boolean mask or None); 0 when no entry is valid."""
  if mask is None:
    return jnp.max(x)
  valid_max = jnp.max(jnp.where(mask, x, -jnp.inf))
  return jnp.where(jnp.any(mask), valid_max, jnp.zeros((), valid_max.dtype))


_check_max_log_ratio = ratios.check_max_log_ratio


# ---------------------------------------------------------------------------------------------
# The KL after an update (per-sample estimators in kl.py).


_KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def approx_kl(old_log_prob: Array, new_log_prob: Array, mask: Array | None = None, *,
              estimator: Literal["k1", "k2", "k3"] = "k3",
              reduction: Reduction = "token_mean") -> Array:
  """Mean estimate of KL(π_old‖π_new) on samples drawn from π_old (stop-gradiented).

  Use it for the KL *after* an update: keep the rollout's `old_log_prob`, run your optimiser
  steps, recompute `new_log_prob` of the same actions with the new parameters, then call this
  (the trainer's `approx_kl` metric is exactly `approx_kl(rollout log-probs, log-probs after all
  epochs)`). `PolicyLossAux.approx_kl` is different: it is measured inside the loss, at the
  parameters *before* that minibatch's step (0 on the first minibatch of an update).

  Args:
    old_log_prob: log π_old(a|s) of the sampled actions.
    new_log_prob: log π_new(a|s) of the same actions, same shape.
    mask: optional boolean or 0/1 mask (padding is inert, as in `masked_mean`).
    estimator: "k3" ((r − 1) − log r: unbiased, ≥ 0; default), "k1" (−log r) or "k2" (½ log²r).
    reduction: "token_mean" or "sequence_mean".
  """
  check_same_shape("approx_kl", old_log_prob=old_log_prob, new_log_prob=new_log_prob, mask=mask)
  _check_reduction("approx_kl", reduction, jnp.ndim(old_log_prob))
  if estimator not in _KL_ESTIMATORS:
    raise ValueError(f"approx_kl: estimator must be one of {sorted(_KL_ESTIMATORS)}, got "
                     f"estimator={estimator!r}")
  mask = _mask("approx_kl", mask)
  old_log_prob, new_log_prob = jax.lax.stop_gradient((old_log_prob, new_log_prob))
  per_sample = _KL_ESTIMATORS[estimator](_select(mask, old_log_prob, 0.0),
                                         _select(mask, new_log_prob, 0.0))
  return _mean(per_sample, mask, reduction)


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
  approx_kl: mean k3 estimate of KL(π_old‖π_θ) at the parameters the loss is evaluated at, i.e.
    *before* this step (for the KL after an update use `approx_kl(...)`, see its docstring).
  ratio_mean, ratio_max: the importance ratios (clamped at exp(±max_log_ratio)).
  All are 0 when no entry is valid.
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


def _gate_diagnostics(gate, ratio, log_ratio, advantage, mask, reduction) -> PolicyLossAux:
  """`gate_diagnostics` for an already checked boolean mask (or None)."""
  ratio, log_ratio, advantage = jax.lax.stop_gradient((ratio, log_ratio, advantage))
  ratio = _select(mask, ratio, 1.0)
  log_ratio = _select(mask, log_ratio, 0.0)
  advantage = _select(mask, advantage, 0.0)
  value, slope = jax.jvp(lambda r: gate.value(r, advantage), (ratio,), (jnp.ones_like(ratio),))
  slope_on_policy = gate.derivative(jnp.ones_like(ratio), advantage)
  relative_slope = jnp.where(slope_on_policy != 0,
                             slope / jnp.where(slope_on_policy != 0, slope_on_policy, 1.0), 0.0)
  weight = slope * ratio
  mean = lambda x: _mean(x.astype(ratio.dtype), mask, reduction)
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


def gate_diagnostics(gate: gates_lib.Gate, ratio: Array, log_ratio: Array, advantage: Array,
                     mask: Array | None = None,
                     reduction: Reduction = "token_mean") -> PolicyLossAux:
  """The `PolicyLossAux` statistics of `gate` at the given ratios (no gradient flows).

  `mask` (boolean or 0/1, as in `masked_mean`) selects the valid entries; padding is inert.
  """
  _check_shapes("gate_diagnostics", ratio=ratio, log_ratio=log_ratio, advantage=advantage,
                mask=mask)
  _check_reduction("gate_diagnostics", reduction, jnp.ndim(ratio))
  return _gate_diagnostics(gate, ratio, log_ratio, advantage,
                           _mask("gate_diagnostics", mask), _diagnostic_mode(reduction))


_MASK_DOC = """mask: optional array of the same shape, boolean or 0/1 (True/1 = valid). Padded
      entries are inert: inputs there are replaced by safe values before any log, exp or ratio,
      so NaN/±inf padding changes neither the loss, the diagnostics nor the gradient (exactly 0
      there). A mask selects, it does not weight: a concrete mask with other values is refused;
      a traced one is read as `mask != 0`. An all-False mask gives loss 0, zero gradients and
      zero diagnostics."""


def policy_loss(
    gate: gates_lib.Gate,
    log_prob: Array,
    behavior_log_prob: Array,
    advantage: Array,
    mask: Array | None = None,
    *,
    reduction: Reduction = "token_mean",
    granularity: ratios.Granularity = "token",
    log_clip: tuple[float | None, float | None] | None = None,
    sample_weight: Array | None = None,
    max_log_ratio: float = DEFAULT_MAX_LOG_RATIO,
) -> tuple[Array, PolicyLossAux]:
  """Gated policy-gradient loss L = −agg[c·g(r)·Â] (RGPO, arXiv 2604.14895).

  r = exp(log_prob − stop_gradient(behavior_log_prob)) (overflow-safe, see `clamped_ratio`) at
  the chosen granularity, Â = stop_gradient(advantage) and c an optional detached per-token
  weight. Because ∇ g(r) = w(r)·∇ log π with w(r) = g'(r)·r, for token ratios

      ∂L/∂log_prob_i = −c_i·w(r_i)·Â_i / N        (token_mean, N valid entries; 0 on padding),

  so the gate alone decides the algorithm: `gates.sigmoid(k)` is RGPO, `gates.ppo_clip(ε)` is
  PPO, `gates.importance()` the IS/TRPO surrogate, `gates.reinforce()` REINFORCE,
  `gates.dual_clip` dual-clip PPO, `detached.cispo` CISPO. With granularity="sequence_token"
  and `gates.ppo_clip` it is GSPO; with "geometric_mean", `log_clip=(0.4, 0.4)` and
  `gates.importance()` it is GMPO; any gate works at any granularity (`ratios`).

  Args:
    gate: a `gates.Gate`.
    log_prob: log π_θ(a|s) of the taken actions, any shape (differentiated).
    behavior_log_prob: log π_old(a|s) of the same actions, same shape (stop-gradiented).
    advantage: Â, same shape (stop-gradiented). Broadcast per-sequence advantages yourself.
    MASK
    reduction: how per-token terms become the loss: an `aggregation` mode ("token_mean" =
      "token-mean", "sequence_mean" = "seq-mean-token-mean", "token-sum", "seq-mean-token-sum",
      "seq-mean-token-sum-norm") or a callable `(per_token, mask) -> scalar` (e.g.
      `functools.partial(aggregation.aggregate, mode="token-mean", num_tokens=n_global)`).
      Diagnostics are token means (sequence means for the seq-* modes).
    granularity: "token" (default), "sequence" (GSPO's s_i, gradient through the mean),
      "sequence_token" (GSPO-token) or "geometric_mean" (GMPO); all but "token" need `mask`.
    log_clip: (ε_low, ε_high) of GMPO's per-token log-space clip ("geometric_mean" only).
    sample_weight: optional per-token weights c ≥ 0 of the same shape, stop-gradiented, e.g.
      `correction.correction_weights(...)[0]` (rollout–trainer mismatch) or a selection mask.
    max_log_ratio: clamp of |log r| for overflow safety, > 0 (+inf: no clamp).

  Returns:
    (loss, aux): the scalar loss and a `PolicyLossAux` of diagnostics (of the gate at the
    granularity's ratio).
  """
  _check_shapes("policy_loss", log_prob=log_prob, behavior_log_prob=behavior_log_prob,
                advantage=advantage, mask=mask, sample_weight=sample_weight)
  _check_reduction("policy_loss", reduction, jnp.ndim(log_prob))
  _check_max_log_ratio("policy_loss", max_log_ratio)
  mask = _mask("policy_loss", mask)
  log_prob = _select(mask, log_prob, 0.0)
  behavior_log_prob = _select(mask, behavior_log_prob, 0.0)
  advantage = _select(mask, jax.lax.stop_gradient(advantage), 0.0)
  low, high = (None, None) if log_clip is None else log_clip
  ratio = ratios.ratio(log_prob, behavior_log_prob, mask, granularity=granularity,
                       advantage=advantage, log_clip_low=low, log_clip_high=high,
                       max_log_ratio=max_log_ratio)
  objective = gate.value(ratio, advantage) * advantage
  if sample_weight is not None:
    objective = objective * _select(mask, jax.lax.stop_gradient(sample_weight), 0.0)
  loss = -_mean(objective, mask, reduction)
  aux = _gate_diagnostics(gate, ratio, jnp.log(ratio), advantage, mask,
                          _diagnostic_mode(reduction))
  return loss, aux


policy_loss.__doc__ = policy_loss.__doc__.replace("MASK", _MASK_DOC)


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
  level. We divide by g_ref(1) so that at a policy equal to the reference (the start of RLHF,
  where a sigmoid gate would sit at ½) α has the single-ratio gate's value. Its gradient weight
  there is not RGPO's: w_old(r_old) + g_old(r_old)·w_ref(1)/g_ref(1), i.e. 2 at r_old = 1 for two
  k = 4 sigmoids against RGPO's 1 (both ratios move with π_θ). As π_θ drifts from π_ref the
  factor moves the update towards/away from the reference through the gate's slope.
  Pass any `Gate` as `gate_ref` (e.g. a sharper sigmoid for a tighter anchor). No KL penalty is
  added here; add `kl_k3` yourself if you want one.

  Args:
    gate_old, gate_ref: gates on the old-policy and reference ratios.
    log_prob: log π_θ (differentiated); old_log_prob, ref_log_prob: stop-gradiented.
    MASK
    advantage, reduction, max_log_ratio: as in `policy_loss`.

  Returns:
    (loss, DualRatioAux).
  """
  _check_shapes("dual_ratio_policy_loss", log_prob=log_prob, old_log_prob=old_log_prob,
                ref_log_prob=ref_log_prob, advantage=advantage, mask=mask)
  _check_reduction("dual_ratio_policy_loss", reduction, jnp.ndim(log_prob))
  _check_max_log_ratio("dual_ratio_policy_loss", max_log_ratio)
  mask = _mask("dual_ratio_policy_loss", mask)
  log_prob = _select(mask, log_prob, 0.0)
  old_log_prob = _select(mask, jax.lax.stop_gradient(old_log_prob), 0.0)
  ref_log_prob = _select(mask, jax.lax.stop_gradient(ref_log_prob), 0.0)
  advantage = _select(mask, jax.lax.stop_gradient(advantage), 0.0)

  def alpha_fn(lp):
    r_old = clamped_ratio(lp, old_log_prob, max_log_ratio)
    r_ref = clamped_ratio(lp, ref_log_prob, max_log_ratio)
    ref_scale = gate_ref.value(jnp.ones_like(r_ref), advantage)
    return gate_old.value(r_old, advantage) * gate_ref.value(r_ref, advantage) / ref_scale

  loss = -_mean(alpha_fn(log_prob) * advantage, mask, reduction)

  lp = jax.lax.stop_gradient(log_prob)
  _, weight = jax.jvp(alpha_fn, (lp,), (jnp.ones_like(lp),))
  r_old = clamped_ratio(lp, old_log_prob, max_log_ratio)
  r_ref = clamped_ratio(lp, ref_log_prob, max_log_ratio)
  ref_factor = gate_ref.value(r_ref, advantage) / gate_ref.value(jnp.ones_like(r_ref), advantage)
  diagnostic = _diagnostic_mode(reduction)
  aux = DualRatioAux(
      old=_gate_diagnostics(gate_old, r_old, jnp.log(r_old), advantage, mask, diagnostic),
      ref_gate_mean=_mean(ref_factor, mask, diagnostic),
      approx_kl_ref=_mean(kl_k3(ref_log_prob, lp), mask, diagnostic),
      weight_mean=_mean(weight, mask, diagnostic),
      weight_max=_masked_max(weight, mask),
  )
  return loss, aux


dual_ratio_policy_loss.__doc__ = dual_ratio_policy_loss.__doc__.replace("MASK", _MASK_DOC)


# ---------------------------------------------------------------------------------------------
# Value and entropy terms.


def value_loss(value: Array, target: Array, mask: Array | None = None, *,
               old_value: Array | None = None, clip_epsilon: float | None = None,
               reduction: Reduction = "token_mean") -> Array:
  """Squared-error critic loss ½(V − R)², optionally PPO-clipped.

  With `old_value` and `clip_epsilon` (> 0): ½·max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²),
  as in PPO's reference implementation. `target` and `old_value` are stop-gradiented. `mask`
  (boolean or 0/1) as in `masked_mean`: padded entries are inert.
  """
  _check_shapes("value_loss", value=value, target=target, old_value=old_value, mask=mask)
  if (old_value is None) != (clip_epsilon is None):
    raise ValueError("value_loss: pass both old_value and clip_epsilon for the clipped loss, or "
                     f"neither; got old_value={'set' if old_value is not None else None}, "
                     f"clip_epsilon={clip_epsilon!r}")
  _check_reduction("value_loss", reduction, jnp.ndim(value))
  if clip_epsilon is not None:
    check_number("value_loss", "clip_epsilon", clip_epsilon, lambda v: v > 0, "> 0 (finite)")
  mask = _mask("value_loss", mask)
  value = _select(mask, value, 0.0)
  target = _select(mask, jax.lax.stop_gradient(target), 0.0)
  error = jnp.square(value - target)
  if old_value is not None:
    old_value = _select(mask, jax.lax.stop_gradient(old_value), 0.0)
    clipped = old_value + jnp.clip(value - old_value, -clip_epsilon, clip_epsilon)
    error = jnp.maximum(error, jnp.square(clipped - target))
  return 0.5 * _mean(error, mask, reduction)


def entropy_bonus(entropy: Array, mask: Array | None = None,
                  reduction: Reduction = "token_mean") -> Array:
  """+mean entropy H (positive): SUBTRACT it from a loss to encourage exploration,

      loss = pg + vf_coef · vf − ent_coef · entropy_bonus(H)        (PureJaxRL / CleanRL habit).

  `mask` (boolean or 0/1) as in `masked_mean`: padded entries are inert. Compute the per-state
  entropy with `categorical_entropy` (−inf logits of masked actions are fine) or the
  distribution's `entropy()`.
  """
  _check_reduction("entropy_bonus", reduction, jnp.ndim(entropy))
  check_same_shape("entropy_bonus", entropy=entropy, mask=mask)
  return _mean(entropy, _mask("entropy_bonus", mask), reduction)


def entropy_loss(entropy: Array, mask: Array | None = None,
                 reduction: Reduction = "token_mean") -> Array:
  """NEGATIVE mean entropy, −H: ADD `ent_coef · entropy_loss(H)` to a loss to encourage
  exploration. Equal to −`entropy_bonus`; if your code subtracts `ent_coef · entropy` (PureJaxRL,
  CleanRL), use `entropy_bonus` instead, or the sign flips and exploration is penalised."""
  _check_reduction("entropy_loss", reduction, jnp.ndim(entropy))
  check_same_shape("entropy_loss", entropy=entropy, mask=mask)
  return -_mean(entropy, _mask("entropy_loss", mask), reduction)
