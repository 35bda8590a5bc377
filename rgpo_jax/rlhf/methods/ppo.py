"""PPO-RLHF through tunix 0.1.7's `PPOLearner`: a policy, a frozen reference, and a critic.

What tunix does each step (read from `tunix/rl/ppo/ppo_learner.py`, not reconstructed here):
sample one completion per prompt from the policy, score it with the task's reward function,
put the score on the completion's last token and subtract β·KL(π_old‖π_ref) (k3, "low_var_kl")
from every token's reward, run GAE (γ = 1, λ = 0.95) against the critic's values, whiten the
advantages, then one clipped-surrogate update of the policy and one clipped value-loss update
of the critic (Schulman et al. 2017, arXiv 1707.06347; Ouyang et al. 2022, arXiv 2203.02155).

The critic. tunix 0.1.7 cannot share the policy's backbone with the critic (its cluster keeps a
"maybe support critic backbone sharing" TODO) and its Llama has no hidden-state output, so the
critic is a separate module, `ValueCritic`: a *small copy* of the reference model, namely its
token embedding (frozen: an `nnx.Variable` that is not an `nnx.Param`, so tunix's optimizer,
which updates `nnx.Param` only, never touches it), its first `critic_layers` decoder layers and
its final norm (trained), and a zero-initialised linear value head (so the first values are 0
and the first advantages are whitened discounted rewards). With SmolLM2-135M (30 layers, width
576) the default 2 layers give 7.1 M trained parameters beside the 28.3 M frozen embedding:
the critic's forward and backward cost about 1/15 of the policy's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tunix.generate import tokenizer_adapter
from tunix.rl import rl_cluster as rlc
from tunix.rl.ppo import ppo_learner
from tunix.rl.rollout import base_rollout

RewardFn = Callable[..., list]


class FrozenParam(nnx.Variable):
  """A weight that is used but never trained (tunix's optimizers update `nnx.Param` only)."""


class ValueCritic(nnx.Module):
  """V(prefix) for every position: frozen embedding → decoder layers → norm → linear head.

  Called like tunix's Llama (`tokens, positions, cache, attention_mask`), as
  `tunix.rl.common.compute_score` calls a critic; returns [B, L, 1] values (the score of
  position t is the value of the prefix ending at token t).
  """

  def __init__(self, backbone, num_layers: int, *, rngs: nnx.Rngs):
    available = len(backbone.layers)
    if not 1 <= num_layers <= available:
      raise ValueError(f"ValueCritic: critic_layers={num_layers!r} must be in 1..{available} "
                       "(the backbone's decoder layers)")
    self.embedding = FrozenParam(backbone.embedder.input_embedding[...])
    self.layers = nnx.List([nnx.clone(backbone.layers[i]) for i in range(num_layers)])
    self.final_norm = nnx.clone(backbone.final_norm)
    self.value_head = nnx.Linear(backbone.config.embed_dim, 1, kernel_init=nnx.initializers.zeros,
                                 use_bias=True, rngs=rngs)

  def __call__(self, input_tokens, positions, cache, attention_mask, segment_ids=None):
    # tunix passes segment_ids = the non-pad mask beside the attention mask, which already
    # encodes it; packed sequences (no attention mask) are not supported.
    del segment_ids
    if cache is not None or attention_mask is None:
      raise ValueError("ValueCritic: needs an attention mask and no KV cache (no packing)")
    x = jnp.take(self.embedding[...], input_tokens, axis=0)
    for layer in self.layers:
      _, x = layer(x, positions, None, attention_mask)
    return self.value_head(self.final_norm(x))


def build_critic(reference, critic_layers: int = 2, seed: int = 0) -> ValueCritic:
  """A critic from (a copy of) the reference model's first `critic_layers` layers."""
  return ValueCritic(reference, critic_layers, rngs=nnx.Rngs(seed))


@dataclasses.dataclass(frozen=True)
class PPOSettings:
  """PPO-RLHF settings beyond the shared ones (steps, batch size, lengths, lr, β).

  Attributes:
    critic_layers: decoder layers copied from the reference into the critic.
    critic_learning_rate: Adam step size of the critic.
    epsilon: the policy's clip range (tunix's ε; symmetric).
    clip_range_value: the critic's value clip around the old values (tunix's default 0.2).
    gae_lambda, gamma: GAE's λ and γ.
    temperature: sampling temperature of the rollouts. Keep 1: tunix 0.1.7's PPO computes
      π_ref's log-probs at the rollout temperature but π_old's and π_θ's at 1, so at any other
      temperature the KL penalty is biased (≈ 0.009 nats/token on the tiny test model at 0.9,
      with π_θ = π_ref) and the ratio treats tempered samples as the untempered policy's.
  """

  critic_layers: int = 2
  critic_learning_rate: float = 1e-4
  epsilon: float = 0.2
  clip_range_value: float = 0.2
  gae_lambda: float = 0.95
  gamma: float = 1.0
  temperature: float = 1.0


# What each PPO step logs (tunix metric prefix, name) and the key it gets in our step records.
STEP_METRICS = {
    "reward": ("rewards", "score/mean"),
    "kl_ref": ("rewards", "reward_kl_penalty"),   # per-sequence mean k3 KL(π_old‖π_ref)
    "completion_length": ("generation", "completions/mean_length"),
    "policy_loss": ("actor", "loss"),
    "pg_clipfrac": ("actor", "pg_clipfrac"),
    "grad_norm": ("actor", "grad_norm"),
    "value_loss": ("critic", "loss"),
    "value_mean": ("critic", "vpred_mean"),
    "vf_clipfrac": ("critic", "vf_clipfrac"),
}


def single_device_mesh() -> jax.sharding.Mesh:
  """The (fsdp=1, tp=1) mesh tunix's cluster expects, on the first device."""
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))


def prompt_token_length(tokenizer, prompts: Sequence[str]) -> int:
  """Longest prompt in tokens, as tunix's sampler counts it (a BOS id prepended, deduplicated)."""
  adapter = tokenizer_adapter.TokenizerAdapter(tokenizer)
  bos = [adapter.bos_id()] if adapter.bos_id() else []
  return max(len(adapter.dedup_bos_ids(bos + list(adapter.encode(p)))) for p in prompts)


def step_records(logger, names: dict[str, tuple[str, str]], mode: str = "train") -> list[dict]:
  """Per-step dicts {our name: value} from a tunix metrics logger (metrics it lacks are left
  out)."""
  histories = {}
  for key, (prefix, metric) in names.items():
    if logger.metric_exists(prefix, metric, mode):
      histories[key] = np.asarray(logger.get_metric_history(prefix, metric, mode), np.float64)
  steps = max((len(h) for h in histories.values()), default=0)
  return [{"step": i + 1, **{k: float(h[i]) for k, h in histories.items() if i < len(h)}}
          for i in range(steps)]


def prompt_batches(prompts: Sequence[str], batch_size: int, steps: int, seed: int,
                   on_batch: Callable[[int], None] | None = None):
  """`steps` batches {"prompts": [...]} drawn without replacement, reshuffled every epoch.

  `on_batch(i)` is called before batch i is handed out: tunix pulls batch i + 1 only after
  step i's updates, so `on_batch(i)` with i ≥ 1 marks the end of step i (a progress hook).
  """
  if batch_size > len(prompts):
    raise ValueError(f"batch_size={batch_size} exceeds the {len(prompts)} prompts available")
  rng = np.random.default_rng(seed)
  order: list[int] = []
  for i in range(steps):
    if len(order) < batch_size:
      order += list(rng.permutation(len(prompts)))
    batch, order = order[:batch_size], order[batch_size:]
    if on_batch is not None:
      on_batch(i)
    yield {"prompts": np.asarray([prompts[j] for j in batch])}  # tunix treats lists as pytrees


def _reseeding(rollout_config, seed: int, on_step):
  """A batch hook giving batch i's rollouts the key fold_in(key(seed), i) (tunix's vanilla
  rollout samples every batch with the same `rollout_config.seed`, PRNGKey(0) when None), then
  calling `on_step(i)`."""
  def on_batch(i):
    rollout_config.seed = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    if on_step is not None:
      on_step(i)
  return on_batch


def train_ppo(policy, reference, tokenizer, prompts: Sequence[str], reward_fn: RewardFn, *,
              steps: int, batch_size: int, max_new_tokens: int, learning_rate: float,
              beta: float, seed: int, settings: PPOSettings = PPOSettings(),
              on_step: Callable[[int], None] | None = None) -> list[dict]:
  """Train `policy` in place with tunix's PPO learner; returns one metrics dict per step.

  Args:
    policy: a tunix Llama (trained in place).
    reference: a frozen copy of the initial policy (π_ref); the critic copies its first layers.
    tokenizer: the models' tokenizer (a Hugging Face tokenizer or tunix's).
    prompts: prompt strings (chat template already applied).
    reward_fn: tunix-style `reward_fn(prompts=..., completions=...) -> list[float]`.
    steps, batch_size: training steps and prompts per step (one completion each).
    max_new_tokens: completion length.
    learning_rate: the policy's Adam step size.
    beta: KL penalty coefficient (β·KL(π_old‖π_ref) subtracted from each token's reward).
    seed: seeds the prompt order, the rollouts' sampling and the critic's head.
    settings: critic and PPO details (`PPOSettings`).
    on_step: called with i before batch i is drawn (progress; see `prompt_batches`).

  Returns:
    [{"step", "reward", "kl_ref", "policy_loss", "value_loss", ...}] (see `STEP_METRICS`).
  """
  for name, value in (("steps", steps), ("batch_size", batch_size),
                      ("max_new_tokens", max_new_tokens)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"train_ppo: {name} must be a positive integer, got {name}={value!r}")
  if not learning_rate > 0 or not beta >= 0:
    raise ValueError(f"train_ppo: need learning_rate > 0 and beta >= 0, got "
                     f"learning_rate={learning_rate!r}, beta={beta!r}")
  critic = build_critic(reference, settings.critic_layers, seed)
  mesh = single_device_mesh()
  prompt_length = prompt_token_length(tokenizer, prompts)
  adapter = tokenizer_adapter.TokenizerAdapter(tokenizer)
  cluster = rlc.RLCluster(
      actor=policy, critic=critic, reference=reference, tokenizer=tokenizer,
      cluster_config=rlc.ClusterConfig(
          role_to_mesh={role: mesh for role in (rlc.Role.ACTOR, rlc.Role.CRITIC,
                                                rlc.Role.REFERENCE, rlc.Role.ROLLOUT)},
          rollout_engine="vanilla", offload_to_cpu=False,
          training_config=rlc.RLTrainingConfig(
              actor_optimizer=optax.adam(learning_rate),
              critic_optimizer=optax.adam(settings.critic_learning_rate),
              eval_every_n_steps=steps + 1, max_steps=steps),
          rollout_config=base_rollout.RolloutConfig(
              max_tokens_to_generate=max_new_tokens, max_prompt_length=prompt_length,
              kv_cache_size=prompt_length + max_new_tokens, temperature=settings.temperature,
              # a sampled pad id would read as padding (tunix masks ids == pad): stop there
              eos_tokens=sorted({adapter.eos_id(), adapter.pad_id()}))))
  config = ppo_learner.PPOConfig(
      beta=beta, epsilon=settings.epsilon, clip_range_value=settings.clip_range_value,
      gae_lambda=settings.gae_lambda, gamma=settings.gamma)
  learner = ppo_learner.PPOLearner(rl_cluster=cluster, ppo_config=config, reward_fns=reward_fn)
  learner.train(prompt_batches(prompts, batch_size, steps, seed,
                               _reseeding(cluster.cluster_config.rollout_config, seed, on_step)))
  # The cluster trains a resharded copy of `policy`: copy the trained weights back.
  nnx.update(policy, nnx.state(cluster.actor_trainer.model, nnx.Param))
  return step_records(cluster.actor_trainer.metrics_logger, STEP_METRICS)
