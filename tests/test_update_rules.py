"""Update rules: TRPO's natural-gradient step (CG vs an explicit Fisher solve, the KL-bounded
line search), AWR's weights, and the configuration checks of both (float64 where numeric)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgpo_jax import distributions, losses
from rgpo_jax.training import TrainConfig, Trainer
from rgpo_jax.training.sweep import check_grid
from rgpo_jax.training.update_rules import RULES
from rgpo_jax.training.update_rules.natural_gradient import (backtracking_line_search,
                                                             conjugate_gradient,
                                                             fisher_vector_product,
                                                             natural_gradient_step)
from rgpo_jax.training.update_rules.weighted_regression import awr_weights

N, OBS = 64, 3


def _categorical_policy(num_actions=4):
  """Linear softmax policy, θ = (W [OBS, A], b [A]) flat."""
  def dist(theta, obs):
    w = theta[:OBS * num_actions].reshape(OBS, num_actions)
    return distributions.Categorical(obs @ w + theta[OBS * num_actions:])
  return dist, OBS * num_actions + num_actions


def _gaussian_policy(action_dim=2):
  """Linear-mean Gaussian with a state-independent log-std, θ = (W [OBS, D], log σ [D])."""
  def dist(theta, obs):
    w = theta[:OBS * action_dim].reshape(OBS, action_dim)
    return distributions.Gaussian(obs @ w, theta[OBS * action_dim:])
  return dist, OBS * action_dim + action_dim


def _problem(kind, seed=0):
  """(surrogate(θ), kl(θ) = mean KL(π_old‖π_θ), θ_old, n) for a small policy, float64."""
  dist, n = _categorical_policy() if kind == "categorical" else _gaussian_policy()
  k_theta, k_obs, k_act, k_adv = jax.random.split(jax.random.key(seed), 4)
  theta_old = 0.5 * jax.random.normal(k_theta, (n,), jnp.float64)
  obs = jax.random.normal(k_obs, (N, OBS), jnp.float64)
  old = dist(theta_old, obs)
  action = old.sample(k_act)
  old_log_prob = old.log_prob(action)
  adv = jax.random.normal(k_adv, (N,), jnp.float64)

  def surrogate(theta):  # TRPO's own: mean(r·Â)
    return jnp.mean(jnp.exp(dist(theta, obs).log_prob(action) - old_log_prob) * adv)

  def kl(theta):
    return jnp.mean(old.kl(dist(theta, obs)))

  return surrogate, kl, theta_old, n


KINDS = ("categorical", "gaussian")


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("kind", KINDS)
def test_cg_direction_equals_explicit_fisher_solve(kind):
  surrogate, kl, theta, n = _problem(kind)
  damping, max_kl = 0.1, 0.01
  v = jax.random.normal(jax.random.key(1), (n,), jnp.float64)

  @jax.jit
  def compute():
    fisher = jax.hessian(kl)(theta)  # F = ∇² mean KL(π_old‖π_θ) at θ_old
    fvp = fisher_vector_product(kl, theta, damping)
    x, residual = conjugate_gradient(fvp, jax.grad(surrogate)(theta), 2 * n)
    step = natural_gradient_step(surrogate, kl, theta, max_kl, damping, 2 * n)
    return fisher, jax.grad(surrogate)(theta), fvp(v), x, residual, step

  fisher, g, fv, x, residual, step = compute()
  assert np.allclose(fisher, fisher.T) and np.linalg.eigvalsh(fisher).min() > -1e-10
  expected = np.linalg.solve(fisher + damping * np.eye(n), g)
  np.testing.assert_allclose(fv, (fisher + damping * np.eye(n)) @ v, rtol=1e-10, atol=1e-12)
  assert np.linalg.norm(x - expected) / np.linalg.norm(expected) < 1e-6
  assert residual < 1e-6

  # The step is scaled so that its damped quadratic KL model equals max_kl.
  a = fisher + damping * np.eye(n)
  scale = np.sqrt(max_kl / (0.5 * expected @ a @ expected))
  np.testing.assert_allclose(step.full_step, scale * expected, rtol=1e-6)
  np.testing.assert_allclose(0.5 * step.full_step @ a @ step.full_step, max_kl, rtol=1e-8)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("kind", KINDS)
def test_accepted_step_keeps_exact_mean_kl_within_max_kl(kind):
  surrogate, kl, theta, n = _problem(kind)

  @jax.jit
  def run(max_kl):
    step = natural_gradient_step(surrogate, kl, theta, max_kl, 0.1, 10)
    return step, backtracking_line_search(surrogate, kl, theta, step.full_step, max_kl, 10, 0.8)

  for max_kl in (0.001, 0.01, 0.05):
    step, search = run(max_kl)
    assert bool(search.accepted)
    exact_kl = float(kl(search.params))  # the exact mean KL, recomputed independently
    assert 0 < exact_kl <= max_kl
    np.testing.assert_allclose(float(search.kl), exact_kl, rtol=1e-12)
    assert float(surrogate(search.params)) > float(surrogate(theta))
    k = int(search.steps) - 1  # the accepted trial is θ + 0.8ᵏ·s
    np.testing.assert_allclose(search.params, theta + 0.8 ** k * step.full_step, rtol=1e-12)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("kind", KINDS)
def test_step_that_breaks_the_trust_region_is_rejected_and_params_unchanged(kind):
  surrogate, kl, theta, n = _problem(kind)
  max_kl = 0.01
  step = jax.jit(lambda: natural_gradient_step(surrogate, kl, theta, max_kl, 0.1, 10))().full_step
  search_fn = jax.jit(lambda s, num: backtracking_line_search(surrogate, kl, theta, s, max_kl,
                                                              num, 0.8), static_argnums=1)
  # 50× the step with a single trial: the KL is far beyond max_kl.
  assert float(kl(theta + 50 * step)) > max_kl
  search = search_fn(50 * step, 1)
  assert not bool(search.accepted) and int(search.steps) == 1 and float(search.kl) == 0.0
  np.testing.assert_array_equal(search.params, theta)
  # The opposite direction lowers the surrogate at every trial: rejected after all 10.
  search = search_fn(-step, 10)
  assert not bool(search.accepted) and int(search.steps) == 10
  np.testing.assert_array_equal(search.params, theta)


@pytest.mark.usefixtures("x64")
def test_natural_step_vmaps_over_max_kl():
  surrogate, kl, theta, _ = _problem("categorical")

  def run(max_kl):
    step = natural_gradient_step(surrogate, kl, theta, max_kl, 0.1, 10)
    return backtracking_line_search(surrogate, kl, theta, step.full_step, max_kl, 10, 0.8)

  radii = jnp.array([0.002, 0.01, 0.05])
  batched = jax.jit(jax.vmap(run))(radii)
  single_fn = jax.jit(run)
  for i, r in enumerate(radii):
    single = single_fn(r)
    np.testing.assert_allclose(batched.params[i], single.params, rtol=1e-10)
    assert int(batched.steps[i]) == int(single.steps) and float(batched.kl[i]) <= float(r)


def test_cg_of_zero_right_hand_side_is_zero_without_nan():
  x, residual = conjugate_gradient(lambda v: 2.0 * v, jnp.zeros(5), 10)
  assert np.all(np.asarray(x) == 0) and float(residual) == 0.0


@pytest.mark.usefixtures("x64")
def test_awr_weights_match_the_closed_form():
  adv = np.array([-30.0, -1.0, 0.0, 0.3, 1.0, 2.9, 3.1, 50.0, 1e4])
  for beta, w_max in ((1.0, 20.0), (0.5, 20.0), (0.05, 3.0)):
    expected = np.minimum(np.exp(np.minimum(adv / beta, 700.0)), w_max)
    np.testing.assert_allclose(awr_weights(jnp.asarray(adv), beta, w_max), expected, rtol=1e-12)
  # No overflow or NaN in the gradient path for huge advantages (the weights are stop-gradient
  # in the rule, but the function itself stays finite).
  g = jax.grad(lambda a: jnp.sum(awr_weights(a, 0.05, 20.0)))(jnp.asarray(adv))
  assert np.all(np.isfinite(g))


def test_trpo_trust_region_also_bounds_the_sampled_kl_estimate():
  """The trainer reports approx_kl, k3 on the rollout's own actions. The line search bounds it
  beside the exact KL: when the recorded log-probs put the estimate at ≈ 0.149 for every
  candidate (log π_old recorded 0.5 below the truth: k3 = e^0.5 − 1 − 0.5), no step is taken,
  although the exact KL alone would accept one."""
  from rgpo_jax.networks import ActorCritic
  from rgpo_jax.training import hparams_from_config
  from rgpo_jax.training.update_rules.base import Batch
  from rgpo_jax.training.update_rules.natural_gradient import policy_params

  cfg = TrainConfig(algo="trpo", num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1,
                    hidden=(8,))
  trainer, hp = Trainer(cfg), hparams_from_config(cfg)
  state = trainer.init(jax.random.key(0), hp)
  k_obs, k_act, k_adv = jax.random.split(jax.random.key(1), 3)
  n = cfg.num_envs * cfg.num_steps
  obs = jax.random.normal(k_obs, (n, 4))
  dist = trainer.network.apply(state.params, obs, method=ActorCritic.policy)
  action = dist.sample(k_act)
  zeros = jnp.zeros(n)
  env_ids = trainer.env_ids()

  @jax.jit
  def update(log_prob):
    batch = Batch(obs, action, log_prob, zeros, jax.random.normal(k_adv, (n,)), zeros)
    params, _, metrics = trainer.rule.update(state.params, state.opt_state, hp, batch,
                                             jax.random.key(2), hp.lr, env_ids)
    new_dist = trainer.network.apply(params, obs, method=ActorCritic.policy)
    sampled = jnp.mean(losses.kl_k3(log_prob, new_dist.log_prob(action)))
    return policy_params(params), metrics, sampled

  truth = dist.log_prob(action)
  params, metrics, sampled = update(truth)
  assert float(metrics["step_accepted"]) == 1.0
  assert 0 < float(sampled) <= 0.01 and 0 < float(metrics["kl_after_step"]) <= 0.01
  params, metrics, sampled = update(truth - 0.5)
  assert float(metrics["step_accepted"]) == 0.0 and float(metrics["kl_after_step"]) == 0.0
  assert float(sampled) == pytest.approx(np.exp(0.5) - 1.5, rel=1e-5)
  for new, old in zip(jax.tree.leaves(params), jax.tree.leaves(policy_params(state.params))):
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


def test_every_algo_builds_its_update_rule():
  for algo, rule in (("rgpo", "gated"), ("ppo", "gated"), ("trpo", "natural_gradient"),
                     ("awr", "weighted_regression")):
    cfg = TrainConfig(algo=algo, hidden=(8,))
    assert cfg.update_rule == rule
    assert isinstance(Trainer(cfg).rule, RULES[rule])
  assert TrainConfig(algo="trpo").gate_family == "importance"
  assert TrainConfig(algo="trpo", trpo_gate="rgpo", k=2.0).gate_params() == {"k": 2.0}
  assert TrainConfig(algo="awr").gate_family is None


@pytest.mark.parametrize("changes,message", [
    ({"algo": "sac"}, "unknown algo 'sac'"),
    ({"algo": "trpo", "trpo_gate": "clip"}, "unknown trpo_gate 'clip'"),
    ({"algo": "trpo", "max_kl": 0.0}, "max_kl must be > 0, got max_kl=0.0"),
    ({"algo": "trpo", "max_kl": -0.01}, "max_kl must be > 0, got max_kl=-0.01"),
    ({"algo": "trpo", "cg_iters": 0}, "cg_iters must be a positive integer, got cg_iters=0"),
    ({"algo": "trpo", "cg_damping": -1.0}, "cg_damping must be >= 0, got cg_damping=-1.0"),
    ({"algo": "trpo", "backtrack_iters": 0}, "backtrack_iters must be a positive integer"),
    ({"algo": "trpo", "backtrack_coef": 1.0}, "backtrack_coef must be in (0, 1)"),
    ({"algo": "trpo", "trpo_gate": "ppo", "epsilon": 2.0}, "epsilon must be in (0, 1)"),
    ({"algo": "awr", "awr_beta": 0.0}, "awr_beta must be > 0, got awr_beta=0.0"),
    ({"algo": "awr", "awr_max_weight": -2.0}, "awr_max_weight must be > 0, got awr_max_weight=-2.0"),
])
def test_bad_rule_settings_fail_before_compile_naming_the_value(changes, message):
  with pytest.raises(ValueError) as e:
    TrainConfig(**changes).validate()
  assert message in str(e.value)


@pytest.mark.parametrize("algo,grid,message", [
    ("ppo", {"max_kl": [0.01, 0.02]}, "max_kl is not a parameter of algo 'ppo'"),
    ("trpo", {"awr_beta": [0.5, 1.0]}, "awr_beta is not a parameter of algo 'trpo'"),
    ("awr", {"k": [2.0, 4.0]}, "k is not a parameter of algo 'awr'"),
    ("trpo", {"max_kl": [0.01, 0.0]}, "max_kl must be > 0, got max_kl=0.0"),
])
def test_bad_rule_sweeps_fail_naming_the_field(algo, grid, message):
  with pytest.raises(ValueError) as e:
    check_grid(TrainConfig(algo=algo), grid)
  assert message in str(e.value)


def test_rule_sweeps_are_accepted():
  assert len(check_grid(TrainConfig(algo="trpo"), {"max_kl": [0.005, 0.01, 0.02]})) == 3
  assert len(check_grid(TrainConfig(algo="trpo", trpo_gate="rgpo"), {"k": [2.0, 4.0]})) == 2
  assert len(check_grid(TrainConfig(algo="awr"), {"awr_beta": [0.5, 1.0]})) == 2


def test_command_line_gate_and_rule_parameters_follow_the_update_rule():
  from rgpo_jax.training.cli import check_algo_params
  # TRPO takes its surrogate gate's parameters and its own; AWR only its own.
  check_algo_params(TrainConfig(algo="trpo", trpo_gate="rgpo_sigmoid"), {"k", "max_kl"})
  check_algo_params(TrainConfig(algo="awr"), {"awr_beta", "lr"})
  for config, explicit, message in (
      (TrainConfig(algo="trpo"), {"k"}, "k is not a parameter of algo 'trpo'"),
      (TrainConfig(algo="ppo"), {"max_kl"}, "max_kl is not a parameter of algo 'ppo'"),
      (TrainConfig(algo="awr"), {"cg_damping"}, "cg_damping is not a parameter of algo 'awr'")):
    with pytest.raises(ValueError) as e:
      check_algo_params(config, explicit)
    assert message in str(e.value)
