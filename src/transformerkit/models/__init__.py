"""The model families, their presets, and `build`.

`MODELS` maps (family, task) to the class that builds it, from what each class declares
(`Model.family`, `Model.task`); `PRESETS` gathers each family's presets from its own file.
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError
from . import bart, bert, ctrl, gpt, llama, seq2seq_rnn, t5, transformer
from .bart import BART
from .base import IGNORE_INDEX, DecodeState, Model, ModelOutput, causal_lm_loss
from .encoder_decoder import EncoderDecoder
from .gpt import GPT, GPTForSequenceClassification
from .llama import Llama, LlamaForSequenceClassification
from .seq2seq_rnn import Seq2SeqRNN
from .t5 import T5
from .transformer import Transformer

CLASSES: tuple[type[Model], ...] = (GPT, GPTForSequenceClassification, Llama, LlamaForSequenceClassification,
                                    *bert.MODELS, Transformer, T5, BART, Seq2SeqRNN)
MODELS: dict[tuple[str, str], type[Model]] = {(cls.family, cls.task): cls for cls in CLASSES}

# Every preset by name: one table per family, in that family's file.
PRESETS: dict[str, callable] = {**gpt.PRESETS, **ctrl.PRESETS, **llama.PRESETS, **bert.PRESETS, **transformer.PRESETS,
                                **t5.PRESETS, **bart.PRESETS, **seq2seq_rnn.PRESETS}


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of a preset's config."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))} "
                          "(tkit info --list)") from None


def default_task(family: str) -> str:
    """The task a family's presets build: "lm" for decoder-only and BERT (its MLM is "masked-lm", but
    its bare encoder "base" is what a checkpoint without a head is), "seq2seq" for encoder-decoders."""
    tasks = [t for f, t in MODELS if f == family]
    return next((t for t in ("lm", "seq2seq") if t in tasks), tasks[0] if tasks else "lm")


def build(config: str | ModelConfig, task: str | None = None, **overrides) -> Model:
    """A freshly initialised model from a preset name or a `ModelConfig` (fields in `overrides` replace the
    preset's); task None is the family's default (`default_task`). A config field the family cannot
    honour is a ConfigError naming the field (`Model.check_config`)."""
    if isinstance(config, str):
        config = get_preset(config)
    if overrides:
        config = config.replace(**overrides)
    task = task or default_task(config.family)
    try:
        cls = MODELS[(config.family, task)]
    except KeyError:
        tasks = sorted(t for f, t in MODELS if f == config.family)
        raise ConfigError(f"no {task!r} model for family {config.family!r}; "
                          f"available tasks: {', '.join(tasks) or 'none yet'}") from None
    return cls(config)


__all__ = ["MODELS", "PRESETS", "IGNORE_INDEX", "build", "get_preset", "DecodeState", "EncoderDecoder", "Model",
           "ModelOutput", "causal_lm_loss", "GPT", "GPTForSequenceClassification", "Llama",
           "LlamaForSequenceClassification", "Seq2SeqRNN", "Transformer", "T5",
           "BART"]
