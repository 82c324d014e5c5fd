"""The four ways the family tells a model where a token is.

- sinusoidal: fixed table added to the embeddings (Vaswani et al. 2017, §3.5)
- learned: a trained table added to the embeddings (GPT, BERT, BART)
- relative: a learned scalar per (head, distance bucket) added to the attention
  scores (Shaw et al. 2018; the bucketed form of T5, Raffel et al. 2020, §2.1)
- rotary: queries and keys rotated by an angle proportional to their position, so their
  dot product depends on the distance only (Su et al. 2021, RoFormer; LLaMA)
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(n_positions: int, d_model: int, interleaved: bool = True) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    Interleaved sin/cos exactly as the paper writes it, or (interleaved=False) all sines then all
    cosines, the layout of tensor2tensor and Marian: the same numbers, channels permuted.
    Returns (n_positions, d_model).
    """
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]           # (P, 1)
    inv_freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    angles = position * inv_freq                                                  # (P, d/2)
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    sin_part, cos_part = (slice(0, None, 2), slice(1, None, 2)) if interleaved else \
        (slice(0, angles.shape[1]), slice(angles.shape[1], None))
    table[:, sin_part] = torch.sin(angles)
    table[:, cos_part] = torch.cos(angles[:, : d_model // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed encodings looked up by position id; a buffer, not a parameter (never saved)."""

    def __init__(self, n_positions: int, d_model: int, interleaved: bool = True):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(n_positions, d_model, interleaved), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.table[position_ids]


class LearnedPositions(nn.Embedding):
    """A trained embedding per position. `offset` shifts the ids (BART's checkpoints keep 2 unused rows)."""

    def __init__(self, n_positions: int, d_model: int, offset: int = 0):
        super().__init__(n_positions + offset, d_model)
        self.offset = offset

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return super().forward(position_ids + self.offset)


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> torch.Tensor:
    """Map key-minus-query distances to buckets: exact for small distances, log-spaced up to max_distance.

    Bidirectional attention spends half the buckets on each direction; causal attention only
    ever sees keys at or before the query, so it maps distances >= 0 into all buckets.
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    n_exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / n_exact) / math.log(max_distance / n_exact)
    far = (n_exact + (log_ratio * (num_buckets - n_exact)).long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < n_exact, distance, far)


class RelativePositionBias(nn.Module):
    """T5's learned bias b[head, bucket(j - i)] added to the attention logits of every layer.

    One table per stack, computed once per forward and shared by all its layers.
    """

    def __init__(self, n_head: int, num_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.bias = nn.Embedding(num_buckets, n_head)
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional

    def forward(self, q_len: int, k_len: int, q_offset: int = 0) -> torch.Tensor:
        """Returns (1, H, q_len, k_len); queries sit at positions q_offset .. q_offset+q_len-1."""
        device = self.bias.weight.device
        q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        buckets = relative_position_bucket(k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance)
        return self.bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Tq, Tk)


class RotaryPositions(nn.Module):
    """RoPE (Su et al. 2021, §3.4, Eq. 34): channel pair i of a query or key at position m is rotated
    by the angle m * theta_i, theta_i = base^(-2i / d_head), so that <R_m q, R_n k> = <q, R_(n-m) k>.

    The pairs are laid out as transformers' Llama does ("half-split"): channel i pairs with channel
    i + d_head/2, not with i + 1 as in the paper. llama.cpp's GGUF files store the Q/K rows for the
    paper's interleaved pairs; interop/gguf.py undoes that on loading. A buffer, never saved.
    """

    def __init__(self, d_head: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.int64).float() / d_head))  # (D/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B or 1, T) -> cos, sin, each (B or 1, 1, T, D), to broadcast over heads."""
        angles = position_ids[:, :, None].float() * self.inv_freq                   # (B, T, D/2), fp32
        angles = torch.cat([angles, angles], dim=-1)[:, None]                        # (B, 1, T, D)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90 degree turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """R_m x for queries or keys x (B, H, T, D): x cos(m theta) + rotate_half(x) sin(m theta)."""
    return x * cos + rotate_half(x) * sin
