"""make_train / Trainer: advantages with bootstraps, jit + vmap, all gates, sweeps, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax.training import METRICS, TrainConfig, Trainer, hparams_from_config, make_train
from rgpo_jax.training.config import ALGOS, auto_chunk_size, gate_template
from rgpo_jax.training.io import final_returns
from rgpo_jax.training.sweep import Sweep, check_grid
from rgpo_jax.training.train import Transition, bootstrap_advantages, minibatch_permutations

TINY = TrainConfig(num_envs=2, num_steps=16, total_steps=128, update_epochs=2, num_minibatches=2,
                   hidden=(16, 16))  # 4 updates


@pytest.fixture(scope="module")
def tiny_vmapped():
  train = jax.jit(jax.vmap(make_train(TINY)))
  return train(jax.random.split(jax.random.key(0), 2))


def test_gae_bootstraps_truncated_from_final_obs_value_not_terminated():
  # One env, 4 steps: episode A truncated at t=1, episode B terminated at t=3.
  gamma, lam = 0.9, 0.8
  rewards = np.array([1.0, 2.0, 3.0, 4.0])
  values = np.array([0.5, 0.6, 0.7, 0.8])
  v_final = np.array([0.6, 10.0, 0.8, 99.0])  # V(s'_t): t=1 → V(final obs)=10; t=3 ignored
  term = np.array([0, 0, 0, 1], bool)
  trunc = np.array([0, 1, 0, 0], bool)
  # Plain-loop reference.
  adv = np.zeros(4)
  nxt = 0.0
  for t in reversed(range(4)):
    boot = 0.0 if term[t] else gamma * v_final[t]
    delta = rewards[t] + boot - values[t]
    nxt = delta + (0.0 if (term[t] or trunc[t]) else gamma * lam * nxt)
    adv[t] = nxt
  traj = Transition(obs=None, action=None, log_prob=None, value=jnp.asarray(values[:, None]),
                    reward=jnp.asarray(rewards[:, None]), terminated=jnp.asarray(term[:, None]),
                    truncated=jnp.asarray(trunc[:, None]), final_obs=None, episode_return=None,
                    episode_length=None)
  hp = hparams_from_config(TINY.replace(gamma=gamma, gae_lambda=lam))
  a, ret = bootstrap_advantages(traj, jnp.asarray(v_final[:, None], jnp.float32), hp)
  np.testing.assert_allclose(np.asarray(a)[:, 0], adv, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ret)[:, 0], adv + values, rtol=1e-5)
  # Hand values: t=1 truncated: 2 + 0.9·10 − 0.6 = 10.4; t=3 terminated: 4 − 0.8 = 3.2.
  assert abs(float(a[1, 0]) - 10.4) < 1e-5 and abs(float(a[3, 0]) - 3.2) < 1e-5


def test_make_train_jit_vmap_shapes(tiny_vmapped):
  state, metrics = tiny_vmapped
  assert set(metrics) == set(METRICS)
  for name, v in metrics.items():
    assert v.shape == (2, TINY.num_updates), name
  assert np.all(np.asarray(state.update) == TINY.num_updates)
  for name in ("approx_kl", "entropy", "value_loss", "grad_norm", "gate_mean"):
    assert np.all(np.isfinite(np.asarray(metrics[name]))), name
  # Annealed learning rate: lr·(1 − u/U) for u = 0..U−1.
  np.testing.assert_allclose(np.asarray(metrics["lr"][0]),
                             TINY.lr * (1 - np.arange(4) / 4), rtol=1e-6)
  # RGPO gate k=4 starts at σ(0)=½ with weight 1 on-policy.
  assert abs(float(metrics["gate_mean"][0, 0]) - 0.5) < 0.05
  # Two seeds differ.
  assert not np.allclose(np.asarray(metrics["value_loss"][0]), np.asarray(metrics["value_loss"][1]))


# A non-default value per gate parameter, exact in float32.
_OTHER_VALUE = {"k": 8.0, "epsilon": 0.25, "tau": 3.0, "tau_neg": 2.5, "low": 0.25, "high": 3.0,
                "dual_clip_c": 5.0, "dpo_alpha": 1.5, "dpo_beta": 0.5}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algo_parameter_reaches_the_gate(algo):
  # Each parameter an algo declares (what --k, --tau, ... accept and sweep) must reach the traced
  # gate parameters; rgpo_pessimistic once ran k = 4 whatever --k said.
  base = TrainConfig(algo=algo)
  for field in ALGOS[algo][1]:
    value = _OTHER_VALUE[field]
    assert value != getattr(base, field)
    gate = hparams_from_config(base.replace(**{field: value})).gate
    assert value in [float(v) for v in gate.values()], (algo, field, gate)


@pytest.mark.parametrize("algo,family,params", [
    ("dual_clip", "dual_clip", {"epsilon_low": 0.2, "epsilon_high": 0.2, "c": 3.0}),
    ("cispo", "cispo", {"epsilon_low": 0.2, "epsilon_high": 0.2}),
    ("dpo_drift", "dpo_drift", {"alpha": 2.0, "beta": 0.6})])
def test_issue12_gates_are_trainer_algos(algo, family, params):
  gate = gate_template(TrainConfig(algo=algo).validate())
  assert gate.name == family
  assert {k: float(v) for k, v in gate.params.items()} == pytest.approx(params)


def test_issue12_algo_parameters_are_checked_and_scoped():
  with pytest.raises(ValueError, match="c=1.0"):
    TrainConfig(algo="dual_clip", dual_clip_c=1.0).validate()
  with pytest.raises(ValueError, match="dual_clip_c is not a parameter of algo 'ppo'"):
    check_grid(TrainConfig(algo="ppo"), {"dual_clip_c": [4.0]})
  with pytest.raises(ValueError, match="target_kl=0.02.*'cispo' has no gate width"):
    TrainConfig(algo="cispo", target_kl=0.02).validate()


# RGPO runs in the fixture above; the gate library's own tests cover every family's math. Here:
# one clipped, one two-temperature and one band gate through the whole trainer.
@pytest.mark.parametrize("algo", ["ppo", "sapo", "truncated"])
def test_every_gate_trains(algo):
  cfg = TINY.replace(algo=algo, total_steps=64, update_epochs=1, num_minibatches=1, hidden=(8,))
  state, metrics = jax.jit(make_train(cfg))(jax.random.key(1))
  assert np.all(np.isfinite(np.asarray(metrics["policy_loss"])))
  assert np.all(np.isfinite(np.asarray(metrics["approx_kl"])))
  # On the first minibatch of the first update the policy is the behaviour policy: r = 1, so
  # every gate accepts everything (effective update ratio 1).
  assert float(metrics["acceptance_fraction"][0]) == pytest.approx(1.0)


def test_minibatch_permutations_are_permutations():
  p = np.asarray(minibatch_permutations(jax.random.key(0), 3, 100))
  assert p.shape == (3, 100)
  for row in p:
    assert sorted(row.tolist()) == list(range(100))
  assert not np.array_equal(p[0], p[1]) and not np.array_equal(p[0], np.arange(100))


def test_auto_chunk_size_divides():
  assert auto_chunk_size(976) == 61 and 976 % 61 == 0
  assert auto_chunk_size(4) == 1
  assert auto_chunk_size(97) == 5  # prime: 19 chunks of 5 + one of 2


def test_sweep_layout_matches_single_runs(tiny_vmapped):
  # Runs are [H, S]: setting k=4 (h=1), seed s must equal make_train(TINY) with seed key s.
  sweep = Sweep(TINY, {"k": [1.0, 4.0]}, num_seeds=2, seed=0)
  _, metrics = sweep.run()
  assert metrics["approx_kl"].shape == (2, 2, TINY.num_updates)
  _, single = tiny_vmapped  # jax.vmap(make_train(TINY)) over split(key(0), 2)
  for s in range(2):
    for name in ("value_loss", "gate_mean", "approx_kl"):
      np.testing.assert_allclose(metrics[name][1, s], np.asarray(single[name][s]), rtol=1e-4,
                                 atol=1e-6)
  # Same seed, different k: different runs.
  assert not np.allclose(metrics["weight_mean"][0, 1], metrics["weight_mean"][1, 1])


def test_final_returns_weighted_by_episodes():
  ret = np.array([[np.nan] * 9 + [10.0] * 1, [1.0] * 9 + [np.nan]])
  eps = np.array([[0] * 9 + [2], [1] * 9 + [0]], float)
  out = final_returns(ret, eps)  # window: last 1 of 10 updates
  assert out[0] == 10.0 and np.isnan(out[1])


def test_short_cartpole_run_learns():
  cfg = TrainConfig(total_steps=40_960, algo="rgpo")  # 80 updates of 4 envs × 128 steps
  _, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
  ret = np.asarray(metrics["episode_return"])
  eps = np.asarray(metrics["episodes"])
  first = np.nansum(ret[:5] * eps[:5]) / eps[:5].sum()
  last = final_returns(ret[None], eps[None])[0]
  assert first < 40  # random policy: ~20
  assert last > 100, (first, last)


def test_continuous_actions_with_obs_normalisation():
  cfg = TrainConfig(env="Pendulum-v1", num_envs=2, num_steps=16, total_steps=64,
                    update_epochs=1, num_minibatches=1, hidden=(8,), normalize_obs=True)
  state, metrics = jax.jit(make_train(cfg))(jax.random.key(0))
  assert state.params["params"]["log_std"].shape == (1,)
  # Gaussian entropy with the initial log-std 0: ½·log(2πe) ≈ 1.419 per action dimension.
  assert float(metrics["entropy"][0]) == pytest.approx(0.5 * np.log(2 * np.pi * np.e), abs=1e-3)
  # Observation statistics: initial obs + every rollout observation.
  assert float(state.obs_stats.count) == 2 + 2 * 16 * cfg.num_updates
  assert np.all(np.isfinite(np.asarray(metrics["value_loss"])))


def test_next_values_use_final_obs_only_where_truncated():
  cfg = TrainConfig(env="CartPole-v1", env_kwargs=(("max_episode_steps", 5),), num_envs=3,
                    num_steps=12, total_steps=36, hidden=(8,))
  tr = Trainer(cfg)
  hp = hparams_from_config(cfg)
  state = tr.init(jax.random.key(0), hp)
  _, last_obs, traj = jax.jit(tr.rollout)(state.params, state.env_state, state.obs,
                                          state.obs_stats, jax.random.key(1))
  trunc = np.asarray(traj.truncated)
  assert trunc.any() and not trunc.all()
  nv = np.asarray(jax.jit(tr.next_values)(state.params, state.obs_stats, traj, last_obs))
  v = lambda o: float(tr.network.apply(state.params, jnp.asarray(o)[None],
                                       method=tr.network.value)[0])
  obs, final, last = np.asarray(traj.obs), np.asarray(traj.final_obs), np.asarray(last_obs)
  for t in range(12):
    for b in range(3):
      if trunc[t, b]:
        want = v(final[t, b])           # bootstrap from the pre-reset observation
      elif t + 1 < 12:
        want = v(obs[t + 1, b])         # the next observation of the rollout
      else:
        want = v(last[b])
      assert abs(nv[t, b] - want) < 1e-5, (t, b)


def test_minibatches_are_stratified_by_env_and_partition_each_epoch():
  """Each epoch's minibatches partition the batch, and each takes T/M steps of every env (what
  makes data-parallel training equal to one device); different epochs shuffle differently."""
  cfg = TrainConfig(num_envs=3, num_steps=8, num_minibatches=4, update_epochs=2, hidden=(8,))
  tr = Trainer(cfg)
  idx = np.asarray(tr.minibatch_indices(jax.random.key(0), tr.env_ids()))
  t, b, m = 8, 3, 4
  assert idx.shape == (2 * m, t * b // m)
  for epoch in idx.reshape(2, m, -1):
    np.testing.assert_array_equal(np.sort(epoch.ravel()), np.arange(t * b))
    for mb in epoch:
      np.testing.assert_array_equal(np.bincount(mb % b, minlength=b), [t // m] * b)
  assert not np.array_equal(np.sort(idx[:m], axis=1), np.sort(idx[m:], axis=1))
  # M not dividing T (one device): a plain shuffle that still partitions the batch.
  odd = Trainer(cfg.replace(num_steps=6, num_minibatches=4, num_envs=2))
  idx = np.asarray(odd.minibatch_indices(jax.random.key(1), odd.env_ids()))
  for epoch in idx.reshape(2, 4, -1):
    np.testing.assert_array_equal(np.sort(epoch.ravel()), np.arange(12))
  with pytest.raises(ValueError, match="needs num_minibatches=4 to divide num_steps=6"):
    Trainer(cfg.replace(num_steps=6, num_envs=2), num_devices=2)
  with pytest.raises(ValueError, match="num_envs=3 must be divisible"):
    Trainer(cfg, num_devices=2)
