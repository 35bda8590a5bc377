"""Loss aggregation: how per-token losses ℓ_{i,t} become one scalar (one place for the logic).

With valid tokens t ∈ y_i of sequences i = 1..B, T the padded length and m the mask:

| mode                      | L                                  | default in                         |
|---------------------------|------------------------------------|------------------------------------|
| `token-mean`              | Σ_i Σ_t ℓ / Σ_i |y_i|              | verl (`loss_agg_mode`), TRL `bnpo`; TRL `dapo`/`cispo` with the token count of the whole global batch |
| `token-sum`               | Σ_i Σ_t ℓ                          | (a building block: divide yourself)|
| `seq-mean-token-sum`      | (1/B') Σ_i Σ_t ℓ                   | verl option                        |
| `seq-mean-token-mean`     | (1/B') Σ_i (1/|y_i|) Σ_t ℓ         | GRPO's original loss (arXiv 2402.03300), TRL `grpo`, tunix `sequence-mean-token-mean` (its default), verl's GSPO |
| `seq-mean-token-sum-norm` | (1/(B·L)) Σ_i Σ_t ℓ, L a constant  | Dr.GRPO (arXiv 2503.20783), TRL `dr_grpo` (L = max_completion_length) |

B' counts sequences with at least one valid token; `seq-mean-token-sum-norm` divides by a
*constant* (B rows × L, L = the padded length T unless given) so that neither the response
length nor the number of valid tokens biases the gradient (Dr.GRPO's point). Other stacks
differ by constants: verl's `seq-mean-token-sum-norm` is Σ_i Σ_t ℓ / L (no 1/B), tunix's
`sequence-mean-token-sum-norm` is Σ_i Σ_t ℓ / B; tunix's `sequence-mean-token-scale` is ours.
The choice changes gradient norms by up to ~10× (long vs short responses).

Global batches. A mean over one micro-batch (or one device's shard) is not a mean over the
batch the optimiser step sees: with gradient accumulation, averaging per-micro-batch
token-means weights the tokens of short micro-batches more. Pass the global counts and the
objective no longer depends on how the batch was split:

- gradient accumulation: `num_tokens` / `num_sequences` = the counts of the whole step's
  batch; then the *sum* over micro-batches of the returned values (and of their gradients) is
  the global-batch objective (as TRL's `num_items_in_batch`, verl's `batch_num_tokens`).
- data parallelism: `axis_name` (inside `shard_map`/`pmap`/`vmap` with that axis) psums the
  counts over the axis, and the result is scaled by the axis size so that the *mean* over the
  axis (`lax.pmean` of values or gradients, which is what data-parallel training does) is the
  global-batch objective (verl's `× dp_size`).

Masked positions are inert: ℓ is selected (`jnp.where`) before summing, so NaN/inf there
reaches neither value nor gradient. An all-masked input gives 0.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax._checks import as_bool_mask

Array = jax.Array
Mode = Literal["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
               "seq-mean-token-sum-norm"]
MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
         "seq-mean-token-sum-norm")
# Older names in this library (losses.masked_mean's `reduction`), and underscore spellings.
ALIASES = {"token_mean": "token-mean", "sequence_mean": "seq-mean-token-mean",
           **{m.replace("-", "_"): m for m in MODES}}


def canonical_mode(mode: str, fn: str = "aggregate") -> str:
  """The canonical name of an aggregation mode; ValueError naming it if unknown."""
  if mode in MODES:
    return mode
  if isinstance(mode, str) and mode in ALIASES:
    return ALIASES[mode]
  raise ValueError(f"{fn}: aggregation mode must be one of {MODES} (or {sorted(ALIASES)}), got "
                   f"mode={mode!r}")


def _check_count(fn: str, name: str, value):
  if value is None or isinstance(value, jax.core.Tracer):
    return
  values = np.ravel(np.asarray(value, dtype=float))
  if not (values.size == 1 and np.isfinite(values[0]) and values[0] > 0):
    raise ValueError(f"{fn}: {name} must be a positive number, got {name}={value!r}")


def aggregate(
    loss: Array,
    mask: Array | None = None,
    mode: Mode | str = "token-mean",
    *,
    num_tokens: Array | float | None = None,
    num_sequences: Array | float | None = None,
    max_length: float | None = None,
    axis_name: str | None = None,
) -> Array:
  """Aggregate per-token losses [..., T] into a scalar by `mode` (see the module table).

  Args:
    loss: per-token losses ℓ, any shape; the last axis holds a sequence's tokens (sequence modes).
    mask: optional bool/0-1 array of the same shape; False/0 entries are ignored.
    mode: one of `MODES` (or an alias: "token_mean", "sequence_mean", underscore spellings).
    num_tokens: token count of the global batch (token-mean); default: counted here.
    num_sequences: sequence count of the global batch (seq-mean-*); default: the sequences
      with a valid token here (all rows, for seq-mean-token-sum-norm).
    max_length: L of seq-mean-token-sum-norm (a constant); default: the padded length T.
    axis_name: a mapped axis to psum the counted numbers over; the result is multiplied by the
      axis size so that its mean over the axis is the global objective.

  Returns:
    The scalar aggregate (0 for an all-masked input).
  """
  fn = "aggregate"
  mode = canonical_mode(mode, fn)
  loss = jnp.asarray(loss)
  if mask is not None and jnp.shape(mask) != jnp.shape(loss):
    raise ValueError(f"{fn}: mask must have the shape of loss {tuple(jnp.shape(loss))}, got "
                     f"mask{tuple(jnp.shape(mask))}")
  if mode.startswith("seq") and jnp.ndim(loss) < 1:
    raise ValueError(f"{fn}: mode={mode!r} needs losses shaped [..., token], got a scalar")
  for name, value in (("num_tokens", num_tokens), ("num_sequences", num_sequences),
                      ("max_length", max_length)):
    _check_count(fn, name, value)
  m = jnp.ones(jnp.shape(loss), bool) if mask is None else as_bool_mask(fn, mask)
  dtype = loss.dtype if jnp.issubdtype(loss.dtype, jnp.floating) else jnp.result_type(float)
  loss = jnp.where(m, loss, 0.0).astype(dtype)
  psum = (lambda x: x) if axis_name is None else (lambda x: jax.lax.psum(x, axis_name))
  scale = 1.0 if axis_name is None else jax.lax.psum(1.0, axis_name)

  def count(given, counted):
    return given if given is not None else jnp.maximum(psum(counted.astype(dtype)), 1.0)

  if mode == "token-mean":
    return scale * jnp.sum(loss) / count(num_tokens, jnp.sum(m))
  if mode == "token-sum":
    return scale * jnp.sum(loss)
  tokens = jnp.sum(m, axis=-1)
  per_sequence = jnp.sum(loss, axis=-1)
  if mode == "seq-mean-token-sum":
    return scale * jnp.sum(per_sequence) / count(num_sequences, jnp.sum(tokens > 0))
  if mode == "seq-mean-token-mean":
    per_sequence = per_sequence / jnp.maximum(tokens, 1).astype(dtype)
    return scale * jnp.sum(per_sequence) / count(num_sequences, jnp.sum(tokens > 0))
  rows = jnp.asarray(np.prod(jnp.shape(loss)[:-1], dtype=int))
  length = jnp.shape(loss)[-1] if max_length is None else max_length
  return scale * jnp.sum(per_sequence) / (count(num_sequences, rows) * length)
