"""Checkpoints of a training-state pytree with orbax-checkpoint, safe to resume from.

A checkpoint directory (usually `<run>/checkpoints`) holds one sub-directory per saved update
step, written by `orbax.checkpoint.CheckpointManager` with two items:

  state/   the training-state pytree (params, optimiser state, normaliser, RNG keys, counters,
           env state ...), saved with `StandardSave`; typed PRNG keys are stored as their
           `key_data` and re-wrapped on restore.
  meta/    JSON: the run's `metadata` (env name, network shapes, config hash ... whatever the
           caller passes), the state's *signature* (every leaf's path, shape and dtype), a
           sha256 checksum of the whole state, and the step.

Safety, as needed for long runs on preemptible machines:

* **Atomic saves.** Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it to
  `<step>` only when every file is written (then `commit_success.txt`). A process killed during a
  save leaves only the tmp directory, which `latest_step` ignores: the previous step is what a
  resume restores (tested by killing a process inside orbax's finalize). A `Checkpointer`
  (the one writer of its directory) deletes such stale tmp directories when it opens.
* **Keep the last K** (`keep`): older steps are deleted after each successful save.
* **Refuse, touching nothing.** `restore` reads only; before any array is loaded it compares the
  stored metadata and signature with this run's and raises `CheckpointMismatchError` naming every
  field, path, shape or dtype that differs (other env, other network ...). A step whose files
  cannot be read or whose restored arrays do not match the stored checksum raises
  `CheckpointCorruptError` naming the step directory. Neither deletes, repairs or falls back
  (falling back to an older step is the caller's choice: `resume.restore_latest_good`;
  `set_aside` renames a corrupt step out of the way).

Multi-host: call `save` on every process with a host-local state (e.g. the replica-0 copy of a
pmapped state); orbax writes from the primary process and synchronises the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "rgpo_jax.checkpoint/1"
_MAX_LISTED = 8  # differences listed in an error message


class CheckpointError(ValueError):
  """A checkpoint cannot be used by this run."""


class CheckpointMismatchError(CheckpointError):
  """The checkpoint was written by a different run (env, network, config ...)."""


class CheckpointCorruptError(CheckpointError):
  """The checkpoint's files are missing, unreadable, or do not match their checksum."""


# ------------------------------------------------------------------------------------------
# Checksums and signatures.
# ------------------------------------------------------------------------------------------

def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host_leaf(x: Any) -> np.ndarray:
  """A leaf as a host numpy array (typed PRNG keys as their uint32 key data)."""
  if _is_key(x):
    x = jax.random.key_data(x)
  return np.asarray(jax.device_get(x))


def tree_checksum(tree: Any) -> str:
  """sha256 hex digest of a pytree's values, in `jax.tree.leaves` order.

  For each leaf the digest absorbs its shape and dtype (as text) and then its C-contiguous
  little-endian bytes; typed PRNG keys contribute their key data. Equal digests ⇔ (up to sha256
  collisions) the same leaves with the same shapes, dtypes and bit-identical values.

  Args:
    tree: any pytree of arrays / numpy arrays / Python scalars.

  Returns:
    64 hex characters.
  """
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    a = _host_leaf(leaf)
    a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
    h.update(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def params_checksum(params: Any) -> str:
  """sha256 of the parameters (see `tree_checksum`), recorded in `summary.json`.

  Two runs ended with bit-identical parameters iff their checksums are equal, so anyone can
  check that a resumed run matches an uninterrupted one, or that two machines agree.
  """
  return tree_checksum(params)


def tree_signature(tree: Any) -> list[list[Any]]:
  """[[path, shape, dtype], ...] for every leaf (`jax.tree_util.keystr` paths, sorted order)."""
  out = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    shape = list(np.shape(leaf)) if not hasattr(leaf, "shape") else list(leaf.shape)
    dtype = str(leaf.dtype) if hasattr(leaf, "dtype") else str(np.asarray(leaf).dtype)
    out.append([jax.tree_util.keystr(path), shape, dtype])
  return out


def _jsonable(x: Any) -> Any:
  return json.loads(json.dumps(x, sort_keys=True, default=str))


def _describe_metadata_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  diffs = []
  for k in sorted(set(stored) | set(current)):
    if k not in current:
      diffs.append(f"{k}: checkpoint has {stored[k]!r}, this run has no such field")
    elif k not in stored:
      diffs.append(f"{k}: checkpoint has no such field, this run has {current[k]!r}")
    elif stored[k] != current[k]:
      diffs.append(f"{k}: checkpoint has {stored[k]!r}, this run has {current[k]!r}")
  return diffs


def _describe_signature_diff(stored: list, current: list) -> list[str]:
  s = {p: (tuple(shape), dtype) for p, shape, dtype in stored}
  c = {p: (tuple(shape), dtype) for p, shape, dtype in current}
  diffs = []
  for p in sorted(set(s) | set(c)):
    if p not in c:
      diffs.append(f"state{p}: only in the checkpoint ({s[p][0]} {s[p][1]})")
    elif p not in s:
      diffs.append(f"state{p}: only in this run ({c[p][0]} {c[p][1]})")
    elif s[p] != c[p]:
      diffs.append(f"state{p}: checkpoint {s[p][0]} {s[p][1]}, this run {c[p][0]} {c[p][1]}")
  return diffs


def _listing(diffs: list[str]) -> str:
  shown = "\n  ".join(diffs[:_MAX_LISTED])
  more = f"\n  ... and {len(diffs) - _MAX_LISTED} more" if len(diffs) > _MAX_LISTED else ""
  return "\n  " + shown + more


# ------------------------------------------------------------------------------------------
# Saving.
# ------------------------------------------------------------------------------------------

TMP_MARKER = ".orbax-checkpoint-tmp"


def _is_closed_loop_noise(unraisable) -> bool:
  return (isinstance(unraisable.exc_value, RuntimeError)
          and "Event loop is closed" in str(unraisable.exc_value))


@contextlib.contextmanager
def _quiet_orbax():
  """Silences orbax's absl warnings (e.g. 'directory is read only' for our read-only restores)
  and the "Event loop is closed" RuntimeErrors that tensorstore's callbacks report (as
  unraisable exceptions) after orbax has already raised a read error of its own."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  hook = sys.unraisablehook
  sys.unraisablehook = lambda u: None if _is_closed_loop_noise(u) else hook(u)
  try:
    yield
  finally:
    logger.setLevel(level)
    sys.unraisablehook = hook


def remove_stale_tmp(directory: str) -> list[str]:
  """Deletes the `<step>.orbax-checkpoint-tmp*` folders that interrupted saves left in
  `directory` (only its writer may call this). Returns the deleted names."""
  if not os.path.isdir(directory):
    return []
  stale = sorted(e for e in os.listdir(directory) if TMP_MARKER in e)
  for name in stale:
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  return stale


def set_aside(directory: str, step: int) -> str:
  """Renames step `step` of `directory` to `<step>.corrupt` (kept for inspection, invisible
  to orbax) so that a resumed run can save that step again. Returns the new path."""
  src = os.path.join(directory, str(step))
  dst, n = src + ".corrupt", 1
  while os.path.exists(dst):
    n += 1
    dst = f"{src}.corrupt{n}"
  os.rename(src, dst)
  return dst


def _manager(directory: str, keep: int | None, read_only: bool):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  policy = ocp.checkpoint_managers.LatestN(n=keep) if keep else None
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, enable_async_checkpointing=False, create=not read_only,
      read_only=read_only, save_root_metadata=not read_only,
      save_interval_steps=0 if read_only else 1)
  with _quiet_orbax():
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=("state", "meta"))


class Checkpointer:
  """Saves training-state pytrees under `directory`, keeping the last `keep` steps.

  Usage:
    with Checkpointer(run_dir + "/checkpoints", metadata, keep=3) as ckpt:
      ckpt.save(update, state)   # atomic; blocks until written
  """

  def __init__(self, directory: str, metadata: Mapping[str, Any], keep: int = 3):
    """Args:
      directory: where step sub-directories go (created if missing).
      metadata: JSON-serialisable facts that must match on resume (env, network, config hash).
      keep: number of most recent checkpoints to keep (>= 1).
    """
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"keep must be a positive integer, got {keep!r}")
    self.directory = os.path.abspath(directory)
    self.metadata = _jsonable(dict(metadata))
    self.keep = keep
    remove_stale_tmp(self.directory)
    self._mngr = _manager(self.directory, keep, read_only=False)

  def save(self, step: int, state: Any) -> None:
    """Writes `state` as checkpoint `step` (atomically), then drops steps beyond the last K."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    host_state = jax.tree.map(_host_leaf, state)
    meta = dict(format=FORMAT, step=int(step), metadata=self.metadata,
                signature=tree_signature(state), checksum=tree_checksum(state))
    with _quiet_orbax():
      self._mngr.save(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardSave(host_state), meta=ocp.args.JsonSave(meta)), force=True)
      self._mngr.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def close(self) -> None:
    self._mngr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# ------------------------------------------------------------------------------------------
# Restoring.
# ------------------------------------------------------------------------------------------

def latest_step(directory: str) -> int | None:
  """The newest complete step in `directory` (interrupted saves ignored), or None."""
  if not os.path.isdir(directory):
    return None
  mngr = _manager(directory, None, read_only=True)
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def all_steps(directory: str) -> list[int]:
  """The complete steps in `directory`, ascending (interrupted saves ignored); [] if none."""
  if not os.path.isdir(directory):
    return []
  mngr = _manager(directory, None, read_only=True)
  try:
    return sorted(int(s) for s in mngr.all_steps())
  finally:
    mngr.close()


def read_metadata(directory: str, step: int | None = None) -> dict[str, Any]:
  """The stored JSON (format, step, metadata, signature, checksum) of a step (default latest)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise CheckpointError(f"no checkpoint directory {directory}")
  mngr = _manager(directory, None, read_only=True)
  try:
    if step is None:
      step = mngr.latest_step()
      if step is None:
        raise CheckpointError(f"no complete checkpoint in {directory} "
                              f"(contents: {sorted(os.listdir(directory))})")
    elif step not in mngr.all_steps():
      raise CheckpointError(f"no checkpoint step {step} in {directory}; "
                            f"available: {list(mngr.all_steps())}")
    try:
      with _quiet_orbax():
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointCorruptError(
          f"checkpoint {os.path.join(directory, str(step))} is corrupt: cannot read its "
          f"metadata ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
      raise CheckpointCorruptError(
          f"checkpoint {os.path.join(directory, str(step))} has no rgpo_jax metadata "
          f"(expected format {FORMAT!r})")
    return meta
  finally:
    mngr.close()


def restore(directory: str,
            target: Any,
            metadata: Mapping[str, Any] | None = None,
            step: int | None = None) -> tuple[int, Any]:
  """Restores a training state saved by `Checkpointer`, after checking it fits this run.

  Reads only: nothing in `directory` is created, changed or deleted, whatever the outcome.

  Args:
    directory: the checkpoint directory given to `Checkpointer`.
    target: a pytree with this run's structure, shapes and dtypes (e.g. the freshly initialised
      training state, or its `jax.eval_shape`); the result has the same structure.
    metadata: this run's metadata; every field must equal the stored one (None: not checked).
    step: which step (default: the latest complete one).

  Returns:
    (step, state): the restored state as host-backed jax arrays in `target`'s structure.

  Raises:
    CheckpointMismatchError: metadata or state signature differ (the message lists them).
    CheckpointCorruptError: unreadable files or checksum mismatch.
    CheckpointError: no checkpoint (or no such step) in `directory`.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.abspath(directory)
  meta = read_metadata(directory, step)
  step = int(meta["step"])
  where = os.path.join(directory, str(step))
  if metadata is not None:
    diffs = _describe_metadata_diff(meta.get("metadata", {}), _jsonable(dict(metadata)))
    if diffs:
      raise CheckpointMismatchError(
          f"checkpoint {where} was written by a different run; refusing to resume:"
          + _listing(diffs))
  diffs = _describe_signature_diff(meta.get("signature", []), tree_signature(target))
  if diffs:
    raise CheckpointMismatchError(
        f"checkpoint {where} holds a training state of another shape (other network, env or "
        f"optimiser?); refusing to resume:" + _listing(diffs))

  def abstract(x):
    if _is_key(x):
      x = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(tuple(np.shape(x)), np.dtype(x.dtype))

  abstract_target = jax.tree.map(abstract, target)
  mngr = _manager(directory, None, read_only=True)
  try:
    with _quiet_orbax():
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_target))).state
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointCorruptError(
        f"checkpoint {where} is corrupt: cannot read its arrays ({type(e).__name__}: "
        f"{str(e)[:500]})") from e
  finally:
    mngr.close()

  def rewrap(t, x):
    x = jnp.asarray(x)
    if _is_key(t):
      impl = jax.random.key_impl(t) if isinstance(t, jax.Array) else t.dtype._impl  # pylint: disable=protected-access
      return jax.random.wrap_key_data(x, impl=impl)
    return x

  state = jax.tree.map(rewrap, target, restored)
  if tree_checksum(state) != meta.get("checksum"):
    raise CheckpointCorruptError(
        f"checkpoint {where} is corrupt: its arrays do not match the checksum recorded when it "
        f"was saved")
  return step, state
