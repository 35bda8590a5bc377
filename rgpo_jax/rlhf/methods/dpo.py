"""Offline DPO through tunix 0.1.7's `DPOTrainer`, on preference pairs from the reference policy.

The pairs: every prompt gets `samples_per_prompt` (≥ 2) completions sampled from the reference
model (tunix's sampler, the online methods' temperature and length); the task's reward function
scores them; the best-scored completion is "chosen" and the worst "rejected" (one pair per
prompt; with 2 samples that is the pair itself); a prompt whose best and worst scores tie gives
no pair. The pairs are sampled once per seed and saved to `pairs.jsonl` (token ids and text),
so a resumed run trains on the same pairs without sampling again.

The loss (Rafailov et al. 2023, arXiv 2305.18290), as tunix computes it:
  L = −log σ(β·[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))])
with sequence log-probabilities summed over the completion's tokens; at π_θ = π_ref it is
log 2 whatever the pair. β here is DPO's own temperature (tunix's default 0.1), not the KL
penalty coefficient of the online methods.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Sequence

import jax
import numpy as np
import optax
from tunix.generate import sampler as sampler_lib
from tunix.generate import tokenizer_adapter
from tunix.sft.dpo import dpo_trainer

from rgpo_jax.rlhf.methods.ppo import prompt_token_length, step_records

RewardFn = Callable[..., list]

PAIRS_FILE = "pairs.jsonl"

# What each DPO step logs (tunix metric prefix "", name) and the key it gets in our records.
STEP_METRICS = {
    "loss": ("", "loss"),
    "reward_margin": ("", "rewards/margin"),          # β·(chosen − rejected log-ratio)
    "reward_accuracy": ("", "rewards/accuracy"),      # fraction with a positive margin
    "logp_chosen": ("", "log_probs/chosen"),
    "logp_rejected": ("", "log_probs/rejected"),
}


@dataclasses.dataclass(frozen=True)
class Sample:
  """One sampled completion: its token ids (no EOS, no padding), text and reward."""

  ids: list[int]
  text: str
  reward: float


def rank_pairs(prompts: Sequence[str], prompt_ids: Sequence[Sequence[int]],
               samples: Sequence[Sequence[Sample]]) -> list[dict]:
  """One (chosen = best, rejected = worst) pair per prompt; prompts whose scores tie are dropped.

  Args:
    prompts: prompt strings.
    prompt_ids: each prompt's token ids as the sampler fed them (unpadded).
    samples: for each prompt, ≥ 2 scored completions.

  Returns:
    [{"prompt", "prompt_ids", "chosen", "chosen_ids", "chosen_reward", "rejected", ...}]; the
    first best and the first worst win ties within a prompt.
  """
  pairs = []
  for prompt, ids, group in zip(prompts, prompt_ids, samples, strict=True):
    if len(group) < 2:
      raise ValueError(f"rank_pairs: prompt {prompt!r} has {len(group)} samples; need >= 2")
    rewards = [s.reward for s in group]
    best, worst = group[int(np.argmax(rewards))], group[int(np.argmin(rewards))]
    if best.reward == worst.reward:
      continue
    pairs.append({"prompt": prompt, "prompt_ids": [int(t) for t in ids],
                  "chosen": best.text, "chosen_ids": [int(t) for t in best.ids],
                  "chosen_reward": float(best.reward),
                  "rejected": worst.text, "rejected_ids": [int(t) for t in worst.ids],
                  "rejected_reward": float(worst.reward)})
  return pairs


def _strip_left_padding(row, pad: int) -> list[int]:
  """A left-padded row without its leading pads (only those: SmolLM2's pad id is also its
  <|im_end|>, which chat prompts contain)."""
  row = [int(t) for t in row]
  start = next((i for i, t in enumerate(row) if t != pad), len(row))
  return row[start:]


def sample_completions(model, tokenizer, prompts: Sequence[str], reward_fn: RewardFn, *,
                       samples_per_prompt: int, max_new_tokens: int, seed: int,
                       temperature: float = 0.9, batch_size: int = 16):
  """(prompt ids, [[Sample] per prompt]) from `model` with tunix's sampler, scored by
  `reward_fn`. Prompts are sampled `batch_size` rows at a time, each prompt's samples in a row
  block (rows differ in their sampling noise)."""
  length = prompt_token_length(tokenizer, prompts)
  config = model.config
  sampler = sampler_lib.Sampler(model, tokenizer, sampler_lib.CacheConfig(
      cache_size=length + max_new_tokens, num_layers=config.num_layers,
      num_kv_heads=config.num_kv_heads, head_dim=config.head_dim))
  pad = sampler.tokenizer.pad_id()
  # A sampled pad id would read as padding downstream (tunix masks ids == pad): it ends the
  # completion, like EOS.
  stop = sorted({sampler.tokenizer.eos_id(), pad})
  rows = [p for p in prompts for _ in range(samples_per_prompt)]
  ids, texts, prompt_rows = [], [], []
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    chunk += [chunk[-1]] * (batch_size - len(chunk))  # one compiled shape
    out = sampler(chunk, max_generation_steps=max_new_tokens, max_prompt_length=length,
                  eos_tokens=stop, temperature=temperature, top_p=1.0,  # None: greedy
                  seed=jax.random.fold_in(jax.random.PRNGKey(seed),
                                                                   start))
    keep = min(batch_size, len(rows) - start)
    ids += [list(map(int, t)) for t in out.tokens[:keep]]
    texts += list(out.text[:keep])
    prompt_rows += [_strip_left_padding(row, pad) for row in out.padded_prompt_tokens[:keep]]
  rewards = reward_fn(prompts=rows, completions=texts)
  k = samples_per_prompt
  groups = [[Sample(ids[i], texts[i], float(rewards[i])) for i in range(j * k, (j + 1) * k)]
            for j in range(len(prompts))]
  return prompt_rows[::k], groups


def preference_pairs(path: str | os.PathLike, reference, tokenizer, prompts: Sequence[str],
                     reward_fn: RewardFn, *, samples_per_prompt: int, max_new_tokens: int,
                     seed: int, temperature: float = 0.9) -> list[dict]:
  """The pairs saved at `path` if it exists (a resume), else sampled, ranked and saved there."""
  if os.path.exists(path):
    return load_pairs(path)
  prompt_ids, groups = sample_completions(reference, tokenizer, prompts, reward_fn,
                                          samples_per_prompt=samples_per_prompt,
                                          max_new_tokens=max_new_tokens, seed=seed,
                                          temperature=temperature)
  pairs = rank_pairs(prompts, prompt_ids, groups)
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for pair in pairs:
      f.write(json.dumps(pair) + "\n")
  os.replace(tmp, path)  # a run killed mid-write leaves no half file to resume from
  return pairs


def load_pairs(path: str | os.PathLike) -> list[dict]:
  """Pairs from a `pairs.jsonl` file (ValueError naming the file and line if one is broken)."""
  pairs = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      try:
        pairs.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{os.fspath(path)!r} line {number} is not JSON ({e})") from None
  return pairs


def _pad_rows(rows: Sequence[Sequence[int]], length: int, pad: int, left: bool) -> np.ndarray:
  out = np.full((len(rows), length), pad, np.int32)
  for i, row in enumerate(rows):
    row = list(row)[:length]
    if left:
      out[i, length - len(row):] = row
    else:
      out[i, :len(row)] = row
  return out


def pair_batch(pairs: Sequence[dict], prompt_length: int, completion_length: int,
               pad_id: int) -> dict[str, np.ndarray]:
  """tunix `DPOTrainer`'s tokenized input: prompts left-padded, completions right-padded, and
  masks that are 1 on real tokens."""
  rows = lambda key, length, left: _pad_rows([p[key] for p in pairs], length, pad_id, left)
  lengths = lambda key, length: np.array([min(len(p[key]), length) for p in pairs])
  positions = lambda length: np.arange(length)[None]
  # Masks from lengths, not from `ids != pad_id`: a pad id can also be a real token.
  prompt_mask = positions(prompt_length) >= prompt_length - lengths("prompt_ids", prompt_length)[:, None]
  real = lambda key: positions(completion_length) < lengths(key, completion_length)[:, None]
  return {"prompt_ids": rows("prompt_ids", prompt_length, True),
          "prompt_mask": prompt_mask.astype(np.int32),
          "chosen_ids": rows("chosen_ids", completion_length, False),
          "chosen_mask": real("chosen_ids").astype(np.int32),
          "rejected_ids": rows("rejected_ids", completion_length, False),
          "rejected_mask": real("rejected_ids").astype(np.int32)}


def pair_batches(pairs: Sequence[dict], batch_size: int, steps: int, seed: int, *,
                 completion_length: int, pad_id: int,
                 on_batch: Callable[[int], None] | None = None):
  """`steps` batches of `batch_size` pairs, without replacement, reshuffled every epoch."""
  if not pairs:
    raise ValueError("DPO has no preference pairs: every prompt's samples tied in reward")
  prompt_length = max(len(p["prompt_ids"]) for p in pairs)
  rng = np.random.default_rng(seed)
  order: list[int] = []
  for i in range(steps):
    while len(order) < batch_size:
      order += list(rng.permutation(len(pairs)))
    batch, order = order[:batch_size], order[batch_size:]
    if on_batch is not None:
      on_batch(i)
    yield pair_batch([pairs[j] for j in batch], prompt_length, completion_length, pad_id)


def train_dpo(policy, reference, tokenizer, prompts: Sequence[str], reward_fn: RewardFn, *,
              out_dir: str | os.PathLike, steps: int, batch_size: int, max_new_tokens: int,
              learning_rate: float, seed: int, dpo_beta: float = 0.1,
              samples_per_prompt: int = 2, temperature: float = 0.9,
              on_step: Callable[[int], None] | None = None) -> list[dict]:
  """Offline DPO: pairs from the reference's samples (saved in `out_dir`/pairs.jsonl), then
  `steps` tunix DPO steps on `policy` (in place); returns one metrics dict per step.

  Args:
    policy, reference: tunix Llamas; the reference samples the pairs and anchors the loss.
    tokenizer, prompts, reward_fn: as for the online methods.
    out_dir: folder of this seed's run (pairs.jsonl is read from / written there).
    steps, batch_size: training steps and pairs per step.
    max_new_tokens: completion length of the sampled pairs.
    learning_rate: Adam step size.
    seed: seeds the pairs' sampling and their order.
    dpo_beta: DPO's β (the loss's temperature; tunix's default 0.1).
    samples_per_prompt: completions sampled per prompt (≥ 2); best vs worst forms the pair.
    temperature: sampling temperature of the pairs.
    on_step: called with i before batch i is drawn (progress).

  Returns:
    [{"step", "loss", "reward_margin", "reward_accuracy", ...}] (see `STEP_METRICS`), and the
    pairs used are in `out_dir`/pairs.jsonl.
  """
  for name, value in (("steps", steps), ("batch_size", batch_size),
                      ("max_new_tokens", max_new_tokens)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"train_dpo: {name} must be a positive integer, got {name}={value!r}")
  if not isinstance(samples_per_prompt, int) or samples_per_prompt < 2:
    raise ValueError(f"train_dpo: samples_per_prompt must be an integer >= 2 (a pair needs two "
                     f"completions), got samples_per_prompt={samples_per_prompt!r}")
  if not learning_rate > 0 or not dpo_beta > 0:
    raise ValueError(f"train_dpo: need learning_rate > 0 and dpo_beta > 0, got "
                     f"learning_rate={learning_rate!r}, dpo_beta={dpo_beta!r}")
  os.makedirs(out_dir, exist_ok=True)
  pairs = preference_pairs(os.path.join(out_dir, PAIRS_FILE), reference, tokenizer, prompts,
                           reward_fn, samples_per_prompt=samples_per_prompt,
                           max_new_tokens=max_new_tokens, seed=seed, temperature=temperature)
  pad_id = tokenizer_adapter.TokenizerAdapter(tokenizer).pad_id()
  trainer = dpo_trainer.DPOTrainer(
      model=policy, ref_model=reference, optimizer=optax.adam(learning_rate),
      training_config=dpo_trainer.DPOTrainingConfig(
          beta=dpo_beta, eval_every_n_steps=steps + 1, max_steps=steps, pbar_description=None))
  trainer.train(pair_batches(pairs, batch_size, steps, seed, completion_length=max_new_tokens,
                             pad_id=pad_id, on_batch=on_step))
  return step_records(trainer.metrics_logger, STEP_METRICS)
