"""BART (`bart`) checkpoints of `transformers` (BartForConditionalGeneration, or a bare BartModel) as ours.

The tensor names are BART's layout (seq2seq.py beside this file). Config keys map one to one;
what our BART cannot be -- different encoder and decoder widths, mBART's pre-norm blocks with a
final LayerNorm, fixed sinusoidal positions, a decoder-only BartForCausalLM -- is refused with a
CheckpointError instead of being loaded wrongly. LayerDrop (encoder_layerdrop / decoder_layerdrop)
only acts in training and is not kept. A BART of ours that `transformers` cannot represent (e.g. a
gated feed-forward or RMSNorm) is saved in our own format (model_type "transformerkit").
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, register
from .seq2seq import TIED_COPIES, bart_layout_rename

# their activation_function -> ours; "gelu" is the exact erf form in both
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "silu": "silu", "swish": "silu"}
TO_HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "silu": "silu"}
POSITION_OFFSET = 2   # transformers' BartLearnedPositionalEmbedding always keeps 2 leading rows

# BartConfig's defaults (bart-large's shape), for keys a config.json leaves out.
DEFAULTS = {"vocab_size": 50265, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
            "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096,
            "decoder_ffn_dim": 4096, "max_position_embeddings": 1024, "pad_token_id": 1, "bos_token_id": 0,
            "eos_token_id": 2, "decoder_start_token_id": 2}

# Keys of old (fairseq-converted) configs that `transformers` no longer reads, with the only value that
# means BART; another value means another model (mBART, Blenderbot) whose tensors would load wrongly.
LEGACY = {"normalize_before": False, "add_final_layer_norm": False, "normalize_embedding": True,
          "static_position_embeddings": False, "add_bias_logits": False, "do_blenderbot_90_layernorm": False,
          "extra_pos_embeddings": POSITION_OFFSET}


def _one_id(hf: dict, key: str):
    value = hf.get(key, DEFAULTS[key])
    if isinstance(value, list):
        if len(value) != 1:
            raise CheckpointError(f"BART config.json: {key}={value} lists several ids; our config holds one -- "
                                  "keep the one the decoder should stop at")
        value = value[0]
    return value


def bart_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    """Our config from a BartConfig dict (keys left out take BartConfig's defaults)."""
    for key, expected in LEGACY.items():
        if key in hf and hf[key] != expected:
            raise CheckpointError(
                f"BART config.json: {key}={hf[key]!r} describes a variant (mBART's pre-norm blocks and final "
                f"LayerNorm, Blenderbot's layout, fixed positions, ...) that our BART cannot represent; only "
                f"{key}={expected!r} loads. Convert it with transformers to a plain BART checkpoint, or use "
                "the model's own family")
    if hf.get("is_encoder_decoder", True) is False or hf.get("is_decoder", False):
        raise CheckpointError("BART config.json describes a decoder-only BartForCausalLM; only the "
                              "encoder-decoder (BartForConditionalGeneration or BartModel) loads")
    act = hf.get("activation_function", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"BART config.json: activation_function {act!r} is not supported; supported: "
                              f"{', '.join(ACTIVATIONS)}")
    def get(key):
        return hf.get(key, DEFAULTS.get(key))

    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if get(enc) != get(dec):
            raise CheckpointError(f"BART config.json: {enc}={get(enc)} but {dec}={get(dec)}; our encoder and decoder "
                                  "share one head count and feed-forward width, so this checkpoint cannot load")
    config = ModelConfig(
        family="bart", vocab_size=get("vocab_size"), d_model=get("d_model"), n_layer=get("encoder_layers"),
        n_decoder_layer=get("decoder_layers"), n_head=get("encoder_attention_heads"), d_ff=get("encoder_ffn_dim"),
        max_position=get("max_position_embeddings"), activation=ACTIVATIONS[act], norm="layernorm",
        norm_position="post", norm_eps=1e-5, final_norm=False, bias=True, positions="learned",
        position_offset=POSITION_OFFSET, scale_embeddings=bool(hf.get("scale_embedding", False)),
        embedding_norm=True, tie_embeddings=hf.get("tie_word_embeddings", True), dropout=hf.get("dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.0), activation_dropout=hf.get("activation_dropout", 0.0),
        init_std=hf.get("init_std", 0.02), pad_token_id=_one_id(hf, "pad_token_id"),
        bos_token_id=_one_id(hf, "bos_token_id"), eos_token_id=_one_id(hf, "eos_token_id"),
        decoder_start_token_id=_one_id(hf, "decoder_start_token_id"), final_logits_bias=True)
    return config, "seq2seq"


def _writable(c: ModelConfig) -> bool:
    """Only a BART that BartForConditionalGeneration computes the same way is written as `bart`:
    post-norm LayerNorm (eps 1e-5) with biases, embedding LayerNorm, no final norm, learned positions
    offset by 2, scaled attention, one head width, an activation they name, the output bias."""
    return (c.norm == "layernorm" and c.norm_position == "post" and not c.final_norm and c.bias
            and c.embedding_norm and c.positions == "learned" and c.position_offset == POSITION_OFFSET
            and c.scale_attention and c.norm_eps == 1e-5 and c.n_head * c.d_head == c.d_model
            and c.activation in TO_HF_ACTIVATIONS and c.final_logits_bias
            and c.decoder_start_token_id is not None)


def bart_config_to_hf(c: ModelConfig, task: str) -> dict:
    return {"model_type": "bart", "architectures": ["BartForConditionalGeneration"], "vocab_size": c.vocab_size,
            "d_model": c.d_model, "encoder_layers": c.n_layer, "decoder_layers": c.n_decoder_layer,
            "encoder_attention_heads": c.n_head, "decoder_attention_heads": c.n_head, "encoder_ffn_dim": c.d_ff,
            "decoder_ffn_dim": c.d_ff, "max_position_embeddings": c.max_position,
            "activation_function": TO_HF_ACTIVATIONS[c.activation], "scale_embedding": c.scale_embeddings,
            "tie_word_embeddings": c.tie_embeddings, "dropout": c.dropout, "attention_dropout": c.attn_dropout,
            "activation_dropout": c.activation_dropout, "init_std": c.init_std, "encoder_layerdrop": 0.0,
            "decoder_layerdrop": 0.0, "pad_token_id": c.pad_token_id, "bos_token_id": c.bos_token_id,
            "eos_token_id": c.eos_token_id, "decoder_start_token_id": c.decoder_start_token_id,
            "forced_bos_token_id": None, "forced_eos_token_id": None, "is_encoder_decoder": True}


register(Converter(family="bart", model_types=("bart",), config_from_hf=bart_config_from_hf,
                   config_to_hf=bart_config_to_hf, rename=bart_layout_rename(), body_prefix="model.",
                   accepts=_writable, save_tied=True,
                   ignored=TIED_COPIES + (r"(model\.)?(encoder|decoder)\.version",)))
