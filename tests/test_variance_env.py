"""`rgpo variance --env`: real CartPole policies, stale data (needs the trainer)."""

import csv

import pytest

pytest.importorskip("rgpo_jax.training")

from rgpo_jax.variance import cli as variance_cli  # noqa: E402


@pytest.fixture(scope="module")
def env_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("variance_env") / "run"
  assert variance_cli.main(["--env", "CartPole-v1", "--quick", "--out", str(out),
                            "--train-steps", "2048", "--samples", "2048", "--per-sample", "256",
                            "--staleness", "0,3", "--drift-lr", "3e-3",
                            "--estimators", "default,gspo,dpo_drift,gspo_sequence"]) == 0
  with open(out / "env_gradients.csv") as f:
    rows = list(csv.DictReader(f))
  return out, {(int(r["staleness"]), r["estimator"]): r for r in rows}


def test_env_run_writes_tables_and_plots(env_run):
  out, rows = env_run
  assert len(rows) == 2 * 15
  for name in ("env_gradients.csv", "env_ratios.csv", "variance_vs_staleness.png",
               "ratio_distribution.png"):
    assert (out / name).stat().st_size > 0


def test_fresh_data_is_on_policy_for_every_gate(env_run):
  _, rows = env_run
  is_row = rows[0, "is"]
  assert float(is_row["kl"]) < 1e-6 and float(is_row["ess_fraction"]) == pytest.approx(1.0)
  trace = float(is_row["trace_covariance"])
  # w(1) = 1 for IS, PPO, SAPO, erf, arctan, softsign, REINFORCE and the k = 4 sigmoid: the same
  # per-sample gradients; the k = 1 sigmoid has w(1) = 1/4, so 1/16 of the covariance.
  for gate in ("ppo_clip(0.2)", "sigmoid(k=4)", "sapo(1,1.05)", "arctan(1)", "reinforce(w=1)"):
    assert float(rows[0, gate]["trace_covariance"]) == pytest.approx(trace, rel=1e-3), gate
    assert float(rows[0, gate]["relative_distance_to_is"]) < 1e-3, gate
  assert float(rows[0, "sigmoid(k=1)"]["trace_covariance"]) == pytest.approx(trace / 16, rel=1e-3)
  assert float(rows[0, "sigmoid(k=8)"]["relative_distance_to_is"]) == pytest.approx(1.0, rel=1e-3)
  # Variants by autodiff of their loss on sequences of 16 steps (`evaluate_variant`): on fresh
  # data GSPO-token's s_i = 1 and DPO's drift is 0, so C_t = Â_t as for IS: the same mean
  # and per-sample covariance (checks the sequence reshaping, the coefficients' scale N and
  # the subset's alignment). GSPO with the gradient through the mean has C_t = mean_seq Â.
  for variant in ("gspo", "dpo_drift"):
    assert float(rows[0, variant]["trace_covariance"]) == pytest.approx(trace, rel=1e-3), variant
    assert float(rows[0, variant]["relative_distance_to_is"]) < 1e-3, variant
  assert float(rows[0, "gspo_sequence"]["relative_distance_to_is"]) > 1e-2


def test_stale_data_moves_ratios_and_separates_gates(env_run):
  _, rows = env_run
  assert float(rows[3, "is"]["kl"]) > 1e-4
  assert float(rows[3, "is"]["ess_fraction"]) < 1.0
  assert float(rows[3, "sapo(1,1.05)"]["relative_distance_to_is"]) > 1e-4
  assert 0.0 < float(rows[3, "ppo_clip(0.2)"]["acceptance_fraction"]) <= 1.0
  # GSPO's band (1 ± 3e-4) on the sequence ratio rejects most stale sequences.
  assert float(rows[3, "gspo"]["acceptance_fraction"]) < 0.5
