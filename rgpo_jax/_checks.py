"""Trace-time argument checks shared by the library modules (jax only, no other imports)."""

from __future__ import annotations

import jax.numpy as jnp


def check_same_shape(fn: str, hint: str = "", **arrays) -> None:
  """Raise a ValueError naming every array's shape unless all (non-None) arrays agree.

  `hint` is inserted after "must have the same shape" (e.g. how to broadcast)."""
  shapes = {name: jnp.shape(a) for name, a in arrays.items() if a is not None}
  if len(set(shapes.values())) > 1:
    listing = ", ".join(f"{n}{tuple(s)}" for n, s in shapes.items())
    raise ValueError(f"{fn}: arrays must have the same shape{hint}; got {listing}")
