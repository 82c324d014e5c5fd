"""The model families. `MODELS` maps (family, task) to the class that builds it."""
from __future__ import annotations

from ..config import ModelConfig, get_preset
from ..errors import ConfigError
from .base import DecodeState, Model, ModelOutput, causal_lm_loss
from .bert import BERT_TASKS
from .gpt import GPT, GPTForSequenceClassification

MODELS: dict[tuple[str, str], type[Model]] = {
    ("gpt", "lm"): GPT,
    ("gpt", "sequence-classification"): GPTForSequenceClassification,
    **{("bert", task): cls for task, cls in BERT_TASKS.items()},
}


def build(config: str | ModelConfig, task: str = "lm", **overrides) -> Model:
    """A freshly initialised model from a preset name or a `ModelConfig` (fields in `overrides` replace the preset's)."""
    if isinstance(config, str):
        config = get_preset(config)
    if overrides:
        config = config.replace(**overrides)
    try:
        cls = MODELS[(config.family, task)]
    except KeyError:
        tasks = sorted(t for f, t in MODELS if f == config.family)
        raise ConfigError(f"no {task!r} model for family {config.family!r}; "
                          f"available tasks: {', '.join(tasks) or 'none yet'}") from None
    return cls(config)


__all__ = ["MODELS", "build", "DecodeState", "Model", "ModelOutput", "causal_lm_loss", "GPT",
           "GPTForSequenceClassification"]
