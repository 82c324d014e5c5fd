"""The model families. `MODELS` maps (family, task) to the class that builds it."""
from __future__ import annotations

from ..config import ModelConfig, get_preset
from ..errors import ConfigError
from .bart import BART
from .base import DecodeState, Model, ModelOutput, causal_lm_loss
from .bert import BERT_TASKS
from .encoder_decoder import EncoderDecoder
from .gpt import GPT, GPTForSequenceClassification
from .seq2seq_rnn import Seq2SeqRNN
from .t5 import T5
from .transformer import Transformer

MODELS: dict[tuple[str, str], type[Model]] = {
    ("gpt", "lm"): GPT,
    ("gpt", "sequence-classification"): GPTForSequenceClassification,
    **{("bert", task): cls for task, cls in BERT_TASKS.items()},
    ("transformer", "seq2seq"): Transformer,
    ("seq2seq_rnn", "seq2seq"): Seq2SeqRNN,
    ("t5", "seq2seq"): T5,
    ("bart", "seq2seq"): BART,
}


def default_task(family: str) -> str:
    """The task a family's presets build: "lm" for decoder-only and BERT (its MLM is "masked-lm", but
    its bare encoder "base" is what a checkpoint without a head is), "seq2seq" for encoder-decoders."""
    tasks = [t for f, t in MODELS if f == family]
    return next((t for t in ("lm", "seq2seq") if t in tasks), tasks[0] if tasks else "lm")


def build(config: str | ModelConfig, task: str | None = None, **overrides) -> Model:
    """A freshly initialised model from a preset name or a `ModelConfig` (fields in `overrides` replace the
    preset's); task None is the family's default (`default_task`)."""
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


__all__ = ["MODELS", "build", "DecodeState", "EncoderDecoder", "Model", "ModelOutput", "causal_lm_loss", "GPT",
           "GPTForSequenceClassification", "Seq2SeqRNN", "Transformer", "BART"]
