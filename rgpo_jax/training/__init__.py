"""The on-device trainer: config, rollout + update (any gate), sweeps, chunked host loop, CLI."""

from rgpo_jax.training.config import ALGOS, SWEEPABLE, HParams, TrainConfig, hparams_from_config
from rgpo_jax.training.train import METRICS, Trainer, TrainState, Transition, make_train

__all__ = ["ALGOS", "HParams", "METRICS", "SWEEPABLE", "TrainConfig", "TrainState", "Trainer",
           "Transition", "hparams_from_config", "make_train"]
