"""Tasks of `rgpo rlhf`: prompts plus a reward function (the task interface), and the default one.

A `Task` is
  name        how `--task` names it;
  train       the training prompts: a tuple of dicts {"prompt": user message, **fields};
  eval        the fixed evaluation prompts (same form), never trained on;
  reward_fn   tunix's form: `reward_fn(prompts=[...], completions=[...], **fields) -> [float]`,
              one float per completion; each field arrives as a list parallel to completions
              (tunix repeats batch fields with the prompts); ignore unknown keyword arguments
              (tunix adds e.g. `mode`);
  binary      True when every reward is 0 or 1 (a verifiable task): evaluations then also
              report pass@1 and pass@k (`tasks.pass_at_k`).

The driver wraps each "prompt" in the tokenizer's chat template (when it has one; the tiny test
vocabulary has none) and hands methods tunix's training input {"prompts": [...], **fields}.
Register a task with `register_task(name)(build)` and add its module to `TASK_MODULES`.

The default task, "sentiment" (`sentiment_task`): short, open-ended requests about everyday
subjects ("Write a sentence about the weather.") from committed templates (chatterbot-corpus is
not used: it is not installed here, and a committed list keeps runs reproducible), rewarded by
the VADER positivity of the completion (`rewards.vader_positivity`, in [−1, 1]). The evaluation
prompts use subjects that never occur in training.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from typing import Any, Callable, Mapping

TASK_MODULES = {"sentiment": "prompts", "arithmetic": "tasks"}

_REGISTRY: dict[str, Callable[[], "Task"]] = {}


@dataclasses.dataclass(frozen=True)
class Task:
  """Prompts and a reward function (see the module docstring)."""

  name: str
  train: tuple[Mapping[str, Any], ...]
  eval: tuple[Mapping[str, Any], ...]
  reward_fn: Callable[..., list[float]]
  binary: bool = False

  def __post_init__(self):
    for split in ("train", "eval"):
      examples = getattr(self, split)
      if not examples:
        raise ValueError(f"Task {self.name!r}: {split} holds no prompts")
      keys = {tuple(sorted(e)) for e in examples}
      if len(keys) != 1 or "prompt" not in next(iter(keys)):
        raise ValueError(f"Task {self.name!r}: every {split} example must be a dict with a "
                         f"'prompt' and the same fields, got key sets {sorted(keys)}")


def register_task(name: str):
  """Decorator: register `build() -> Task` under `name`."""

  def decorator(build):
    _REGISTRY[name] = build
    return build

  return decorator


def get_task(name: str) -> Task:
  """The task registered under `name` (its module imported on demand)."""
  if name not in _REGISTRY and name in TASK_MODULES:
    importlib.import_module(f"rgpo_jax.rlhf.{TASK_MODULES[name]}")
  if name not in _REGISTRY:
    raise ValueError(f"rgpo rlhf: unknown task {name!r}; allowed: "
                     f"{', '.join(sorted(set(TASK_MODULES) | set(_REGISTRY)))}")
  return _REGISTRY[name]()


# Requests whose answer can be cheerful or gloomy; {} is a subject.
TEMPLATES = (
    "Write a sentence about {}.",
    "Describe {} in one sentence.",
    "What do you think about {}?",
    "Tell me something about {}.",
    "Write a short review of {}.",
    "How was your experience with {}?",
    "Give me your honest opinion of {}.",
    "Write a tweet about {}.",
)
TRAIN_SUBJECTS = (
    "the weather", "your morning commute", "Mondays", "the city", "your neighbours",
    "the new phone", "the restaurant downtown", "homework", "the train station", "winter",
    "the hospital waiting room", "a rainy weekend", "the traffic", "your job", "the movie",
    "the old car", "the election", "taxes", "airports", "the football match",
)
EVAL_SUBJECTS = ("the dentist", "the office", "the news", "a long flight")


def _examples(subjects) -> tuple[dict[str, str], ...]:
  return tuple({"prompt": t.format(s)} for s, t in itertools.product(subjects, TEMPLATES))


@register_task("sentiment")
def sentiment_task() -> Task:
  """160 training prompts (20 subjects × 8 templates); 8 evaluation prompts (4 subjects unseen
  in training × the first 2 templates); reward: VADER positivity of the completion."""
  from rgpo_jax.rlhf import rewards  # pylint: disable=import-outside-toplevel
  eval_examples = tuple({"prompt": t.format(s)} for s in EVAL_SUBJECTS for t in TEMPLATES[:2])
  return Task("sentiment", _examples(TRAIN_SUBJECTS), eval_examples, rewards.vader_positivity)
