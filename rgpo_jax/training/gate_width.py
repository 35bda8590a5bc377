"""Adaptive gate width: the gate's sharpness k (or PPO's ε) steered to a target KL per update.

With `TrainConfig.target_kl` set, the width w of the gate (k for the RGPO sigmoid families,
ε for PPO-clip) is not fixed: after every update the trainer measures

    KL = mean k3(π_old‖π_new) over the whole rollout, after all epochs (`approx_kl`,
         averaged over data-parallel devices)

and moves w for the next update. It reads this post-update KL because it is the drift the
target is stated in (the quantity behind the KL-spike rate), measured on every sample of the
batch just used, after the last minibatch step, at no extra cost (the trainer computes it
anyway). Control law: Ziegler et al.'s proportional KL controller (arXiv 1909.08593 §2.2,
`rgpo_jax.kl.adaptive_kl_update`, one update = one step, horizon 1) applied to the gate's
*tightness* t (t = k for the sigmoids, whose band of accepted ratios has width ~1/k; t = 1/ε
for PPO-clip), with an asymmetric error band:

    e = clip(KL/KL_target − 1, −0.2, 1.0),   t ← clip(t·(1 + e), t₀/1024, 1024·t₀),

so a KL above target sharpens the gate (k up, ε down) by up to 100% per update (k doubles at
KL ≥ 2·target), a KL below it widens the gate by at most 20% per update, and the width stays
within a factor 1024 of its configured value w₀ (ε also ≤ 1). Why asymmetric: the per-update
KL is heavy-tailed (rare large spikes); Ziegler's symmetric ±0.2 band settles where spikes and
undershoots balance in count, i.e. a typical KL near target but a mean KL about twice it
(measured on CartPole, experiments/adaptive_kl/README.md: second-half mean KL 0.044-0.048 at
target 0.02 with the symmetric band and range 64, 0.037-0.038 with range 1024); reacting 5×
harder to overshoots than to undershoots brought it to 0.016-0.018.
A non-finite KL leaves w unchanged. The state is the current width, a [] float32 leaf of
`TrainState` (`gate_width`), so it is checkpointed and a resumed run continues exactly.

Normalised sigmoid. For σ(k(r−1)) the sharpness also scales the step: w(1) = k/4. Raising k
to shrink the trust region would then also enlarge the on-policy weight, against the
controller (and shift the balance with the value and entropy terms and the global-norm clip).
So under control the sigmoid families use the normalised gate (k₀/k)·σ(k(r−1))
(`gates.scaled`): w(1) = k₀/4 at every k, and only the width of the band moves. At k = k₀
it is the configured gate. PPO-clip needs no normalisation (w(1) = 1 for every ε).

The gate's static structure is fixed for the run; only the leaf values of `HParams.gate` change
per update (`gate_hparams`), so one compiled program serves every width, and a sweep over
targets (`--target-kl 0.01,0.02,0.04`) vmaps them in one compile.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rgpo_jax import kl as kl_lib

Array = jax.Array

# Tightness stays within a factor WIDTH_RANGE of its initial value.
WIDTH_RANGE = 1024.0
# Ziegler's horizon, in updates: 1 = the controller's full gain.
HORIZON = 1.0
# Band of the relative error: tighten by up to 100% (k doubles) on a spike, relax by at most 20%.
ERROR_CLIP = (-0.2, 1.0)


class WidthSpec(NamedTuple):
  """How a gate family's width is adapted.

  params: the gate parameters (`Gate.params` keys) that are the width, all set to it (PPO's
  ε_low and ε_high: the trainer configures one ε); narrows: True when a larger value makes the
  gate sharper (k), False when it widens it (ε); normalise: scale the gate by w₀/w so the
  on-policy weight stays that of w₀; max_width: an absolute upper bound on the width.
  """

  params: tuple[str, ...]
  narrows: bool
  normalise: bool
  max_width: float = math.inf


# Gate families with an adaptable width.
ADAPTIVE_FAMILIES: dict[str, WidthSpec] = {
    "sigmoid": WidthSpec(("k",), narrows=True, normalise=True),
    "pessimistic_sigmoid": WidthSpec(("k",), narrows=True, normalise=True),
    "ppo_clip": WidthSpec(("epsilon_low", "epsilon_high"), narrows=False, normalise=False,
                          max_width=1.0),
}


def check_target_kl(target_kl, algo: str, update_rule: str, gate_family: str | None) -> None:
  """Raise ValueError naming the value when `target_kl` is set but unusable (before compile).

  Allowed: None (fixed width), or a finite number > 0 with a gated algorithm whose gate has a
  width (`ADAPTIVE_FAMILIES`: rgpo / rgpo_sigmoid / rgpo_pessimistic's k, ppo's ε).
  """
  if target_kl is None:
    return
  try:
    value = float(target_kl)
  except (TypeError, ValueError):
    raise ValueError(f"target_kl must be a number > 0 or None, got target_kl={target_kl!r}"
                     ) from None
  if not (math.isfinite(value) and value > 0):
    raise ValueError(f"target_kl must be a finite number > 0 (or None: fixed gate width), got "
                     f"target_kl={target_kl!r}")
  if update_rule != "gated" or gate_family not in ADAPTIVE_FAMILIES:
    raise ValueError(
        f"target_kl={target_kl!r} adapts a gate's width, but algo {algo!r} has no gate width "
        f"to adapt (allowed: the gated algorithms whose gate is one of "
        f"{', '.join(ADAPTIVE_FAMILIES)}, e.g. rgpo_sigmoid's k or ppo's epsilon)")


def initial_width(gate_params: dict[str, Array], family: str | None) -> Array:
  """The run's configured width w₀ (k or ε) from `HParams.gate`; NaN for a gate without one."""
  spec = ADAPTIVE_FAMILIES.get(family)
  if spec is None:
    return jnp.full((), jnp.nan, jnp.float32)
  return jnp.asarray(gate_params[spec.params[0]], jnp.float32)


def update_width(width: Array, width0: Array, measured_kl: Array, target_kl: Array,
                 spec: WidthSpec) -> Array:
  """The next width from the current one and the post-update KL (see the module's law).

  Args:
    width: current width w ([] or batched), > 0.
    width0: the configured width w₀ (sets the allowed range), same shape.
    measured_kl: the update's approx KL(π_old‖π_new), same shape.
    target_kl: KL_target > 0, same shape.
    spec: the gate family's `WidthSpec`.
  Returns:
    the width for the next update (w itself where `measured_kl` is not finite).
  """
  tight = width if spec.narrows else 1.0 / width
  tight0 = width0 if spec.narrows else 1.0 / width0
  state = kl_lib.adaptive_kl_update(kl_lib.AdaptiveKLState(coef=tight), measured_kl, 1,
                                    target=target_kl, horizon=HORIZON,
                                    error_clip=ERROR_CLIP)
  low = tight0 / WIDTH_RANGE
  if not spec.narrows and math.isfinite(spec.max_width):
    low = jnp.maximum(low, 1.0 / spec.max_width)
  tight_new = jnp.clip(state.coef, low, tight0 * WIDTH_RANGE)
  new = tight_new if spec.narrows else 1.0 / tight_new
  if spec.narrows and math.isfinite(spec.max_width):
    new = jnp.minimum(new, spec.max_width)
  return jnp.where(jnp.isfinite(measured_kl), new, width).astype(jnp.asarray(width).dtype)


def gate_hparams(gate_params: dict[str, Array], width: Array, spec: WidthSpec
                 ) -> dict[str, Array]:
  """`HParams.gate` for the current update: the width leaf set to `width` (and, for a
  normalised family, the `gates.scaled` leaf "scale" = w₀/w); same structure as the input."""
  out = dict(gate_params)
  for name in spec.params:
    out[name] = width
  if spec.normalise:
    out["scale"] = jnp.asarray(gate_params[spec.params[0]], jnp.float32) / width
  return out
