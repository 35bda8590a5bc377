"""Natural gradient with a KL trust region: TRPO's update rule (arXiv 1502.05477).

The policy step, on the flat policy parameters θ (actor and log-std; `ravel_pytree`):

    g = ∇_θ L(θ_old),  L(θ) = mean(g_gate(r)·Â),  r = π_θ/π_old        (the surrogate)
    F = ∇²_θ mean_s KL(π_old(·|s) ‖ π_θ(·|s)) at θ_old                  (the Fisher matrix)
    x ≈ (F + λI)⁻¹ g                      by `cg_iters` conjugate-gradient steps on F·v products
    s = √(max_kl / (½ xᵀ(F + λI)x)) · x   (the step whose quadratic KL model equals max_kl)
    θ_new = θ_old + cᵏ s for the first k < backtrack_iters with L(θ_new) > L(θ_old) and the
            mean KL(π_old‖π_new) ≤ max_kl, both exact and by k3 on the rollout's actions;
            θ_old if no k qualifies.

F·v is forward-over-reverse (`jax.linearize` of `jax.grad` of the mean KL, linearised once per
update and reused by every CG iteration), never a matrix. The surrogate's gate is any gate:
`importance` (w = r, TRPO's own) by default, RGPO's gates one flag away (`trpo_gate`).
Everything is inside the compiled program (fori_loop CG, while_loop line search), so it runs
under the sweep's vmap with a traced max_kl and damping. Data-parallel: g, every F·v, and the
line search's surrogate and KL are averaged over the device axis, so every device takes the
same step, equal to one device holding the whole batch.

The value function is fitted afterwards by minibatch regression (update_epochs ×
num_minibatches Adam steps at `lr`, as the gated rule), on the same TD(λ) targets. Follows the
paper and OpenAI Spinning Up's TRPO defaults (δ = max_kl = 0.01, 10 CG iterations, damping
0.1, backtracking 0.8ᵏ up to 10 trials, a step accepted when the surrogate does not fall and
the KL stays within δ; here the surrogate must strictly improve), and, like Spinning Up, fits
the critic with Adam (Schulman's modular_rl also asks for ≥ 10% of the linearly expected
improvement, halves the step per trial and fits the critic with L-BFGS). No entropy bonus:
ent_coef, lr and max_grad_norm do not touch the policy.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rgpo_jax import advantages as adv_lib
from rgpo_jax import losses
from rgpo_jax.networks import ActorCritic
from rgpo_jax.training.update_rules.base import (Batch, minibatch_epochs, rollout_kl,
                                                 value_regression_loss)

Array = jax.Array


def _maybe_pmean(x, axis_name):
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def conjugate_gradient(matvec: Callable[[Array], Array], b: Array,
                       iters: int) -> tuple[Array, Array]:
  """x ≈ A⁻¹b for symmetric positive-definite A given as `matvec`, by `iters` CG steps.

  Starts from x = 0; exact (in exact arithmetic) after n = len(b) steps. Steps after
  convergence are inert (a zero residual gives zero step sizes, never 0/0).

  Args:
    matvec: v [n] -> A v [n].
    b: right-hand side [n].
    iters: number of CG iterations (static, >= 1).
  Returns:
    (x [n], relative residual ‖b − A x‖/‖b‖ as tracked by the recursion, [] ; 0 when b = 0).
  """
  if iters < 1:
    raise ValueError(f"conjugate_gradient needs iters >= 1, got {iters}")

  def body(_, carry):
    x, r, p, rr = carry
    ap = matvec(p)
    pap = jnp.vdot(p, ap)
    alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
    x, r = x + alpha * p, r - alpha * ap
    rr_new = jnp.vdot(r, r)
    beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
    return x, r, r + beta * p, rr_new

  bb = jnp.vdot(b, b)
  x, _, _, rr = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(b), b, b, bb))
  residual = jnp.where(bb > 0, jnp.sqrt(rr / jnp.where(bb > 0, bb, 1.0)), 0.0)
  return x, residual


def fisher_vector_product(kl_fn: Callable[[Array], Array], theta: Array, damping: Array,
                          axis_name: str | None = None) -> Callable[[Array], Array]:
  """v ↦ (F + λI)v, F = ∇²_θ kl_fn at θ (the Fisher matrix when kl_fn(θ) = mean KL(π_old‖π_θ)
  and θ = θ_old), by forward-over-reverse differentiation, linearised once.

  Args:
    kl_fn: θ [n] -> this device's mean KL (π_old stop-gradiented inside).
    theta: the point [n]; damping: λ >= 0 (traced).
    axis_name: data-parallel axis: F v is averaged over it.
  """
  _, hvp = jax.linearize(jax.grad(kl_fn), theta)
  return lambda v: _maybe_pmean(hvp(v), axis_name) + damping * v


class NaturalStep(NamedTuple):
  """full_step [n]: the KL-scaled natural-gradient step; grad [n]: ∇L (device-averaged);
  cg_residual []: CG's relative residual."""

  full_step: Array
  grad: Array
  cg_residual: Array


def natural_gradient_step(surrogate_fn: Callable[[Array], Array],
                          kl_fn: Callable[[Array], Array], theta: Array, max_kl: Array,
                          damping: Array, cg_iters: int,
                          axis_name: str | None = None) -> NaturalStep:
  """s = √(max_kl / (½ xᵀ(F + λI)x))·x with x ≈ (F + λI)⁻¹∇L by CG (see the module).

  Args:
    surrogate_fn: θ [n] -> this device's surrogate L to maximise (scalar).
    kl_fn: θ [n] -> this device's mean KL(π_old‖π_θ), π_old fixed inside.
    theta: θ_old [n]; max_kl > 0, damping >= 0 (traced); cg_iters (static).
    axis_name: data-parallel axis (gradient and F·v averaged over it).
  Returns:
    `NaturalStep`; the step is 0 where ∇L = 0.
  """
  grad = _maybe_pmean(jax.grad(surrogate_fn)(theta), axis_name)
  fvp = fisher_vector_product(kl_fn, theta, damping, axis_name)
  x, residual = conjugate_gradient(fvp, grad, cg_iters)
  shs = 0.5 * jnp.vdot(x, fvp(x))
  scale = jnp.where(shs > 0, jnp.sqrt(max_kl / jnp.where(shs > 0, shs, 1.0)), 0.0)
  return NaturalStep(scale * x, grad, residual)


class LineSearch(NamedTuple):
  """params [n]: accepted point (θ_old if rejected); steps []: trials made (int32);
  accepted [] bool; kl []: kl_fn at the accepted point (0 if rejected)."""

  params: Array
  steps: Array
  accepted: Array
  kl: Array


def backtracking_line_search(objective_fn: Callable[[Array], Array],
                             kl_fn: Callable[[Array], Array], theta: Array, full_step: Array,
                             max_kl: Array, num_steps: int, coef: float) -> LineSearch:
  """The first θ + cᵏ·s, k = 0 … num_steps−1, that improves the objective and keeps the mean
  KL within max_kl; θ itself if none does (NaN values never qualify).

  Args:
    objective_fn: θ [n] -> the objective to improve, already averaged over devices (every
      device must reach the same decision).
    kl_fn: θ [n] -> mean KL(π_old‖π_θ), already averaged over devices.
    theta: the current point [n].
    full_step: the largest step tried [n].
    max_kl: the KL bound (traced).
    num_steps: trials, >= 1 (static).
    coef: shrink factor per trial, in (0, 1) (static).
  """
  f0 = objective_fn(theta)

  def cond(c):
    k, accepted, _, _ = c
    return (k < num_steps) & ~accepted

  def body(c):
    k, _, _, _ = c
    candidate = theta + jnp.asarray(coef, theta.dtype) ** k.astype(theta.dtype) * full_step
    kl = kl_fn(candidate)
    ok = (objective_fn(candidate) > f0) & (kl <= max_kl)
    return k + 1, ok, kl, candidate

  init = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros((), theta.dtype), theta)
  steps, accepted, kl, candidate = jax.lax.while_loop(cond, body, init)
  return LineSearch(jnp.where(accepted, candidate, theta), steps, accepted,
                    jnp.where(accepted, kl, 0.0))


def policy_params(params):
  """The actor's part of `ActorCritic` parameters (everything but the critic)."""
  return {k: v for k, v in params["params"].items() if k != "critic"}


def with_policy_params(params, policy):
  return {**params, "params": {**params["params"], **policy}}


class NaturalGradient:
  """TRPO's update rule: the KL-bounded natural-gradient policy step, then value regression."""

  name = "natural_gradient"

  def __init__(self, trainer):
    self.trainer = trainer
    self.config = trainer.config

  def update(self, params, opt_state, hp, batch: Batch, key, lr, env_ids,
             axis_name: str | None = None):
    cfg, network = self.config, self.trainer.network
    theta0, unravel = ravel_pytree(policy_params(params))
    dist_at = lambda theta: network.apply({"params": unravel(theta)}, batch.obs,
                                          method=ActorCritic.policy)
    old_dist = jax.lax.stop_gradient(dist_at(theta0))
    advantage = batch.advantage
    if cfg.normalize_advantages:
      advantage = adv_lib.normalize(advantage, axis_name=axis_name)
    gate = self.trainer.gate(hp)

    def surrogate(theta):
      pg_loss, aux = losses.policy_loss(gate, dist_at(theta).log_prob(batch.action),
                                        batch.log_prob, advantage)
      return -pg_loss, aux

    local_kl = lambda theta: jnp.mean(old_dist.kl(dist_at(theta)))

    def kl_estimates(theta):
      """(exact mean KL(π_old‖π_θ), the trainer's approx_kl at θ), averaged over devices. The
      k3 estimate can exceed the exact KL by sampling noise (seen 2-4× on rare updates), so
      the trust region bounds both: no accepted step reports an approx_kl above max_kl."""
      dist = dist_at(theta)
      return _maybe_pmean((jnp.mean(old_dist.kl(dist)),
                           rollout_kl(batch, dist.log_prob(batch.action))), axis_name)

    max_kl = hp.rule["max_kl"]
    step = natural_gradient_step(lambda t: surrogate(t)[0], local_kl, theta0, max_kl,
                                 hp.rule["cg_damping"], cfg.cg_iters, axis_name)
    search = backtracking_line_search(
        lambda t: _maybe_pmean(surrogate(t)[0], axis_name),
        lambda t: jnp.maximum(*kl_estimates(t)),
        theta0, step.full_step, max_kl, cfg.backtrack_iters, cfg.backtrack_coef)
    gain, aux = surrogate(search.params)
    params = with_policy_params(params, unravel(search.params))

    def value_loss(p, hp, mb):
      v_loss = value_regression_loss(network.apply(p, mb.obs, method=ActorCritic.value), mb, hp,
                                     cfg.clip_value)
      return v_loss, (v_loss,)

    indices = self.trainer.minibatch_indices(key, env_ids).reshape(
        cfg.update_epochs, cfg.num_minibatches, -1)
    (params, opt_state), ((vl,), _) = minibatch_epochs(
        value_loss, self.trainer.tx, params, opt_state, hp, batch, indices, lr, axis_name)
    metrics = {
        "gate_mean": aux.gate_mean, "acceptance_fraction": aux.acceptance_fraction,
        "rejection_fraction": aux.rejection_fraction,
        "effective_update_ratio": aux.effective_update_ratio, "weight_mean": aux.weight_mean,
        "weight_max": aux.weight_max, "ratio_max": aux.ratio_max,
        "entropy": jnp.mean(dist_at(search.params).entropy()), "policy_loss": -gain,
        "value_loss": jnp.mean(vl), "grad_norm": jnp.linalg.norm(step.grad),
        "line_search_steps": search.steps.astype(jnp.float32),
        "step_accepted": search.accepted.astype(jnp.float32),
        "kl_after_step": jnp.where(search.accepted, kl_estimates(search.params)[0], 0.0),
        "cg_residual": step.cg_residual}
    return params, opt_state, metrics
