"""Learning-rate schedules: pure functions of the step, so a resumed run needs no scheduler state.

`cosine` is GPT-2/GPT-3's schedule (Brown et al. 2020, App. B): linear warmup to the peak,
then cosine decay to `min_lr`. `noam` is the original Transformer's (Vaswani et al. 2017,
eq. 3), written with its peak as `lr` so the two share one set of settings.
"""
from __future__ import annotations

import math

from ..errors import ConfigError

SCHEDULES = ("cosine", "noam", "constant")


def cosine(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup: lr * (step + 1) / warmup_steps, so step warmup_steps - 1 is the first at the peak.
    Then cosine from lr down to min_lr at `decay_steps`, and min_lr after that.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)   # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def noam(step: int, lr: float, warmup_steps: int) -> float:
    """d_model^-0.5 * min(s^-0.5, s * warmup^-1.5) with s = step + 1, scaled so its peak (s = warmup) is lr."""
    s = step + 1
    warmup = max(1, warmup_steps)
    return lr * min(s / warmup, math.sqrt(warmup / s))


def learning_rate(step: int, config) -> float:
    """The rate a `TrainConfig` asks for at `step`; decay ends at `decay_steps` (0: at max_steps)."""
    if config.schedule == "cosine":
        decay_steps = config.decay_steps or config.max_steps
        return cosine(step, config.lr, config.min_lr, config.warmup_steps, decay_steps)
    if config.schedule == "noam":
        return noam(step, config.lr, config.warmup_steps)
    if config.schedule == "constant":
        return config.lr
    raise ConfigError(f"unknown schedule {config.schedule!r} in TrainConfig; choose one of {', '.join(SCHEDULES)}")
