"""Checkpoints: exact round trip, keep-last-K, refusing mismatched or corrupt checkpoints without
touching them, and surviving a process killed in the middle of a save."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("orbax.checkpoint")

from rgpo_jax.training import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
from conftest import flip_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META = {"env": "brax:ant", "network": [64, 64], "config_hash": "abc123"}


class Norm(NamedTuple):
  mean: jax.Array
  var: jax.Array
  count: jax.Array


def make_state(width=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "params": {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, width)), jnp.float32),
                           "bias": jnp.asarray(rng.normal(size=(width,)), jnp.float32)}},
      "opt_count": jnp.asarray(7 + seed, jnp.int32),
      "norm": Norm(jnp.asarray(rng.normal(size=3), jnp.float32),
                   jnp.asarray(rng.uniform(size=3), jnp.float32), jnp.asarray(11.0)),
      "key": jax.random.key(seed + 42),
      "raw_keys": jax.random.split(jax.random.PRNGKey(seed), 2),
      "update": jnp.asarray(seed, jnp.int32),
  }


def snapshot(directory):
  """Every file under `directory` with its size, mtime and content hash."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for d in dirs:
      out[os.path.join(root, d)] = "dir"
    for f in files:
      p = os.path.join(root, f)
      with open(p, "rb") as fh:
        out[p] = (os.path.getsize(p), os.path.getmtime(p), hashlib.sha256(fh.read()).hexdigest())
  return out


def assert_same_state(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert y.dtype == x.dtype
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.asarray(x).dtype == np.asarray(y).dtype


@pytest.fixture()
def saved(tmp_path):
  d = str(tmp_path / "checkpoints")
  states = {s: make_state(seed=s) for s in (1, 2, 3)}
  with ckpt.Checkpointer(d, META, keep=2) as c:
    for s, st in states.items():
      c.save(s, st)
  return d, states


def test_round_trip_is_exact_including_keys_and_namedtuples(saved):
  d, states = saved
  step, restored = ckpt.restore(d, make_state(), META)
  assert step == 3
  assert_same_state(restored, states[3])
  # the restored typed key draws the same numbers as the saved one
  np.testing.assert_array_equal(jax.random.normal(restored["key"], (3,)),
                                jax.random.normal(states[3]["key"], (3,)))


def test_keeps_only_last_k_steps(saved):
  d, states = saved
  assert sorted(e for e in os.listdir(d) if e.isdigit()) == ["2", "3"]
  step, restored = ckpt.restore(d, make_state(), META, step=2)
  assert step == 2
  assert_same_state(restored, states[2])
  with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint step 1 .*available: \[2, 3\]"):
    ckpt.restore(d, make_state(), META, step=1)


def test_other_env_is_refused_naming_the_field_and_touching_nothing(saved):
  d, _ = saved
  before = snapshot(d)
  other = dict(META, env="CartPole-v1")
  with pytest.raises(ckpt.CheckpointMismatchError,
                     match="env: checkpoint has 'brax:ant', this run has 'CartPole-v1'"):
    ckpt.restore(d, make_state(), other)
  assert snapshot(d) == before


def test_other_network_is_refused_naming_path_and_shapes(saved):
  d, _ = saved
  before = snapshot(d)
  with pytest.raises(ckpt.CheckpointMismatchError) as e:
    ckpt.restore(d, make_state(width=8), META)
  msg = str(e.value)
  assert "['params']['dense']['kernel']: checkpoint (3, 4) float32, this run (3, 8) float32" in msg
  assert "['params']['dense']['bias']: checkpoint (4,) float32, this run (8,) float32" in msg
  assert snapshot(d) == before


def _largest_file(directory):
  files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
  return max(files, key=os.path.getsize)


def test_flipped_bytes_are_reported_as_corrupt_touching_nothing_else(saved):
  d, _ = saved
  flip_bytes(_largest_file(os.path.join(d, "3", "state")))
  before = snapshot(d)
  with pytest.raises(ckpt.CheckpointCorruptError, match=r"checkpoint .*/3 is corrupt"):
    ckpt.restore(d, make_state(), META)
  assert snapshot(d) == before


def test_missing_metadata_is_reported_as_corrupt(saved):
  d, _ = saved
  for root, _, files in os.walk(os.path.join(d, "3", "meta")):
    for f in files:
      os.remove(os.path.join(root, f))
  with pytest.raises(ckpt.CheckpointCorruptError, match=r"checkpoint .*/3 is corrupt"):
    ckpt.restore(d, make_state(), META)


def test_corrupt_step_set_aside_is_invisible_and_can_be_saved_again(saved):
  d, states = saved
  assert ckpt.all_steps(d) == [2, 3]
  assert ckpt.set_aside(d, 3) == os.path.join(d, "3.corrupt")
  assert ckpt.all_steps(d) == [2] and ckpt.latest_step(d) == 2
  with ckpt.Checkpointer(d, META, keep=2) as c:
    c.save(3, states[3])
  assert ckpt.all_steps(d) == [2, 3] and sorted(os.listdir(d)) == ["2", "3", "3.corrupt"]
  assert ckpt.set_aside(d, 3) == os.path.join(d, "3.corrupt2")  # never overwrites


def test_empty_directory_has_no_checkpoint(tmp_path):
  assert ckpt.latest_step(str(tmp_path / "nothing")) is None
  with pytest.raises(ckpt.CheckpointError, match="no checkpoint directory"):
    ckpt.restore(str(tmp_path / "nothing"), make_state(), META)


def test_keep_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="keep must be a positive integer, got 0"):
    ckpt.Checkpointer(str(tmp_path), META, keep=0)


_KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from test_checkpoint import make_state, META
    from rgpo_jax.training import checkpoint as ckpt
    from orbax.checkpoint._src.path import atomicity
    c = ckpt.Checkpointer({d!r}, META, keep=3)
    c.save(1, make_state(seed=1))
    async def die(self, *a, **k):  # all files of step 2 written, rename not done
      os.kill(os.getpid(), signal.SIGKILL)
    atomicity.AtomicRenameTemporaryPath.finalize = die
    c.save(2, make_state(seed=2))
    print("unreachable")
""")


def test_process_killed_during_save_resumes_from_previous_step(tmp_path):
  d = str(tmp_path / "checkpoints")
  script = _KILL_DURING_SAVE.format(repo=REPO, tests=os.path.join(REPO, "tests"), d=d)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  leftovers = [e for e in os.listdir(d) if e.startswith("2") and "tmp" in e]
  assert leftovers, os.listdir(d)  # the interrupted save left its tmp directory
  assert ckpt.latest_step(d) == 1
  step, restored = ckpt.restore(d, make_state(), META)
  assert step == 1
  assert_same_state(restored, make_state(seed=1))
  # a resumed run's writer removes the leftovers and can save step 2 again
  with ckpt.Checkpointer(d, META, keep=3) as c:
    assert not [e for e in os.listdir(d) if "tmp" in e], os.listdir(d)
    c.save(2, make_state(seed=2))
  step, restored = ckpt.restore(d, make_state(), META)
  assert step == 2
  assert_same_state(restored, make_state(seed=2))


def test_params_checksum_is_sha256_of_shapes_dtypes_and_bytes_in_tree_order():
  params = {"b": np.array([1.0, -2.0], np.float32), "a": np.array([[3]], np.int32)}
  h = hashlib.sha256()
  h.update(b"(1, 1)<i4" + np.array([[3]], "<i4").tobytes())  # "a" first: sorted dict keys
  h.update(b"(2,)<f4" + np.array([1.0, -2.0], "<f4").tobytes())
  assert ckpt.params_checksum(params) == h.hexdigest()
  flipped = {"b": np.array([1.0, np.nextafter(np.float32(-2.0), np.float32(0))], np.float32),
             "a": params["a"]}
  assert ckpt.params_checksum(flipped) != h.hexdigest()
  assert ckpt.params_checksum(jax.tree.map(jnp.asarray, params)) == h.hexdigest()
