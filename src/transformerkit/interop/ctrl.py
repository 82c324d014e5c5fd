"""CTRL (`ctrl`) checkpoints of Hugging Face `transformers`: CTRLLMHeadModel, CTRLForSequenceClassification
and a bare CTRLModel, onto our GPT configured as CTRL (models/ctrl.py).

Their attention keeps separate `Wq`, `Wk`, `Wv` Linear layers (out, in), stacked into our fused `qkv`;
nothing is transposed. The sinusoidal table is a buffer on both sides and never saved. Three quirks of
their code decide what converts:

- Every block's two LayerNorms have eps 1e-6 written into the code; only the final norm reads
  `layer_norm_epsilon`. Our config has one `norm_eps`, so a checkpoint with another epsilon is refused
  and only a model with norm_eps 1e-6 is written as a `ctrl`.
- Attention has no dropout (they pass 0.0), and `resid_pdrop` / `embd_pdrop` are one `dropout` here:
  training settings, not weights; we read resid_pdrop and write ours into both.
- Their position table is computed in float32 (`positional_encoding(..., torch.float)`); ours is the same
  formula computed in float64 and rounded once, as CTRL's own numpy code did when the model was trained. The
  tables differ by up to 1.8e-5 at CTRL's 256 x 1280 (2.8e-6 at the tests' 40 x 45); that is the whole
  logit difference (4e-5 on the tests' large random weights, 6e-6 at CTRL's width with transformers'
  init; 0 with their table swapped in), within the 1e-4 parity. The table is a buffer built by
  layers/positions.py, which has no float32 option, and the trained model's own table is the better one.
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, labels_from_hf, labels_to_hf, register

BLOCK_EPS = 1e-6   # CTRLLMHeadModel's block LayerNorms: a constant in their code, not read from the config
ARCHITECTURES = {"CTRLLMHeadModel": "lm", "CTRLModel": "lm", "CTRLForSequenceClassification":
                 "sequence-classification"}
TASK_ARCHITECTURES = {"lm": "CTRLLMHeadModel", "sequence-classification": "CTRLForSequenceClassification"}

BLOCK = r"transformer\.h\.(\d+)\."
ATTN = r"transformer.h.\1.multi_head_attention."
RENAME = [
    (r"transformer\.embed\.tokens\.weight", "transformer.w.weight"),
    (BLOCK + r"self_attn_norm\.(weight|bias)", r"transformer.h.\1.layernorm1.\2"),
    (BLOCK + r"self_attn\.qkv\.(weight|bias)", (ATTN + r"Wq.\2", ATTN + r"Wk.\2", ATTN + r"Wv.\2")),
    (BLOCK + r"self_attn\.out\.(weight|bias)", ATTN + r"dense.\2"),
    (BLOCK + r"ffn_norm\.(weight|bias)", r"transformer.h.\1.layernorm2.\2"),
    (BLOCK + r"ffn\.w_1\.(weight|bias)", r"transformer.h.\1.ffn.0.\2"),   # nn.Sequential(Linear, ReLU, Linear)
    (BLOCK + r"ffn\.w_2\.(weight|bias)", r"transformer.h.\1.ffn.2.\2"),
    (r"transformer\.ln_f\.(weight|bias)", r"transformer.layernorm.\1"),
    (r"lm_head\.(weight|bias)", r"lm_head.\1"),
    (r"score\.weight", "classifier.weight"),
]


def ctrl_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    eps = hf.get("layer_norm_epsilon", BLOCK_EPS)
    if eps != BLOCK_EPS:
        raise CheckpointError(f"layer_norm_epsilon={eps} is not supported: CTRLLMHeadModel uses it for the final "
                              f"norm only and {BLOCK_EPS} in every block, while our config has one norm_eps; "
                              f"set layer_norm_epsilon to {BLOCK_EPS} in config.json")
    arch = (hf.get("architectures") or ["CTRLLMHeadModel"])[0]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    config = ModelConfig(
        family="gpt", vocab_size=hf.get("vocab_size", 246534), d_model=hf.get("n_embd", 1280),
        n_layer=hf.get("n_layer", 48), n_head=hf.get("n_head", 16), d_ff=hf.get("dff", 8192),
        max_position=hf.get("n_positions", 256), activation="relu", norm="layernorm", norm_position="pre",
        norm_eps=eps, final_norm=True, bias=True, positions="sinusoidal", sinusoidal_layout="halves",
        scale_embeddings=True, tie_embeddings=hf.get("tie_word_embeddings", True),
        # A bare CTRLModel has no head: its logits are the tied token table's, without a bias (as GPT2Model's).
        lm_head_bias=arch != "CTRLModel", dropout=hf.get("resid_pdrop", 0.1), attn_dropout=0.0,
        init_std=hf.get("initializer_range", 0.02), pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"), **labels_from_hf(hf))
    return config, ARCHITECTURES[arch]


def ctrl_config_to_hf(c: ModelConfig, task: str) -> dict:
    return {"model_type": "ctrl", "architectures": [TASK_ARCHITECTURES[task]], "vocab_size": c.vocab_size,
            "n_positions": c.max_position, "n_embd": c.d_model, "dff": c.d_ff, "n_layer": c.n_layer,
            "n_head": c.n_head, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
            "layer_norm_epsilon": c.norm_eps, "initializer_range": c.init_std,
            "tie_word_embeddings": c.tie_embeddings, "pad_token_id": c.pad_token_id,
            "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, **labels_to_hf(c)}


def _writable(c: ModelConfig) -> bool:
    """A GPT that CTRLLMHeadModel computes the same way: sinusoidal positions (sines then cosines) from 0,
    embeddings x sqrt(d_model) without a norm, pre-norm LayerNorm with biases and eps 1e-6 and a final norm,
    scaled multi-head attention of d_model width, ReLU, a biased LM head. d_ff is free. (GPT-2's converter
    takes only learned positions, so no GPT is written by both.)"""
    return (c.positions == "sinusoidal" and c.sinusoidal_layout == "halves" and c.scale_embeddings
            and not c.embedding_norm and c.type_vocab_size == 0 and c.norm == "layernorm" and c.bias
            and c.norm_position == "pre" and c.final_norm and c.norm_eps == BLOCK_EPS and c.scale_attention
            and c.n_head * c.d_head == c.d_model and c.kv_heads == c.n_head and c.activation == "relu"
            and c.lm_head_bias)


register(Converter(family="gpt", model_types=("ctrl",), config_from_hf=ctrl_config_from_hf,
                   config_to_hf=ctrl_config_to_hf, rename=RENAME, body_prefix="transformer.", accepts=_writable))
