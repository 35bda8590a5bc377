"""The estimators compared by the instrument: gates, their per-sample gradient, MSE crossover.

Every gated estimator of the policy gradient averages X = w(r; Â)·Â·S with w(r) = g'(r)·r
(RGPO, arXiv 2604.14895); importance sampling (IS) is the gate g(r) = r, w = r.
"""

from __future__ import annotations

import math

import jax

from rgpo_jax import detached
from rgpo_jax import gates as gates_lib

Array = jax.Array


def per_sample_gradient(gate: gates_lib.Gate, ratio: Array, advantage: Array,
                        score: Array) -> Array:
  """X = w(r; Â)·Â·S: one sample's gradient contribution (scalar score), any shape."""
  return gate.weight(ratio, advantage) * advantage * score


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


def variant_estimators() -> list[tuple[str, gates_lib.Gate]]:
  """(label, gate) pairs of the LLM-stack policy-loss variants that are elementwise gates, with
  IS, PPO-clip and RGPO (k = 4) for reference: dual-clip PPO (c = 3), CISPO in verl's two-sided
  and TRL's absolute-cap forms, and RGPO's sigmoid weight detached (CISPO-style).

  Not here: sequence-level ratios (GSPO, GMPO: their ratio is a mean over a sequence, not a
  per-sample law), Clip-Cov / KL-Cov (batch statistics) and DPO's drift (its weight depends on
  |Â|, while the exact moments assume a weight that depends on the sign of Â only)."""
  return [
      ("is", gates_lib.importance()),
      ("ppo_clip(0.2)", gates_lib.ppo_clip(0.2)),
      ("dual_clip(0.2,c=3)", gates_lib.dual_clip(0.2, c=3.0)),
      ("cispo(0.2)", detached.cispo(0.2)),
      ("cispo_cap(5)", detached.cispo_cap(5.0)),
      ("sigmoid(k=4)", gates_lib.sigmoid(4.0)),
      ("detached_sigmoid(k=4)", detached.detached(gates_lib.sigmoid(4.0))),
  ]


ESTIMATOR_SETS = ("default", "variants", "all")


def _variant_gate(name: str) -> gates_lib.Gate:
  from rgpo_jax import variants  # the registry imports losses; only needed here
  if name == "is":
    return gates_lib.importance()
  variant = variants.VARIANTS.get(name)
  if variant is None or variant.gate is None or variant.granularity != "token":
    usable = sorted(n for n, v in variants.VARIANTS.items()
                    if v.gate is not None and v.granularity == "token")
    raise ValueError(f"estimators: {name!r} is not a variant with token ratios and a gate; "
                     f"allowed: {', '.join(['is'] + usable)} (or one of {ESTIMATOR_SETS})")
  return variants.make_gate(name)


def estimator_set(name: str) -> list[tuple[str, gates_lib.Gate]]:
  """The estimators of `rgpo variance --estimators NAME`: "default" (`default_estimators`),
  "variants" (`variant_estimators`), "all" (both, each label once), or a comma list of
  `rgpo_jax.variants` names with token ratios and a gate (e.g. "is,dual_clip,cispo,rgpo_sigmoid"; "is"
  is IS), each with its default parameters."""
  if name not in ESTIMATOR_SETS and isinstance(name, str) and name:
    return [(n, _variant_gate(n)) for n in name.split(",")]
  if name == "default":
    return default_estimators()
  if name == "variants":
    return variant_estimators()
  if name == "all":
    merged = dict(default_estimators())
    merged.update((label, gate) for label, gate in variant_estimators() if label not in merged)
    return list(merged.items())
  raise ValueError(f"estimators must be one of {ESTIMATOR_SETS}, got {name!r}")


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
