"""The Pass@K advantage choices inside tunix's GRPO learner (tiny random Llama, mock vocabulary).

One real `GRPOLearner.train` step with the closed-form Pass@k choice (the registered "surrogate"
estimator and tunix's own "grpo" are compared with the library's functions directly; the
driver's test trains with the closed form too), with a scripted binary reward: the advantages the
learner computes (seen by a metric function) and the ones that reach its policy loss (recorded
from inside the jitted loss) equal the library's functions called directly on the same rewards.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rgpo_jax.rlhf  # noqa: F401  (registers the policy losses)
from rgpo_jax import advantages
from rgpo_jax.rlhf import advantage_estimators as estimators

from flax import nnx
from tunix.models.llama3 import model as llama
from tunix.rl import algo_core, function_registry
from tunix.rl.grpo import grpo_learner

G, K = 4, 2
# Three prompts × G completions: 1, 2 and 0 correct (the last group must get zero advantages).
SCRIPTED_REWARDS = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
SPY_LOSS = "test_spy_grpo_loss"
_seen_by_loss = []


@function_registry.register_policy_loss_fn(SPY_LOSS)
def _spy_loss(model, train_example, algo_config, pad_id, eos_id):
  """tunix's GRPO loss, recording the advantages it receives (from inside the jitted step)."""
  jax.debug.callback(lambda a: _seen_by_loss.append(np.asarray(a)), train_example.advantages)
  return algo_core.grpo_loss_fn(model, train_example, algo_config, pad_id, eos_id)


@pytest.fixture(scope="module")
def cluster():
  """A tunix RL cluster (a learner trains one step on it)."""
  import optax
  from tunix.rl import rl_cluster as rlc
  from tunix.rl.rollout import base_rollout
  from tunix.tests import test_common as tunix_testing

  vocab = tunix_testing.MockVocab()
  cfg = llama.ModelConfig(num_layers=1, vocab_size=vocab.GetPieceSize(), embed_dim=16,
                          hidden_dim=32, num_heads=2, head_dim=8, num_kv_heads=1,
                          rope_theta=10_000, norm_eps=1e-5, weight_tying=True)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
  roles = {rlc.Role.ACTOR: mesh, rlc.Role.REFERENCE: mesh, rlc.Role.ROLLOUT: mesh}
  return rlc.RLCluster(
      actor=llama.Llama3(cfg, rngs=nnx.Rngs(0)), reference=llama.Llama3(cfg, rngs=nnx.Rngs(0)),
      tokenizer=vocab, cluster_config=rlc.ClusterConfig(
          role_to_mesh=roles, rollout_engine="vanilla", offload_to_cpu=False,
          training_config=rlc.RLTrainingConfig(actor_optimizer=optax.sgd(1e-3),
                                               eval_every_n_steps=10, max_steps=100),
          rollout_config=base_rollout.RolloutConfig(max_tokens_to_generate=3,
                                                    max_prompt_length=8, kv_cache_size=16)))


def _one_learner_step(cluster, advantage_estimator):
  from grain import python as grain

  config = grpo_learner.GRPOConfig(advantage_estimator=advantage_estimator, policy_loss_fn=SPY_LOSS,
                                   beta=0.0, num_generations=G)
  script = iter(SCRIPTED_REWARDS)
  computed = []
  learner = grpo_learner.GRPOLearner(
      rl_cluster=cluster, algo_config=config,
      reward_fns=lambda prompts, completions, **kw: [next(script) for _ in completions],
      metric_fns=[lambda rewards, advantages, **kw: computed.append(
          (np.asarray(rewards), np.asarray(advantages))) or {}])
  _seen_by_loss.clear()
  # A learner fast-forwards past the batches its cluster already trained on (tunix's resume
  # logic), so the batch of this step comes after that many skipped copies.
  prompts = ["hello world", "My name", "hello there"] * (cluster.actor_trainer.iter_steps + 1)
  learner.train(grain.MapDataset.source(prompts).batch(3).map(lambda x: {"prompts": x}))
  jax.effects_barrier()
  (rewards, computed_advantages), = computed
  return rewards, computed_advantages, np.concatenate(_seen_by_loss)


def test_learner_uses_our_advantages(cluster):
  name = estimators.advantage_estimator_name("pass_at_k", K, G)
  direct = lambda r: advantages.pass_at_k_advantages(r, K)
  rewards, computed, seen_by_loss = _one_learner_step(cluster, name)
  np.testing.assert_array_equal(rewards, SCRIPTED_REWARDS)
  expected = np.asarray(direct(jnp.asarray(SCRIPTED_REWARDS).reshape(3, G))).reshape(-1)
  np.testing.assert_allclose(computed, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(seen_by_loss, expected, rtol=1e-6, atol=1e-6)
  assert np.all(expected[8:] == 0) and np.abs(expected[:8]).min() > 0.05  # a real comparison


def test_the_three_choices_differ_and_bad_choices_are_named():
  rewards = jnp.asarray(SCRIPTED_REWARDS).reshape(3, G)
  a = {c: np.asarray(estimators.group_advantages(c, K)(rewards)) for c in estimators.ADVANTAGES}
  assert not np.allclose(a["grpo"], a["pass_at_k"]) and not np.allclose(a["pass_at_k"],
                                                                         a["surrogate"])
  with pytest.raises(ValueError, match="'gae'"):
    estimators.advantage_estimator_name("gae", K, G)
  with pytest.raises(ValueError, match="k=5"):
    estimators.advantage_estimator_name("pass_at_k", 5, G)
  with pytest.raises(ValueError, match="k=0"):
    estimators.advantage_estimator_name("surrogate", 0, G)
  assert estimators.advantage_estimator_name("grpo", K, G) == "grpo"  # tunix's own
  np.testing.assert_allclose(  # which is ours with the sample std (ddof = 1) and eps 1e-6
      function_registry.get_advantage_estimator("grpo")(np.asarray(SCRIPTED_REWARDS), G),
      np.asarray(advantages.grpo_advantages(rewards)).ravel(), rtol=1e-6)
  assert estimators.advantage_estimator_name("pass_at_k", 3, G) == "rgpo_pass_at_k3"
  estimator = function_registry.get_advantage_estimator("rgpo_pass_at_k3")
  np.testing.assert_allclose(estimator(np.asarray(SCRIPTED_REWARDS), G),
                             np.asarray(advantages.pass_at_k_advantages(rewards, 3)).ravel(),
                             rtol=1e-6)
  surrogate = function_registry.get_advantage_estimator(
      estimators.advantage_estimator_name("surrogate", K, G))
  np.testing.assert_allclose(
      surrogate(np.asarray(SCRIPTED_REWARDS), G),
      np.asarray(advantages.surrogate_advantages(rewards, "pass_at_k", K)).ravel(), rtol=1e-6)
