"""Training configuration: static settings, traced hyperparameters, validation before compile.

`TrainConfig` is one frozen dataclass. Fields split in two kinds:
- static (shapes, env, algorithm family, switches): fixed in the compiled program;
- sweepable (`SWEEPABLE`: gate parameters, learning rate, coefficients, γ, λ, TRPO's KL radius,
  AWR's temperature): passed to the compiled program as traced arrays (`HParams`), so one
  program trains many settings via vmap.

An algorithm is an update rule plus, where the rule has one, a gate: every name in `ALGOS` is
a gate used by the gated minibatch-epochs rule (PPO-style); `trpo` is the natural-gradient rule
(its surrogate is the gate named by `trpo_gate`) and `awr` the weighted-regression rule
(`UPDATE_RULE_ALGOS`; the rules are `rgpo_jax.training.update_rules`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax import gates
from rgpo_jax.training import gate_width

# algo -> (gate family, config fields that are its parameters). `rgpo` is the pessimistic sigmoid:
# the paper's plain sigmoid (`rgpo_sigmoid`) collapsed at every k where PPO learns (Pendulum-v1,
# issue 10 settings, 3 seeds × 1e6 steps: −1.1e3 to −1.5e3, KL-spike rate 1.0, against PPO −157;
# the pessimistic sigmoid k = 4: −157, spike rate 0.02; experiments/kl_stability).
ALGOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rgpo": ("pessimistic_sigmoid", ("k",)),
    "ppo": ("ppo_clip", ("epsilon",)),
    "importance": ("importance", ()),
    "reinforce": ("reinforce", ()),
    "sapo": ("sapo", ("tau", "tau_neg")),
    "erf": ("erf", ("tau", "tau_neg")),
    "arctan": ("arctan", ("tau", "tau_neg")),
    "softsign": ("softsign", ("tau", "tau_neg")),
    "truncated": ("truncated", ("low", "high")),
    "rgpo_sigmoid": ("sigmoid", ("k",)),
    "rgpo_pessimistic": ("pessimistic_sigmoid", ("k",)),  # the same gate as rgpo
    # Issue-12 gates that fit the gated minibatch rule (per-sample weights, no batch statistic).
    "dual_clip": ("dual_clip", ("epsilon", "dual_clip_c")),
    "cispo": ("cispo", ("epsilon",)),
    "dpo_drift": ("dpo_drift", ("dpo_alpha", "dpo_beta")),
}

# Algorithms that are an update rule of their own (every other algo is a gate of "gated").
UPDATE_RULE_ALGOS: dict[str, str] = {"trpo": "natural_gradient", "awr": "weighted_regression"}

# Every accepted `algo`.
ALL_ALGOS: tuple[str, ...] = (*ALGOS, *UPDATE_RULE_ALGOS)

# update rule -> config fields that are its traced (sweepable) hyperparameters (`HParams.rule`).
RULE_HPARAMS: dict[str, tuple[str, ...]] = {
    "gated": (),
    "natural_gradient": ("max_kl", "cg_damping"),
    "weighted_regression": ("awr_beta", "awr_max_weight"),
}

# Fields that a sweep may vary (traced in the compiled program).
SWEEPABLE = ("k", "epsilon", "tau", "tau_neg", "low", "high", "dual_clip_c", "dpo_alpha",
             "dpo_beta", "lr", "ent_coef", "vf_coef", "max_grad_norm", "gamma", "gae_lambda",
             "value_clip_epsilon", "max_kl", "cg_damping", "awr_beta", "awr_max_weight",
             "target_kl")
GATE_FIELDS = ("k", "epsilon", "tau", "tau_neg", "low", "high", "dual_clip_c", "dpo_alpha",
               "dpo_beta")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a training run (defaults: PureJaxRL's CartPole PPO settings).

  Environment:
    env: Gymnax id (e.g. "CartPole-v1", "Breakout-MinAtar") or "brax:<name>".
    env_kwargs: extra keyword arguments for the environment constructor.
    normalize_obs: running mean/var observation normalisation (off for Gymnax by default).
  Algorithm (the gate, or an update rule of its own):
    algo: one of `ALL_ALGOS`: a gate of `ALGOS` (gated minibatch epochs), "trpo" or "awr";
      k (rgpo sharpness), epsilon (ppo, dual_clip and cispo clip), tau / tau_neg (sapo, erf,
      arctan, softsign temperatures; None = family default), low / high (truncated band),
      dual_clip_c (dual-clip PPO's bound c > 1 on r for Â < 0, arXiv 1912.09729: w = 0 beyond
      c), dpo_alpha / dpo_beta (Discovered PO's drift scales, arXiv 2210.05639). cispo is
      CISPO's detached weight sg(clip(r, 1−ε, 1+ε)) on ∇log π (arXiv 2506.13585).
  TRPO (algo "trpo", `update_rules.natural_gradient`):
    trpo_gate: the surrogate's gate, a name of `ALGOS` ("importance" = TRPO's own r·Â; "rgpo"
      puts RGPO's pessimistic sigmoid, "rgpo_sigmoid" the paper's plain one, inside the trust
      region; its parameters are the fields above).
    max_kl: trust-region radius on the mean KL(π_old‖π_new) (> 0).
    cg_iters, cg_damping: conjugate-gradient iterations (>= 1) and Fisher damping (>= 0).
    backtrack_iters, backtrack_coef: line-search trials (>= 1) and step shrink factor in (0, 1).
    The value function is fitted by update_epochs × num_minibatches Adam steps (lr); the policy
    ignores lr, ent_coef and max_grad_norm.
  AWR (algo "awr", `update_rules.weighted_regression`):
    awr_beta: temperature β > 0 of the weights exp(Â/β) (on normalised Â if
      normalize_advantages); awr_max_weight: the weight clip w_max > 0.
  Rollout / optimisation:
    num_envs, num_steps: parallel environments and steps per rollout (batch = their product).
    total_steps: environment steps per run; updates = total_steps // (num_envs·num_steps).
    update_epochs, num_minibatches: passes over each batch and minibatches per pass.
    lr, anneal_lr: Adam learning rate, linearly annealed to 0 over training if set.
    gamma, gae_lambda: discount and GAE λ.
    ent_coef, vf_coef: entropy bonus and value-loss coefficients.
    max_grad_norm: global gradient-norm clip (0 or less disables it).
    clip_value, value_clip_epsilon: PPO-style value clipping.
    normalize_advantages: per-minibatch advantage normalisation.
  Network: hidden (widths), activation, init_log_std (initial log-std of the Gaussian policy,
    continuous actions only).
  Adaptive gate width (`rgpo_jax.training.gate_width`):
    target_kl: None (default) keeps the gate's width fixed; a value > 0 steers k (sigmoid
      families, normalised to keep w(1) = k₀/4) or ε (ppo) between updates towards this
      post-update approx KL(π_old‖π_new); the width is carried in `TrainState.gate_width`.
  Diagnostics: kl_spike_threshold (a KL spike is approx KL(π_old‖π_new) > threshold).
  Host loop: updates_per_chunk (updates per compiled chunk; 0 = automatic, a divisor of the
    number of updates near 1/20 of it).
  """

  env: str = "CartPole-v1"
  env_kwargs: tuple[tuple[str, Any], ...] = ()
  normalize_obs: bool = False
  algo: str = "rgpo"
  k: float = 4.0
  epsilon: float = 0.2
  tau: float | None = None
  tau_neg: float | None = None
  low: float = 0.5
  high: float = 2.0
  dual_clip_c: float = 3.0
  dpo_alpha: float = 2.0
  dpo_beta: float = 0.6
  trpo_gate: str = "importance"
  max_kl: float = 0.01
  cg_iters: int = 10
  cg_damping: float = 0.1
  backtrack_iters: int = 10
  backtrack_coef: float = 0.8
  awr_beta: float = 1.0
  awr_max_weight: float = 20.0
  num_envs: int = 4
  num_steps: int = 128
  total_steps: int = 500_000
  update_epochs: int = 4
  num_minibatches: int = 4
  lr: float = 2.5e-4
  anneal_lr: bool = True
  gamma: float = 0.99
  gae_lambda: float = 0.95
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5
  clip_value: bool = True
  value_clip_epsilon: float = 0.2
  normalize_advantages: bool = True
  hidden: tuple[int, ...] = (64, 64)
  activation: str = "tanh"
  init_log_std: float = 0.0
  kl_spike_threshold: float = 0.04
  target_kl: float | None = None
  updates_per_chunk: int = 0

  # ------------------------------------------------------------------------------------------
  @property
  def batch_size(self) -> int:
    return self.num_envs * self.num_steps

  @property
  def minibatch_size(self) -> int:
    return self.batch_size // self.num_minibatches

  @property
  def num_updates(self) -> int:
    return self.total_steps // self.batch_size

  @property
  def update_rule(self) -> str:
    """The update rule's name: "gated", "natural_gradient" (trpo) or "weighted_regression"."""
    return UPDATE_RULE_ALGOS.get(self.algo, "gated")

  @property
  def gate_algo(self) -> str | None:
    """The `ALGOS` entry whose gate the rule uses (trpo: `trpo_gate`; awr: None, no gate)."""
    if self.algo == "trpo":
      return self.trpo_gate
    return self.algo if self.algo in ALGOS else None

  @property
  def gate_family(self) -> str | None:
    return ALGOS[self.gate_algo][0] if self.gate_algo is not None else None

  @property
  def chunk_size(self) -> int:
    """Updates per compiled chunk (see `updates_per_chunk`)."""
    if self.updates_per_chunk > 0:
      return min(self.updates_per_chunk, self.num_updates)
    return auto_chunk_size(self.num_updates)

  def replace(self, **changes) -> "TrainConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["env_kwargs"] = dict(self.env_kwargs)
    d["hidden"] = list(self.hidden)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
    d = dict(d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown config fields {unknown}")
    if "env_kwargs" in d:
      d["env_kwargs"] = tuple(sorted(dict(d["env_kwargs"]).items()))
    if "hidden" in d:
      d["hidden"] = tuple(int(h) for h in d["hidden"])
    return cls(**d)

  # ------------------------------------------------------------------------------------------
  def gate_params(self) -> dict[str, float]:
    """The gate family's keyword parameters for `gates.make` (family defaults filled in)."""
    family = self.gate_family
    if family is None:
      return {}
    if family in ("sigmoid", "pessimistic_sigmoid"):
      return {"k": self.k}
    if family in ("ppo_clip", "cispo"):
      return {"epsilon": self.epsilon}
    if family == "dual_clip":
      return {"epsilon": self.epsilon, "c": self.dual_clip_c}
    if family == "dpo_drift":
      return {"alpha": self.dpo_alpha, "beta": self.dpo_beta}
    if family == "sapo":
      return {"tau_pos": 1.0 if self.tau is None else self.tau,
              "tau_neg": 1.05 if self.tau_neg is None else self.tau_neg}
    if family in ("erf", "arctan", "softsign"):
      tau = 1.0 if self.tau is None else self.tau
      return {"tau": tau, "tau_neg": tau if self.tau_neg is None else self.tau_neg}
    if family == "truncated":
      return {"low": self.low, "high": self.high}
    return {}

  def validate(self) -> "TrainConfig":
    """Check every field; raise ValueError naming the bad value and what is allowed."""
    from rgpo_jax.envs import check_env_name
    from rgpo_jax.networks import ACTIVATIONS
    if self.algo not in ALL_ALGOS:
      raise ValueError(f"unknown algo {self.algo!r}; allowed: {', '.join(ALL_ALGOS)}")
    if self.trpo_gate not in ALGOS:
      raise ValueError(f"unknown trpo_gate {self.trpo_gate!r} (the gate of TRPO's surrogate); "
                       f"allowed: {', '.join(ALGOS)}")
    check_env_name(self.env)
    for name in ("num_envs", "num_steps", "total_steps", "update_epochs", "num_minibatches",
                 "cg_iters", "backtrack_iters"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")
    if self.batch_size % self.num_minibatches:
      raise ValueError(
          f"num_minibatches={self.num_minibatches} must divide the batch num_envs×num_steps = "
          f"{self.num_envs}×{self.num_steps} = {self.batch_size}")
    if self.num_updates < 1:
      raise ValueError(f"total_steps={self.total_steps} must be at least one batch "
                       f"(num_envs×num_steps = {self.batch_size})")
    if self.updates_per_chunk < 0:
      raise ValueError(f"updates_per_chunk must be >= 0 (0 = automatic), got "
                       f"{self.updates_per_chunk!r}")
    _in_range("lr", self.lr, lambda v: v > 0, "> 0")
    _in_range("gamma", self.gamma, lambda v: 0 <= v <= 1, "in [0, 1]")
    _in_range("gae_lambda", self.gae_lambda, lambda v: 0 <= v <= 1, "in [0, 1]")
    _in_range("ent_coef", self.ent_coef, lambda v: v >= 0, ">= 0")
    _in_range("vf_coef", self.vf_coef, lambda v: v >= 0, ">= 0")
    _in_range("max_grad_norm", self.max_grad_norm, lambda v: True, "a number (<= 0 disables)")
    _in_range("value_clip_epsilon", self.value_clip_epsilon, lambda v: v > 0, "> 0")
    _in_range("kl_spike_threshold", self.kl_spike_threshold, lambda v: v > 0, "> 0")
    _in_range("init_log_std", self.init_log_std, lambda v: True, "a finite number")
    _in_range("max_kl", self.max_kl, lambda v: v > 0, "> 0")
    _in_range("cg_damping", self.cg_damping, lambda v: v >= 0, ">= 0")
    _in_range("backtrack_coef", self.backtrack_coef, lambda v: 0 < v < 1, "in (0, 1)")
    _in_range("awr_beta", self.awr_beta, lambda v: v > 0, "> 0")
    _in_range("awr_max_weight", self.awr_max_weight, lambda v: v > 0, "> 0")
    if not self.hidden or any(int(h) <= 0 for h in self.hidden):
      raise ValueError(f"hidden must be positive layer widths, got hidden={self.hidden!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"unknown activation {self.activation!r}; allowed: "
                       f"{', '.join(ACTIVATIONS)}")
    gate_width.check_target_kl(self.target_kl, self.algo, self.update_rule, self.gate_family)
    # Gate parameters: the gate constructors check their own ranges.
    if self.gate_family is not None:
      gates.make(self.gate_family, **self.gate_params())
    return self


def _in_range(name, value, ok, allowed):
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number {allowed}, got {name}={value!r}") from None
  if not (math.isfinite(v) and ok(v)):
    raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")


def auto_chunk_size(num_updates: int) -> int:
  """A divisor of `num_updates` close to num_updates/20 (so every chunk has the same size).

  Falls back to ⌈num_updates/20⌉ (with one smaller final chunk, compiled once more) when no
  divisor lies within a factor 2 of the target.
  """
  target = max(1, num_updates // 20)
  best = None
  for d in range(max(1, target // 2), min(num_updates, 2 * target) + 1):
    if num_updates % d == 0 and (best is None or abs(d - target) < abs(best - target)):
      best = d
  return best if best is not None else max(1, math.ceil(num_updates / 20))


# ---------------------------------------------------------------------------------------------
# Traced hyperparameters.


class HParams(NamedTuple):
  """The traced (vmappable) hyperparameters of one run; leaves are float32 scalars ([H] or
  [R] when stacked for a sweep). `gate`: the gate's parameters ({} without a gate); `rule`:
  the update rule's own ({field: value} for `RULE_HPARAMS[config.update_rule]`); target_kl:
  the adaptive gate width's target (NaN when the width is fixed)."""

  gate: dict[str, jax.Array]
  lr: jax.Array
  ent_coef: jax.Array
  vf_coef: jax.Array
  max_grad_norm: jax.Array
  gamma: jax.Array
  gae_lambda: jax.Array
  value_clip_epsilon: jax.Array
  rule: dict[str, jax.Array]
  target_kl: jax.Array


def gate_template(config: TrainConfig) -> gates.Gate | None:
  """The run's gate built (and range-checked) on the host from concrete config values.

  Inside the compiled program the gate is rebuilt as `dataclasses.replace(template,
  params=hparams.gate)` with traced parameters (the constructors' checks need concrete values).
  With `target_kl` on a normalised family it is `gates.scaled` (scale 1 until the width moves).
  """
  if config.gate_family is None:
    return None
  gate = gates.make(config.gate_family, **config.gate_params())
  spec = gate_width.ADAPTIVE_FAMILIES.get(config.gate_family)
  if config.target_kl is not None and spec is not None and spec.normalise:
    gate = gates.scaled(gate)
  return gate


def hparams_from_config(config: TrainConfig) -> HParams:
  f = lambda v: jnp.asarray(v, jnp.float32)
  gate = gate_template(config)
  return HParams(
      gate={} if gate is None else {k: f(v) for k, v in gate.params.items()},
      lr=f(config.lr), ent_coef=f(config.ent_coef), vf_coef=f(config.vf_coef),
      max_grad_norm=f(config.max_grad_norm), gamma=f(config.gamma),
      gae_lambda=f(config.gae_lambda), value_clip_epsilon=f(config.value_clip_epsilon),
      rule={name: f(getattr(config, name)) for name in RULE_HPARAMS[config.update_rule]},
      target_kl=f(math.nan if config.target_kl is None else config.target_kl))


def stack_hparams(hparams: list[HParams]) -> HParams:
  """Stack per-setting HParams into one with a leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *hparams)
