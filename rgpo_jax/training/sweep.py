"""Sweeps: S seeds × H hyperparameter settings in one compiled program, split across devices.

Runs are flattened to R = H·S (setting-major: run r = h·S + s), each with its own traced
`HParams` and PRNG key, and `vmap`ped. Seed s uses the same key in every setting (common random
numbers, so settings are compared on equal footing). With several devices, the devices form a
mesh [runs, dp] used with `shard_map`: the R runs are split along "runs" (each device vmaps its
share; no communication), and each run's envs are split along "dp" (data-parallel: gradients
and statistics averaged with collectives; the result equals dp = 1, see `Trainer`).

On CPU, one compiled program uses about one core well (XLA's intra-op threads cost more than
they gain for these small matmuls), so a sweep runs faster split over forced host devices, one
per core (`use_host_devices()`, on by default in `rgpo train`, `--no-cpu-devices` to disable).
Measured on 2 cores, CartPole, 16 seeds: about 210k env steps/s on 1 device, about 400k on
2 host devices × 8 seeds. Such programs used to hang in about 1 of 6 runs (docs/pitfalls.md);
the cause was a vmapped LAPACK QR in the orthogonal initialisation (see `networks.py`), gone
since the initialiser is plain JAX: 40 of 40 such sweeps finished in a stress run here.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rgpo_jax.training.config import (ALGOS, GATE_FIELDS, RULE_HPARAMS, SWEEPABLE, HParams,
                                      TrainConfig, hparams_from_config, stack_hparams)
from rgpo_jax.training.train import Trainer, TrainState

RUN_AXIS = "runs"
DP_AXIS = "dp"


def use_host_devices(num_runs: int) -> int:
  """On CPU, ask for min(cores, runs) host devices (a divisor of the runs), before JAX starts.

  Must run before the first JAX computation in the process; afterwards (or where the backend is
  already up) it does nothing. Accelerator backends are unaffected. Returns the number asked for
  (1 when nothing was changed).
  """
  import os
  from jax._src import xla_bridge
  cores = os.cpu_count() or 1
  n = max(d for d in range(1, min(cores, num_runs) + 1) if num_runs % d == 0)
  if n <= 1 or xla_bridge.backends_are_initialized():
    return 1
  jax.config.update("jax_num_cpu_devices", n)
  return n


def expand_grid(grid: dict[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
  """Cartesian product of `grid` ({field: values}) as a list of settings, first key slowest."""
  if not grid:
    return [{}]
  names = list(grid)
  return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def check_grid(config: TrainConfig, grid: dict[str, Sequence[Any]] | None) -> list[TrainConfig]:
  """Validate a sweep before compiling: one validated `TrainConfig` per setting.

  Raises ValueError for a field that cannot be swept, a gate parameter the algorithm does not
  have, an empty value list, or any setting's out-of-range value (named in the message).
  """
  grid = grid or {}
  for name, values in grid.items():
    if name not in SWEEPABLE:
      raise ValueError(f"cannot sweep {name!r}; sweepable fields: {', '.join(SWEEPABLE)}")
    gate_fields = ALGOS.get(config.gate_algo, (None, ()))[1]
    if name in GATE_FIELDS and name not in gate_fields:
      raise ValueError(f"{name} is not a parameter of algo {config.algo!r} (its gate parameters: "
                       f"{', '.join(gate_fields) or 'none'})")
    rule_fields = RULE_HPARAMS.get(config.update_rule, ())
    all_rule_fields = {f for fields in RULE_HPARAMS.values() for f in fields}
    if name in all_rule_fields and name not in rule_fields:
      raise ValueError(f"{name} is not a parameter of algo {config.algo!r} (its update-rule "
                       f"parameters: {', '.join(rule_fields) or 'none'})")
    if len(values) == 0:
      raise ValueError(f"sweep over {name!r} needs at least one value")
  return [config.replace(**setting).validate() for setting in expand_grid(grid)]


class Sweep:
  """A compiled sweep of `num_seeds` seeds × the settings of `grid` around one `Trainer`."""

  def __init__(self, config: TrainConfig, grid: dict[str, Sequence[Any]] | None = None,
               num_seeds: int = 1, seed: int = 0, devices: Sequence[jax.Device] | None = None,
               data_parallel: int | None = None):
    """
    Args:
      config: the base configuration; grid: {sweepable field: values} (cartesian product).
      num_seeds, seed: seeds per setting, and the seed the run keys are split from.
      devices: devices to use (default: all).
      data_parallel: devices each run's envs are split over (must divide num_envs). None:
        automatic, the devices left over after splitting the runs on accelerators (largest
        usable divisor), 1 on CPU.
    """
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds <= 0:
      raise ValueError(f"seeds must be a positive integer, got seeds={num_seeds!r}")
    self.config = config
    self.grid = {k: list(v) for k, v in (grid or {}).items()}
    self.configs = check_grid(config, self.grid)
    if len({c.target_kl is None for c in self.configs}) > 1:
      raise ValueError(f"a sweep over target_kl needs a number in every setting (the width "
                       f"controller is on or off for the whole sweep), got "
                       f"{self.grid.get('target_kl')!r}")
    self.settings = expand_grid(self.grid)
    self.num_settings, self.num_seeds = len(self.settings), num_seeds
    self.num_runs = self.num_settings * num_seeds
    all_devices = list(devices if devices is not None else jax.devices())
    self.data_parallel = self._choose_data_parallel(all_devices, data_parallel)
    # Static structure from a setting (a swept target_kl switches the width controller on).
    self.trainer = Trainer(self.configs[0], num_devices=self.data_parallel)
    hp = stack_hparams([hparams_from_config(c) for c in self.configs])  # [H]
    self.hparams = jax.tree.map(lambda x: jnp.repeat(x, num_seeds, axis=0), hp)  # [R]
    seed_keys = jax.random.split(jax.random.key(seed), num_seeds)
    self.keys = jnp.tile(seed_keys, (self.num_settings,))  # [R], run h·S + s gets seed s
    self.seed_of_run = np.tile(np.arange(num_seeds), self.num_settings)
    self.setting_of_run = np.repeat(np.arange(self.num_settings), num_seeds)
    dp = self.data_parallel
    run_devices = self._choose_run_devices(all_devices[:len(all_devices) // dp])
    self.devices = all_devices[:run_devices * dp]
    self.mesh = Mesh(np.asarray(self.devices).reshape(run_devices, dp), (RUN_AXIS, DP_AXIS))
    self._state_partition = state_partition(RUN_AXIS, DP_AXIS if dp > 1 else None)
    self._chunks = {}

  def _choose_data_parallel(self, devices, requested):
    """Devices per run (see `data_parallel` in `__init__`); raises naming a bad request."""
    cfg = self.config
    if requested is not None:
      if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"data_parallel must be a positive integer, got {requested!r}")
      if requested > len(devices):
        raise ValueError(f"data_parallel={requested} exceeds the {len(devices)} available "
                         f"device(s)")
      return requested  # Trainer checks num_envs and the minibatch layout
    if devices[0].platform == "cpu" or cfg.num_steps % cfg.num_minibatches:
      return 1
    run_devices = self._choose_run_devices(devices)
    spare = len(devices) // run_devices
    return max(d for d in range(1, spare + 1) if cfg.num_envs % d == 0 and spare % d == 0)

  def _choose_run_devices(self, devices) -> int:
    """How many of `devices` (up to all) to split the R runs over, evenly."""
    r = self.num_runs
    return max(n for n in range(1, min(len(devices), r) + 1) if r % n == 0)

  # ------------------------------------------------------------------------------------------
  @property
  def axis_name(self) -> str | None:
    """The data-parallel axis the per-run program averages over (None when dp = 1)."""
    return DP_AXIS if self.data_parallel > 1 else None

  def _sharded(self, fn, in_specs, out_specs):
    """jit(shard_map(vmap(fn))) over the mesh (plain jit(vmap) on one device).

    `fn` is the program of one run (on one device of its dp group); specs are prefix trees.
    """
    if self.num_runs == self.mesh.shape[RUN_AXIS]:
      # One run per device: no vmap (a size-1 vmap measured ~10-20% slower on CPU).
      def vfn(*args):
        out = fn(*jax.tree.map(lambda x: x[0], args))
        return jax.tree.map(lambda x: x[None], out)
    else:
      vfn = jax.vmap(fn)
    if len(self.devices) == 1:
      return jax.jit(vfn)
    return jax.jit(jax.shard_map(vfn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                                 check_vma=False))

  def place(self, tree):
    """Put [R, ...] arrays (keys, hparams, params) on the sweep's devices, split by run."""
    if len(self.devices) == 1:
      return jax.device_put(tree, self.devices[0])
    return jax.device_put(tree, NamedSharding(self.mesh, P(RUN_AXIS)))

  def place_state(self, state: TrainState) -> TrainState:
    """Put a [R, ...] `TrainState` on the sweep's devices (envs split over dp)."""
    if len(self.devices) == 1:
      return jax.device_put(state, self.devices[0])
    return jax.tree.map(
        lambda spec, sub: jax.device_put(sub, NamedSharding(self.mesh, spec)),
        self._state_partition, state, is_leaf=lambda x: isinstance(x, P))

  def init(self) -> TrainState:
    """Initial states of all runs, [R, ...] (envs split over dp)."""
    init = self._sharded(lambda key, hp: self.trainer.init(key, hp, axis_name=self.axis_name),
                         in_specs=P(RUN_AXIS), out_specs=self._state_partition)
    return init(self.place(self.keys), self.place(self.hparams))

  def compile_chunk(self, state: TrainState, num_updates: int):
    """AOT-compiled `chunk(state, hparams) -> (state, metrics[R, num_updates])` (cached)."""
    if num_updates not in self._chunks:
      fn = self._sharded(
          lambda s, hp: self.trainer.train_chunk(s, hp, num_updates, axis_name=self.axis_name),
          in_specs=(self._state_partition, P(RUN_AXIS)),
          out_specs=(self._state_partition, P(RUN_AXIS)))
      self._chunks[num_updates] = fn.lower(state, self.place(self.hparams)).compile()
    return self._chunks[num_updates]

  def chunk_sizes(self) -> list[int]:
    """Sizes of the chunks covering all updates (equal, plus one smaller final if needed)."""
    total, size = self.config.num_updates, self.config.chunk_size
    sizes = [size] * (total // size)
    if total % size:
      sizes.append(total % size)
    return sizes

  def run(self) -> tuple[TrainState, dict[str, np.ndarray]]:
    """The whole sweep without a host loop: final state and metrics with [H, S, U] leading axes."""
    state = self.init()
    metrics = []
    for size in self.chunk_sizes():
      state, m = self.compile_chunk(state, size)(state, self.place(self.hparams))
      metrics.append(m)
    return state, self.reshape(jax.device_get(
        jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *metrics)))

  def reshape(self, metrics: dict[str, Any]) -> dict[str, np.ndarray]:
    """[R, ...] → [H, S, ...]."""
    return {k: np.asarray(v).reshape((self.num_settings, self.num_seeds) + np.shape(v)[1:])
            for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------
# Data-parallel training of one run over devices.


def state_partition(run_axis: str | None, device_axis: str | None) -> TrainState:
  """`PartitionSpec`s of a `TrainState` (a prefix tree): env state and observations split along
  their env axis over `device_axis` (data-parallel), everything else replicated over it; a
  leading run axis (sweeps) split over `run_axis`. `None` for an axis that is not used.
  """
  lead = () if run_axis is None else (run_axis,)
  shared, per_env = P(*lead), P(*lead, device_axis)
  return TrainState(params=shared, opt_state=shared, env_state=per_env, obs=per_env,
                    obs_stats=shared, key=shared, update=shared, gate_width=shared)


def data_parallel_train(trainer: Trainer, key: jax.Array, hp: HParams, num_updates: int,
                        devices: Sequence[jax.Device] | None = None, axis_name: str = "dp"):
  """Train one run data-parallel over `devices` (`trainer.num_devices` of them).

  Each device steps num_envs/devices of the envs; gradients, advantage and observation
  statistics and metrics are averaged with collectives, so the result equals one device
  training all num_envs envs with the same key (to float tolerance:
  tests/test_train_data_parallel.py). Returns (state, metrics) laid out as on one device:
  params replicated, env state and observations split over the devices along the env axis.
  """
  devices = list(devices if devices is not None else jax.devices())
  if trainer.num_devices != len(devices):
    raise ValueError(f"the trainer was built for num_devices={trainer.num_devices} but "
                     f"{len(devices)} devices were given")
  mesh = Mesh(np.asarray(devices), (axis_name,))
  impl = jax.random.key_impl(key)

  def per_device(key_data):
    k = jax.random.wrap_key_data(key_data, impl=impl)
    state = trainer.init(k, hp, axis_name=axis_name)
    return trainer.train_chunk(state, hp, num_updates, axis_name=axis_name)

  # The key is built with a callback so that it also works when `devices` span several
  # processes (multi-host, after `distributed.initialize_distributed`).
  key_data = np.asarray(jax.random.key_data(key))
  keys = jax.make_array_from_callback(key_data.shape, NamedSharding(mesh, P()),
                                      lambda index: key_data[index])
  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(),
                             out_specs=(state_partition(None, axis_name), P()),
                             check_vma=False))
  return fn(keys)
