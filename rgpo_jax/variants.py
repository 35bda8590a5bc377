"""Every policy-loss variant by name: one registry, as verl's `register_policy_loss` and tunix's
`register_policy_loss_fn`, where each entry is a small composition of a gate (its weight w), a
ratio granularity and an aggregation mode, all defined in their own modules.

    from rgpo_jax import variants
    loss, aux = variants.policy_loss("gspo", log_prob, old_log_prob, advantage, mask)
    loss, aux = variants.policy_loss("rgpo_sigmoid", log_prob, old_log_prob, advantage, mask,
                                     k=8.0)
    fn = variants.get_policy_loss("cispo")          # fn(log_prob, old_log_prob, advantage, mask, ...)

Every registered function takes (log_prob, old_log_prob, advantage, mask=None, *, key=None,
sample_weight=None, reduction=None, **params) and returns (loss, aux): `params` override the
gate's parameters (e.g. k, epsilon, c), `reduction` the variant's default aggregation,
`sample_weight` is a detached per-token weight (e.g. `correction.correction_weights`), `key` the
PRNG key of variants that draw random numbers (Clip-Cov). Register your own with
`@register_policy_loss("name")`. `VARIANTS` holds the description of each (w, bounded or not,
source) from which the README's variant table is written; `variant_table()` prints it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from rgpo_jax import covariance, detached  # noqa: F401  (detached registers its gate families)
from rgpo_jax import gates as gates_lib
from rgpo_jax import losses

Array = jax.Array
PolicyLossFn = Callable[..., tuple[Array, Any]]
POLICY_LOSSES: dict[str, PolicyLossFn] = {}


@dataclasses.dataclass(frozen=True)
class Variant:
  """A named policy loss: what it computes and where it comes from.

  gate, gate_params: the `gates.make` family and its default parameters (None: not a gate loss).
  granularity, log_clip, reduction: as in `losses.policy_loss`.
  weight: the per-token effective weight w (gradient −w·Â·∇log π), in words/unicode.
  bounded: "yes" / "no" / a short qualification, for heavy-tailed ratios.
  source: paper and stack.
  """

  name: str
  gate: str | None
  gate_params: tuple[tuple[str, Any], ...]
  granularity: str
  reduction: str
  weight: str
  bounded: str
  source: str
  log_clip: tuple[float, float] | None = None


VARIANTS: dict[str, Variant] = {}


def register_policy_loss(name: str, variant: Variant | None = None
                         ) -> Callable[[PolicyLossFn], PolicyLossFn]:
  """Decorator registering `fn` under `name` (and its description, if given); a name once."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"register_policy_loss: name must be a non-empty string, got name={name!r}")

  def decorator(fn: PolicyLossFn) -> PolicyLossFn:
    if name in POLICY_LOSSES and POLICY_LOSSES[name] is not fn:
      raise ValueError(f"register_policy_loss: {name!r} is already registered")
    POLICY_LOSSES[name] = fn
    if variant is not None:
      VARIANTS[name] = variant
    return fn

  return decorator


def get_policy_loss(name: str) -> PolicyLossFn:
  """The registered policy loss `name`; ValueError naming it and the allowed names if unknown."""
  if name not in POLICY_LOSSES:
    raise ValueError(f"unknown policy loss {name!r}; allowed: {', '.join(sorted(POLICY_LOSSES))}")
  return POLICY_LOSSES[name]


def policy_loss(name: str, log_prob: Array, old_log_prob: Array, advantage: Array,
                mask: Array | None = None, **kwargs) -> tuple[Array, Any]:
  """`get_policy_loss(name)(log_prob, old_log_prob, advantage, mask, **kwargs)`."""
  return get_policy_loss(name)(log_prob, old_log_prob, advantage, mask, **kwargs)


def make_gate(name: str, **params) -> gates_lib.Gate:
  """The gate of a gate-based variant, with `params` overriding its defaults."""
  variant = VARIANTS.get(name)
  if variant is None or variant.gate is None:
    gated = sorted(n for n, v in VARIANTS.items() if v.gate is not None)
    raise ValueError(f"make_gate: {name!r} is not a gate-based variant; allowed: {', '.join(gated)}")
  return gates_lib.make(variant.gate, **{**dict(variant.gate_params), **params})


def _gated(variant: Variant) -> PolicyLossFn:
  def fn(log_prob, old_log_prob, advantage, mask=None, *, key=None, sample_weight=None,
         reduction=None, **params):
    del key  # deterministic
    return losses.policy_loss(
        make_gate(variant.name, **params), log_prob, old_log_prob, advantage, mask,
        reduction=variant.reduction if reduction is None else reduction,
        granularity=variant.granularity, log_clip=variant.log_clip, sample_weight=sample_weight)

  fn.__name__ = f"{variant.name}_policy_loss"
  fn.__doc__ = (f"{variant.name}: w = {variant.weight} ({variant.granularity} ratio, "
                f"{variant.reduction}); bounded: {variant.bounded}. Source: {variant.source}.")
  return fn


def _register_gated(name, gate, params, weight, bounded, source, *, granularity="token",
                    reduction="token-mean", log_clip=None):
  variant = Variant(name, gate, tuple(params.items()), granularity, reduction, weight, bounded,
                    source, log_clip)
  register_policy_loss(name, variant)(_gated(variant))


_register_gated("importance", "importance", {}, "r", "no", "IS / TRPO surrogate (arXiv 1502.05477)")
_register_gated("reinforce", "reinforce", {}, "1", "yes (no correction)",
                "REINFORCE (Williams 1992)")
_register_gated("gpg", "reinforce", {}, "1 (with `advantages.gpg_advantages`)", "yes",
                "GPG, arXiv 2504.02546; verl `gpg`")
_register_gated("ppo", "ppo_clip", {"epsilon": 0.2}, "r·1[unclipped]", "no (Â < 0: w = r for all r > 1−ε)",
                "PPO, arXiv 1707.06347; verl `vanilla`, tunix `ppo`")
_register_gated("ppo_clip_higher", "ppo_clip", {"epsilon": 0.2, "epsilon_high": 0.28},
                "r·1[unclipped], ε_high = 0.28", "no (as PPO)", "DAPO, arXiv 2503.14476; TRL `dapo`")
_register_gated("dual_clip", "dual_clip", {"epsilon": 0.2, "c": 3.0},
                "r·1[unclipped]; 0 for Â < 0, r > c", "yes (≤ max(1+ε, c))",
                "dual-clip PPO, arXiv 1912.09729; verl `clip_ratio_c`, tunix `epsilon_c`")
_register_gated("truncated", "truncated", {"low": 0.5, "high": 2.0}, "r·1[low < r < high]",
                "yes (≤ high)", "hard rejection band (this library)")
# Names as in the trainer (`rgpo train --algo`): `rgpo` is the pessimistic sigmoid (the
# default, see docs/method.md), `rgpo_sigmoid` the paper's gate as reconstructed.
_register_gated("rgpo_sigmoid", "sigmoid", {"k": 4.0}, "k·σ(1−σ)·r, σ = σ(k(r−1))",
                "yes (1.058 at k = 4)", "RGPO, arXiv 2604.14895 (reconstructed)")
_register_gated("rgpo", "pessimistic_sigmoid", {"k": 4.0},
                "k·σ(1−σ)·r improving side, (k/4)·r other side", "no (worsening side)",
                "this library: RGPO's sigmoid with PPO's pessimism (`rgpo train` default)")
_register_gated("rgpo_pessimistic", "pessimistic_sigmoid", {"k": 4.0},
                "as `rgpo`", "no (worsening side)", "this library (alias of `rgpo`)")
_register_gated("rgpo_sequence", "sigmoid", {"k": 4.0},
                "k·σ(1−σ)·s on the GSPO sequence ratio s (÷L per token)", "yes",
                "this library: RGPO's gate on GSPO's ratio", granularity="sequence",
                reduction="seq-mean-token-mean")
_register_gated("rgpo_detached", "detached", {"gate": "sigmoid", "k": 4.0},
                "sg(k·σ(1−σ)·r)", "yes (1.058 at k = 4)", "this library (CISPO-style RGPO)")
_register_gated("sapo", "sapo", {"tau_pos": 1.0, "tau_neg": 1.05}, "4σ(1−σ)·r, τ by sign(Â)",
                "yes", "SAPO, arXiv 2511.20347; verl `sapo`, TRL `sapo`",
                reduction="seq-mean-token-mean")
_register_gated("gspo", "ppo_clip", {"epsilon": 3e-4, "epsilon_high": 4e-4},
                "s·1[s in band], s = exp(mean log r) (÷L per token)", "no (Â < 0: w = s for s > 1−ε)",
                "GSPO-token, arXiv 2507.18071; verl `gspo`", granularity="sequence_token",
                reduction="seq-mean-token-mean")
_register_gated("gspo_sequence", "ppo_clip", {"epsilon": 3e-4, "epsilon_high": 4e-4},
                "as gspo (gradient through the mean; equal for per-sequence Â)", "no (as gspo)",
                "GSPO, arXiv 2507.18071; TRL `importance_sampling_level='sequence'`",
                granularity="sequence", reduction="seq-mean-token-mean")
_register_gated("gmpo", "importance", {},
                "G·1[token unclipped], G = exp(mean clip_Â(log r)) (÷L per token)",
                "no (Â ≥ 0: G ≤ e^0.4; Â < 0: G unbounded above)", "GMPO, arXiv 2507.20673; verl `geo_mean`",
                granularity="geometric_mean", reduction="seq-mean-token-mean",
                log_clip=(0.4, 0.4))
_register_gated("cispo", "cispo", {"epsilon": 0.2}, "sg(clip(r, 1−ε_l, 1+ε_h))", "yes (≤ 1+ε_h)",
                "CISPO, arXiv 2506.13585; verl `cispo`")
_register_gated("cispo_cap", "cispo_cap", {"epsilon_max": 5.0}, "sg(min(r, ε_max))",
                "yes (≤ ε_max)", "ScaleRL, arXiv 2510.13786; TRL `cispo`")
_register_gated("dpo_drift", "dpo_drift", {"alpha": 2.0, "beta": 0.6},
                "r·sech²((r−1)Â/α) (Â ≥ 0, r > 1); r−1+sech²(Â log r/β) (Â < 0, r < 1); else r",
                "no (Â < 0, r > 1)", "Discovered PO, arXiv 2210.05639; Stoix/PureJaxRL `dpo_loss`")


@register_policy_loss("clip_cov", Variant(
    "clip_cov", None, (), "token", "token-mean", "PPO's w, 0 on ⌊fraction·N⌋ random high-Cov tokens",
    "no (as PPO)", "Clip-Cov, arXiv 2505.22617; verl `clip_cov`"))
def clip_cov_policy_loss(log_prob, old_log_prob, advantage, mask=None, *, key=None,
                         sample_weight=None, reduction=None, **params):
  """Clip-Cov (`covariance.clip_cov_policy_loss`); needs `key`."""
  if key is None:
    raise ValueError("clip_cov: needs a PRNG key (key=jax.random.key(...)) for its random token "
                     "choice, got key=None")
  return covariance.clip_cov_policy_loss(key, log_prob, old_log_prob, advantage, mask,
                                         aggregation_mode=reduction or "token-mean",
                                         sample_weight=sample_weight, **params)


@register_policy_loss("kl_cov", Variant(
    "kl_cov", None, (), "token", "token-mean",
    "r; + coef·sign(log r) pull-back on the top-Cov tokens", "no (as IS)",
    "KL-Cov, arXiv 2505.22617; verl `kl_cov`"))
def kl_cov_policy_loss(log_prob, old_log_prob, advantage, mask=None, *, key=None,
                       sample_weight=None, reduction=None, **params):
  """KL-Cov (`covariance.kl_cov_policy_loss`)."""
  del key
  return covariance.kl_cov_policy_loss(log_prob, old_log_prob, advantage, mask,
                                       aggregation_mode=reduction or "token-mean",
                                       sample_weight=sample_weight, **params)


def variant_table() -> str:
  """The README's variant table (markdown), one row per registered variant."""
  rows = ["| variant | ratio | w (gradient −w·Â·∇log π) | bounded | aggregation | source |",
          "|---|---|---|---|---|---|"]
  for name, v in VARIANTS.items():
    rows.append(f"| `{name}` | {v.granularity} | {v.weight} | {v.bounded} | {v.reduction} | "
                f"{v.source} |")
  return "\n".join(rows)
