"""`ppo`: PPO-RLHF through tunix 0.1.7's `PPOLearner`, with a critic.

Each step (tunix's `PPOLearner._generate_and_compute_advantage`, read from its source): sample
completions of the step's prompts from the policy, score each with the task's reward, put the
score on the completion's last token and subtract β·KL(π_old‖π_ref) (k3, "low_var_kl") from
every token's reward, run GAE (γ = 1, λ = 0.95) against the critic's values, whiten the
advantages; then `num_iterations` rounds of one clipped-surrogate policy update (ε = 0.2) and one
clipped value-loss update of the critic (Schulman et al. 2017, arXiv 1707.06347; Ouyang et al.
2022, arXiv 2203.02155). The step loop is the group methods' `TunixRunner`. One tunix bug is worked around: its token
rewards are integers, which truncated every fractional score to 0 (`_FloatZerosNumpy`).

Samples per step: tunix's PPO samples one completion per prompt; here each prompt is repeated
`num_generations` times (each copy its own trajectory with its own values and advantages), so
every online method trains on batch_size × num_generations completions per step.

The critic. tunix 0.1.7 cannot share the policy's backbone with a critic (its cluster keeps a
"maybe support critic backbone sharing" TODO) and its Llama returns no hidden states, so the
critic is a separate module, `ValueCritic`: a *small copy* of the reference model, namely its
token embedding (frozen: an `nnx.Variable` that is not an `nnx.Param`, which tunix's optimizer
never updates), its first `CRITIC_LAYERS` decoder layers and final norm (trained), and a
zero-initialised linear value head (the first values are 0, the first advantages whitened
discounted rewards). On SmolLM2-135M (30 layers, width 576) 2 layers are 7.1 M trained
parameters beside the 28.3 M frozen embedding: the critic costs about 1/15 of the policy.

Temperature: tunix 0.1.7's PPO computes π_ref's log-probs at the rollout temperature but π_old's
and π_θ's at 1, so the KL penalty is biased unless rollouts sample at temperature 1 (measured
on the tiny test model at 0.9 with π_θ = π_ref: 0.009 nats per token instead of 0); `rgpo rlhf`
therefore refuses `ppo` with any other temperature.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from flax import nnx

from rgpo_jax.rlhf import methods
from rgpo_jax.rlhf.methods import group

CRITIC_LAYERS = 2              # decoder layers copied from the reference into the critic
CRITIC_LEARNING_RATE = 1e-4    # the critic's Adam step size (after the same gradient clipping)
CLIP_RANGE_VALUE = 0.2         # tunix's value clip around the old values
GAE_LAMBDA, GAMMA = 0.95, 1.0
EPSILON = 0.2                  # the policy's clip range


class FrozenParam(nnx.Variable):
  """A weight that is used but never trained (tunix's optimizers update `nnx.Param` only)."""


def _own_copy(module):
  """A clone holding its own buffers (tunix's train step donates them: shared ones would be
  deleted under the reference model)."""
  graphdef, state = nnx.split(nnx.clone(module))
  return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


class ValueCritic(nnx.Module):
  """V(prefix) at every position: frozen embedding → decoder layers → final norm → linear head.

  Called like tunix's Llama (`tokens, positions, cache, attention_mask`), as
  `tunix.rl.common.compute_score` calls a critic; returns [B, L, 1] (position t: the value of
  the prefix ending at token t).

  Args:
    backbone: a tunix Llama3 (the reference): its embedding is copied frozen, its first
      `num_layers` decoder layers and its final norm are copied trainable.
    num_layers: 1 ≤ num_layers ≤ the backbone's layers.
    rngs: initialises nothing random today (the head is zero); kept for nnx's convention.
  """

  def __init__(self, backbone, num_layers: int, *, rngs: nnx.Rngs):
    available = len(backbone.layers)
    if not isinstance(num_layers, int) or not 1 <= num_layers <= available:
      raise ValueError(f"ValueCritic: critic_layers={num_layers!r} must be an integer in "
                       f"1..{available} (the backbone's decoder layers)")
    self.embedding = FrozenParam(jnp.copy(backbone.embedder.input_embedding[...]))
    self.layers = nnx.List([_own_copy(backbone.layers[i]) for i in range(num_layers)])
    self.final_norm = _own_copy(backbone.final_norm)
    self.value_head = nnx.Linear(backbone.config.embed_dim, 1, kernel_init=nnx.initializers.zeros,
                                 use_bias=True, rngs=rngs)

  def __call__(self, input_tokens, positions, cache, attention_mask, segment_ids=None):
    # tunix passes segment_ids = the non-pad mask beside the attention mask, which already
    # holds it; packed sequences (no attention mask) are not supported.
    del segment_ids
    if cache is not None or attention_mask is None:
      raise ValueError("ValueCritic: needs an attention mask and no KV cache (no packing)")
    x = jnp.take(self.embedding[...], input_tokens, axis=0)
    for layer in self.layers:
      _, x = layer(x, positions, None, attention_mask)
    return self.value_head(self.final_norm(x))


def build_critic(reference, critic_layers: int = CRITIC_LAYERS, seed: int = 0) -> ValueCritic:
  """The critic: a copy of the reference's embedding (frozen) and first `critic_layers` layers."""
  return ValueCritic(reference, critic_layers, rngs=nnx.Rngs(seed))


class _FloatZerosNumpy:
  """`jax.numpy` with a float32 `zeros_like`, for tunix's PPO learner during a step.

  tunix 0.1.7 builds PPO's token rewards as `jnp.zeros_like(completion_ids)` (int32) and adds
  the score with `.at[...].add`, which truncates it toward 0: every VADER score in (−1, 1)
  became 0 (measured on SmolLM2: loss, gradient and critic loss all exactly 0)."""

  def __getattr__(self, name):
    return getattr(jnp, name)

  @staticmethod
  def zeros_like(a, dtype=None, **kwargs):
    return jnp.zeros_like(a, dtype=jnp.float32 if dtype is None else dtype, **kwargs)


@contextlib.contextmanager
def _float_token_rewards():
  from tunix.rl.ppo import ppo_learner  # pylint: disable=import-outside-toplevel
  saved, ppo_learner.jnp = ppo_learner.jnp, _FloatZerosNumpy()
  try:
    yield
  finally:
    ppo_learner.jnp = saved


def _ppo_learner_class(num_generations: int):
  from tunix.rl.ppo import ppo_learner  # pylint: disable=import-outside-toplevel

  class RepeatedPromptsPPOLearner(ppo_learner.PPOLearner):
    """tunix's PPO learner with every prompt sampled `num_generations` times (see module doc)."""

    def _num_generations(self) -> int:
      return num_generations

    def _generate_and_compute_advantage(self, training_input, mode):
      # One micro-batch of all B·G rows (what GRPO's learner does for its repeated prompts);
      # the runner's micro-batch size of B rows would sample in G calls with one donated key.
      self._rollout_micro_batch_size = self._compute_logps_micro_batch_size = None
      with _float_token_rewards():
        return super()._generate_and_compute_advantage(training_input, mode)

  return RepeatedPromptsPPOLearner


@methods.register_method("ppo")
def ppo_runner(ctx: methods.MethodContext) -> group.TunixRunner:
  """PPO-RLHF on ctx's policy with a `ValueCritic` of `CRITIC_LAYERS` layers (all of them if the
  model has fewer)."""
  from tunix.rl.ppo import ppo_learner  # pylint: disable=import-outside-toplevel
  cfg = ctx.config  # validated: temperature 1 (module docstring)
  algo = ppo_learner.PPOConfig(beta=cfg.beta, num_iterations=cfg.num_iterations, epsilon=EPSILON,
                               clip_range_value=CLIP_RANGE_VALUE, gae_lambda=GAE_LAMBDA,
                               gamma=GAMMA)
  learner_class = _ppo_learner_class(cfg.num_generations)
  return group.TunixRunner(
      ctx, lambda cluster, reward_fn: learner_class(rl_cluster=cluster, ppo_config=algo,
                                                    reward_fns=reward_fn),
      critic=build_critic(ctx.reference, min(CRITIC_LAYERS, len(ctx.reference.layers)),
                          ctx.seed),
      critic_optimizer=group.optimizer(CRITIC_LEARNING_RATE))
