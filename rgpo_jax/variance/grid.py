"""The synthetic Monte-Carlo grid: every law × gate × sample size in one compiled call."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rgpo_jax.variance.coefficients import VariantEstimator
from rgpo_jax.variance.estimators import Estimator, per_sample_gradient, per_token_terms
from rgpo_jax.variance.laws import (AdvantageModel, RatioLaw, sample_advantage_and_score,
                                    sample_ratios)

Array = jax.Array


class GridSummary(NamedTuple):
  """Monte-Carlo summaries, arrays shaped [law, estimator, n] (float32 numpy).

  sample_variance_mean / _median / _q90: mean, median and 90% quantile over replications of the
    per-sample variance s²_n = Σ(X_i − X̄)²/(n−1) of one batch of n. For a variant estimator
    (`VariantEstimator`) the unit is a sequence of L tokens: L·Σ_i(Y_i − Ȳ)²/(n/L − 1) with Y_i
    the mean term of sequence i, the per-token-equivalent variance (n·Var(X̄_n) = L·Var(Y)),
    since the tokens of one sequence are correlated.
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


def _group_estimators(estimators: Sequence[Estimator]):
  """Group gates by pytree structure (same family) and stack each group for `vmap`; variant
  estimators (`VariantEstimator`, static) follow in their own order.

  Returns (stacked_groups, counts, variant_estimators, order) where counts[g] is the size of
  gate group g and order[j] is the position in the concatenated output of the j-th estimator.
  """
  groups: dict[Any, list[int]] = {}
  variant_idx = []
  for i, g in enumerate(estimators):
    if isinstance(g, VariantEstimator):
      variant_idx.append(i)
    else:
      groups.setdefault(jax.tree.structure(g), []).append(i)
  stacked, positions = [], []
  for idx in groups.values():
    if jax.tree.leaves(estimators[idx[0]]):
      stacked.append(jax.tree.map(lambda *p: jnp.stack([jnp.asarray(x, jnp.float32) for x in p]),
                                  *[estimators[i] for i in idx]))
    else:  # a parameter-free gate (IS, REINFORCE): nothing to vmap over
      stacked.append(estimators[idx[0]])
    positions.extend(idx)
  positions.extend(variant_idx)
  order = np.argsort(np.asarray(positions))
  counts = tuple(len(idx) for idx in groups.values())
  return stacked, counts, tuple(estimators[i] for i in variant_idx), order


def _all_terms(stacked_groups, counts, variant_estimators, sequence_length, ratio, advantage,
               score, key):
  """[E, N] per-sample (per-token) gradient terms of every estimator: vmap within each gate
  family; each variant on the whole [N] minibatch, cut into sequences of `sequence_length`."""
  outs = []
  for group, count in zip(stacked_groups, counts):
    if not jax.tree.leaves(group):
      x = per_sample_gradient(group, ratio, advantage, score)
      outs.append(jnp.broadcast_to(x, (count,) + x.shape))
    else:
      outs.append(jax.vmap(lambda g: per_sample_gradient(g, ratio, advantage, score))(group))
  for i, estimator in enumerate(variant_estimators):
    outs.append(per_token_terms(estimator, ratio, advantage, score, jax.random.fold_in(key, i),
                                sequence_length)[None])
  return jnp.concatenate(outs, axis=0)


def _check_sizes(n_values: Sequence[int], chunk: int, replications: int,
                 sequence_length: int | None = None):
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
  if sequence_length is not None and (sequence_length < 1 or block % sequence_length
                                      or block // sequence_length < 2):
    raise ValueError(f"synthetic_grid: sequence_length must divide the smallest n ({block}) at "
                     f"least twice, got sequence_length={sequence_length}")
  return n_values


def synthetic_grid(key: Array, laws: Sequence[RatioLaw], gates: Sequence[Estimator],
                   model: AdvantageModel = AdvantageModel(),
                   n_values: Sequence[int] = (100, 1_000, 10_000, 100_000, 1_000_000),
                   replications: int = 32, chunk: int = 10_000,
                   sequence_length: int = 10) -> GridSummary:
  """Monte-Carlo variance and mean of every gate's estimator, for every law and n, in one jit.

  Each replication draws one stream of n_max = max(n_values) samples (r, Â, S) in chunks
  (`lax.scan`, memory O(chunk·estimators)); the stream is cut into consecutive blocks of the
  smallest n, whose means and centred sums of squares are combined exactly (Chan et al.'s
  pairwise update) into batches of every n. So each n gets replications·n_max/n independent
  batches (e.g. 32 at 1e6, 3.2e5 at 1e2) from one pass. Replications and gates of one family
  are `vmap`-ed, laws of one family are `vmap`-ed over their parameter; the whole grid is one
  compiled call.

  Variant estimators (`VariantEstimator`: sequence ratios, batch statistics, |Â|-dependent
  weights) see each chunk as one minibatch of `chunk` iid tokens cut into chunk/L sequences of
  L = `sequence_length` consecutive tokens, every token with its own (r, Â, S) from the law and
  `model`; their per-token terms X_t = C_t·S_t (`per_token_terms`) then enter the same block
  statistics. So for n < chunk a batch is part of one minibatch's terms, and for n ≥ chunk the
  mean of n/chunk minibatch gradients (gradient accumulation); Clip-Cov's random choice gets a
  key per chunk.

  Args:
    key: PRNG key.
    laws: ratio laws (`lomax`, `lognormal`).
    gates: estimators: `gates.Gate`s (IS is `gates.importance()`) and `VariantEstimator`s.
    model: the advantage/score model.
    n_values: increasing sample sizes; each a multiple of the first and a divisor of the last.
    replications: independent streams of n_max samples.
    chunk: samples drawn per scan step (a multiple of n_values[0] dividing n_values[-1]).
    sequence_length: tokens per sequence of the variant estimators; divides n_values[0].

  Returns:
    `GridSummary` with arrays [len(laws), len(gates), len(n_values)].
  """
  variants_present = any(isinstance(g, VariantEstimator) for g in gates)
  n_values = _check_sizes(n_values, chunk, replications,
                          int(sequence_length) if variants_present else None)
  model.validate()
  if not laws or not gates:
    raise ValueError(f"synthetic_grid: need at least one law and one gate, got {len(laws)} laws "
                     f"and {len(gates)} gates")
  stacked, counts, variant_estimators, order = _group_estimators(list(gates))
  families = {}
  for i, law in enumerate(laws):
    families.setdefault(law.family, []).append(i)
  params = {f: jnp.asarray([laws[i].param for i in idx], jnp.float32)
            for f, idx in families.items()}
  fn = _compiled_grid(tuple(families), tuple(n_values), int(replications), int(chunk),
                      tuple(float(v) for v in model), counts, variant_estimators,
                      int(sequence_length))
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


def _compiled_grid(families, n_values, replications, chunk, model_values, counts,
                   variant_estimators, sequence_length):
  cache_key = (families, n_values, replications, chunk, model_values, counts, variant_estimators,
               sequence_length)
  if cache_key in _GRID_CACHE:
    return _GRID_CACHE[cache_key]
  model = AdvantageModel(*model_values)
  block, n_max = n_values[0], n_values[-1]
  n_chunks, blocks_per_chunk = n_max // chunk, chunk // block
  # Variance unit of each estimator (concatenated order): a token for gates, a sequence of L
  # tokens for variants, whose tokens are correlated (they share s_i, a selection, ...).
  is_sequence = np.asarray([False] * sum(counts) + [True] * len(variant_estimators))
  unit = np.where(is_sequence, sequence_length, 1).astype(np.float32)

  def one_stream(key, family, param, stacked):
    def body(carry, k):
      k_r, k_a = jax.random.split(k)
      r = sample_ratios(k_r, family, param, (chunk,))
      a, s = sample_advantage_and_score(k_a, r, model)
      # The variants' key is folded from the chunk's key, so gate-only grids draw as before.
      x = _all_terms(stacked, counts, variant_estimators, sequence_length, r, a, s,
                     jax.random.fold_in(k, 1)).reshape(-1, blocks_per_chunk, block)
      mean = jnp.mean(x, axis=-1)
      m2 = jnp.sum(jnp.square(x - mean[..., None]), axis=-1)
      if is_sequence.any():  # M2 of the sequence means Y_i = mean_t X_it for the variants
        y = x.reshape(x.shape[:-1] + (block // sequence_length, sequence_length)).mean(-1)
        m2_seq = jnp.sum(jnp.square(y - mean[..., None]), axis=-1)
        m2 = jnp.where(is_sequence[:, None], m2_seq, m2)
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
      # Chan's update in units (u tokens each); u·s²_units is the per-token-equivalent variance
      # (n·Var(X̄_n) = u·Var(Y) for iid units), s²_n itself for gates (u = 1).
      m2 = jnp.sum(bq, axis=-1) + (block / unit)[:, None] * jnp.sum(
          jnp.square(bm - gm[..., None]), axis=-1)
      var = unit[:, None] * m2 / (n / unit - 1)[:, None]
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
