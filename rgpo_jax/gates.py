"""Acceptance gates: the one thing that distinguishes RGPO, PPO, IS, REINFORCE and SAPO.

A gate α = g(r) replaces the importance ratio r = π_θ(a|s) / π_old(a|s) in the policy
surrogate Ê[g(r)·Â]. Because g takes part in differentiation and ∇_θ r = r·∇_θ log π_θ,
each sample's policy gradient is

    ∇_θ g(r)·Â = g'(r)·r · Â · ∇_θ log π_θ = w(r) · Â · ∇_θ log π_θ,

with the *effective weight* w(r) = g'(r)·r (RGPO, arXiv 2604.14895). Choosing g chooses the
algorithm:

| gate            | g(r)                          | w(r)                                   |
|-----------------|-------------------------------|----------------------------------------|
| `reinforce`     | 1 + log r                     | 1                                      |
| `importance`    | r                             | r (unbounded)                          |
| `ppo_clip`      | min(r, 1+ε) if Â ≥ 0 else max(r, 1−ε) | r·1[unclipped]                 |
| `dual_clip`     | as ppo_clip; for Â < 0 also min(·, c) | r·1[unclipped], 0 for Â < 0, r > c |
| `dpo_drift`     | r − drift(r, Â)/Â (Lu et al.)  | r·sech²((r−1)Â/α) (Â ≥ 0, r > 1), …   |
| `truncated`     | clip(r, low, high)            | r inside [low, high], 0 outside        |
| `sigmoid` (RGPO paper) | σ(k(r−1))              | k·σ(1−σ)·r, bounded                    |
| `pessimistic_sigmoid` | σ(k(r−1)) improving side, ½ + (k/4)(r−1) other side | k·σ(1−σ)·r / (k/4)·r |
| `sapo`          | (4/τ)·σ(τ(r−1)), τ by sign(Â) | 4σ(1−σ)·r                              |
| `erf`           | 1 + √(π/2)/τ·erf(τ(r−1)/√2)   | exp(−τ²(r−1)²/2)·r                     |
| `arctan`        | 1 + arctan(τ(r−1))/τ          | r / (1+τ²(r−1)²)                       |
| `softsign`      | 1 + (r−1)/√(1+τ²(r−1)²)       | r·(1+τ²(r−1)²)^(−3/2)                  |

Reconstruction note: the RGPO paper's full text is not available. The sigmoid form centred at
r = 1 comes from third-party readers of the paper; the g's of REINFORCE/IS/PPO are
reconstructions consistent with the paper's w's (see docs/method.md). The erf, arctan and
softsign families are those of arXiv 2602.19345, SAPO is arXiv 2511.20347.

Which gate the trainer calls RGPO: `rgpo train --algo rgpo` uses `pessimistic_sigmoid` (k = 4),
this project's variant; the paper's plain sigmoid is `--algo rgpo_sigmoid`. Measured
(experiments/kl_stability): on Pendulum-v1 with the issue-10 settings (3 seeds × 1e6 steps) the
plain sigmoid collapsed at every k ∈ {2, 4, 8, 16} (final return −1.1e3 to −1.5e3, KL-spike rate
1.0, mean KL 9–12) and so did the same sigmoid normalised to on-policy weight 1 (`sapo`, τ = k),
where PPO reached −157 and the pessimistic sigmoid −157 (k = 4, spike rate 0.02; k = 16: 0.00).
Neither the step scale w(1) = k/4 nor the band's width is the cause: samples that moved the wrong
way for their advantage lose their weight and nothing pulls them back.

A `Gate` is a frozen dataclass registered as a pytree: its numeric parameters (`params`) are
leaves, so gates can be passed through `jit`, stacked and `vmap`-ed over (e.g. a sweep over k),
while the gate function itself is static. `weight` is obtained by automatic differentiation of
`value`, so a user-defined gate (`custom`) gets its effective weight for free.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax._checks import check_number

Array = jax.Array
GateFn = Callable[[Mapping[str, Array], Array, Array], Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gate:
  """A differentiable acceptance gate g(r, Â) with its effective weight w = ∂g/∂r · r.

  Attributes:
    name: a short identifier (static).
    fn: `fn(params, ratio, advantage) -> gate`, elementwise and broadcasting (static).
    params: numeric parameters (pytree leaves: traced under jit, vmappable).
  """

  name: str = dataclasses.field(metadata=dict(static=True))
  fn: GateFn = dataclasses.field(metadata=dict(static=True))
  params: dict[str, Any] = dataclasses.field(default_factory=dict)

  def value(self, ratio: Array, advantage: Array) -> Array:
    """The gate α = g(r; Â), elementwise over broadcast `ratio` and `advantage`."""
    ratio, advantage = _as_float_arrays(ratio, advantage)
    return self.fn(self.params, ratio, advantage)

  def derivative(self, ratio: Array, advantage: Array) -> Array:
    """g'(r) = ∂g/∂r, by forward-mode autodiff (exact for elementwise gates)."""
    ratio, advantage = _as_float_arrays(ratio, advantage)
    ratio, advantage = jnp.broadcast_arrays(ratio, advantage)
    advantage = jax.lax.stop_gradient(advantage)
    _, slope = jax.jvp(lambda r: self.fn(self.params, r, advantage), (ratio,),
                       (jnp.ones_like(ratio),))
    return slope

  def weight(self, ratio: Array, advantage: Array) -> Array:
    """The effective gradient weight w(r) = g'(r)·r (RGPO, arXiv 2604.14895)."""
    ratio, advantage = _as_float_arrays(ratio, advantage)
    return self.derivative(ratio, advantage) * ratio


def _as_float_arrays(ratio, advantage):
  ratio = jnp.asarray(ratio)
  if not jnp.issubdtype(ratio.dtype, jnp.floating):
    ratio = ratio.astype(jnp.result_type(float))
  return ratio, jnp.asarray(advantage, dtype=ratio.dtype)


# ---------------------------------------------------------------------------------------------
# Parameter validation. Concrete values are checked eagerly (a clear ValueError before any
# compile); traced values (a gate built inside a vmapped sweep) cannot be, and are validated by
# the sweep on the host before tracing.


def _check(gate: str, name: str, value: Any, ok: Callable[[float], bool], allowed: str):
  """Python/numpy numbers or arrays of them, finite and `ok`; bools and strings are refused
  (Python would turn "4" into 4.0 and True into 1.0); tracers pass (see above)."""
  check_number(f"{gate} gate", name, value, ok, allowed)


def _positive(gate, **kwargs):
  for name, value in kwargs.items():
    _check(gate, name, value, lambda v: v > 0, "> 0 (finite)")


def _param(value):
  """Python and numpy scalars become Python floats (weakly typed: exact in float64, no promotion of float32
  math); arrays and tracers (e.g. a vmapped sweep axis) pass through."""
  if isinstance(value, (int, float, np.integer, np.floating)):
    return float(value)
  return value


def _by_sign(advantage, positive, negative):
  """Choose a parameter by the advantage sign (Â ≥ 0 counts as positive)."""
  return jnp.where(advantage >= 0, positive, negative)


# ---------------------------------------------------------------------------------------------
# Gate functions: module-level so two gates of one family share a treedef (stackable, vmappable).


def _sigmoid_fn(p, r, a):
  del a
  return jax.nn.sigmoid(p["k"] * (r - 1.0))


def _pessimistic_sigmoid_fn(p, r, a):
  k = p["k"]
  improving = (a >= 0) == (r > 1.0)
  return jnp.where(improving, jax.nn.sigmoid(k * (r - 1.0)), 0.5 + 0.25 * k * (r - 1.0))


def _sapo_fn(p, r, a):
  tau = _by_sign(a, p["tau_pos"], p["tau_neg"])
  return (4.0 / tau) * jax.nn.sigmoid(tau * (r - 1.0))


def _erf_fn(p, r, a):
  tau = _by_sign(a, p["tau_pos"], p["tau_neg"])
  return 1.0 + math.sqrt(math.pi / 2.0) / tau * jax.scipy.special.erf(tau * (r - 1.0) / math.sqrt(2.0))


def _arctan_fn(p, r, a):
  tau = _by_sign(a, p["tau_pos"], p["tau_neg"])
  return 1.0 + jnp.arctan(tau * (r - 1.0)) / tau


def _softsign_fn(p, r, a):
  tau = _by_sign(a, p["tau_pos"], p["tau_neg"])
  x = r - 1.0
  return 1.0 + x * jax.lax.rsqrt(1.0 + (tau * x) ** 2)


def _importance_fn(p, r, a):
  del p, a
  return r


def _reinforce_fn(p, r, a):
  del p, a
  return 1.0 + jnp.log(r)


def _ppo_clip_fn(p, r, a):
  # min(r·Â, clip(r)·Â)/Â written without dividing by Â: for Â ≥ 0 only the upper clip binds,
  # for Â < 0 only the lower one.
  upper = jnp.minimum(r, 1.0 + p["epsilon_high"])
  lower = jnp.maximum(r, 1.0 - p["epsilon_low"])
  return jnp.where(a >= 0, upper, lower)


def _dual_clip_fn(p, r, a):
  return jnp.where(a >= 0, jnp.minimum(r, 1.0 + p["epsilon_high"]),
                   jnp.minimum(jnp.maximum(r, 1.0 - p["epsilon_low"]), p["c"]))


def _one_minus_tanhc(y):
  """1 − tanh(y)/y for y ≥ 0, without cancellation near 0 (series y²/3 − 2y⁴/15 + 17y⁶/315)."""
  small = y < 1e-2
  y_big = jnp.where(small, 1.0, y)
  y2 = jnp.square(jnp.where(small, y, 0.0))
  return jnp.where(small, y2 * (1.0 / 3.0 - y2 * (2.0 / 15.0 - y2 * 17.0 / 315.0)),
                   1.0 - jnp.tanh(y_big) / y_big)


def _dpo_drift_fn(p, r, a):
  # Drift of Discovered Policy Optimisation: ReLU(x − s·tanh(x/s)) with x = Â·u, u = r − 1,
  # s = α for Â ≥ 0 and u = log r, s = β for Â < 0. With y = x/s the drift is s·(y − tanh y)
  # for y > 0 (else 0), so drift/Â = u·(1 − tanh(y)/y) and g = r − drift/Â needs no division
  # by Â (g = r at Â = 0). For Â ≥ 0 it is written 1 + (r−1)·tanh(y)/y: r − drift/Â would
  # cancel two terms of size r at large r.
  positive = a >= 0
  scale = jnp.where(positive, p["alpha"], p["beta"])
  log_r = jnp.log(jnp.maximum(r, jnp.finfo(r.dtype).tiny))
  u = jnp.where(positive, r - 1.0, log_r)
  y = a * u / scale
  drifting = y > 0
  omt = _one_minus_tanhc(jnp.where(drifting, y, 0.0))
  g_drift = jnp.where(positive, 1.0 + u * (1.0 - omt), r - u * omt)
  return jnp.where(drifting, g_drift, r)


def _truncated_fn(p, r, a):
  del a
  return jnp.clip(r, p["low"], p["high"])


# ---------------------------------------------------------------------------------------------
# Constructors.


def sigmoid(k: float = 4.0) -> Gate:
  """The RGPO gate g_k(r) = σ(k(r−1)), with g(1) = ½ and w_k(1) = k/4.

  w_k(r) = k·σ(1−σ)·r is bounded (sup ≈ 0.394, 0.599, 1.058, 2.031, 5.013 for
  k = 1, 2, 4, 8, 20), so the gradient variance stays finite for heavy-tailed ratios.
  k = 4 gives the on-policy weight w(1) = 1 and the same gradient as SAPO with τ = 4.
  Reconstructed from third-party descriptions of arXiv 2604.14895 (default k unknown). In the
  trainer: `--algo rgpo_sigmoid`, not the default `rgpo` (it drifts; see the module docstring).

  Args:
    k: sharpness, > 0.
  """
  _positive("sigmoid", k=k)
  return Gate("sigmoid", _sigmoid_fn, {"k": _param(k)})


def pessimistic_sigmoid(k: float = 4.0) -> Gate:
  """RGPO's sigmoid with PPO's pessimism (this project's variant, not from arXiv 2604.14895).

      g(r) = σ(k(r−1))          where the ratio moved the way Â rewards (Â ≥ 0, r > 1; Â < 0, r < 1)
      g(r) = ½ + (k/4)·(r−1)    where it moved the other way (the sigmoid's tangent at r = 1),

  so w(r) = k·σ(1−σ)·r on the improving side (bounded, as RGPO) and w(r) = (k/4)·r on the
  worsening side, where, as with PPO-clip's min(), samples that moved the wrong way keep pulling
  back. g is C¹ at r = 1. The trainer's `--algo rgpo` (and `rgpo_pessimistic`). Motivation
  (measured, experiments/kl_stability and experiments/training): with the plain sigmoid, samples
  that drift the wrong way get a vanishing weight and nothing pulls them back; on Pendulum-v1 the
  plain k = 4 gate collapsed (−1.47e3, KL spikes in every update) where this one reached −157
  like PPO (spike rate 0.02); on Breakout-MinAtar at lr 5e-4 the plain gate had KL spikes in 59%
  of updates, this one in 3%. Like PPO-clip, its weight is unbounded on the worsening side.
  """
  _positive("pessimistic_sigmoid", k=k)
  return Gate("pessimistic_sigmoid", _pessimistic_sigmoid_fn, {"k": _param(k)})


def _two_temperature(family, fn, tau_pos, tau_neg):
  tau_neg = tau_pos if tau_neg is None else tau_neg
  _positive(family, tau_pos=tau_pos, tau_neg=tau_neg)
  return Gate(family, fn, {"tau_pos": _param(tau_pos), "tau_neg": _param(tau_neg)})


def sapo(tau_pos: float = 1.0, tau_neg: float = 1.05) -> Gate:
  """SAPO's soft gate f(r) = (4/τ)·σ(τ(r−1)), τ = τ_pos if Â ≥ 0 else τ_neg (arXiv 2511.20347).

  f'(r) = 4σ(1−σ), equal to 1 at r = 1; w(r) = 4σ(1−σ)·r.
  """
  return _two_temperature("sapo", _sapo_fn, tau_pos, tau_neg)


def erf(tau: float = 1.0, tau_neg: float | None = None) -> Gate:
  """Gaussian-slope gate: f'(r) = exp(−τ²(r−1)²/2), f(1) = 1 (arXiv 2602.19345).

  Args:
    tau: temperature (for Â ≥ 0, and for Â < 0 unless `tau_neg` is given), > 0.
    tau_neg: optional separate temperature for negative advantages, > 0.
  """
  return _two_temperature("erf", _erf_fn, tau, tau_neg)


def arctan(tau: float = 1.0, tau_neg: float | None = None) -> Gate:
  """Cauchy-slope gate: f'(r) = 1/(1+τ²(r−1)²), tail ~ r⁻² (arXiv 2602.19345)."""
  return _two_temperature("arctan", _arctan_fn, tau, tau_neg)


def softsign(tau: float = 1.0, tau_neg: float | None = None) -> Gate:
  """Softsign gate: f'(r) = (1+τ²(r−1)²)^(−3/2), tail ~ r⁻³ (arXiv 2602.19345)."""
  return _two_temperature("softsign", _softsign_fn, tau, tau_neg)


def importance() -> Gate:
  """The TRPO / importance-sampling surrogate g(r) = r, w(r) = r (unbounded)."""
  return Gate("importance", _importance_fn, {})


def reinforce() -> Gate:
  """On-policy REINFORCE: g(r) = 1 + log r, so w(r) ≡ 1 (the ratio only sets the point)."""
  return Gate("reinforce", _reinforce_fn, {})


def ppo_clip(epsilon: float = 0.2, epsilon_high: float | None = None) -> Gate:
  """PPO's clipped surrogate min(r·Â, clip(r, 1−ε_low, 1+ε_high)·Â) as a gate (arXiv 1707.06347).

  w(r) = r where the sample is not clipped ((Â ≥ 0 ∧ r < 1+ε_high) ∨ (Â < 0 ∧ r > 1−ε_low)), else 0.

  Args:
    epsilon: ε_low (and ε_high unless given), in (0, 1).
    epsilon_high: optional asymmetric upper ε ("clip-higher", DAPO), > 0.
  """
  epsilon_high = epsilon if epsilon_high is None else epsilon_high
  _check("ppo_clip", "epsilon", epsilon, lambda v: 0 < v < 1, "in (0, 1)")
  _positive("ppo_clip", epsilon_high=epsilon_high)
  return Gate("ppo_clip", _ppo_clip_fn,
              {"epsilon_low": _param(epsilon), "epsilon_high": _param(epsilon_high)})


def dual_clip(epsilon: float = 0.2, epsilon_high: float | None = None, c: float = 3.0) -> Gate:
  """Dual-clip PPO (Ye et al., arXiv 1912.09729): PPO-clip, and for Â < 0 the ratio bounded by c.

      g(r) = min(r, 1+ε_high)               if Â ≥ 0
      g(r) = min(max(r, 1−ε_low), c)        if Â < 0
      w(r) = r·1[r < 1+ε_high] (Â ≥ 0),  r·1[1−ε_low < r < c] (Â < 0).

  Plain PPO's min() keeps the full weight r for a negative-advantage sample whose ratio grew
  (nothing bounds −r·Â); dual-clip caps that objective at −c·Â, so the weight there is zero
  beyond c and the gate's weight is bounded by max(1+ε_high, c). As verl's `clip_ratio_c`
  (default 3) and tunix's `epsilon_c`.

  Args:
    epsilon: ε_low (and ε_high unless given), in (0, 1).
    epsilon_high: optional upper ε (clip-higher), > 0.
    c: the bound on r for Â < 0; must be > 1.
  """
  epsilon_high = epsilon if epsilon_high is None else epsilon_high
  _check("dual_clip", "epsilon", epsilon, lambda v: 0 < v < 1, "in (0, 1)")
  _positive("dual_clip", epsilon_high=epsilon_high)
  _check("dual_clip", "c", c, lambda v: v > 1, "> 1 (the ratio bound for negative advantages)")
  return Gate("dual_clip", _dual_clip_fn, {"epsilon_low": _param(epsilon),
                                           "epsilon_high": _param(epsilon_high), "c": _param(c)})


def dpo_drift(alpha: float = 2.0, beta: float = 0.6) -> Gate:
  """Discovered Policy Optimisation (Lu et al., arXiv 2210.05639): r·Â minus a learned drift.

      objective = r·Â − drift,
      drift = ReLU((r−1)Â − α·tanh((r−1)Â/α))   if Â ≥ 0,
      drift = ReLU(Â·log r − β·tanh(Â·log r/β))  if Â < 0,

  as a gate g = r − drift/Â (g = r at Â = 0). Effective weight, with x the drift's argument:
  Â ≥ 0: w = r for r ≤ 1 and r·sech²((r−1)Â/α) for r > 1 (bounded, decays to 0);
  Â < 0: w = r for r ≥ 1 (unbounded, like PPO's worsening side) and r − 1 + sech²(Â·log r/β)
  for r < 1 (in (−1, 1): it turns negative for small r, pushing such samples back up). The drift's shape was found by meta-learning (the paper's "LPO"); α = 2, β = 0.6
  are its values, as in Stoix's and PureJaxRL's `dpo_loss`. Unlike the other gates, w depends
  on |Â|, not only on its sign.

  Args:
    alpha, beta: drift scales for positive and negative advantages, > 0.
  """
  _positive("dpo_drift", alpha=alpha, beta=beta)
  return Gate("dpo_drift", _dpo_drift_fn, {"alpha": _param(alpha), "beta": _param(beta)})


def truncated(low: float = 0.5, high: float = 2.0) -> Gate:
  """Hard rejection band: IS inside [low, high], zero weight outside (g = clip(r, low, high))."""
  _check("truncated", "low", low, lambda v: v >= 0, ">= 0")
  _positive("truncated", high=high)
  if not isinstance(low, jax.core.Tracer) and not isinstance(high, jax.core.Tracer):
    if float(low) >= float(high):
      raise ValueError(f"truncated gate: low must be < high, got low={low!r}, high={high!r}")
  return Gate("truncated", _truncated_fn, {"low": _param(low), "high": _param(high)})


def custom(fn: Callable[[Array, Array], Array], name: str = "custom") -> Gate:
  """Any user gate `fn(ratio, advantage) -> gate`; its weight comes by autodiff.

  `fn` must be elementwise and differentiable in `ratio`. Keep the same function object to
  reuse compiled code (the function is part of the gate's static structure).
  """
  if not callable(fn):
    raise ValueError(f"custom gate: fn must be callable, got {fn!r}")
  return Gate(name, _CustomFn(fn), {})


@dataclasses.dataclass(frozen=True)
class _CustomFn:
  user_fn: Callable[[Array, Array], Array]

  def __call__(self, params, ratio, advantage):
    del params
    return self.user_fn(ratio, advantage)


def scaled(gate: Gate, scale: float | Array = 1.0) -> Gate:
  """The gate multiplied by a constant: g̃(r) = c·g(r), so w̃(r) = c·w(r).

  `scale` c > 0 is a pytree leaf (params["scale"], next to the gate's own), so a trainer can
  change it between updates without recompiling: the adaptive gate width
  (`rgpo_jax.training.gate_width`) uses c = k₀/k to keep the sigmoid's on-policy weight
  w(1) = k₀/4 while its sharpness k moves. The relative-slope diagnostics are unchanged.
  """
  _positive(f"scaled({gate.name})", scale=scale)
  if "scale" in gate.params:
    raise ValueError(f"scaled: gate {gate.name!r} already has a parameter named 'scale'")
  return Gate(f"scaled({gate.name})", _ScaledFn(gate.fn), {**gate.params, "scale": _param(scale)})


@dataclasses.dataclass(frozen=True)
class _ScaledFn:
  base_fn: GateFn

  def __call__(self, params, ratio, advantage):
    return params["scale"] * self.base_fn(params, ratio, advantage)


# Name → constructor, for configs and the command line.
FAMILIES: dict[str, Callable[..., Gate]] = {
    "sigmoid": sigmoid,
    "pessimistic_sigmoid": pessimistic_sigmoid,
    "sapo": sapo,
    "erf": erf,
    "arctan": arctan,
    "softsign": softsign,
    "importance": importance,
    "reinforce": reinforce,
    "ppo_clip": ppo_clip,
    "dual_clip": dual_clip,
    "dpo_drift": dpo_drift,
    "truncated": truncated,
}


def register(name: str, constructor: Callable[..., Gate]) -> None:
  """Add a gate family to `make`'s registry (sibling modules such as `detached` register theirs).

  A name may be registered once; registering the same constructor again is a no-op."""
  if FAMILIES.get(name, constructor) is not constructor:
    raise ValueError(f"gate family {name!r} is already registered to {FAMILIES[name]!r}")
  FAMILIES[name] = constructor


def make(name: str, **params) -> Gate:
  """Build a gate by family name, e.g. `make("sigmoid", k=8.0)`."""
  if name not in FAMILIES:
    raise ValueError(f"unknown gate {name!r}; allowed: {', '.join(sorted(FAMILIES))}")
  try:
    return FAMILIES[name](**params)
  except TypeError as e:
    raise ValueError(f"gate {name!r} got unexpected parameters {sorted(params)}: {e}") from None
