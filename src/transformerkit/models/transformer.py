"""The original Transformer (Vaswani et al. 2017, "Attention Is All You Need", Figure 1).

Six encoder and six decoder blocks, post-norm (LayerNorm(x + Sublayer(x)), §3.1), ReLU
feed-forward (Eq. 2), one token table shared by source, target and the pre-softmax projection,
multiplied by sqrt(d_model) (§3.4), plus fixed sinusoidal positions (§3.5). Everything is the
shared encoder-decoder of encoder_decoder.py; this file adds the presets and the initialisation
of the shared table, and its training recipe lives in the config: label smoothing 0.1 (§5.4),
the inverse-square-root ("noam") learning-rate schedule with warm-up (§5.3, training/schedule.py).

One layout choice differs from the paper, not in kind: the presets keep the sinusoidal table as
all sines, then all cosines (tensor2tensor's and Marian's layout; the paper interleaves them: the
same numbers with channels permuted) and a zero output bias, so that every Transformer trained
here is a MarianMT checkpoint that `transformers` loads as it is. sinusoidal_layout="interleaved"
gives the paper's layout (saved with our own model_type, "transformerkit").
"""
from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .encoder_decoder import EncoderDecoder


class Transformer(EncoderDecoder):
    """The base model of Table 3 with `transformer-base`, the big one with `transformer-big`."""

    family = "transformer"

    def init_weights(self) -> None:
        """Glorot (Xavier) uniform weights and zero biases, as the reference implementations
        (tensor2tensor, fairseq) initialise this model. GPT-2's N(0, 0.02) is far smaller than Glorot's
        scale at narrow widths (0.125 at d_model 64): attention then starts uniform and a small model sits
        on the unigram plateau for hundreds of steps before it learns to read the source."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The table is scaled by sqrt(d_model) on the way in: drawn with std d_model^-0.5 (as tensor2tensor
        # and fairseq do), scaled embeddings have unit variance, on a par with the position encodings.
        nn.init.normal_(self.shared.weight, std=self.config.d_model ** -0.5)


def transformer_config(d_model: int, n_layer: int, n_head: int, d_ff: int, dropout: float = 0.1,
                       vocab_size: int = 37000, **kw) -> ModelConfig:
    """The paper's shape (Table 3): the same depth for encoder and decoder; a 37,000-token shared
    BPE vocabulary as for WMT 2014 English-German (a trained tokenizer replaces it). Special ids
    follow our translation tokenizers: <pad> 0, <s> 1 (the decoder's start), </s> 2."""
    return ModelConfig(family="transformer", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer,
                       n_decoder_layer=n_layer, n_head=n_head, d_ff=d_ff, max_position=1024, activation="relu",
                       norm="layernorm", norm_position="post", norm_eps=1e-5, final_norm=False, bias=True,
                       positions="sinusoidal", scale_embeddings=True, tie_embeddings=True, dropout=dropout,
                       attn_dropout=0.0, label_smoothing=0.1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                       decoder_start_token_id=1, sinusoidal_layout="halves", final_logits_bias=True, **kw)


PRESETS = {
    "transformer-base": lambda: transformer_config(512, 6, 8, 2048),
    "transformer-big": lambda: transformer_config(1024, 6, 16, 4096, dropout=0.3),
    # A CPU-sized model for the translation comparison with the RNN (docs/results.md): 7.7M parameters
    # with an 8,000-token vocabulary, the scale of the small Transformers trained on Multi30k.
    "transformer-small": lambda: transformer_config(256, 3, 4, 1024, vocab_size=8000),
    "transformer-tiny": lambda: transformer_config(64, 2, 4, 128, vocab_size=1000).replace(max_position=128),
}
