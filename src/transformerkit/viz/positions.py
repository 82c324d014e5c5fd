"""The sinusoidal position encoding (Vaswani et al. 2017, §3.5) and why it encodes distance:
PE(p) . PE(q) = sum_i cos((p - q) w_i) depends only on p - q and is largest at p = q, so the
similarity matrix PE PE^T is a band around its diagonal.

Rotary positions (Su et al. 2021, RoPE; LLaMA): channel pair i of a query or key at position m is
turned by m theta_i, theta_i = base^(-2i/d_head): fast pairs in front, slow ones at the back, and a
larger base (SmolLM2's 100,000, Llama 3's 500,000) slows all but the first."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import ConfigError
from ..layers.positions import RotaryPositions, sinusoidal_table
from .figures import pyplot, save_figure


def _check(d_model: int, n_positions: int) -> None:
    if int(d_model) < 2 or int(d_model) % 2:
        raise ConfigError(f"d_model must be an even number >= 2 (sin/cos pairs), got {d_model}")
    if int(n_positions) < 2:
        raise ConfigError(f"n_positions must be >= 2, got {n_positions}")
    if int(n_positions) > 8192:
        raise ConfigError(f"n_positions={n_positions} makes a {n_positions}^2 similarity picture; use 8192 or fewer")


def position_similarity(d_model: int = 128, n_positions: int = 256) -> torch.Tensor:
    """PE PE^T (n_positions, n_positions): the dot product of every pair of position encodings.
    Its diagonal is d_model / 2 (each sin/cos pair has norm 1), the maximum of every row."""
    _check(d_model, n_positions)
    table = sinusoidal_table(int(n_positions), int(d_model)).double()               # (P, C)
    return (table @ table.T).float()                                                # (P, P)


def plot_positions(path, d_model: int = 128, n_positions: int = 256, title: str = "") -> list[Path]:
    """Two panels: the encoding matrix (positions down, dimensions across) and PE PE^T.
    Writes PATH.png and PATH.svg; returns the files."""
    _check(d_model, n_positions)
    table = sinusoidal_table(int(n_positions), int(d_model))                        # (P, C)
    similarity = position_similarity(d_model, n_positions)                          # (P, P)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 5.4))
    im = left.imshow(table.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    left.set_xlabel("dimension i (even: sin, odd: cos; frequency falls with i)")
    left.set_ylabel("position")
    left.set_title(f"sinusoidal encoding PE ({n_positions} x {d_model})", fontsize=10)
    fig.colorbar(im, ax=left, fraction=0.046, label="PE(pos, i)")
    im = right.imshow(similarity.numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
    right.set_xlabel("position q")
    right.set_ylabel("position p")
    right.set_title(f"similarity PE PE$^T$ (max {d_model // 2} on the diagonal)", fontsize=10)
    fig.colorbar(im, ax=right, fraction=0.046, label="PE(p) · PE(q)")
    fig.suptitle(title or "Sinusoidal positions (Vaswani et al. 2017, §3.5): nearby positions are similar",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


# --- rotary positions (RoPE) ------------------------------------------------------------------------

def _check_rotary(d_head: int, base: float, n_positions: int = 2) -> None:
    if int(d_head) < 2 or int(d_head) % 2:
        raise ConfigError(f"d_head must be an even number >= 2 (channels rotate in pairs), got {d_head}")
    if not float(base) > 1:
        raise ConfigError(f"the rotary base must be > 1 (LLaMA 2: 10000, SmolLM2: 100000), got {base}")
    if int(n_positions) < 2:
        raise ConfigError(f"n_positions must be >= 2, got {n_positions}")


def rotary_frequencies(d_head: int = 64, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i / d_head), i = 0 .. d_head/2 - 1 (Su et al. 2021, RoFormer): the angle, in radians
    per position, by which channel pair i turns. Read from the model's own `RotaryPositions` buffer (fp32)."""
    _check_rotary(d_head, base)
    return RotaryPositions(int(d_head), float(base)).inv_freq.clone()                  # (D/2,)


def rotary_angles(d_head: int = 64, n_positions: int = 256, base: float = 10000.0) -> torch.Tensor:
    """cos(m theta_i) for positions m = 0 .. n_positions-1 and pairs i (n_positions, d_head/2): the cosine
    `RotaryPositions` hands to `apply_rotary` (its two halves are the same numbers; this is one of them)."""
    _check_rotary(d_head, base, n_positions)
    cos, _ = RotaryPositions(int(d_head), float(base))(torch.arange(int(n_positions))[None], torch.float32)
    return cos[0, 0, :, : int(d_head) // 2]                                           # (P, D/2)


def plot_rotary(path, d_head: int = 64, bases=(10000.0, 100000.0), n_positions: int = 256, context: int = 8192,
                title: str = "") -> list[Path]:
    """Left: theta_i against pair i on a log scale, one line per base, with the angle 2 pi / context below
    which a pair turns less than once over the context. Then one heat map of cos(m theta_i) per base
    (positions m down, pairs i across). Writes PATH.png and PATH.svg; returns the files."""
    bases = [float(b) for b in bases]
    if not bases:
        raise ConfigError("plot_rotary needs at least one base, e.g. bases=(10000, 100000)")
    if int(context) < 2:
        raise ConfigError(f"context must be >= 2 tokens, got {context}")
    for base in bases:
        _check_rotary(d_head, base, n_positions)
    half, slow = int(d_head) // 2, 2 * math.pi / int(context)
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(bases), figsize=(5.2 + 4.6 * len(bases), 5.2),
                             gridspec_kw={"width_ratios": [1.15] + [1] * len(bases)})
    left = axes[0]
    for k, base in enumerate(bases):
        theta = rotary_frequencies(d_head, base)
        turning = int((theta < slow).sum())
        left.plot(range(half), theta.numpy(), marker="o", ms=3, color=f"C{k}",
                  label=f"base {base:,.0f}: {turning} of {half} pairs turn < once in {context:,} tokens")
    left.axhline(slow, color="gray", ls="--", lw=1)
    left.annotate(f"2π / {context:,} (one turn per context)", (0, slow), textcoords="offset points", xytext=(2, 4),
                  fontsize=8, color="gray")
    left.set_yscale("log")
    left.set_xlabel("channel pair i")
    left.set_ylabel("θ$_i$ = base$^{-2i/d}$ (radians per position)")
    left.set_title(f"rotary frequencies, d_head = {d_head}", fontsize=10)
    left.grid(which="both", alpha=0.25)
    left.legend(loc="lower left", fontsize=7.5)
    for ax, base in zip(axes[1:], bases):
        im = ax.imshow(rotary_angles(d_head, n_positions, base).numpy(), cmap="RdBu_r", vmin=-1, vmax=1,
                       aspect="auto", interpolation="nearest")
        ax.set_xlabel("channel pair i (slower with i)")
        ax.set_ylabel("position m")
        ax.set_title(f"cos(m θ$_i$), base {base:,.0f}", fontsize=10)
    fig.colorbar(im, ax=axes[-1], fraction=0.046, label="cos(m θ$_i$)")
    fig.suptitle(title or "Rotary positions (Su et al. 2021): pair i of a query or key turns by m θ$_i$ at "
                 "position m", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
