"""KL handling: per-sample estimators, a KL penalty in the loss or in the reward, and the adaptive
KL coefficient of Ziegler et al. (2019). One place for each estimator (`losses` re-exports them).

Estimators (Schulman, "Approximating KL divergence", 2020): samples come from q; each estimates
KL(q‖p) per sample with log r = log p − log q:

| name  | value                 | gradient (w.r.t. log q of the sample)   | note |
|-------|-----------------------|-----------------------------------------|------|
| `k1`  | −log r                | 1                                       | unbiased, high variance, can be < 0 |
| `k2`  | ½(log r)²             | −log r                                  | biased, low variance, ≥ 0; its gradient is the unbiased gradient of KL |
| `k3`  | (r − 1) − log r       | 1 − r                                   | unbiased, low variance, ≥ 0 (verl `low_var_kl`, TRL's GRPO β-term) |
| `k3+` | value of k3           | gradient of k2                          | verl `kl_loss_type="k3+"`: k3's value, k2's (correct) gradient |
| `k1+` | value of k1           | gradient of k2                          | verl `"k1+"` |

In the loss (GRPO/DAPO style, verl `use_kl_loss`), q = π_θ and p = π_ref: `kl_penalty(log_prob,
ref_log_prob, "k3")` per token, added as β·agg(penalty). In the reward (PPO-RLHF style, verl
`use_kl_in_reward`, Ziegler et al. arXiv 1909.08593): `kl_in_reward` subtracts β·k1 (computed
with π_old, stop-gradiented) from each token's reward before advantages are estimated; β may
follow `adaptive_kl_update`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax._checks import as_bool_mask, check_number, check_same_shape

Array = jax.Array
Estimator = Literal["k1", "k2", "k3", "k1+", "k3+"]
ESTIMATORS = ("k1", "k2", "k3", "k1+", "k3+")
# |log r| clamp inside k3 against overflow (exp(20) ≈ 4.9e8), as verl's low_var_kl.
MAX_LOG_RATIO = 20.0


def kl_k1(sample_log_prob: Array, target_log_prob: Array) -> Array:
  """k1 = −log r = log q − log p: unbiased for KL(q‖p), high variance, can be negative."""
  return sample_log_prob - target_log_prob


def kl_k2(sample_log_prob: Array, target_log_prob: Array) -> Array:
  """k2 = ½(log r)²: biased, low variance, ≥ 0."""
  return 0.5 * jnp.square(target_log_prob - sample_log_prob)


def kl_k3(sample_log_prob: Array, target_log_prob: Array) -> Array:
  """k3 = (r − 1) − log r: unbiased for KL(q‖p), low variance, ≥ 0."""
  return kl_k3_from_log_ratio(target_log_prob - sample_log_prob)


def kl_k3_from_log_ratio(log_ratio: Array) -> Array:
  """k3 from log r = log p − log q directly; |log r| is clamped at 20 against overflow."""
  log_ratio = jnp.clip(log_ratio, -MAX_LOG_RATIO, MAX_LOG_RATIO)
  return jnp.expm1(log_ratio) - log_ratio


def _straight_through(value: Array, gradient_source: Array) -> Array:
  """value's value with gradient_source's gradient."""
  return jax.lax.stop_gradient(value) + gradient_source - jax.lax.stop_gradient(gradient_source)


def kl_penalty(log_prob: Array, ref_log_prob: Array, estimator: Estimator = "k3",
               mask: Array | None = None, *, clamp: float | None = None) -> Array:
  """Per-token estimate of KL(π_θ‖π_ref) on tokens sampled from π_θ, differentiable in log_prob.

  Args:
    log_prob: log π_θ of the sampled tokens (differentiated), any shape.
    ref_log_prob: log π_ref, same shape (stop-gradiented).
    estimator: one of `ESTIMATORS` (see the module table); "k3+"/"k1+" have k2's gradient.
    mask: optional, same shape; the estimate is 0 (and inert) on padding.
    clamp: optional bound, > 0: the estimate is clipped to [−clamp, clamp] (verl clamps k3 at
      ±10; tunix `kl_clamp_value`); beyond it the gradient is 0.

  Returns:
    per-token estimates, shape of log_prob.
  """
  check_same_shape("kl_penalty", log_prob=log_prob, ref_log_prob=ref_log_prob, mask=mask)
  if estimator not in ESTIMATORS:
    raise ValueError(f"kl_penalty: estimator must be one of {ESTIMATORS}, got "
                     f"estimator={estimator!r}")
  if clamp is not None:
    check_number("kl_penalty", "clamp", clamp, lambda v: v > 0, "> 0 or None", allow_inf=True)
  ref = jax.lax.stop_gradient(ref_log_prob)
  if mask is not None:
    valid = as_bool_mask("kl_penalty", mask)
    log_prob, ref = jnp.where(valid, log_prob, 0.0), jnp.where(valid, ref, 0.0)
  base = {"k1": kl_k1, "k1+": kl_k1, "k2": kl_k2, "k3": kl_k3, "k3+": kl_k3}[estimator]
  value = base(log_prob, ref)
  if estimator.endswith("+"):
    value = _straight_through(value, kl_k2(log_prob, ref))
  if clamp is not None:
    value = jnp.clip(value, -clamp, clamp)
  return value if mask is None else jnp.where(valid, value, 0.0)


def kl_in_reward(rewards: Array, log_prob: Array, ref_log_prob: Array, coef: float | Array,
                 mask: Array | None = None, estimator: Estimator = "k1") -> Array:
  """Token rewards with a KL penalty: r̃_t = r_t − β·KL_t (Ziegler et al., arXiv 1909.08593).

  verl `compute_rewards` (`use_kl_in_reward`): KL_t = log π_old(y_t) − log π_ref(y_t) (k1), all
  stop-gradiented: the penalty shapes the return that advantages are estimated from; it is not
  a loss term. Padding keeps its reward (0 penalty).

  Args:
    rewards: per-token rewards [..., T] (e.g. the score on the last token, 0 elsewhere).
    log_prob: log π_old of the sampled tokens (the policy that generated them), same shape.
    ref_log_prob: log π_ref, same shape.
    coef: β ≥ 0 (a float or a traced array, e.g. `AdaptiveKLState.coef`).
    mask: optional, same shape.
    estimator: any of `ESTIMATORS` ("+" variants equal their base: no gradient here).
  """
  check_same_shape("kl_in_reward", rewards=rewards, log_prob=log_prob, ref_log_prob=ref_log_prob,
                   mask=mask)
  check_number("kl_in_reward", "coef", coef, lambda v: v >= 0, ">= 0")
  kl = jax.lax.stop_gradient(kl_penalty(log_prob, ref_log_prob, estimator, mask))
  return jax.lax.stop_gradient(rewards) - coef * kl


class AdaptiveKLState(NamedTuple):
  """State of the adaptive KL controller: the current coefficient β (a scalar array)."""
  coef: Array


def adaptive_kl_init(init_coef: float) -> AdaptiveKLState:
  """The controller's initial state, β = init_coef ≥ 0."""
  check_number("adaptive_kl_init", "init_coef", init_coef, lambda v: v >= 0, ">= 0")
  return AdaptiveKLState(coef=jnp.asarray(init_coef, jnp.result_type(float)))


def adaptive_kl_update(state: AdaptiveKLState, current_kl: Array, n_steps: Array | int, *,
                       target: float, horizon: float,
                       error_clip: tuple[float, float] = (-0.2, 0.2)) -> AdaptiveKLState:
  """One step of Ziegler et al.'s proportional controller (arXiv 1909.08593, §2.2):

      e = clip(KL/KL_target − 1, −0.2, 0.2),    β ← β·(1 + e·n_steps/horizon).

  `error_clip` generalises the ±0.2 band (Ziegler's, the default): an upper end above 0.2
  reacts harder to KL spikes than to undershoots, which pulls the *mean* KL (not just the
  typical one) towards the target when the KL is heavy-tailed (the adaptive gate width,
  `rgpo_jax.training.gate_width`, uses (−0.2, 1.0)). Needs −1 < low ≤ 0 ≤ high.

  A pure function of its inputs (jit/scan-friendly; carry the state in your train state).
  verl `AdaptiveKLController`, TRL's PPO `AdaptiveKLController`.

  Args:
    state: `AdaptiveKLState`.
    current_kl: the measured KL of the last batch (scalar).
    n_steps: the number of samples (or steps) that batch counted for.
    target: KL_target > 0.
    horizon: > 0; larger means slower adaptation.
    error_clip: (low, high) band of the relative error e, −1 < low ≤ 0 ≤ high.
  """
  for name, value in (("target", target), ("horizon", horizon)):
    check_number("adaptive_kl_update", name, value, lambda v: v > 0, "> 0")
  low, high = error_clip
  check_number("adaptive_kl_update", "error_clip", error_clip, allowed="(low, high) numbers")
  if not -1.0 < float(low) <= 0.0 <= float(high):
    raise ValueError(f"adaptive_kl_update: error_clip must satisfy -1 < low <= 0 <= high, got "
                     f"error_clip={error_clip!r}")
  error = jnp.clip(current_kl / target - 1.0, low, high)
  return AdaptiveKLState(coef=state.coef * (1.0 + error * n_steps / horizon))
