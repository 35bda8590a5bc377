"""Running observation statistics on device (mean / variance), mergeable across devices.

Chan et al.'s parallel update ("Updating formulae and a pairwise algorithm for computing sample
variances", 1979): two sets with (n_a, μ_a, M2_a) and (n_b, μ_b, M2_b) merge as

    n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   M2 = M2_a + M2_b + δ²·n_a·n_b/n.

With an `axis_name`, each device's batch moments are first merged over the device axis (psum of
n, n·μ and M2 about the global mean), so every device holds the same statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class RunningStats(NamedTuple):
  """count: number of samples seen ([] float32); mean, m2: per feature (obs shape)."""

  count: Array
  mean: Array
  m2: Array

  @property
  def var(self) -> Array:
    return self.m2 / jnp.maximum(self.count, 1.0)


def init(obs_shape: tuple[int, ...]) -> RunningStats:
  """Empty statistics (count 0, mean 0, M2 0): `normalize` is then the identity up to clip."""
  return RunningStats(jnp.zeros((), jnp.float32), jnp.zeros(obs_shape, jnp.float32),
                      jnp.zeros(obs_shape, jnp.float32))


def update(stats: RunningStats, batch: Array, axis_name: str | None = None) -> RunningStats:
  """Merge a batch [..., *obs_shape] into `stats` (Chan's parallel formula).

  Args:
    stats: the running statistics.
    batch: observations whose trailing axes match `stats.mean`.
    axis_name: optional device axis to merge the batch over first (inside pmap/shard_map).
  """
  feat_ndim = stats.mean.ndim
  x = batch.reshape((-1,) + batch.shape[batch.ndim - feat_ndim:]).astype(jnp.float32)
  n_b = jnp.asarray(x.shape[0], jnp.float32)
  mean_b = jnp.mean(x, axis=0)
  if axis_name is not None:
    n_local = n_b
    n_b = jax.lax.psum(n_local, axis_name)
    mean_b = jax.lax.psum(n_local * mean_b, axis_name) / n_b
  m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)
  if axis_name is not None:
    m2_b = jax.lax.psum(m2_b, axis_name)
  n = stats.count + n_b
  delta = mean_b - stats.mean
  mean = stats.mean + delta * n_b / n
  m2 = stats.m2 + m2_b + jnp.square(delta) * stats.count * n_b / n
  return RunningStats(n, mean, m2)


def normalize(stats: RunningStats, obs: Array, clip: float = 10.0, eps: float = 1e-8) -> Array:
  """clip((obs − μ)/√(σ² + eps), ±clip); identity (clipped) while no sample has been seen."""
  seen = stats.count > 0
  mean = jnp.where(seen, stats.mean, 0.0)
  std = jnp.where(seen, jnp.sqrt(stats.var + eps), 1.0)
  return jnp.clip((obs - mean) / std, -clip, clip)
