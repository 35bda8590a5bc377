"""Advantage estimators, one module per concept (all pure and jittable):

- `control`: generalised advantage estimation with auto-resets, per-minibatch `normalize`
  (control, time-major `[T, ...]`).
- `group`: group-relative estimators on outcome rewards `[..., N]` (N samples of one prompt):
  GRPO (std with `ddof`), Dr.GRPO, RLOO, OPO, GPG, GDPO (multi-reward).
- `reinforce`: token returns with a batch or greedy baseline: REINFORCE++ (± group baseline),
  ReMax; `discounted_returns`, `masked_whiten`.
- `pass_at_k`: closed-form Pass@K advantages and surrogate-reward weights (binary rewards).

Everything is re-exported here: `advantages.grpo_advantages(...)`.
"""

from rgpo_jax.advantages.control import gae, normalize
from rgpo_jax.advantages.group import (dr_grpo_advantages, gdpo_advantages, gpg_advantages,
                                       grpo_advantages, opo_advantages, rloo_advantages)
from rgpo_jax.advantages.pass_at_k import (SURROGATES, pass_at_k_advantages,
                                           surrogate_advantages)
from rgpo_jax.advantages.reinforce import (discounted_returns, masked_whiten,
                                           reinforce_pp_advantages,
                                           reinforce_pp_baseline_advantages, remax_advantages)

__all__ = ["SURROGATES", "discounted_returns", "dr_grpo_advantages", "gae", "gdpo_advantages",
           "gpg_advantages", "grpo_advantages", "masked_whiten", "normalize", "opo_advantages",
           "pass_at_k_advantages", "reinforce_pp_advantages", "reinforce_pp_baseline_advantages",
           "remax_advantages", "rloo_advantages", "surrogate_advantages"]
