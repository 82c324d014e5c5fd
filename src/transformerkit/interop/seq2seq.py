"""Tensor names shared by the encoder-decoder checkpoints of `transformers` that follow BART's layout
(BART, Marian, mBART, ...): `model.{encoder,decoder}.layers.N.{self_attn,encoder_attn}.{q,k,v,out}_proj`,
`fc1`/`fc2`, one LayerNorm per sub-layer. Their q, k, v (and cross-attention k, v) are separate
Linear layers; ours are fused, so one of our tensors is several of theirs, stacked along dim 0."""
from __future__ import annotations

_LAYER = r"(encoder|decoder)\.layers\.(\d+)\."


def bart_layout_rename(prefix: str = "model.") -> list[tuple[str, str | tuple[str, ...]]]:
    """(our regex, their template) pairs for every tensor of `EncoderDecoder` in BART's layout."""
    T = prefix + r"\1.layers.\2."
    return [
        (r"shared\.weight", prefix + "shared.weight"),
        (r"(encoder|decoder)\.embed\.tokens\.weight", prefix + r"\1.embed_tokens.weight"),   # tied copies
        (r"(encoder|decoder)\.embed\.positions\.weight", prefix + r"\1.embed_positions.weight"),
        (r"(encoder|decoder)\.embed\.norm\.(weight|bias)", prefix + r"\1.layernorm_embedding.\2"),
        (_LAYER + r"self_attn\.qkv\.(weight|bias)", tuple(T + f"self_attn.{p}_proj.\\3" for p in "qkv")),
        (_LAYER + r"self_attn\.out\.(weight|bias)", T + r"self_attn.out_proj.\3"),
        (_LAYER + r"self_attn_norm\.(weight|bias)", T + r"self_attn_layer_norm.\3"),
        (_LAYER + r"cross_attn\.q\.(weight|bias)", T + r"encoder_attn.q_proj.\3"),
        (_LAYER + r"cross_attn\.kv\.(weight|bias)", (T + r"encoder_attn.k_proj.\3", T + r"encoder_attn.v_proj.\3")),
        (_LAYER + r"cross_attn\.out\.(weight|bias)", T + r"encoder_attn.out_proj.\3"),
        (_LAYER + r"cross_attn_norm\.(weight|bias)", T + r"encoder_attn_layer_norm.\3"),
        (_LAYER + r"ffn\.w_1\.(weight|bias)", T + r"fc1.\3"),
        (_LAYER + r"ffn\.w_2\.(weight|bias)", T + r"fc2.\3"),
        (_LAYER + r"ffn_norm\.(weight|bias)", T + r"final_layer_norm.\3"),
        (r"(encoder|decoder)\.final_norm\.(weight|bias)", prefix + r"\1.layer_norm.\2"),
        (r"lm_head\.weight", "lm_head.weight"),
        (r"final_logits_bias", "final_logits_bias"),
    ]


# Copies of the shared table that their checkpoints may also hold.
TIED_COPIES = (r"model\.(encoder|decoder)\.embed_tokens\.weight",)
