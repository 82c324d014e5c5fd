"""T5, the Text-to-Text Transfer Transformer (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", JMLR 21).

An encoder-decoder close to the original Transformer, with the changes of §2.1: a simplified layer
norm that only rescales (RMSNorm, no mean, no bias) placed before each sub-layer, plus a final norm
per stack; no biases anywhere; no absolute positions, but a learned scalar per (head, relative
distance bucket) added to the attention logits, one table per stack shared by all its layers
(bidirectional in the encoder, causal in the decoder; layers/positions.py). What Mesh TensorFlow
adds beyond the paper is kept too, because the checkpoints depend on it: the scores are not divided
by sqrt(d_kv) (the query's initialisation carries that factor instead), d_kv is free of
d_model / n_head, and with a tied output layer the decoder output is scaled by d_model^-0.5.

Versions:
- T5 (v1.0, the paper, §3.1.1 and §3.7): ReLU feed-forward, output layer tied to the embedding
  (so scaled); `t5-small` (60.5M parameters) and `t5-base` (222.9M).
- T5 v1.1 (the released follow-up checkpoints): gated-GELU feed-forward (GEGLU, Shazeer 2020, with
  the tanh approximation of GELU), an untied output layer (no scaling), different shapes.

The decoder starts from the pad token (id 0); the end-of-sequence token is id 1.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .base import ANY, supporting
from .encoder_decoder import EncoderDecoder


class T5(EncoderDecoder):
    """T5 (Raffel et al. 2020, §2.1): the shared encoder-decoder configured as T5, plus T5's own
    initialisation and output scaling.

    `config.init_std` is T5's initializer factor: the embedding is drawn from N(0, init_std^2), every
    other matrix with a std of init_std / sqrt(fan-in) (Mesh TensorFlow's rule, which keeps an untied
    output layer's logits near unit scale at the start), the query's with a further 1/sqrt(d_kv):
    the scaling of Eq. 1 that T5 moves out of attention into the initialisation.
    """

    family = "t5"
    supports = supporting(EncoderDecoder.supports, scale_decoder_outputs=ANY)

    def init_weights(self) -> None:
        c = self.config
        f, C, H, D = c.init_std, c.d_model, c.n_head, c.d_head
        nn.init.normal_(self.shared.weight, std=f)
        nn.init.normal_(self.lm_head.weight, std=f * C ** -0.5)   # replaced by the embedding when tied
        for stack in (self.encoder, self.decoder):
            if stack.relative_bias is not None:
                nn.init.normal_(stack.relative_bias.bias.weight, std=f * C ** -0.5)
            for layer in stack.layers:
                for attn in (layer.self_attn, getattr(layer, "cross_attn", None)):
                    if attn is None:
                        continue
                    # fused rows: [q; k; v] (self) or q and [k; v] (cross)
                    q, kv = (attn.qkv.weight[:H * D], attn.qkv.weight[H * D:]) if not attn.cross \
                        else (attn.q.weight, attn.kv.weight)
                    with torch.no_grad():
                        q.normal_(std=f * (C * D) ** -0.5)
                        kv.normal_(std=f * C ** -0.5)
                    nn.init.normal_(attn.out.weight, std=f * (H * D) ** -0.5)
                ffn = layer.ffn
                for w in (ffn.w_1, ffn.w_gate):
                    if w is not None:
                        nn.init.normal_(w.weight, std=f * C ** -0.5)
                nn.init.normal_(ffn.w_2.weight, std=f * c.d_ff ** -0.5)
        for module in self.modules():           # T5 has none; a variant built with bias=True starts them at 0
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def head(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, V)
        """With the output layer tied to the embedding, the decoder output is scaled by d_model^-0.5
        first (Mesh TensorFlow, T5 v1.0): the embedding's rows have norm ~sqrt(d_model) at init.
        config.scale_decoder_outputs, when not None, decides instead (transformers >= 5 ties every T5's
        output layer, and builds a v1.1-shaped one tied but unscaled)."""
        scale = self.config.scale_decoder_outputs
        if self.config.tie_embeddings if scale is None else scale:
            x = x * self.config.d_model ** -0.5
        return super().head(x)


def t5_config(d_model: int, n_layer: int, n_head: int, d_ff: int, d_kv: int = 64, n_decoder_layer: int | None = None,
              activation: str = "relu", tie_embeddings: bool = True, vocab_size: int = 32128,
              dropout: float = 0.1, **kw) -> ModelConfig:
    """T5's shape (§3.1.1, §3.7): the 32,000-piece SentencePiece vocabulary padded to 32,128 (a multiple of
    128), 32 relative-position buckets up to a distance of 128, RMSNorm eps 1e-6, dropout 0.1 on the
    embeddings, residual branches, attention weights and inside the feed-forward. <pad> 0 (also the
    decoder's start), </s> 1."""
    return ModelConfig(family="t5", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer,
                       n_decoder_layer=n_layer if n_decoder_layer is None else n_decoder_layer, n_head=n_head,
                       d_head=d_kv, d_ff=d_ff, max_position=512, activation=activation, norm="rmsnorm",
                       norm_position="pre", norm_eps=1e-6, final_norm=True, bias=False, positions="relative",
                       scale_attention=False, relative_buckets=32, relative_max_distance=128,
                       tie_embeddings=tie_embeddings, dropout=dropout, attn_dropout=dropout,
                       activation_dropout=dropout, init_std=1.0, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, **kw)


PRESETS = {
    "t5-small": lambda: t5_config(512, 6, 8, 2048),
    "t5-base": lambda: t5_config(768, 12, 12, 3072),
    "t5-large": lambda: t5_config(1024, 24, 16, 4096),
    "t5-v1_1-small": lambda: t5_config(512, 8, 6, 1024, activation="gated-gelu_tanh", tie_embeddings=False),
    "t5-v1_1-base": lambda: t5_config(768, 12, 12, 2048, activation="gated-gelu_tanh", tie_embeddings=False),
    # Tests and the CPU demo: 4 heads of 24 (96 wide, not d_model 64: d_kv is free), a small vocabulary.
    "t5-tiny": lambda: t5_config(64, 2, 4, 128, d_kv=24, vocab_size=1000).replace(max_position=128),
}
