"""Gradient-variance instruments: gated estimators against importance sampling (IS).

Every gated policy gradient is a weighted score average (RGPO, arXiv 2604.14895):

    ĝ_n = (1/n) Σ_i X_i,    X_i = w(r_i; Â_i) · Â_i · S_i,    w(r) = g'(r)·r,

with r = π_θ/π_old, Â the advantage and S the score ∇log π_θ (projected on a direction, or the
full vector). The on-policy target is J' = E_{π_θ}[Â·S] = E_{π_old}[r·Â·S]: IS (w = r) is
unbiased for it; a bounded gate trades bias for a variance bound

    Var(X) ≤ E[X²] ≤ (sup_r w)² · E[Â²·S²],

finite even when E[r²] = ∞ (tail index α ≤ 2), where Var_IS(X) = ∞.

Two instruments live here, both pure functions usable from your own agent:

1. Synthetic, where the truth is known (`synthetic_grid`, `exact_moments`, `weight_sup`):
   ratios r from heavy-tailed laws with E[r] = 1 (`lomax(α)`, `lognormal(σ)`), advantages and
   scores from a known model (`AdvantageModel`), and for every gate and sample size n:

   - per-sample variance: the sample variance s²_n = 1/(n−1)·Σ (X_i − X̄)² of the n per-sample
     gradients X_i = w·Â·S of one batch; its median over batches is the headline (its mean
     over batches estimates E[s²_n] = Var(X), which is infinite for every n when Var(X) = ∞).
     When Var(X) < ∞ the median converges to Var(X) as n grows; when Var(X) = ∞ (IS, α ≤ 2)
     it keeps growing with n (like n^(2/α − 1): the largest of n ratios grows like n^(1/α)).
   - estimator variance: Var(X̄_n) over replications of the n-sample mean (= Var(X)/n when
     finite); n·Var(X̄_n) is reported so that it is comparable with the per-sample variance.
   - bias: E[X̄_n] − J' (exact by quadrature, and its Monte-Carlo estimate).

2. Real policies (`per_sample_policy_gradients`, `gradient_statistics`, `ratio_statistics`):
   per-sample policy gradients by `vmap` of `grad` of `losses.policy_loss` on single samples
   (= −w·Â·∇log π), and the trace of their covariance, the norm and cosine of their mean
   against an on-policy gradient, the effective sample size of the ratios, the acceptance
   fraction and a Hill estimate of the ratios' tail index.

Gates come from `rgpo_jax.gates` (their weight by autodiff); nothing here re-implements a gate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from rgpo_jax import gates as gates_lib
from rgpo_jax import losses

Array = jax.Array

# ---------------------------------------------------------------------------------------------
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


def per_sample_gradient(gate: gates_lib.Gate, ratio: Array, advantage: Array,
                        score: Array) -> Array:
  """X = w(r; Â)·Â·S: one sample's gradient contribution (scalar score), any shape."""
  return gate.weight(ratio, advantage) * advantage * score


# ---------------------------------------------------------------------------------------------
# Exact quantities (float64, numerical).

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


# ---------------------------------------------------------------------------------------------
# The synthetic grid: one compiled call.


class GridSummary(NamedTuple):
  """Monte-Carlo summaries, arrays shaped [law, estimator, n] (float32 numpy).

  sample_variance_mean / _median / _q90: mean, median and 90% quantile over replications of the
    per-sample variance s²_n = Σ(X_i − X̄)²/(n−1) of one batch of n.
  estimator_mean: mean over replications of X̄_n (its difference from the exact target is the
    Monte-Carlo bias).  estimator_variance: variance over replications of X̄_n (ddof 1).
  replications: number of independent batches behind each n, shape [n].
  """

  sample_variance_mean: np.ndarray
  sample_variance_median: np.ndarray
  sample_variance_q90: np.ndarray
  estimator_mean: np.ndarray
  estimator_variance: np.ndarray
  replications: np.ndarray


def _group_gates(gates: Sequence[gates_lib.Gate]):
  """Group gates by pytree structure (same family) and stack each group for `vmap`.

  Returns (stacked_groups, counts, order) where counts[g] is the size of group g and order[j] is the position in the concatenated output of
  the j-th input gate.
  """
  groups: dict[Any, list[int]] = {}
  for i, g in enumerate(gates):
    groups.setdefault(jax.tree.structure(g), []).append(i)
  stacked, positions = [], []
  for idx in groups.values():
    if jax.tree.leaves(gates[idx[0]]):
      stacked.append(jax.tree.map(lambda *p: jnp.stack([jnp.asarray(x, jnp.float32) for x in p]),
                                  *[gates[i] for i in idx]))
    else:  # a parameter-free gate (IS, REINFORCE): nothing to vmap over
      stacked.append(gates[idx[0]])
    positions.extend(idx)
  order = np.argsort(np.asarray(positions))
  counts = tuple(len(idx) for idx in groups.values())
  return stacked, counts, order


def _all_weights_times(stacked_groups, counts, ratio, advantage, score):
  """[E, ...] per-sample gradients of every estimator: vmap within each family."""
  outs = []
  for group, count in zip(stacked_groups, counts):
    if not jax.tree.leaves(group):
      x = per_sample_gradient(group, ratio, advantage, score)
      outs.append(jnp.broadcast_to(x, (count,) + x.shape))
    else:
      outs.append(jax.vmap(lambda g: per_sample_gradient(g, ratio, advantage, score))(group))
  return jnp.concatenate(outs, axis=0)


def _check_sizes(n_values: Sequence[int], chunk: int, replications: int):
  n_values = [int(n) for n in n_values]
  if not n_values or sorted(set(n_values)) != n_values:
    raise ValueError(f"synthetic_grid: n_values must be strictly increasing, got {n_values}")
  block, n_max = n_values[0], n_values[-1]
  if block < 2:
    raise ValueError(f"synthetic_grid: the smallest n must be >= 2, got n_values={n_values}")
  for n in n_values:
    if n % block or n_max % n:
      raise ValueError(f"synthetic_grid: every n must be a multiple of the smallest ({block}) and "
                       f"divide the largest ({n_max}); got n={n} in n_values={n_values}")
  if chunk % block or n_max % chunk:
    raise ValueError(f"synthetic_grid: chunk must be a multiple of the smallest n ({block}) and "
                     f"divide the largest ({n_max}); got chunk={chunk}")
  if replications < 1:
    raise ValueError(f"synthetic_grid: replications must be >= 1, got {replications}")
  return n_values


def synthetic_grid(key: Array, laws: Sequence[RatioLaw], gates: Sequence[gates_lib.Gate],
                   model: AdvantageModel = AdvantageModel(),
                   n_values: Sequence[int] = (100, 1_000, 10_000, 100_000, 1_000_000),
                   replications: int = 32, chunk: int = 10_000) -> GridSummary:
  """Monte-Carlo variance and mean of every gate's estimator, for every law and n, in one jit.

  Each replication draws one stream of n_max = max(n_values) samples (r, Â, S) in chunks
  (`lax.scan`, memory O(chunk·estimators)); the stream is cut into consecutive blocks of the
  smallest n, whose means and centred sums of squares are combined exactly (Chan et al.'s
  pairwise update) into batches of every n. So each n gets replications·n_max/n independent
  batches (e.g. 32 at 1e6, 3.2e5 at 1e2) from one pass. Replications and gates of one family
  are `vmap`-ed, laws of one family are `vmap`-ed over their parameter; the whole grid is one
  compiled call.

  Args:
    key: PRNG key.
    laws: ratio laws (`lomax`, `lognormal`).
    gates: estimators, any `gates.Gate`s (IS is `gates.importance()`).
    model: the advantage/score model.
    n_values: increasing sample sizes; each a multiple of the first and a divisor of the last.
    replications: independent streams of n_max samples.
    chunk: samples drawn per scan step (a multiple of n_values[0] dividing n_values[-1]).

  Returns:
    `GridSummary` with arrays [len(laws), len(gates), len(n_values)].
  """
  n_values = _check_sizes(n_values, chunk, replications)
  model.validate()
  if not laws or not gates:
    raise ValueError(f"synthetic_grid: need at least one law and one gate, got {len(laws)} laws "
                     f"and {len(gates)} gates")
  stacked, counts, order = _group_gates(list(gates))
  families = {}
  for i, law in enumerate(laws):
    families.setdefault(law.family, []).append(i)
  params = {f: jnp.asarray([laws[i].param for i in idx], jnp.float32)
            for f, idx in families.items()}
  fn = _compiled_grid(tuple(families), tuple(n_values), int(replications), int(chunk),
                      tuple(float(v) for v in model), counts)
  outs = jax.device_get(fn(key, stacked, params))
  # Reassemble [law, estimator, n] in the caller's order.
  n_laws, n_gates = len(laws), len(gates)
  fields = []
  for field in range(5):
    full = np.zeros((n_laws, n_gates, len(n_values)), np.float32)
    for f, idx in families.items():
      full[np.asarray(idx)] = np.asarray(outs[f][field])[:, order]
    fields.append(full)
  reps = np.asarray([replications * n_values[-1] // n for n in n_values])
  return GridSummary(*fields, replications=reps)


_GRID_CACHE: dict[Any, Callable] = {}


def _compiled_grid(families, n_values, replications, chunk, model_values, counts):
  cache_key = (families, n_values, replications, chunk, model_values, counts)
  if cache_key in _GRID_CACHE:
    return _GRID_CACHE[cache_key]
  model = AdvantageModel(*model_values)
  block, n_max = n_values[0], n_values[-1]
  n_chunks, blocks_per_chunk = n_max // chunk, chunk // block

  def one_stream(key, family, param, stacked):
    def body(carry, k):
      k_r, k_a = jax.random.split(k)
      r = sample_ratios(k_r, family, param, (chunk,))
      a, s = sample_advantage_and_score(k_a, r, model)
      x = _all_weights_times(stacked, counts, r, a, s).reshape(-1, blocks_per_chunk, block)
      mean = jnp.mean(x, axis=-1)
      m2 = jnp.sum(jnp.square(x - mean[..., None]), axis=-1)
      return carry, (mean, m2)
    _, (means, m2s) = jax.lax.scan(body, None, jax.random.split(key, n_chunks))
    # [chunks, E, blocks/chunk] → [E, blocks] in stream order.
    to_stream = lambda v: jnp.moveaxis(v, 1, 0).reshape(v.shape[1], -1)
    return to_stream(means), to_stream(m2s)

  def summarise(means, m2s):
    # means, m2s: [R, E, n_blocks] → per n: [E] summaries.
    n_est = means.shape[1]
    cols = [[] for _ in range(5)]
    for n in n_values:
      per = n // block
      bm = jnp.moveaxis(means, 1, 0).reshape(n_est, -1, per)
      bq = jnp.moveaxis(m2s, 1, 0).reshape(n_est, -1, per)
      gm = jnp.mean(bm, axis=-1)
      m2 = jnp.sum(bq, axis=-1) + block * jnp.sum(jnp.square(bm - gm[..., None]), axis=-1)
      var = m2 / (n - 1)
      cols[0].append(jnp.mean(var, axis=-1))
      cols[1].append(jnp.median(var, axis=-1))
      cols[2].append(jnp.quantile(var, 0.9, axis=-1))
      cols[3].append(jnp.mean(gm, axis=-1))
      cols[4].append(jnp.var(gm, axis=-1, ddof=1) if gm.shape[-1] > 1
                     else jnp.full((n_est,), jnp.nan))
    return tuple(jnp.stack(c, axis=-1) for c in cols)  # each [E, n]

  def law_family(key, family, params, stacked):
    def one_law(k, param):
      keys = jax.random.split(k, replications)
      means, m2s = jax.vmap(lambda kk: one_stream(kk, family, param, stacked))(keys)
      return summarise(means, m2s)
    return jax.vmap(one_law)(jax.random.split(key, params.shape[0]), params)

  @jax.jit
  def grid(key, stacked, params):
    out = {}
    for i, family in enumerate(families):
      out[family] = law_family(jax.random.fold_in(key, i), family, params[family], stacked)
    return out

  _GRID_CACHE[cache_key] = grid
  return grid


# ---------------------------------------------------------------------------------------------
# Default estimator set.


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


# ---------------------------------------------------------------------------------------------
# Real policies: per-sample policy gradients and their statistics.


class PolicyBatch(NamedTuple):
  """A flat batch of N collected samples (any leading shape is flattened by the caller).

  obs: [N, *obs_shape].  action: [N, ...].  behavior_log_prob: log π_old(a|s), [N].
  advantage: Â, [N] (computed at collection time, stop-gradiented).
  """

  obs: Array
  action: Array
  behavior_log_prob: Array
  advantage: Array


def per_sample_policy_gradients(gate: gates_lib.Gate,
                                log_prob_fn: Callable[[Any, Array, Array], Array],
                                params: Any, batch: PolicyBatch) -> Array:
  """Per-sample gradients of the gated policy loss, flattened: [N, P].

  For sample i, ∇_θ L_i with L_i = `losses.policy_loss`(gate, log π_θ(a_i|s_i), log π_old,
  Â_i) on that single sample, i.e.

      ∇_θ L_i = −w(r_i; Â_i)·Â_i·∇_θ log π_θ(a_i|s_i),     r_i = π_θ(a_i|s_i)/π_old(a_i|s_i),

  computed as `vmap` over samples of `grad` (no per-sample loop). The mean over i is the
  batch loss gradient (token_mean reduction).

  Args:
    gate: any `gates.Gate`.
    log_prob_fn: `log_prob_fn(params, obs, action) -> log π_θ(action|obs)` for ONE sample
      (obs [*obs_shape], action [...]) returning a scalar.
    params: the policy parameters θ (any pytree).
    batch: `PolicyBatch` of N samples.

  Returns:
    [N, P] float array, P = number of parameters (pytree flattened in `ravel_pytree` order).
  """
  n = batch.behavior_log_prob.shape[0]
  for name, x in batch._asdict().items():
    if x.shape[0] != n:
      raise ValueError(f"per_sample_policy_gradients: batch.{name} has {x.shape[0]} samples, "
                       f"behavior_log_prob has {n}")
  flat_params, unravel = jax.flatten_util.ravel_pytree(params)

  def single_loss(flat, obs, action, behavior_log_prob, advantage):
    log_prob = log_prob_fn(unravel(flat), obs, action)
    loss, _ = losses.policy_loss(gate, jnp.reshape(log_prob, (1,)),
                                 jnp.reshape(behavior_log_prob, (1,)),
                                 jnp.reshape(advantage, (1,)))
    return loss

  return jax.vmap(jax.grad(single_loss), in_axes=(None, 0, 0, 0, 0))(
      flat_params, batch.obs, batch.action, batch.behavior_log_prob, batch.advantage)


class GradientStatistics(NamedTuple):
  """Statistics of N per-sample gradients g_i ∈ R^P against a reference gradient g*.

  trace_covariance: tr Cov(g) = Σ_p Var_i(g_ip) (ddof 1): the per-sample variance; the variance
    of the N-sample mean is trace_covariance/N.
  mean_norm: ‖ḡ‖.  reference_norm: ‖g*‖.
  cosine: cos(ḡ, g*).  relative_error: ‖ḡ − g*‖/‖g*‖ (bias + noise of the batch mean).
  """

  trace_covariance: Array
  mean_norm: Array
  reference_norm: Array
  cosine: Array
  relative_error: Array


def gradient_statistics(per_sample: Array, reference: Array) -> GradientStatistics:
  """`GradientStatistics` of per-sample gradients [N, P] against a reference gradient [P]."""
  if per_sample.ndim != 2 or reference.shape != per_sample.shape[1:]:
    raise ValueError(f"gradient_statistics: need per_sample [N, P] and reference [P], got "
                     f"{per_sample.shape} and {reference.shape}")
  mean = jnp.mean(per_sample, axis=0)
  trace = jnp.sum(jnp.var(per_sample, axis=0, ddof=1))
  mean_norm, ref_norm = jnp.linalg.norm(mean), jnp.linalg.norm(reference)
  tiny = jnp.finfo(mean.dtype).tiny
  cosine = jnp.dot(mean, reference) / jnp.maximum(mean_norm * ref_norm, tiny)
  return GradientStatistics(trace_covariance=trace, mean_norm=mean_norm, reference_norm=ref_norm,
                            cosine=cosine,
                            relative_error=jnp.linalg.norm(mean - reference) / jnp.maximum(
                                ref_norm, tiny))


class RatioStatistics(NamedTuple):
  """Distribution of the importance ratios of a batch.

  ess_fraction: Kish effective sample size (Σr)²/(N·Σr²) ∈ (0, 1].
  tail_index: Hill estimate α̂ = k / Σ_{j<k} log(r_(j)/r_(k)) on the k = max(10, ⌈√N⌉) largest
    ratios (r_(0) ≥ r_(1) ≥ …); α̂ ≤ 2 signals infinite IS variance; inf when std(log r) < 1e−6
    (on-policy data).
  mean, max, log_std: of r and log r.  approx_kl: mean k3 estimate of KL(π_old‖π_θ).
  """

  ess_fraction: Array
  tail_index: Array
  mean: Array
  max: Array
  log_std: Array
  approx_kl: Array


def ratio_statistics(log_ratio: Array) -> RatioStatistics:
  """`RatioStatistics` from log r = log π_θ − log π_old, shape [N]."""
  if log_ratio.ndim != 1 or log_ratio.shape[0] < 20:
    raise ValueError(f"ratio_statistics: need a flat array of >= 20 log-ratios, got shape "
                     f"{log_ratio.shape}")
  n = log_ratio.shape[0]
  k = max(10, math.ceil(math.sqrt(n)))
  # ESS in log space: (Σr)²/(N Σr²) = exp(2·lse(l) − lse(2l) − log N).
  ess = jnp.exp(2 * jax.nn.logsumexp(log_ratio) - jax.nn.logsumexp(2 * log_ratio) - math.log(n))
  # On-policy data (log r ≡ 0 up to float rounding) has no tail: report α̂ = inf.
  hill = jnp.where(jnp.std(log_ratio) < 1e-6, jnp.inf, _hill_from_logs(log_ratio, k))
  r = jnp.exp(jnp.clip(log_ratio, -losses.DEFAULT_MAX_LOG_RATIO, losses.DEFAULT_MAX_LOG_RATIO))
  return RatioStatistics(ess_fraction=ess, tail_index=hill, mean=jnp.mean(r), max=jnp.max(r),
                         log_std=jnp.std(log_ratio),
                         approx_kl=jnp.mean(losses.kl_k3_from_log_ratio(log_ratio)))


def hill_tail_index(samples: Array, k: int) -> Array:
  """Hill estimator α̂ = k / Σ_{j<k} log(x_(j)/x_(k)) of the tail index of positive samples."""
  return _hill_from_logs(jnp.log(samples), k)


def _hill_from_logs(log_x, k):
  top = jax.lax.top_k(log_x, k + 1)[0]
  return k / jnp.maximum(jnp.sum(top[:k] - top[k]), jnp.finfo(log_x.dtype).tiny)
