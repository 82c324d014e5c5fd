"""Attention over a padded batch without its padding: a speed path only, the same maths as Eq. 1.

Used by BERT's heads that read a few positions ([CLS], the masked tokens): see `Unpadded`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


class Unpadded:
    """The real tokens of a padded (B, T) batch packed into one (N, ...) tensor, sequence after sequence.

    Linear layers, norms, dropout and the feed-forward treat every token on its own, so they can run
    on the N packed tokens and skip the padding: a batch of 8 x 128 with lengths 64-128 is a fifth
    padding, and that much matmul work is saved. Attention mixes the tokens of one sequence only, so
    `MultiHeadAttention` attends within each sequence's slice of the pack (`lengths`): no padding, and
    no mask ("variable-length" attention, as FlashAttention's varlen kernels do).

    `only(read)` is the same pack for a block that computes the outputs of some tokens only: the last
    block of a model whose head reads a few positions ([CLS]) needs every token as a key and value,
    but queries, output projection and feed-forward only there.
    """

    def __init__(self, keep: torch.Tensor, real: torch.Tensor):
        """keep: (B, T) bool, the positions to compute: the real tokens, plus any other the caller
        reads (a [CLS] that is padding, say); real: (B, T) bool, the real tokens, the only keys."""
        self.shape = tuple(keep.shape)
        self.rows, self.cols = keep.nonzero(as_tuple=True)        # (N,) each, in row-major order
        self.lengths = keep.sum(1).tolist()                       # packed tokens of each sequence
        # A position computed but not real (a read [CLS] that is padding) must not be a key: a mask
        # (1, 1, 1, L) for a sequence that has one, None (no mask, the fast path) for all others.
        not_real = (~real[self.rows, self.cols]).split(self.lengths)
        self.key_masks = [~p[None, None, None, :] if p.any() else None for p in not_real]
        self.queries = None                                        # (N,) bool: the outputs computed; None: all
        self.out_rows, self.out_cols = self.rows, self.cols        # where the outputs sit in (B, T)

    def only(self, read: torch.Tensor) -> Unpadded:
        """The same pack, for a block that computes the outputs at `read` (B, T) only."""
        sub = copy.copy(self)
        sub.queries = read[self.rows, self.cols]                   # (N,) bool
        sub.out_rows, sub.out_cols = self.rows[sub.queries], self.cols[sub.queries]
        return sub

    def pack(self, x: torch.Tensor) -> torch.Tensor:             # (B, T, ...) -> (N, ...)
        return x[self.rows, self.cols]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:           # outputs (N or M, ...) -> (B, T, ...), zeros elsewhere
        full = x.new_zeros(*self.shape, *x.shape[1:])
        full[self.out_rows, self.out_cols] = x
        return full


def attend_unpadded(qkv: torch.Tensor, unpadded: Unpadded, attn) -> torch.Tensor:
    """Eq. 1 of `attn` (a MultiHeadAttention: its heads, scale and dropout) within each sequence of
    packed Q, K, V (N, 3HD) -> (N, HD), or (M, HD) for the M queries of `unpadded.only(...)`."""
    from .attention import explicit_attention  # attention.py imports this module

    dropout_p = attn.attn_dropout if attn.training else 0.0
    lengths = unpadded.lengths
    queries = unpadded.queries.split(lengths) if unpadded.queries is not None else [None] * len(lengths)
    out = []
    for seq, key_mask, wanted in zip(qkv.split(lengths), unpadded.key_masks, queries):
        L = seq.shape[0]
        q, k, v = seq.view(1, L, 3, attn.n_head, attn.d_head).permute(2, 0, 3, 1, 4)  # (1, H, L, D) each
        if wanted is not None:
            q = q[:, :, wanted]                                                  # (1, H, Lq, D)
        if dropout_p > 0 and q.device.type == "cpu":
            # With dropout, SDPA leaves its fused kernel for its math path on a CPU (in fp32, even
            # under bf16 autocast); Eq. 1 written out is the same, with autocast's bf16 products
            # and the faster CPU dropout: 7% of a bf16 BERT-base fine-tuning step.
            y, _ = explicit_attention(q, k, v, key_mask, False, attn.scale, dropout_p, True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p,
                                               scale=attn.scale)
        out.append(y[0].transpose(0, 1).flatten(1))                              # (Lq, HD)
    return torch.cat(out)
