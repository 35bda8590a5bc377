"""`rgpo variance`: measure gradient variance and bias of gated estimators against IS.

    rgpo variance --synthetic --out runs/var-synth          # heavy-tailed ratio laws, exact truth
    rgpo variance --synthetic --quick --out /tmp/v          # small grid (seconds)
    rgpo variance --env CartPole-v1 --out runs/var-cartpole # real policies, stale data

Writes CSV tables and PNG plots under --out only (a new or empty folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Sequence

RUN_MARKER = "variance_run.json"


def register(subparsers) -> None:
  p = subparsers.add_parser(
      "variance", help="gradient variance/bias of gated estimators vs importance sampling",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  mode = p.add_mutually_exclusive_group(required=True)
  mode.add_argument("--synthetic", action="store_true",
                    help="synthetic ratios (Lomax α ∈ {1.2,1.5,2,3}, log-normal σ ∈ {0.1,0.2,0.5,1,2})")
  mode.add_argument("--env", metavar="NAME",
                    help="real policies on a Gymnax env (CartPole-v1, Acrobot-v1)")
  p.add_argument("--out", required=True, help="output folder (created; must be new or empty)")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed")
  p.add_argument("--quick", action="store_true",
                 help="small configuration (tests / smoke runs)")
  syn = p.add_argument_group("synthetic")
  syn.add_argument("--replications", type=int, default=None,
                   help="independent streams of n_max samples (default 32; quick: 4)")
  syn.add_argument("--n-max", type=float, default=None,
                   help="largest sample size, a power of 10 >= 1e3 (default 1e6; quick: 1e4); "
                        "n runs over 1e2, 1e3, ..., n_max")
  real = p.add_argument_group("real policies")
  real.add_argument("--staleness", type=str, default="0,1,2,4,8",
                    help="comma-separated numbers of optimiser steps taken after collection")
  real.add_argument("--train-steps", type=float, default=None,
                    help="env steps of PPO training before collecting (default 5e4; quick: 2e4)")
  real.add_argument("--samples", type=int, default=None,
                    help="transitions in the stale batch (default 131072; quick: 8192); the "
                         "on-policy reference averages 6 (quick: 2) fresh batches of that size")
  real.add_argument("--per-sample", type=int, default=None,
                    help="random subset of the batch for per-sample gradients / covariance "
                         "(default 8192; quick: 1024)")
  real.add_argument("--drift-gate", default="ppo_clip",
                    help="gate (family, default parameters) of the policy loss whose optimiser "
                         "steps make the data stale")
  real.add_argument("--drift-lr", type=float, default=1e-3,
                    help="Adam learning rate of the staleness steps (full batch)")
  p.set_defaults(func=run)


def _prepare_out(path: str) -> str:
  path = os.path.abspath(path)
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise SystemExit(f"rgpo variance: --out {path} exists and is not a folder")
    entries = sorted(os.listdir(path))
    if entries:
      what = ("another variance run" if RUN_MARKER in entries
              else f"other files ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''})")
      raise SystemExit(f"rgpo variance: --out {path} is not empty (it holds {what}); refusing to "
                       f"overwrite it. Choose a new folder.")
  os.makedirs(path, exist_ok=True)
  return path


def _log(msg: str) -> None:
  print(f"[rgpo variance {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  if not rows:
    return
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _validate(args) -> None:
  """Argument checks that need no compile, before anything is written."""
  if args.synthetic:
    n_max = float(args.n_max or 1e4)
    decades = math.log10(n_max) if n_max > 0 else 0.0
    if n_max < 1000 or abs(decades - round(decades)) > 1e-9:
      raise SystemExit(f"rgpo variance: --n-max must be a power of 10 >= 1e3, got {args.n_max}")
    if args.replications is not None and args.replications < 2:
      raise SystemExit(f"rgpo variance: --replications must be >= 2, got {args.replications}")
    return
  _parse_staleness(args.staleness)
  from rgpo_jax.envs import check_env_name
  try:
    check_env_name(args.env)
  except ValueError as e:
    raise SystemExit(f"rgpo variance --env: {e}")


def run(args) -> int:
  _validate(args)
  out = _prepare_out(args.out)
  config = {k: v for k, v in vars(args).items() if k != "func"}
  config["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
  with open(os.path.join(out, RUN_MARKER), "w") as f:
    json.dump(config, f, indent=1)
  if args.synthetic:
    return run_synthetic(args, out)
  return run_env(args, out)


# ---------------------------------------------------------------------------------------------
# Synthetic.


def run_synthetic(args, out: str) -> int:
  import jax
  import numpy as np
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import variance as V

  replications = args.replications or (4 if args.quick else 32)
  n_max = int(args.n_max or (1e4 if args.quick else 1e6))
  decades = math.log10(n_max) if n_max > 0 else 0
  if n_max < 1000 or abs(decades - round(decades)) > 1e-9:
    raise SystemExit(f"rgpo variance: --n-max must be a power of 10 >= 1e3, got {args.n_max}")
  if replications < 2:
    raise SystemExit(f"rgpo variance: --replications must be >= 2, got {replications}")
  n_values = tuple(10 ** j for j in range(2, int(round(decades)) + 1))
  chunk = min(10_000, n_max)
  laws = V.default_laws()
  estimators = V.default_estimators()
  labels = [name for name, _ in estimators]
  model = V.AdvantageModel()

  _log(f"synthetic grid: {len(laws)} laws x {len(estimators)} estimators x n={list(n_values)}, "
       f"{replications} streams of {n_max:.0e} samples each ({len(laws) * replications * n_max:.2e}"
       f" samples); model {model}")
  t0 = time.time()
  summary = V.synthetic_grid(jax.random.key(args.seed), laws, [g for _, g in estimators], model,
                             n_values=n_values, replications=replications, chunk=chunk)
  mc_seconds = time.time() - t0
  _log(f"Monte-Carlo grid done in {mc_seconds:.1f} s (one compiled call, compile included)")

  _log("exact moments by quadrature (float64) ...")
  sups = {label: V.weight_sup(g) for label, g in estimators}
  exact = {}
  for law in laws:
    for label, g in estimators:
      exact[law.name, label] = V.exact_moments(g, law, model, sup_weight=sups[label])
  exact_rows = []
  for law in laws:
    var_is = exact[law.name, "is"].variance
    for label, _ in estimators:
      e = exact[law.name, label]
      exact_rows.append(dict(law=law.name, estimator=label, E_r2=law.moment(2), **e._asdict(),
                             relative_bias=e.bias / e.target,
                             n_is_wins=V.mse_crossover(var_is, e.variance, e.bias)))
  write_csv(os.path.join(out, "synthetic_exact.csv"), exact_rows)

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
  write_csv(os.path.join(out, "synthetic_mc.csv"), rows)

  # The exact bias-variance frontier of the RGPO sigmoid over k, with other gates as points.
  ks = [1, 2, 4, 8] if args.quick else [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32]
  frontier = []
  for law in laws:
    for k in ks:
      g = gates_lib.sigmoid(float(k))
      e = V.exact_moments(g, law, model)
      frontier.append(dict(law=law.name, k=float(k), bias=e.bias, variance=e.variance,
                           sup_weight=e.sup_weight, bound=e.bound,
                           mse_n1000=e.variance / 1000 + e.bias ** 2))
  write_csv(os.path.join(out, "synthetic_frontier_k.csv"), frontier)
  _log("tables written; plotting ...")
  _plot_synthetic(out, laws, labels, n_values, summary, exact, frontier)
  _write_summary_json(out, dict(mc_seconds=mc_seconds, n_values=list(n_values),
                                replications=replications, model=model._asdict()))
  _log(f"done: {out}")
  return 0


def _write_summary_json(out, extra):
  path = os.path.join(out, "summary.json")
  with open(path, "w") as f:
    json.dump(extra, f, indent=1, default=float)


def _save_panels(fig, path: str, title: str, bottom: float) -> None:
  """Finish a figure of panels: one legend for all of them below (labels gathered from every
  panel; panels without data are hidden), a title, then save to `path` and close."""
  import matplotlib.pyplot as plt
  seen = {}
  for ax in fig.axes:
    if not ax.has_data():
      ax.axis("off")
    for h, name in zip(*ax.get_legend_handles_labels()):
      seen.setdefault(name, h)
  fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=7, fontsize=8,
             bbox_to_anchor=(0.5, 0.0))
  fig.suptitle(title, fontsize=11)
  fig.tight_layout(rect=(0, bottom, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_synthetic(out, laws, labels, n_values, summary, exact, frontier):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  cmap = plt.get_cmap("tab20")
  colors = {label: cmap(i % 20) for i, label in enumerate(labels)}
  cols = 3 if len(laws) == 9 else 4
  rows = math.ceil(len(laws) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
  for li, law in enumerate(laws):
    ax = axes[li // cols][li % cols]
    for ei, label in enumerate(labels):
      y = summary.sample_variance_median[li, ei]
      style = "--" if label.startswith("reinforce") else "-"
      lw = 2.2 if label in ("is", "sigmoid(k=4)") else 1.2
      ax.plot(n_values, np.maximum(y, 1e-12), style, lw=lw, marker="o", ms=3,
              color=colors[label], label=label)
    var_is = exact[law.name, "is"].variance
    if math.isfinite(var_is):
      ax.axhline(var_is, color=colors["is"], ls=":", lw=1.5, label="Var_IS (exact)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(law.name, fontsize=10)
    ax.set_xlabel("n (batch size)")
    ax.set_ylabel("median per-sample variance of w·Â·S")
    ax.grid(True, which="both", alpha=0.3)
  _save_panels(fig, os.path.join(out, "variance_vs_n.png"),
               "Per-sample gradient variance s²_n vs batch size (median over batches); "
               "IS diverges for α ≤ 2, bounded gates stay flat", bottom=0.07)

  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
  for li, law in enumerate(laws):
    ax = axes[li // cols][li % cols]
    pts = [f for f in frontier if f["law"] == law.name]
    ax.plot([p["bias"] for p in pts], [p["variance"] for p in pts], "-", color="k", lw=1,
            label="sigmoid, k sweep (exact)")
    for p in pts:
      if p["k"] in (0.5, 1, 2, 4, 8, 16, 32):
        ax.annotate(f"k={p['k']:g}", (p["bias"], p["variance"]), fontsize=7)
    for label in labels:
      e = exact[law.name, label]
      if math.isfinite(e.variance):
        ax.plot(e.bias, e.variance, "o", color=colors[label], ms=5, label=label)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_title(law.name, fontsize=10)
    ax.set_xlabel("bias E[w·Â·S] − E[r·Â·S]")
    ax.set_ylabel("Var(w·Â·S) (exact)")
    ax.grid(True, alpha=0.3)
  _save_panels(fig, os.path.join(out, "bias_variance_frontier.png"),
               "Bias-variance frontier of the RGPO sigmoid over k (IS: bias 0, variance ∞ "
               "when α ≤ 2)", bottom=0.07)


# ---------------------------------------------------------------------------------------------
# Real policies.


def _parse_staleness(text: str) -> list[int]:
  try:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
  except ValueError:
    raise SystemExit(f"rgpo variance: --staleness must be comma-separated integers, got {text!r}")
  if not values or values[0] < 0:
    raise SystemExit(f"rgpo variance: --staleness needs integers >= 0, got {text!r}")
  return values


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
  import jax.flatten_util
  import jax.numpy as jnp
  import numpy as np
  import optax
  from rgpo_jax import advantages as adv_lib
  from rgpo_jax import gates as gates_lib
  from rgpo_jax import losses
  from rgpo_jax import variance as V
  try:
    from rgpo_jax.networks import ActorCritic
    from rgpo_jax.training import TrainConfig, Trainer, hparams_from_config, make_train
    from rgpo_jax.training.train import bootstrap_advantages
  except ModuleNotFoundError as e:
    raise SystemExit(f"rgpo variance --env needs the trainer (rgpo_jax.training): {e}")

  staleness = _parse_staleness(args.staleness)
  quick = args.quick
  train_steps = int(args.train_steps or (2e4 if quick else 5e4))
  samples = int(args.samples or (8192 if quick else 131072))
  per_sample = int(args.per_sample or (1024 if quick else 8192))
  ref_batches = 2 if quick else 6
  num_envs = 16 if quick else 64
  if samples % num_envs or samples < 1024:
    raise SystemExit(f"rgpo variance: --samples must be a multiple of {num_envs} and >= 1024, "
                     f"got {samples}")
  if not 64 <= per_sample <= samples:
    raise SystemExit(f"rgpo variance: --per-sample must be in [64, --samples={samples}], got "
                     f"{per_sample}")
  try:
    drift_gate = gates_lib.make(args.drift_gate)
  except ValueError as e:
    raise SystemExit(f"rgpo variance: --drift-gate: {e}")
  estimators = V.default_estimators()
  labels = [label for label, _ in estimators]
  is_index = labels.index("is")

  # 1. Train a policy briefly (PPO, the trainer's defaults).
  try:
    config = TrainConfig(env=args.env, algo="ppo", total_steps=train_steps).validate()
  except ValueError as e:
    raise SystemExit(f"rgpo variance --env: {e}")
  trainer = Trainer(config)
  hp = hparams_from_config(trainer.config)
  network = trainer.network
  _log(f"training {args.env} with PPO for {train_steps:.0e} env steps ...")
  t0 = time.time()
  state, metrics = jax.jit(make_train(config))(jax.random.key(args.seed))
  returns = np.asarray(metrics["episode_return"])
  final_return = float(np.nanmean(returns[-max(1, len(returns) // 10):]))
  _log(f"trained in {time.time() - t0:.1f} s; mean episode return over the last 10% of updates "
       f"{final_return:.1f}")
  params = state.params

  # The collector's Trainer (static env/network parts) is built outside any jit.
  collector = Trainer(config.replace(num_envs=num_envs, num_steps=samples // num_envs,
                                    total_steps=max(samples, train_steps)))
  burn = Trainer(config.replace(num_envs=num_envs, num_steps=512,  # burn-in from the resets
                                total_steps=max(num_envs * 512, train_steps)))

  @jax.jit
  def collect(params, key):
    """`samples` on-policy transitions with normalised GAE advantages from params' critic."""
    k_init, k_burn, k_roll = jax.random.split(key, 3)
    cs = collector.init(k_init, hp)
    env_state, obs, _ = burn.rollout(params, cs.env_state, cs.obs, cs.obs_stats, k_burn)
    _, _, traj = collector.rollout(params, env_state, obs, cs.obs_stats, k_roll)
    next_values = network.apply(params, traj.final_obs, method=ActorCritic.value)
    advantage, _ = bootstrap_advantages(traj, next_values, hp)
    flat = lambda x: x.reshape((samples,) + x.shape[2:])
    return V.PolicyBatch(flat(traj.obs), flat(traj.action), flat(traj.log_prob),
                         adv_lib.normalize(flat(advantage)))

  def log_prob_fn_for(full):
    def log_prob_fn(actor, obs, action):
      p = {"params": {**full["params"], "actor": actor}}
      return network.apply(p, obs, method=ActorCritic.policy).log_prob(action)
    return log_prob_fn

  def batch_log_prob(full, batch):
    return network.apply(full, batch.obs, method=ActorCritic.policy).log_prob(batch.action)

  def mean_gradient(gate, full, batch):
    """∇ of the batch policy loss w.r.t. the actor, flattened [P] (= mean per-sample grad)."""
    def loss(actor):
      lp = batch_log_prob({"params": {**full["params"], "actor": actor}}, batch)
      return losses.policy_loss(gate, lp, batch.behavior_log_prob, batch.advantage)
    grad, aux = jax.grad(loss, has_aux=True)(full["params"]["actor"])
    return jax.flatten_util.ravel_pytree(grad)[0], aux

  key = jax.random.fold_in(jax.random.key(args.seed), 1)
  k_collect, k_ref, k_sub = jax.random.split(key, 3)
  t0 = time.time()
  batch = collect(params, k_collect)
  subset = jax.random.choice(k_sub, samples, (per_sample,), replace=False)
  sub_batch = jax.tree.map(lambda x: x[subset], batch)
  _log(f"collected {samples} transitions in {time.time() - t0:.1f} s; taking up to "
       f"{max(staleness)} optimiser steps (Adam lr {args.drift_lr:g}, {args.drift_gate} loss, "
       f"full batch) ...")

  # 2. Make the batch stale: s optimiser steps of the policy loss after collection.
  opt = optax.adam(args.drift_lr)

  @jax.jit
  def drift(params):
    def step(carry, _):
      p, o = carry
      g = jax.grad(lambda p: losses.policy_loss(drift_gate, batch_log_prob(p, batch),
                                                batch.behavior_log_prob, batch.advantage)[0])(p)
      upd, o = opt.update(g, o, p)
      p = optax.apply_updates(p, upd)
      return (p, o), p
    _, traj = jax.lax.scan(step, (params, opt.init(params)), None, length=max(staleness))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params, traj)

  snapshots = drift(params)
  reinforce = gates_lib.reinforce()

  @jax.jit
  def reference_gradient(p, key):
    """On-policy loss gradient at θ_s: REINFORCE (w ≡ 1) averaged over `ref_batches` fresh
    batches of `samples` each. Also returns the noise of that average, as its relative standard
    error ‖std_i(g_i)‖/(√R·‖ḡ‖), and the mean pairwise cosine between the batches' gradients
    (the cosine a single stale batch could reach against the truth, roughly)."""
    grads = jax.lax.map(lambda k: mean_gradient(reinforce, p, collect(p, k))[0],
                        jax.random.split(key, ref_batches))
    mean = jnp.mean(grads, axis=0)
    sem = jnp.sqrt(jnp.sum(jnp.var(grads, axis=0, ddof=1)) / ref_batches)
    unit = grads / jnp.linalg.norm(grads, axis=1, keepdims=True)
    gram = unit @ unit.T
    pair_cos = (jnp.sum(gram) - ref_batches) / (ref_batches * (ref_batches - 1))
    return mean, sem / jnp.linalg.norm(mean), pair_cos

  @jax.jit
  def evaluate(p, gate):
    mean, aux = mean_gradient(gate, p, batch)
    per = V.per_sample_policy_gradients(gate, log_prob_fn_for(p), p["params"]["actor"],
                                        sub_batch)
    trace = jnp.sum(jnp.var(per, axis=0, ddof=1))
    return mean, trace, aux.acceptance_fraction

  @jax.jit
  def log_ratios(p):
    return batch_log_prob(p, batch) - batch.behavior_log_prob

  def cos(a, b):
    return float(jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30))

  rows, ratio_rows, log_r_by_s = [], [], {}
  for s in staleness:
    t0 = time.time()
    p = jax.tree.map(lambda x: x[s], snapshots)
    reference, ref_noise, ref_pair_cos = reference_gradient(p, jax.random.fold_in(k_ref, s))
    ref_norm, ref_noise = float(jnp.linalg.norm(reference)), float(ref_noise)
    lr_s = log_ratios(p)
    log_r_by_s[s] = np.asarray(lr_s)
    rs = jax.device_get(V.ratio_statistics(lr_s))
    ratio_rows.append(dict(staleness=s, **{k: float(v) for k, v in rs._asdict().items()}))
    results = [evaluate(p, gate) for _, gate in estimators]
    mean_is = results[is_index][0]
    for label, (mean, trace, acc) in zip(labels, results):
      mean_norm = float(jnp.linalg.norm(mean))
      rows.append(dict(
          env=args.env, staleness=s, estimator=label, kl=float(rs.approx_kl),
          ess_fraction=float(rs.ess_fraction), tail_index=float(rs.tail_index),
          ratio_max=float(rs.max), log_ratio_std=float(rs.log_std),
          acceptance_fraction=float(acc), trace_covariance=float(trace),
          mean_norm=mean_norm, reference_norm=ref_norm, cosine=cos(mean, reference),
          relative_error=float(jnp.linalg.norm(mean - reference)) / max(ref_norm, 1e-30),
          reference_relative_noise=ref_noise,
          batch_to_batch_cosine=float(ref_pair_cos),
          cosine_to_is=cos(mean, mean_is),
          relative_distance_to_is=float(jnp.linalg.norm(mean - mean_is) /
                                        jnp.maximum(jnp.linalg.norm(mean_is), 1e-30))))
    _log(f"staleness {s}: KL {float(rs.approx_kl):.2e}, ESS {float(rs.ess_fraction):.4f}, "
         f"std log r {float(rs.log_std):.3f}, Hill tail index {float(rs.tail_index):.1f}, "
         f"max r {float(rs.max):.3g}, reference noise {ref_noise:.2f}, batch-to-batch cosine "
         f"{float(ref_pair_cos):.3f} ({time.time() - t0:.1f} s)")
  write_csv(os.path.join(out, "env_gradients.csv"), rows)
  write_csv(os.path.join(out, "env_ratios.csv"), ratio_rows)
  _plot_env(out, args.env, staleness, labels, rows, log_r_by_s, ratio_rows)
  _write_summary_json(out, dict(env=args.env, train_steps=train_steps, samples=samples,
                                per_sample_subset=per_sample,
                                reference_samples=ref_batches * samples,
                                final_return=final_return, drift_gate=args.drift_gate,
                                drift_lr=args.drift_lr, staleness=staleness))
  _log(f"done: {out}")
  return 0


def _plot_env(out, env, staleness, labels, rows, log_r_by_s, ratio_rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  cmap = plt.get_cmap("tab20")
  colors = {label: cmap(i % 20) for i, label in enumerate(labels)}
  fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
  for label in labels:
    sel = [r for r in rows if r["estimator"] == label]
    xs = [r["staleness"] for r in sel]
    kw = dict(marker="o", ms=3, color=colors[label], label=label,
              lw=2.2 if label in ("is", "sigmoid(k=4)") else 1.2,
              ls="--" if label.startswith("reinforce") else "-")
    axes[0].plot(xs, [r["trace_covariance"] for r in sel], **kw)
    axes[1].plot(xs, [r["cosine"] for r in sel], **kw)
    axes[2].plot(xs, [r["relative_error"] for r in sel], **kw)
    axes[3].plot(xs, [r["relative_distance_to_is"] for r in sel], **kw)
  axes[0].set_yscale("log")
  axes[0].set_ylabel("tr Cov of per-sample gradients")
  axes[1].set_ylabel("cos(mean gradient, on-policy gradient)")
  axes[2].set_ylabel("‖mean − on-policy‖ / ‖on-policy‖")
  axes[3].set_ylabel("‖mean − IS mean‖ / ‖IS mean‖ (same samples)")
  for ax in axes:
    ax.set_xlabel("staleness s (optimiser steps after collection)")
    ax.grid(True, alpha=0.3)
  _save_panels(fig, os.path.join(out, "variance_vs_staleness.png"),
               f"{env}: per-sample policy gradients of stale data", bottom=0.1)

  fig, ax = plt.subplots(figsize=(6.5, 4.4))
  for s in staleness:
    lr = log_r_by_s[s]
    if np.std(lr) < 1e-6:  # on-policy: r ≡ 1 up to float rounding
      ax.axvline(0.0, color="k", lw=1, label=f"s={s}: r ≡ 1 (on-policy)")
      continue
    info = next(r for r in ratio_rows if r["staleness"] == s)
    ax.hist(lr, bins=80, histtype="step", density=True, lw=1.3,
            label=f"s={s}: std(log r)={info['log_std']:.3f}, Hill α̂={info['tail_index']:.2f}")
  ax.set_yscale("log")
  ax.set_xlabel("log r = log π_θs − log π_old")
  ax.set_ylabel("density")
  ax.set_title(f"{env}: distribution of the ratios of stale data")
  ax.legend(fontsize=8)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "ratio_distribution.png"), dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m rgpo_jax.variance_cli ARGS` = `rgpo variance ARGS` (works without the trainer)."""
  parser = argparse.ArgumentParser(prog="rgpo")
  register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["variance"] + list(sys.argv[1:] if argv is None else argv))
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
