"""Random values in every saved tensor of a model, for parity tests against `transformers`.

A default initialisation sets every bias to 0 and every norm to the identity (gain 1, shift 0), so a
bias or norm that a converter maps to the wrong place, or a head that forgets its bias, still gives
equal logits. Drawing every tensor at random makes each of them count."""
from __future__ import annotations

import re

import torch


def is_norm_gain(name: str, tensor: torch.Tensor) -> bool:
    """A LayerNorm / RMSNorm gain (1-D `...norm....weight`, `ln_...weight`): drawn around 1, not 0."""
    lowered = name.lower()
    return tensor.dim() == 1 and lowered.endswith("weight") and ("norm" in lowered or "ln" in lowered.split("."))


def randomize_(model: torch.nn.Module, std: float = 0.1, seed: int = 0, skip: str | None = None,
               only_1d: bool = False) -> torch.nn.Module:
    """Draw every floating tensor of `model.state_dict()` (parameters and buffers such as BART's and
    Marian's `final_logits_bias`) from N(0, std^2), norm gains from N(1, std^2). Tied tensors keep
    their tie (each storage is drawn once). `skip`: a regex of names to leave alone (e.g. a fixed
    sinusoidal table that is not a learned weight). `only_1d`: biases and norms only, for a model
    whose matrices are already random (our models' init) and whose scale a test depends on."""
    g = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point() or (skip and re.search(skip, name)):
                continue
            if only_1d and tensor.squeeze().dim() > 1:
                continue
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            noise = torch.randn(tensor.shape, generator=g) * std
            tensor.copy_(1 + noise if is_norm_gain(name, tensor) else noise)
    return model


def constant_tensors(model: torch.nn.Module, skip: str | None = None) -> list[str]:
    """Names of floating tensors that still hold a constant (all 0 or all 1): what a test forgot to draw."""
    out = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.numel() > 1 and not (skip and re.search(skip, name)):
            if bool((tensor == tensor.flatten()[0]).all()):
                out.append(name)
    return out
