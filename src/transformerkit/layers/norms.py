"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019, used by T5)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g  -- no mean subtraction, no bias (T5's "LayerNorm").

    The statistic and the division are computed in fp32 even under bf16, as T5 and LLaMA do (and
    transformers after them: the result is rounded to bf16 once, before the gain), because the mean of
    squares over thousands of channels loses precision in 8 mantissa bits.
    """

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)                # (..., d), fp32
        return self.weight * h.to(x.dtype)


def make_norm(config: ModelConfig) -> nn.Module:
    """The norm a config asks for, over the model width."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, eps=config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
