"""Network initialisation: the LAPACK-free orthogonal initialiser."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from rgpo_jax.networks import orthogonal
from rgpo_jax.training import TrainConfig, Trainer


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (400, 128), (1, 8)])
@pytest.mark.parametrize("scale", [0.01, np.sqrt(2.0)])
def test_orthogonal_equals_flax_orthogonal(shape, scale):
  key = jax.random.key(7)
  ours = np.asarray(orthogonal(scale)(key, shape), np.float64)
  ref = np.asarray(nn.initializers.orthogonal(scale)(key, shape), np.float64)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6 * scale)
  q = ours / scale
  gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
  np.testing.assert_allclose(gram, np.eye(min(shape)), atol=2e-6)


def test_orthogonal_rejects_non_matrix_shapes():
  with pytest.raises(ValueError, match=r"expected a 2-D kernel shape, got \(3, 4, 5\)"):
    orthogonal()(jax.random.key(0), (3, 4, 5))


def test_vmapped_init_has_no_lapack_call():
  """A batched LAPACK QR deadlocked XLA:CPU's intra-op pool (see networks.py): vmapped
  initialisation, as in `jax.vmap(make_train(config))`, must compile to plain ops."""
  trainer = Trainer(TrainConfig(hidden=(16, 16)))
  keys = jax.random.split(jax.random.key(0), 3)
  hlo = jax.jit(jax.vmap(trainer.init_params)).lower(keys).as_text()
  assert "lapack" not in hlo.lower() and "geqrf" not in hlo.lower()
  # Same parameters as one run at a time.
  batched = jax.vmap(trainer.init_params)(keys)
  single = trainer.init_params(keys[1])
  for b, s in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
    np.testing.assert_allclose(np.asarray(b)[1], np.asarray(s), rtol=1e-6, atol=1e-7)
