"""The page at / and the JSON endpoints it reads (docs/serving.md, "The page and its JSON endpoints").

- `GET /` the page (static/index.html; its script and style under /static/); public, works offline.
- `GET /api/info` what the page needs to know about the served model: its name (the `model` of a
  /v1 request), family, encoder-decoder or not, whether it generates and chats, layers, heads, positions.
- `POST /api/attention` `{text, target?, layer, head, kind}`: one head's attention weights (T x K) with the
  look-ahead mask (T x K of 0/1) and the tokens on both axes. kind "self" (the model's self-attention; an
  encoder-decoder's decoder self-attention, causal), "encoder" or "cross" (encoder-decoders). An
  encoder-decoder reads `text` as the source and `target`, teacher-forced, on the decoder side; an empty
  target means the text itself (the denoising autoencoder's view: the decoder re-writes what it reads).
- `GET /api/positions?n_positions=128` the model's positional encoding as a table to draw
  (viz.positions.positional_encoding).

Like /v1, /api needs the server's API key when it has one (app.Guard). The numbers come from the library
(viz.attention, viz.positions); this module only parses, runs them on the engine thread and answers.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch
from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from ..errors import TransformerKitError
from ..viz.attention import attention_head, attention_kinds, attention_maps
from ..viz.positions import positional_encoding
from .errors import APIError

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}   # what /static/ serves; nothing else
MAX_ATTENTION_TOKENS = 256     # per text: a 256 x 256 map is 65,536 numbers, about 0.5 MB of JSON
MAX_POSITIONS = 512
CACHED_TEXTS = 4               # maps kept, so switching layer or head does not run the model again


class AttentionRequest(BaseModel):
    """The body of POST /api/attention."""
    text: str
    target: str | None = None
    layer: int = 0
    head: int = 0
    kind: Literal["self", "encoder", "cross"] = "self"


def _rounded(t: torch.Tensor, digits: int = 5) -> list:
    """A tensor as nested lists of floats, rounded: the JSON stays small and the page needs no more."""
    return torch.round(t.float(), decimals=digits).tolist()


def page_router(served) -> APIRouter:
    """The page, its two static files and the /api endpoints, for the one model `served` serves."""
    router = APIRouter()
    model, tok = served.model, served.tokenizer
    cache: OrderedDict = OrderedDict()      # (text, target) -> AttentionMaps; touched on the engine thread only

    @router.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in ASSETS:      # a fixed list: no path from the URL ever reaches the file system
            raise APIError(404, f"no static file {name!r}", code="not_found")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    @router.get("/api/info")
    async def info():
        config = model.config
        return {"name": served.name, "family": config.family, "is_encoder_decoder": bool(model.is_encoder_decoder),
                "can_generate": bool(model.can_generate), "can_chat": bool(getattr(tok, "chat_template", None)),
                "n_layer": config.n_layer, "n_decoder_layer": config.n_decoder_layer, "n_head": config.n_head,
                "d_model": config.d_model, "positions": config.positions, "vocab_size": config.vocab_size,
                "max_position": config.max_position, "max_attention_tokens": MAX_ATTENTION_TOKENS}

    def maps_of(text: str, target: str | None):
        """The AttentionMaps of one text (and target), computed once and kept for the next few requests."""
        key = (text, target)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        add_special = not model.is_encoder_decoder
        for param, value in (("text", text), ("target", target)):
            n = len(tok.encode(value, add_special_tokens=add_special)) if value else 0
            if n > MAX_ATTENTION_TOKENS:
                raise APIError(400, f"{param} has {n} tokens; the attention view takes at most "
                                    f"{MAX_ATTENTION_TOKENS}: give a shorter text", param=param,
                               code="too_many_tokens")
        cache[key] = attention_maps(model, tok, text, target)
        while len(cache) > CACHED_TEXTS:
            cache.popitem(last=False)
        return cache[key]

    def one_head(req: AttentionRequest):
        target = (req.target if req.target and req.target.strip() else req.text) if model.is_encoder_decoder \
            else None
        try:
            maps = maps_of(req.text, target)
        except TransformerKitError as exc:
            raise APIError(400, str(exc), param="text") from exc
        if req.kind not in attention_kinds(maps):
            raise APIError(400, f"kind {req.kind!r}: this {maps.kind} model has "
                                f"{', '.join(attention_kinds(maps))} attention", param="kind")
        stack = {"self": maps.self_attention, "encoder": maps.encoder, "cross": maps.cross}[req.kind]
        for param, value, n in (("layer", req.layer, stack.shape[0]), ("head", req.head, stack.shape[1])):
            if not 0 <= value < n:
                raise APIError(400, f"{param} {value} does not exist: the {req.kind} attention has {n} {param}s "
                                    f"(0..{n - 1})", param=param)
        view = attention_head(maps, req.kind, req.layer, req.head)
        return {"kind": view.kind, "layer": view.layer, "head": view.head, "n_layer": view.n_layer,
                "n_head": view.n_head, "causal": view.causal, "tokens": view.tokens, "key_tokens": view.key_tokens,
                "weights": _rounded(view.weights), "mask": view.mask.int().tolist(), "kinds": attention_kinds(maps),
                "target": target}

    @router.post("/api/attention")
    async def attention(req: AttentionRequest):
        if not req.text.strip():
            raise APIError(400, "text is empty: give a sentence to look at", param="text")
        return await served.run(one_head, req)

    @router.get("/api/positions")
    async def positions(n_positions: int = 128):
        if not 1 <= n_positions <= MAX_POSITIONS:
            raise APIError(400, f"n_positions must be 1..{MAX_POSITIONS}, got {n_positions}", param="n_positions")
        enc = await served.run(positional_encoding, model, n_positions)
        # The table rounded (it is drawn); the frequencies not: the slow ones are far below 1e-4.
        return {key: (_rounded(value, 4) if key == "table" else value.tolist()) if isinstance(value, torch.Tensor)
                else value for key, value in enc.items()}

    return router
