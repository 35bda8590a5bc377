"""Verifiable tasks for RL on language models: templated arithmetic with an exact-answer reward,
and the unbiased pass@k estimator.

A task (`rgpo_jax.rlhf.prompts.Task`) is prompts plus a reward function in tunix's form,
`reward_fn(prompts=[...], completions=[...], **batch_fields) -> list[float]`; here every
prompt carries its `answer` as a batch field (tunix repeats batch fields with the prompts).
Importing this module registers the task "arithmetic" (`arithmetic_task`) for `rgpo rlhf
--task arithmetic`. Everything here is plain Python / numpy: no model, no tunix.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

from rgpo_jax.rlhf import prompts as task_registry

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
DEFAULT_TEMPLATE = "What is {a} {op} {b}? Answer with the number only."


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
  """Problems "What is a ∘ b?" with a, b drawn uniformly from [low, high] (inclusive).

  Attributes:
    low, high: operand range (integers, low ≤ high).
    operations: operators drawn uniformly per problem, from "+", "-", "*".
    template: a format string with fields {a}, {op}, {b}.
  """

  low: int = 0
  high: int = 9
  operations: tuple[str, ...] = ("+",)
  template: str = DEFAULT_TEMPLATE

  def __post_init__(self):
    for name in ("low", "high"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"ArithmeticTask: {name} must be an integer, got {name}={value!r}")
    if self.low > self.high:
      raise ValueError(f"ArithmeticTask: needs low <= high, got low={self.low}, high={self.high}")
    bad = [op for op in self.operations if op not in OPERATIONS]
    if not self.operations or bad:
      raise ValueError(f"ArithmeticTask: operations must be a non-empty subset of "
                       f"{sorted(OPERATIONS)}, got operations={self.operations!r}")
    try:
      self.template.format(a=1, op="+", b=2)
    except (KeyError, IndexError, ValueError) as e:
      raise ValueError(f"ArithmeticTask: template may use only the fields {{a}}, {{op}}, {{b}}, "
                       f"got template={self.template!r} ({e!r})") from None

  def problems(self, count: int, seed: int) -> list[dict]:
    """`count` problems from a seeded generator: dicts {"question", "answer", "a", "op", "b"}.

    The same (task, count, seed) always gives the same problems (numpy's PCG64)."""
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
      raise ValueError(f"ArithmeticTask.problems: count must be a positive integer, got "
                       f"count={count!r}")
    rng = np.random.default_rng(seed)
    a = rng.integers(self.low, self.high + 1, count)
    b = rng.integers(self.low, self.high + 1, count)
    ops = rng.choice(len(self.operations), count)
    out = []
    for ai, bi, oi in zip(a.tolist(), b.tolist(), ops.tolist()):
      op = self.operations[oi]
      out.append({"question": self.template.format(a=ai, op=op, b=bi),
                  "answer": OPERATIONS[op](ai, bi), "a": ai, "op": op, "b": bi})
    return out

  def split(self, eval_count: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval): every distinct problem of the task, shuffled by `seed`; the first
    `eval_count` are the evaluation problems, the others the training ones (disjoint)."""
    size = (self.high - self.low + 1) ** 2 * len(self.operations)
    if size > 1_000_000:
      raise ValueError(f"ArithmeticTask.split: enumerates every problem, {size} is too many; "
                       f"narrow [low, high] = [{self.low}, {self.high}]")
    if not isinstance(eval_count, int) or not 0 < eval_count < size:
      raise ValueError(f"ArithmeticTask.split: eval_count must be in [1, {size - 1}] (the task "
                       f"has {size} problems), got eval_count={eval_count!r}")
    operands = range(self.low, self.high + 1)
    problems = [{"question": self.template.format(a=a, op=op, b=b),
                 "answer": OPERATIONS[op](a, b), "a": a, "op": op, "b": b}
                for op in self.operations for a in operands for b in operands]
    order = np.random.default_rng(seed).permutation(size)
    shuffled = [problems[i] for i in order]
    return shuffled[eval_count:], shuffled[:eval_count]


ARITHMETIC = ArithmeticTask(low=0, high=9, operations=("+",))
ARITHMETIC_EVAL_PROBLEMS = 32
ARITHMETIC_SPLIT_SEED = 0


@task_registry.register_task("arithmetic")
def arithmetic_task() -> task_registry.Task:
  """One-digit addition ("What is 3 + 8? Answer with the number only."): the 100 problems of
  [0, 9]², 32 held out for evaluation, 68 for training; reward `exact_answer_reward` (binary,
  so evaluations also report pass@k). Operands in [0, 9] because SmolLM2-135M-Instruct solves
  them sometimes, not always: measured pass@1 ≈ 0.10 at temperature 1 (docs/rlhf.md)."""
  train, evaluation = ARITHMETIC.split(ARITHMETIC_EVAL_PROBLEMS, ARITHMETIC_SPLIT_SEED)
  example = lambda p: {"prompt": p["question"], "answer": p["answer"]}
  return task_registry.Task("arithmetic", tuple(map(example, train)),
                            tuple(map(example, evaluation)), exact_answer_reward, binary=True)


# An optional minus sign (ASCII or U+2212) directly before the digits, then an optional
# fractional part; thousands separators are not read (operands here are small).
_NUMBER = re.compile(r"[-\u2212]?\d+(?:\.\d+)?")


def first_number(completion: str) -> float | None:
  """The first number written in `completion`, or None if it has none.

  Whitespace, markdown and punctuation around it are ignored (" **71**.", "71!", "= 71");
  "-5" and "−5" read as −5, "71.0" as 71.0, "71." as 71.
  """
  match = _NUMBER.search(completion)
  if match is None:
    return None
  return float(match.group().replace("\u2212", "-"))


def exact_answer_reward(prompts: Sequence[str], completions: Sequence[str], answer: Sequence,
                        **kwargs) -> list[float]:
  """1.0 where the first number in the completion equals the answer exactly, else 0.0.

  tunix's reward-function form; `answer` is the batch field of `ArithmeticTask.problems`. Only
  the first number counts, so "23 + 48 = 71" scores 0 against 71 (the prompt asks for the
  number only) and a completion without a number scores 0.
  """
  del prompts, kwargs
  if len(answer) != len(completions):
    raise ValueError(f"exact_answer_reward: {len(completions)} completions but {len(answer)} "
                     f"answers")
  rewards = []
  for text, target in zip(completions, answer):
    value = first_number(text)
    rewards.append(float(value is not None and value == float(target)))
  return rewards


def pass_at_k(n, c, k: int) -> np.ndarray:
  """Unbiased pass@k estimate from c correct out of n samples (Chen et al., arXiv 2107.03374).

      pass@k = 1 − C(n−c, k)/C(n, k) = 1 − ∏_{i=n−c+1}^{n} (1 − k/i)

  (the product form avoids huge binomials); it is the probability that a k-subset drawn without
  replacement from the n samples holds at least one correct sample, 1 when n − c < k.

  Args:
    n: samples per problem (int or integer array, n ≥ k).
    c: correct samples per problem (integer array broadcastable with n, 0 ≤ c ≤ n).
    k: subset size, integer ≥ 1.

  Returns:
    float64 array of the broadcast shape of n and c.
  """
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
    raise ValueError(f"pass_at_k: k must be an integer >= 1, got k={k!r}")
  n, c = np.broadcast_arrays(np.asarray(n), np.asarray(c))
  if not (np.issubdtype(n.dtype, np.integer) and np.issubdtype(c.dtype, np.integer)):
    raise ValueError(f"pass_at_k: n and c must be integers, got dtypes {n.dtype}, {c.dtype}")
  if np.any(n < k):
    raise ValueError(f"pass_at_k: needs n >= k, got n={int(n.min())} < k={k}")
  if np.any((c < 0) | (c > n)):
    raise ValueError(f"pass_at_k: needs 0 <= c <= n, got c in [{int(c.min())}, {int(c.max())}]")
  out = np.empty(n.shape, np.float64)
  for idx in np.ndindex(n.shape):
    ni, ci = int(n[idx]), int(c[idx])
    if ni - ci < k:
      out[idx] = 1.0
    else:
      out[idx] = 1.0 - math.prod(1.0 - k / i for i in range(ni - ci + 1, ni + 1))
  return out


def pass_at_k_of_rewards(rewards, k: int) -> float:
  """Mean unbiased pass@k over problems from binary rewards [problems, n] (1 = correct)."""
  rewards = np.asarray(rewards)
  if rewards.ndim != 2:
    raise ValueError(f"pass_at_k_of_rewards: rewards must be [problems, n], got shape "
                     f"{rewards.shape}")
  correct = (rewards > 0.5).sum(axis=1)
  return float(np.mean(pass_at_k(rewards.shape[1], correct, k)))
