"""Shared test helpers. Core-library tests run in float64 (closed forms checked tightly)."""

import hashlib
import os

import jax
import pytest


@pytest.fixture
def x64():
  """Run a test with 64-bit floats enabled (a context, so other test modules stay float32)."""
  with jax.enable_x64(True):
    yield


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
