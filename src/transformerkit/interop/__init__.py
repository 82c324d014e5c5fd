"""Checkpoints in and out: the Hugging Face layout (config.json + model.safetensors) for every family, and
GGUF files in (gguf.py)."""
from . import bart, bert, ctrl, gpt, llama, marian, t5  # noqa: F401  (each registers its converters)
from .gguf import read_gguf
from .hf import (
                 CONVERTERS,
                 Converter,
                 convert_checkpoint,
                 load_pretrained,
                 read_state_dict,
                 register,
                 resolve_checkpoint,
                 save_pretrained,
)

__all__ = ["CONVERTERS", "Converter", "convert_checkpoint", "load_pretrained", "read_gguf", "read_state_dict",
           "register", "resolve_checkpoint", "save_pretrained"]
