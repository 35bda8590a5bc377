"""Any registered policy-loss variant as a gradient estimator: its per-token coefficients.

Every policy loss L of `rgpo_jax.variants` depends on θ only through the log-probabilities
ℓ_t = log π_θ(y_t) of the batch's N valid tokens, so by the chain rule

    ∇_θ L = Σ_t (∂L/∂ℓ_t)·∇_θ ℓ_t = −(1/N)·Σ_t C_t·S_t,      C_t = −N·∂L/∂ℓ_t,

with S_t = ∇_θ log π_θ(y_t) the token's score. C_t is the variant's gradient coefficient: the
ascent direction −∇L is the mean of the per-token terms X_t = C_t·S_t. For an elementwise gate
with a token-mean loss C_t = w(r_t; Â_t)·Â_t (RGPO, arXiv 2604.14895: w = g'(r)·r), the
instrument's per-sample term; but C_t is defined for every variant:

- sequence ratios (GSPO, arXiv 2507.18071; GMPO, arXiv 2507.20673): C_t depends on the whole
  sequence, e.g. GSPO with gradient through the mean: C_t = w(s_i)·mean_{u∈y_i} Â_u,
  s_i = exp(mean_{u∈y_i} log r_u) (seq-mean-token-mean, sequences of equal length);
- batch statistics (Clip-Cov / KL-Cov, arXiv 2505.22617): C_t depends on the whole minibatch
  (which tokens are selected), and on the PRNG key of Clip-Cov's random choice;
- weights that depend on |Â| (Discovered PO's drift, arXiv 2210.05639).

`gradient_coefficients` takes C by autodiff of `variants.policy_loss` w.r.t. ℓ (one place for
each variant's logic; nothing here re-implements a variant). `VariantEstimator` names a variant
(and parameter overrides) as an estimator of the variance instrument.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VariantEstimator:
  """A registered `rgpo_jax.variants` policy loss as an estimator (hashable, static).

  name: the registered variant name.  params: overrides of its parameters, ((name, value), ...).
  """

  name: str
  params: tuple[tuple[str, Any], ...] = ()

  def coefficients(self, log_prob: Array, old_log_prob: Array, advantage: Array,
                   mask: Array | None = None, *, key: Array | None = None) -> Array:
    """`gradient_coefficients` of this variant."""
    return gradient_coefficients(self.name, log_prob, old_log_prob, advantage, mask, key=key,
                                 **dict(self.params))


def check_variant_name(fn: str, name: str) -> None:
  """ValueError naming `name` and the registered variants if it is not one of them."""
  from rgpo_jax import variants  # the registry imports losses; only needed here
  if name not in variants.POLICY_LOSSES:
    raise ValueError(f"{fn}: unknown policy-loss variant {name!r}; allowed: "
                     f"{', '.join(sorted(variants.POLICY_LOSSES))}")


def gradient_coefficients(name: str, log_prob: Array, old_log_prob: Array, advantage: Array,
                          mask: Array | None = None, *, key: Array | None = None,
                          **params) -> Array:
  """C_t = −N·∂L/∂log π_θ(y_t) of the registered variant `name` (N = number of valid tokens).

  L = `variants.policy_loss(name, log_prob, old_log_prob, advantage, mask, key=key, **params)`
  with the variant's default aggregation; the loss gradient is ∇_θ L = −(1/N)·Σ_t C_t·∇_θ log π_t.
  For a token-mean elementwise gate C_t = w(r_t; Â_t)·Â_t; for GSPO (sequence ratio, per-token
  Â, equal lengths) C_t = w(s_i)·mean_{u∈y_i} Â_u; for Clip-Cov the selected tokens get C_t = 0.

  Args:
    name: a registered variant (`variants.POLICY_LOSSES`).
    log_prob: log π_θ of the sampled tokens, [..., sequence, token] (the point of evaluation).
    old_log_prob: log π_old, same shape (stop-gradiented by the loss).
    advantage: Â, same shape (stop-gradiented by the loss).
    mask: optional valid-token mask, same shape; None: every token valid (a sequence-level
      variant gets an all-True mask, so each row is one sequence).
    key: PRNG key for variants that draw random numbers (Clip-Cov); ignored by the others.
    **params: overrides of the variant's parameters (e.g. k, epsilon, fraction).

  Returns:
    C, the shape of log_prob (0 on padding); not differentiable further (a measurement).
  """
  check_variant_name("gradient_coefficients", name)
  from rgpo_jax import variants
  log_prob = jnp.asarray(log_prob)
  if mask is None:
    mask = jnp.ones(jnp.shape(log_prob), bool)

  def loss(lp):
    return variants.policy_loss(name, lp, old_log_prob, advantage, mask, key=key, **params)[0]

  count = jnp.maximum(jnp.sum(jnp.asarray(mask, bool)), 1).astype(log_prob.dtype)
  return jax.lax.stop_gradient(-count * jax.grad(loss)(log_prob))


def as_sequences(x: Array, sequence_length: int) -> Array:
  """[N] → [N/L, L]: consecutive runs of `sequence_length` tokens as sequences (checked)."""
  if x.shape[-1] % sequence_length:
    raise ValueError(f"as_sequences: {x.shape[-1]} tokens do not split into sequences of "
                     f"sequence_length={sequence_length}")
  return x.reshape(x.shape[:-1] + (x.shape[-1] // sequence_length, sequence_length))
