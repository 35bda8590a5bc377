"""`dpo`: offline DPO through tunix 0.1.7's `DPOTrainer`, on pairs from the reference's samples.

The pairs, built once per seed when the runner starts: every training prompt of the task gets
`num_generations` (≥ 2) completions sampled from the reference model (the evaluation's sampler,
the run's temperature and length, a key derived from the seed alone); the task's reward scores
them; the best-scored completion is "chosen" and the worst "rejected" (one pair per prompt; with
2 samples, the pair itself); a prompt whose best and worst scores tie gives no pair. With a run
folder they are saved as `pairs/seed<S>.jsonl` (token ids, texts and rewards), and a resumed
run reads them back instead of sampling again.

Each step trains on `batch_size` pairs drawn without replacement by a generator seeded with
(seed, step) (so a resumed run trains on what an uninterrupted one would), ignoring the step's
prompts and key: DPO never samples while training.

The loss (Rafailov et al. 2023, arXiv 2305.18290), as tunix computes it:
  L = −log σ(β·[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))])
with sequence log-probabilities summed over the completion's tokens; at π_θ = π_ref it is log 2
whatever the pair. β is the run's `beta`: in DPO's derivation it is the coefficient of the same
KL-regularised objective E[r] − β·KL(π‖π_ref) the online methods' penalty stands for.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rgpo_jax.rlhf import methods
from rgpo_jax.rlhf.methods import group

PAIRS_FOLDER = "pairs"
SAMPLING_BATCH = 32            # reference samples per sampler call (one compiled shape)
_PAIRS_STREAM, _ORDER_STREAM = 11, 12  # fold_in / generator tags, apart from the driver's


@dataclasses.dataclass(frozen=True)
class Sample:
  """One sampled completion: its token ids (no stop token, no padding), text and reward."""

  ids: list[int]
  text: str
  reward: float


def rank_pairs(prompts: Sequence[str], prompt_ids: Sequence[Sequence[int]],
               samples: Sequence[Sequence[Sample]]) -> list[dict[str, Any]]:
  """One (chosen = best, rejected = worst) pair per prompt; prompts whose scores tie are dropped.

  Args:
    prompts: prompt strings (as the model saw them).
    prompt_ids: each prompt's token ids (unpadded).
    samples: for each prompt, ≥ 2 scored completions.

  Returns:
    [{"prompt", "prompt_ids", "chosen", "chosen_ids", "chosen_reward", "rejected",
    "rejected_ids", "rejected_reward"}]; the first best and first worst win ties in a prompt.
  """
  pairs = []
  for prompt, ids, group_ in zip(prompts, prompt_ids, samples, strict=True):
    if len(group_) < 2:
      raise ValueError(f"rank_pairs: prompt {prompt!r} has {len(group_)} samples; need >= 2")
    rewards = [s.reward for s in group_]
    best, worst = group_[int(np.argmax(rewards))], group_[int(np.argmin(rewards))]
    if best.reward == worst.reward:
      continue
    pairs.append({"prompt": prompt, "prompt_ids": [int(t) for t in ids],
                  "chosen": best.text, "chosen_ids": [int(t) for t in best.ids],
                  "chosen_reward": float(best.reward),
                  "rejected": worst.text, "rejected_ids": [int(t) for t in worst.ids],
                  "rejected_reward": float(worst.reward)})
  return pairs


def _until(ids, stop: int) -> list[int]:
  """ids up to (without) the first `stop`."""
  ids = [int(t) for t in ids]
  return ids[:ids.index(stop)] if stop in ids else ids


def sample_groups(sampler, reference, batch: dict[str, list], reward_fn: Callable[..., list],
                  samples_per_prompt: int, key: jax.Array, temperature: float,
                  chunk: int = SAMPLING_BATCH) -> tuple[list[list[int]], list[list[Sample]]]:
  """(prompt ids, [[Sample] × samples_per_prompt] per prompt): the reference's completions.

  Args:
    sampler: an `evaluation.PolicySampler` (prompts left-padded to its length).
    reference: the model to sample from.
    batch: tunix's training input {"prompts": [...], **fields} (fields go to the reward).
    reward_fn: the task's reward (tunix's form).
    samples_per_prompt: completions per prompt.
    key: sampling key (chunk i samples with fold_in(key, i)).
    temperature: sampling temperature.
    chunk: rows per sampler call (the last chunk is padded with repeats: one compiled shape).
  """
  rows = [(i, r) for i in range(len(batch["prompts"])) for r in range(samples_per_prompt)]
  prompts = [batch["prompts"][i] for i, _ in rows]
  ids, texts, prompt_ids = [], [], []
  for n, start in enumerate(range(0, len(rows), chunk)):
    part = prompts[start:start + chunk]
    out = sampler.sample(reference, part + [part[-1]] * (chunk - len(part)),
                         jax.random.fold_in(key, n), temperature)
    for j in range(len(part)):
      # A pad id sampled mid-completion would read as padding downstream: it ends the completion.
      ids.append(_until(out.completion_ids[j], sampler.pad_id))
      texts.append(out.texts[j])
      row = [int(t) for t in out.prompt_ids[j]]
      prompt_ids.append(row[next((k for k, t in enumerate(row) if t != sampler.pad_id),
                                 len(row)):])  # strip the left padding only
  fields = {k: [v[i] for i, _ in rows] for k, v in batch.items() if k != "prompts"}
  rewards = reward_fn(prompts=prompts, completions=texts, **fields)
  k = samples_per_prompt
  groups = [[Sample(ids[r], texts[r], float(rewards[r])) for r in range(p * k, (p + 1) * k)]
            for p in range(len(batch["prompts"]))]
  return prompt_ids[::k], groups


def save_pairs(path: str, pairs: Sequence[dict[str, Any]]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(p) + "\n" for p in pairs)
  os.replace(tmp, path)  # a run killed mid-write leaves no half file to resume from


def load_pairs(path: str) -> list[dict[str, Any]]:
  """Pairs from a .jsonl file (ValueError naming the file and line if one is broken)."""
  pairs = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      try:
        pairs.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path!r} line {number} is not JSON ({e})") from None
  return pairs


def _pad_rows(rows, length: int, pad: int, left: bool) -> np.ndarray:
  out = np.full((len(rows), length), pad, np.int32)
  for i, row in enumerate(rows):
    row = list(row)[:length]
    if left:
      out[i, length - len(row):] = row
    else:
      out[i, :len(row)] = row
  return out


def pair_batch(pairs: Sequence[dict[str, Any]], prompt_length: int, completion_length: int,
               pad_id: int) -> dict[str, np.ndarray]:
  """tunix `DPOTrainer`'s tokenized input: prompts left-padded, completions right-padded, masks
  1 on real tokens, built from lengths (a pad id can also be a real token of a prompt)."""
  lengths = lambda key, n: np.array([min(len(p[key]), n) for p in pairs])[:, None]
  prompt_mask = np.arange(prompt_length)[None] >= prompt_length - lengths("prompt_ids",
                                                                          prompt_length)
  real = lambda key: (np.arange(completion_length)[None] < lengths(key, completion_length))
  rows = lambda key, n, left: _pad_rows([p[key] for p in pairs], n, pad_id, left)
  return {"prompt_ids": rows("prompt_ids", prompt_length, True),
          "prompt_mask": prompt_mask.astype(np.int32),
          "chosen_ids": rows("chosen_ids", completion_length, False),
          "chosen_mask": real("chosen_ids").astype(np.int32),
          "rejected_ids": rows("rejected_ids", completion_length, False),
          "rejected_mask": real("rejected_ids").astype(np.int32)}


def step_pairs(num_pairs: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of a step's pairs: without replacement (with, if there are fewer pairs than a
  batch), from a generator seeded by (seed, step) only."""
  rng = np.random.default_rng([seed, step, _ORDER_STREAM])
  return rng.choice(num_pairs, batch_size, replace=batch_size > num_pairs)


class DPORunner:
  """Offline DPO on one seed (see the module docstring and `methods.Runner`)."""

  def __init__(self, ctx: methods.MethodContext):
    from tunix.sft.dpo import dpo_trainer  # pylint: disable=import-outside-toplevel
    from rgpo_jax.rlhf import driver, evaluation  # pylint: disable=import-outside-toplevel
    cfg = self.cfg = ctx.config
    self.ctx, self._step = ctx, 0
    sampler = evaluation.PolicySampler(ctx.reference, ctx.tokenizer, ctx.max_prompt_length,
                                       cfg.max_new_tokens)
    self.pad_id = sampler.pad_id
    path = (None if ctx.out_dir is None
            else os.path.join(ctx.out_dir, PAIRS_FOLDER, f"seed{ctx.seed}.jsonl"))
    if path is not None and os.path.exists(path):
      self.pairs = load_pairs(path)
    else:
      batch = driver.training_input(ctx.task.train, ctx.tokenizer)
      key = jax.random.fold_in(jax.random.key(ctx.seed), _PAIRS_STREAM)
      prompt_ids, groups = sample_groups(sampler, ctx.reference, batch, ctx.task.reward_fn,
                                         cfg.num_generations, key, cfg.temperature)
      self.pairs = rank_pairs(batch["prompts"], prompt_ids, groups)
      if path is not None:
        save_pairs(path, self.pairs)
    if not self.pairs:
      raise ValueError(f"dpo: no preference pairs (seed {ctx.seed}): the {cfg.num_generations} "
                       "samples of every training prompt tied in reward")
    self.trainer = dpo_trainer.DPOTrainer(
        model=ctx.policy, ref_model=ctx.reference, optimizer=group.optimizer(cfg.learning_rate),
        training_config=dpo_trainer.DPOTrainingConfig(
            beta=cfg.beta, eval_every_n_steps=1 << 30, max_steps=None, pbar_description=None))
    self.trainer.is_managed_externally = True  # train() per step must not close the trainer
    self._records: list[dict[str, Any]] = []
    group._record_train_steps(self.trainer, self._records)  # pylint: disable=protected-access

  @property
  def policy(self):
    return self.trainer.model

  def step(self, batch: dict[str, list], key: jax.Array) -> dict[str, float]:
    del batch, key  # offline: the pairs were sampled once
    self._step += 1
    chosen = [self.pairs[i] for i in step_pairs(len(self.pairs), self.cfg.batch_size,
                                                self.ctx.seed, self._step)]
    self._records.clear()
    self.trainer.train([pair_batch(chosen, self.ctx.max_prompt_length, self.cfg.max_new_tokens,
                                   self.pad_id)])
    rewards = lambda side: [p[f"{side}_reward"] for p in chosen]
    return {"reward_mean": float(np.mean(rewards("chosen") + rewards("rejected"))),
            "chosen_reward": float(np.mean(rewards("chosen"))),
            "rejected_reward": float(np.mean(rewards("rejected"))),
            # tunix's aux: DPO's implicit rewards β·log π_θ/π_ref ("rewards/margin", ...)
            **{k if k in ("loss", "grad_norm") else f"dpo/{k}": v
               for k, v in group._mean_metrics(self._records).items()}}  # pylint: disable=protected-access

  def _trainers(self) -> dict[str, Any]:
    return {"actor": self.trainer}

  # Parameters and optimizer state as the group runner saves and restores them (same layout).
  def checkpoint_state(self) -> dict[str, Any]:
    return {"step": np.asarray(self._step, np.int32),  # int64 would come back as int32
            **group.TunixRunner.checkpoint_state(self)}  # type: ignore[arg-type]

  def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
    self._step = int(state["step"])
    group.TunixRunner.restore_checkpoint_state(self, state)  # type: ignore[arg-type]

  def close(self) -> None:
    self.trainer.close()


methods.register_method("dpo")(DPORunner)
