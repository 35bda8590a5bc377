"""The policy-loss registry: composition, overrides, registration, errors, README in sync."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import gates, losses, variants

pytestmark = pytest.mark.usefixtures("x64")

MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
RNG = np.random.default_rng(0)
LP = RNG.normal(-1.0, 0.5, MASK.shape)
OLD = LP - RNG.normal(0.0, 0.3, MASK.shape)
ADV = np.broadcast_to(RNG.normal(0.0, 1.0, (2, 1)), MASK.shape).copy()


def test_every_registered_variant_runs_finite_in_one_compile():
  names = sorted(variants.POLICY_LOSSES)

  @jax.jit
  def all_losses(lp):
    return {n: jax.value_and_grad(lambda x, n=n: variants.policy_loss(
        n, x, OLD, ADV, MASK, key=jax.random.key(0))[0])(lp) for n in names}

  for name, (value, grad) in all_losses(LP).items():
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))), name
    assert np.all(np.asarray(grad)[~MASK] == 0), name


def test_variants_are_their_compositions_with_parameter_overrides():
  @jax.jit
  def pairs(lp):
    return [(variants.policy_loss("rgpo_sigmoid", lp, OLD, ADV, MASK, k=8.0)[0],
             losses.policy_loss(gates.sigmoid(8.0), lp, OLD, ADV, MASK)[0]),
            (variants.policy_loss("gspo", lp, OLD, ADV, MASK)[0],
             losses.policy_loss(gates.ppo_clip(3e-4, 4e-4), lp, OLD, ADV, MASK,
                                granularity="sequence_token", reduction="seq-mean-token-mean")[0])]

  for got, expected in pairs(LP):
    assert float(got) == float(expected)
  assert variants.make_gate("dual_clip", c=5.0).params["c"] == 5.0


def test_user_registration_and_errors():
  @variants.register_policy_loss("my_sqrt_gate")
  def my_loss(log_prob, old_log_prob, advantage, mask=None, **kw):
    return losses.policy_loss(gates.custom(lambda r, a: jnp.sqrt(r)), log_prob, old_log_prob,
                              advantage, mask, **kw)

  try:
    assert variants.get_policy_loss("my_sqrt_gate") is my_loss
    with pytest.raises(ValueError, match="'my_sqrt_gate' is already registered"):
      variants.register_policy_loss("my_sqrt_gate")(lambda *a, **k: None)
  finally:
    del variants.POLICY_LOSSES["my_sqrt_gate"]
  with pytest.raises(ValueError, match="unknown policy loss 'ppo2'"):
    variants.get_policy_loss("ppo2")
  with pytest.raises(ValueError, match="key=None"):
    variants.policy_loss("clip_cov", LP, OLD, ADV, MASK)
  with pytest.raises(ValueError, match="'kl_cov' is not a gate-based variant"):
    variants.make_gate("kl_cov")


def test_readme_variant_table_lists_every_registered_variant():
  readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  missing = [n for n in variants.VARIANTS if f"| `{n}` |" not in readme]
  assert not missing, f"README variant table lacks {missing}; paste variants.variant_table()"
