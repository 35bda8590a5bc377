"""Synthetic data with a known truth: ratio laws with E[r] = 1 and the advantage/score model.

Ratios come from heavy-tailed laws (`lomax(α)`: E[r²] = ∞ for α ≤ 2) or light-tailed ones
(`lognormal(σ)`); advantages Â and scores S are drawn given r from `AdvantageModel`, whose
Gaussian partial moments make exact targets computable by quadrature (`variance.exact`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Ratio laws with E[r] = 1.

LAW_FAMILIES = ("lomax", "lognormal")


@dataclasses.dataclass(frozen=True)
class RatioLaw:
  """A law of importance ratios with E[r] = 1 (hashable; `param` is a Python float).

  lomax(α):     r = λ·(U^(−1/α) − 1), λ = α − 1, density (α/λ)(1 + r/λ)^−(α+1) on [0, ∞),
                tail P(r > x) ~ (x/λ)^−α: E[r^p] < ∞ iff p < α (so E[r²] = ∞ for α ≤ 2).
                The Pareto tail shifted to start at 0 (ratios near 0 occur, as in real data).
  lognormal(σ): log r ~ N(−σ²/2, σ²): all moments finite, E[r^p] = exp(p(p−1)σ²/2),
                E[r²] = exp(σ²).
  """

  family: str
  param: float

  @property
  def name(self) -> str:
    symbol = "alpha" if self.family == "lomax" else "sigma"
    return f"{self.family}({symbol}={self.param:g})"

  def moment(self, p: int) -> float:
    """Closed-form E[r^p] for integer p ≥ 0 (inf where it diverges)."""
    if self.family == "lognormal":
      return math.exp(p * (p - 1) * self.param ** 2 / 2.0)
    alpha, lam = self.param, self.param - 1.0
    if p >= alpha:
      return math.inf
    return lam ** p * math.factorial(p) / math.prod(alpha - i for i in range(1, p + 1))

  def log_density_of_log_ratio(self, y: np.ndarray) -> np.ndarray:
    """log p_Y(y) of Y = log r (float64 numpy), for quadrature in log r."""
    y = np.asarray(y, dtype=np.float64)
    if self.family == "lognormal":
      s = self.param
      return -0.5 * ((y + s * s / 2.0) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    alpha, lam = self.param, self.param - 1.0
    return (y + math.log(alpha / lam)
            - (alpha + 1.0) * np.logaddexp(0.0, y - math.log(lam)))


def lomax(alpha: float) -> RatioLaw:
  """Lomax (shifted Pareto) ratios with tail index α > 1, scaled to E[r] = 1."""
  if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 1.0):
    raise ValueError(f"lomax law: tail index alpha must be a finite number > 1 (so that "
                     f"E[r] = 1 exists), got alpha={alpha!r}")
  return RatioLaw("lomax", float(alpha))


def lognormal(sigma: float) -> RatioLaw:
  """Log-normal ratios log r ~ N(−σ²/2, σ²), E[r] = 1, E[r²] = exp(σ²)."""
  if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0.0):
    raise ValueError(f"lognormal law: sigma must be a finite number > 0, got sigma={sigma!r}")
  return RatioLaw("lognormal", float(sigma))


def default_laws() -> tuple[RatioLaw, ...]:
  """Lomax α ∈ {1.2, 1.5, 2, 3} (E[r²] = ∞ for α ≤ 2), log-normal σ ∈ {0.5, 1, 2}, and two
  near-on-policy log-normal laws σ ∈ {0.1, 0.2} (the spread of real stale ratios after a few
  optimiser steps), where gates are close to unbiased."""
  return (lomax(1.2), lomax(1.5), lomax(2.0), lomax(3.0),
          lognormal(0.1), lognormal(0.2), lognormal(0.5), lognormal(1.0), lognormal(2.0))


# Tail-extended float32 sampling. jax.random.uniform has 23 random mantissa bits, so −log(u)
# stops at ≈ 16 and a Lomax(1.2) ratio drawn by inversion stops near 1e5: the very tail that makes
# IS variance grow would be cut off at n ≈ 1e6. By memorylessness, Exp(1) = −log u₁ on
# {u₁ > 2⁻¹⁰} and 10·ln 2 + Exp(1)' on {u₁ ≤ 2⁻¹⁰}: this reaches −log u ≈ 23 (P ≈ 1e−10).
_SPLIT = 2.0 ** -10


def _exponential(key: Array, shape: tuple[int, ...]) -> Array:
  k1, k2 = jax.random.split(key)
  u1 = 1.0 - jax.random.uniform(k1, shape)  # (0, 1]
  u2 = 1.0 - jax.random.uniform(k2, shape)
  return jnp.where(u1 > _SPLIT, -jnp.log(u1), 10.0 * math.log(2.0) - jnp.log(u2))


def _normal(key: Array, shape: tuple[int, ...]) -> Array:
  """Box–Muller on the tail-extended exponential: |z| up to ≈ 6.8 instead of ≈ 5.3."""
  k1, k2 = jax.random.split(key)
  radius = jnp.sqrt(2.0 * _exponential(k1, shape))
  return radius * jnp.cos(2.0 * math.pi * jax.random.uniform(k2, shape))


def sample_ratios(key: Array, family: str, param: Array, shape: tuple[int, ...]) -> Array:
  """Draw ratios r ~ `family`(param) with E[r] = 1 (float32; `param` may be traced).

  Args:
    key: PRNG key.
    family: "lomax" (param = α > 1) or "lognormal" (param = σ > 0); static.
    param: the law's parameter, scalar (traced under jit/vmap is fine).
    shape: output shape.

  Returns:
    r, shape `shape`, float32, r ≥ 0.
  """
  if family == "lomax":
    alpha = jnp.asarray(param, jnp.float32)
    return (alpha - 1.0) * jnp.expm1(_exponential(key, shape) / alpha)
  if family == "lognormal":
    sigma = jnp.asarray(param, jnp.float32)
    return jnp.exp(sigma * _normal(key, shape) - 0.5 * sigma * sigma)
  raise ValueError(f"unknown ratio law family {family!r}; allowed: {', '.join(LAW_FAMILIES)}")


# ---------------------------------------------------------------------------------------------
# The advantage/score model.


class AdvantageModel(NamedTuple):
  """A known model of advantages and scores that makes gate bias non-trivial.

      Â = offset + slope·t(r) + noise·ε,   t(r) = tanh(log r) = (r² − 1)/(r² + 1),  ε ~ N(0, 1),
      S = 1 + score_std·ξ,                  ξ ~ N(0, 1), independent of (r, ε).

  Defaults: Â = 1 + 0.5·tanh(log r) + ε, S = 1 + 0.5·ξ. The offset is the on-policy signal
  (the gradient at π_old is E_old[Â·S] ≈ offset); the slope makes Â rise with log r: the actions
  the new policy favours (r > 1) are those with higher advantage, as after a policy-gradient step,
  so the gradient at π_θ (the target) differs from the gradient at π_old. If Â were independent
  of r every gate's bias would be the trivial rescaling E[w] − 1. S is the score ∇log π projected
  on the target direction (mean 1). Then, with m(r) = offset + slope·t(r),

      J' = E[r·Â·S] = E[r·m(r)],   E[X] = E[w₊(r)·E(Â;Â≥0|r) + w₋(r)·E(Â;Â<0|r)],

  where w₊, w₋ are the gate's weight for Â ≥ 0 and Â < 0 (SAPO, PPO-clip, … depend on sign(Â)),
  and the Gaussian partial moments are closed-form: exact targets by 1-D quadrature in log r.
  """

  offset: float = 1.0
  slope: float = 0.5
  noise: float = 1.0
  score_std: float = 0.5

  def validate(self) -> "AdvantageModel":
    for name in ("offset", "slope", "noise", "score_std"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and math.isfinite(v)):
        raise ValueError(f"AdvantageModel: {name} must be a finite number, got {name}={v!r}")
    if self.noise <= 0:
      raise ValueError(f"AdvantageModel: noise must be > 0, got noise={self.noise!r}")
    if self.score_std < 0:
      raise ValueError(f"AdvantageModel: score_std must be >= 0, got score_std={self.score_std!r}")
    return self


def _tanh_log(r):
  r2 = r * r
  return (r2 - 1.0) / (r2 + 1.0)


def sample_advantage_and_score(key: Array, ratio: Array,
                               model: AdvantageModel) -> tuple[Array, Array]:
  """Draw (Â, S) given r under `model` (see `AdvantageModel`); shapes follow `ratio`."""
  k_adv, k_score = jax.random.split(key)
  mean = model.offset + model.slope * _tanh_log(ratio)
  advantage = mean + model.noise * jax.random.normal(k_adv, ratio.shape, ratio.dtype)
  score = 1.0 + model.score_std * jax.random.normal(k_score, ratio.shape, ratio.dtype)
  return advantage, score
