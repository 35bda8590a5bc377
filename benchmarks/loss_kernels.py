"""Forward + gradient cost of `policy_loss` for every gate against an inline PPO clipped loss.

For each batch size N, times jit(value_and_grad) with respect to log_prob (the part of a training
step the gate changes) and prints microseconds per call and the ratio to the inline PPO loss (timed alternately with
each row, so machine load affects both sides alike).
"aux" rows also materialise every diagnostic of `PolicyLossAux` (what the trainer logs).

  python benchmarks/loss_kernels.py [--sizes 1e4,1e5,1e6,1e7] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from rgpo_jax import gates, losses

GATES = {
    "rgpo sigmoid k=4": gates.sigmoid(4.0), "ppo_clip (gate)": gates.ppo_clip(0.2),
    "importance": gates.importance(), "reinforce": gates.reinforce(), "sapo": gates.sapo(),
    "erf": gates.erf(1.0), "arctan": gates.arctan(1.0), "softsign": gates.softsign(1.0),
    "truncated": gates.truncated(0.5, 2.0),
}


def inline_ppo_loss(log_prob, behavior_log_prob, advantage, epsilon=0.2):
  """The hand-written PPO loss of single-file PPO implementations (PureJaxRL, CleanRL)."""
  ratio = jnp.exp(log_prob - behavior_log_prob)
  return -jnp.mean(jnp.minimum(ratio * advantage,
                               jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantage))


def _time_pair(fn, reference, args, repeats):
  """Median seconds of `fn` and `reference`, timed alternately so load drift hits both alike."""
  for f in (fn, reference):
    jax.block_until_ready(f(*args))  # compile + warm-up
  samples = ([], [])
  for _ in range(repeats):
    for f, out in zip((fn, reference), samples):
      start = time.perf_counter()
      jax.block_until_ready(f(*args))
      out.append(time.perf_counter() - start)
  return statistics.median(samples[0]), statistics.median(samples[1])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--sizes", default="1e4,1e5,1e6,1e7")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  sizes = [int(float(s)) for s in args.sizes.split(",")]

  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s); "
        f"median of {args.repeats} calls, value_and_grad w.r.t. log_prob, float32\n")
  header = f"{'loss':<26}" + "".join(f"{f'N={n:.0e}':>22}" for n in sizes)
  print(header)
  print("-" * len(header))
  key = jax.random.key(0)
  data = {}
  for n in sizes:
    k1, k2, k3 = jax.random.split(jax.random.fold_in(key, n), 3)
    lp = jax.random.normal(k1, (n,)) * 0.5 - 1.0
    data[n] = (lp, lp + 0.2 * jax.random.normal(k2, (n,)), jax.random.normal(k3, (n,)))

  reference = jax.jit(jax.value_and_grad(inline_ppo_loss))
  base = {n: _time_pair(reference, reference, data[n], args.repeats)[0] for n in sizes}
  print(f"{'inline PPO (reference)':<26}" + "".join(f"{base[n] * 1e6:>13.0f} us  1.00x" for n in sizes))
  rows = [(name, gate, False) for name, gate in GATES.items()]
  rows.append(("rgpo sigmoid k=4 + aux", GATES["rgpo sigmoid k=4"], True))
  for name, gate, with_aux in rows:
    if with_aux:
      fn = jax.jit(jax.value_and_grad(lambda lp, b, a, g=gate: losses.policy_loss(g, lp, b, a),
                                      has_aux=True))
    else:
      fn = jax.jit(jax.value_and_grad(lambda lp, b, a, g=gate: losses.policy_loss(g, lp, b, a)[0]))
    cells = []
    for n in sizes:
      t, t_ref = _time_pair(fn, reference, data[n], args.repeats)
      cells.append(f"{t * 1e6:>13.0f} us {t / t_ref:>5.2f}x")
    print(f"{name:<26}" + "".join(cells))


if __name__ == "__main__":
  main()
