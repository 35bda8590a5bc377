"""Multi-process JAX over loopback: two local CPU processes, two devices each, one pmean.

Each process runs in its own subprocess with a timeout, so a hang fails the test in seconds.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rgpo_jax.training import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    from rgpo_jax.training.distributed import initialize_distributed, is_primary
    pid = int(sys.argv[1])
    info = initialize_distributed({address!r}, num_processes=2, process_id=pid, timeout_s=60)
    import jax.numpy as jnp
    from jax import lax
    from jax.experimental import multihost_utils
    # this process's two devices hold the values 10*pid + [1, 2]
    local = jnp.array([10.0 * pid + 1.0, 10.0 * pid + 2.0])
    mean = jax.pmap(lambda x: lax.pmean(x, "d"), axis_name="d")(local)
    total = jax.pmap(lambda x: lax.psum(x, "d"), axis_name="d")(local)
    gathered = multihost_utils.process_allgather(jnp.array([pid * 1.0]))
    print("RESULT " + json.dumps(dict(info=list(info), mean=mean.tolist(), total=total.tolist(),
                                      gathered=gathered.ravel().tolist(),
                                      primary=is_primary())), flush=True)
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]



def _run_workers(script: str, args: list[str], timeout: float) -> list:
  """Start one CPU process per argument, all at once; return each one's `RESULT {json}` line.

  Every process is killed if any fails or time runs out, so a hang fails the test, not CI."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, "-c", script, arg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env) for arg in args]
  results = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      assert p.returncode == 0, err[-3000:]
      line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
      # raw_decode: the JSON value alone, even if another writer's text followed it on the line
      results.append(json.JSONDecoder().raw_decode(line[len("RESULT "):])[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return results

def test_two_processes_pmean_over_all_four_devices():
  address = f"127.0.0.1:{_free_port()}"
  script = _WORKER.format(repo=REPO, address=address)
  results = _run_workers(script, ["0", "1"], timeout=90)
  # values over the 4 global devices: 1, 2, 11, 12 → mean 6.5, sum 26
  for pid, r in enumerate(results):
    assert r["info"] == [pid, 2, 2, 4]
    assert r["mean"] == [6.5, 6.5]
    assert r["total"] == [26.0, 26.0]
    assert r["gathered"] == [0.0, 1.0]
    assert r["primary"] == (pid == 0)


def test_single_process_is_a_no_op():
  assert distributed.initialize_distributed() == distributed.info()
  assert distributed.info().process_count == 1 and distributed.is_primary()


@pytest.mark.parametrize("args, match", [
    (("127.0.0.1:1234", 0, 0), "num_processes must be a positive integer, got 0"),
    (("127.0.0.1:1234", 2, 2), r"process_id must be in \[0, 2\), got 2"),
    (("localhost", 2, 1), "coordinator_address must be 'host:port'.*got 'localhost'"),
    ((None, 2, 0), "coordinator_address must be 'host:port'.*got None"),
])
def test_bad_arguments_raise_before_initialising(args, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize_distributed(*args)


_TRAIN_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import jax
    mode = sys.argv[1]
    if mode != "single":  # two processes with one device each
      from rgpo_jax.training.distributed import initialize_distributed
      initialize_distributed({address!r}, num_processes=2, process_id=int(mode), timeout_s=60)
    import numpy as np
    from rgpo_jax.training import TrainConfig, Trainer, hparams_from_config, make_train
    from rgpo_jax.training.sweep import data_parallel_train
    cfg = TrainConfig(num_envs=4, num_steps=8, total_steps=96, update_epochs=1,
                      num_minibatches=2, hidden=(8,), normalize_obs=True)
    key = jax.random.key(5)
    if mode == "single":  # the reference: one process, one device, all 4 envs
      state, _ = jax.jit(make_train(cfg))(key)
    else:
      assert len(jax.devices()) == 2
      state, _ = data_parallel_train(Trainer(cfg, num_devices=2), key, hparams_from_config(cfg),
                                     cfg.num_updates)
    shard = lambda x: np.asarray(x.addressable_shards[0].data).ravel()
    params = np.concatenate([shard(x) for x in jax.tree.leaves(state.params)])
    count = float(shard(state.obs_stats.count)[0])
    print("RESULT " + json.dumps(dict(params=params.tolist(), count=count)), flush=True)
""")


def test_data_parallel_training_across_two_processes_matches_one_device():
  """Data-parallel training over 2 processes × 1 device equals 1 device with all the envs."""
  address = f"127.0.0.1:{_free_port()}"
  script = _TRAIN_WORKER.format(repo=REPO, address=address)
  results = _run_workers(script, ["0", "1", "single"], timeout=240)
  p0, p1, ref = (np.asarray(r["params"]) for r in results)
  np.testing.assert_array_equal(p0, p1)  # every process holds the same (pmean-ed) params
  np.testing.assert_allclose(p0, ref, rtol=1e-4, atol=1e-6)
  # observation statistics merged over both processes: 4 initial + 4 envs · 8 steps · 3 updates
  assert results[0]["count"] == results[2]["count"] == 4 + 4 * 8 * 3
