"""BART (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
Generation, Translation, and Comprehension").

§2.1 (Architecture): "the standard sequence-to-sequence Transformer architecture ... except, following
GPT, that we modify ReLU activation functions to GeLUs". So: a bidirectional encoder (BERT-like) and an
autoregressive decoder (GPT-like) whose every layer also cross-attends to the encoder's last layer, with
no extra feed-forward before word prediction (§2.1 vs BERT). The base model has 6 + 6 layers, the large
one 12 + 12 (§2.1, §5.1). Everything is the shared encoder-decoder of encoder_decoder.py; what the
config says, following fairseq's BART and the public checkpoints:

- post-norm blocks, LayerNorm(x + Sublayer(x)), no norm after the last block;
- exact (erf) GELU in the feed-forward, with dropout after it (activation dropout);
- learned positions whose table keeps 2 unused rows first (fairseq reserved them for padding; the
  checkpoints keep them, so position p is row p + 2);
- a LayerNorm on the summed token + position embeddings of both stacks ("layernorm_embedding");
- token embeddings not scaled by sqrt(d_model), one table shared by encoder, decoder and the LM head;
- a fixed bias added to the logits (`final_logits_bias`, zeros in the public checkpoints).

Token ids are those of the GPT-2 byte-level BPE as fairseq's dictionary lays them out:
<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 50264; the decoder starts from </s> (2).
The pretraining objective (§2.2, §5.1: text infilling + sentence permutation) is
objectives/denoising.py.
"""
from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .encoder_decoder import EncoderDecoder

BOS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 50264
VOCAB_SIZE = 50265
POSITION_OFFSET = 2     # rows 0 and 1 of the public checkpoints' position tables are never read


class BART(EncoderDecoder):
    """BART for sequence-to-sequence generation (Lewis et al. 2020, §2.1 architecture, §3.4 generation
    tasks: the encoder reads the input, the decoder writes the output autoregressively).

    forward(input_ids (B, S), attention_mask (B, S), decoder_input_ids (B, T) or labels (B, T)) ->
    logits (B, T, V), plus the mean cross-entropy over labels != -100 when given labels (the decoder
    then reads the labels shifted right behind </s>, as `transformers` does).
    """

    family = "bart"
    # A bare BartModel checkpoint has neither: load it with fresh_head=True (zero bias, the tied table).
    head_modules = ("final_logits_bias", "lm_head.")

    def init_weights(self) -> None:
        """BERT's initialisation, as fairseq's BART uses it: every Linear and Embedding N(0, init_std),
        zero biases, no depth scaling of the residual projections, and the padding row of the
        token table zero (LayerNorms start at weight 1, bias 0)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        pad = self.config.pad_token_id
        if pad is not None and 0 <= pad < self.config.vocab_size:
            nn.init.zeros_(self.shared.weight[pad])


def bart_config(d_model: int, n_layer: int, n_head: int, d_ff: int, vocab_size: int = VOCAB_SIZE,
                max_position: int = 1024, dropout: float = 0.1, **kw) -> ModelConfig:
    """BART's shape: the same depth and width for encoder and decoder; dropout 0.1 on the residual
    branches, the attention probabilities and after the activation, as the public checkpoints' configs."""
    return ModelConfig(family="bart", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer,
                       n_decoder_layer=n_layer, n_head=n_head, d_ff=d_ff, max_position=max_position,
                       activation="gelu", norm="layernorm", norm_position="post", norm_eps=1e-5,
                       final_norm=False, bias=True, positions="learned", position_offset=POSITION_OFFSET,
                       scale_embeddings=False, embedding_norm=True, tie_embeddings=True, dropout=dropout,
                       attn_dropout=dropout, activation_dropout=dropout, init_std=0.02, pad_token_id=PAD_ID,
                       bos_token_id=BOS_ID, eos_token_id=EOS_ID, decoder_start_token_id=EOS_ID,
                       final_logits_bias=True, **kw)


PRESETS = {
    "bart-base": lambda: bart_config(768, 6, 12, 3072),
    "bart-large": lambda: bart_config(1024, 12, 16, 4096),
    # Tests and CPU demos. At width 64, N(0, 0.02) starts attention nearly uniform and a denoising run sits on
    # the unigram plateau for hundreds of steps; 0.1 (about 1/sqrt(64)) learns to copy the input at once.
    "bart-tiny": lambda: bart_config(64, 2, 4, 128, vocab_size=1000, max_position=128).replace(init_std=0.1),
}
