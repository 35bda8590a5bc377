"""`rgpo variance --env`: per-sample policy gradients of stale data from a real policy.

Train briefly (PPO, the trainer's defaults), collect a batch, take `s` optimiser steps on it
(the data goes stale), and at each staleness measure every gate's mean gradient against an
on-policy reference, its per-sample covariance and the ratios' distribution.

Variants that are not elementwise gates (`VariantEstimator`: GSPO/GMPO sequence ratios,
Clip-Cov/KL-Cov, DPO drift) see the batch as sequences: a sequence is a run of L
(`--sequence-length`, default 16) consecutive steps of one environment, so the collected
[steps, envs] batch becomes envs·steps/L sequences. A run may span an episode boundary (the
sequence ratio then mixes two episodes' steps); every step is valid (no padding).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple

from rgpo_jax.variance.report import log, write_csv, write_summary_json


def parse_staleness(text: str) -> list[int]:
  """Sorted distinct staleness values from "0,1,2"; SystemExit naming the text if bad."""
  try:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
  except ValueError:
    raise SystemExit(f"rgpo variance: --staleness must be comma-separated integers, got {text!r}")
  if not values or values[0] < 0:
    raise SystemExit(f"rgpo variance: --staleness needs integers >= 0, got {text!r}")
  return values


# Consecutive steps of one environment that form a "sequence" for sequence-level variants.
ENV_SEQUENCE_LENGTH = 16


class Sizes(NamedTuple):
  """Sizes of the measurement (see `rgpo variance --help`)."""

  train_steps: int
  samples: int
  per_sample: int
  ref_batches: int
  num_envs: int


def sizes_from_args(args) -> Sizes:
  """`Sizes` from the arguments and their quick/full defaults, checked."""
  quick = args.quick
  sizes = Sizes(train_steps=int(args.train_steps or (2e4 if quick else 5e4)),
                samples=int(args.samples or (8192 if quick else 131072)),
                per_sample=int(args.per_sample or (1024 if quick else 8192)),
                ref_batches=2 if quick else 6, num_envs=16 if quick else 64)
  if sizes.samples % sizes.num_envs or sizes.samples < 1024:
    raise SystemExit(f"rgpo variance: --samples must be a multiple of {sizes.num_envs} and "
                     f">= 1024, got {sizes.samples}")
  if not 64 <= sizes.per_sample <= sizes.samples:
    raise SystemExit(f"rgpo variance: --per-sample must be in [64, --samples={sizes.samples}], "
                     f"got {sizes.per_sample}")
  return sizes


def check_sequence_length(sizes: Sizes, sequence_length: int | None) -> int:
  """The env sequence length (default `ENV_SEQUENCE_LENGTH`); SystemExit naming it unless it
  divides the steps per environment."""
  length = sequence_length or ENV_SEQUENCE_LENGTH
  steps_per_env = sizes.samples // sizes.num_envs
  if length < 1 or steps_per_env % length:
    raise SystemExit(f"rgpo variance: --sequence-length must divide the {steps_per_env} steps "
                     f"per environment, got {length}")
  return length


class Measurement(NamedTuple):
  """The compiled pieces of one measurement on one stale batch (built by `build_measurement`).

  collect(params, key) -> PolicyBatch of fresh on-policy samples.
  reference_gradient(params, key) -> (on-policy gradient [P], its relative noise, batch-to-batch
    cosine).
  evaluate(params, gate) -> (mean gradient [P], per-sample covariance trace, acceptance fraction).
  evaluate_variant(params, variant_estimator, key) -> the same for a `VariantEstimator` (the
    acceptance fraction is NaN for variants without one: Clip-Cov, KL-Cov).
  log_ratios(params) -> log π_θ − log π_old on the stale batch [N].
  """

  collect: Callable
  reference_gradient: Callable
  evaluate: Callable
  evaluate_variant: Callable
  log_ratios: Callable


def run_env(args, out: str) -> int:
  """Real policies: train briefly, collect, make the data stale, measure every gate.

  The mean gradient of each gate uses the whole stale batch (`--samples`); the per-sample
  covariance a random subset (`--per-sample`) of it; the on-policy reference is REINFORCE
  (w ≡ 1) at θ_s averaged over 6 (quick: 2) fresh batches of `--samples` each (their spread
  gives its noise).
  Because all gates see the same samples, their distance to IS on that batch (IS is unbiased
  for the gradient at θ_s given the advantages) isolates bias from sampling noise.
  """
  import jax
  import numpy as np
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import variance as V
  from rgpo_jax.variance import plots

  staleness = parse_staleness(args.staleness)
  sizes = sizes_from_args(args)
  try:
    drift_gate = gates_lib.make(args.drift_gate)
  except ValueError as e:
    raise SystemExit(f"rgpo variance: --drift-gate: {e}")
  estimators = V.estimator_set(getattr(args, "estimators", "default"))
  labels = [label for label, _ in estimators]
  sequence_length = check_sequence_length(sizes, getattr(args, "sequence_length", None))

  config, params, final_return = train_policy(args.env, sizes.train_steps, args.seed)
  key = jax.random.fold_in(jax.random.key(args.seed), 1)
  k_collect, k_ref, k_sub = jax.random.split(key, 3)
  network, hp = _network_and_hparams(config)
  collect = make_collect(config, hp, network, sizes)
  t0 = time.time()
  batch = collect(params, k_collect)
  subset = jax.random.choice(k_sub, sizes.samples, (sizes.per_sample,), replace=False)
  sub_batch = jax.tree.map(lambda x: x[subset], batch)
  log(f"collected {sizes.samples} transitions in {time.time() - t0:.1f} s; taking up to "
      f"{max(staleness)} optimiser steps (Adam lr {args.drift_lr:g}, {args.drift_gate} loss, "
      f"full batch) ...")
  snapshots = make_drift(network, drift_gate, args.drift_lr, batch, max(staleness))(params)
  measurement = build_measurement(network, collect, batch, sub_batch, sizes.ref_batches,
                                  subset=subset, num_envs=sizes.num_envs,
                                  sequence_length=sequence_length)

  rows, ratio_rows, log_r_by_s = [], [], {}
  for s in staleness:
    p = jax.tree.map(lambda x: x[s], snapshots)
    new_rows, ratio_row, log_r = measure_staleness(measurement, p, s, args.env, estimators,
                                                  jax.random.fold_in(k_ref, s))
    rows += new_rows
    ratio_rows.append(ratio_row)
    log_r_by_s[s] = np.asarray(log_r)
  write_csv(os.path.join(out, "env_gradients.csv"), rows)
  write_csv(os.path.join(out, "env_ratios.csv"), ratio_rows)
  plots.plot_env(out, args.env, staleness, labels, rows, log_r_by_s, ratio_rows)
  write_summary_json(out, dict(env=args.env, train_steps=sizes.train_steps,
                               samples=sizes.samples, per_sample_subset=sizes.per_sample,
                               reference_samples=sizes.ref_batches * sizes.samples,
                               final_return=final_return, drift_gate=args.drift_gate,
                               drift_lr=args.drift_lr, staleness=staleness,
                               sequence_length=sequence_length))
  log(f"done: {out}")
  return 0


def _trainer_parts():
  """The trainer's pieces this experiment uses; SystemExit naming the extra if absent."""
  try:
    from rgpo_jax.networks import ActorCritic
    from rgpo_jax.training import TrainConfig, Trainer, hparams_from_config, make_train
    from rgpo_jax.training.train import bootstrap_advantages
  except ModuleNotFoundError as e:
    raise SystemExit(f"rgpo variance --env needs the trainer (rgpo_jax.training; "
                     f"pip install 'rgpo_jax[train]'): {e}")
  return ActorCritic, TrainConfig, Trainer, hparams_from_config, make_train, bootstrap_advantages


def _network_and_hparams(config):
  """The actor-critic network and the traced hyperparameters of `config`'s trainer."""
  _, _, Trainer, hparams_from_config, _, _ = _trainer_parts()
  trainer = Trainer(config)
  return trainer.network, hparams_from_config(trainer.config)


def train_policy(env: str, train_steps: int, seed: int) -> tuple[Any, Any, float]:
  """Train PPO (the trainer's defaults) for `train_steps`: (config, params, final return)."""
  import jax
  import numpy as np
  _, TrainConfig, _, _, make_train, _ = _trainer_parts()
  try:
    config = TrainConfig(env=env, algo="ppo", total_steps=train_steps).validate()
  except ValueError as e:
    raise SystemExit(f"rgpo variance --env: {e}")
  log(f"training {env} with PPO for {train_steps:.0e} env steps ...")
  t0 = time.time()
  state, metrics = jax.jit(make_train(config))(jax.random.key(seed))
  returns = np.asarray(metrics["episode_return"])
  final_return = float(np.nanmean(returns[-max(1, len(returns) // 10):]))
  log(f"trained in {time.time() - t0:.1f} s; mean episode return over the last 10% of updates "
      f"{final_return:.1f}")
  return config, state.params, final_return


def make_collect(config, hp, network, sizes: Sizes) -> Callable:
  """Jitted collect(params, key): `sizes.samples` on-policy transitions with normalised GAE
  advantages from params' critic, after a 512-step burn-in from the resets."""
  import jax
  from rgpo_jax import advantages as adv_lib
  from rgpo_jax import variance as V
  ActorCritic, _, Trainer, _, _, bootstrap_advantages = _trainer_parts()
  samples, num_envs = sizes.samples, sizes.num_envs
  # The collector's Trainers (static env/network parts) are built outside any jit.
  collector = Trainer(config.replace(num_envs=num_envs, num_steps=samples // num_envs,
                                    total_steps=max(samples, sizes.train_steps)))
  burn = Trainer(config.replace(num_envs=num_envs, num_steps=512,
                                total_steps=max(num_envs * 512, sizes.train_steps)))

  @jax.jit
  def collect(params, key):
    k_init, k_burn, k_roll = jax.random.split(key, 3)
    cs = collector.init(k_init, hp)
    env_state, obs, _ = burn.rollout(params, cs.env_state, cs.obs, cs.obs_stats, k_burn)
    _, _, traj = collector.rollout(params, env_state, obs, cs.obs_stats, k_roll)
    next_values = network.apply(params, traj.final_obs, method=ActorCritic.value)
    advantage, _ = bootstrap_advantages(traj, next_values, hp)
    flat = lambda x: x.reshape((samples,) + x.shape[2:])
    return V.PolicyBatch(flat(traj.obs), flat(traj.action), flat(traj.log_prob),
                         adv_lib.normalize(flat(advantage)))

  return collect


def _with_actor(full, actor):
  return {"params": {**full["params"], "actor": actor}}


def batch_log_prob(network, full, batch):
  """log π_θ(a|s) of every sample of `batch` under the full parameters `full`."""
  ActorCritic = _trainer_parts()[0]
  return network.apply(full, batch.obs, method=ActorCritic.policy).log_prob(batch.action)


def mean_gradient(network, gate, full, batch):
  """∇ of the batch policy loss w.r.t. the actor, flattened [P] (= mean per-sample grad)."""
  import jax
  import jax.flatten_util
  from rgpo_jax import losses

  def loss(actor):
    lp = batch_log_prob(network, _with_actor(full, actor), batch)
    return losses.policy_loss(gate, lp, batch.behavior_log_prob, batch.advantage)
  grad, aux = jax.grad(loss, has_aux=True)(full["params"]["actor"])
  return jax.flatten_util.ravel_pytree(grad)[0], aux


def make_drift(network, drift_gate, learning_rate: float, batch, steps: int) -> Callable:
  """Jitted drift(params) -> params after 0..steps full-batch Adam steps of the gated policy
  loss on `batch` (a pytree with a leading [steps + 1] axis): the data goes stale."""
  import jax
  import jax.numpy as jnp
  import optax
  from rgpo_jax import losses
  opt = optax.adam(learning_rate)

  @jax.jit
  def drift(params):
    def step(carry, _):
      p, o = carry
      g = jax.grad(lambda p: losses.policy_loss(drift_gate, batch_log_prob(network, p, batch),
                                                batch.behavior_log_prob, batch.advantage)[0])(p)
      upd, o = opt.update(g, o, p)
      p = optax.apply_updates(p, upd)
      return (p, o), p
    _, traj = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params, traj)

  return drift


def _log_prob_fn_for(network, full):
  """log_prob_fn(actor, obs, action) -> log π(action|obs) for ONE sample, other params `full`."""
  ActorCritic = _trainer_parts()[0]

  def log_prob_fn(actor, obs, action):
    return network.apply(_with_actor(full, actor), obs, method=ActorCritic.policy).log_prob(action)
  return log_prob_fn


def build_measurement(network, collect, batch, sub_batch, ref_batches: int, *, subset,
                      num_envs: int, sequence_length: int = ENV_SEQUENCE_LENGTH) -> Measurement:
  """The jitted reference gradient, per-estimator evaluation and log-ratios on the stale `batch`
  (flat, time-major: index = step·num_envs + env; `sub_batch` = batch[subset])."""
  import jax
  import jax.numpy as jnp
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import variance as V
  reinforce = gates_lib.reinforce()

  @jax.jit
  def reference_gradient(p, key):
    """On-policy loss gradient at θ_s: REINFORCE (w ≡ 1) averaged over `ref_batches` fresh
    batches of `samples` each. Also returns the noise of that average, as its relative standard
    error ‖std_i(g_i)‖/(√R·‖ḡ‖), and the mean pairwise cosine between the batches' gradients
    (the cosine a single stale batch could reach against the truth, roughly)."""
    grads = jax.lax.map(lambda k: mean_gradient(network, reinforce, p, collect(p, k))[0],
                        jax.random.split(key, ref_batches))
    mean = jnp.mean(grads, axis=0)
    sem = jnp.sqrt(jnp.sum(jnp.var(grads, axis=0, ddof=1)) / ref_batches)
    unit = grads / jnp.linalg.norm(grads, axis=1, keepdims=True)
    gram = unit @ unit.T
    pair_cos = (jnp.sum(gram) - ref_batches) / (ref_batches * (ref_batches - 1))
    return mean, sem / jnp.linalg.norm(mean), pair_cos

  @jax.jit
  def evaluate(p, gate):
    mean, aux = mean_gradient(network, gate, p, batch)
    per = V.per_sample_policy_gradients(gate, _log_prob_fn_for(network, p),
                                        p["params"]["actor"], sub_batch)
    trace = jnp.sum(jnp.var(per, axis=0, ddof=1))
    return mean, trace, aux.acceptance_fraction

  @jax.jit
  def log_ratios(p):
    return batch_log_prob(network, p, batch) - batch.behavior_log_prob

  evaluate_variant = make_evaluate_variant(network, batch, sub_batch, subset, num_envs,
                                           sequence_length)
  return Measurement(collect, reference_gradient, evaluate, evaluate_variant, log_ratios)


def make_evaluate_variant(network, batch, sub_batch, subset, num_envs: int,
                          sequence_length: int) -> Callable:
  """Jitted evaluate_variant(params, variant_estimator, key) -> (mean gradient ∇L [P], trace of
  the per-sample covariance, acceptance fraction or NaN).

  The flat time-major batch (index = step·num_envs + env) is cut into sequences of
  `sequence_length` consecutive steps of one env; L is the registered variant's loss on them
  (`variants.policy_loss`, all steps valid). Per-sample gradients on the subset are
  −C_i·∇log π_i with C = `VariantEstimator.coefficients` on the whole batch (so their mean over
  the whole batch is ∇L, as `per_sample_policy_gradients` for a gate)."""
  import functools
  import math

  import jax
  import jax.flatten_util
  import jax.numpy as jnp
  from rgpo_jax import variants

  steps = batch.behavior_log_prob.shape[0] // num_envs
  to_sequences = lambda x: x.reshape(steps, num_envs).T.reshape(-1, sequence_length)
  from_sequences = lambda x: x.reshape(num_envs, steps).T.reshape(-1)

  @functools.partial(jax.jit, static_argnums=1)
  def evaluate_variant(p, estimator, key):
    old, adv = to_sequences(batch.behavior_log_prob), to_sequences(batch.advantage)
    params, valid = dict(estimator.params), jnp.ones(old.shape, bool)

    def loss(actor):
      lp = to_sequences(batch_log_prob(network, _with_actor(p, actor), batch))
      return variants.policy_loss(estimator.name, lp, old, adv, valid, key=key, **params)

    grad, aux = jax.grad(loss, has_aux=True)(p["params"]["actor"])
    mean = jax.flatten_util.ravel_pytree(grad)[0]
    log_prob = to_sequences(batch_log_prob(network, p, batch))
    coefficient = from_sequences(estimator.coefficients(log_prob, old, adv, key=key))[subset]
    log_prob_fn = _log_prob_fn_for(network, p)
    flat_actor, unravel = jax.flatten_util.ravel_pytree(p["params"]["actor"])
    scores = jax.vmap(jax.grad(lambda f, o, a: log_prob_fn(unravel(f), o, a)),
                      in_axes=(None, 0, 0))(flat_actor, sub_batch.obs, sub_batch.action)
    per = -coefficient[:, None] * scores
    trace = jnp.sum(jnp.var(per, axis=0, ddof=1))
    acceptance = getattr(aux, "acceptance_fraction", jnp.asarray(math.nan, mean.dtype))
    return mean, trace, acceptance

  return evaluate_variant


def _cos(a, b) -> float:
  import jax.numpy as jnp
  return float(jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30))


def measure_staleness(measurement: Measurement, p, s: int, env: str, estimators, key):
  """Every gate at staleness `s` (parameters `p`): (gradient rows, ratio row, log r)."""
  import jax
  import jax.numpy as jnp
  from rgpo_jax import variance as V
  t0 = time.time()
  reference, ref_noise, ref_pair_cos = measurement.reference_gradient(p, key)
  ref_norm, ref_noise = float(jnp.linalg.norm(reference)), float(ref_noise)
  log_r = measurement.log_ratios(p)
  rs = jax.device_get(V.ratio_statistics(log_r))
  ratio_row = dict(staleness=s, **{k: float(v) for k, v in rs._asdict().items()})
  results = [measurement.evaluate_variant(p, est, jax.random.fold_in(key, i))
             if isinstance(est, V.VariantEstimator) else measurement.evaluate(p, est)
             for i, (_, est) in enumerate(estimators)]
  labels = [label for label, _ in estimators]
  mean_is = results[labels.index("is")][0]
  rows = []
  for label, (mean, trace, acc) in zip(labels, results):
    rows.append(dict(
        env=env, staleness=s, estimator=label, kl=float(rs.approx_kl),
        ess_fraction=float(rs.ess_fraction), tail_index=float(rs.tail_index),
        ratio_max=float(rs.max), log_ratio_std=float(rs.log_std),
        acceptance_fraction=float(acc), trace_covariance=float(trace),
        mean_norm=float(jnp.linalg.norm(mean)), reference_norm=ref_norm,
        cosine=_cos(mean, reference),
        relative_error=float(jnp.linalg.norm(mean - reference)) / max(ref_norm, 1e-30),
        reference_relative_noise=ref_noise,
        batch_to_batch_cosine=float(ref_pair_cos),
        cosine_to_is=_cos(mean, mean_is),
        relative_distance_to_is=float(jnp.linalg.norm(mean - mean_is) /
                                      jnp.maximum(jnp.linalg.norm(mean_is), 1e-30))))
  log(f"staleness {s}: KL {float(rs.approx_kl):.2e}, ESS {float(rs.ess_fraction):.4f}, "
      f"std log r {float(rs.log_std):.3f}, Hill tail index {float(rs.tail_index):.1f}, "
      f"max r {float(rs.max):.3g}, reference noise {ref_noise:.2f}, batch-to-batch cosine "
      f"{float(ref_pair_cos):.3f} ({time.time() - t0:.1f} s)")
  return rows, ratio_row, log_r
