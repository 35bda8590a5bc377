"""Ctrl-C on `rgpo train` (a real SIGINT to a subprocess): the current chunk finishes, a
checkpoint and the metrics so far are written, ONE line says how to resume, the exit status
is 130 with no traceback, and resuming ends bit-identical to the uninterrupted run.

Three processes (uninterrupted, interrupted, resumed) share a persistent compilation cache,
so the training program is compiled once.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 envs × 16 steps, 4096 updates in chunks of 16: long enough to be interrupted mid-run.
TINY = ["train", "--num-envs", "2", "--num-steps", "16", "--total-steps", str(4096 * 32),
        "--update-epochs", "1", "--num-minibatches", "2", "--hidden", "8",
        "--updates-per-chunk", "16", "--no-progress", "--no-cpu-devices"]


def _env(cache):
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
              JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


# `rgpo ARGV` with Python's own Ctrl-C handling even where this test runs as a shell's
# background job (which starts children with SIGINT ignored).
_RGPO = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from rgpo_jax.cli import main; sys.exit(main(sys.argv[1:]))")


def _rgpo(argv, cache):
  return subprocess.Popen([sys.executable, "-c", _RGPO, *argv], env=_env(cache), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"rgpo did not finish in {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
  return proc.returncode, out, err


def _interrupt_once_training(proc, metrics, timeout=300):
  """Sends SIGINT as soon as the first chunk's metrics are on disk."""
  deadline = time.monotonic() + timeout
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    if proc.poll() is not None or time.monotonic() > deadline:
      return  # _finish reports it
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)


def _summary(run):
  with open(os.path.join(run, "summary.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("interrupt")
  cache = str(base / "jax_cache")
  full, stopped = str(base / "full"), str(base / "stopped")
  rc, out, err = _finish(_rgpo(TINY + ["--out", full], cache))
  assert rc == 0, err[-3000:]
  proc = _rgpo(TINY + ["--out", stopped], cache)
  _interrupt_once_training(proc, os.path.join(stopped, "metrics.jsonl"))
  interrupted = _finish(proc)
  with open(os.path.join(stopped, "metrics.jsonl")) as f:
    lines_at_stop = sum(1 for _ in f)
  checkpoints_at_stop = sorted(os.listdir(os.path.join(stopped, "checkpoints")))
  resumed = _finish(_rgpo(["train", "--resume", stopped, "--no-progress"], cache))
  return full, stopped, interrupted, lines_at_stop, checkpoints_at_stop, resumed


def test_sigint_saves_and_prints_one_resume_line_without_traceback(runs):
  _, stopped, (rc, out, err), lines_at_stop, checkpoints_at_stop, _ = runs
  assert rc == 130, (out[-2000:], err[-3000:])
  resume_lines = [l for l in (out + err).splitlines() if "resume with" in l]
  assert len(resume_lines) == 1, err
  line = resume_lines[0]
  assert line.endswith(f"checkpoint and metrics saved; resume with: rgpo train --resume "
                       f"{stopped}"), line
  update = int(line.split("interrupted at update ")[1].split(" ")[0])
  assert 0 < update < 4096 and update % 16 == 0  # a chunk boundary
  assert checkpoints_at_stop == [str(update)]  # the default saves by time: only this one
  assert lines_at_stop == update  # one run: one metrics line per update, up to the checkpoint
  for noise in ("Traceback", "KeyboardInterrupt", "Event loop is closed", "Exception"):
    assert noise not in out + err, err[-3000:]


def test_resumed_run_equals_the_uninterrupted_one(runs):
  full, stopped, _, _, _, (rc, out, err) = runs
  assert rc == 0, err[-3000:]
  assert "resuming " + stopped + " from update" in out
  assert _summary(stopped)["params_checksum"] == _summary(full)["params_checksum"]
  with open(os.path.join(full, "metrics.jsonl")) as f, \
      open(os.path.join(stopped, "metrics.jsonl")) as g:
    assert f.read() == g.read()
