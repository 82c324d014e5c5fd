"""Multi-head attention (Vaswani et al. 2017, §3.2), the one attention module of every model.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + bias) V                       (Eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Self-attention (encoder), causal self-attention (decoder) and cross-attention (decoder
reading the encoder) differ only in where K and V come from and in the mask. Grouped-query
attention (Ainslie et al. 2023, GQA) gives keys and values fewer heads, n_kv_head, each shared by
n_head / n_kv_head query heads: multi-query attention (Shazeer 2019) is n_kv_head = 1, and
multi-head n_kv_head = n_head. The KV cache then holds n_kv_head heads. Two paths
compute Eq. 1: the fused `scaled_dot_product_attention` (default, fast) and an explicit one
that also returns the attention weights for inspection; they agree to 1e-5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import GenerationError
from .dropout import dropout
from .positions import apply_rotary
from .unpadded import Unpadded, attend_unpadded


class KVCache:
    """Preallocated keys and values for incremental decoding, one slot per layer, n_kv_head heads each.

    Each new token writes its key and value in place (no torch.cat per step), so a decoding
    step costs one forward over one token. Cross-attention keys and values of the encoder
    output are computed once and kept in `cross`.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, d_head: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (batch, n_head, max_len, d_head)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.max_len = max_len
        self.length = 0  # positions already written (same for every layer)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, D) after what is cached; return all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise GenerationError(f"the KV cache holds {self.max_len} positions but {end} were needed; "
                                  "allocate it with a larger max_len")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n_tokens: int) -> None:
        """Called once per forward, after every layer has appended its n_tokens."""
        self.length += n_tokens

    def rewind(self, length: int) -> None:
        """Forget the positions from `length` on (score several continuations of one cached context)."""
        if not 0 <= length <= self.length:
            raise GenerationError(f"cannot rewind a cache of {self.length} positions to {length}")
        self.length = length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search): row b of the result is old row index[b]. The cross-
        attention K/V stay: beam search moves rows only among the beams of one source, whose encoder
        output is the same."""
        L = self.length
        for buffers in (self.k, self.v):
            for buf in buffers:
                buf[:, :, :L] = buf[:, :, :L].index_select(0, index)


    def select(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (a row may repeat), cross-attention K/V included: rows leave a batch."""
        self.k = [buf.index_select(0, index) for buf in self.k]
        self.v = [buf.index_select(0, index) for buf in self.v]
        self.cross = [None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
                      for kv in self.cross]

    @classmethod
    def gather_rows(cls, parts: list[tuple[KVCache, torch.Tensor]], keep: int, room: int) -> KVCache:
        """A new cache of some rows of several caches (continuous batching: rows leave, new ones join).
        parts: (cache, row indices) pairs, rows in the order given. Every cache is right-aligned at its
        `length`: its last `keep` positions are copied to positions [0, keep) of the new cache (a shorter
        cache is left-padded with zeros), leaving `room` positions free after them."""
        first = parts[0][0]
        n_layer, (_, H, _, D) = len(first.k), first.k[0].shape
        rows = sum(len(index) for _, index in parts)
        new = cls(n_layer, rows, H, keep + room, D, first.k[0].dtype, first.k[0].device)
        row = 0
        for cache, index in parts:
            n = min(keep, cache.length)
            for layer in range(n_layer):
                for mine, theirs in ((new.k, cache.k), (new.v, cache.v)):
                    mine[layer][row:row + len(index), :, keep - n:keep] = \
                        theirs[layer][index, :, cache.length - n:cache.length]
            row += len(index)
        new.length = keep
        return new


def build_attention_mask(q_len: int, k_len: int, *, key_padding: torch.Tensor | None = None,
                         causal: bool = False, q_offset: int = 0,
                         bias: torch.Tensor | None = None,
                         device: torch.device | str | None = None) -> tuple[torch.Tensor | None, bool]:
    """One mask for all layers of a stack: returns (attn_mask, is_causal) for `MultiHeadAttention`.

    key_padding: (B, k_len), 1/True where a key is a real token. Queries sit at absolute positions
    q_offset .. q_offset + q_len - 1 (q_offset = tokens already in the KV cache).
    bias: additive float scores (1 or B, H, q_len, k_len), e.g. T5's relative positions.
    The mask is boolean (True = may attend) unless a bias is given, then it is the bias with
    disallowed places at the dtype's minimum. With nothing to mask, it is None, and a plain causal
    square is left to the fused kernel (is_causal=True), its fastest path.
    """
    allowed = None
    if key_padding is not None:
        allowed = key_padding[:, None, None, :k_len].bool()                       # (B, 1, 1, Tk)
    if causal and not (q_len == 1 and allowed is None and bias is None):
        if allowed is None and bias is None and q_offset == 0 and q_len == k_len:
            return None, True
        q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        causal_allowed = k_pos <= q_pos                                            # (Tq, Tk)
        allowed = causal_allowed if allowed is None else allowed & causal_allowed
        # A left-padded query has no real key at or before it; let it see itself so softmax
        # has something to normalise (its output is never used).
        allowed = allowed | (k_pos == q_pos)
    if bias is None:
        return allowed, False
    if allowed is None:
        return bias, False
    return bias.masked_fill(~allowed, torch.finfo(bias.dtype).min), False


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with `n_head` query heads of width `d_head` and `n_kv_head` key/value
    heads (Eq. 1 and MultiHead above; GQA when n_kv_head < n_head).

    Self-attention projects Q, K, V with one fused matrix `qkv` (rows: n_head query heads, then
    n_kv_head key heads, then n_kv_head value heads); cross-attention projects Q from the decoder
    (`q`) and K, V from the encoder output (`kv`), so the encoder's K, V can be computed once per
    generation. With rotary positions the caller passes (cos, sin), and Q and K are rotated
    before K enters the cache.
    """

    def __init__(self, config: ModelConfig, layer_idx: int = 0, cross: bool = False):
        super().__init__()
        C, H, KV, D = config.d_model, config.n_head, config.kv_heads, config.d_head
        self.n_head, self.n_kv_head, self.d_head, self.inner = H, KV, D, H * D
        self.layer_idx, self.cross = layer_idx, cross
        if cross:
            self.q = nn.Linear(C, H * D, bias=config.bias)
            self.kv = nn.Linear(C, 2 * KV * D, bias=config.bias)
        else:
            self.qkv = nn.Linear(C, (H + 2 * KV) * D, bias=config.bias)
        self.out = nn.Linear(H * D, C, bias=config.bias)
        self.scale = D ** -0.5 if config.scale_attention else 1.0
        self.attn_dropout = config.attn_dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, heads*D) -> (B, heads, T, D)
        B, T, _ = x.shape
        return x.view(B, T, -1, self.d_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, need_weights: bool = False, unpadded: Unpadded | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: (B, T, C) queries' inputs; memory: (B, S, C) encoder output for cross-attention.
        With `unpadded` (self-attention only), x is (N, C), the packed tokens of a padded batch.
        rope: (cos, sin), each (B or 1, 1, T, D), for rotary positions (self-attention only).

        Returns (output (B, T, C), or (N, C) / (M, C) with `unpadded`, weights (B, H, T, S) or None).
        """
        if unpadded is not None:   # the speed path of padded encoder batches (unpadded.py)
            return self.out(attend_unpadded(self.qkv(x), unpadded, self)), None  # (N or M, C)
        B, T, _ = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            kv = cache.cross[self.layer_idx] if cache is not None else None
            if kv is None:
                k, v = self.kv(memory).chunk(2, dim=2)
                kv = self._heads(k), self._heads(v)
                if cache is not None:
                    cache.cross[self.layer_idx] = kv
            k, v = kv
        else:
            kv_width = self.n_kv_head * self.d_head
            q, k, v = self.qkv(x).split((self.inner, kv_width, kv_width), dim=2)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)        # (B, H, T, D), (B, KV, T, D) x 2
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.append(self.layer_idx, k, v)                           # (B, KV, S, D)
        dropout_p = self.attn_dropout if self.training else 0.0
        weights = None
        if need_weights:
            y, weights = explicit_attention(q, k, v, attn_mask, is_causal, self.scale, dropout_p, self.training)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                               is_causal=is_causal, scale=self.scale,
                                               enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).reshape(B, T, self.inner)                              # (B, T, H*D)
        return self.out(y), weights

def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                       is_causal: bool, scale: float, dropout_p: float = 0.0,
                       training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 written out, returning the weights softmax(QK^T/sqrt(d_k) + bias) as (B, H, Tq, Tk).
    With GQA (fewer key/value heads), query head h reads key/value head h // (H / KV)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, Tk, D)
    scores = (q @ k.transpose(-2, -1)).float() * scale                             # (B, H, Tq, Tk)
    if is_causal:
        Tq, Tk = scores.shape[-2:]
        attn_mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.float()
    weights = scores.softmax(dim=-1).to(q.dtype)
    y = dropout(weights, dropout_p, training) @ v                                # (B, H, Tq, D)
    return y, weights
