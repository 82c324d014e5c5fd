"""What a model costs, from its `ModelConfig` alone: parameters by component, FLOPs per token,
memory (weights, gradients, optimizer, activations, KV cache) and the arithmetic intensity of each
operation (what the roofline plots).

Conventions (every count is of the model `build(config)` makes, the family's default task):

- FLOPs count matrix multiplications only, 2 per multiply-add (Kaplan et al. 2020, Table 1: the
  forward pass costs 2 N + 2 n_layer n_ctx d_attn per token). Norms, activations, softmax, embedding
  look-ups and biases are left out, as `torch.utils.flop_counter.FlopCounterMode` leaves them out.
- Attention costs 2 x 2 x T x d_attn per token and layer (Q K^T and the weighted sum of V, d_attn =
  n_head x d_head). `causal_attention="average"` (default) counts, for causal self-attention, the
  (T + 1) / 2 keys a query sees on average: Kaplan's 2 n_layer n_ctx d_attn. "full" counts the whole
  T x T square, which is what the kernels compute and what `FlopCounterMode` reports (its SDPA
  formula ignores `is_causal`). Bidirectional and cross-attention are always the full rectangle.
- The vocabulary projection (LM head) is counted, tied or not: 2 x d_model x vocab per position.
- Training = 3 x forward: the backward pass multiplies each matrix twice (gradient of the input
  and of the weight), Kaplan et al. 2020 §2.1.
- Encoder-decoders read `seq` source tokens and write `target_seq` target tokens (default: as many);
  "per token" divides by source + target tokens, as the trainer counts tokens (`batch_tokens`).
- The seq2seq RNN has no analytic model here: its parameters are counted from the model built on
  the meta device, and its FLOPs are None.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..models import Model, build, default_task, get_preset

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
COMPONENTS = ("token_embeddings", "position_embeddings", "segment_embeddings", "attention", "feed_forward",
              "norms", "heads", "relative_position_bias")
ENCODER_DECODER = ("transformer", "t5", "bart")
DECODER_ONLY = ("gpt", "llama")


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}") from None


def as_config(model_or_config) -> ModelConfig:
    """A ModelConfig from a config, a model or a preset name."""
    if isinstance(model_or_config, ModelConfig):
        return model_or_config
    if isinstance(model_or_config, Model):
        return model_or_config.config
    if isinstance(model_or_config, str):
        return get_preset(model_or_config)
    raise ConfigError(f"expected a preset name, a ModelConfig or a model, got {type(model_or_config).__name__}")


# ----------------------------------------------------------------------------- parameters

def _norm_params(c: ModelConfig) -> int:
    return c.d_model * (2 if c.norm == "layernorm" and c.bias else 1)


def _attention_params(c: ModelConfig) -> int:
    """Q (C -> H D), K and V (C -> KV D each: fewer heads under GQA) and the output projection (H D -> C);
    cross-attention has as many."""
    inner, kv = c.n_head * c.d_head, c.kv_heads * c.d_head
    return c.d_model * (2 * inner + 2 * kv) + ((inner + 2 * kv + c.d_model) if c.bias else 0)


def _ffn_params(c: ModelConfig) -> int:
    """W_1 (and W_gate when gated, Shazeer 2020), W_2 (Vaswani et al. 2017, Eq. 2)."""
    n_in = 2 if c.activation.startswith("gated-") else 1
    return (n_in + 1) * c.d_model * c.d_ff + ((n_in * c.d_ff + c.d_model) if c.bias else 0)


def _bert_head_params(c: ModelConfig, task: str) -> int:
    C, V = c.d_model, c.vocab_size
    pooler = C * C + C
    mlm = C * C + C + _norm_params(c) + V      # transform, its norm, the per-token bias
    mlm += 0 if c.tie_embeddings else V * C     # the decoder, unless tied to the token table
    return {"base": pooler, "masked-lm": mlm, "pretraining": pooler + mlm + 2 * C + 2,
            "sequence-classification": pooler + C * c.num_labels + c.num_labels,
            "token-classification": C * c.num_labels + c.num_labels,
            "question-answering": 2 * C + 2, "multiple-choice": pooler + C + 1}[task]


def parameter_breakdown(model_or_config, task: str | None = None) -> dict:
    """Parameters by component: token/position/segment embeddings, attention, feed_forward, norms,
    heads (an untied LM head, the pooler, classifiers; buffers such as BART's final_logits_bias are
    not parameters), relative_position_bias, and `total`.

    A ModelConfig or preset name is counted analytically (no model built); a model is counted from
    its own parameters (tied weights once), so the two can be checked against each other. The seq2seq
    RNN is always counted from a model (built on the meta device: no memory); its recurrent cells
    and bridge are `recurrent`.
    """
    if isinstance(model_or_config, Model):
        return _count_model(model_or_config)
    c = as_config(model_or_config)
    task = task or default_task(c.family)
    if c.family == "seq2seq_rnn":
        with torch.device("meta"):
            return _count_model(build(c, task=task))
    C, L = c.d_model, c.n_layer
    out = dict.fromkeys(COMPONENTS, 0)
    stacks = 2 if c.family in ENCODER_DECODER else 1          # each stack has its own embeddings module
    out["token_embeddings"] = c.vocab_size * C                # one table, shared by the stacks
    if c.positions == "learned":
        out["position_embeddings"] = stacks * (c.max_position + c.position_offset) * C
    out["segment_embeddings"] = c.type_vocab_size * C
    per_stack_norms = int(c.embedding_norm) + int(c.final_norm)
    untied_head = 0 if c.tie_embeddings else c.vocab_size * C
    if c.family in DECODER_ONLY:
        out["attention"] = L * _attention_params(c)
        out["feed_forward"] = L * _ffn_params(c)
        out["norms"] = (2 * L + per_stack_norms) * _norm_params(c)
        lm_bias = c.vocab_size if c.lm_head_bias else 0       # CTRL's trained bias on the logits
        out["heads"] = untied_head + lm_bias if task == "lm" else C * c.num_labels
    elif c.family == "bert":
        out["attention"] = L * _attention_params(c)
        out["feed_forward"] = L * _ffn_params(c)
        out["norms"] = (2 * L + per_stack_norms) * _norm_params(c)
        out["heads"] = _bert_head_params(c, task)
    elif c.family in ENCODER_DECODER:
        Ld = c.n_decoder_layer
        if c.positions == "relative":                         # one bias table per stack (T5, §2.1)
            out["relative_position_bias"] = stacks * c.relative_buckets * c.n_head
        out["attention"] = (L + 2 * Ld) * _attention_params(c)  # decoder blocks: self + cross
        out["feed_forward"] = (L + Ld) * _ffn_params(c)
        out["norms"] = (2 * L + 3 * Ld + stacks * per_stack_norms) * _norm_params(c)
        out["heads"] = untied_head
    else:
        raise ConfigError(f"no parameter count for family {c.family!r}")
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out


def _component(name: str) -> str:
    """The component a parameter of one of our models belongs to, by its module name."""
    leaf = name.rsplit(".", 2)
    if name.endswith(("shared.weight", "embed.tokens.weight")) or name in ("encoder.embed.weight",
                                                                            "target_embed.weight"):
        return "token_embeddings"
    if name.endswith("embed.positions.weight"):
        return "position_embeddings"
    if name.endswith("embed.segments.weight"):
        return "segment_embeddings"
    if "relative_bias" in name:
        return "relative_position_bias"
    if name.startswith(("lm_head", "score", "classifier", "qa_outputs", "nsp", "mlm")) or ".pooler." in name \
            or name.startswith("decoder.out."):
        return "heads"
    if "norm" in name or ".ln_f." in name or name.startswith("ln_f"):
        return "norms"
    if "attn." in name or ".attention." in name:
        return "attention"
    if ".ffn." in name:
        return "feed_forward"
    if ".rnn." in name or name.startswith("bridge."):
        return "recurrent"
    raise ConfigError(f"parameter {name!r} ({leaf[-1]}) belongs to no known component")


def _count_model(model: Model) -> dict:
    out = dict.fromkeys(COMPONENTS, 0)
    seen = set()
    for name, p in model.named_parameters():   # shared (tied) parameters are listed once
        if id(p) in seen:
            continue
        seen.add(id(p))
        key = _component(name)
        out[key] = out.get(key, 0) + p.numel()
    out["total"] = sum(v for k, v in out.items())
    return out


# ----------------------------------------------------------------------------- FLOPs

def _check_shape(c: ModelConfig, batch: int, seq: int, target_seq: int | None) -> None:
    for what, value in (("batch", batch), ("seq", seq), ("target_seq", target_seq)):
        if value is not None and value < 1:
            raise ConfigError(f"{what}={value} must be at least 1")
    if has_position_limit(c):
        longest = max(seq, target_seq or 0)
        if longest > c.max_position:
            raise ConfigError(f"a length of {longest} is beyond the model's context of {c.max_position} "
                              f"positions; choose seq <= {c.max_position}")


def has_position_limit(c: ModelConfig) -> bool:
    """GPT and BERT always have a table, LLaMA a trained context; encoder-decoders when their positions are
    learned or sinusoidal (T5's relative positions and the RNN have no limit)."""
    return c.family in (*DECODER_ONLY, "bert") or (c.family in ENCODER_DECODER
                                                   and c.positions in ("learned", "sinusoidal"))


def _attn_keys(T: int, causal: bool, causal_attention: str) -> float:
    """Keys a query is multiplied with, on average: T, or (T + 1) / 2 under the causal average."""
    if causal_attention not in ("average", "full"):
        raise ConfigError(f"causal_attention={causal_attention!r}; choose 'average' or 'full'")
    return (T + 1) / 2 if causal and causal_attention == "average" else T


def forward_flops(model_or_config, batch: int = 1, seq: int = 1024, target_seq: int | None = None,
                  causal_attention: str = "average") -> float | None:
    """Matmul FLOPs of one forward pass over `batch` sequences of `seq` tokens (encoder-decoders:
    `seq` source and `target_seq` target tokens), with the conventions of this module's docstring.
    None for the seq2seq RNN."""
    c = as_config(model_or_config)
    _check_shape(c, batch, seq, target_seq)
    if c.family == "seq2seq_rnn":
        return None
    C, inner, kv, V = c.d_model, c.n_head * c.d_head, c.kv_heads * c.d_head, c.vocab_size
    ffn = 2 * c.d_ff * C * (3 if c.activation.startswith("gated-") else 2)   # per token, one block
    proj = 2 * C * (2 * inner + 2 * kv)                                    # Q, K, V (GQA: KV heads), out
    attend = 4 * inner                                                     # QK^T + AV per token and key
    if c.family in DECODER_ONLY:
        T = seq
        per_token = c.n_layer * (proj + ffn + attend * _attn_keys(T, True, causal_attention)) + 2 * C * V
        return batch * T * per_token
    if c.family == "bert":
        T = seq
        per_token = c.n_layer * (proj + ffn + attend * T)
        return batch * (T * per_token + 2 * C * C)                          # + the pooler on [CLS]
    S, T = seq, target_seq or seq
    encoder = S * c.n_layer * (proj + ffn + attend * S)
    decoder = c.n_decoder_layer * (T * (proj + ffn + attend * _attn_keys(T, True, causal_attention))
                                   + T * (2 * 2 * C * inner + attend * S)   # cross: Q, out; scores over S
                                   + S * 2 * 2 * C * inner)                 # cross: K, V of the memory
    return batch * (encoder + decoder + T * 2 * C * V)


def tokens_counted(c: ModelConfig, seq: int, target_seq: int | None = None) -> int:
    """Tokens per sequence as the trainer counts them: source + target for encoder-decoders."""
    return seq + (target_seq or seq) if c.family in ENCODER_DECODER else seq


def flops_per_token(model_or_config, seq: int = 1024, target_seq: int | None = None,
                    causal_attention: str = "average", training: bool = False) -> float | None:
    """Forward FLOPs per token (x 3 with training=True: forward + backward, Kaplan et al. 2020)."""
    c = as_config(model_or_config)
    total = forward_flops(c, 1, seq, target_seq, causal_attention)
    if total is None:
        return None
    return (3 if training else 1) * total / tokens_counted(c, seq, target_seq)


def training_flops_per_token(model_or_config, seq: int = 1024, target_seq: int | None = None,
                             causal_attention: str = "average") -> float | None:
    """3 x the forward FLOPs per token: what MFU divides by (PaLM, Chowdhery et al. 2022, App. B)."""
    return flops_per_token(model_or_config, seq, target_seq, causal_attention, training=True)


# ----------------------------------------------------------------------------- memory

def kv_cache_bytes_per_token(model_or_config, dtype: str = "bf16") -> int:
    """Keys and values of every decoder layer: 2 x n_layer x n_kv_head x d_head x bytes per position
    (n_kv_head = n_head without grouped-query attention)."""
    c = as_config(model_or_config)
    if c.family == "bert" or c.family == "seq2seq_rnn":
        return 0
    layers = c.n_decoder_layer if c.family in ENCODER_DECODER else c.n_layer
    return 2 * layers * c.kv_heads * c.d_head * dtype_bytes(dtype)


def activation_bytes_per_token(model_or_config, seq: int, dtype: str = "bf16", fused_attention: bool = False,
                               target_seq: int | None = None) -> float:
    """Activations a forward pass keeps for the backward pass, per token, all layers, no recomputation.

    Korthikanti et al. 2022 (Eq. 1, §4.1) count per layer and token 34 h + 5 a s bytes for a 16-bit
    GPT block with d_ff = 4h: 16-bit tensors 2 (8h + 2 d_ff + 2 a s) plus 1-byte dropout masks
    (a s + 2h). We keep that split with e = bytes of `dtype` and the config's d_ff (a gated FFN keeps
    one more d_ff-wide tensor); `fused_attention` (flash / memory-efficient SDPA) drops the a s terms,
    which those kernels recompute. Encoder-decoders add a cross-attention per decoder layer
    (e (6h + 2 a S) + a S + h). The logits (e x vocab per position) are added once.
    """
    c = as_config(model_or_config)
    if c.family == "seq2seq_rnn":
        raise ConfigError("no activation-memory model for the seq2seq RNN")
    e, h, a = dtype_bytes(dtype), c.d_model, c.n_head
    d_ff = c.d_ff * (1.5 if c.activation.startswith("gated-") else 1)

    def layer(T: int) -> float:
        scores = 0 if fused_attention else e * 2 * a * T + a * T
        return e * (8 * h + 2 * d_ff) + 2 * h + scores

    def cross(S: int) -> float:
        return e * 6 * h + h + (0 if fused_attention else e * 2 * a * S + a * S)

    if c.family in ENCODER_DECODER:
        S, T = seq, target_seq or seq
        total = S * c.n_layer * layer(S) + T * c.n_decoder_layer * (layer(T) + cross(S)) + T * e * c.vocab_size
        return total / (S + T)
    logits = e * c.vocab_size if c.family in DECODER_ONLY else 0
    return c.n_layer * layer(seq) + logits


def memory(model_or_config, batch: int = 1, seq: int = 1024, dtype: str = "bf16",
           target_seq: int | None = None) -> dict:
    """Bytes of a training step with AdamW and of inference.

    Weights and gradients in `dtype`; AdamW keeps two fp32 moments, plus an fp32 master copy of the
    weights when `dtype` is not fp32 (mixed precision): 16 bytes per parameter either way (Rajbhandari
    et al. 2020, ZeRO §3.1). Activations: `activation_bytes_per_token` x batch x tokens.
    """
    c = as_config(model_or_config)
    n = parameter_breakdown(c)["total"]
    e = dtype_bytes(dtype)
    out = {"weights": n * e, "gradients": n * e,
           "optimizer": n * (8 + (4 if dtype != "fp32" else 0)),
           "kv_cache_per_token": kv_cache_bytes_per_token(c, dtype)}
    if c.kv_heads != c.n_head:   # what grouped-query attention saves: the same model with a K and V per head
        out["kv_cache_per_token_without_gqa"] = kv_cache_bytes_per_token(c.replace(n_kv_head=0), dtype)
    if c.family == "seq2seq_rnn":
        out["training_total"] = out["weights"] + out["gradients"] + out["optimizer"]
        return out
    _check_shape(c, batch, seq, target_seq)
    tokens = batch * tokens_counted(c, seq, target_seq)
    out["activations_per_token"] = activation_bytes_per_token(c, seq, dtype, False, target_seq)
    out["activations_per_token_fused_attention"] = activation_bytes_per_token(c, seq, dtype, True, target_seq)
    out["activations"] = out["activations_per_token"] * tokens
    out["kv_cache"] = out["kv_cache_per_token"] * batch * (target_seq or seq)
    if c.family in ENCODER_DECODER:   # the encoder output's keys and values, once per decoder layer
        out["cross_kv_cache"] = 2 * c.n_decoder_layer * c.n_head * c.d_head * e * batch * seq
    out["training_total"] = out["weights"] + out["gradients"] + out["optimizer"] + out["activations"]
    out["inference_total"] = out["weights"] + out["kv_cache"] + out.get("cross_kv_cache", 0)
    return out


# ----------------------------------------------------------------------------- operations (roofline)

@dataclass
class Op:
    """One operation of a layer: its FLOPs and the bytes it reads and writes at least once."""
    name: str
    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved (Williams et al. 2009, the roofline model)."""
        return self.flops / self.bytes if self.bytes else float("inf")


def _matmul(name: str, m: int, k: int, n: int, e: int) -> Op:
    """(m, k) @ (k, n): 2 m k n FLOPs; reads both operands, writes the result."""
    return Op(name, 2.0 * m * k * n, float(e * (m * k + k * n + m * n)))


def operations(model_or_config, batch: int = 1, seq: int = 1024, dtype: str = "bf16",
               phase: str = "training") -> list[Op]:
    """The matmuls of one block and the LM head, with FLOPs and bytes moved, for the roofline.

    phase "training": a forward pass over `batch` x `seq` tokens (the backward pass has the same
    shapes, transposed). phase "decode": one new token per sequence against a KV cache of `seq`
    positions. Per operation of one layer (times n_layer in the model), whole batch. Attention is
    the explicit path: scores Q K^T (written as a (T, S) matrix per head) and the weighted sum of V,
    the full square under a causal mask. Decoders of encoder-decoders add cross-attention over a
    source of `seq` tokens. Op names: qkv_projection, attention_scores, attention_weighted_sum,
    out_projection, [cross_q_projection, cross_kv_projection, cross_attention_scores,
    cross_attention_weighted_sum,] ffn_in, [ffn_gate,] ffn_out, lm_head.
    """
    c = as_config(model_or_config)
    if phase not in ("training", "decode"):
        raise ConfigError(f"phase={phase!r}; choose 'training' or 'decode'")
    if c.family == "seq2seq_rnn":
        raise ConfigError("no operation model for the seq2seq RNN; choose a Transformer family")
    if c.family == "bert" and phase == "decode":
        raise ConfigError("BERT is an encoder: it has no decoding step; use phase='training'")
    _check_shape(c, batch, seq, None)
    e = dtype_bytes(dtype)
    B, C, H, KV, D, F, V = batch, c.d_model, c.n_head, c.kv_heads, c.d_head, c.d_ff, c.vocab_size
    Tq = 1 if phase == "decode" else seq      # new positions per sequence
    S = seq                                   # keys per query
    M = B * Tq                                # rows of every projection
    # Under GQA the keys and values (KV heads) are read once for each group of H / KV query heads.
    ops = [_matmul("qkv_projection", M, C, (H + 2 * KV) * D, e),
           Op("attention_scores", 2.0 * B * H * Tq * S * D, float(e * B * (H * Tq * D + KV * S * D + H * Tq * S))),
           Op("attention_weighted_sum", 2.0 * B * H * Tq * S * D,
              float(e * B * (H * Tq * S + KV * S * D + H * Tq * D))),
           _matmul("out_projection", M, H * D, C, e)]
    if c.family in ENCODER_DECODER:
        ops += [_matmul("cross_q_projection", M, C, H * D, e)]
        if phase == "training":   # in decoding the encoder's K, V are computed once and cached
            ops += [_matmul("cross_kv_projection", B * S, C, 2 * H * D, e)]
        ops += [Op("cross_attention_scores", 2.0 * B * H * Tq * S * D, float(e * B * H * (Tq * D + S * D + Tq * S))),
                Op("cross_attention_weighted_sum", 2.0 * B * H * Tq * S * D,
                   float(e * B * H * (Tq * S + S * D + Tq * D)))]
    ops.append(_matmul("ffn_in", M, C, F, e))
    if c.activation.startswith("gated-"):
        ops.append(_matmul("ffn_gate", M, C, F, e))
    ops.append(_matmul("ffn_out", M, F, C, e))
    if c.family != "bert":
        ops.append(_matmul("lm_head", M, C, V, e))
    return ops
