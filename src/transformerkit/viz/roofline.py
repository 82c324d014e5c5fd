"""The roofline model (Williams, Waterman & Patterson 2009): an operation doing F FLOPs on B bytes
of memory traffic has arithmetic intensity I = F / B and can run at most at
min(peak FLOP/s, bandwidth x I). Left of the ridge point I* = peak / bandwidth it is memory bound,
right of it compute bound. Decoding one token at a time (matrix-vector products) sits far left;
training and prefill (matrix-matrix products) sit right."""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError, DataError
from .figures import pyplot, save_figure


def _peak(hardware: Mapping, dtype: str) -> tuple[float, float]:
    """(peak FLOP/s for dtype, bandwidth bytes/s) of a hardware dict, checked."""
    name = hardware.get("name", "hardware") if isinstance(hardware, Mapping) else "hardware"
    if not isinstance(hardware, Mapping) or not isinstance(hardware.get("flops"), Mapping) \
            or "bandwidth" not in hardware:
        raise ConfigError(f"{name}: a hardware description is a dict {{'name': str, 'flops': {{'bf16': FLOP/s, ...}}, "
                          "'bandwidth': bytes/s}}")
    if dtype not in hardware["flops"]:
        raise ConfigError(f"{name} has no {dtype!r} peak; choose one of {', '.join(sorted(hardware['flops']))}")
    peak, bandwidth = float(hardware["flops"][dtype]), float(hardware["bandwidth"])
    if not (peak > 0 and bandwidth > 0 and math.isfinite(peak) and math.isfinite(bandwidth)):
        raise ConfigError(f"{name}: peak FLOP/s and bandwidth must be positive numbers, got {peak} and {bandwidth}")
    return peak, bandwidth


def ridge_point(hardware: Mapping, dtype: str = "bf16") -> float:
    """The intensity (FLOP/byte) where the memory roof meets the compute roof: peak / bandwidth."""
    peak, bandwidth = _peak(hardware, dtype)
    return peak / bandwidth


def _intensity(op) -> float:
    flops, nbytes = float(op.flops), float(op.bytes)
    if flops <= 0 or nbytes <= 0:
        raise DataError(f"op {op.name!r}: FLOPs and bytes must be positive to place it on a roofline, "
                        f"got {flops:g} FLOPs and {nbytes:g} bytes")
    return float(getattr(op, "intensity", flops / nbytes))


def roofline_points(ops, hardware: Mapping, dtype: str = "bf16") -> list[dict]:
    """Each op placed under the roof: {"name", "intensity", "attainable" (FLOP/s), "bound" ("memory" | "compute"),
    "time" (seconds at the attainable rate)}."""
    peak, bandwidth = _peak(hardware, dtype)
    ridge = peak / bandwidth
    points = []
    for op in ops:
        intensity = _intensity(op)
        attainable = min(peak, bandwidth * intensity)
        points.append({"name": op.name, "intensity": intensity, "attainable": attainable,
                       "bound": "memory" if intensity < ridge else "compute",
                       "time": float(op.flops) / attainable})
    return points


def classify(op, hardware: Mapping, dtype: str = "bf16") -> str:
    """"memory" if the op's intensity is left of the ridge point, else "compute"."""
    return roofline_points([op], hardware, dtype)[0]["bound"]


_MARKERS = ["o", "s", "^", "D", "v", "P"]
_COLORS = {"memory": "tab:blue", "compute": "tab:red"}


def plot_roofline(ops, hardware: Mapping, path, title: str = "", dtype: str = "bf16") -> list[Path]:
    """Log-log roofline of `hardware` (its `dtype` compute roof) with `ops` placed under it and labelled.

    `ops`: a list of objects with .name, .flops, .bytes (and .intensity), or a dict
    {set name: list} — e.g. {"training": [...], "decoding": [...]} — drawn with one marker per set.
    Memory-bound ops (left of the ridge) are blue, compute-bound ones red. Writes PATH.png and PATH.svg.
    """
    sets = dict(ops) if isinstance(ops, Mapping) else {"": list(ops)}
    if not any(len(v) for v in sets.values()):
        raise DataError("plot_roofline got no ops; give at least one op with .name, .flops and .bytes")
    peak, bandwidth = _peak(hardware, dtype)
    ridge = peak / bandwidth
    placed = {label: roofline_points(group, hardware, dtype) for label, group in sets.items()}
    intensities = [p["intensity"] for group in placed.values() for p in group] + [ridge]
    lo = 10 ** math.floor(math.log10(min(intensities)) - 0.5)
    hi = 10 ** math.ceil(math.log10(max(intensities)) + 0.5)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 6.2))
    xs = [lo * (hi / lo) ** (i / 400) for i in range(401)]
    ax.plot([x for x in xs if x < ridge], [bandwidth * x for x in xs if x < ridge], color="tab:blue", lw=2.5,
            alpha=0.6, zorder=2, label=f"memory roof: {bandwidth / 1e12:.3g} TB/s x intensity")
    ax.plot([x for x in xs if x >= ridge], [peak] * sum(x >= ridge for x in xs), color="tab:red", lw=2.5,
            alpha=0.6, zorder=2, label=f"compute roof: {peak / 1e12:.4g} TFLOP/s ({dtype})")
    ax.axvline(ridge, color="gray", ls="--", lw=1)
    ax.plot([ridge], [peak], marker="*", ms=14, color="gold", mec="black", zorder=4)
    ax.annotate(f"ridge {ridge:.0f} FLOP/byte", (ridge, peak), textcoords="offset points", xytext=(8, -16),
                fontsize=9)
    ax.text(lo * 1.3, peak * 1.6, "memory bound  ←", color="tab:blue", fontsize=9, va="bottom")
    ax.text(ridge * 1.3, peak / 2.5, "→  compute bound", color="tab:red", fontsize=9, va="top")
    for k, (label, group) in enumerate(placed.items()):
        marker = _MARKERS[k % len(_MARKERS)]
        for p in group:
            ax.scatter(p["intensity"], p["attainable"], marker=marker, s=60, color=_COLORS[p["bound"]],
                       edgecolors="black", linewidths=0.6, zorder=5)
        # Ops at (nearly) the same place share one label, one name a line, so none is written over another.
        for (x, y), names in _nearby(group).items():
            ax.annotate("\n".join(names), (x, y), textcoords="offset points", xytext=(6, -6 if k % 2 else 6),
                        va="top" if k % 2 else "bottom", fontsize=7.5, zorder=6)
        if label:
            ax.scatter([], [], marker=marker, s=60, color="lightgray", edgecolors="black", label=label)
    ax.scatter([], [], marker="o", s=40, color=_COLORS["memory"], label="memory bound")
    ax.scatter([], [], marker="o", s=40, color=_COLORS["compute"], label="compute bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    bottom = min(min((p["attainable"] for g in placed.values() for p in g), default=peak), bandwidth * lo)
    ax.set_ylim(bottom / 3, peak * 5)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.grid(which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"roofline: {hardware.get('name', 'hardware')} ({dtype})", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def _nearby(points: list[dict], within: float = 0.15) -> dict[tuple[float, float], list[str]]:
    """Names of points grouped by place: a point within `within` (log10 units) of a group's first joins it."""
    groups: dict[tuple[float, float], list[str]] = {}
    for p in points:
        x, y = p["intensity"], p["attainable"]
        home = next((key for key in groups if abs(math.log10(key[0] / x)) < within
                     and abs(math.log10(key[1] / y)) < within), (x, y))
        groups.setdefault(home, []).append(p["name"])
    return groups


def plot_flops_share(points, path, title: str = "") -> list[Path]:
    """The share of FLOPs in attention, feed-forward and the rest as the sequence grows.

    `points`: (seq_len, attention_flops, ffn_flops, other_flops) tuples. Attention's score and value
    products grow as T^2 while the projections and FFN grow as T, so attention's share rises with T.
    Writes PATH.png and PATH.svg; returns the files.
    """
    rows = sorted((float(t), float(a), float(f), float(o)) for t, a, f, o in points)
    if not rows:
        raise DataError("plot_flops_share got no points; give (seq_len, attention_flops, ffn_flops, other_flops) rows")
    for t, a, f, o in rows:
        if t <= 0 or min(a, f, o) < 0 or a + f + o <= 0:
            raise DataError(f"bad FLOP share row at seq_len {t:g}: lengths must be positive and FLOPs non-negative "
                            "with a positive total")
    seq = [r[0] for r in rows]
    share = [[100 * r[i] / (r[1] + r[2] + r[3]) for r in rows] for i in (1, 2, 3)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    ax.stackplot(seq, *share,
                 labels=["attention (QK$^T$, AV)", "feed-forward", "other (Q, K, V and output projections)"],
                 colors=["tab:orange", "tab:blue", "tab:gray"], alpha=0.85)
    ax.plot(seq, share[0], color="black", lw=1, marker="o", ms=3)
    for t, s in zip(seq, share[0]):
        if len(seq) <= 12:
            ax.annotate(f"{s:.0f}%", (t, s), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    if len(seq) > 1 and seq[-1] / seq[0] >= 8:
        ax.set_xscale("log", base=2)
    if len(seq) > 1:
        ax.set_xlim(seq[0], seq[-1])
    ax.set_ylim(0, 100)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("share of FLOPs (%)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "where the FLOPs go as the sequence grows", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
