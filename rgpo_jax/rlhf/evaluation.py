"""One evaluation for every method: reward and KL to the reference on the policy's own samples.

At step 0, every `eval_every` steps and at the end, the driver samples `eval_samples`
completions for each fixed evaluation prompt from the current policy π_θ (temperature 1, no
top-p/top-k, the same key at every evaluation of a run: common random numbers across steps),
scores them with the task's reward, and estimates the KL to the reference as

    KL̂(π_θ‖π_ref) = mean over completions y ~ π_θ(·|x) of  Σ_t [log π_θ(y_t|x, y_<t) − log π_ref(y_t|x, y_<t)]

(the sequence-level k1 estimator: unbiased for the KL between the two distributions over
completions of at most `max_new_tokens` tokens; a single estimate can be negative). Log-probs
come from tunix's `compute_per_token_logps`, the function its learners train with; the stop
token is not part of a completion (tunix's sampler cuts completions before it), so the
probability of stopping is not counted, for any method alike.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass
class Completions:
  """Sampled completions: texts, and tunix's layout of their token ids (left-padded prompts
  [N, P], right-padded completions [N, T], completion mask [N, T])."""

  prompts: list[str]
  texts: list[str]
  prompt_ids: np.ndarray
  completion_ids: np.ndarray
  completion_mask: np.ndarray


class PolicySampler:
  """Samples completions from any model of one architecture (one compiled sampler).

  Args:
    model: a model of the architecture (its weights are replaced at every `sample`).
    tokenizer: the tokenizer (as tunix takes it).
    max_prompt_length: prompts are left-padded to this many tokens.
    max_new_tokens: completion length T.
  """

  def __init__(self, model, tokenizer, max_prompt_length: int, max_new_tokens: int):
    from tunix.generate import sampler as sampler_lib  # pylint: disable=import-outside-toplevel
    cfg = model.config
    self.max_prompt_length, self.max_new_tokens = max_prompt_length, max_new_tokens
    self.sampler = sampler_lib.Sampler(model, tokenizer, sampler_lib.CacheConfig(
        cache_size=max_prompt_length + max_new_tokens, num_layers=cfg.num_layers,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim))
    self.pad_id = self.sampler.tokenizer.pad_id()
    self.eos_id = self.sampler.tokenizer.eos_id()

  def sample(self, model, prompts: Sequence[str], key: jax.Array,
             temperature: float = 1.0) -> Completions:
    self.sampler.transformer_state = nnx.variables(model, nnx.Param)
    out = self.sampler(input_strings=list(prompts), max_generation_steps=self.max_new_tokens,
                       max_prompt_length=self.max_prompt_length, echo=False,
                       temperature=temperature, top_p=1.0, top_k=None, seed=key,
                       pad_output=False)
    completion_ids = np.full((len(prompts), self.max_new_tokens), self.pad_id, np.int32)
    for i, tokens in enumerate(out.tokens):
      completion_ids[i, :len(tokens)] = np.asarray(tokens)[:self.max_new_tokens]
    return Completions(list(prompts), list(out.text), np.asarray(out.padded_prompt_tokens),
                       completion_ids, completion_ids != self.pad_id)


@functools.lru_cache(maxsize=8)
def _logps_fn(graphdef, pad_id: int, eos_id: int):
  from tunix.rl import common  # pylint: disable=import-outside-toplevel

  @jax.jit
  def logps(state, prompt_ids, completion_ids):
    return common.compute_per_token_logps(graphdef, state, prompt_tokens=prompt_ids,
                                          completion_tokens=completion_ids, pad_id=pad_id,
                                          eos_id=eos_id, stop_gradient=True)

  return logps


def per_token_logps(model, completions: Completions, pad_id: int, eos_id: int) -> np.ndarray:
  """log π(y_t | x, y_<t) of the completion tokens [N, T] (0 where masked)."""
  graphdef, state = nnx.split(model)
  logps = _logps_fn(graphdef, pad_id, eos_id)(state, jnp.asarray(completions.prompt_ids),
                                              jnp.asarray(completions.completion_ids))
  return np.where(completions.completion_mask, np.asarray(logps, np.float64), 0.0)


@dataclasses.dataclass
class Evaluation:
  """Per-completion rewards and KL estimates [N], with the completions they score."""

  completions: Completions
  rewards: np.ndarray
  kl: np.ndarray
  cpu_seconds: float | None = None  # the driver's measurement of this evaluation

  @property
  def reward_mean(self) -> float:
    return float(np.mean(self.rewards))

  @property
  def kl_mean(self) -> float:
    return float(np.mean(self.kl))

  def records(self) -> list[dict[str, Any]]:
    c = self.completions
    return [{"prompt": p, "completion": t, "reward": float(r), "kl": float(k),
             "tokens": int(m.sum())}
            for p, t, r, k, m in zip(c.prompts, c.texts, self.rewards, self.kl,
                                     c.completion_mask)]


def evaluate(sampler: PolicySampler, policy, reference, prompts: Sequence[str],
             fields: dict[str, list], reward_fn: Callable[..., list[float]], key: jax.Array,
             samples_per_prompt: int) -> Evaluation:
  """Reward and KL̂(π_θ‖π_ref) (module docstring) of `samples_per_prompt` completions per prompt."""
  repeat = lambda values: [v for v in values for _ in range(samples_per_prompt)]
  completions = sampler.sample(policy, repeat(prompts), key)
  logp = per_token_logps(policy, completions, sampler.pad_id, sampler.eos_id)
  logp_ref = per_token_logps(reference, completions, sampler.pad_id, sampler.eos_id)
  rewards = reward_fn(prompts=completions.prompts, completions=completions.texts,
                      **{k: repeat(v) for k, v in fields.items()})
  return Evaluation(completions, np.asarray(rewards, np.float64), (logp - logp_ref).sum(-1))
