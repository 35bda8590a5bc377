"""`ppo` (tunix's PPO learner with our `ValueCritic`) and `dpo` (tunix's DPO trainer on pairs from
the reference's samples) as `rgpo rlhf` methods, on a tiny random tunix Llama with tunix's mock
vocabulary."""

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
from rgpo_jax.rlhf import methods, prompts
from rgpo_jax.rlhf.methods import dpo, ppo
from rgpo_jax.rlhf_cli import RLHFConfig, validate
from tunix.models.llama3 import model as llama
from tunix.rl import function_registry
from tunix.rl.ppo import ppo_learner
from tunix.tests import test_common as tunix_testing

VOCAB = tunix_testing.MockVocab()
WORDS = ("hello world", "My name", "hello there", "input string")
# A fractional reward (0.01 per character): tunix 0.1.7's PPO truncated fractional scores to 0.
TASK = prompts.Task("tiny", tuple({"prompt": w} for w in WORDS), ({"prompt": WORDS[0]},),
                    lambda prompts, completions, **kw: [0.01 * len(c) for c in completions])
CONFIG = RLHFConfig(seeds=1, steps=2, batch_size=2, num_generations=2, num_iterations=1,
                    max_new_tokens=4, learning_rate=1e-2)


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


def _copy(model):
  """A copy with its own buffers (tunix's train steps donate the policy's)."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def _context(method, out_dir=None, **overrides):
  policy, reference = _copy(_random_llama()), _copy(_random_llama())
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
  config = RLHFConfig(**{**CONFIG.to_dict(), "method": method, **overrides})
  return methods.MethodContext(method, policy, reference, VOCAB, TASK, config, seed=0,
                               mesh=mesh, max_prompt_length=4, out_dir=out_dir)


def _params(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _changed(before, model):
  return any(not np.array_equal(a, b) for a, b in zip(before, _params(model)))


# ---------------------------------------------------------------------------------------------
# PPO


def test_critic_copies_the_reference_into_its_own_buffers_and_freezes_the_embedding():
  """(Its zero initial values are checked in the PPO step test.)"""
  reference = _copy(_random_llama())
  critic = ppo.build_critic(reference, critic_layers=1)
  trained = nnx.state(critic, nnx.Param)
  assert "embedding" not in trained and "value_head" in trained and len(critic.layers) == 1
  np.testing.assert_array_equal(critic.embedding[...], reference.embedder.input_embedding[...])
  layer = lambda m: m.layers[0].attn.q_proj.w[...]
  np.testing.assert_array_equal(layer(critic), layer(reference))
  # Own buffers: tunix's critic step donates them, which must not delete the reference's.
  assert layer(critic).unsafe_buffer_pointer() != layer(reference).unsafe_buffer_pointer()
  with pytest.raises(ValueError, match="critic_layers=2"):
    ppo.build_critic(reference, critic_layers=2)


def test_critic_value_loss_decreases_on_a_fixed_batch():
  """tunix's registered PPO value loss, tunix's optimizer filter (nnx.Param): 10 Adam steps on
  one batch cut the loss by > 10x; the frozen embedding does not move. (The value clip is
  opened wide: around fixed old values of 0 a clip of 0.2 caps how far the loss can fall.)"""
  critic = ppo.build_critic(_copy(_random_llama()), critic_layers=1)
  embedding = np.asarray(critic.embedding[...])
  rng = np.random.default_rng(0)
  example = ppo_learner.TrainExample(
      prompt_ids=jnp.asarray(rng.integers(3, 20, (4, 3))), prompt_mask=jnp.ones((4, 3), bool),
      completion_ids=jnp.asarray(rng.integers(3, 20, (4, 5))),
      completion_mask=jnp.ones((4, 5), bool), advantages=jnp.zeros((4, 5)),
      ref_per_token_logps=None, old_per_token_logps=None,
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


def test_ppo_runner_steps_train_the_policy_and_the_critic():
  """Two `ppo` steps: metrics finite, the first values exactly 0 (zero head) and the second not
  (the critic trained), the policy trained, the reference untouched, and B × G completions."""
  ctx = _context("ppo")
  ref_before, policy_before = _params(ctx.reference), _params(ctx.policy)
  runner = methods.get_method("ppo")(ctx)
  try:
    batch = {"prompts": list(WORDS[:2])}
    steps = [runner.step(batch, jax.random.key(i)) for i in range(2)]
  finally:
    runner.close()
  for m in steps:
    assert all(math.isfinite(v) for v in m.values()), m
    assert {"reward_mean", "loss", "pg_clipfrac", "critic/loss", "critic/vpred_mean"} <= set(m)
  assert steps[0]["critic/vpred_mean"] == 0.0 and steps[1]["critic/vpred_mean"] != 0.0
  # Step 1: KL = 0 and values 0, so the returns are λ^(T−1−t)·R > 0 (0 if R were truncated).
  assert 0 < steps[0]["critic/return_mean"] <= steps[0]["reward_mean"] * 1.5
  assert steps[0]["critic/loss"] > 0 and steps[0]["grad_norm"] > 0
  assert len(runner._rewards) == 2 * 2  # pylint: disable=protected-access
  assert _changed(policy_before, runner.policy) and not _changed(ref_before, ctx.reference)


def test_ppo_refuses_a_temperature_other_than_1():
  with pytest.raises(ValueError, match="temperature=0.9"):
    validate(RLHFConfig(method="ppo", temperature=0.9), check_model_file=False)


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
  """A pad-valued real token stays unmasked; prompts are left-padded, completions right-padded
  and cut to the length."""
  pair = {"prompt_ids": [1, 2, 7], "chosen_ids": [2, 5], "rejected_ids": [6, 6, 6, 6, 6]}
  batch = dpo.pair_batch([pair, {**pair, "prompt_ids": [2]}], prompt_length=4,
                         completion_length=4, pad_id=2)
  np.testing.assert_array_equal(batch["prompt_ids"], [[2, 1, 2, 7], [2, 2, 2, 2]])
  np.testing.assert_array_equal(batch["prompt_mask"], [[0, 1, 1, 1], [0, 0, 0, 1]])
  np.testing.assert_array_equal(batch["chosen_ids"][0], [2, 5, 2, 2])
  np.testing.assert_array_equal(batch["chosen_mask"][0], [1, 1, 0, 0])
  np.testing.assert_array_equal(batch["rejected_mask"][0], [1, 1, 1, 1])


def test_step_pairs_depend_on_seed_and_step_only():
  np.testing.assert_array_equal(dpo.step_pairs(10, 4, 0, 3), dpo.step_pairs(10, 4, 0, 3))
  assert len(set(dpo.step_pairs(10, 4, 0, 3))) == 4
  assert sorted(dpo.step_pairs(2, 4, 0, 1).tolist()) != [0, 1]  # fewer pairs: with replacement


def test_dpo_runner_pairs_from_the_reference_loss_log_2_and_reuse_on_resume(tmp_path,
                                                                            monkeypatch):
  """Pairs sampled from the reference, ranked by the reward, saved; at π_θ = π_ref the DPO loss
  is −log σ(0) = log 2 whatever the pairs; a second runner on the same run folder reads the
  pairs back without sampling; the checkpoint state restores the step counter and parameters."""
  ctx = _context("dpo", out_dir=str(tmp_path), num_generations=3)
  ref_before, policy_before = _params(ctx.reference), _params(ctx.policy)
  runner = methods.get_method("dpo")(ctx)
  try:
    first = runner.step({"prompts": ["ignored"]}, jax.random.key(0))
    state = runner.checkpoint_state()
  finally:
    runner.close()
  np.testing.assert_allclose(first["loss"], math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(first["dpo/rewards/margin"], 0.0, atol=1e-6)
  assert all(math.isfinite(v) for v in first.values()) and first["chosen_reward"] > 0
  assert _changed(policy_before, runner.policy) and not _changed(ref_before, ctx.reference)
  path = tmp_path / dpo.PAIRS_FOLDER / "seed0.jsonl"
  pairs = dpo.load_pairs(str(path))
  assert 1 <= len(pairs) <= len(WORDS)
  for p in pairs:
    assert p["chosen_reward"] > p["rejected_reward"]
    assert TASK.reward_fn(None, [p["chosen"], p["rejected"]]) == [p["chosen_reward"],
                                                                  p["rejected_reward"]]
    assert VOCAB.pad_id() not in p["chosen_ids"] + p["rejected_ids"]

  def no_sampling(*args, **kwargs):
    raise AssertionError("sampled again")

  monkeypatch.setattr(dpo, "sample_groups", no_sampling)
  again = dpo.DPORunner(_context("dpo", out_dir=str(tmp_path), num_generations=3))
  try:
    assert again.pairs == pairs
    again.restore_checkpoint_state(state)
    assert again._step == 1  # pylint: disable=protected-access
    for a, b in zip(_params(again.policy), _params(runner.policy)):
      np.testing.assert_array_equal(a, b)
  finally:
    again.close()
  path.write_text("{not json\n")
  with pytest.raises(ValueError, match="line 1"):
    dpo.load_pairs(str(path))


def test_dpo_refuses_fewer_than_two_samples_per_prompt():
  with pytest.raises(ValueError, match="num_generations=1"):
    validate(RLHFConfig(method="dpo", num_generations=1), check_model_file=False)


def test_the_driver_gives_each_seed_a_policy_and_reference_of_their_own():
  """`nnx.merge` of one state twice shares its Variables; the driver's copies must not."""
  from rgpo_jax.rlhf import driver
  graphdef, state = nnx.split(_random_llama())
  policy, reference = (driver.fresh_model(graphdef, state) for _ in range(2))
  before = _params(reference)
  policy.final_norm.w[...] = policy.final_norm.w[...] + 1.0
  assert not _changed(before, reference) and not _changed(before, _random_llama())
  assert _changed(before, policy)
