"""rgpo_jax: Rejection-Gated Policy Optimization (RGPO) and the gated policy-gradient family.

The library core (`gates`, `losses`, `advantages`, `distributions`) is importable on its own and
never imports the trainer or the command line.
"""

from rgpo_jax import advantages, distributions, gates, losses
from rgpo_jax import detached  # noqa: F401  (registers cispo, cispo_cap, detached in gates.make)
from rgpo_jax.gates import Gate
from rgpo_jax.losses import dual_ratio_policy_loss, policy_loss

__version__ = "0.1.0"

__all__ = ["Gate", "advantages", "detached", "distributions", "dual_ratio_policy_loss", "gates",
           "losses", "policy_loss"]
