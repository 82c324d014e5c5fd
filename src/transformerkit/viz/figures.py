"""Saving figures: PNG and SVG side by side, each written atomically (temp file + rename)."""
from __future__ import annotations

from pathlib import Path


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
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp{suffix}")
            try:
                fig.savefig(tmp, dpi=dpi)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(target)
    finally:
        plt.close(fig)
    return written
