"""Detached-weight gates: the loss −sg(w(r))·Â·log π_θ, a weighted log-likelihood (CISPO-style).

A gate's gradient is w(r)·Â·∇log π with w = g'(r)·r. A *detached* gate keeps that weight but
treats it as a constant of the update: each sample contributes sg(w(r))·Â·log π_θ, with sg the
stop-gradient. The first gradient step is identical to the gate's; what changes is that the
weight is not itself optimised (no gradient flows through the ratio into the weight), which is
CISPO's motivation (MiniMax-M1, arXiv 2506.13585): a clipped token still contributes its
log-likelihood gradient, with a bounded weight, instead of being dropped as by PPO's clip.

As `Gate`s (so they compose with every granularity, loss and the variance instrument), the gate
value is written g̃(r) = sg(w(r))·log r: then ∂g̃/∂log π_θ = sg(w(r)) exactly, and `Gate.weight`
gives w(r). The loss value differs from the stacks' −sg(w)·Â·log π_θ by the constant
sg(w)·Â·log π_old, which has no gradient.

| gate                   | w(r)                           | source |
|------------------------|--------------------------------|--------|
| `cispo(ε_l, ε_h)`      | clip(r, 1−ε_l, 1+ε_h)          | verl `compute_policy_loss_cispo` |
| `cispo_cap(ε_max)`     | min(r, ε_max)                  | TRL `loss_type="cispo"` (ScaleRL, arXiv 2510.13786; ε_max = 5) |
| `detached(gate)`       | gate.weight(r), e.g. the sigmoid's k·σ(1−σ)·r | this library |
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rgpo_jax import gates as gates_lib
from rgpo_jax.gates import Gate, _check, _param, _positive

Array = jax.Array


def _log(r):
  return jnp.log(jnp.maximum(r, jnp.finfo(r.dtype).tiny))


def _detached_value(weight, r):
  """sg(w)·log r: derivative w.r.t. log r (i.e. log π_θ) is sg(w), so Gate.weight returns w."""
  return jax.lax.stop_gradient(weight) * _log(r)


def _cispo_fn(p, r, a):
  del a
  r0 = jax.lax.stop_gradient(r)
  return _detached_value(jnp.clip(r0, 1.0 - p["epsilon_low"], 1.0 + p["epsilon_high"]), r)


def _cispo_cap_fn(p, r, a):
  del a
  return _detached_value(jnp.minimum(jax.lax.stop_gradient(r), p["epsilon_max"]), r)


@dataclasses.dataclass(frozen=True)
class _DetachedFn:
  """g̃(r) = sg(w_inner(r))·log r for an inner gate function (hashable: a static pytree field)."""
  inner: gates_lib.GateFn

  def __call__(self, params, r, a):
    r0, a0 = jax.lax.stop_gradient((r, a))
    _, slope = jax.jvp(lambda x: self.inner(params, x, a0), (r0,), (jnp.ones_like(r0),))
    return _detached_value(slope * r0, r)


def cispo(epsilon: float = 0.2, epsilon_high: float | None = None) -> Gate:
  """CISPO with verl's two-sided clip: per-sample gradient sg(clip(r, 1−ε_low, 1+ε_high))·Â·∇log π.

  w(r) = clip(r, 1−ε_low, 1+ε_high): bounded by 1+ε_high, and never zero (unlike PPO-clip,
  clipped tokens keep a gradient). MiniMax-M1 (arXiv 2506.13585) sets ε_low large (no lower
  clip) and tunes ε_high; verl `compute_policy_loss_cispo` uses the actor's clip_ratio_low/high.

  Args:
    epsilon: ε_low (and ε_high unless given), in (0, 1).
    epsilon_high: optional upper ε, > 0.
  """
  epsilon_high = epsilon if epsilon_high is None else epsilon_high
  _check("cispo", "epsilon", epsilon, lambda v: 0 < v < 1, "in (0, 1)")
  _positive("cispo", epsilon_high=epsilon_high)
  return Gate("cispo", _cispo_fn,
              {"epsilon_low": _param(epsilon), "epsilon_high": _param(epsilon_high)})


def cispo_cap(epsilon_max: float = 5.0) -> Gate:
  """CISPO with TRL's absolute cap: per-sample gradient sg(min(r, ε_max))·Â·∇log π.

  w(r) = min(r, ε_max) (TRL `loss_type="cispo"`, where `epsilon_high` is ε_max; ScaleRL,
  arXiv 2510.13786, recommends ε_max = 5). Bounded by ε_max; no lower clip.

  Args:
    epsilon_max: the cap, > 0 (a negative or zero cap is refused).
  """
  _positive("cispo_cap", epsilon_max=epsilon_max)
  return Gate("cispo_cap", _cispo_cap_fn, {"epsilon_max": _param(epsilon_max)})


def detached(gate: Gate | str = "sigmoid", **params) -> Gate:
  """Any gate with its weight detached: per-sample gradient sg(w(r))·Â·∇log π (this library).

  `detached(gates.sigmoid(4))` gives RGPO's bounded weight k·σ(1−σ)·r as a CISPO-style constant;
  `detached(gates.truncated(lo, hi))` is a hard-band CISPO (weight r in the band, 0 outside).

  Args:
    gate: a `Gate`, or a family name for `gates.make` (then `params` are its parameters).
  """
  if isinstance(gate, str):
    gate = gates_lib.make(gate, **params)
  elif params:
    raise ValueError(f"detached: parameters {sorted(params)} go with a family name, not with a "
                     f"Gate (got gate={gate.name!r})")
  if not isinstance(gate, Gate):
    raise ValueError(f"detached: gate must be a gates.Gate or a family name, got gate={gate!r}")
  return Gate(f"detached_{gate.name}", _DetachedFn(gate.fn), gate.params)


for _name, _constructor in (("cispo", cispo), ("cispo_cap", cispo_cap), ("detached", detached)):
  gates_lib.register(_name, _constructor)
