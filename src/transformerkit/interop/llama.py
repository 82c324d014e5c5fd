"""LLaMA (`llama`) checkpoints of Hugging Face `transformers`: LlamaForCausalLM, LlamaForSequenceClassification
and a bare LlamaModel.

Their q_proj, k_proj, v_proj are separate (k and v with num_key_value_heads heads); ours are one
fused `qkv`, so one of our tensors is three of theirs, of unequal sizes under GQA. Their MLP's
`gate_proj` is the activated half of SwiGLU (our `w_1`) and `up_proj` the linear one (our `w_gate`).
Rotary positions have no tensor: only `rope_theta` travels. Residual dropout (ours, not theirs) is
a training setting that their config cannot hold; it is dropped on saving.
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, labels_from_hf, labels_to_hf, register

HF_ACTIVATIONS = {"silu": "gated-silu", "swish": "gated-silu", "gelu": "gated-gelu",
                  "gelu_pytorch_tanh": "gated-gelu_tanh", "gelu_new": "gated-gelu_tanh"}
OUR_ACTIVATIONS = {"gated-silu": "silu", "gated-gelu": "gelu", "gated-gelu_tanh": "gelu_pytorch_tanh"}
ARCHITECTURES = {"LlamaForCausalLM": "lm", "LlamaModel": "lm", "LlamaForSequenceClassification":
                 "sequence-classification"}
TASK_ARCHITECTURES = {"lm": "LlamaForCausalLM", "sequence-classification": "LlamaForSequenceClassification"}

BLOCK = r"transformer\.h\.(\d+)\."
RENAME = [
    (r"transformer\.embed\.tokens\.weight", "model.embed_tokens.weight"),
    (BLOCK + r"self_attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (BLOCK + r"self_attn\.qkv\.weight", (r"model.layers.\1.self_attn.q_proj.weight",
                                         r"model.layers.\1.self_attn.k_proj.weight",
                                         r"model.layers.\1.self_attn.v_proj.weight")),
    (BLOCK + r"self_attn\.out\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (BLOCK + r"ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (BLOCK + r"ffn\.w_1\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (BLOCK + r"ffn\.w_gate\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (BLOCK + r"ffn\.w_2\.weight", r"model.layers.\1.mlp.down_proj.weight"),
    (r"transformer\.ln_f\.weight", "model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"score\.weight", "score.weight"),
]


def _rope_theta(hf: dict) -> float:
    """rope_theta from a transformers 4 config (top level, rope_scaling) or 5 (rope_parameters)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise CheckpointError(f"rope scaling {kind!r} (Llama 3.1 and later, long-context variants) is not "
                              "supported; only plain rotary positions (rope_type 'default') are")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _first(token_id):
    """Llama 3 lists several end-of-sequence ids; our config keeps the first."""
    return token_id[0] if isinstance(token_id, list) else token_id


def llama_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    heads = hf.get("num_attention_heads", 32)
    kv_heads = hf.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise CheckpointError(f"num_key_value_heads={kv_heads} does not divide num_attention_heads={heads}: "
                              "grouped-query attention shares each key/value head among an equal group of "
                              "query heads; the checkpoint's config.json is inconsistent")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise CheckpointError("Llama checkpoints with attention_bias or mlp_bias are not supported: our "
                              "LLaMA has no biases (set bias per model, not per layer)")
    act = hf.get("hidden_act", "silu")
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"hidden_act {act!r} is not supported; supported: {', '.join(HF_ACTIVATIONS)}")
    arch = (hf.get("architectures") or ["LlamaForCausalLM"])[0]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    d_model = hf.get("hidden_size", 4096)
    config = ModelConfig(
        family="llama", vocab_size=hf.get("vocab_size", 32000), d_model=d_model,
        n_layer=hf.get("num_hidden_layers", 32), n_head=heads, n_kv_head=0 if kv_heads == heads else kv_heads,
        d_head=hf.get("head_dim") or d_model // heads, d_ff=hf.get("intermediate_size", 11008),
        max_position=hf.get("max_position_embeddings", 2048), activation=HF_ACTIVATIONS[act], norm="rmsnorm",
        norm_position="pre", norm_eps=hf.get("rms_norm_eps", 1e-6), final_norm=True, bias=False,
        positions="rotary", rope_theta=_rope_theta(hf), tie_embeddings=hf.get("tie_word_embeddings", False),
        dropout=0.0, attn_dropout=hf.get("attention_dropout", 0.0), init_std=hf.get("initializer_range", 0.02),
        pad_token_id=hf.get("pad_token_id"), bos_token_id=_first(hf.get("bos_token_id", 1)),
        eos_token_id=_first(hf.get("eos_token_id", 2)), **labels_from_hf(hf))
    return config, ARCHITECTURES[arch]


def llama_config_to_hf(c: ModelConfig, task: str) -> dict:
    return {"model_type": "llama", "architectures": [TASK_ARCHITECTURES[task]], "vocab_size": c.vocab_size,
            "hidden_size": c.d_model, "intermediate_size": c.d_ff, "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads, "head_dim": c.d_head,
            "max_position_embeddings": c.max_position, "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
            "hidden_act": OUR_ACTIVATIONS[c.activation], "attention_bias": False, "mlp_bias": False,
            "attention_dropout": c.attn_dropout, "initializer_range": c.init_std,
            "tie_word_embeddings": c.tie_embeddings, "pad_token_id": c.pad_token_id,
            "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, **labels_to_hf(c)}


def _writable(c: ModelConfig) -> bool:
    """What LlamaForCausalLM computes: RMSNorm pre-norm with a final norm, rotary positions, no biases,
    unscaled embeddings without a norm, scaled attention, a gated activation it names."""
    return (c.norm == "rmsnorm" and c.norm_position == "pre" and c.final_norm and not c.bias
            and c.positions == "rotary" and not c.scale_embeddings and not c.embedding_norm and c.scale_attention
            and c.activation in OUR_ACTIVATIONS and not c.lm_head_bias)


def qkv_sizes(name: str, c: ModelConfig) -> list[int] | None:
    """Rows of q_proj, k_proj, v_proj in our fused qkv: n_head heads, then n_kv_head and n_kv_head."""
    if name.endswith("self_attn.qkv.weight"):
        return [c.n_head * c.d_head, c.kv_heads * c.d_head, c.kv_heads * c.d_head]
    return None


register(Converter(family="llama", model_types=("llama",), config_from_hf=llama_config_from_hf,
                   config_to_hf=llama_config_to_hf, rename=RENAME, body_prefix="model.", accepts=_writable,
                   stacked_sizes=qkv_sizes, ignored=(r"model\.rotary_emb\.inv_freq", r".*\.rotary_emb\.inv_freq")))
