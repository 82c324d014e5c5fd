"""The input of every Transformer: token embedding, plus where each token is, plus its segment.

    x = E[token] * (sqrt(d_model) if scale_embeddings)          token embedding (Vaswani et al. §3.4)
      + P[position]                                             sinusoidal (§3.5) or learned (GPT, BERT)
      + S[segment]                                              BERT's sentence A / B (Devlin et al., Figure 2)
    x = Dropout(Norm(x))                                        the norm only when embedding_norm (BERT, BART)

GPT, BERT and the encoder-decoders all build their input with this one module, so every
position kind and every embedding setting of `ModelConfig` means the same thing in each.
With relative positions (T5), rotary ones (LLaMA) or none, nothing is added for the position
here: relative and rotary positions act inside attention (positions.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from .dropout import Dropout
from .norms import make_norm
from .positions import LearnedPositions, SinusoidalPositions


class Embeddings(nn.Module):
    """Token + absolute position (+ segment) embeddings, then an optional norm and dropout.

    tokens: a token table to use instead of a new one (encoder-decoders share one table between
    encoder, decoder and output layer). padding_idx: the token table row that gets no gradient
    (BERT's [PAD], as its checkpoints were trained).
    """

    def __init__(self, config: ModelConfig, tokens: nn.Embedding | None = None, padding_idx: int | None = None):
        super().__init__()
        C = config.d_model
        self.tokens = tokens if tokens is not None else nn.Embedding(config.vocab_size, C, padding_idx=padding_idx)
        self.scale = math.sqrt(C) if config.scale_embeddings else 1.0
        self.positions: nn.Module | None = None
        if config.positions == "sinusoidal":
            interleaved = config.sinusoidal_layout == "interleaved"
            self.positions = SinusoidalPositions(config.max_position, C, interleaved)
        elif config.positions == "learned":
            self.positions = LearnedPositions(config.max_position, C, offset=config.position_offset)
        self.segments = nn.Embedding(config.type_vocab_size, C) if config.type_vocab_size else None
        self.norm = make_norm(config) if config.embedding_norm else None
        self.drop = Dropout(config.dropout)
        # The most positions the model was made for; None when positions do not bound the length. Rotary
        # positions add nothing here (attention rotates Q and K) but are bound by the trained context.
        bounded = self.positions is not None or config.positions == "rotary"
        self.max_position = config.max_position if bounded else None

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T), position_ids (B or 1, T), token_type_ids (B, T) or None -> (B, T, C).
        Without token_type_ids every token is in segment 0 (sentence A)."""
        x = self.tokens(input_ids)                                                   # (B, T, C)
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None:
            x = x + self.positions(position_ids)
        if self.segments is not None:
            x = x + (self.segments.weight[0] if token_type_ids is None else self.segments(token_type_ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.drop(x)


def positions_from_mask(mask: torch.Tensor | None, T: int, past: int, device: torch.device) -> torch.Tensor:
    """Position ids (B or 1, T) of T tokens after `past` cached ones: 0 at each row's first real token
    (mask (B, past + T), 1 = real), so left and right padding agree; without a mask, past .. past + T - 1."""
    if mask is None:
        return torch.arange(past, past + T, device=device)[None]
    return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:past + T]
