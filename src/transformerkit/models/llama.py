"""LLaMA (Touvron et al. 2023a, "LLaMA"; 2023b, "Llama 2"; Llama 3 2024) and SmolLM2 (Allal et al. 2025):
the decoder-only stack of GPT-2 (models/gpt.py) with four changes, each one config field:

    positions="rotary"       RoPE on queries and keys instead of a learned table (Su et al. 2021)
    norm="rmsnorm"           RMSNorm before each sub-layer, no mean, no bias (Zhang & Sennrich 2019)
    activation="gated-silu"  the SwiGLU feed-forward (Shazeer 2020), d_ff about 8/3 d_model
    n_kv_head < n_head       grouped-query attention (Ainslie et al. 2023): Llama 2 70B, Llama 3, SmolLM2
and no biases anywhere. There is no LLaMA block: `Llama` is `GPT` with the family's own name, so that
its checkpoints convert to and from transformers' `LlamaForCausalLM` (interop/llama.py) and GGUF files
(interop/gguf.py). docs/llama.md walks through the changes.
"""
from __future__ import annotations

from ..config import ModelConfig
from .base import supporting
from .gpt import GPT, GPTForSequenceClassification


class Llama(GPT):
    """Causal language model (transformers' LlamaForCausalLM): logits for the next token."""

    family = "llama"
    supports = supporting(GPT.supports, positions=("rotary",))


class LlamaForSequenceClassification(GPTForSequenceClassification):
    """A linear layer on the last real token's hidden state (transformers' LlamaForSequenceClassification)."""

    family = "llama"
    supports = supporting(GPTForSequenceClassification.supports, positions=("rotary",))


# --- presets ---------------------------------------------------------------------------------------

def llama_config(d_model: int, n_layer: int, n_head: int, n_kv_head: int, d_ff: int, *, vocab_size: int,
                 max_position: int, rope_theta: float, tie_embeddings: bool, bos_token_id: int, eos_token_id: int,
                 norm_eps: float = 1e-5) -> ModelConfig:
    """A LLaMA-shaped config: rotary, RMSNorm pre-norm with a final norm, SwiGLU, no biases, no dropout.
    n_kv_head = n_head is multi-head attention, stored as 0 (the config's "as many as n_head")."""
    return ModelConfig(family="llama", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       n_kv_head=0 if n_kv_head == n_head else n_kv_head, d_ff=d_ff, max_position=max_position,
                       activation="gated-silu", norm="rmsnorm", norm_position="pre", norm_eps=norm_eps,
                       final_norm=True, bias=False, positions="rotary", rope_theta=rope_theta,
                       tie_embeddings=tie_embeddings, dropout=0.0, attn_dropout=0.0,
                       bos_token_id=bos_token_id, eos_token_id=eos_token_id)


def smollm2_config(d_model: int, n_layer: int, n_head: int, n_kv_head: int, d_ff: int,
                   rope_theta: float = 100000.0) -> ModelConfig:
    """SmolLM2 (HuggingFaceTB): 49,152-token BPE, 8,192 context, tied head; <|im_end|> (2) ends a chat turn."""
    return llama_config(d_model, n_layer, n_head, n_kv_head, d_ff, vocab_size=49152, max_position=8192,
                        rope_theta=rope_theta, tie_embeddings=True, bos_token_id=1, eos_token_id=2)


def llama2_config(d_model: int, n_layer: int, n_head: int, n_kv_head: int, d_ff: int) -> ModelConfig:
    """Llama 2 (Touvron et al. 2023b, Table 1): 32,000-token SentencePiece BPE, 4,096 context, untied head."""
    return llama_config(d_model, n_layer, n_head, n_kv_head, d_ff, vocab_size=32000, max_position=4096,
                        rope_theta=10000.0, tie_embeddings=False, bos_token_id=1, eos_token_id=2)


def llama3_config(d_model: int, n_layer: int, n_head: int, n_kv_head: int, d_ff: int) -> ModelConfig:
    """Llama 3 (2024): 128,256-token BPE, 8,192 context, RoPE base 500,000, GQA with 8 KV heads, untied head."""
    return llama_config(d_model, n_layer, n_head, n_kv_head, d_ff, vocab_size=128256, max_position=8192,
                        rope_theta=500000.0, tie_embeddings=False, bos_token_id=128000, eos_token_id=128001)


PRESETS = {
    "smollm2-135m": lambda: smollm2_config(576, 30, 9, 3, 1536),
    "smollm2-360m": lambda: smollm2_config(960, 32, 15, 5, 2560),
    "smollm2-1.7b": lambda: smollm2_config(2048, 24, 32, 32, 8192, rope_theta=130000.0),
    "llama-2-7b": lambda: llama2_config(4096, 32, 32, 32, 11008),
    "llama-2-13b": lambda: llama2_config(5120, 40, 40, 40, 13824),
    "llama-2-70b": lambda: llama2_config(8192, 80, 64, 8, 28672),
    "llama-3-8b": lambda: llama3_config(4096, 32, 32, 8, 14336),
    "llama-3-70b": lambda: llama3_config(8192, 80, 64, 8, 28672),
    # A tiny shape for tests: GQA (4 query heads, 2 KV heads) on SmolLM2's vocabulary.
    "llama-tiny": lambda: smollm2_config(64, 2, 4, 2, 172).replace(max_position=256),
}
