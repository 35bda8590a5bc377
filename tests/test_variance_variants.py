"""The variance instrument's LLM-variant estimator set (`rgpo variance --estimators`)."""

import math

import pytest

from rgpo_jax import variance as V

pytestmark = pytest.mark.usefixtures("x64")


def test_estimator_sets_hold_each_label_once_and_reject_unknown_names():
  labels = [label for label, _ in V.estimator_set("all")]
  assert len(labels) == len(set(labels))
  assert {"is", "dual_clip(0.2,c=3)", "cispo(0.2)", "cispo_cap(5)",
          "detached_sigmoid(k=4)"} <= set(labels)
  assert [label for label, _ in V.estimator_set("default")] == [
      label for label, _ in V.default_estimators()]
  with pytest.raises(ValueError, match="'everything'"):
    V.estimator_set("everything")


@pytest.mark.parametrize("label,sup", [("dual_clip(0.2,c=3)", 3.0), ("cispo(0.2)", 1.2),
                                       ("cispo_cap(5)", 5.0), ("is", math.inf)])
def test_variant_weight_suprema_are_the_clip_bounds(label, sup):
  gate = dict(V.variant_estimators())[label]
  assert V.weight_sup(gate) == pytest.approx(sup, rel=1e-4)


def test_estimators_by_variant_name_and_errors_naming_the_value():
  labels_gates = V.estimator_set("is,dual_clip,rgpo_detached")
  assert [label for label, _ in labels_gates] == ["is", "dual_clip", "rgpo_detached"]
  assert labels_gates[1][1].params["c"] == 3.0
  # Variants that are not sign-only elementwise gates go through autodiff of their loss.
  assert [type(e).__name__ for _, e in V.estimator_set("gspo,clip_cov,dpo_drift,sapo")] == [
      "VariantEstimator"] * 3 + ["Gate"]
  with pytest.raises(SystemExit, match="'nope'"):
    from rgpo_jax.variance import cli
    cli.main(["--synthetic", "--quick", "--estimators", "nope", "--out", "/nonexistent/x"])
  for mode, length in ((["--synthetic"], "30"), (["--env", "CartPole-v1"], "10")):
    with pytest.raises(SystemExit, match=f"--sequence-length must divide .*got {length}"):
      cli.main(mode + ["--quick", "--sequence-length", length, "--out", "/nonexistent/x"])
