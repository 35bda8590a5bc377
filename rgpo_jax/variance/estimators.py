"""The estimators compared by the instrument: gates, any registered variant, MSE crossover.

Every gated estimator of the policy gradient averages X = w(r; Â)·Â·S with w(r) = g'(r)·r
(RGPO, arXiv 2604.14895); importance sampling (IS) is the gate g(r) = r, w = r. An estimator is
either a `gates.Gate` (elementwise, w depending on r and sign(Â): exact moments by quadrature)
or a `coefficients.VariantEstimator` (any registered policy-loss variant: sequence ratios, batch
statistics, |Â|-dependent weights), whose per-token term is X_t = C_t·S_t with the coefficient
C_t = −N·∂L/∂log π_t by autodiff of the variant's loss (`coefficients`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rgpo_jax import detached
from rgpo_jax import gates as gates_lib
from rgpo_jax.variance.coefficients import VariantEstimator, as_sequences, check_variant_name

Array = jax.Array
Estimator = gates_lib.Gate | VariantEstimator


def per_sample_gradient(gate: gates_lib.Gate, ratio: Array, advantage: Array,
                        score: Array) -> Array:
  """X = w(r; Â)·Â·S: one sample's gradient contribution (scalar score), any shape."""
  return gate.weight(ratio, advantage) * advantage * score


# log r of a ratio drawn as exactly 0 (a Lomax draw can underflow): the losses clamp |log r| at
# 20 anyway (`ratios.exp_clamped`), where every variant's weight is ≈ 0 or its edge value.
_TINY_RATIO = 1e-30


def per_token_terms(estimator: VariantEstimator, ratio: Array, advantage: Array, score: Array,
                    key: Array, sequence_length: int) -> Array:
  """X_t = C_t·S_t of a variant on one minibatch of N tokens (flat [N] arrays, N a multiple of L).

  The N tokens are cut into N/L sequences of `sequence_length` consecutive tokens; the loss is
  evaluated at log π_θ = log r, log π_old = 0 (synthetic tokens have no absolute probability, so
  Clip-Cov/KL-Cov's covariance uses log r, equal to log π up to the constant log π_old), with the
  tokens' own advantages. mean_t X_t is the minibatch's ascent direction −∇L projected on S.
  """
  seq = lambda x: as_sequences(x, sequence_length)
  log_r = jnp.log(jnp.maximum(ratio, _TINY_RATIO))
  c = estimator.coefficients(seq(log_r), jnp.zeros_like(seq(log_r)), seq(advantage), key=key)
  return c.reshape(ratio.shape) * score


def default_estimators() -> list[tuple[str, gates_lib.Gate]]:
  """(label, gate) pairs of the benchmark: IS, truncated IS, PPO-clip, RGPO sigmoid k ∈ {1, 2, 4,
  8}, SAPO, erf, arctan, softsign (library defaults) and REINFORCE (w ≡ 1, no correction)."""
  return [
      ("is", gates_lib.importance()),
      ("truncated[0.5,2]", gates_lib.truncated(0.5, 2.0)),
      ("ppo_clip(0.2)", gates_lib.ppo_clip(0.2)),
      ("sigmoid(k=1)", gates_lib.sigmoid(1.0)),
      ("sigmoid(k=2)", gates_lib.sigmoid(2.0)),
      ("sigmoid(k=4)", gates_lib.sigmoid(4.0)),
      ("sigmoid(k=8)", gates_lib.sigmoid(8.0)),
      ("sapo(1,1.05)", gates_lib.sapo(1.0, 1.05)),
      ("erf(1)", gates_lib.erf(1.0)),
      ("arctan(1)", gates_lib.arctan(1.0)),
      ("softsign(1)", gates_lib.softsign(1.0)),
      ("reinforce(w=1)", gates_lib.reinforce()),
  ]


def variant_estimators() -> list[tuple[str, Estimator]]:
  """(label, estimator) pairs of the LLM-stack policy-loss variants, with IS, PPO-clip and RGPO
  (k = 4) for reference. Elementwise gates: dual-clip PPO (c = 3), CISPO in verl's two-sided and
  TRL's absolute-cap forms, RGPO's sigmoid weight detached (CISPO-style). By autodiff of the
  registered loss (`VariantEstimator`, default parameters): GSPO-token and GSPO (sequence
  ratio), GMPO (geometric mean of clipped token ratios), RGPO's sigmoid on the sequence ratio,
  Clip-Cov and KL-Cov (batch statistics) and Discovered PO's drift (w depends on |Â|)."""
  return [
      ("is", gates_lib.importance()),
      ("ppo_clip(0.2)", gates_lib.ppo_clip(0.2)),
      ("dual_clip(0.2,c=3)", gates_lib.dual_clip(0.2, c=3.0)),
      ("cispo(0.2)", detached.cispo(0.2)),
      ("cispo_cap(5)", detached.cispo_cap(5.0)),
      ("sigmoid(k=4)", gates_lib.sigmoid(4.0)),
      ("detached_sigmoid(k=4)", detached.detached(gates_lib.sigmoid(4.0))),
      *((name, VariantEstimator(name)) for name in _NON_ELEMENTWISE_VARIANTS),
  ]


# The registered variants that are not an elementwise gate with a sign(Â)-only weight.
_NON_ELEMENTWISE_VARIANTS = ("gspo", "gspo_sequence", "gmpo", "rgpo_sequence", "clip_cov",
                             "kl_cov", "dpo_drift")

ESTIMATOR_SETS = ("default", "variants", "all")


def weight_depends_on_sign_only(gate: gates_lib.Gate) -> bool:
  """Whether w(r; Â) = w(r; sign Â) on a grid of r ∈ [0.05, 20] and |Â| ∈ {0.5, 2} (the exact
  moments' quadrature needs it; Discovered PO's drift fails it)."""
  r = jnp.exp(jnp.linspace(-3.0, 3.0, 61))
  same = [jnp.allclose(gate.weight(r, jnp.full_like(r, 0.5 * s)),
                       gate.weight(r, jnp.full_like(r, 2.0 * s)), rtol=1e-5, atol=1e-6)
          for s in (1.0, -1.0)]
  return bool(all(same))


def variant_estimator(name: str) -> Estimator:
  """The estimator of one registered variant, default parameters ("is": IS): its gate when the
  variant is an elementwise gate whose weight depends on r and sign(Â) only (exact moments by
  quadrature apply), else a `VariantEstimator` (coefficients by autodiff of its loss)."""
  from rgpo_jax import variants  # the registry imports losses; only needed here
  if name == "is":
    return gates_lib.importance()
  try:
    check_variant_name("estimators", name)
  except ValueError as e:
    raise ValueError(f"{e} (or 'is', or one of {ESTIMATOR_SETS})") from None
  variant = variants.VARIANTS.get(name)
  if variant is not None and variant.gate is not None and variant.granularity == "token":
    gate = variants.make_gate(name)
    if weight_depends_on_sign_only(gate):
      return gate
  return VariantEstimator(name)


def estimator_set(name: str) -> list[tuple[str, Estimator]]:
  """The estimators of `rgpo variance --estimators NAME`: "default" (`default_estimators`),
  "variants" (`variant_estimators`), "all" (both), or a comma list of those set names and
  registered `rgpo_jax.variants` names (e.g. "is,dual_clip,gspo,clip_cov,dpo_drift" or
  "default,gspo"; "is" is IS), each variant with its default parameters (`variant_estimator`).
  Each label appears once (its first occurrence)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"estimators must be one of {ESTIMATOR_SETS} or a comma list of variant "
                     f"names, got {name!r}")
  merged: dict[str, Estimator] = {}
  for item in name.split(","):
    if item == "default":
      pairs = default_estimators()
    elif item == "variants":
      pairs = variant_estimators()
    elif item == "all":
      pairs = default_estimators() + variant_estimators()
    else:
      pairs = [(item, variant_estimator(item))]
    for label, estimator in pairs:
      merged.setdefault(label, estimator)
  return list(merged.items())


def mse_crossover(var_is: float, var_gate: float, bias_gate: float) -> float:
  """Smallest batch size n from which IS beats a gate in mean squared error.

  MSE_IS(n) = Var_IS/n and MSE_gate(n) = Var_gate/n + bias², so IS wins for
  n > n* = (Var_IS − Var_gate)/bias². Returns inf when Var_IS = inf (IS never wins), 0 when
  Var_IS ≤ Var_gate (IS always wins) and inf for an unbiased gate with smaller variance.
  """
  if math.isinf(var_is):
    return math.inf
  if var_is <= var_gate:
    return 0.0
  if bias_gate == 0.0:
    return math.inf
  return (var_is - var_gate) / bias_gate ** 2
