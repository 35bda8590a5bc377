"""The gated losses as tunix policy losses, on a tiny random tunix Llama (float32).

Each check calls the registered function exactly as tunix's actor trainer does
(`nnx.value_and_grad(loss_fn, has_aux=True)(model, train_example=..., algo_config=...)`) and
compares the loss and every parameter gradient with an independent computation: the library's
`losses` functions called directly on tunix's log-probs, or tunix's own PPO/GRPO losses where
the gate is PPO's clip. Tolerance: float32, relative 1e-5 of the largest gradient entry.
"""

import importlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import gates, losses

import rgpo_jax.rlhf as rlhf
from flax import nnx
from tunix.models.llama3 import model as llama
from tunix.rl import algo_core, common, function_registry
from tunix.rl.grpo import grpo_learner
from tunix.rl.ppo import ppo_learner

PAD, EOS = 0, 1
B, P, T = 4, 3, 6


@pytest.fixture(scope="module")
def model():
  """A 1-layer Llama (vocab 32, width 16, GQA 2:1) with every parameter random (tunix zeroes
  the MLP at init, which would make those gradients trivially equal)."""
  cfg = llama.ModelConfig(num_layers=1, vocab_size=32, embed_dim=16, hidden_dim=32, num_heads=2,
                          head_dim=8, num_kv_heads=1, rope_theta=10_000, norm_eps=1e-5,
                          weight_tying=True)
  m = llama.Llama3(cfg, rngs=nnx.Rngs(0))
  params = nnx.state(m, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(m, jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, x.shape, x.dtype)
                                             for k, x in zip(keys, leaves)]))
  return m


def _example(seed=0, per_token_advantages=False, old_offset=0.3, with_ref=True):
  """A batch with left-padded prompts, right-padded completions, and NaN / −inf log-probs in
  the padding (as real pipelines produce): the masked positions must stay inert."""
  rng = np.random.default_rng(seed)
  prompt = rng.integers(2, 32, (B, P))
  prompt[0, 0] = PAD
  comp = rng.integers(2, 32, (B, T))
  comp[1, 3:] = PAD
  comp[2, 5:] = PAD
  mask = comp != PAD
  old = rng.normal(-3.5, old_offset, (B, T)).astype(np.float32)
  ref = rng.normal(-3.5, 0.4, (B, T)).astype(np.float32)
  old[~mask], ref[~mask] = np.nan, -np.inf
  adv_shape = (B, T) if per_token_advantages else (B,)
  return grpo_learner.TrainExample(
      prompt_ids=jnp.asarray(prompt), prompt_mask=jnp.asarray(prompt != PAD),
      completion_ids=jnp.asarray(comp), completion_mask=jnp.asarray(mask),
      advantages=jnp.asarray(rng.normal(size=adv_shape).astype(np.float32)),
      ref_per_token_logps=jnp.asarray(ref) if with_ref else None,
      old_per_token_logps=jnp.asarray(old))


def _grpo_config(**kw):
  config = grpo_learner.GRPOConfig(**kw)
  config.temperature = 1.0  # set by GRPOLearner from the rollout config
  return config


def _as_tunix_calls_it(model, name, example, config):
  """value_and_grad of the registered loss, called as GRPOLearner / the actor trainer do."""
  fn = function_registry.get_policy_loss_fn(name)
  loss_fn = lambda m, train_example, algo_config: fn(m, train_example, algo_config=algo_config,
                                                     pad_id=PAD, eos_id=EOS)
  step = nnx.jit(lambda m, ex: nnx.value_and_grad(loss_fn, has_aux=True)(
      m, train_example=ex, algo_config=config))  # the trainer jits its step too
  (loss, aux), grads = step(model, example)
  return loss, aux, grads


def _value_and_grad(fn, model):
  return nnx.jit(lambda m: nnx.value_and_grad(fn, has_aux=True)(m))(model)


def _logps(m, example):
  graphdef, state = nnx.split(m)
  return common.compute_per_token_logps(
      graphdef, state, prompt_tokens=example.prompt_ids, completion_tokens=example.completion_ids,
      pad_id=PAD, eos_id=EOS, stop_gradient=False)


def _assert_same(loss, grads, ref_loss, ref_grads, rtol=1e-5):
  np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=1e-7)
  a, b = jax.tree.leaves(grads), jax.tree.leaves(ref_grads)
  assert len(a) == len(b) > 0
  scale = max(float(jnp.max(jnp.abs(x))) for x in b)
  assert scale > 1e-4  # the comparison is not between two zero gradients
  for x, y in zip(a, b):
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(x, y, rtol=0, atol=rtol * scale)


def test_every_gate_family_and_the_dual_gate_are_registered():
  names = set(function_registry.default_registry.list_functions("policy_loss_fn"))
  expected = {f"rgpo_{family}" for family in gates.FAMILIES} | {"rgpo_dual"}
  assert expected <= names
  assert set(rlhf.REGISTERED_LOSSES) == expected
  assert {"grpo", "ppo"} <= names  # tunix's own losses are untouched


def test_dual_gate_matches_library_loss_and_gradient(model):
  """GRPO config (β ≠ 0 so tunix provides π_ref, default sequence-mean-token-mean)."""
  example = _example()
  loss, aux, grads = _as_tunix_calls_it(model, "rgpo_dual", example, _grpo_config(beta=0.04))
  mask = example.completion_mask

  def direct(m):
    adv = jnp.broadcast_to(example.advantages[:, None], (B, T))
    old = jnp.where(mask, example.old_per_token_logps, 0.0)
    ref = jnp.where(mask, example.ref_per_token_logps, 0.0)
    return losses.dual_ratio_policy_loss(gates.sigmoid(4.0), gates.sigmoid(4.0), _logps(m, example),
                                         old, ref, adv, mask, reduction="sequence_mean")

  (ref_loss, ref_aux), ref_grads = _value_and_grad(direct, model)
  _assert_same(loss, grads, ref_loss, ref_grads)
  assert float(aux["kl_loss"]) == 0.0  # rgpo_dual: the reference gate is the anchor, no penalty
  np.testing.assert_allclose(aux["gate/weight_mean"], ref_aux.weight_mean, rtol=1e-6)
  np.testing.assert_allclose(aux["gate/acceptance_fraction"], ref_aux.old.acceptance_fraction)
  np.testing.assert_allclose(aux["gate/ref_factor_mean"], ref_aux.ref_gate_mean, rtol=1e-6)
  # KL(π_θ‖π_ref) by k3 on the sampled tokens (tunix's low_var_kl), by hand:
  log_r = np.asarray(example.ref_per_token_logps) - np.asarray(_logps(model, example))
  np.testing.assert_allclose(aux["gate/kl_ref"], np.mean((np.expm1(log_r) - log_r)[mask]),
                             rtol=1e-5)
  assert 0.0 < float(aux["gate/acceptance_fraction"]) <= 1.0


def test_token_mean_single_gate_matches_library(model):
  """GRPO with loss_agg_mode='token-mean', one advantage per sequence, β = 0 (no π_ref)."""
  example = _example(seed=1, with_ref=False)
  config = _grpo_config(beta=0.0, loss_agg_mode="token-mean")
  loss, aux, grads = _as_tunix_calls_it(model, "rgpo_sigmoid", example, config)
  mask = example.completion_mask

  def direct(m):
    adv = jnp.broadcast_to(example.advantages[:, None], (B, T))
    return losses.policy_loss(gates.sigmoid(4.0), _logps(m, example),
                              jnp.where(mask, example.old_per_token_logps, 0.0), adv, mask)

  (ref_loss, ref_aux), ref_grads = _value_and_grad(direct, model)
  _assert_same(loss, grads, ref_loss, ref_grads)
  for key in rlhf.GATE_METRICS + ("kl", "pg_clipfrac"):  # every key tunix's GRPO logs
    assert np.isfinite(aux[key]), key
  np.testing.assert_allclose(aux["gate/kl_old"], ref_aux.approx_kl, rtol=1e-6)


def test_ppo_clip_gate_equals_tunix_ppo_loss(model):
  """An independent reference: tunix's own PPO loss (token mean, [B, T] GAE advantages)."""
  example = _example(seed=2, per_token_advantages=True)
  config = ppo_learner.PPOConfig(epsilon=0.2)
  loss, aux, grads = _as_tunix_calls_it(model, "rgpo_ppo_clip", example, config)
  clean = example.replace(old_per_token_logps=jnp.where(example.completion_mask,
                                                        example.old_per_token_logps, -3.5))
  theirs = lambda m: algo_core.ppo_policy_loss_fn(m, clean, config, PAD, EOS)
  (ref_loss, ref_aux), ref_grads = _value_and_grad(theirs, model)
  _assert_same(loss, grads, ref_loss, ref_grads)
  np.testing.assert_allclose(aux["pg_clipfrac"], ref_aux["pg_clipfrac"], atol=1e-7)


def test_ppo_clip_gate_with_kl_penalty_equals_tunix_grpo_loss(model):
  """tunix's GRPO loss (sequence mean, clip ε = 0.2, β·KL in the loss with kl_loss_mode)."""
  example = _example(seed=3)
  clean = example.replace(
      old_per_token_logps=jnp.where(example.completion_mask, example.old_per_token_logps, -3.5),
      ref_per_token_logps=jnp.where(example.completion_mask, example.ref_per_token_logps, -3.5))
  config = _grpo_config(beta=0.3, kl_loss_mode="low_var_kl")  # k3 (the default "kl" is k1)
  loss, aux, grads = _as_tunix_calls_it(model, "rgpo_ppo_clip", example, config)
  theirs = lambda m: algo_core.grpo_loss_fn(m, clean, config, PAD, EOS)
  (ref_loss, ref_aux), ref_grads = _value_and_grad(theirs, model)
  _assert_same(loss, grads, ref_loss, ref_grads)
  np.testing.assert_allclose(aux["kl"], ref_aux["kl"], rtol=1e-5)
  np.testing.assert_allclose(aux["kl_loss"], ref_aux["kl_loss"], rtol=1e-5)
  assert float(aux["kl_loss"]) > 1e-3  # the penalty term is really part of the compared loss


def test_registering_again_is_harmless_and_foreign_names_are_refused():
  before = function_registry.get_policy_loss_fn("rgpo_dual")
  importlib.reload(importlib.import_module("rgpo_jax.rlhf.policy_loss"))
  importlib.reload(rlhf)
  after = function_registry.get_policy_loss_fn("rgpo_dual")
  assert after is not None and after.gate_ref is not None
  del before
  fn = rlhf.register_policy_loss("rgpo_test_k8", gates.sigmoid(8.0))
  assert rlhf.register_policy_loss("rgpo_test_k8", gates.sigmoid(2.0)) is not fn
  assert function_registry.get_policy_loss_fn("rgpo_test_k8").gate.params["k"] == 2.0
  with pytest.raises(ValueError, match="'grpo'"):
    rlhf.register_policy_loss("grpo", gates.sigmoid(4.0))


def test_bad_configurations_fail_with_the_value_named(model):
  example = _example(with_ref=False)
  with pytest.raises(ValueError, match="beta"):
    _as_tunix_calls_it(model, "rgpo_dual", example, _grpo_config(beta=0.0))
  with pytest.raises(ValueError, match="seq-mean-token-sum"):
    _as_tunix_calls_it(model, "rgpo_sigmoid", example,
                       _grpo_config(beta=0.0, loss_agg_mode="seq-mean-token-sum"))
  with pytest.raises(ValueError, match="epsilon_c"):
    _as_tunix_calls_it(model, "rgpo_sigmoid", example, ppo_learner.PPOConfig(epsilon_c=3.0))
  with pytest.raises(ValueError, match="reduction='tokens'"):
    rlhf.make_policy_loss_fn(gates.sigmoid(4.0), reduction="tokens")


def test_library_core_never_imports_tunix():
  code = ("import sys, rgpo_jax, rgpo_jax.gates, rgpo_jax.losses, rgpo_jax.advantages; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('tunix', 'gguf') "
          "or m.startswith('rgpo_jax.rlhf')]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_grpo_learner_step_with_rgpo_dual_logs_the_gate_metrics():
  """One real tunix GRPO step (vanilla rollout, tiny Llama, tunix's mock vocabulary) with
  `policy_loss_fn="rgpo_dual"`: the config accepts the name and the gate's diagnostics reach
  tunix's metrics logger. Actor = reference and one iteration per batch put every ratio at 1,
  where the dual weight is known in closed form: [w_old(1)·g_ref(1) + g_old(1)·w_ref(1)]/g_ref(1)
  = [1·½ + ½·1]/½ = 2 for two k = 4 sigmoids (twice RGPO's w(1) = 1)."""
  import optax
  from grain import python as grain
  from tunix.rl import rl_cluster as rlc
  from tunix.rl.rollout import base_rollout
  from tunix.tests import test_common as tunix_testing

  vocab = tunix_testing.MockVocab()
  cfg = llama.ModelConfig(num_layers=1, vocab_size=vocab.GetPieceSize(), embed_dim=16,
                          hidden_dim=32, num_heads=2, head_dim=8, num_kv_heads=1,
                          rope_theta=10_000, norm_eps=1e-5, weight_tying=True)
  actor, reference = (llama.Llama3(cfg, rngs=nnx.Rngs(0)) for _ in range(2))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
  roles = {rlc.Role.ACTOR: mesh, rlc.Role.REFERENCE: mesh, rlc.Role.ROLLOUT: mesh}
  cluster = rlc.RLCluster(actor=actor, reference=reference, tokenizer=vocab, cluster_config=(
      rlc.ClusterConfig(
          role_to_mesh=roles, rollout_engine="vanilla", offload_to_cpu=False,
          training_config=rlc.RLTrainingConfig(actor_optimizer=optax.sgd(1e-3),
                                               eval_every_n_steps=10, max_steps=1),
          rollout_config=base_rollout.RolloutConfig(max_tokens_to_generate=4,
                                                    max_prompt_length=8, kv_cache_size=32))))
  config = grpo_learner.GRPOConfig(policy_loss_fn="rgpo_dual", beta=0.04, num_generations=2)
  learner = grpo_learner.GRPOLearner(
      rl_cluster=cluster, algo_config=config,
      reward_fns=lambda prompts, completions, **kw: [float(len(c)) for c in completions])
  rlhf.log_gate_metrics(learner)
  prompts = ["hello world", "My name", "hello there", "input string"]
  learner.train(grain.MapDataset.source(prompts).batch(2).map(lambda x: {"prompts": x}))

  history = lambda name: np.asarray(
      cluster.actor_trainer.metrics_logger.get_metric_history("actor", name, "train"))
  for name in rlhf.GATE_METRICS + ("loss", "kl", "pg_clipfrac"):
    assert history(name).shape == (1,) and np.all(np.isfinite(history(name))), name
  np.testing.assert_allclose(history("gate/weight_mean"), [2.0], rtol=1e-6)
  np.testing.assert_allclose(history("gate/acceptance_fraction"), [1.0])
  np.testing.assert_allclose(history("gate/kl_ref"), [0.0], atol=1e-6)
