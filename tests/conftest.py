"""Shared test helpers. Core-library tests run in float64 (closed forms checked tightly)."""

import contextlib
import hashlib
import os

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

try:
  from hypothesis import HealthCheck, Phase, settings
except ImportError:  # the property tests skip themselves without hypothesis (dev extra)
  settings = None

if settings is not None:
  # "ci" (default): derandomized, a fixed example sequence, no example database and no shrinking
  # (a failure prints its reproduce_failure blob), so every run of the suite tests the same cases
  # in bounded time. HYPOTHESIS_PROFILE=dev explores more and shrinks failures.
  settings.register_profile("ci", derandomize=True, database=None, max_examples=25,
                            deadline=None, print_blob=True,
                            phases=[Phase.explicit, Phase.reuse, Phase.generate],
                            suppress_health_check=[HealthCheck.too_slow])
  settings.register_profile("dev", max_examples=500, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
  settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def x64():
  """Run a test with 64-bit floats enabled (a context, so other test modules stay float32)."""
  with jax.enable_x64(True):
    yield


_CACHE_CONFIG = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                 "jax_persistent_cache_min_entry_size_bytes")


@contextlib.contextmanager
def persistent_compilation_cache(path: str):
  """Every compile inside the block goes through jax's persistent cache in `path` (tests that
  compile the same programs several times compile them once), and nothing after it does.

  jax decides once per process whether the cache is used, at the first compile, and keeps that
  decision and the first directory through later config changes: without `reset_cache` the
  block's cache would stay on for the rest of the pytest worker (every later compile of 1 s or
  more serialised to disk: the SmolLM2 test's 0.5 GB program took 153 s instead of 9), or, if
  something compiled before the block, never come on."""
  saved = {name: getattr(jax.config, name) for name in _CACHE_CONFIG}
  for name, value in zip(_CACHE_CONFIG, (path, 0.0, 0)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_subprocess_env(**overrides) -> dict:
  """os.environ for a child Python process that imports this checkout's rgpo_jax first
  (the repository root prepended to PYTHONPATH), with `overrides` set."""
  env = dict(os.environ, **overrides)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
  return env


def flip_bytes(path: str, count: int = 8) -> None:
  """Inverts `count` bytes in the middle of the file at `path` (a checksum then fails)."""
  with open(path, "r+b") as fh:
    data = bytearray(fh.read())
    mid = len(data) // 2
    data[mid:mid + count] = bytes(255 - b for b in data[mid:mid + count])
    fh.seek(0)
    fh.write(data)


def snapshot_files(folder):
  """{path relative to folder: (mtime, sha256)} of every file below `folder`: equal snapshots
  before and after an operation mean it touched nothing there."""
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, folder)] = (os.path.getmtime(path),
                                                hashlib.sha256(f.read()).hexdigest())
  return files


@pytest.fixture
def snapshot():
  return snapshot_files
