"""Marian (`marian`) checkpoints of `transformers` as our original Transformer.

MarianMT is the Transformer of Vaswani et al. with two differences of layout, not of kind: its
sinusoidal table holds all sines, then all cosines (the paper interleaves them; the config's
sinusoidal_layout="halves" selects theirs), and its output adds a bias
(`final_logits_bias`). The OPUS-MT models use the swish (SiLU)
activation where the paper has ReLU; the config carries whichever the checkpoint names.
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, register
from .seq2seq import TIED_COPIES, bart_layout_rename

ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "swish": "silu", "silu": "silu"}


def marian_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    act = hf.get("activation_function", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"Marian activation_function {act!r} is not supported; supported: "
                              f"{', '.join(ACTIVATIONS)}")
    if hf.get("decoder_vocab_size", hf["vocab_size"]) != hf["vocab_size"] or \
            not hf.get("share_encoder_decoder_embeddings", True):
        raise CheckpointError("Marian checkpoints with separate source and target vocabularies are not supported")
    config = ModelConfig(
        family="transformer", vocab_size=hf["vocab_size"], d_model=hf["d_model"],
        n_layer=hf["encoder_layers"], n_decoder_layer=hf["decoder_layers"], n_head=hf["encoder_attention_heads"],
        d_ff=hf["encoder_ffn_dim"], max_position=hf.get("max_position_embeddings", 1024),
        activation=ACTIVATIONS[act], norm_position="post", norm_eps=1e-5, final_norm=False,
        positions="sinusoidal", scale_embeddings=hf.get("scale_embedding", False),
        tie_embeddings=hf.get("tie_word_embeddings", True), dropout=hf.get("dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.0), activation_dropout=hf.get("activation_dropout", 0.0),
        init_std=hf.get("init_std", 0.02), pad_token_id=hf.get("pad_token_id"), bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"), decoder_start_token_id=hf.get("decoder_start_token_id"),
        sinusoidal_layout="halves", final_logits_bias=True)
    for ours, theirs in (("n_head", "decoder_attention_heads"), ("d_ff", "decoder_ffn_dim")):
        if hf.get(theirs, getattr(config, ours)) != getattr(config, ours):
            raise CheckpointError(f"Marian {theirs}={hf[theirs]} differs from the encoder's; "
                                  "our encoder and decoder share one width and head count")
    return config, "seq2seq"


def marian_config_to_hf(c: ModelConfig, task: str) -> dict:
    if c.n_head * c.d_head != c.d_model:
        raise CheckpointError(f"Marian checkpoints need n_head * d_head == d_model, not {c.n_head} x {c.d_head}")
    act = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "swish"}.get(c.activation)
    if act is None:
        raise CheckpointError(f"activation {c.activation!r} cannot be written as a Marian checkpoint")
    return {"model_type": "marian", "architectures": ["MarianMTModel"], "vocab_size": c.vocab_size,
            "decoder_vocab_size": c.vocab_size, "d_model": c.d_model, "encoder_layers": c.n_layer,
            "decoder_layers": c.n_decoder_layer, "encoder_attention_heads": c.n_head,
            "decoder_attention_heads": c.n_head, "encoder_ffn_dim": c.d_ff, "decoder_ffn_dim": c.d_ff,
            "max_position_embeddings": c.max_position, "activation_function": act,
            "scale_embedding": c.scale_embeddings, "tie_word_embeddings": c.tie_embeddings,
            "share_encoder_decoder_embeddings": True, "dropout": c.dropout, "attention_dropout": c.attn_dropout,
            "activation_dropout": c.activation_dropout, "init_std": c.init_std, "pad_token_id": c.pad_token_id,
            "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "forced_eos_token_id": None,
            "decoder_start_token_id": c.decoder_start_token_id, "is_encoder_decoder": True}


def _writable(c: ModelConfig) -> bool:
    """Only a Transformer that MarianMTModel computes the same way is written as Marian: its layout
    (sinusoidal halves, output bias), post-norm LayerNorm (eps 1e-5) with biases, no embedding or final
    norm, scaled attention of d_model width, an activation it names. Any other is saved in our format."""
    return (c.positions == "sinusoidal" and c.sinusoidal_layout == "halves" and c.final_logits_bias
            and c.norm == "layernorm" and c.norm_position == "post" and c.norm_eps == 1e-5 and c.bias
            and not c.embedding_norm and not c.final_norm and c.scale_attention
            and c.n_head * c.d_head == c.d_model and c.activation in ("relu", "gelu", "gelu_tanh", "silu"))


register(Converter(family="transformer", model_types=("marian",), config_from_hf=marian_config_from_hf,
                   config_to_hf=marian_config_to_hf, rename=bart_layout_rename(), body_prefix="model.",
                   accepts=_writable, save_tied=True,
                   ignored=TIED_COPIES + (r"model\.(encoder|decoder)\.embed_positions\.weight",)))
