"""Shared test helpers. Core-library tests run in float64 (closed forms checked tightly)."""

import jax
import pytest


@pytest.fixture
def x64():
  """Run a test with 64-bit floats enabled (a context, so other test modules stay float32)."""
  with jax.enable_x64(True):
    yield
