"""GPT-2 (`gpt2`) and GPT-1 (`openai-gpt`) checkpoints of Hugging Face `transformers`.

Both store attention and MLP weights as Conv1D, i.e. (in, out): we transpose them to Linear's
(out, in). They differ only in the embeddings' names and the config keys.
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, labels_from_hf, labels_to_hf, register

HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "gelu": "gelu", "relu": "relu"}
OUR_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# openai-gpt's `afn` has its own table in transformers: "gelu" there is the tanh approximation
# (gelu_new), as in the original GPT-1 code; the exact erf GELU cannot be written as an openai-gpt.
GPT1_HF_ACTIVATIONS = {"gelu": "gelu_tanh", "relu": "relu"}
GPT1_OUR_ACTIVATIONS = {"gelu_tanh": "gelu", "relu": "relu"}
TASK_ARCHITECTURES = {  # their class name suffix for each of our tasks
    "lm": "LMHeadModel", "sequence-classification": "ForSequenceClassification"}


def _rename_rules(wte: str, wpe: str) -> list[tuple[str, str]]:
    block = r"transformer\.h\.(\d+)\."
    return [
        (r"transformer\.embed\.tokens\.weight", f"transformer.{wte}.weight"),
        (r"transformer\.embed\.positions\.weight", f"transformer.{wpe}.weight"),
        (block + r"self_attn_norm\.(weight|bias)", r"transformer.h.\1.ln_1.\2"),
        (block + r"self_attn\.qkv\.(weight|bias)", r"transformer.h.\1.attn.c_attn.\2"),
        (block + r"self_attn\.out\.(weight|bias)", r"transformer.h.\1.attn.c_proj.\2"),
        (block + r"ffn_norm\.(weight|bias)", r"transformer.h.\1.ln_2.\2"),
        (block + r"ffn\.w_1\.(weight|bias)", r"transformer.h.\1.mlp.c_fc.\2"),
        (block + r"ffn\.w_2\.(weight|bias)", r"transformer.h.\1.mlp.c_proj.\2"),
        (r"transformer\.ln_f\.(weight|bias)", r"transformer.ln_f.\1"),
        (r"lm_head\.weight", "lm_head.weight"),
        (r"score\.weight", "score.weight"),
    ]


CONV1D = (r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight",)


def _task(hf: dict, prefix: str) -> str:
    arch = (hf.get("architectures") or [f"{prefix}LMHeadModel"])[0]
    for task, suffix in TASK_ARCHITECTURES.items():
        if arch == prefix + suffix:
            return task
    if arch == prefix + "Model":   # a bare body: our LM, with the head tied to the embeddings
        return "lm"
    raise CheckpointError(f"architecture {arch!r} is not supported; supported: "
                          f"{', '.join(prefix + s for s in TASK_ARCHITECTURES.values())}, {prefix}Model")


def _activation(name: str, table: dict = HF_ACTIVATIONS) -> str:
    try:
        return table[name]
    except KeyError:
        raise CheckpointError(f"activation {name!r} is not supported; supported: {', '.join(table)}") from None


def _common_to_hf(c: ModelConfig, task: str, prefix: str) -> dict:
    if c.n_head * c.d_head != c.d_model:
        raise CheckpointError(f"GPT checkpoints need n_head * d_head == d_model, but this model has "
                              f"{c.n_head} x {c.d_head} != {c.d_model}")
    return {"architectures": [prefix + TASK_ARCHITECTURES[task]], "vocab_size": c.vocab_size,
            "n_positions": c.max_position, "n_embd": c.d_model, "n_layer": c.n_layer, "n_head": c.n_head,
            "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attn_dropout,
            "layer_norm_epsilon": c.norm_eps, "initializer_range": c.init_std,
            "tie_word_embeddings": c.tie_embeddings, "pad_token_id": c.pad_token_id, **labels_to_hf(c)}


def gpt2_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise CheckpointError("GPT-2 options scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn "
                              "are not supported")
    d = hf.get("n_embd", 768)
    config = ModelConfig(
        family="gpt", vocab_size=hf.get("vocab_size", 50257), d_model=d, n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12), d_ff=hf.get("n_inner") or 4 * d, max_position=hf.get("n_positions", 1024),
        activation=_activation(hf.get("activation_function", "gelu_new")), norm_position="pre", final_norm=True,
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), dropout=hf.get("resid_pdrop", 0.1),
        attn_dropout=hf.get("attn_pdrop", 0.1), init_std=hf.get("initializer_range", 0.02),
        tie_embeddings=hf.get("tie_word_embeddings", True), pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id", 50256), eos_token_id=hf.get("eos_token_id", 50256),
        **labels_from_hf(hf))
    return config, _task(hf, "GPT2")


def gpt2_config_to_hf(c: ModelConfig, task: str) -> dict:
    return {"model_type": "gpt2", **_common_to_hf(c, task, "GPT2"), "n_inner": c.d_ff,
            "activation_function": OUR_ACTIVATIONS[c.activation],
            "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id}


def gpt1_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    d = hf.get("n_embd", 768)
    config = ModelConfig(
        family="gpt", vocab_size=hf.get("vocab_size", 40478), d_model=d, n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12), d_ff=4 * d, max_position=hf.get("n_positions", 512),
        activation=_activation(hf.get("afn", "gelu"), GPT1_HF_ACTIVATIONS), norm_position="post", final_norm=False,
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), dropout=hf.get("resid_pdrop", 0.1),
        attn_dropout=hf.get("attn_pdrop", 0.1), init_std=hf.get("initializer_range", 0.02),
        tie_embeddings=hf.get("tie_word_embeddings", True), pad_token_id=hf.get("pad_token_id"),
        **labels_from_hf(hf))
    return config, _task(hf, "OpenAIGPT")


def gpt1_config_to_hf(c: ModelConfig, task: str) -> dict:
    if c.d_ff != 4 * c.d_model:
        raise CheckpointError(f"openai-gpt checkpoints fix d_ff = 4 * d_model, but this model has d_ff={c.d_ff}")
    if c.activation not in GPT1_OUR_ACTIVATIONS:
        raise CheckpointError(f"openai-gpt checkpoints support the activations {', '.join(GPT1_OUR_ACTIVATIONS)}, "
                              f"but this model uses {c.activation!r}")
    return {"model_type": "openai-gpt", **_common_to_hf(c, task, "OpenAIGPT"),
            "afn": GPT1_OUR_ACTIVATIONS[c.activation]}


def _writable(c: ModelConfig, gpt2: bool) -> bool:
    """A GPT that GPT2LMHeadModel (pre-norm, final norm) or OpenAIGPTLMHeadModel (post-norm, none) computes
    the same way: LayerNorm with biases, a learned position table, unscaled embeddings without a norm,
    scaled attention of d_model width with a key and value per head, an activation they name, an LM head
    without bias. Any other GPT (sinusoidal positions, RMSNorm, GQA, ...) is saved in our own format
    (model_type "transformerkit")."""
    activations = OUR_ACTIVATIONS if gpt2 else GPT1_OUR_ACTIVATIONS
    return (c.norm_position == ("pre" if gpt2 else "post") and c.final_norm == gpt2 and c.norm == "layernorm"
            and c.bias and c.positions == "learned" and c.position_offset == 0 and not c.scale_embeddings
            and not c.embedding_norm and c.scale_attention and c.n_head * c.d_head == c.d_model
            and c.activation in activations and (gpt2 or c.d_ff == 4 * c.d_model)
            and c.kv_heads == c.n_head and not c.lm_head_bias)


register(Converter(family="gpt", model_types=("gpt2",), config_from_hf=gpt2_config_from_hf,
                   config_to_hf=gpt2_config_to_hf, rename=_rename_rules("wte", "wpe"), transposed=CONV1D,
                   body_prefix="transformer.", accepts=lambda c: _writable(c, gpt2=True)))
register(Converter(family="gpt", model_types=("openai-gpt",), config_from_hf=gpt1_config_from_hf,
                   config_to_hf=gpt1_config_to_hf, rename=_rename_rules("tokens_embed", "positions_embed"),
                   transposed=CONV1D, body_prefix="transformer.", accepts=lambda c: _writable(c, gpt2=False)))
