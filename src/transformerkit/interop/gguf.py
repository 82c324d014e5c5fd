"""GGUF files (the format of llama.cpp and the ggml project) in, read with the project's own `gguf` package.

A GGUF file holds one model: key-value metadata (the architecture, its shape, the tokenizer, a chat
template) and its tensors, quantized or not. This module opens the file with clear errors, turns its
metadata into plain Python values, and reads a LLaMA-architecture model as a Hugging Face checkpoint
would hold it (`read_gguf`): a config.json dict and fp32 tensors under transformers' names, dequantized
by `gguf` itself. `tk.load` (interop/hf.py) builds our model from them through the llama converter.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .. import progress
from ..errors import CheckpointError


def open_gguf(path: str | os.PathLike):
    """A `gguf.GGUFReader` over the file (memory-mapped: nothing is read until used). A missing, truncated
    or non-GGUF file is a CheckpointError naming it."""
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading GGUF files needs the `gguf` package: pip install gguf") from None
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no GGUF file at {path}")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as e:
        size = path.stat().st_size
        raise CheckpointError(f"{path} is not a complete GGUF file ({size:,} bytes; {type(e).__name__}: {e}): "
                              "truncated by an interrupted download or copy, or another format; "
                              "download it again") from e


def read_metadata(reader, skip: tuple[str, ...] = ()) -> dict:
    """The file's key-value metadata as Python values: str, int, float, bool, or lists of them
    (tokenizer.ggml.tokens is a list of 49,152 str for SmolLM2); keys starting with `skip` stay unread."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith(("GGUF.", *skip))}


# --- weights in ------------------------------------------------------------------------------------
#
# A GGUF model becomes what a Hugging Face checkpoint folder holds: a config.json-style dict and a state
# dict under transformers' names. The family's converter (interop/llama.py) then maps both onto ours, so
# there is one table from their names to ours, and the GGUF side only knows llama.cpp's names.

ARCHITECTURES = ("llama",)   # general.architecture values we load (SmolLM2's file says "llama")

# Tensor types we load: everything `gguf` dequantizes that a model file holds, K-quants included.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

# llama.cpp's names (blk.N.<part>.weight) -> transformers' LlamaForCausalLM names.
LLAMA_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LLAMA_BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _need(metadata: dict, key: str, path):
    if key not in metadata:
        arch = metadata.get("general.architecture")
        raise CheckpointError(f"{path}: the GGUF metadata has no {key!r}, which a {arch} model needs; the file "
                              "was not written by llama.cpp's converter, or is damaged")
    return metadata[key]


def hf_config_from_gguf(reader, path="GGUF file") -> dict:
    """The transformers config.json (model_type "llama") that the file's metadata describes; a file we
    cannot load as one (another architecture, an adapter, experts, rope scaling) is a CheckpointError."""
    # the values this needs; the tokenizer's lists (49,152 tokens, 48,900 merges for SmolLM2) stay unread
    m = read_metadata(reader, skip=("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                                    "tokenizer.ggml.scores"))
    arch = m.get("general.architecture")
    if arch is None:
        raise CheckpointError(f"{path}: the GGUF metadata has no general.architecture; not a model file")
    if m.get("general.type") == "adapter":
        raise CheckpointError(f"{path} is a {arch} LoRA adapter (general.type 'adapter'), not a model; load the "
                              "model it adapts instead")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported; supported: "
                              f"{', '.join(ARCHITECTURES)}")
    if m.get("split.count", 1) > 1:
        raise CheckpointError(f"{path} is part of a GGUF split in {m['split.count']} files; merge them first "
                              "(llama.cpp's llama-gguf-split --merge)")
    if m.get(f"{arch}.expert_count", 0):
        raise CheckpointError(f"{path}: a mixture-of-experts model ({arch}.expert_count="
                              f"{m[f'{arch}.expert_count']}, e.g. Mixtral); our LLaMA has one feed-forward per block")
    scaling = m.get(f"{arch}.rope.scaling.type", "none")
    names = {t.name for t in reader.tensors}
    if scaling != "none" or "rope_freqs.weight" in names:
        kind = scaling if scaling != "none" else "rope_freqs.weight: Llama 3.1's"
        raise CheckpointError(f"{path}: rope scaling ({kind}) is not supported; only plain rotary positions are")

    def key(name):
        return _need(m, f"{arch}.{name}", path)

    d_model, heads = key("embedding_length"), key("attention.head_count")
    kv_heads = m.get(f"{arch}.attention.head_count_kv", heads)
    if isinstance(heads, list) or isinstance(kv_heads, list):
        raise CheckpointError(f"{path}: head counts that differ per layer are not supported")
    if not kv_heads or heads % kv_heads:
        raise CheckpointError(f"{path}: {arch}.attention.head_count_kv={kv_heads} does not divide "
                              f"{arch}.attention.head_count={heads}: grouped-query attention shares each key/value "
                              "head among an equal group of query heads; the file's metadata is inconsistent")
    d_head = m.get(f"{arch}.attention.key_length", d_model // heads)
    rotary = m.get(f"{arch}.rope.dimension_count", d_head)
    if rotary != d_head:
        raise CheckpointError(f"{path}: {arch}.rope.dimension_count={rotary} rotates only part of each "
                              f"{d_head}-wide head; our rotary positions rotate all of it")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = m.get(f"{arch}.vocab_size") or (len(tokens.data) if tokens else None)
    if vocab is None:   # neither key nor token list: the embedding's rows
        vocab = next((int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight"), None)
    if vocab is None:
        raise CheckpointError(f"{path}: no vocabulary size ({arch}.vocab_size, tokenizer.ggml.tokens or "
                              "token_embd.weight); the file is not a complete model")
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": d_model, "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"), "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": d_head, "max_position_embeddings": key("context_length"),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon"),
        "rope_theta": m.get(f"{arch}.rope.freq_base", 10000.0),   # llama.cpp's default when absent
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in names,   # llama.cpp writes no copy of a tied head
        # biases would be unexpected tensors; said here, the converter names the setting it refuses
        "attention_bias": any(n.startswith("blk.") and n.endswith(".bias") and ".attn_" in n for n in names),
        "bos_token_id": m.get("tokenizer.ggml.bos_token_id"), "eos_token_id": m.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": m.get("tokenizer.ggml.padding_token_id"),
    }


def _hf_name(name: str) -> str | None:
    """transformers' name for a llama.cpp tensor name; None for one with no place in a LLaMA."""
    stem, _, suffix = name.rpartition(".")
    if stem in LLAMA_TENSORS:
        return f"{LLAMA_TENSORS[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LLAMA_BLOCK_TENSORS:
        return f"model.layers.{parts[1]}.{LLAMA_BLOCK_TENSORS[parts[2]]}.{suffix}"
    return None


def dequantize(tensor, path="GGUF file") -> torch.Tensor:
    """One GGUF tensor as fp32 in its logical shape (GGUF lists dimensions innermost first: reversed)."""
    from gguf.quants import dequantize as gguf_dequantize

    if tensor.tensor_type.name not in SUPPORTED_TYPES:
        raise _type_error(tensor, path)
    shape = tuple(int(n) for n in reversed(tensor.shape))
    try:
        values = gguf_dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:   # a gguf version without this type
        raise _type_error(tensor, path) from None
    # a copy: F32 tensors are views of the read-only memory map
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))


def _type_error(tensor, path) -> CheckpointError:
    return CheckpointError(f"{path}: tensor {tensor.name} is stored as {tensor.tensor_type.name}, which we cannot "
                           f"dequantize; supported tensor types: {', '.join(SUPPORTED_TYPES)}")


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's row order for Q and K: its rotary pairs channels (2i, 2i+1) of each head, ours
    (transformers') pairs i and i + d_head/2, so its converter interleaved the two halves of every head."""
    rows = w.shape[0]
    # (n_head, d_head/2, 2, C) -> (n_head, 2, d_head/2, C): the pairs back into halves
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


Q4_BLOCK = 32   # weights per Q4_0 / Q4_1 block: one scale (and, for Q4_1, one minimum) each


def q4_codes(tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """A Q4_0 or Q4_1 tensor's own 4-bit codes, without a float round trip: (codes (N, K) uint8 in [0, 15],
    scales (N, K/32), zeros (N, K/32)) with W = scales * (codes - 8) + zeros, the int4 layout of
    quantization.Int4Linear in groups of 32. Q4_0 blocks are [d: fp16][16 bytes], W = d (q - 8); Q4_1
    blocks [d: fp16][m: fp16][16 bytes], W = d q + m; byte j holds weight j in its low nibble and weight
    j + 16 in its high one. None for a tensor of another type."""
    kind = tensor.tensor_type.name
    if kind not in ("Q4_0", "Q4_1"):
        return None
    N, K = (int(n) for n in reversed(tensor.shape))
    head = 2 if kind == "Q4_0" else 4
    blocks = np.asarray(tensor.data, dtype=np.uint8).reshape(N, K // Q4_BLOCK, head + 16)
    d = torch.from_numpy(blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32))        # (N, K/32)
    quads = torch.from_numpy(blocks[..., head:].copy())                                              # (N, K/32, 16)
    codes = torch.cat([quads & 15, quads >> 4], -1).reshape(N, K)
    if kind == "Q4_0":
        return codes, d, torch.zeros_like(d)
    m = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32))
    return codes, d, m + 8 * d


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Everything a GGUF file holds for loading, in Hugging Face terms: (config.json dict, state dict under
    transformers' names in fp32, generation settings the file gives: its end-of-text id)."""
    path = Path(path)
    reader = open_gguf(path)
    hf = hf_config_from_gguf(reader, path)
    # refuse a file before spending time on its other tensors
    strangers = [t.name for t in reader.tensors if _hf_name(t.name) is None]
    if strangers:
        raise CheckpointError(f"{path}: tensors with no place in a LLaMA model: {', '.join(strangers)}")
    for tensor in reader.tensors:
        if tensor.tensor_type.name not in SUPPORTED_TYPES:
            raise _type_error(tensor, path)
    state = {}
    size = sum(int(t.n_bytes) for t in reader.tensors)
    # ~0.1 GB/s dequantized on one core: a bar (on a terminal only) for files that take more than a few seconds
    for tensor in progress.bar(reader.tensors, desc="dequantizing", enabled=size > 500_000_000):
        name = _hf_name(tensor.name)
        w = dequantize(tensor, path)
        heads = {"q_proj": hf["num_attention_heads"], "k_proj": hf["num_key_value_heads"]}.get(name.split(".")[-2])
        if heads is not None and name.endswith(".weight"):
            if w.ndim != 2 or w.shape[0] % (2 * heads):
                raise CheckpointError(f"{path}: tensor {tensor.name} of shape {tuple(w.shape)} does not hold {heads} "
                                      f"heads of {hf['head_dim']} rows")
            w = _unpermute(w, heads)
        state[name] = w
    eos = hf["eos_token_id"]
    return hf, state, ({} if eos is None else {"eos_token_id": eos})


def read_q4_codes(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{transformers' name: q4_codes(tensor)} of a GGUF file's Q4_0 / Q4_1 weights, Q and K rows in
    transformers' order (rows move whole: a block runs along a row)."""
    reader = open_gguf(path)
    hf = hf_config_from_gguf(reader, path)
    out = {}
    for tensor in reader.tensors:
        found = q4_codes(tensor)
        if found is None:
            continue
        name = _hf_name(tensor.name)
        heads = {"q_proj": hf["num_attention_heads"], "k_proj": hf["num_key_value_heads"]}.get(name.split(".")[-2])
        out[name] = tuple(_unpermute(t, heads) for t in found) if heads else found
    return out


def gguf_file_tokenizer(path):
    """The tokenizer a GGUF file describes (tokenization.gguf_tokenizer), for `tkit convert` to save beside the
    weights; None for a file without one (weights only), or where tokenization cannot read GGUF files."""
    from .. import tokenization  # above interop: resolved at call time

    build = getattr(tokenization, "gguf_tokenizer", None)
    if build is None:
        return None
    metadata = read_metadata(open_gguf(path))
    return build(path, metadata) if "tokenizer.ggml.model" in metadata else None
