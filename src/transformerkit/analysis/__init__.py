"""What a model is and costs. `describe` now; parameter/FLOP breakdowns, roofline and MFU build on it."""
from __future__ import annotations

from pathlib import Path

import torch

from ..interop import load_pretrained
from ..models import Model, build


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
