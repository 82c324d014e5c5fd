"""What a model is and costs: `describe`, parameter and FLOP breakdowns, memory, the operations the
roofline plots (costs.py), hardware peaks and MFU (hardware.py), and `analyze`, which puts them together."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..interop import load_pretrained
from ..models import PRESETS, Model, build, default_task
from .costs import (
    DTYPE_BYTES,
    Op,
    activation_bytes_per_token,
    flops_per_token,
    forward_flops,
    has_position_limit,
    kv_cache_bytes_per_token,
    memory,
    operations,
    parameter_breakdown,
    training_flops_per_token,
)
from .hardware import HARDWARE, lookup_hardware, measure_hardware, mfu, peak_flops


def describe(model: Model | str) -> dict:
    """Config and parameter counts of a model, a preset name (built on the meta device: no memory,
    instant even for gpt3-175b) or a checkpoint folder."""
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        if Path(model).is_dir():
            model = load_pretrained(model)
        else:
            with torch.device("meta"):
                model = build(model)
    return {"name": name, "class": type(model).__name__, "parameters": model.num_parameters(),
            "parameters_without_embeddings": model.num_parameters(exclude_embeddings=True),
            "config": model.config.to_dict()}


def list_presets() -> list[dict]:
    """Every preset: name, family, default task and parameter count (each built on the meta device)."""
    rows = []
    for name in PRESETS:
        config = PRESETS[name]()
        with torch.device("meta"):
            model = build(config)
        rows.append({"name": name, "family": config.family, "task": default_task(config.family),
                     "parameters": model.num_parameters()})
    return rows


def _resolve(model_or_preset) -> tuple[str, ModelConfig, Model | None]:
    """(name, config, model or None) from a model, a ModelConfig, a preset name or a checkpoint folder."""
    if isinstance(model_or_preset, Model):
        return type(model_or_preset).__name__, model_or_preset.config, model_or_preset
    if isinstance(model_or_preset, ModelConfig):
        return model_or_preset.family, model_or_preset, None
    if isinstance(model_or_preset, (str, Path)):
        name = str(model_or_preset)
        if name in PRESETS:
            return name, PRESETS[name](), None
        if Path(name).is_dir():
            with torch.device("meta"):   # the config is all we need: no weights in memory
                model = load_pretrained(name)
            return name, model.config, model
        raise ConfigError(f"unknown model {name!r}: not a preset and not a checkpoint folder; "
                          f"give a folder that exists or one of the presets: {', '.join(sorted(PRESETS))}")
    raise ConfigError(f"cannot analyze a {type(model_or_preset).__name__}; give a preset name, a checkpoint "
                      "folder, a ModelConfig or a model")


def analyze(model_or_preset, batch: int = 1, seq: int | None = None, dtype: str = "bf16",
            target_seq: int | None = None) -> dict:
    """Parameters by component, FLOPs per token (forward and training, with the causal average and
    with the full square), memory for training and inference, and the operations of a training step
    and of one decoding step, for `batch` sequences of `seq` tokens (default: the model's context,
    512 without a position table). Encoder-decoders: `seq` source and `target_seq` target tokens.
    """
    name, config, model = _resolve(model_or_preset)
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    if seq is None:
        seq = config.max_position if has_position_limit(config) else 512
    for what, value in (("batch", batch), ("seq", seq), ("target_seq", target_seq)):
        if value is not None and value < 1:
            raise ConfigError(f"{what}={value} must be at least 1")
    if has_position_limit(config) and max(seq, target_seq or 0) > config.max_position:
        raise ConfigError(f"seq={max(seq, target_seq or 0)} is beyond {name}'s context of "
                          f"{config.max_position} positions; choose seq <= {config.max_position}")
    params = parameter_breakdown(model if model is not None else config)
    result = {"name": name, "family": config.family, "batch": batch, "seq": seq, "dtype": dtype,
              "parameters": params}
    if config.family in ("transformer", "t5", "bart"):
        result["target_seq"] = target_seq or seq
    if config.family == "seq2seq_rnn":
        result["flops_per_token"] = None
        result["memory"] = memory(config, batch, seq, dtype)
        result["operations"] = {}
        return result
    result["flops_per_token"] = {
        "forward": flops_per_token(config, seq, target_seq),
        "training": training_flops_per_token(config, seq, target_seq),
        "forward_full_attention": flops_per_token(config, seq, target_seq, causal_attention="full"),
        "training_full_attention": training_flops_per_token(config, seq, target_seq, causal_attention="full"),
    }
    if config.family in ("gpt", "llama", "bert"):   # Kaplan et al. 2020's C = 6N, N without embeddings (one stack)
        result["flops_per_token"]["kaplan_6n"] = 6 * (
            params["total"] - params["token_embeddings"] - params["position_embeddings"]
            - params["segment_embeddings"])
    result["memory"] = memory(config, batch, seq, dtype, target_seq)
    result["operations"] = {"training": operations(config, batch, seq, dtype, "training")}
    if config.family != "bert":
        result["operations"]["decode"] = operations(config, batch, seq, dtype, "decode")
    return result


__all__ = ["describe", "analyze", "parameter_breakdown", "forward_flops", "flops_per_token",
           "training_flops_per_token", "memory", "activation_bytes_per_token", "kv_cache_bytes_per_token",
           "operations", "Op", "HARDWARE", "lookup_hardware", "measure_hardware", "peak_flops", "mfu", "flops_share"]


ATTENTION_OPS = ("attention_scores", "attention_weighted_sum")    # also their cross_ forms
FFN_OPS = ("ffn_in", "ffn_gate", "ffn_out")


def flops_share(model_or_preset, seqs) -> list[tuple[int, float, float, float]]:
    """(seq, attention, feed-forward, other) FLOPs of one layer's training step at each length: the
    score and weighted-sum products grow with seq^2, the projections and feed-forward with seq, so
    attention's share grows with the context (what `viz.plot_flops_share` draws)."""
    name, config, model = _resolve(model_or_preset)
    points = []
    for seq in seqs:
        ops = operations(model if model is not None else config, 1, seq, "bf16", "training")
        attention = sum(o.flops for o in ops if o.name.endswith(ATTENTION_OPS))
        ffn = sum(o.flops for o in ops if o.name in FFN_OPS)
        other = sum(o.flops for o in ops if o.name != "lm_head") - attention - ffn
        points.append((seq, attention, ffn, other))
    return points
