"""The two blocks every model is built from (Vaswani et al. 2017, §3.1, Figure 1).

Encoder block: self-attention, then feed-forward. Decoder block: masked self-attention,
optionally cross-attention over the encoder output, then feed-forward. Each sub-layer is
wrapped in a residual connection with a norm, either after it (post-norm, the paper:
LayerNorm(x + Sublayer(x))) or before it (pre-norm, GPT-2 and T5: x + Sublayer(LayerNorm(x))).
BERT is a stack of encoder blocks, GPT a stack of decoder blocks without cross-attention.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import KVCache, MultiHeadAttention
from .dropout import Dropout
from .feedforward import FeedForward
from .norms import make_norm
from .unpadded import Unpadded


class EncoderBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.self_attn = MultiHeadAttention(config, layer_idx)
        self.self_attn_norm = make_norm(config)
        self.ffn = FeedForward(config)
        self.ffn_norm = make_norm(config)
        self.dropout = Dropout(config.dropout)

    def residual(self, x: torch.Tensor, norm: nn.Module, sublayer,
                 rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x + Dropout(Sublayer(Norm(x))) for pre-norm, Norm(x + Dropout(Sublayer(x))) for post-norm.
        rows: (N,) bool, when the sublayer returns the outputs of these rows of x only."""
        out = sublayer(norm(x) if self.pre_norm else x)
        y, weights = out if isinstance(out, tuple) else (out, None)
        x = (x if rows is None else x[rows]) + self.dropout(y)
        return (x if self.pre_norm else norm(x)), weights

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, need_weights: bool = False, unpadded: Unpadded | None = None):
        """x: (B, T, C), or the packed tokens (N, C) of a padded batch with `unpadded`; then the
        output is (N, C), or (M, C) for the M queries of `unpadded.only(...)`.
        Returns (x, {"self": weights or None})."""
        x, w_self = self.residual(x, self.self_attn_norm, lambda h: self.self_attn(
            h, attn_mask=attn_mask, is_causal=is_causal, cache=cache, need_weights=need_weights,
            unpadded=unpadded), rows=unpadded.queries if unpadded is not None else None)
        x, _ = self.residual(x, self.ffn_norm, self.ffn)
        return x, {"self": w_self}


class DecoderBlock(EncoderBlock):
    """An encoder block whose self-attention is masked (the mask comes from the caller), plus,
    between it and the feed-forward, cross-attention over the encoder output when `cross_attention`."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0, cross_attention: bool = True):
        super().__init__(config, layer_idx)
        self.cross_attn = MultiHeadAttention(config, layer_idx, cross=True) if cross_attention else None
        self.cross_attn_norm = make_norm(config) if cross_attention else None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, need_weights: bool = False,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: (B, T, C); memory: (B, S, C) encoder output; rope: rotary (cos, sin) for the self-attention.
        Returns (x, {"self": w, "cross": w})."""
        x, w_self = self.residual(x, self.self_attn_norm, lambda h: self.self_attn(
            h, attn_mask=attn_mask, is_causal=is_causal, cache=cache, need_weights=need_weights, rope=rope))
        w_cross = None
        if self.cross_attn is not None:
            x, w_cross = self.residual(x, self.cross_attn_norm, lambda h: self.cross_attn(
                h, memory=memory, attn_mask=memory_mask, cache=cache, need_weights=need_weights))
        x, _ = self.residual(x, self.ffn_norm, self.ffn)
        return x, {"self": w_self, "cross": w_cross}
