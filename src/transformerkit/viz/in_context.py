"""Accuracy against the number of solved examples in the prompt, in the shape of the GPT-3 paper's
Figure 1.2 (Brown et al. 2020): in-context learning, with no gradient update, beside what fine-tuning
reaches on the same test split."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, DataError
from .figures import pyplot, save_figure


def read_curves(paths) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """The JSON files `tkit eval --task T --shots 0 1 2 4 8 --out FILE` writes, as (curves, chance):
    one curve per task (and chat template or not), and what guessing scores on each task."""
    curves: dict[str, list[dict]] = {}
    chance: dict[str, float] = {}
    for path in paths:
        try:
            records = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {path} as a tkit eval result ({e}); give the --out file of tkit eval") from e
        records = records if isinstance(records, list) else [records]
        if not all(isinstance(r, dict) and {"task", "accuracy", "shots_requested"} <= r.keys() for r in records):
            raise DataError(f"{path} holds no multiple-choice results (task, accuracy, shots_requested); "
                            "give the --out file of tkit eval --task bbc-news / tweets-sentiment / FILE.jsonl")
        for r in records:
            label = r["task"] + (" (chat template)" if r.get("chat") else "")
            curves.setdefault(label, []).append(r)
            if "chance" in r:
                chance[f"chance: {r['task']}"] = r["chance"]
    return curves, chance


def plot_in_context(curves: dict[str, list[dict]], path: str | Path, finetuned: dict[str, float] | None = None,
                    chance: dict[str, float] | None = None, title: str | None = None) -> list[Path]:
    """curves: {label: [tk.evaluate results, one per number of shots]}; each line is accuracy against the
    shots asked for (x on a log2-like scale: 0, 1, 2, 4, 8). finetuned: {label: accuracy} drawn as dashed
    lines (a fine-tuned model on the same test split); chance: {label: accuracy} as dotted lines.
    Writes PNG + SVG; returns their paths."""
    if not curves or not all(curves.values()):
        raise ConfigError("plot_in_context needs at least one curve of evaluate() results")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks = sorted({r["shots_requested"] for rows in curves.values() for r in rows})
    position = {k: i for i, k in enumerate(ticks)}   # evenly spaced: 0, 1, 2, 4, 8 as in the paper's figure
    for i, (label, rows) in enumerate(curves.items()):
        rows = sorted(rows, key=lambda r: r["shots_requested"])
        xs = [position[r["shots_requested"]] for r in rows]
        ax.plot(xs, [100 * r["accuracy"] for r in rows], "o-", color=colors[i % len(colors)],
                label=f"{label} (n={rows[0]['n']})")
    for i, (label, value) in enumerate((finetuned or {}).items()):
        ax.axhline(100 * value, linestyle="--", color=colors[-1 - i % len(colors)], label=label)   # not a curve colour
    for label, value in (chance or {}).items():
        ax.axhline(100 * value, linestyle=":", color="grey", linewidth=1)
        ax.annotate(label, (len(ticks) - 1, 100 * value), textcoords="offset points", xytext=(0, 3),
                    ha="right", fontsize=8, color="grey")
    ax.set_xticks(range(len(ticks)), [str(k) for k in ticks])
    ax.set_xlabel("number of examples in the prompt (K)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "In-context learning: accuracy against the shots in the prompt")
    fig.tight_layout()
    return save_figure(fig, path)
