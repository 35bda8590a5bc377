"""Multi-host (multi-process) training: one JAX process per host, collectives across all.

The trainer's data-parallel update (`Trainer.update(..., axis_name=...)` under `shard_map`, see
`sweep.data_parallel_train`) averages gradients with `lax.pmean` over the device axis. After
`initialize_distributed`, `jax.devices()` spans the devices of every process, so the same
`shard_map`/`pmean` averages gradients and normaliser statistics over the whole cluster. Every
process runs the same program with the same key; each device steps its own slice of the envs
(random numbers drawn per env by global index), so the result equals one device holding all
envs (`Trainer`). Only process 0 should write files (`is_primary()`).

How to launch (the same program on every host, differing only in the process id):

* TPU pod slice, Slurm, Open MPI: `initialize_distributed(auto_detect=True)`; JAX reads the
  cluster's environment.
* GPU cluster or any set of hosts: pick host 0's address and a free port, then on host i
  `initialize_distributed("host0:1234", num_processes=N, process_id=i)`.
* One process (the default): nothing happens; the code path is the same.

Scope: this is the library layer (tested: a `pmean` across two processes' devices, and
`data_parallel_train` over 2 processes × 1 device against 1 process × 1 device). The
`rgpo train` host loop reads metrics back with `device_get`, which needs every array on this
process, so it stays single-process; a multi-host job drives `Trainer.update(...,
axis_name=...)` over the global mesh itself (as `sweep.data_parallel_train` does) and
writes files from `is_primary()` only.

CPU clusters use gloo collectives (JAX's default `jax_cpu_collectives_implementation`); the test
suite runs two local CPU processes over 127.0.0.1 to check a cross-process `pmean`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax


class DistributedInfo(NamedTuple):
  """Where this process sits: index/count of processes and of devices."""

  process_index: int
  process_count: int
  local_device_count: int
  device_count: int


_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")


def validate_distributed_args(coordinator_address: str | None, num_processes: int,
                              process_id: int) -> None:
  """Raises ValueError naming the bad value (before JAX is touched)."""
  if not isinstance(num_processes, int) or num_processes < 1:
    raise ValueError(f"num_processes must be a positive integer, got {num_processes!r}")
  if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
  if num_processes > 1:
    if not coordinator_address or not _ADDRESS.match(coordinator_address):
      raise ValueError(f"coordinator_address must be 'host:port' (process 0's address) when "
                       f"num_processes > 1, got {coordinator_address!r}")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int = 1,
                           process_id: int = 0,
                           *,
                           auto_detect: bool = False,
                           local_device_ids: list[int] | None = None,
                           timeout_s: int = 300) -> DistributedInfo:
  """Joins this process to a multi-process JAX cluster (`jax.distributed.initialize`).

  Must run before any JAX computation in the process. A no-op when `num_processes == 1` and
  `auto_detect` is False, so single-process code calls it unconditionally.

  Args:
    coordinator_address: "host:port" of process 0 (it serves the coordination service there).
    num_processes: total number of processes (hosts) in the job.
    process_id: this process's index in [0, num_processes).
    auto_detect: let JAX detect the cluster (Cloud TPU, Slurm, Open MPI); other args ignored.
    local_device_ids: restrict this process to these local devices (e.g. one GPU per process).
    timeout_s: seconds to wait for all processes to connect.

  Returns:
    `DistributedInfo` after initialisation.

  Raises:
    ValueError: inconsistent arguments (named), before JAX is initialised.
  """
  if auto_detect:
    jax.distributed.initialize(initialization_timeout=timeout_s)
  else:
    validate_distributed_args(coordinator_address, num_processes, process_id)
    if num_processes > 1:
      jax.distributed.initialize(coordinator_address=coordinator_address,
                                 num_processes=num_processes, process_id=process_id,
                                 local_device_ids=local_device_ids,
                                 initialization_timeout=timeout_s)
  return info()


def info() -> DistributedInfo:
  """The current process/device layout (valid with or without `initialize_distributed`)."""
  return DistributedInfo(process_index=jax.process_index(), process_count=jax.process_count(),
                         local_device_count=jax.local_device_count(),
                         device_count=jax.device_count())


def is_primary() -> bool:
  """True on the process that writes files (process 0)."""
  return jax.process_index() == 0
