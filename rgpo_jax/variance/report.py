"""Where `rgpo variance` writes: a new or empty output folder, CSV tables, a JSON summary, logs."""

from __future__ import annotations

import csv
import json
import os
import time
from typing import Sequence

RUN_MARKER = "variance_run.json"


def prepare_out(path: str) -> str:
  """Create the output folder; refuse one that exists and is not empty (nothing is overwritten)."""
  path = os.path.abspath(path)
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise SystemExit(f"rgpo variance: --out {path} exists and is not a folder")
    entries = sorted(os.listdir(path))
    if entries:
      what = ("another variance run" if RUN_MARKER in entries
              else f"other files ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''})")
      raise SystemExit(f"rgpo variance: --out {path} is not empty (it holds {what}); refusing to "
                       f"overwrite it. Choose a new folder.")
  os.makedirs(path, exist_ok=True)
  return path


def log(msg: str) -> None:
  """Print a timestamped progress line."""
  print(f"[rgpo variance {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  """Write dict rows as CSV (header from the first row; floats with 6 significant digits)."""
  if not rows:
    return
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_summary_json(out: str, extra: dict) -> None:
  """Write `summary.json` under `out`."""
  path = os.path.join(out, "summary.json")
  with open(path, "w") as f:
    json.dump(extra, f, indent=1, default=float)
