"""`tkit serve`: one model over an OpenAI-compatible HTTP API (api.py), with a page at / that shows what
happens inside it (page.py). `load_served` reads a model the way the command does; `create_app` builds the
ASGI app; `serve` runs it with uvicorn."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .app import Served, ServeSettings, create_app

# A preset's random weights still need a vocabulary: the one its family's public checkpoints use.
PRESET_TOKENIZERS = {50257: "gpt2", 30522: "bert-base-uncased"}


def load_served(spec: str, tokenizer: str | None = None, dtype: str = "fp32", quantize: str | None = None,
                group_size: int = 64):
    """(model, tokenizer, name) for MODEL as `tkit serve` takes it: a checkpoint folder, a GGUF file, an asset
    with weights (smollm2-135m-instruct), or a preset name (random weights: for trying the server and the
    page; the tokenizer is its family's public one when the vocabulary size says which, else --tokenizer).
    The name is what clients send as "model": the asset or preset name, or the file or folder's name.
    dtype, quantize, group_size: how the weights are held (quantization.for_inference)."""
    from .. import build, load, load_tokenizer
    from ..interop import resolve_checkpoint
    from ..models import PRESETS
    from ..quantization import for_inference
    if spec in PRESETS and not Path(spec).exists():
        model = build(spec)
        tokenizer = tokenizer or PRESET_TOKENIZERS.get(model.config.vocab_size)
        if tokenizer is None:
            raise ConfigError(f"the preset {spec!r} has a {model.config.vocab_size}-token vocabulary that no "
                              "public tokenizer here matches; give one with --tokenizer")
        print(f"tkit serve: {spec} is a preset: its weights are random", file=sys.stderr)
        tok = load_tokenizer(tokenizer)
    else:
        folder = resolve_checkpoint(spec)
        tok = load_tokenizer(tokenizer or folder)
        model = load(folder)
    model = for_inference(model, dtype, quantize, group_size)
    vocab = getattr(tok, "vocab_size", None)
    if vocab is not None and vocab > model.config.vocab_size:
        raise ConfigError(f"the tokenizer has {vocab} tokens but the model only {model.config.vocab_size}; "
                          "give the model's own tokenizer with --tokenizer")
    return model, tok, os.path.basename(os.path.normpath(spec)).removesuffix(".gguf") or spec


def serve(spec: str, settings: ServeSettings | None = None, tokenizer: str | None = None, dtype: str = "fp32",
          name: str | None = None, quantize: str | None = None, group_size: int = 64) -> None:
    """Load MODEL and serve it until interrupted (uvicorn). Binds settings.host, 127.0.0.1 by default."""
    import uvicorn

    settings = settings or ServeSettings()
    model, tok, default_name = load_served(spec, tokenizer, dtype, quantize, group_size)
    app = create_app(model, tok, name or default_name, settings)
    print(f"tkit serve: {name or default_name} at http://{settings.host}:{settings.port}/ "
          f"(OpenAI API under /v1{', key required' if settings.api_key else ''})", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=5)


__all__ = ["ServeSettings", "Served", "create_app", "load_served", "serve"]
