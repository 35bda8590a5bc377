"""PPO-RLHF (tunix's PPO learner with our critic) and offline DPO (tunix's DPO trainer on pairs
from the reference's samples), on a tiny random tunix Llama with tunix's mock vocabulary."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rgpo_jax.rlhf  # noqa: F401  (registers the losses; needs the rlhf extra)
from flax import nnx
from rgpo_jax.rlhf.methods import dpo, ppo
from tunix.models.llama3 import model as llama
from tunix.rl import function_registry
from tunix.rl.ppo import ppo_learner
from tunix.tests import test_common as tunix_testing

VOCAB = tunix_testing.MockVocab()
PROMPTS = ["hello world", "My name", "hello there", "input string"]


@functools.cache
def _random_llama():
  """A 1-layer Llama over the mock vocabulary with every parameter random (tunix zeroes the MLP
  at init, and its small embedding makes sampling repeat the last prompt token). Built once."""
  cfg = llama.ModelConfig(num_layers=1, vocab_size=VOCAB.GetPieceSize(), embed_dim=16,
                          hidden_dim=32, num_heads=2, head_dim=8, num_kv_heads=1,
                          rope_theta=10_000, norm_eps=1e-5, weight_tying=True)
  m = llama.Llama3(cfg, rngs=nnx.Rngs(0))
  leaves, treedef = jax.tree.flatten(nnx.state(m, nnx.Param))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(m, jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, x.shape, x.dtype)
                                             for k, x in zip(keys, leaves)]))
  return m


def _tiny_llama():
  """A fresh copy of the random tiny Llama (policies are trained in place)."""
  return nnx.clone(_random_llama())


def _length_reward(prompts, completions, **kwargs):
  del prompts, kwargs
  return [float(len(c)) for c in completions]


def _params(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _changed(before, model):
  return any(not np.array_equal(a, b) for a, b in zip(before, _params(model)))


# ---------------------------------------------------------------------------------------------
# PPO


def test_critic_copies_the_reference_freezes_the_embedding_and_starts_at_zero():
  reference = _tiny_llama()
  critic = ppo.build_critic(reference, critic_layers=1)
  trained = nnx.state(critic, nnx.Param)
  assert "embedding" not in trained and "value_head" in trained and len(critic.layers) == 1
  np.testing.assert_array_equal(critic.embedding[...], reference.embedder.input_embedding[...])
  tokens = jnp.array([[1, 5, 6, 7]])
  mask = jnp.tril(jnp.ones((4, 4), bool))[None]
  values = nnx.jit(lambda c: c(tokens, jnp.arange(4)[None], None, mask))(critic)
  assert values.shape == (1, 4, 1) and float(jnp.max(jnp.abs(values))) == 0.0
  with pytest.raises(ValueError, match="critic_layers=2"):
    ppo.build_critic(reference, critic_layers=2)


def test_critic_value_loss_decreases_on_a_fixed_batch():
  """tunix's registered PPO value loss, tunix's optimizer filter (nnx.Param): 10 Adam steps on
  one batch cut the loss by > 10x; the frozen embedding does not move. (The value clip is
  opened wide: around fixed old values of 0 a clip of 0.2 caps how far the loss can fall.)"""
  critic = ppo.build_critic(_tiny_llama(), critic_layers=1)
  embedding = np.asarray(critic.embedding[...])
  rng = np.random.default_rng(0)
  completion = jnp.asarray(rng.integers(3, 20, (4, 5)))
  example = ppo_learner.TrainExample(
      prompt_ids=jnp.asarray(rng.integers(3, 20, (4, 3))), prompt_mask=jnp.ones((4, 3), bool),
      completion_ids=completion, completion_mask=jnp.ones((4, 5), bool),
      advantages=jnp.zeros((4, 5)), ref_per_token_logps=None, old_per_token_logps=None,
      returns=jnp.asarray(rng.uniform(-1, 1, (4, 5)), jnp.float32), old_values=jnp.zeros((4, 5)))
  loss_fn = function_registry.get_value_loss_fn("ppo")
  optimizer = nnx.Optimizer(critic, optax.adam(3e-2), wrt=nnx.Param)

  @nnx.jit
  def step(critic, optimizer):
    (loss, _), grads = nnx.value_and_grad(
        lambda m: loss_fn(m, example, clip_range_value=1e3, pad_id=0, eos_id=2),
        has_aux=True)(critic)
    optimizer.update(critic, grads)
    return loss

  losses = [float(step(critic, optimizer)) for _ in range(10)]
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.1 * losses[0], losses
  np.testing.assert_array_equal(critic.embedding[...], embedding)


def test_ppo_learner_steps_with_the_critic():
  """Two tunix PPO steps: every metric finite, the first values 0 (zero head), KL(π_old‖π_ref)
  0 at step 1 (policy = reference), the policy and critic trained, the reference untouched."""
  policy, reference = _tiny_llama(), _tiny_llama()
  ref_before, policy_before = _params(reference), _params(policy)
  seen = []
  records = ppo.train_ppo(policy, reference, VOCAB, PROMPTS, _length_reward, steps=2,
                          batch_size=2, max_new_tokens=4, learning_rate=1e-2, beta=0.04, seed=0,
                          settings=ppo.PPOSettings(critic_layers=1), on_step=seen.append)
  assert seen == [0, 1] and [r["step"] for r in records] == [1, 2]
  for record in records:
    assert set(ppo.STEP_METRICS) <= set(record)
    assert all(math.isfinite(v) for v in record.values()), record
  assert records[0]["value_mean"] == 0.0 and records[1]["value_mean"] != 0.0
  assert abs(records[0]["kl_ref"]) < 1e-5 and records[0]["value_loss"] > 0
  assert 0 < records[0]["reward"] <= 4 * max(len(w) for w in VOCAB.DEFAULT_MAPPING) + 3
  assert _changed(policy_before, policy) and not _changed(ref_before, reference)


def test_ppo_bad_sizes_are_refused_with_the_value_named():
  with pytest.raises(ValueError, match="batch_size=0"):
    ppo.train_ppo(None, None, VOCAB, PROMPTS, _length_reward, steps=1, batch_size=0,
                  max_new_tokens=4, learning_rate=1e-3, beta=0.04, seed=0)
  with pytest.raises(ValueError, match="batch_size=5 exceeds the 4 prompts"):
    next(ppo.prompt_batches(PROMPTS, 5, 1, 0))


def test_prompt_batches_cover_every_prompt_each_epoch():
  batches = [b["prompts"].tolist() for b in ppo.prompt_batches(PROMPTS, 2, 4, seed=3)]
  assert sorted(batches[0] + batches[1]) == sorted(PROMPTS)
  assert sorted(batches[2] + batches[3]) == sorted(PROMPTS)


# ---------------------------------------------------------------------------------------------
# DPO


def _sample(ids, reward):
  return dpo.Sample(ids=list(ids), text=" ".join(map(str, ids)), reward=reward)


def test_pairs_are_best_versus_worst_and_ties_are_dropped():
  pairs = dpo.rank_pairs(
      ["a", "b", "c"], [[1, 5], [1, 6], [1, 7]],
      [[_sample([3], 0.2), _sample([4], 0.9), _sample([5], -0.4)],   # best 0.9, worst -0.4
       [_sample([6], 0.5), _sample([7], 0.5)],                       # tie: no pair
       [_sample([8], -1.0), _sample([9, 9], 0.0)]])
  assert [p["prompt"] for p in pairs] == ["a", "c"]
  assert (pairs[0]["chosen_ids"], pairs[0]["rejected_ids"]) == ([4], [5])
  assert (pairs[0]["chosen_reward"], pairs[0]["rejected_reward"]) == (0.9, -0.4)
  assert (pairs[1]["chosen_ids"], pairs[1]["rejected_ids"]) == ([9, 9], [8])
  with pytest.raises(ValueError, match="'a' has 1 samples"):
    dpo.rank_pairs(["a"], [[1]], [[_sample([3], 0.0)]])


def test_pair_batch_masks_come_from_lengths_not_from_the_pad_id():
  """SmolLM2's file pads with a token chat prompts contain: a pad-valued real token stays
  unmasked; prompts are left-padded, completions right-padded and cut to the length."""
  pair = {"prompt_ids": [1, 2, 7], "chosen_ids": [2, 5], "rejected_ids": [6, 6, 6, 6, 6]}
  batch = dpo.pair_batch([pair, {**pair, "prompt_ids": [2]}], prompt_length=4,
                         completion_length=4, pad_id=2)
  np.testing.assert_array_equal(batch["prompt_ids"], [[2, 1, 2, 7], [2, 2, 2, 2]])
  np.testing.assert_array_equal(batch["prompt_mask"], [[0, 1, 1, 1], [0, 0, 0, 1]])
  np.testing.assert_array_equal(batch["chosen_ids"][0], [2, 5, 2, 2])
  np.testing.assert_array_equal(batch["chosen_mask"][0], [1, 1, 0, 0])
  np.testing.assert_array_equal(batch["rejected_mask"][0], [1, 1, 1, 1])


def test_saved_pairs_are_reused_without_sampling(tmp_path):
  path = tmp_path / dpo.PAIRS_FILE
  pair = {"prompt": "a", "prompt_ids": [1], "chosen_ids": [3], "rejected_ids": [4]}
  path.write_text(json.dumps(pair) + "\n")
  # No model: sampling would fail, so reading the file is the only way this returns.
  assert dpo.preference_pairs(path, None, VOCAB, ["a"], _length_reward, samples_per_prompt=2,
                              max_new_tokens=4, seed=0) == [pair]
  path.write_text("{not json\n")
  with pytest.raises(ValueError, match="line 1"):
    dpo.load_pairs(path)


def test_dpo_step_starts_at_log_2_on_pairs_from_the_reference(tmp_path):
  """Pairs sampled from the reference and ranked by the reward; at π_θ = π_ref the DPO loss is
  −log σ(0) = log 2 whatever the pairs; after one step the policy moved, the reference did not.
  """
  policy, reference = _tiny_llama(), _tiny_llama()
  ref_before, policy_before = _params(reference), _params(policy)
  records = dpo.train_dpo(policy, reference, VOCAB, PROMPTS, _length_reward, out_dir=tmp_path,
                          steps=2, batch_size=2, max_new_tokens=4, learning_rate=1e-2, seed=0,
                          samples_per_prompt=3)
  np.testing.assert_allclose(records[0]["loss"], math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(records[0]["reward_margin"], 0.0, atol=1e-6)
  assert all(math.isfinite(v) for r in records for v in r.values())
  assert records[1]["loss"] != records[0]["loss"]
  pairs = dpo.load_pairs(tmp_path / dpo.PAIRS_FILE)
  assert 1 <= len(pairs) <= len(PROMPTS)
  for p in pairs:
    assert p["chosen_reward"] > p["rejected_reward"]
    assert _length_reward(None, [p["chosen"], p["rejected"]]) == [p["chosen_reward"],
                                                                  p["rejected_reward"]]
    assert VOCAB.pad_id() not in p["chosen_ids"] + p["rejected_ids"]  # a pad id stops sampling
  assert _changed(policy_before, policy) and not _changed(ref_before, reference)


def test_dpo_bad_settings_are_refused_with_the_value_named(tmp_path):
  with pytest.raises(ValueError, match="samples_per_prompt=1"):
    dpo.train_dpo(None, None, VOCAB, PROMPTS, _length_reward, out_dir=tmp_path, steps=1,
                  batch_size=2, max_new_tokens=4, learning_rate=1e-3, seed=0,
                  samples_per_prompt=1)
  with pytest.raises(ValueError, match="every prompt's samples tied"):
    next(dpo.pair_batches([], 2, 1, 0, completion_length=4, pad_id=0))
