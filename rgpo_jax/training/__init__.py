"""The on-device trainer: config, rollout + update rule (gated epochs, TRPO, AWR), sweeps,
chunked host loop, CLI, run comparison."""

from rgpo_jax.training.config import (ALGOS, ALL_ALGOS, SWEEPABLE, UPDATE_RULE_ALGOS, HParams,
                                      TrainConfig, hparams_from_config)
from rgpo_jax.training.train import METRICS, Trainer, TrainState, Transition, make_train

__all__ = ["ALGOS", "ALL_ALGOS", "HParams", "METRICS", "SWEEPABLE", "TrainConfig", "TrainState",
           "Trainer", "Transition", "UPDATE_RULE_ALGOS", "hparams_from_config", "make_train"]
