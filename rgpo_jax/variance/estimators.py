"""The estimators compared by the instrument: gates, their per-sample gradient, MSE crossover.

Every gated estimator of the policy gradient averages X = w(r; Â)·Â·S with w(r) = g'(r)·r
(RGPO, arXiv 2604.14895); importance sampling (IS) is the gate g(r) = r, w = r.
"""

from __future__ import annotations

import math

import jax

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
