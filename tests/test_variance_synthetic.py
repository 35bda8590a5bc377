"""Synthetic variance instrument: samplers, exact moments, the compiled grid, the CLI."""

import csv
import math
import os

import jax
import numpy as np
import pytest
from scipy import optimize

from rgpo_jax import gates
from rgpo_jax import variance as V
from rgpo_jax.variance import cli as variance_cli


# ------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_lognormal_sampler_matches_closed_form_moments(sigma):
  n = 400_000
  r = np.asarray(V.sample_ratios(jax.random.key(1), "lognormal", sigma, (n,)), np.float64)
  # E[r] = 1, E[r²] = exp(σ²); standard errors from the closed-form E[r²], E[r⁴].
  m2, m4 = math.exp(sigma ** 2), math.exp(6 * sigma ** 2)
  assert abs(r.mean() - 1.0) < 5 * math.sqrt((m2 - 1) / n)
  assert abs((r ** 2).mean() - m2) < 5 * math.sqrt((m4 - m2 ** 2) / n)


@pytest.mark.parametrize("alpha", [1.2, 3.0])
def test_lomax_sampler_has_unit_mean_and_pareto_tail(alpha):
  n = 400_000
  r = np.asarray(V.sample_ratios(jax.random.key(2), "lomax", alpha, (n,)), np.float64)
  lam = alpha - 1.0
  for x in (0.1, 1.0, 10.0, 100.0):  # P(r > x) = (1 + x/λ)^−α
    p = (1 + x / lam) ** -alpha
    assert abs((r > x).mean() - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-6, x
  if alpha > 2:
    assert abs(r.mean() - 1.0) < 5 * math.sqrt((4.0 - 1.0) / n)  # E[r²] = 4 for α = 3


def test_quadrature_density_reproduces_closed_form_moments():
  y = np.linspace(-50.0, 60.0, 200_001)
  for law in (V.lognormal(0.5), V.lognormal(2.0), V.lomax(3.0), V.lomax(1.5)):
    p = np.exp(law.log_density_of_log_ratio(y))
    assert np.trapezoid(p, y) == pytest.approx(1.0, abs=1e-7)
    assert np.trapezoid(np.exp(y) * p, y) == pytest.approx(1.0, rel=1e-5)
  assert V.lognormal(1.0).moment(2) == pytest.approx(math.e)
  assert V.lomax(3.0).moment(2) == pytest.approx(4.0)
  assert V.lomax(2.0).moment(2) == math.inf


def test_law_validation_names_the_bad_value():
  with pytest.raises(ValueError, match="alpha=1.0"):
    V.lomax(1.0)
  with pytest.raises(ValueError, match="sigma=-1"):
    V.lognormal(-1)
  with pytest.raises(ValueError, match="noise=0"):
    V.AdvantageModel(noise=0.0).validate()


# ------------------------------------------------------------------------------ exact moments


def _sigmoid_weight(r, k):
  s = 1.0 / (1.0 + np.exp(-k * (r - 1.0)))
  return k * s * (1 - s) * r


@pytest.mark.parametrize("k", [1.0, 2.0, 4.0, 8.0])
def test_weight_sup_of_sigmoid_matches_scipy_maximum(k):
  res = optimize.minimize_scalar(lambda r: -_sigmoid_weight(r, k), bounds=(0.0, 10.0),
                                 method="bounded", options=dict(xatol=1e-10))
  assert V.weight_sup(gates.sigmoid(k)) == pytest.approx(-res.fun, rel=1e-7)


def test_weight_sup_of_hard_and_unbounded_gates():
  assert V.weight_sup(gates.truncated(0.5, 2.0)) == pytest.approx(2.0, abs=1e-4)
  assert V.weight_sup(gates.reinforce()) == pytest.approx(1.0)
  assert V.weight_sup(gates.importance()) == math.inf
  assert V.weight_sup(gates.ppo_clip(0.2)) == math.inf  # w = r for Â < 0 and r > 1 − ε


def test_exact_moments_match_independent_float64_monte_carlo_for_sapo():
  # SAPO: w = 4σ(τ(r−1))(1−σ)·r with τ = 1 for Â ≥ 0, 1.05 for Â < 0 (sign-dependent).
  law, model = V.lognormal(0.5), V.AdvantageModel(offset=0.2, slope=1.0, noise=0.7,
                                                    score_std=0.5)
  rng = np.random.default_rng(0)
  n = 2_000_000
  r = np.exp(0.5 * rng.standard_normal(n) - 0.125)
  adv = 0.2 + np.tanh(np.log(r)) + 0.7 * rng.standard_normal(n)
  score = 1.0 + 0.5 * rng.standard_normal(n)
  tau = np.where(adv >= 0, 1.0, 1.05)
  s = 1.0 / (1.0 + np.exp(-tau * (r - 1.0)))
  x = 4 * s * (1 - s) * r * adv * score
  e = V.exact_moments(gates.sapo(1.0, 1.05), law, model)
  se = x.std() / math.sqrt(n)
  assert abs(e.mean - x.mean()) < 5 * se
  assert e.second_moment == pytest.approx((x ** 2).mean(), rel=0.01)
  target = (r * adv * score).mean()
  assert abs(e.target - target) < 5 * (r * adv * score).std() / math.sqrt(n)
  assert e.variance <= e.bound


def test_importance_sampling_is_unbiased_and_diverges_for_heavy_tails():
  is_gate = gates.importance()
  e = V.exact_moments(is_gate, V.lognormal(1.0))
  assert e.bias == pytest.approx(0.0, abs=1e-9)
  assert math.isfinite(e.variance) and e.bound == math.inf
  assert V.exact_moments(is_gate, V.lomax(1.5)).variance == math.inf


# ------------------------------------------------------------------------------ the grid


@pytest.fixture(scope="module")
def small_grid():
  law = V.lognormal(0.5)
  estimators = [gates.sigmoid(4.0), gates.sigmoid(1.0), gates.sapo(), gates.truncated(0.5, 2.0),
                gates.importance()]
  summary = V.synthetic_grid(jax.random.key(3), [law, V.lomax(3.0)], estimators,
                             n_values=(100, 1000), replications=16, chunk=1000)
  return law, estimators, summary


def test_grid_matches_exact_mean_and_variance(small_grid):
  law, estimators, s = small_grid
  total = 16 * 1000
  for ei, gate in enumerate(estimators):
    e = V.exact_moments(gate, law)
    # The mean of all 16000 samples (every n pools the same stream) within 5 standard errors.
    assert abs(s.estimator_mean[0, ei, 0] - e.mean) < 5 * math.sqrt(e.variance / total), ei
    # Mean per-sample variance (unbiased s²) within 10 % of Var(X) (E[X⁴] finite here).
    assert s.sample_variance_mean[0, ei, 0] == pytest.approx(e.variance, rel=0.1), ei
    # Var of the n = 100 batch means: 160 batches, n·Var(X̄) ≈ Var(X) (chi-square, ±35 %).
    assert 100 * s.estimator_variance[0, ei, 0] == pytest.approx(e.variance, rel=0.35), ei
  assert list(s.replications) == [160, 16]


def test_grid_rejects_inconsistent_sizes():
  with pytest.raises(ValueError, match="n=300"):
    V.synthetic_grid(jax.random.key(0), [V.lomax(2.0)], [gates.sigmoid()],
                     n_values=(100, 300, 1000), chunk=100)
  with pytest.raises(ValueError, match="chunk=64"):
    V.synthetic_grid(jax.random.key(0), [V.lomax(2.0)], [gates.sigmoid()],
                     n_values=(100, 1000), chunk=64)


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("variance") / "run"
  assert variance_cli.main(["--synthetic", "--quick", "--out", str(out)]) == 0
  with open(out / "synthetic_mc.csv") as f:
    rows = list(csv.DictReader(f))
  return out, rows


def test_cli_writes_tables_and_plots(quick_run):
  out, rows = quick_run
  for name in ("synthetic_mc.csv", "synthetic_exact.csv", "synthetic_frontier_k.csv",
               "variance_vs_n.png", "bias_variance_frontier.png", "variance_run.json"):
    assert os.path.getsize(out / name) > 0, name
  assert len(rows) == 9 * 12 * 3


def test_bound_holds_on_every_row(quick_run):
  _, rows = quick_run
  checked = 0
  for row in rows:
    bound = float(row["bound"])
    if math.isinf(bound):
      assert row["estimator"] in ("is", "ppo_clip(0.2)")
      continue
    assert float(row["sample_var_median"]) <= bound, row
    assert float(row["sample_var_mean"]) <= bound, row
    assert float(row["exact_var"]) <= bound, row
    checked += 1
  assert checked == 9 * 10 * 3


def test_is_variance_grows_with_n_for_heavy_tails_while_gates_stay_flat(quick_run):
  _, rows = quick_run
  med = {(r["law"], r["estimator"], int(r["n"])): float(r["sample_var_median"]) for r in rows}
  for law in ("lomax(alpha=1.2)", "lomax(alpha=1.5)"):
    assert med[law, "is", 10_000] > 5 * med[law, "is", 100], law
    for gate in ("sigmoid(k=1)", "sigmoid(k=4)", "sigmoid(k=8)", "sapo(1,1.05)", "arctan(1)"):
      assert med[law, gate, 10_000] < 1.5 * med[law, gate, 100], (law, gate)


def test_cli_refuses_non_empty_out(quick_run):
  out, _ = quick_run
  with pytest.raises(SystemExit, match="another variance run"):
    variance_cli.main(["--synthetic", "--quick", "--out", str(out)])


def test_cli_rejects_bad_arguments_before_writing(tmp_path):
  out = tmp_path / "never"
  with pytest.raises(SystemExit, match="n-max must be a power of 10"):
    variance_cli.main(["--synthetic", "--n-max", "3e4", "--out", str(out)])
  with pytest.raises(SystemExit, match="NoSuchEnv-v0"):
    variance_cli.main(["--env", "NoSuchEnv-v0", "--out", str(out)])
  with pytest.raises(SystemExit, match="staleness"):
    variance_cli.main(["--env", "CartPole-v1", "--staleness", "0,x", "--out", str(out)])
  assert not out.exists()
