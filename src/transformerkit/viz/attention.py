"""Attention maps. The cross-attention of a translation model is a soft alignment between the
target words it writes and the source words it reads (Bahdanau et al. 2015, Figure 3)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError


@torch.inference_mode()
def cross_attention(model, tok, source: str, target: str, *, layer: int = -1, prefix: str = ""
                    ) -> tuple[torch.Tensor, list[str], list[str]]:
    """Cross-attention weights (T, S) of one sentence pair, averaged over heads, from decoder layer `layer`.

    The decoder reads the target teacher-forced; row t is the step that writes target token t (the
    last row writes </s>). Returns (weights, source tokens, target tokens), tokens as text pieces.
    """
    if not model.is_encoder_decoder:
        raise ConfigError(f"{type(model).__name__} has no cross-attention; give an encoder-decoder")
    src = tok.encode(prefix + source, add_special_tokens=False) + [tok.eos_token_id]
    tgt = tok.encode(target, add_special_tokens=False) + [tok.eos_token_id]
    model.eval()
    out = model(input_ids=torch.tensor([src]), labels=torch.tensor([tgt]), need_weights=True)
    weights = out.attentions[layer]["cross"][0].float().mean(0)                     # (T, S)
    piece = lambda i: tok.decode([i]) if i != tok.eos_token_id else "</s>"
    return weights, [piece(i) for i in src], [piece(i) for i in tgt]


def plot_alignment(weights: torch.Tensor, source_tokens: list[str], target_tokens: list[str], path,
                   title: str = "") -> list[Path]:
    """Heatmap of (T, S) weights: target tokens down, source tokens across. Writes PNG and SVG
    next to each other (path's suffix is replaced); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T, S = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.38 * S + 2), max(3.0, 0.38 * T + 1.5)))
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(S), [t.strip() or "␣" for t in source_tokens], rotation=70, ha="right", fontsize=9)
    ax.set_yticks(range(T), [t.strip() or "␣" for t in target_tokens], fontsize=9)
    ax.set_xlabel("source (read by the encoder)")
    ax.set_ylabel("target (written by the decoder)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, label="attention weight")
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = Path(path).with_suffix(suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{suffix}")
        fig.savefig(tmp, dpi=150)
        tmp.replace(target)
        written.append(target)
    plt.close(fig)
    return written
