"""Adaptive gate width (`--target-kl`): the control law against a hand computation, the width's
direction under a fake KL sequence, bad input refused before compile, and a sweep over two
targets in one compiled program whose widths follow the measured KL. (Exact resume with the
controller: tests/test_resume.py runs with --target-kl.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import cli, gates
from rgpo_jax.training import gate_width as gw
from rgpo_jax.training.config import TrainConfig, hparams_from_config
from rgpo_jax.training.sweep import Sweep

SIGMOID = gw.ADAPTIVE_FAMILIES["sigmoid"]
PPO = gw.ADAPTIVE_FAMILIES["ppo_clip"]


def _step(width, width0, kl, target, spec):
  return float(gw.update_width(jnp.float32(width), jnp.float32(width0), jnp.float32(kl),
                               jnp.float32(target), spec))


@pytest.mark.parametrize("kl, expected", [
    (0.72, 4.0 * 2.0),             # KL/target − 1 = 35 → error clipped to +1
    (0.03, 4.0 * 1.5),             # proportional: 0.03/0.02 − 1 = 0.5
    (0.021, 4.0 * 1.05),           # 0.021/0.02 − 1 = 0.05
    (0.02, 4.0),                   # at target: unchanged
    (0.017, 4.0 * 0.85),           # 0.017/0.02 − 1 = −0.15
    (0.0, 4.0 * 0.8),              # error clipped to −0.2
])
def test_sigmoid_law_matches_hand_computation(kl, expected):
  assert _step(4.0, 4.0, kl, 0.02, SIGMOID) == pytest.approx(expected, rel=1e-6)


def test_ppo_epsilon_moves_inversely_and_clips():
  # tightness t = 1/ε: KL too high → t·2 (error clipped at +1) → ε = 0.2/2.
  assert _step(0.2, 0.2, 1.0, 0.02, PPO) == pytest.approx(0.1, rel=1e-6)
  assert _step(0.2, 0.2, 0.0, 0.02, PPO) == pytest.approx(0.2 / 0.8, rel=1e-6)
  # ε never exceeds 1 (t ≥ 1), nor goes below ε₀/1024.
  assert _step(0.9, 0.2, 0.0, 0.02, PPO) == pytest.approx(1.0, rel=1e-6)
  assert _step(0.2 / 1024, 0.2, 1.0, 0.02, PPO) == pytest.approx(0.2 / 1024, rel=1e-6)


def test_width_follows_a_fake_kl_sequence_within_its_range():
  width, widths = jnp.float32(4.0), []
  kls = [0.5] * 30 + [0.0] * 80 + [float("nan")]
  for kl in kls:
    width = gw.update_width(width, jnp.float32(4.0), jnp.float32(kl), jnp.float32(0.02), SIGMOID)
    widths.append(float(width))
  widths = np.asarray(widths)
  assert np.all(np.diff(widths[:30]) >= 0) and widths[0] > 4.0
  assert widths[29] == pytest.approx(4.0 * 1024, rel=1e-5)  # clipped at 1024·k₀ (2¹⁰ = 1024)
  assert widths[9] == pytest.approx(4.0 * 1024, rel=1e-5) and widths[8] == 4.0 * 512
  assert np.all(np.diff(widths[30:110]) <= 0) and widths[30] == pytest.approx(widths[29] * 0.8)
  assert widths[109] == pytest.approx(4.0 / 1024, rel=1e-5)  # 1024² · 0.8⁸⁰ < 1
  assert widths[110] == widths[109]  # a non-finite KL leaves the width alone


def test_normalised_gate_keeps_the_on_policy_weight(x64):
  hp = hparams_from_config(TrainConfig(algo="rgpo_sigmoid", k=4.0, target_kl=0.02))
  assert set(hp.gate) == {"k", "scale"}
  template = gates.scaled(gates.sigmoid(4.0))
  gate0 = {name: jnp.float64(v) for name, v in hp.gate.items()}
  for k in (1.0, 4.0, 20.0):
    params = gw.gate_hparams(gate0, jnp.float64(k), SIGMOID)
    gate = gates.Gate(template.name, template.fn, params)
    # w̃(r) = (k₀/k)·k·σ(1−σ)·r with σ = σ(k(r−1)): w̃(1) = k₀/4 = 1 for every k ...
    assert float(gate.weight(1.0, 1.0)) == pytest.approx(1.0, rel=1e-12)
    # ... and the band narrows with k: w̃(1.5) = 4·σ(k/2)(1−σ(k/2))·1.5.
    s = 1.0 / (1.0 + math.exp(-k * 0.5))
    assert float(gate.weight(1.5, 1.0)) == pytest.approx(4.0 * s * (1.0 - s) * 1.5, rel=1e-9)


@pytest.mark.parametrize("changes, named", [
    (dict(target_kl=0.0), "target_kl=0.0"),
    (dict(target_kl=-0.01), "target_kl=-0.01"),
    (dict(target_kl=float("nan")), "target_kl=nan"),
    (dict(target_kl=0.02, algo="importance"), "'importance'"),
    (dict(target_kl=0.02, algo="reinforce"), "'reinforce'"),
    (dict(target_kl=0.02, algo="sapo"), "'sapo'"),
    (dict(target_kl=0.02, algo="trpo", trpo_gate="rgpo"), "'trpo'"),
    (dict(target_kl=0.02, algo="awr"), "'awr'"),
])
def test_bad_target_kl_is_refused_naming_the_value(changes, named):
  with pytest.raises(ValueError, match="target_kl") as info:
    TrainConfig(**changes).validate()
  assert named in str(info.value)


def test_bad_target_kl_on_the_command_line_fails_before_compiling(capsys):
  assert cli.main(["train", "--algo", "awr", "--target-kl", "0.02", "--no-progress",
                   "--out", "/nonexistent/never-written"]) != 0
  err = capsys.readouterr().err
  assert "target_kl=0.02" in err and "'awr'" in err
  # A swept target: every value is checked (the command line's own check sees the default).
  assert cli.main(["train", "--algo", "awr", "--target-kl", "0.01,0.02", "--no-progress",
                   "--out", "/nonexistent/never-written"]) != 0
  err = capsys.readouterr().err
  assert "target_kl=0.01" in err and "'awr'" in err
  with pytest.raises(ValueError, match=r"target_kl=0\.0"):
    Sweep(TINY, {"target_kl": [0.02, 0.0]})
  with pytest.raises(ValueError, match=r"on or off for the whole sweep\), got \[None, 0\.02\]"):
    Sweep(TINY, {"target_kl": [None, 0.02]})


TINY = TrainConfig(num_envs=2, num_steps=16, total_steps=256, num_minibatches=2, update_epochs=2,
                   hidden=(16,), algo="rgpo_sigmoid", lr=0.003, updates_per_chunk=8)  # 8 updates


def test_sweep_over_two_targets_is_one_compile_and_follows_the_law():
  compiles = []

  def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    sweep = Sweep(TINY.replace(target_kl=0.02), {"target_kl": [1e-5, 1.0]}, num_seeds=1)
    state = sweep.init()
    before = len(compiles)
    state, metrics = sweep.compile_chunk(state, 8)(state, sweep.place(sweep.hparams))
    assert len(compiles) - before == 1  # the whole 2-target sweep: one chunk program
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  width = np.asarray(metrics["gate_width"])  # [R=2, 8]: the width each update used
  kl = np.asarray(metrics["approx_kl"])
  assert np.all(width[:, 0] == 4.0)
  # The recorded widths replay the law on the recorded KLs (the state carries the last one).
  for run, target in enumerate((1e-5, 1.0)):
    w = 4.0
    for u in range(8):
      assert width[run, u] == pytest.approx(w, rel=1e-5)
      w = 4.0 * min(max(w / 4.0 * (1.0 + np.clip(kl[run, u] / target - 1.0, -0.2, 1.0)),
                        1 / 1024), 1024)
    assert float(state.gate_width[run]) == pytest.approx(w, rel=1e-5)
  assert float(state.gate_width[0]) > 4.0 > float(state.gate_width[1])  # tight: sharpened
