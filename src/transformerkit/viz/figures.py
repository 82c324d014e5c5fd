"""Saving figures: PNG and SVG side by side, each written atomically (files.atomic_path)."""
from __future__ import annotations

from pathlib import Path

from ..files import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 150) -> list[Path]:
    """Write `fig` as PATH.png and PATH.svg (path's suffix is replaced), atomically; close it; return the files."""
    plt = pyplot()
    written = []
    try:
        for suffix in (".png", ".svg"):
            target = Path(path).with_suffix(suffix)
            with atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=dpi, format=suffix[1:])   # the temp name has no suffix to tell the format
            written.append(target)
    finally:
        plt.close(fig)
    return written
