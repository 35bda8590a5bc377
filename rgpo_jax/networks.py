"""Actor-critic MLPs (flax linen) for discrete and continuous actions.

Separate actor and critic torsos (as in PPO's reference implementation and PureJaxRL), with
orthogonal initialisation: gain √2 for hidden layers, 0.01 for the policy head (an almost
uniform initial policy) and 1.0 for the value head; biases zero. The orthogonal matrices come
from `orthogonal` (Gram–Schmidt in plain JAX ops), not LAPACK's QR: on XLA:CPU a *batched* QR
(any vmapped init, e.g. `jax.vmap(make_train(config))(keys)`) deadlocked the 2-thread intra-op
pool in about 1 of 3 runs here (both threads blocked in jaxlib's `ParallelBatchMap` under
`lapack_sgeqrf_ffi`; jax 0.10.2, seen with gdb).

- Discrete actions: `distributions.Categorical(logits)`.
- Continuous actions: `distributions.Gaussian(mean, log_std)` with a state-independent,
  learned log-std vector (initialised to `init_log_std`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgpo_jax import distributions

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
}


def orthogonal(scale: float = 1.0):
  """Orthogonal initialiser for [n_in, n_out] kernels, the same matrices as
  `flax.linen.initializers.orthogonal(scale)` (up to float rounding) without LAPACK.

  For a Gaussian matrix A (the taller orientation of the kernel), Q of A = QR with diag(R) > 0
  (Haar-distributed; flax takes LAPACK's Q times sign(diag R), the same Q). Q is computed by
  Gram–Schmidt with one re-orthogonalisation pass per column (orthonormal to float precision),
  in a `fori_loop` of plain ops that vmap without custom calls (see the module docstring).
  """

  def init(key, shape, dtype=jnp.float32):
    if len(shape) != 2:
      raise ValueError(f"orthogonal: expected a 2-D kernel shape, got {shape}")
    n_in, n_out = shape
    m, n = max(n_in, n_out), min(n_in, n_out)
    a = jax.random.normal(key, (m, n), jnp.float32)

    def column(j, q):
      v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
      for _ in range(2):  # columns >= j of q are still zero, so they do not contribute
        v = v - q @ (q.T @ v)
      return jax.lax.dynamic_update_index_in_dim(q, v / jnp.linalg.norm(v), j, axis=1)

    q = jax.lax.fori_loop(0, n, column, jnp.zeros((m, n), jnp.float32))
    if n_in < n_out:
      q = q.T
    return (scale * q).astype(dtype)

  return init


def _dense(features: int, gain: float) -> nn.Dense:
  return nn.Dense(features, kernel_init=orthogonal(gain), bias_init=nn.initializers.zeros)


class MLP(nn.Module):
  """Hidden layers with orthogonal(√2) init, then an output layer with orthogonal(`out_gain`)."""

  hidden: Sequence[int]
  out_features: int
  out_gain: float
  activation: str = "tanh"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    act = ACTIVATIONS[self.activation]
    for width in self.hidden:
      x = act(_dense(width, math.sqrt(2.0))(x))
    return _dense(self.out_features, self.out_gain)(x)


class ActorCritic(nn.Module):
  """`apply(params, obs[..., *obs_shape]) -> (distribution, value[...])`.

  Methods `policy` (actor only) and `value` (critic only) avoid computing the other torso.

  Attributes:
    action_kind: "discrete" or "continuous".
    action_size: number of actions / action dimension.
    obs_ndim: number of trailing observation axes (flattened before the MLP; e.g. 3 for
      MinAtar's [10, 10, C] images).
    hidden: hidden layer widths of both torsos.
    activation: a key of `ACTIVATIONS`.
    init_log_std: initial log-std of the Gaussian policy (continuous only).
  """

  action_kind: str
  action_size: int
  obs_ndim: int = 1
  hidden: Sequence[int] = (64, 64)
  activation: str = "tanh"
  init_log_std: float = 0.0

  def setup(self):
    self.actor = MLP(tuple(self.hidden), self.action_size, 0.01, self.activation)
    self.critic = MLP(tuple(self.hidden), 1, 1.0, self.activation)
    if self.action_kind == "continuous":
      self.log_std = self.param("log_std", nn.initializers.constant(self.init_log_std),
                                (self.action_size,))

  def _flat(self, obs: Array) -> Array:
    return obs.reshape(obs.shape[:obs.ndim - self.obs_ndim] + (-1,))

  def policy(self, obs: Array):
    """π(·|obs) alone: a `Categorical` or `Gaussian` over the leading axes of `obs`."""
    head = self.actor(self._flat(obs))
    if self.action_kind == "discrete":
      return distributions.Categorical(head)
    return distributions.Gaussian(head, self.log_std)

  def value(self, obs: Array) -> Array:
    """V(obs) alone, shape obs.shape[:-obs_ndim]."""
    return self.critic(self._flat(obs))[..., 0]

  def __call__(self, obs: Array):
    return self.policy(obs), self.value(obs)
