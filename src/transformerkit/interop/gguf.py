"""GGUF files (the format of llama.cpp and the ggml project) in, read with the project's own `gguf` package.

A GGUF file holds one model: key-value metadata (the architecture, its shape, the tokenizer, a chat
template) and its tensors, quantized or not. This module opens the file with clear errors and turns
its metadata into plain Python values; the weights and the tokenizer are built from them elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError


def open_gguf(path: str | os.PathLike):
    """A `gguf.GGUFReader` over the file (memory-mapped: nothing is read until used). A missing, truncated
    or non-GGUF file is a CheckpointError naming it."""
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading GGUF files needs the `gguf` package: pip install gguf") from None
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no GGUF file at {path}")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as e:
        size = path.stat().st_size
        raise CheckpointError(f"{path} is not a complete GGUF file ({size:,} bytes; {type(e).__name__}: {e}): "
                              "truncated by an interrupted download or copy, or another format; "
                              "download it again") from e


def read_metadata(reader) -> dict:
    """The file's key-value metadata as Python values: str, int, float, bool, or lists of them
    (tokenizer.ggml.tokens is a list of 49,152 str for SmolLM2)."""
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
