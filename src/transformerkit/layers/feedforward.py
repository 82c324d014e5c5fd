"""Position-wise feed-forward network (Vaswani et al. 2017, §3.3, Eq. 2).

FFN(x) = act(x W_1 + b_1) W_2 + b_2, applied to every position alike. The gated variants
(Shazeer 2020, "GLU Variants Improve Transformer", Eq. 6) multiply the activation by a second
linear map: FFN(x) = (act(x W_1) * x W_gate) W_2; GEGLU with gelu (T5 v1.1), SwiGLU with
silu = swish_1 (LLaMA, PaLM). transformers' Llama calls W_1 gate_proj and W_gate up_proj.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .dropout import Dropout

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,                                          # exact erf form (BERT)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),    # the tanh approximation (GPT-1, GPT-2, T5 v1.1)
    "silu": F.silu,                                          # swish (OPUS-MT's Marian; gated: SwiGLU)
}


def activation_fn(name: str):
    return ACTIVATIONS[name.removeprefix("gated-")]


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        C, d_ff, bias = config.d_model, config.d_ff, config.bias
        self.gated = config.activation.startswith("gated-")
        self.act = activation_fn(config.activation)
        self.w_1 = nn.Linear(C, d_ff, bias=bias)
        self.w_gate = nn.Linear(C, d_ff, bias=bias) if self.gated else None
        self.w_2 = nn.Linear(d_ff, C, bias=bias)
        self.dropout = Dropout(config.activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        h = self.act(self.w_1(x))                     # (B, T, d_ff)
        if self.gated:
            h = h * self.w_gate(x)
        return self.w_2(self.dropout(h))
