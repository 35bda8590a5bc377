"""Trace-time argument checks shared by the library modules (jax and numpy only).

Checks run on concrete values (Python/numpy scalars and arrays, concrete jax arrays, also when
they are constants inside a jit trace) and skip traced values, which cannot be inspected without
a compile: they cost nothing under `jit`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def check_same_shape(fn: str, hint: str = "", **arrays) -> None:
  """Raise a ValueError naming every array's shape unless all (non-None) arrays agree.

  `hint` is inserted after "must have the same shape" (e.g. how to broadcast)."""
  shapes = {name: jnp.shape(a) for name, a in arrays.items() if a is not None}
  if len(set(shapes.values())) > 1:
    listing = ", ".join(f"{n}{tuple(s)}" for n, s in shapes.items())
    raise ValueError(f"{fn}: arrays must have the same shape{hint}; got {listing}")


def is_traced(value: Any) -> bool:
  return isinstance(value, jax.core.Tracer)


def as_bool_mask(fn: str, mask: Any) -> jax.Array | None:
  """A mask as a boolean array: True = valid entry, False = padding.

  Masks select entries; they are not weights. Boolean masks pass as they are. A numeric mask
  must hold only 0 and 1: concrete ones are checked here (a ValueError names the other values);
  a traced numeric mask cannot be checked and is read as `mask != 0` (every non-zero entry is a
  valid entry of weight 1).
  """
  if mask is None:
    return None
  if not is_traced(mask):
    values = np.asarray(mask)
    if values.dtype != np.bool_:
      if not (np.issubdtype(values.dtype, np.number) and not np.iscomplexobj(values)):
        raise ValueError(f"{fn}: mask must be boolean or 0/1, got dtype {values.dtype}")
      bad = values[(values != 0) & (values != 1)]
      if bad.size:
        shown = np.unique(bad)[:6].tolist()
        raise ValueError(f"{fn}: mask must be boolean or 0/1 (it selects entries, it is not a "
                         f"weight), got mask values {shown}")
  mask = jnp.asarray(mask)
  return mask if mask.dtype == jnp.bool_ else mask != 0


def check_number(fn: str, name: str, value: Any, ok: Callable[[float], bool] | None = None,
                 allowed: str = "finite", *, allow_inf: bool = False) -> None:
  """Refuse a non-numeric, bool, string, NaN (and unless `allow_inf`, ±inf) or out-of-range
  concrete `value` (a scalar or array) with a ValueError naming it; traced values pass.

  Python and numpy ints and floats (and arrays of them) are accepted; bools and strings are
  refused although Python would convert them ("4" → 4.0, True → 1.0)."""
  if is_traced(value):
    return
  try:
    values = np.asarray(value)
  except Exception:  # noqa: BLE001  (anything numpy cannot read is not a number)
    values = np.asarray(None, dtype=object)
  if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
    # bool, str and object dtypes: Python would turn "4" into 4.0 and True into 1.0.
    raise ValueError(f"{fn}: {name} must be a number {allowed}, got {name}={value!r} "
                     f"({type(value).__name__})")
  for v in np.ravel(values).astype(float):
    finite = math.isfinite(v) or (allow_inf and not math.isnan(v))
    if not finite or (ok is not None and not ok(v)):
      raise ValueError(f"{fn}: {name} must be {allowed}, got {name}={value!r}")


def check_int(fn: str, name: str, value: Any, low: int | None = None, high: int | None = None,
              *, range_name: str | None = None) -> int:
  """`value` as a Python int: Python and numpy integers (not bools) in [low, high]; else a
  ValueError naming the value and the allowed range (`range_name` describes it, e.g.
  "[1, group size 4]")."""
  bounds = f"in [{low}, {high}]" if low is not None and high is not None else (
      f">= {low}" if low is not None else "")
  if range_name is not None:
    bounds = f"in {range_name}"
  allowed = f"an integer {bounds}".strip()
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{fn}: {name} must be {allowed}, got {name}={value!r}")
  value = int(value)
  if (low is not None and value < low) or (high is not None and value > high):
    raise ValueError(f"{fn}: {name} must be {allowed}, got {name}={value!r}")
  return value
