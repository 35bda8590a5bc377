"""Update rules: how one rollout's batch becomes new parameters (see `base` for the contract).

| rule | algos | module |
|---|---|---|
| gated minibatch epochs | every gate of `config.ALGOS` (rgpo, ppo, importance, ...) | `gated` |
| natural gradient (TRPO) | trpo | `natural_gradient` |
| weighted regression (AWR) | awr | `weighted_regression` |

`make_rule(trainer)` picks one, once, when the `Trainer` is built (`config.update_rule`).
"""

from rgpo_jax.training.update_rules.base import (MAX_METRICS, METRICS, RULE_METRICS, Batch,
                                                 minibatch_epochs, rollout_kl,
                                                 value_regression_loss)
from rgpo_jax.training.update_rules.gated import GatedEpochs
from rgpo_jax.training.update_rules.natural_gradient import NaturalGradient
from rgpo_jax.training.update_rules.weighted_regression import WeightedRegression

RULES = {rule.name: rule for rule in (GatedEpochs, NaturalGradient, WeightedRegression)}


def make_rule(trainer):
  """The update rule of `trainer.config` (`config.update_rule` → `RULES`), bound to `trainer`."""
  return RULES[trainer.config.update_rule](trainer)


__all__ = ["Batch", "GatedEpochs", "MAX_METRICS", "METRICS", "NaturalGradient", "RULES",
           "RULE_METRICS", "WeightedRegression", "make_rule", "minibatch_epochs", "rollout_kl",
           "value_regression_loss"]
