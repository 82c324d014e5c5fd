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
from ..layers.positions import (
    LearnedPositions,
    RelativePositionBias,
    RotaryPositions,
    SinusoidalPositions,
    sinusoidal_table,
)
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


# --- a model's own encoding, as the page shows it -----------------------------------------------------

def _first(model, kind: type):
    """The model's first module of a type, the encoder's before the decoder's (module order), and its name."""
    for name, module in model.named_modules():
        if isinstance(module, kind):
            return name, module
    return None, None


@torch.inference_mode()
def positional_encoding(model, n_positions: int = 128, max_dims: int = 256) -> dict:
    """What tells `model` where a token is, as numbers to draw: a dict with `kind` (the config's positions),
    `caption` (one sentence on what the table is), `table` (a 2-D tensor), its `rows` / `columns` labels
    (what the axes mean), `module` (where in the model the table lives) and, per kind:

    - sinusoidal: PE (positions x dims), the fixed table the model adds to its embeddings;
    - learned: the trained table (positions x dims) read from the weights (BART's unused offset rows skipped);
    - rotary: cos(m theta_i) (positions x pairs) from the model's own inverse frequencies, plus
      `frequencies` theta_i (pairs) and `base`;
    - relative: T5's learned bias (heads x distance buckets) with `bidirectional`, `num_buckets`,
      `max_distance`: the scalar added to a head's attention score for a key in that bucket;
    - none: no table (`table` None).

    At most `n_positions` positions (and the model's max_position) and `max_dims` dimensions are kept.
    """
    if int(n_positions) < 1:
        raise ConfigError(f"n_positions must be >= 1, got {n_positions}")
    config = model.config
    P = int(n_positions) if not config.max_position else min(int(n_positions), int(config.max_position))
    kind = config.positions
    out = {"kind": kind, "table": None, "rows": None, "columns": None, "module": None, "n_positions": P}
    if kind == "sinusoidal":
        name, module = _first(model, SinusoidalPositions)
        interleaved = config.sinusoidal_layout == "interleaved"
        table = module.table[:P] if module is not None else sinusoidal_table(P, config.d_model, interleaved)
        layout = "sin and cos interleaved" if interleaved else "all sines, then all cosines"
        out.update(caption=f"Sinusoidal positions (Vaswani et al. 2017, §3.5): a fixed table PE(pos, i) added to the "
                           f"token embeddings ({layout}); the frequency falls with the dimension i "
                           f"(d_model {config.d_model}).",
                   rows="position", columns="dimension i", d_model=config.d_model, layout=config.sinusoidal_layout)
    elif kind == "learned":
        name, module = _first(model, LearnedPositions)
        if module is None:
            raise ConfigError(f"{type(model).__name__} says positions='learned' but has no LearnedPositions table")
        table = module.weight[module.offset: module.offset + P]
        out.update(caption=f"Learned positions: a trained table, one {config.d_model}-dim vector per position, added "
                           "to the token embeddings (GPT, BERT, BART).",
                   rows="position", columns="dimension i", d_model=config.d_model)
    elif kind == "rotary":
        name, module = _first(model, RotaryPositions)
        inv_freq = module.inv_freq.float() if module is not None else rotary_frequencies(config.d_head,
                                                                                        config.rope_theta)
        table = (torch.arange(P, dtype=torch.float32)[:, None] * inv_freq[None]).cos()      # (P, D/2)
        out.update(caption=f"Rotary positions (Su et al. 2021): channel pair i of a query or key at position m turns "
                           f"by m θ_i, θ_i = {config.rope_theta:g}^(-2i/{config.d_head}); shown: cos(m θ_i).",
                   rows="position m", columns="channel pair i", frequencies=inv_freq.clone(),
                   base=float(config.rope_theta), d_head=int(config.d_head))
    elif kind == "relative":
        name, module = _first(model, RelativePositionBias)
        if module is None:
            raise ConfigError(f"{type(model).__name__} says positions='relative' but has no RelativePositionBias")
        table = module.bias.weight.T                                                        # (H, buckets)
        direction = ("the first half of the buckets for keys before the query, the second half after"
                     if module.bidirectional else "keys at or before the query only")
        out.update(caption=f"Relative positions (T5, Raffel et al. 2020): a learned scalar per head and distance "
                           f"bucket added to the attention scores ({direction}; exact up to "
                           f"{module.num_buckets // (4 if module.bidirectional else 2)}, log-spaced to "
                           f"{module.max_distance}).",
                   rows="head", columns="relative-distance bucket", bidirectional=bool(module.bidirectional),
                   num_buckets=int(module.num_buckets), max_distance=int(module.max_distance))
    else:
        out.update(caption="No position encoding: the model sees its tokens as a set, or learns order otherwise "
                           "(a recurrent network reads them in order).")
        return out
    out["table"] = table[:, : int(max_dims)].detach().float().cpu()
    out["module"] = name
    return out
