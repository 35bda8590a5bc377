"""Policy distributions: log-prob, entropy, sampling and mode, as small pytrees.

Three action distributions cover the trainer's needs:
- `Categorical(logits)`: discrete actions.
- `Gaussian(mean, log_std)`: diagonal Gaussian, actions unbounded (clip in the env if needed).
- `TanhGaussian(mean, log_std)`: a = tanh(u), u ~ N(mean, std); actions in (−1, 1) with the
  change-of-variables log-prob log N(u) − Σ log(1 − tanh(u)²). Its entropy has no closed form:
  `entropy(key)` is the single-sample estimate H[N] + E[Σ log(1 − tanh(u)²)], and
  `entropy()` without a key returns the Gaussian entropy (the common, biased-but-smooth
  regulariser used by Brax's PPO for its entropy bonus).
`Categorical` and `Gaussian` also have the exact `kl(other)` (TRPO's trust region; for the
tanh-Gaussian, KL is invariant under the bijection tanh, so `Gaussian.kl` of the pre-tanh
parameters is its KL too). The entropy and KL functions are also exposed on their own for use in
users' losses. `sample` and `sample_and_log_prob` take the PRNG key positionally or as distrax's
`seed=` keyword, and an optional `sample_shape` of leading sample axes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def categorical_entropy(logits: Array) -> Array:
  """H = −Σ_a p(a) log p(a) over the last axis of `logits` [..., A] → [...].

  Logits of −inf mark masked (disallowed) actions: they are selected out before the product
  (0·log 0 would be 0·−inf = NaN), so H is the entropy over the allowed actions, and its
  gradient is finite (exactly 0 for the masked logits). A row with no allowed action gets H = 0.
  """
  allowed = logits != -jnp.inf
  safe_logits = jnp.where(allowed, logits, jnp.zeros((), jnp.result_type(logits)))
  log_p = jax.nn.log_softmax(safe_logits, axis=-1, where=allowed)
  log_p = jnp.where(allowed, log_p, 0.0)
  return jnp.sum(jnp.where(allowed, -jnp.exp(log_p) * log_p, 0.0), axis=-1)


def gaussian_entropy(log_std: Array) -> Array:
  """Diagonal Gaussian entropy Σ_i (½ log(2πe) + log σ_i) over the last axis [..., D] → [...]."""
  return jnp.sum(_HALF_LOG_2PI_E + log_std, axis=-1)


def categorical_kl(logits_p: Array, logits_q: Array) -> Array:
  """KL(p‖q) = Σ_a p(a) (log p(a) − log q(a)) over the last axis [..., A] → [...] (exact).

  Actions with −inf logits under p (masked) contribute 0 (0·log 0 = 0, selected out before the
  product, so value and gradient stay finite); an action allowed by p but masked in q makes the
  KL +inf, as it should.
  """
  allowed = logits_p != -jnp.inf
  zero = jnp.zeros((), jnp.result_type(logits_p))
  log_p = jax.nn.log_softmax(jnp.where(allowed, logits_p, zero), axis=-1, where=allowed)
  log_p = jnp.where(allowed, log_p, 0.0)
  log_q = jnp.where(allowed, jax.nn.log_softmax(logits_q, axis=-1), 0.0)
  return jnp.sum(jnp.where(allowed, jnp.exp(log_p) * (log_p - log_q), 0.0), axis=-1)


def gaussian_kl(mean_p: Array, log_std_p: Array, mean_q: Array, log_std_q: Array) -> Array:
  """KL(p‖q) of diagonal Gaussians, Σ_i [log σq/σp + (σp² + (μp − μq)²)/(2σq²) − ½] → [...]."""
  mean_p, mean_q = jnp.broadcast_arrays(mean_p, mean_q)
  log_std_p = jnp.broadcast_to(log_std_p, mean_p.shape)
  log_std_q = jnp.broadcast_to(log_std_q, mean_p.shape)
  var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
  z = (mean_p - mean_q) * jnp.exp(-log_std_q)
  return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + z * z) - 0.5, axis=-1)


def tanh_log_det_jacobian(pre_tanh: Array) -> Array:
  """Σ_i log(1 − tanh(u_i)²), computed stably as 2(log 2 − u − softplus(−2u)); [..., D] → [...]."""
  return jnp.sum(2.0 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh)), axis=-1)


def tanh_gaussian_entropy(mean: Array, log_std: Array, key: Array) -> Array:
  """Single-sample estimate of the tanh-squashed Gaussian entropy H[N] + Σ log(1 − tanh(u)²)."""
  u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
  return gaussian_entropy(log_std) + tanh_log_det_jacobian(u)


def _gaussian_log_prob(mean, log_std, x):
  z = (x - mean) * jnp.exp(-log_std)
  return jnp.sum(-0.5 * z * z - log_std - _HALF_LOG_2PI, axis=-1)


def _sampling_key(owner: str, key, seed) -> Array:
  """The PRNG key of a `sample` call: positional `key` (this library) or `seed=` (distrax); an
  integer seed becomes `jax.random.key(seed)`, as in distrax."""
  if (key is None) == (seed is None):
    raise ValueError(f"{owner}: pass exactly one PRNG key, positionally or as seed= (distrax "
                     f"style); got key={key!r}, seed={seed!r}")
  key = key if seed is None else seed
  if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
    return jax.random.key(int(key))
  return key


def _shape(sample_shape) -> tuple[int, ...]:
  return (sample_shape,) if isinstance(sample_shape, (int, np.integer)) else tuple(sample_shape)


class Categorical(NamedTuple):
  """Discrete actions over the last axis of `logits` [..., A]; −inf logits mark masked actions
  (never sampled; `entropy` is the entropy over the allowed ones)."""

  logits: Array  # [..., A]

  def sample(self, key: Array | None = None, *, seed: Array | int | None = None,
             sample_shape: int | tuple[int, ...] = ()) -> Array:
    """Actions [*sample_shape, ...]. The key goes positionally or as `seed=` (distrax)."""
    key = _sampling_key("Categorical.sample", key, seed)
    shape = _shape(sample_shape)
    if not shape:
      return jax.random.categorical(key, self.logits, axis=-1)
    return jax.random.categorical(key, self.logits, axis=-1, shape=shape + self.logits.shape[:-1])

  def log_prob(self, action: Array) -> Array:
    log_p = jax.nn.log_softmax(self.logits, axis=-1)
    action = jnp.asarray(action)
    batch = jnp.broadcast_shapes(action.shape, log_p.shape[:-1])  # leading sample axes allowed
    log_p = jnp.broadcast_to(log_p, batch + log_p.shape[-1:])
    action = jnp.broadcast_to(action, batch)
    return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

  def sample_and_log_prob(self, key: Array | None = None, *, seed: Array | int | None = None,
                          sample_shape: int | tuple[int, ...] = ()) -> tuple[Array, Array]:
    """(actions, their log-probs), as distrax's `sample_and_log_prob`."""
    action = self.sample(_sampling_key("Categorical.sample_and_log_prob", key, seed),
                         sample_shape=sample_shape)
    return action, self.log_prob(action)

  def entropy(self, key: Array | None = None) -> Array:
    del key
    return categorical_entropy(self.logits)

  def mode(self) -> Array:
    return jnp.argmax(self.logits, axis=-1)

  def kl(self, other: "Categorical") -> Array:
    """KL(self‖other) per state, exact."""
    return categorical_kl(self.logits, other.logits)


class Gaussian(NamedTuple):
  mean: Array  # [..., D]
  log_std: Array  # broadcastable to mean

  def sample(self, key: Array | None = None, *, seed: Array | int | None = None,
             sample_shape: int | tuple[int, ...] = ()) -> Array:
    """Actions [*sample_shape, ..., D]. The key goes positionally or as `seed=` (distrax)."""
    key = _sampling_key("Gaussian.sample", key, seed)
    noise = jax.random.normal(key, _shape(sample_shape) + self.mean.shape, self.mean.dtype)
    return self.mean + jnp.exp(self.log_std) * noise

  def log_prob(self, action: Array) -> Array:
    return _gaussian_log_prob(self.mean, self.log_std, action)

  def sample_and_log_prob(self, key: Array | None = None, *, seed: Array | int | None = None,
                          sample_shape: int | tuple[int, ...] = ()) -> tuple[Array, Array]:
    """(actions, their log-probs), as distrax's `sample_and_log_prob`."""
    action = self.sample(_sampling_key("Gaussian.sample_and_log_prob", key, seed),
                         sample_shape=sample_shape)
    return action, self.log_prob(action)

  def entropy(self, key: Array | None = None) -> Array:
    del key
    return gaussian_entropy(jnp.broadcast_to(self.log_std, self.mean.shape))

  def mode(self) -> Array:
    return self.mean

  def kl(self, other: "Gaussian") -> Array:
    """KL(self‖other) per state, exact."""
    return gaussian_kl(self.mean, self.log_std, other.mean, other.log_std)


class TanhGaussian(NamedTuple):
  """a = tanh(u), u ~ N(mean, exp(log_std)²). Actions are stored post-tanh, in (−1, 1)."""

  mean: Array
  log_std: Array
  eps: float = 1e-6  # keeps atanh finite for actions that rounded to ±1

  def sample(self, key: Array | None = None, *, seed: Array | int | None = None,
             sample_shape: int | tuple[int, ...] = ()) -> Array:
    """Actions [*sample_shape, ..., D]. The key goes positionally or as `seed=` (distrax)."""
    key = _sampling_key("TanhGaussian.sample", key, seed)
    return jnp.tanh(Gaussian(self.mean, self.log_std).sample(key, sample_shape=sample_shape))

  def log_prob(self, action: Array) -> Array:
    u = jnp.arctanh(jnp.clip(action, -1.0 + self.eps, 1.0 - self.eps))
    return _gaussian_log_prob(self.mean, self.log_std, u) - tanh_log_det_jacobian(u)

  def sample_and_log_prob(self, key: Array | None = None, *, seed: Array | int | None = None,
                          sample_shape: int | tuple[int, ...] = ()) -> tuple[Array, Array]:
    """(actions, their log-probs), the log-prob from the pre-tanh sample u (exact even where
    tanh(u) rounds to ±1, unlike `log_prob(action)`, which clips the action by `eps`)."""
    key = _sampling_key("TanhGaussian.sample_and_log_prob", key, seed)
    u = Gaussian(self.mean, self.log_std).sample(key, sample_shape=sample_shape)
    log_prob = _gaussian_log_prob(self.mean, self.log_std, u) - tanh_log_det_jacobian(u)
    return jnp.tanh(u), log_prob

  def entropy(self, key: Array | None = None) -> Array:
    log_std = jnp.broadcast_to(self.log_std, self.mean.shape)
    if key is None:
      return gaussian_entropy(log_std)
    return tanh_gaussian_entropy(self.mean, log_std, key)

  def mode(self) -> Array:
    return jnp.tanh(self.mean)
