"""The sinusoidal position encoding (Vaswani et al. 2017, §3.5) and why it encodes distance:
PE(p) . PE(q) = sum_i cos((p - q) w_i) depends only on p - q and is largest at p = q, so the
similarity matrix PE PE^T is a band around its diagonal."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from ..layers.positions import sinusoidal_table
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
