"""The library's group advantages as tunix advantage estimators (GRPO learner).

tunix's `GRPOLearner` looks its advantage estimator up by name
(`function_registry.get_advantage_estimator(config.advantage_estimator)`) and calls it as
`estimator(rewards=[B·G] numpy array, num_generations=G) -> [B·G]`, the G completions of a
prompt being consecutive; `GRPOConfig` does not restrict the name, so registering one is all it
takes (no learner subclass). Three choices, selectable by name through
`advantage_estimator_name(choice, k)`:

| choice | tunix name | advantage |
|---|---|---|
| `grpo` | `grpo` (tunix's own) | (R − mean R)/(std R + 1e-6), sample std |
| `pass_at_k` | `rgpo_pass_at_k{k}` | `advantages.pass_at_k_advantages(R, k)`: the closed form of arXiv 2508.10751 |
| `surrogate` | `rgpo_surrogate_pass_at_k{k}` | `advantages.surrogate_advantages(R, "pass_at_k", k)`: F(ρ) = 1 − (1 − ρ)^k, arXiv 2510.23049 |

Why F(ρ) = 1 − (1 − ρ)^k for the surrogate: it is the population pass@k of a prompt with
success probability ρ, the very number the evaluation reports, so its advantages ascend pass@k
itself, with ω(ρ̂) = k·ρ̂·(1 − ρ̂)^k up-weighting hard prompts and nearly ignoring solved ones.
The closed form instead normalises by the spread of its k-subset rewards (as GRPO divides by
σ̂), so the two differ in how they weight prompts, not in the target. Its advantages are smaller
than GRPO's (at ρ̂ = ½, k = 4: A_correct = 0.25 vs 1); under Adam a constant scale cancels, a
per-prompt one does not.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from rgpo_jax import advantages as adv
from rgpo_jax.rlhf_cli import ADVANTAGES  # the names, where the command line checks them
SURROGATE = "pass_at_k"  # the F(ρ) of the "surrogate" choice, a key of advantages.SURROGATES


def group_advantages(choice: str, k: int) -> Callable[[np.ndarray], np.ndarray]:
  """The advantage function of a choice on grouped binary rewards [P, G] → [P, G]."""
  if choice == "grpo":
    return lambda rewards: adv.grpo_advantages(rewards, eps=1e-6, ddof=1)
  if choice == "pass_at_k":
    return lambda rewards: adv.pass_at_k_advantages(rewards, k)
  if choice == "surrogate":
    return lambda rewards: adv.surrogate_advantages(rewards, SURROGATE, k)
  raise ValueError(f"unknown advantage {choice!r}; allowed: {', '.join(ADVANTAGES)}")


def as_tunix_estimator(fn: Callable[[np.ndarray], np.ndarray]):
  """`fn` on [P, G] rewards as a tunix estimator `(rewards [P·G], num_generations) -> [P·G]`."""
  def estimator(rewards, num_generations):
    grouped = np.asarray(rewards, np.float32).reshape(-1, num_generations)
    return np.asarray(fn(grouped), np.float32).reshape(-1)
  return estimator


def advantage_estimator_name(choice: str, k: int, num_generations: int) -> str:
  """Register (if needed) the estimator of `choice` with subset size k; return its tunix name.

  ValueError naming the value for an unknown choice or k outside [1, num_generations] (checked
  here, before any model is loaded, rather than inside the first training step).
  """
  from tunix.rl import function_registry  # pylint: disable=g-import-not-at-top
  if choice not in ADVANTAGES:
    raise ValueError(f"unknown advantage {choice!r}; allowed: {', '.join(ADVANTAGES)}")
  if choice == "grpo":
    return "grpo"
  if (not isinstance(k, (int, np.integer)) or isinstance(k, bool)
      or not 1 <= k <= num_generations):
    raise ValueError(f"advantage {choice!r}: k must be an integer in [1, num_generations="
                     f"{num_generations}], got k={k!r}")
  name = f"rgpo_pass_at_k{k}" if choice == "pass_at_k" else f"rgpo_surrogate_{SURROGATE}{k}"
  if name not in function_registry.default_registry.list_functions("advantage_estimator"):
    function_registry.register_advantage_estimator(name)(
        as_tunix_estimator(group_advantages(choice, int(k))))
  return name
