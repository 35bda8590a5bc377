"""The library's gated policy losses as google-tunix policy losses (GRPO and PPO learners).

tunix 0.1.7 looks a policy loss up by name (`GRPOConfig(policy_loss_fn=...)`,
`PPOConfig(policy_loss_fn=...)`) and calls it as

    loss, aux = fn(model, train_example, algo_config=..., pad_id=..., eos_id=...)

inside the actor trainer's jitted `value_and_grad`. `train_example` carries prompt and
completion ids, `completion_mask`, `advantages` ([B] for GRPO, [B, T] for PPO's GAE),
`old_per_token_logps` (None when GRPO runs one iteration per batch: then π_old = π_θ) and
`ref_per_token_logps` (None unless `algo_config.beta != 0`). The functions made here compute
log π_θ of the completion tokens exactly as tunix's own losses do
(`tunix.rl.common.compute_per_token_logps`, with the rollout temperature) and hand them to
`losses.policy_loss` (one gate) or `losses.dual_ratio_policy_loss` (the RLHF dual-ratio gate),
so the gate alone changes; masks, aggregation and diagnostics are the library's.

Conventions, chosen to match the tunix loss being replaced:
- aggregation: `algo_config.loss_agg_mode` when the config has one (GRPO: "token-mean" or its
  default "sequence-mean-token-mean"), else token mean (what tunix's PPO loss uses);
- KL penalty in the loss: GRPO configs add β·KL(π_θ, π_ref) with `kl_loss_mode`, as tunix's
  GRPO loss does; PPO configs put β·KL into the reward (tunix's PPO learner) and add none here.
  `kl_coef` overrides both. The registered `rgpo_dual` uses kl_coef = 0: the reference gate is
  its anchor, and tunix computes reference log-probs only when β ≠ 0, so with GRPO β only
  switches them on;
- `sampler_is_weights` (detached per-token factors, when tunix sets them) multiply Â.

Padding is inert: log-probs, advantages and weights are selected with `jnp.where` on the
completion mask before any ratio is formed, so −inf or NaN in padded positions reaches neither
the loss nor the gradient.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.rl import common as tunix_common
from tunix.rl import function_registry

from rgpo_jax import gates, kl, losses

# tunix's `loss_agg_mode` names → `losses` reductions (the two modes the gated losses support).
AGGREGATIONS = {"token-mean": "token_mean", "sequence-mean-token-mean": "sequence_mean"}
# tunix's `kl_loss_mode` names → this library's KL estimators (`rgpo_jax.kl`).
KL_ESTIMATORS = {"kl": "k1", "mse_kl": "k2", "low_var_kl": "k3"}

# Keys of `aux` that describe the gate; `log_gate_metrics` adds them to tunix's actor metrics.
GATE_METRICS = (
    "gate/mean", "gate/acceptance_fraction", "gate/rejection_fraction", "gate/weight_mean",
    "gate/weight_max", "gate/effective_update_ratio", "gate/kl_old", "gate/kl_ref",
    "gate/ref_factor_mean", "is_ratio/mean", "is_ratio/max", "pg_loss",
)

# Marks our registered functions, so that registering again (a reload) is a no-op.
_MARK = "_rgpo_jax_policy_loss"


def _reduction(algo_config, reduction: str | None) -> str:
  if reduction is not None:
    if reduction not in losses.REDUCTIONS:
      raise ValueError(f"rgpo_jax.rlhf: reduction must be one of {losses.REDUCTIONS} or None "
                       f"(follow algo_config.loss_agg_mode), got reduction={reduction!r}")
    return reduction
  mode = getattr(algo_config, "loss_agg_mode", None)
  if mode is None:
    return "token_mean"
  if mode not in AGGREGATIONS:
    raise ValueError(f"rgpo_jax.rlhf: algo_config.loss_agg_mode must be one of "
                     f"{sorted(AGGREGATIONS)} for the gated losses, got loss_agg_mode={mode!r}")
  return AGGREGATIONS[mode]


def _kl_penalty(algo_config, kl_coef: float | None) -> tuple[float, str]:
  """(coefficient, tunix estimator name) of the in-loss KL penalty, following the host learner."""
  mode = getattr(algo_config, "kl_loss_mode", None)
  if kl_coef is not None:
    return float(kl_coef), mode or "kl"
  if mode is None:  # PPO: tunix adds β·KL to the reward, not to the loss.
    return float(getattr(algo_config, "kl_coef", 0.0) or 0.0), "kl"
  return float(getattr(algo_config, "beta", 0.0) or 0.0), mode


def gated_loss_from_logps(
    gate: gates.Gate,
    gate_ref: gates.Gate | None,
    per_token_logps: jax.Array,
    old_per_token_logps: jax.Array | None,
    ref_per_token_logps: jax.Array | None,
    advantages: jax.Array,
    completion_mask: jax.Array,
    *,
    reduction: str = "token_mean",
    kl_coef: float = 0.0,
    kl_estimator: str = "kl",
    kl_clamp: float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The tunix-facing loss on log-probs: a gate (or the dual-ratio gate), masked and aggregated.

      L = −agg_m[α·Â] + c·agg_m[KL(π_θ, π_ref)],   α = g(r_old)          (gate_ref None)
                                                   α = g(r_old)·g_ref(r_ref)/g_ref(1)   (dual)

  Args:
    gate, gate_ref: the gate on r_old = π_θ/π_old; the reference gate, or None for one gate.
    per_token_logps: log π_θ of the completion tokens [B, T] (differentiated).
    old_per_token_logps: log π_old [B, T], or None (then π_old = stop_gradient(π_θ), r = 1).
    ref_per_token_logps: log π_ref [B, T], or None (required by the dual gate and by c > 0).
    advantages: Â, [B] (one per sequence, broadcast over tokens) or [B, T]; stop-gradiented.
    completion_mask: [B, T], nonzero on completion tokens.
    reduction: "token_mean" or "sequence_mean" (see `losses.masked_mean`).
    kl_coef, kl_estimator: c and tunix's estimator name ("kl", "mse_kl", "low_var_kl": k1, k2,
      k3 of `rgpo_jax.kl`).
    kl_clamp: optional bound on the per-token KL (tunix's `kl_clamp_value`).

  Returns:
    (loss, aux): aux has tunix's keys "pg_loss", "pg_clipfrac" (the rejection fraction),
    "kl" (token-mean KL to π_ref, 0 without π_ref), "kl_loss", and the gate's `GATE_METRICS`.
  """
  if per_token_logps.ndim != 2 or completion_mask.shape != per_token_logps.shape:
    raise ValueError(f"rgpo_jax.rlhf: per_token_logps and completion_mask must be [B, T] of one "
                     f"shape, got {per_token_logps.shape} and {completion_mask.shape}")
  if gate_ref is not None and ref_per_token_logps is None:
    raise ValueError("rgpo_jax.rlhf: the dual-ratio gate needs the reference model's log-probs, "
                     "but train_example.ref_per_token_logps is None; tunix computes them only "
                     "when algo_config.beta != 0 (set beta > 0; the registered 'rgpo_dual' adds "
                     "no KL penalty whatever beta is)")
  if kl_estimator not in KL_ESTIMATORS:
    raise ValueError(f"rgpo_jax.rlhf: kl_loss_mode must be one of {sorted(KL_ESTIMATORS)}, got "
                     f"{kl_estimator!r}")
  mask = completion_mask.astype(bool)
  logp = jnp.where(mask, per_token_logps.astype(jnp.float32), 0.0)
  old = (jax.lax.stop_gradient(logp) if old_per_token_logps is None
         else jnp.where(mask, old_per_token_logps.astype(jnp.float32), 0.0))
  ref = (None if ref_per_token_logps is None
         else jnp.where(mask, ref_per_token_logps.astype(jnp.float32), 0.0))
  adv = advantages.astype(jnp.float32)
  adv = jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, mask.shape)
  adv = jnp.where(mask, adv, 0.0)

  if gate_ref is None:
    pg_loss, aux = losses.policy_loss(gate, logp, old, adv, mask, reduction=reduction)
    old_aux, weight_mean, weight_max = aux, aux.weight_mean, aux.weight_max
    ref_factor_mean = jnp.float32(1.0)
  else:
    pg_loss, dual = losses.dual_ratio_policy_loss(gate, gate_ref, logp, old, ref, adv, mask,
                                                  reduction=reduction)
    old_aux, weight_mean, weight_max = dual.old, dual.weight_mean, dual.weight_max
    ref_factor_mean = dual.ref_gate_mean

  metrics = {
      "pg_loss": pg_loss,
      "pg_clipfrac": old_aux.rejection_fraction,
      "gate/mean": old_aux.gate_mean,
      "gate/acceptance_fraction": old_aux.acceptance_fraction,
      "gate/rejection_fraction": old_aux.rejection_fraction,
      "gate/weight_mean": weight_mean,
      "gate/weight_max": weight_max,
      "gate/effective_update_ratio": old_aux.effective_update_ratio,
      "gate/kl_old": old_aux.approx_kl,
      "gate/ref_factor_mean": ref_factor_mean,
      "is_ratio/mean": old_aux.ratio_mean,
      "is_ratio/max": old_aux.ratio_max,
      "kl": jnp.float32(0.0),
      "kl_loss": jnp.float32(0.0),
      "gate/kl_ref": jnp.float32(0.0),
  }
  loss = pg_loss
  if ref is not None:
    # k3 estimate of KL(π_θ‖π_ref) on the sampled tokens, whatever the penalty's estimator.
    metrics["gate/kl_ref"] = losses.masked_mean(kl.kl_penalty(logp, ref, "k3", mask), mask)
    per_token_kl = kl.kl_penalty(logp, ref, KL_ESTIMATORS[kl_estimator], mask, clamp=kl_clamp)
    metrics["kl"] = losses.masked_mean(per_token_kl, mask)
    if kl_coef != 0.0:
      kl_loss = losses.masked_mean(per_token_kl, mask, reduction)
      metrics["kl_loss"] = kl_loss
      loss = loss + kl_coef * kl_loss
  elif kl_coef != 0.0:
    raise ValueError("rgpo_jax.rlhf: a KL penalty (kl_coef != 0) needs "
                     "train_example.ref_per_token_logps, which is None")
  return loss, jax.lax.stop_gradient(metrics)


def make_policy_loss_fn(gate: gates.Gate, gate_ref: gates.Gate | None = None, *,
                        reduction: str | None = None,
                        kl_coef: float | None = None) -> Callable[..., Any]:
  """A tunix policy loss `fn(model, train_example, algo_config, pad_id, eos_id, **kw)`.

  Args:
    gate: the gate on r_old = π_θ/π_old (`gates.sigmoid(4.0)` is RGPO).
    gate_ref: a gate on r_ref = π_θ/π_ref for the dual-ratio RLHF gate, or None.
    reduction: "token_mean", "sequence_mean", or None to follow `algo_config.loss_agg_mode`
      (token mean when the config has none, as tunix's PPO).
    kl_coef: in-loss KL penalty coefficient, or None to follow the learner (GRPO: β with
      `kl_loss_mode`; PPO: none, β goes into the reward).

  Returns:
    The function; register it with `register_policy_loss(name, ...)`.
  """
  if not isinstance(gate, gates.Gate) or not (gate_ref is None or isinstance(gate_ref, gates.Gate)):
    raise ValueError(f"rgpo_jax.rlhf: gate and gate_ref must be gates.Gate (gate_ref may be "
                     f"None), got gate={gate!r}, gate_ref={gate_ref!r}")
  if reduction is not None:
    _reduction(None, reduction)

  def policy_loss_fn(model, train_example, algo_config, pad_id, eos_id, **kwargs):
    del kwargs
    if getattr(algo_config, "epsilon_c", None) is not None:
      raise ValueError("rgpo_jax.rlhf: the gated losses do not implement dual-clip PPO; set "
                       f"epsilon_c=None (got epsilon_c={algo_config.epsilon_c!r})")
    coef, estimator = _kl_penalty(algo_config, kl_coef)
    entropy_coef = getattr(algo_config, "entropy_coef", None) or 0.0
    graphdef, state = nnx.split(model)
    per_token_logps, logits = tunix_common.compute_per_token_logps(
        graphdef, state,
        prompt_tokens=train_example.prompt_ids,
        completion_tokens=train_example.completion_ids,
        pad_id=pad_id, eos_id=eos_id, stop_gradient=False, return_logits=True,
        segment_ids=getattr(train_example, "segment_ids", None),
        segment_positions=getattr(train_example, "segment_positions", None),
        temperature=getattr(algo_config, "temperature", 1.0))
    advantages = train_example.advantages
    sampler_weights = getattr(train_example, "sampler_is_weights", None)
    if sampler_weights is not None:  # detached positive factors: scaling Â is the same loss
      advantages = advantages * jax.lax.stop_gradient(sampler_weights)
    loss, aux = gated_loss_from_logps(
        gate, gate_ref, per_token_logps, train_example.old_per_token_logps,
        train_example.ref_per_token_logps, advantages, train_example.completion_mask,
        reduction=_reduction(algo_config, reduction), kl_coef=coef, kl_estimator=estimator,
        kl_clamp=getattr(algo_config, "kl_clamp_value", None))
    if entropy_coef:
      entropy = losses.masked_mean(losses.categorical_entropy(logits.astype(jnp.float32)),
                                   train_example.completion_mask.astype(bool))
      loss = loss - entropy_coef * entropy
      aux["loss/entropy"] = jax.lax.stop_gradient(entropy)
    return loss, aux

  setattr(policy_loss_fn, _MARK, True)
  policy_loss_fn.gate, policy_loss_fn.gate_ref = gate, gate_ref
  return policy_loss_fn


def register_policy_loss(name: str, gate: gates.Gate, gate_ref: gates.Gate | None = None, *,
                         reduction: str | None = None, kl_coef: float | None = None):
  """Register `make_policy_loss_fn(...)` in tunix under `name`; returns the function.

  Registering a name that already holds one of this library's losses replaces it silently
  (re-imports, notebooks); a name that holds any other function (tunix's "grpo", "ppo", ...)
  is refused with a ValueError.
  """
  existing = registered_policy_loss(name)
  if existing is not None and not getattr(existing, _MARK, False):
    raise ValueError(f"rgpo_jax.rlhf: tunix already has a policy loss named {name!r} that is "
                     "not one of rgpo_jax's; choose another name")
  fn = make_policy_loss_fn(gate, gate_ref, reduction=reduction, kl_coef=kl_coef)
  if existing is not None:  # ours: replace without tunix's "overwriting" warning
    function_registry.default_registry._registry["policy_loss_fn"][name] = fn  # pylint: disable=protected-access
    return fn
  return function_registry.register_policy_loss_fn(name)(fn)


def registered_policy_loss(name: str):
  """The function tunix holds under `name`, or None."""
  try:
    return function_registry.get_policy_loss_fn(name)
  except LookupError:
    return None


def default_losses() -> dict[str, tuple[gates.Gate, gates.Gate | None, float | None]]:
  """Name → (gate, reference gate, kl_coef) of the losses registered on import."""
  table: dict[str, tuple[gates.Gate, gates.Gate | None, float | None]] = {
      f"rgpo_{family}": (make(), None, None) for family, make in gates.FAMILIES.items()}
  table["rgpo_dual"] = (gates.sigmoid(4.0), gates.sigmoid(4.0), 0.0)
  return table


def register_default_losses() -> tuple[str, ...]:
  """Register every gate family as `rgpo_<family>` and the dual-ratio gate as `rgpo_dual`."""
  table = default_losses()
  for name, (gate, gate_ref, kl_coef) in table.items():
    register_policy_loss(name, gate, gate_ref, kl_coef=kl_coef)
  return tuple(table)


def log_gate_metrics(learner) -> None:
  """Make a tunix GRPO/PPO learner log the gate diagnostics (`GATE_METRICS`, mean per step).

  tunix logs only the aux keys its learner lists; call this after building the learner.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  trainer = learner.rl_cluster.actor_trainer
  trainer.with_rl_metrics_to_log({**trainer.rl_metrics_to_log,
                                  **{key: np.mean for key in GATE_METRICS}})
