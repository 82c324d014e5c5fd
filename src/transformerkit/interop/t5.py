"""T5 (`t5`) checkpoints of Hugging Face `transformers`: T5ForConditionalGeneration, v1.0 and v1.1.

Their names follow Mesh TensorFlow's: each block is a list of sub-layers, `layer.0` the
self-attention, then (decoder only) `layer.1` the cross-attention (`EncDecAttention`), then the
feed-forward (`DenseReluDense`: `wi`, `wo`; gated: `wi_0` the activated half, `wi_1` the linear
one), each with its own `layer_norm`. The relative-position table sits in block 0's
self-attention and serves every block of the stack, as ours sits once on the stack.
Their q, k, v are separate; ours are fused, so one of our tensors is several of theirs.

Tying. T5 v1.0 ties the output layer to the embedding and scales the decoder output by
d_model^-0.5; v1.1 has its own output layer and no scaling. Configs written by transformers < 5 say
which by `tie_word_embeddings`, and the scaling follows the tying. transformers >= 5 always writes
`tie_word_embeddings: true`, says whether to scale by `scale_decoder_outputs`, and decides the
tying from the weights: untied when the checkpoint holds an `lm_head.weight` that differs from
`shared.weight` (a fine-tuned v1.1 / Flan-T5), tied when it holds `shared.weight` only (a
v1.1-shaped model it created). We load the same way (`tie_from_weights`), so each of these loads
as it is, with the scaling its config says.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, register

# feed_forward_proj's activation (the part after "gated-") -> ours. Their "gated-gelu" is the tanh GELU.
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu"}
# ours -> feed_forward_proj
FEED_FORWARD = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu",
                "gated-relu": "gated-relu", "gated-gelu_tanh": "gated-gelu", "gated-gelu": "gated-gelu_python"}


def t5_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    proj = hf.get("feed_forward_proj", "relu")
    gated, act = proj.startswith("gated-"), proj.split("-")[-1]
    if proj == "gated-gelu":
        act = "gelu_new"          # transformers' reading of "gated-gelu" (T5 v1.1)
    activation = ("gated-" if gated else "") + ACTIVATIONS.get(act, act)
    if act not in ACTIVATIONS or activation not in FEED_FORWARD:
        raise CheckpointError(f"T5 feed_forward_proj {proj!r} is not supported; supported: "
                              f"{', '.join(sorted(FEED_FORWARD.values()))}")
    tied = bool(hf.get("tie_word_embeddings", True))
    # transformers >= 5 writes whether to scale; older configs scale when tied (None: follow the tying).
    scale = hf.get("scale_decoder_outputs")
    dropout = hf.get("dropout_rate", 0.1)
    config = ModelConfig(
        family="t5", vocab_size=hf.get("vocab_size", 32128), d_model=hf.get("d_model", 512),
        n_layer=hf.get("num_layers", 6), n_decoder_layer=hf.get("num_decoder_layers") or hf.get("num_layers", 6),
        n_head=hf.get("num_heads", 8), d_head=hf.get("d_kv", 64), d_ff=hf.get("d_ff", 2048),
        max_position=hf.get("n_positions", 512), activation=activation, norm="rmsnorm", norm_position="pre",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6), final_norm=True, bias=False, positions="relative",
        scale_attention=False, relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128), tie_embeddings=tied,
        dropout=dropout, attn_dropout=dropout, activation_dropout=dropout,
        init_std=hf.get("initializer_factor", 1.0), pad_token_id=hf.get("pad_token_id", 0),
        eos_token_id=hf.get("eos_token_id", 1),
        decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
        scale_decoder_outputs=None if scale is None else bool(scale))
    return config, "seq2seq"


def t5_config_to_hf(c: ModelConfig, task: str) -> dict:
    """T5Config's fields. Dropout is one rate there (dropout_rate = our `dropout`); the weights do not depend on it."""
    scale = c.tie_embeddings if c.scale_decoder_outputs is None else c.scale_decoder_outputs
    return {**({"scale_decoder_outputs": scale} if scale != c.tie_embeddings else {}),   # transformers >= 5 reads it
            "model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "vocab_size": c.vocab_size,
            "d_model": c.d_model, "d_kv": c.d_head, "d_ff": c.d_ff, "num_layers": c.n_layer,
            "num_decoder_layers": c.n_decoder_layer, "num_heads": c.n_head,
            "relative_attention_num_buckets": c.relative_buckets,
            "relative_attention_max_distance": c.relative_max_distance, "n_positions": c.max_position,
            "dropout_rate": c.dropout, "layer_norm_epsilon": c.norm_eps, "initializer_factor": c.init_std,
            "feed_forward_proj": FEED_FORWARD[c.activation], "tie_word_embeddings": c.tie_embeddings,
            "is_encoder_decoder": True, "pad_token_id": c.pad_token_id, "eos_token_id": c.eos_token_id,
            "decoder_start_token_id": c.decoder_start_token_id}


def _writable(c: ModelConfig) -> bool:
    """A T5-family config that T5ForConditionalGeneration can hold; any other variant is saved in our own format."""
    return (c.norm == "rmsnorm" and c.norm_position == "pre" and c.final_norm and not c.bias
            and c.positions == "relative" and not c.scale_attention and not c.scale_embeddings
            and not c.embedding_norm and c.activation in FEED_FORWARD and not c.final_logits_bias)


_ATTN = {"self_attn": "SelfAttention", "cross_attn": "EncDecAttention"}


def _rename() -> list[tuple[str, str | tuple[str, ...]]]:
    """(our regex, their template) for every tensor of `T5`; feed-forward names are the ungated ones
    (`T5Converter` renames wi to wi_0 for a gated model)."""
    rules = [
        (r"shared\.weight", "shared.weight"),
        (r"(encoder|decoder)\.embed\.tokens\.weight", r"\1.embed_tokens.weight"),       # tied copies
        (r"lm_head\.weight", "lm_head.weight"),
        (r"(encoder|decoder)\.relative_bias\.bias\.weight",       # one table per stack, kept in block 0
         r"\1.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        (r"(encoder|decoder)\.final_norm\.weight", r"\1.final_layer_norm.weight"),
    ]
    for stack, sublayers in (("encoder", ("self_attn", "ffn")), ("decoder", ("self_attn", "cross_attn", "ffn"))):
        ours, theirs = stack + r"\.layers\.(\d+)\.", stack + r".block.\1.layer."
        for i, sub in enumerate(sublayers):
            t = f"{theirs}{i}."
            if sub == "ffn":
                rules += [(ours + r"ffn\.w_1\.weight", t + "DenseReluDense.wi.weight"),
                          (ours + r"ffn\.w_gate\.weight", t + "DenseReluDense.wi_1.weight"),
                          (ours + r"ffn\.w_2\.weight", t + "DenseReluDense.wo.weight")]
            else:
                a = t + _ATTN[sub] + "."                  # our fused q, k, v are their three
                if sub == "self_attn":
                    rules.append((ours + r"self_attn\.qkv\.weight", tuple(a + p + ".weight" for p in "qkv")))
                else:
                    rules += [(ours + r"cross_attn\.q\.weight", a + "q.weight"),
                              (ours + r"cross_attn\.kv\.weight", (a + "k.weight", a + "v.weight"))]
                rules.append((ours + sub + r"\.out\.weight", a + "o.weight"))
            rules.append((ours + f"{sub}_norm" + r"\.weight", t + "layer_norm.weight"))
    return rules


@dataclass
class T5Converter(Converter):
    """T5's names, with the feed-forward's first matrix named by whether it is gated (wi or wi_0)."""

    def to_theirs(self, name: str, config: ModelConfig) -> list[str]:
        names = super().to_theirs(name, config)
        if config.activation.startswith("gated-"):
            names = [re.sub(r"DenseReluDense\.wi\.", "DenseReluDense.wi_0.", n) for n in names]
        return names


register(T5Converter(
    family="t5", model_types=("t5",), config_from_hf=t5_config_from_hf, config_to_hf=t5_config_to_hf,
    rename=_rename(), accepts=_writable, tie_from_weights=True,
    # copies of the shared embedding, and a cross-attention position table old checkpoints carry unused
    ignored=(r"(encoder|decoder)\.embed_tokens\.weight",
             r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight")))
