"""The KV cache per token: what decoding keeps for every position it has read, 2 x n_layer x
n_kv_head x d_head numbers (a key and a value per layer and KV head). Grouped-query attention
(Ainslie et al. 2023) shares each key/value head among n_head / n_kv_head query heads and divides
the cache by that factor; multi-query attention (Shazeer 2019) is the limit n_kv_head = 1."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .figures import pyplot, save_figure

KV_PRESETS = ("gpt2", "gpt2-medium", "smollm2-135m", "smollm2-360m", "llama-2-7b", "llama-2-70b", "llama-3-8b")


def kv_cache_comparison(presets=KV_PRESETS, dtype: str = "bf16") -> list[dict]:
    """One row per preset (None: KV_PRESETS), from `analysis.memory`: {"name", "n_layer", "n_head",
    "n_kv_head", "d_head", "bytes" (KV cache per token), "bytes_without_gqa" (the same model with a key
    and value per query head; equal to "bytes" for a model without GQA), "context" (max_position),
    "bytes_per_context"}."""
    from ..analysis.costs import as_config, memory

    names = list(KV_PRESETS if presets is None else presets)
    if not names:
        raise ConfigError("kv_cache_comparison needs at least one preset, e.g. ['gpt2', 'llama-3-8b']")
    rows = []
    for name in names:
        c = as_config(name)
        if c.family in ("bert", "seq2seq_rnn"):
            raise ConfigError(f"{name} is a {c.family} model: it decodes without a KV cache of self-attention; "
                              "choose a decoder (gpt2, smollm2-135m, llama-3-8b, ...)")
        m = memory(c, dtype=dtype)
        per_token = m["kv_cache_per_token"]
        rows.append({"name": str(name), "n_layer": c.n_layer, "n_head": c.n_head, "n_kv_head": c.kv_heads,
                     "d_head": c.d_head, "bytes": per_token,
                     "bytes_without_gqa": m.get("kv_cache_per_token_without_gqa", per_token),
                     "context": c.max_position, "bytes_per_context": per_token * c.max_position})
    return rows


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB".replace(".0 KiB", " KiB")


def plot_kv_cache(path, presets=KV_PRESETS, dtype: str = "bf16", title: str = "") -> list[Path]:
    """Horizontal bars, one per preset (None: KV_PRESETS), of the KV cache per token in KiB; for a model
    with grouped-query attention a hatched bar behind it shows the cache the same model would keep with
    a key and value per query head. Each row is labelled with its sizes and heads.
    Writes PATH.png and PATH.svg; returns the files."""
    rows = kv_cache_comparison(presets, dtype)
    plt = pyplot()
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(9.5, 1.4 + 0.5 * len(rows)))
    ys = list(range(len(rows)))[::-1]                                   # the first preset on top
    biggest = max(r["bytes_without_gqa"] for r in rows) / 1024
    without = {"facecolor": "lightgray", "hatch": "//", "edgecolor": "gray"}
    for y, r in zip(ys, rows):
        gqa = r["n_kv_head"] != r["n_head"]
        if gqa:
            ax.barh(y, r["bytes_without_gqa"] / 1024, height=0.7, **without)
            label = (f"{_kib(r['bytes'])}: {r['n_kv_head']} KV heads for {r['n_head']} query heads "
                     f"\n{_kib(r['bytes_without_gqa'])} without GQA")
        else:
            label = f"{_kib(r['bytes'])}: {r['n_head']} heads"
        ax.barh(y, r["bytes"] / 1024, color="tab:orange" if gqa else "tab:blue", height=0.7)
        ax.text(r["bytes_without_gqa"] / 1024 + biggest * 0.01, y, label, va="center", fontsize=8)
    ax.legend(handles=[Patch(color="tab:blue", label="multi-head attention"),
                       Patch(color="tab:orange", label="grouped-query attention"),
                       Patch(label="the same model without GQA", **without)], loc="lower right", fontsize=8)
    ax.set_yticks(ys, [r["name"] for r in rows])
    ax.set_xlim(0, biggest * 1.45)
    ax.set_xlabel(f"KV cache per token ({dtype}, KiB): 2 x layers x KV heads x d_head x bytes")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"KV cache per token ({dtype})", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
