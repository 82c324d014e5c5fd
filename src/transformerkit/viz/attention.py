"""Attention maps. The cross-attention of a translation model is a soft alignment between the
target words it writes and the source words it reads (Bahdanau et al. 2015, Figure 3)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .figures import pyplot, save_figure


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
    plt = pyplot()
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
    return save_figure(fig, path)


# --- every layer and head of any model ---------------------------------------------------------

@dataclass
class AttentionMaps:
    """Attention weights of one text, per layer and head, as the model computed them.

    self_attention: (L, H, T, T), the encoder's (BERT) or the decoder's (GPT; causal: zero above the
    diagonal). For an encoder-decoder it is the decoder's masked self-attention over the target,
    `encoder` the encoder's (L_enc, H, S, S) and `cross` the decoder's cross-attention (L, H, T, S):
    row t is decoder position t (reading `decoder_tokens[t]`), column s is source token s. Each row
    sums to 1 over its keys. `layers` are the model's layer indices the maps were taken from.
    """

    kind: str                              # "encoder" | "decoder" | "encoder-decoder"
    tokens: list[str]                      # the text's tokens (the source of an encoder-decoder)
    self_attention: torch.Tensor           # (L, H, T, T)
    layers: list[int]
    decoder_tokens: list[str] | None = None   # encoder-decoders: the decoder's inputs (start, target[:-1])
    target_tokens: list[str] | None = None    # encoder-decoders: what each decoder position writes
    cross: torch.Tensor | None = None      # (L, H, T, S)
    encoder: torch.Tensor | None = None    # (L_enc, H, S, S)
    encoder_layers: list[int] | None = None


def _piece(tok, i: int) -> str:
    """A token id as a short readable label."""
    text = tok.decode([i])
    if not text.strip():
        token = tok.backend.id_to_token(int(i))
        text = token if token and token.strip() else "␣"
    return text.strip() or "␣"


def _pick_layers(n: int, layers, what: str) -> list[int]:
    if layers is None:
        return list(range(n))
    picked = []
    for layer in layers:
        if not -n <= int(layer) < n:
            raise ConfigError(f"layer {layer} does not exist: the {what} has {n} layers (0..{n - 1}, or -1 for the "
                              "last); pass layers within that range")
        picked.append(int(layer) % n)
    return picked


def _stack(per_layer: list, key: str, picked: list[int], model_name: str) -> torch.Tensor:
    maps = []
    for i in picked:
        weights = per_layer[i].get(key) if isinstance(per_layer[i], dict) else None
        if weights is None:
            raise ConfigError(f"{model_name} returned no {key!r} attention weights for layer {i}; "
                              "this model does not expose them")
        maps.append(weights[0].float().cpu())                                       # (H, T, S)
    return torch.stack(maps)                                                        # (L, H, T, S)


@torch.inference_mode()
def attention_maps(model, tok, text: str, target: str | None = None, layers=None) -> AttentionMaps:
    """The attention weights of every head in `layers` (None: all) for one text.

    Encoders (BERT) and decoders (GPT) read `text` with the tokenizer's special tokens. An
    encoder-decoder reads `text` as the source and `target` teacher-forced (as `cross_attention`:
    both end with the end-of-sequence token when the tokenizer has one); it needs `target`.
    """
    name = type(model).__name__
    if not text or not text.strip():
        raise DataError("attention_maps got an empty text; give a sentence to look at")
    model.eval()
    if model.is_encoder_decoder:
        if target is None or not target.strip():
            raise ConfigError(f"{name} is an encoder-decoder: give a target text (--target) to teacher-force, "
                              "so its cross-attention has rows to show")
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        src = tok.encode(text, add_special_tokens=False) + eos
        tgt = tok.encode(target, add_special_tokens=False) + eos
        if not src or not tgt:
            raise DataError(f"the tokenizer turned {text!r} or {target!r} into no tokens; give other text")
        out = model(input_ids=torch.tensor([src]), labels=torch.tensor([tgt]), need_weights=True)
        if not out.attentions:
            raise ConfigError(f"{name} returned no attention weights; it cannot be plotted")
        picked = _pick_layers(len(out.attentions), layers, "decoder")
        start = model.config.decoder_start_token_id
        dec_in = [start] + tgt[:-1]
        maps = AttentionMaps(kind="encoder-decoder", tokens=[_piece(tok, i) for i in src],
                             self_attention=_stack(out.attentions, "self", picked, name), layers=picked,
                             decoder_tokens=["<start>"] + [_piece(tok, i) for i in dec_in[1:]],
                             target_tokens=[_piece(tok, i) for i in tgt],
                             cross=_stack(out.attentions, "cross", picked, name))
        if out.encoder_attentions:
            enc = _pick_layers(len(out.encoder_attentions), layers, "encoder") if layers is not None else \
                list(range(len(out.encoder_attentions)))
            maps.encoder, maps.encoder_layers = _stack(out.encoder_attentions, "self", enc, name), enc
        return maps
    ids = tok.encode(text, add_special_tokens=True)
    if not ids:
        raise DataError(f"the tokenizer turned {text!r} into no tokens; give other text")
    out = model(input_ids=torch.tensor([ids]), need_weights=True)
    if not out.attentions:
        raise ConfigError(f"{name} returned no attention weights; it cannot be plotted")
    picked = _pick_layers(len(out.attentions), layers, "model")
    kind = "decoder" if model.family in ("gpt", "llama") else "encoder"
    return AttentionMaps(kind=kind, tokens=[_piece(tok, i) for i in ids],
                         self_attention=_stack(out.attentions, "self", picked, name), layers=picked)


_KINDS = ("self", "cross", "encoder")
MAX_FIGURE_INCHES = (26.0, 26.0)   # width, height: a 12-layer x 12-head grid still fits a screen
LABEL_LIMIT = 32                   # token labels on the axes up to this many tokens per axis


def plot_attention(maps, tokens, path, kind: str = "self", title: str = "") -> list[Path]:
    """Heatmaps of attention weights: one row per layer, one column per head.

    `maps` is an AttentionMaps (then `tokens` may be None and `kind` picks "self", "cross" or
    "encoder" — the encoder's self-attention of an encoder-decoder) or weights (L, H, T, S) / (H, T, S).
    `tokens`: a list (the same labels on both axes) or a pair (query labels, key labels). Labels are
    drawn when an axis has at most LABEL_LIMIT tokens and its cells are large enough to read.
    Writes PATH.png and PATH.svg; returns the files.
    """
    if kind not in _KINDS:
        raise ConfigError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    layer_names = None
    if isinstance(maps, AttentionMaps):
        if kind == "self":
            weights = maps.self_attention
            rows = cols = maps.decoder_tokens if maps.kind == "encoder-decoder" else maps.tokens
            layer_names = maps.layers
            what = {"encoder": "self-attention", "decoder": "causal self-attention",
                    "encoder-decoder": "decoder self-attention (causal)"}[maps.kind]
        elif kind == "cross":
            if maps.cross is None:
                raise ConfigError(f"an {maps.kind} model has no cross-attention; use kind='self' "
                                  "(cross-attention needs an encoder-decoder and a target text)")
            weights, rows, cols, layer_names = maps.cross, maps.decoder_tokens, maps.tokens, maps.layers
            what = "cross-attention (decoder reads the source)"
        else:
            if maps.encoder is None:
                raise ConfigError(f"kind='encoder' is the encoder self-attention of an encoder-decoder; this is "
                                  f"an {maps.kind} model: use kind='self'")
            weights, rows, cols, layer_names = maps.encoder, maps.tokens, maps.tokens, maps.encoder_layers
            what = "encoder self-attention"
        if tokens is not None:
            rows, cols = (tokens if isinstance(tokens, tuple) else (tokens, tokens))
    else:
        weights = torch.as_tensor(maps).float()
        if weights.dim() == 3:
            weights = weights[None]
        if weights.dim() != 4:
            raise DataError(f"attention weights must be (layers, heads, T, S) or (heads, T, S), got shape "
                            f"{tuple(weights.shape)}")
        rows, cols = (tokens if isinstance(tokens, tuple) else (tokens, tokens)) if tokens is not None else (None, None)
        what = f"{kind}-attention"
    weights = weights.detach().float().cpu()
    L, H, T, S = weights.shape
    if layer_names is None:
        layer_names = list(range(L))
    for axis, labels, n in (("query (row)", rows, T), ("key (column)", cols, S)):
        if labels is not None and len(labels) != n:
            raise DataError(f"{len(labels)} {axis} token labels for {n} positions; give one label per token")

    plt = pyplot()
    cell = min(3.2, max(1.4, 0.17 * max(T, S)))              # inches per heatmap, before the caps
    width = min(MAX_FIGURE_INCHES[0], 1.2 + cell * H * max(1.0, S / max(T, S)) + 1.0)
    height = min(MAX_FIGURE_INCHES[1], 0.9 + cell * L * max(0.6, T / max(T, S)))
    fig, axes = plt.subplots(L, H, figsize=(width, height), squeeze=False)
    per_cell_w, per_cell_h = (width - 2.2) / H, (height - 0.9) / L
    show_x = cols is not None and S <= LABEL_LIMIT and per_cell_w / S >= 0.11
    show_y = rows is not None and T <= LABEL_LIMIT and per_cell_h / T >= 0.11
    fontsize = 6 if max(T, S) > 16 else 7
    vmax = float(weights.max()) if weights.numel() else 1.0
    image = None
    for r in range(L):
        for h in range(H):
            ax = axes[r][h]
            image = ax.imshow(weights[r, h].numpy(), cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                              interpolation="nearest")
            ax.set_xticks(range(S) if show_x and r == L - 1 else [])
            ax.set_yticks(range(T) if show_y and h == 0 else [])
            if show_x and r == L - 1:
                ax.set_xticklabels(cols, rotation=90, fontsize=fontsize)
            if show_y and h == 0:
                ax.set_yticklabels(rows, fontsize=fontsize)
            if r == 0:
                ax.set_title(f"head {h}", fontsize=9)
            if h == 0:
                ax.set_ylabel(f"layer {layer_names[r]}", fontsize=9)
    fig.suptitle(title or f"{what}: {L} layer(s) x {H} head(s), {T} x {S} tokens (rows: queries, columns: keys)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    cax = fig.add_axes((0.915, 0.15, 0.012, 0.7))
    fig.colorbar(image, cax=cax, label="attention weight")
    return save_figure(fig, path, dpi=int(min(150, 3000 / max(width, height))))   # at most ~3000 px a side


# --- one head, as the page shows it ---------------------------------------------------------------

@dataclass
class AttentionHead:
    """One head's attention weights (T, K) with the mask that decided which keys each query may see.

    `mask` is the look-ahead mask: lower-triangular ones for a decoder's masked (causal) self-attention,
    all ones for an encoder's bidirectional self-attention and for cross-attention (the decoder reads
    the whole source). `n_layer` counts the layers of the stack this kind of attention lives in.
    """

    kind: str                   # "self" | "encoder" | "cross"
    layer: int
    head: int
    n_layer: int
    n_head: int
    tokens: list[str]           # queries (rows)
    key_tokens: list[str]       # keys (columns)
    weights: torch.Tensor       # (T, K)
    mask: torch.Tensor          # (T, K), 1 where the query may attend to the key
    causal: bool


def attention_kinds(maps: AttentionMaps) -> list[str]:
    """The kinds of attention a model's maps hold: "self" always; "encoder" and "cross" for encoder-decoders."""
    return ["self"] + (["encoder"] if maps.encoder is not None else []) + (["cross"] if maps.cross is not None else [])


def attention_head(maps: AttentionMaps, kind: str = "self", layer: int = 0, head: int = 0) -> AttentionHead:
    """Layer `layer` (an index into the maps' layers; -1 the last), head `head` of one kind of attention.

    kind "self" is the model's own self-attention (for an encoder-decoder: the decoder's, causal),
    "encoder" the encoder's self-attention of an encoder-decoder, "cross" its cross-attention.
    """
    if kind not in attention_kinds(maps):
        raise ConfigError(f"kind {kind!r} is not in this {maps.kind} model's attention; use one of "
                          f"{', '.join(attention_kinds(maps))}")
    if kind == "self":
        weights = maps.self_attention
        rows = cols = maps.decoder_tokens if maps.kind == "encoder-decoder" else maps.tokens
        causal = maps.kind != "encoder"
    elif kind == "encoder":
        weights, rows, cols, causal = maps.encoder, maps.tokens, maps.tokens, False
    else:
        weights, rows, cols, causal = maps.cross, maps.decoder_tokens, maps.tokens, False
    L, H, T, K = weights.shape
    for name, value, n in (("layer", layer, L), ("head", head, H)):
        if not -n <= int(value) < n:
            raise ConfigError(f"{name} {value} does not exist: the {kind} attention has {n} {name}s "
                              f"(0..{n - 1}); pick one within that range")
    mask = torch.ones(T, K).tril() if causal else torch.ones(T, K)
    return AttentionHead(kind=kind, layer=int(layer) % L, head=int(head) % H, n_layer=L, n_head=H, tokens=list(rows),
                         key_tokens=list(cols), weights=weights[int(layer), int(head)].float(), mask=mask,
                         causal=causal)
