"""Exact moments of gated estimators under a synthetic law (float64 quadrature), and sup w."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax import gates as gates_lib
from rgpo_jax.variance.laws import AdvantageModel, RatioLaw


# Quadrature grid in y = log r: the laws' densities in y decay at least like e^{y} (r → 0) and
# e^{−α y} (r → ∞); gates' weights decay for r → ∞. 2e5 points on [−50, 60] (step 5.5e−4).
_Y_GRID = (-50.0, 60.0, 200_001)
# A weight still above this at r = 1e12 is called unbounded (IS, PPO-clip for Â < 0: w = r).
_UNBOUNDED_R, _UNBOUNDED_W = 1e12, 1e6


@jax.jit
def _weights_jit(gate, r, sign):
  gate = jax.tree.map(lambda p: jnp.asarray(p, r.dtype), gate)
  return gate.weight(r, jnp.full_like(r, sign))


def _weights64(gate: gates_lib.Gate, r: np.ndarray, sign: float) -> np.ndarray:
  """w(r; sign) in float64 (jax x64 scoped to this call)."""
  with jax.enable_x64(True):
    w = _weights_jit(gate, jnp.asarray(r, jnp.float64), jnp.float64(sign))
    return np.asarray(w, dtype=np.float64)


def weight_sup(gate: gates_lib.Gate) -> float:
  """sup_r w(r; Â) over both signs of Â, numerically on a dense grid (inf if unbounded).

  The grid is r ∈ [1e−5, 20] in steps of 1e−5 together with r = e^y for y ∈ [−50, 60] in steps of
  5.5e−4; the maximum over it is returned (accurate to ~1e−9 relative for the smooth gates, and
  to within one grid step of the kink for PPO-clip / truncated, whose sup is their upper edge
  1+ε / high, approached from below). A gate whose weight at r = 1e12 still exceeds 1e6 is
  unbounded (w ~ r: IS, PPO-clip for Â < 0) and reported as inf.
  """
  r = np.concatenate([np.linspace(1e-5, 20.0, 2_000_000), np.exp(np.linspace(*_Y_GRID))])
  sup = 0.0
  for sign in (1.0, -1.0):
    if _weights64(gate, np.array([_UNBOUNDED_R]), sign)[0] > _UNBOUNDED_W:
      return math.inf
    sup = max(sup, float(np.nanmax(_weights64(gate, r, sign))))
  return sup


class ExactMoments(NamedTuple):
  """Population moments of X = w·Â·S under a law and `AdvantageModel` (float64, quadrature).

  target: J' = E[r·Â·S] (the on-policy gradient).  mean: E[X].  bias: mean − target.
  second_moment: E[X²] (inf when w ~ r and E[r²] = ∞).  variance: E[X²] − E[X]².
  sup_weight: sup w (`weight_sup`).  adv_score_second_moment: E[Â²S²].
  bound: (sup w)²·E[Â²S²] ≥ Var(X) (inf for unbounded gates).
  """

  target: float
  mean: float
  bias: float
  second_moment: float
  variance: float
  sup_weight: float
  adv_score_second_moment: float
  bound: float


def _norm_cdf(x: np.ndarray) -> np.ndarray:
  """Standard normal CDF Φ in float64 (jax's ndtr; keeps scipy out of the runtime deps)."""
  with jax.enable_x64(True):
    return np.asarray(jax.scipy.special.ndtr(jnp.asarray(x, jnp.float64)), np.float64)


def exact_moments(gate: gates_lib.Gate, law: RatioLaw, model: AdvantageModel = AdvantageModel(),
                  sup_weight: float | None = None) -> ExactMoments:
  """Exact E[X], E[X²], Var(X), bias and bound of one gate under one law, by quadrature.

  Integrates over y = log r (trapezoid, `_Y_GRID`) the closed-form Gaussian partial moments of
  Â given r (see `AdvantageModel`):
      E(Â; Â≥0 | r) = m·Φ(m/s) + s·φ(m/s),   E(Â²; Â≥0 | r) = (m² + s²)·Φ(m/s) + m·s·φ(m/s).
  An unbounded gate (sup w = inf) under a law with E[r²] = ∞ has E[X²] = inf (all our
  unbounded gates have w ~ r for large r).
  """
  model.validate()
  y = np.linspace(*_Y_GRID)
  density = np.exp(law.log_density_of_log_ratio(y))
  r = np.exp(y)
  integrate = lambda f: float(np.trapezoid(f * density, y))
  m = model.offset + model.slope * np.tanh(y)
  s = model.noise
  z = m / s
  phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
  cdf = _norm_cdf(z)
  p1_pos = m * cdf + s * phi
  p1_neg = m - p1_pos
  p2_pos = (m * m + s * s) * cdf + m * s * phi
  p2_neg = m * m + s * s - p2_pos
  score2 = 1.0 + model.score_std ** 2
  w_pos, w_neg = _weights64(gate, r, 1.0), _weights64(gate, r, -1.0)
  target = integrate(r * m)
  mean = integrate(w_pos * p1_pos + w_neg * p1_neg)
  sup = weight_sup(gate) if sup_weight is None else sup_weight
  adv_score2 = score2 * integrate(m * m + s * s)
  if math.isinf(sup) and math.isinf(law.moment(2)):
    second = math.inf
  else:
    second = score2 * integrate(w_pos ** 2 * p2_pos + w_neg ** 2 * p2_neg)
  return ExactMoments(target=target, mean=mean, bias=mean - target, second_moment=second,
                      variance=second - mean * mean, sup_weight=sup,
                      adv_score_second_moment=adv_score2, bound=sup * sup * adv_score2)
