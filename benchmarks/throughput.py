"""Environment steps per second of on-device training, RGPO vs PPO, 1 seed and 16 seeds.

CartPole-v1, 4 envs × 128 steps, 4 epochs × 4 minibatches, 5e5 steps per run (PureJaxRL's
settings). Each program is compiled ahead of time (compile excluded), then the variants are
timed alternately (order reversed on every other repetition), `--reps` times each, and the best
time is reported (the machine may be shared). A lean single-file PureJaxRL-style PPO (below,
gymnax 1.0 API) is the reference point. `rgpo` is the trainer's default RGPO gate, the
pessimistic sigmoid with k = 4.

  PYTHONPATH=. python benchmarks/throughput.py [--total-steps 500000] [--reps 2]
  PYTHONPATH=. python benchmarks/throughput.py --host-devices 1   # one-device layout only

Layouts, each timed in its own child process:
  one:   one device (a vmap over the seeds); rgpo_jax and the lean PPO.
  split: the seeds split over one forced host CPU device per core (`rgpo train`'s default on
         CPU, `--cpu-devices`), the compiled program alone (the whole run in one chunk).
  cli:   what `rgpo train --seeds S --out DIR` achieves (its summary's steps_per_second,
         compile excluded): `rgpo_jax.cli.main` as the command calls it, host loop, metrics.jsonl,
         progress bar and checkpoints included.
  lean-devices: the lean PPO with one seed per forced host device (S devices, `jax.pmap` over
         the seeds), its fastest CPU layout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def lean_ppo(total_steps: int):
  """A minimal PureJaxRL-style PPO (CartPole settings), the reference for rgpo_jax's speed."""
  import flax.linen as nn
  import gymnax
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax.linen.initializers import constant
  # flax's orthogonal init calls LAPACK's QR, which deadlocks XLA:CPU when vmapped over seeds
  # (rgpo_jax/networks.py); rgpo_jax's plain-JAX version gives the same matrices.
  from rgpo_jax.networks import orthogonal

  num_envs, num_steps, epochs, mbs = 4, 128, 4, 4
  num_updates = total_steps // (num_envs * num_steps)
  env, params_env = gymnax.make("CartPole-v1")

  class AC(nn.Module):
    @nn.compact
    def __call__(self, x):
      a = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
      a = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(a))
      logits = nn.Dense(2, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(a)
      c = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
      c = nn.tanh(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(c))
      v = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(c)
      return logits, v[..., 0]

  net = AC()

  def train(key):
    key, k1, k2 = jax.random.split(key, 3)
    params = net.init(k1, jnp.zeros((4,)))
    sched = lambda c: 2.5e-4 * (1.0 - (c // (mbs * epochs)) / num_updates)
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(sched, eps=1e-5))
    opt = tx.init(params)
    obs, est = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k2, num_envs), params_env)

    def update(carry, _):
      params, opt, est, obs, key = carry

      def step(c, _):
        est, obs, key = c
        key, ka, ks = jax.random.split(key, 3)
        logits, v = net.apply(params, obs)
        a = jax.random.categorical(ka, logits)
        lp = jnp.take_along_axis(jax.nn.log_softmax(logits), a[:, None], 1)[:, 0]
        obs2, est, r, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(ks, num_envs), est, a, params_env)
        done = jnp.logical_or(term, trunc)
        return (est, obs2, key), (obs, a, lp, v, r, done)

      (est, obs, key), (tobs, ta, tlp, tv, tr, td) = jax.lax.scan(step, (est, obs, key), None,
                                                                 num_steps)
      _, last_v = net.apply(params, obs)

      def gae(c, x):
        adv, nv = c
        d, v, r = x
        delta = r + 0.99 * nv * (1 - d) - v
        adv = delta + 0.99 * 0.95 * (1 - d) * adv
        return (adv, v), adv

      _, adv = jax.lax.scan(gae, (jnp.zeros_like(last_v), last_v), (td, tv, tr), reverse=True)
      tgt = adv + tv

      def epoch(c, _):
        params, opt, key = c
        key, kp = jax.random.split(key)
        perm = jax.random.permutation(kp, num_envs * num_steps)
        batch = jax.tree.map(lambda x: x.reshape((num_envs * num_steps,) + x.shape[2:]),
                             (tobs, ta, tlp, tv, adv, tgt))
        batch = jax.tree.map(lambda x: jnp.take(x, perm, 0).reshape((mbs, -1) + x.shape[1:]),
                             batch)

        def mb(c, b):
          params, opt = c
          o, a, lp0, v0, ad, tg = b

          def loss(p):
            logits, v = net.apply(p, o)
            logp = jax.nn.log_softmax(logits)
            lp = jnp.take_along_axis(logp, a[:, None], 1)[:, 0]
            vc = v0 + jnp.clip(v - v0, -0.2, 0.2)
            vl = 0.5 * jnp.maximum((v - tg) ** 2, (vc - tg) ** 2).mean()
            ratio = jnp.exp(lp - lp0)
            an = (ad - ad.mean()) / (ad.std() + 1e-8)
            pl = -jnp.minimum(ratio * an, jnp.clip(ratio, 0.8, 1.2) * an).mean()
            ent = -(jnp.exp(logp) * logp).sum(-1).mean()
            return pl + 0.5 * vl - 0.01 * ent

          g = jax.grad(loss)(params)
          u, opt = tx.update(g, opt)
          return (optax.apply_updates(params, u), opt), None

        (params, opt), _ = jax.lax.scan(mb, (params, opt), batch)
        return (params, opt, key), None

      (params, opt, key), _ = jax.lax.scan(epoch, (params, opt, key), None, epochs)
      return (params, opt, est, obs, key), jnp.sum(tr)

    return jax.lax.scan(update, (params, opt, est, obs, key), None, num_updates)

  return train


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--total-steps", type=int, default=500_000)
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--seeds", default="1,16")
  parser.add_argument("--host-devices", type=int, default=os.cpu_count() or 1,
                      help="forced host CPU devices for the split layout (default: one per "
                           "core); 1 = time the one-device layout only")
  parser.add_argument("--no-lean", action="store_true", help="skip the lean PPO reference")
  parser.add_argument("--no-cli", action="store_true", help="skip the `rgpo train` rows")
  parser.add_argument("--no-one-device", action="store_true",
                      help="skip the one-device layout (the slowest to time)")
  parser.add_argument("--layout", choices=("one", "split", "cli", "lean-devices"), default=None,
                      help=argparse.SUPPRESS)  # set in the child processes
  args = parser.parse_args()
  if args.layout is None:
    # Each layout in its own process: a process with forced host devices times one-device
    # programs differently, so the one-device rows come from a process without them.
    rows = [] if args.no_one_device else _child(["--layout", "one"], {})
    if args.host_devices > 1:
      rows += _child(["--layout", "split"], {
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.host_devices}"})
    many = [int(s) for s in args.seeds.split(",") if int(s) > 1]
    if many and not args.no_cli:
      rows += _child(["--layout", "cli"], {})
    if many and not args.no_lean:
      rows += _child(["--layout", "lean-devices"], {
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(many)}"})
    _print_table(args, rows)
    return
  if args.layout == "cli":
    print("ROWS " + json.dumps(_time_cli(args)), flush=True)
    return

  import jax
  from rgpo_jax.training import TrainConfig
  from rgpo_jax.training.sweep import Sweep

  seeds = [int(s) for s in args.seeds.split(",")]
  if args.layout in ("split", "lean-devices"):
    seeds = [s for s in seeds if s > 1]
  cases = []  # (label, seeds, devices, fn, args, steps, compile seconds)
  programs = [] if args.layout == "lean-devices" else [(s, a) for s in seeds
                                                        for a in ("rgpo", "ppo")]
  for s, algo in programs:
    cfg = TrainConfig(algo=algo, total_steps=args.total_steps)
    cfg = cfg.replace(updates_per_chunk=cfg.num_updates)  # whole run in one chunk
    devices = jax.devices()[:1] if args.layout == "one" else jax.devices()
    sweep = Sweep(cfg, num_seeds=s, devices=devices)
    state = sweep.init()
    t = time.perf_counter()
    chunk = sweep.compile_chunk(state, cfg.num_updates)
    compile_s = time.perf_counter() - t
    hp = sweep.place(sweep.hparams)
    label = f"rgpo_jax {algo}{' pess. k=4' if algo == 'rgpo' else ''}"
    cases.append((label, s, len(sweep.devices), chunk, (state, hp),
                  s * cfg.num_updates * cfg.batch_size, compile_s))
  if args.layout in ("one", "lean-devices") and not args.no_lean:
    for s in seeds:
      if args.layout == "lean-devices" and s != len(jax.devices()):
        continue
      train = lean_ppo(args.total_steps)
      fn = jax.jit(jax.vmap(train)) if args.layout == "one" else jax.pmap(train)
      keys = jax.random.split(jax.random.key(0), s)
      t = time.perf_counter()
      compiled = fn.lower(keys).compile() if args.layout == "one" else fn
      if args.layout != "one":  # pmap compiles on its first call: time that call
        jax.block_until_ready(fn(keys))
      compile_s = time.perf_counter() - t
      num_updates = args.total_steps // 512
      cases.append(("lean single-file PPO", s, 1 if args.layout == "one" else s, compiled,
                    (keys,), s * num_updates * 512, compile_s))

  best = {i: float("inf") for i in range(len(cases))}
  for rep in range(args.reps):
    order = list(enumerate(cases))
    for i, (label, s, d, fn, fargs, _, _) in (order if rep % 2 == 0 else order[::-1]):
      print(f"rep {rep + 1}/{args.reps}: {label}, {s} seed(s), {d} device(s)", file=sys.stderr,
            flush=True)
      jax.block_until_ready(fn(*fargs))  # (first rep includes a warm-up run)
      t = time.perf_counter()
      jax.block_until_ready(fn(*fargs))
      best[i] = min(best[i], time.perf_counter() - t)
  rows = [dict(label=label, seeds=s, devices=d, steps_per_s=steps / best[i], seconds=best[i],
               compile_s=cs) for i, (label, s, d, _, _, steps, cs) in enumerate(cases)]
  print("ROWS " + json.dumps(rows), flush=True)


def _time_cli(args) -> list[dict]:
  """`rgpo train --seeds S --out DIR` (all defaults: CartPole, rgpo, progress bar), `--reps`
  times in this process; its summary's steps_per_second (compile excluded), best of the reps."""
  import tempfile
  from rgpo_jax import cli
  rows = []
  for s in [int(s) for s in args.seeds.split(",") if int(s) > 1]:
    best = None
    for rep in range(args.reps):
      print(f"rep {rep + 1}/{args.reps}: rgpo train --seeds {s}", file=sys.stderr, flush=True)
      with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        rc = cli.main(["train", "--seeds", str(s), "--total-steps", str(args.total_steps),
                       "--out", out])
        if rc:
          raise SystemExit(f"rgpo train failed with exit status {rc}")
        with open(os.path.join(out, "summary.json")) as f:
          summary = json.load(f)
      if best is None or summary["train_seconds"] < best["train_seconds"]:
        best = summary
    rows.append(dict(label="rgpo train (CLI) rgpo", seeds=s, devices=len(best["devices"]),
                     steps_per_s=best["steps_per_second"], seconds=best["train_seconds"],
                     compile_s=best["compile_seconds"]))
  return rows


def _child(extra_args, extra_env) -> list[dict]:
  """Run this script with `extra_args` in a fresh process; its ROWS."""
  env = dict(os.environ, **extra_env)
  proc = subprocess.run([sys.executable] + sys.argv + extra_args, env=env, stdout=subprocess.PIPE,
                        text=True, check=True)
  line = [l for l in proc.stdout.splitlines() if l.startswith("ROWS ")][-1]
  return json.loads(line[len("ROWS "):])


def _print_table(args, rows) -> None:
  print(f"\nCartPole-v1, 4 envs × 128 steps, 4 epochs × 4 minibatches, "
        f"{args.total_steps:.0e} steps per run; {os.cpu_count()} CPU cores; best of "
        f"{args.reps}; compile excluded\n")
  print(f"| {'program':24s} | seeds | devices | env steps/s | seconds | compile s |")
  print(f"|{'-' * 26}|------:|--------:|------------:|--------:|----------:|")
  for r in rows:
    print(f"| {r['label']:24s} | {r['seeds']:5d} | {r['devices']:7d} | {r['steps_per_s']:11,.0f} "
          f"| {r['seconds']:7.2f} | {r['compile_s']:9.1f} |")
  by = {(r["label"].split()[1], r["seeds"], r["devices"]): r["steps_per_s"] for r in rows
        if r["label"].startswith("rgpo_jax")}
  print()
  for (algo, s, d), sps in by.items():
    if algo == "rgpo" and ("ppo", s, d) in by:
      print(f"{s} seed(s) on {d} device(s): RGPO / PPO throughput = {sps / by[('ppo', s, d)]:.3f}")
  for cli in [r for r in rows if r["label"].startswith("rgpo train")]:
    s = cli["seeds"]
    program = [r["steps_per_s"] for r in rows if r["label"].startswith("rgpo_jax rgpo")
               and r["seeds"] == s and r["devices"] == cli["devices"]]
    lean = [r["steps_per_s"] for r in rows if r["label"].startswith("lean") and r["seeds"] == s]
    if program:
      print(f"{s} seeds: CLI / compiled program ({cli['devices']} devices) = "
            f"{cli['steps_per_s'] / program[0]:.3f}")
    if lean:
      print(f"{s} seeds: CLI / lean PPO's fastest layout = {cli['steps_per_s'] / max(lean):.2f}")


if __name__ == "__main__":
  main()
