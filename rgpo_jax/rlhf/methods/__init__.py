"""The RLHF methods `rgpo rlhf` compares, behind one small interface (a name → runner registry).

The driver (`rgpo_jax.rlhf.driver`) owns everything that must be the same for every method: the
models it starts from, the prompts of each step, the sampling keys, evaluation (reward and KL to
the reference on a fixed prompt set, one estimator for all), files, checkpoints and Ctrl-C. A
method only turns one batch of prompts into one policy update. To add one:

    from rgpo_jax.rlhf import methods

    @methods.register_method("my_method")
    def build(ctx: methods.MethodContext) -> methods.Runner:
      return MyRunner(ctx)

and add the module to `METHOD_MODULES` (so that `get_method` imports it on demand) and the name
to `rgpo_jax.rlhf_cli.METHODS` (so that the command line accepts it before any model is loaded).

`MethodContext` (what a method is built from):
  name         the method name it was built for ("grpo", "rgpo_dual", ...);
  policy       the trainable tunix model (a `nnx.Module`); the runner may update it in place;
  reference    a frozen copy of the initial policy (separate variables): never updated;
  tokenizer    the tokenizer the models were loaded with (tunix takes it as given);
  task         the `Task` (its `reward_fn`, in tunix's form);
  config       the run's `RLHFConfig` (sizes, learning rate, β, temperature, ...);
  seed         the run's seed (for anything the method initialises at random, e.g. a critic);
  mesh         a one-device `jax.sharding.Mesh` with axes ("fsdp", "tp"), for tunix's cluster;
  max_prompt_length   prompts are left-padded to this many tokens (a power of 2);
  out_dir      the run folder (None: write nothing), for files a method keeps across a resume
               (`dpo`'s preference pairs).

`Runner` (what a method provides; see the Protocol below for the exact signatures):
  step(batch, key) -> dict[str, float]
      one training step (one or more optimizer updates) on `batch`, tunix's training input:
      {"prompts": [B prompt strings, chat template already applied], **fields} where each
      field is a list of B values the reward function takes as keyword arguments. `key` is
      the step's sampling key (a typed JAX key): the driver derives it from (seed, step), so
      that a resumed run samples what an uninterrupted one would. Returns host floats:
      "reward_mean" (mean reward of the completions the step trained on, or of the pairs it
      used) and "loss" are required; anything else (e.g. "pg_loss", "gate/weight_mean",
      "kl") is written to metrics.jsonl as it is.
  policy -> nnx.Module
      the current policy; the driver samples from it and scores it for evaluation.
  checkpoint_state() -> pytree / restore_checkpoint_state(state)
      every array that changes during training (policy parameters, optimizer state, a
      critic ...), as a pytree of arrays (e.g. `nnx.to_pure_dict(nnx.state(...))`); the
      driver saves it with `rgpo_jax.training.checkpoint` and restores it into a freshly
      built runner before its first step.
  close()
      release resources (called once, also after an error or Ctrl-C).

`Task` is in `rgpo_jax.rlhf.task` (prompts + reward function).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Protocol

import jax

# Method name → module of this package that registers it (imported on demand by `get_method`).
METHOD_MODULES = {
    "rgpo_dual": "group", "rgpo_sigmoid": "group", "grpo": "group",
    "ppo": "ppo", "dpo": "dpo",
}

_REGISTRY: dict[str, Callable[["MethodContext"], "Runner"]] = {}


@dataclasses.dataclass
class MethodContext:
  """What a method's runner is built from (see the module docstring)."""

  name: str
  policy: Any
  reference: Any
  tokenizer: Any
  task: Any
  config: Any
  seed: int
  mesh: jax.sharding.Mesh
  max_prompt_length: int
  out_dir: str | None = None


class Runner(Protocol):
  """One method's training on one seed (see the module docstring)."""

  def step(self, batch: dict[str, list], key: jax.Array) -> dict[str, float]:
    ...

  @property
  def policy(self) -> Any:
    ...

  def checkpoint_state(self) -> Any:
    ...

  def restore_checkpoint_state(self, state: Any) -> None:
    ...

  def close(self) -> None:
    ...


def register_method(name: str):
  """Decorator: register `build(ctx: MethodContext) -> Runner` under `name`."""

  def decorator(build):
    _REGISTRY[name] = build
    return build

  return decorator


def get_method(name: str) -> Callable[[MethodContext], Runner]:
  """The runner factory registered under `name`, importing its module on demand.

  Raises:
    ValueError: unknown name (the message lists the known ones).
    NotImplementedError: a known method whose module is not written yet.
  """
  if name not in _REGISTRY:
    if name not in METHOD_MODULES:
      raise ValueError(f"rgpo rlhf: unknown method {name!r}; allowed: "
                       f"{', '.join(sorted(set(METHOD_MODULES) | set(_REGISTRY)))}")
    module = f"{__name__}.{METHOD_MODULES[name]}"
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name != module:
        raise
      raise NotImplementedError(f"rgpo rlhf: method {name!r} is not implemented yet (module "
                                f"{module} is missing)") from None
    if name not in _REGISTRY:
      raise NotImplementedError(f"rgpo rlhf: module {module} does not register method {name!r}")
  return _REGISTRY[name]
