"""Gradient-variance instruments: gated estimators against importance sampling (IS).

Every gated policy gradient is a weighted score average (RGPO, arXiv 2604.14895):

    ĝ_n = (1/n) Σ_i X_i,    X_i = w(r_i; Â_i) · Â_i · S_i,    w(r) = g'(r)·r,

with r = π_θ/π_old, Â the advantage and S the score ∇log π_θ (projected on a direction, or the
full vector). The on-policy target is J' = E_{π_θ}[Â·S] = E_{π_old}[r·Â·S]: IS (w = r) is
unbiased for it; a bounded gate trades bias for a variance bound

    Var(X) ≤ E[X²] ≤ (sup_r w)² · E[Â²·S²],

finite even when E[r²] = ∞ (tail index α ≤ 2), where Var_IS(X) = ∞.

Two instruments live here, both pure functions usable from your own agent:

1. Synthetic, where the truth is known (`synthetic_grid`, `exact_moments`, `weight_sup`):
   ratios r from heavy-tailed laws with E[r] = 1 (`lomax(α)`, `lognormal(σ)`), advantages and
   scores from a known model (`AdvantageModel`), and for every gate and sample size n:

   - per-sample variance: the sample variance s²_n = 1/(n−1)·Σ (X_i − X̄)² of the n per-sample
     gradients X_i = w·Â·S of one batch; its median over batches is the headline (its mean
     over batches estimates E[s²_n] = Var(X), which is infinite for every n when Var(X) = ∞).
     When Var(X) < ∞ the median converges to Var(X) as n grows; when Var(X) = ∞ (IS, α ≤ 2)
     it keeps growing with n (like n^(2/α − 1): the largest of n ratios grows like n^(1/α)).
   - estimator variance: Var(X̄_n) over replications of the n-sample mean (= Var(X)/n when
     finite); n·Var(X̄_n) is reported so that it is comparable with the per-sample variance.
   - bias: E[X̄_n] − J' (exact by quadrature, and its Monte-Carlo estimate).

2. Real policies (`per_sample_policy_gradients`, `gradient_statistics`, `ratio_statistics`):
   per-sample policy gradients by `vmap` of `grad` of `losses.policy_loss` on single samples
   (= −w·Â·∇log π), and the trace of their covariance, the norm and cosine of their mean
   against an on-policy gradient, the effective sample size of the ratios, the acceptance
   fraction and a Hill estimate of the ratios' tail index.

Gates come from `rgpo_jax.gates` (their weight by autodiff); nothing here re-implements a gate.
Every other registered policy-loss variant (`rgpo_jax.variants`: GSPO/GMPO sequence ratios,
Clip-Cov/KL-Cov batch statistics, Discovered PO's |Â|-dependent drift) is an estimator too
(`VariantEstimator`): its per-token coefficient C_t = −N·∂L/∂log π_t comes by autodiff of the
registered loss (`gradient_coefficients`), and its per-token term is X_t = C_t·S_t (for a gate,
C_t = w·Â). On synthetic laws tokens are iid and cut into sequences of L consecutive tokens; on
real rollouts a sequence is a run of L consecutive steps of one environment.

Modules: `laws` (ratio laws, advantage model), `coefficients` (any variant's per-token
coefficients), `estimators` (the estimators compared, per-sample gradient, MSE crossover), `exact` (quadrature truth), `grid` (the Monte-Carlo grid), `policy`
(per-sample policy gradients and statistics); `cli` with `synthetic_experiment`,
`env_experiment`, `report` and `plots` drive `rgpo variance`.
"""

from rgpo_jax.variance.coefficients import VariantEstimator, gradient_coefficients
from rgpo_jax.variance.estimators import (ESTIMATOR_SETS, default_estimators, estimator_set,
                                          mse_crossover, per_sample_gradient, per_token_terms,
                                          variant_estimator, variant_estimators)
from rgpo_jax.variance.exact import ExactMoments, exact_moments, weight_sup
from rgpo_jax.variance.grid import GridSummary, synthetic_grid
from rgpo_jax.variance.laws import (LAW_FAMILIES, AdvantageModel, RatioLaw, default_laws,
                                    lognormal, lomax, sample_advantage_and_score, sample_ratios)
from rgpo_jax.variance.policy import (GradientStatistics, PolicyBatch, RatioStatistics,
                                      gradient_statistics, hill_tail_index,
                                      per_sample_policy_gradients, ratio_statistics)

__all__ = [
    "LAW_FAMILIES", "AdvantageModel", "ExactMoments", "GradientStatistics", "GridSummary",
    "ESTIMATOR_SETS", "PolicyBatch", "RatioLaw", "RatioStatistics", "VariantEstimator",
    "default_estimators", "estimator_set", "gradient_coefficients", "per_token_terms",
    "variant_estimator", "variant_estimators", "default_laws",
    "exact_moments", "gradient_statistics", "hill_tail_index", "lognormal", "lomax",
    "mse_crossover", "per_sample_gradient", "per_sample_policy_gradients", "ratio_statistics",
    "sample_advantage_and_score", "sample_ratios", "synthetic_grid", "weight_sup",
]
