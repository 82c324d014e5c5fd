"""Training curves from a run folder's metrics log (training/trainer.py writes OUT/metrics.jsonl:
rows {"step", "loss", "lr", "tokens_per_s", "elapsed"} every log interval and {"step", "val_loss",
"elapsed"} at each evaluation; an "mfu" field, where present, is plotted too)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import DataError
from .figures import pyplot, save_figure

METRICS_FILE = "metrics.jsonl"   # the trainer's name for it (training/trainer.py)


def read_metrics(run_dir) -> list[dict]:
    """The rows of RUN_DIR/metrics.jsonl (or of that file given directly)."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.is_file() else run_dir / METRICS_FILE
    if not path.is_file():
        where = "no such folder" if not run_dir.exists() else f"no {METRICS_FILE} in it"
        raise DataError(f"cannot plot curves of {run_dir}: {where} (looked for {path}). The metrics log is "
                        f"written by training: `tkit train ... --out {run_dir}` (or `tkit pretrain`, "
                        "`tkit finetune`) writes OUT/metrics.jsonl; pass that run folder")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {number}: not JSON ({e.msg}); the file is damaged — delete the "
                                "line or train again to rewrite it") from None
            if not isinstance(row, dict) or "step" not in row:
                raise DataError(f"{path}, line {number}: a metrics row needs a 'step' field, got {line.strip()[:80]!r}")
            rows.append(row)
    if not any("loss" in r or "val_loss" in r for r in rows):
        raise DataError(f"{path} has no loss rows yet (train for at least one log interval), so there is nothing "
                        "to plot")
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))
              and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(run_dir, path, title: str = "") -> list[Path]:
    """Training and validation loss vs step; below them, throughput (tokens/s) and MFU when logged.
    Writes PATH.png and PATH.svg; returns the files."""
    rows = read_metrics(run_dir)
    train, valid = _series(rows, "loss"), _series(rows, "val_loss")
    speed, mfu = _series(rows, "tokens_per_s"), _series(rows, "mfu")
    has_speed = bool(speed[0] or mfu[0])
    plt = pyplot()
    if has_speed:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 6.8), sharex=True,
                                          gridspec_kw={"height_ratios": [2.2, 1]})
    else:
        fig, top = plt.subplots(figsize=(8.5, 4.8))
        bottom = None
    if train[0]:
        top.plot(*train, color="tab:blue", lw=1.2, label="training loss")
    if valid[0]:
        top.plot(*valid, color="tab:orange", lw=1.6, marker="o", ms=4, label="validation loss")
        best = min(range(len(valid[1])), key=valid[1].__getitem__)
        top.annotate(f"best {valid[1][best]:.3f} @ {valid[0][best]}", (valid[0][best], valid[1][best]),
                     textcoords="offset points", xytext=(-4, 10), ha="right", fontsize=8,
                     color="tab:orange")
    top.set_ylabel("loss (nats/token)")
    top.grid(alpha=0.3)
    top.legend(loc="upper right")
    top.set_title(title or f"training curves: {Path(run_dir).name}", fontsize=10)
    if bottom is not None:
        lines = []
        if speed[0]:
            lines += bottom.plot(*speed, color="tab:green", lw=1.0, label="tokens/s")
            bottom.set_ylabel("tokens/s")
        if mfu[0]:
            ax = bottom.twinx() if speed[0] else bottom
            scale = 100.0 if max(mfu[1]) <= 1.0 else 1.0            # a fraction, or already a percentage
            lines += ax.plot(mfu[0], [scale * v for v in mfu[1]], color="tab:red", lw=1.0, label="MFU (%)")
            ax.set_ylabel("MFU (%)")
        bottom.grid(alpha=0.3)
        bottom.legend(lines, [l.get_label() for l in lines], loc="lower right", fontsize=8)
        bottom.set_xlabel("step")
    else:
        top.set_xlabel("step")
    fig.tight_layout()
    return save_figure(fig, path)
