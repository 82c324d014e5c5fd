"""What every model shares: its output type, the loss of a causal LM, initialisation,
parameter counting, the decoding state, and saving in the Hugging Face layout."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..layers import KVCache


@dataclass
class ModelOutput:
    logits: torch.Tensor                      # (B, T, V) for LMs, (B, num_labels) for classifiers
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # last layer, (B, T, C)
    attentions: list[dict] | None = None      # per layer {"self": (B, H, T, S), "cross": ...} when asked
    encoder_hidden_states: torch.Tensor | None = None  # encoder-decoders: the encoder output (B, S, C)
    encoder_attentions: list[dict] | None = None        # encoder-decoders: per encoder layer {"self": ...}


@dataclass
class DecodeState:
    """What a decoder carries from one generation step to the next.

    key_padding is (B, max_len), True for real tokens, covering prompt and generated tokens;
    None when no row has padding. memory/memory_mask hold the encoder output of encoder-decoders,
    memory_keys the attention keys a recurrent decoder precomputes from it. A recurrent decoder has
    no KV cache (cache=None) and keeps its hidden state in `extra`; every tensor in `extra` is
    batch-first and follows the beams.
    """
    cache: KVCache | None
    key_padding: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None
    memory_keys: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search). Beam search moves a row only among the beams of its
        own source, which share one encoder output: the encoder side (memory, its mask and keys, the
        cross-attention K/V) is the same for all of them and is left as it is."""
        if self.cache is not None:
            self.cache.reorder(index)
        if self.key_padding is not None:
            self.key_padding = self.key_padding.index_select(0, index)
        for name, value in self.extra.items():
            if isinstance(value, torch.Tensor):
                self.extra[name] = value.index_select(0, index)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts labels[t + 1]; -100 is ignored."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


class Model(nn.Module):
    """Base class: a model is built from a `ModelConfig` and knows how to count and save itself."""

    config: ModelConfig
    is_encoder_decoder = False      # generation returns decoder tokens only for encoder-decoders
    residual_projections = ("self_attn.out", "cross_attn.out", "ffn.w_2")

    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) for weights, zero biases, and the projections that
        write into the residual stream scaled by 1/sqrt(2 n_layer) so its variance does not grow
        with depth (Radford et al. 2019, §2.3)."""
        std = self.config.init_std
        n_residual_layers = 2 * (self.config.n_layer + self.config.n_decoder_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                scale = 1 / math.sqrt(n_residual_layers) if name.endswith(self.residual_projections) else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (tied weights once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for m in self.modules():
                if isinstance(m, nn.Embedding):
                    params.pop(id(m.weight), None)
        return sum(p.numel() for p in params.values())

    def save_pretrained(self, directory) -> None:
        """Write config.json + model.safetensors in the Hugging Face layout (transformers loads it)."""
        from ..interop import save_pretrained  # converters sit above the models; resolved at call time
        save_pretrained(self, directory)
