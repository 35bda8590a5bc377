"""`rgpo variance --synthetic`: heavy-tailed ratio laws with a known truth.

Writes synthetic_exact.csv (quadrature moments), synthetic_mc.csv (the Monte-Carlo grid against
them), synthetic_frontier_k.csv (the sigmoid's exact bias and variance over k) and two figures.
"""

from __future__ import annotations

import math
import os
import time

from rgpo_jax.variance.report import log, write_csv, write_summary_json

# Tokens per sequence of the sequence-level variants on the synthetic laws (iid tokens).
SYNTHETIC_SEQUENCE_LENGTH = 10


def grid_sizes(args) -> tuple[int, tuple[int, ...]]:
  """(replications, n_values) from the arguments; n runs over 1e2, 1e3, ..., n_max."""
  replications = args.replications or (4 if args.quick else 32)
  n_max = int(args.n_max or (1e4 if args.quick else 1e6))
  decades = math.log10(n_max) if n_max > 0 else 0
  if n_max < 1000 or abs(decades - round(decades)) > 1e-9:
    raise SystemExit(f"rgpo variance: --n-max must be a power of 10 >= 1e3, got {args.n_max}")
  if replications < 2:
    raise SystemExit(f"rgpo variance: --replications must be >= 2, got {replications}")
  return replications, tuple(10 ** j for j in range(2, int(round(decades)) + 1))


def run_synthetic(args, out: str) -> int:
  """Run the synthetic grid, the exact moments and the k frontier; write tables and plots."""
  import jax
  from rgpo_jax import variance as V
  from rgpo_jax.variance import plots

  replications, n_values = grid_sizes(args)
  n_max = n_values[-1]
  chunk = min(10_000, n_max)
  laws = V.default_laws()
  estimators = V.estimator_set(getattr(args, "estimators", "default"))
  labels = [name for name, _ in estimators]
  model = V.AdvantageModel()

  log(f"synthetic grid: {len(laws)} laws x {len(estimators)} estimators x n={list(n_values)}, "
      f"{replications} streams of {n_max:.0e} samples each ({len(laws) * replications * n_max:.2e}"
      f" samples); model {model}")
  t0 = time.time()
  sequence_length = getattr(args, "sequence_length", None) or SYNTHETIC_SEQUENCE_LENGTH
  summary = V.synthetic_grid(jax.random.key(args.seed), laws, [g for _, g in estimators], model,
                             n_values=n_values, replications=replications, chunk=chunk,
                             sequence_length=sequence_length)
  mc_seconds = time.time() - t0
  log(f"Monte-Carlo grid done in {mc_seconds:.1f} s (one compiled call, compile included)")

  log("exact moments by quadrature (float64) ...")
  exact = exact_table(laws, estimators, model)
  write_csv(os.path.join(out, "synthetic_exact.csv"), exact_rows(laws, labels, exact))
  write_csv(os.path.join(out, "synthetic_mc.csv"),
            monte_carlo_rows(laws, labels, n_values, summary, exact))
  ks = [1, 2, 4, 8] if args.quick else [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32]
  frontier = sigmoid_frontier(laws, ks, model)
  write_csv(os.path.join(out, "synthetic_frontier_k.csv"), frontier)
  log("tables written; plotting ...")
  plots.plot_synthetic(out, laws, labels, n_values, summary, exact, frontier)
  write_summary_json(out, dict(mc_seconds=mc_seconds, n_values=list(n_values),
                               replications=replications, model=model._asdict(),
                               sequence_length=sequence_length, minibatch_tokens=chunk))
  log(f"done: {out}")
  return 0


def exact_table(laws, estimators, model) -> dict:
  """{(law name, label): ExactMoments} for every law and (label, estimator); a variant estimator
  (no closed form) gets `variant_moments`."""
  from rgpo_jax import variance as V
  sups = {label: estimator_sup(g) for label, g in estimators}
  return {(law.name, label): (V.exact_moments(g, law, model, sup_weight=sups[label])
                              if not isinstance(g, V.VariantEstimator)
                              else variant_moments(law, model, sups[label]))
          for law in laws for label, g in estimators}


def estimator_sup(estimator) -> float:
  """sup w of a gate; of a variant estimator, its registered gate's sup (inf without a gate:
  Clip-Cov keeps PPO-clip's weight, KL-Cov IS's). With sequence ratios C_t = w(s)·(a mean of
  Â), so Var(X) ≤ (sup w)²·E[Â²S²] still holds (Jensen, S independent of the sequence)."""
  from rgpo_jax import variance as V
  from rgpo_jax import variants
  if not isinstance(estimator, V.VariantEstimator):
    return V.weight_sup(estimator)
  variant = variants.VARIANTS.get(estimator.name)
  if variant is None or variant.gate is None:
    return math.inf
  return V.weight_sup(variants.make_gate(estimator.name, **dict(estimator.params)))


def variant_moments(law, model, sup_weight: float):
  """ExactMoments of a variant estimator: the exact target J' (the same for every estimator)
  and the bound; mean, bias, variance are NaN (measured by Monte Carlo only)."""
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import variance as V
  is_moments = V.exact_moments(gates_lib.importance(), law, model, sup_weight=math.inf)
  nan = math.nan
  return is_moments._replace(mean=nan, bias=nan, second_moment=nan, variance=nan,
                             sup_weight=sup_weight,
                             bound=sup_weight ** 2 * is_moments.adv_score_second_moment)


def exact_rows(laws, labels, exact) -> list[dict]:
  """Rows of synthetic_exact.csv: the exact moments, relative bias and IS's MSE crossover."""
  from rgpo_jax import variance as V
  rows = []
  for law in laws:
    var_is = exact[law.name, "is"].variance
    for label in labels:
      e = exact[law.name, label]
      rows.append(dict(law=law.name, estimator=label, E_r2=law.moment(2), **e._asdict(),
                       relative_bias=e.bias / e.target,
                       n_is_wins=V.mse_crossover(var_is, e.variance, e.bias)))
  return rows


def monte_carlo_rows(laws, labels, n_values, summary, exact) -> list[dict]:
  """Rows of synthetic_mc.csv: one per (law, estimator, n), Monte-Carlo against exact."""
  rows = []
  for li, law in enumerate(laws):
    for ei, label in enumerate(labels):
      e = exact[law.name, label]
      for ni, n in enumerate(n_values):
        med = float(summary.sample_variance_median[li, ei, ni])
        est_var = float(summary.estimator_variance[li, ei, ni])
        est_mean = float(summary.estimator_mean[li, ei, ni])
        rows.append(dict(
            law=law.name, estimator=label, n=n,
            batches=int(summary.replications[ni]),
            sample_var_median=med,
            sample_var_mean=float(summary.sample_variance_mean[li, ei, ni]),
            sample_var_q90=float(summary.sample_variance_q90[li, ei, ni]),
            estimator_var=est_var, n_times_estimator_var=n * est_var,
            estimator_mean=est_mean, mc_bias=est_mean - e.target,
            exact_target=e.target, exact_bias=e.bias, exact_var=e.variance,
            sup_weight=e.sup_weight, bound=e.bound,
            median_below_bound=bool(med <= e.bound),
            mean_below_bound=bool(float(summary.sample_variance_mean[li, ei, ni]) <= e.bound),
            mse=est_var + (est_mean - e.target) ** 2))
  return rows


def sigmoid_frontier(laws, ks, model) -> list[dict]:
  """The exact bias-variance frontier of the RGPO sigmoid over k, one row per (law, k)."""
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import variance as V
  frontier = []
  for law in laws:
    for k in ks:
      e = V.exact_moments(gates_lib.sigmoid(float(k)), law, model)
      frontier.append(dict(law=law.name, k=float(k), bias=e.bias, variance=e.variance,
                           sup_weight=e.sup_weight, bound=e.bound,
                           mse_n1000=e.variance / 1000 + e.bias ** 2))
  return frontier
