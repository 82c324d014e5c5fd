"""transformerkit: the classic Transformer family from scratch in PyTorch.

    import transformerkit as tk
    model = tk.build("gpt2-tiny")
    model = tk.load("path/to/checkpoint")        # ours or a Hugging Face folder
    tok = tk.load_tokenizer("gpt2-vocab")
    new_ids = tk.generate(model, ids, max_new_tokens=64)
    model, tok = tk.load("smollm2-135m-instruct"), tk.load_tokenizer("smollm2-135m-instruct")  # real weights
    reply = tk.chat(model, tok, [{"role": "user", "content": "What is the capital of France?"}])
    vecs = tk.embed(tk.load(tk.fetch("minilm-l6")), tk.load_tokenizer("minilm-l6"), ["a sentence"])
"""
from .chat import chat
from .config import ModelConfig
from .errors import AssetError, CheckpointError, ConfigError, DataError, GenerationError, TransformerKitError
from .evaluation import evaluate, loglikelihood, perplexity
from .generation import GenerationConfig, generate
from .inference import embed, fill_mask, similarity
from .interop import load_pretrained as load
from .models import PRESETS, build, get_preset

__version__ = "0.1.0"


def load_tokenizer(name_or_path):
    """A tokenizer by asset name ("gpt2-vocab"), "char:FILE", or a folder (see tokenization.py)."""
    from .tokenization import load_tokenizer as _load
    return _load(name_or_path)


def quantize(model, scheme: str = "int8", group_size: int = 64, lm_head: bool | str = "int8"):
    """Weight-only int8 (per channel) or int4 (groups of group_size) linear layers, in place, for CPU
    decoding; returns the model (see quantization.py)."""
    from .quantization import quantize as _quantize
    return _quantize(model, scheme, group_size=group_size, lm_head=lm_head)


def fetch(name: str):
    """The local folder of a catalog asset, fetched from its registry and checked (see assets.py)."""
    from .assets import fetch as _fetch
    return _fetch(name)


__all__ = ["build", "load", "load_tokenizer", "generate", "chat", "GenerationConfig", "fetch", "embed", "similarity",
           "fill_mask", "ModelConfig", "PRESETS", "get_preset", "TransformerKitError", "ConfigError",
           "CheckpointError", "AssetError", "DataError", "GenerationError",
           "perplexity", "loglikelihood", "evaluate", "quantize"]
