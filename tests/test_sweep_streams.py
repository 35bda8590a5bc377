"""A run inside a sweep draws the same random numbers as the same run alone: its key is the one
`make_train(config)(key)` gets for its seed, whatever the settings around it. (Its results equal
the lone run's only up to floating-point reduction order: see the README; the metrics of the
first updates are compared in test_train.py::test_sweep_layout_matches_single_runs.)"""

import jax
import numpy as np

from rgpo_jax.training.config import TrainConfig
from rgpo_jax.training.sweep import Sweep


def test_run_keys_are_the_lone_runs_keys_for_every_setting():
  config = TrainConfig(num_envs=2, num_steps=8, total_steps=64, num_minibatches=2, hidden=(8,))
  sweep = Sweep(config, {"k": [1.0, 2.0, 4.0]}, num_seeds=3, seed=7)
  lone = jax.random.key_data(jax.random.split(jax.random.key(7), 3))  # seeds 0, 1, 2 alone
  keys = jax.random.key_data(sweep.keys)
  assert keys.shape == (9, 2)
  for r in range(9):
    s = int(sweep.seed_of_run[r])
    assert s == r % 3 and int(sweep.setting_of_run[r]) == r // 3
    np.testing.assert_array_equal(keys[r], lone[s])
