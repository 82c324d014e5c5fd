"""Data: corpora from files and assets, turned into the tensors the objectives consume."""

from transformerkit.data.text import (
    HELD_OUT_PLAYS,
    encode_corpus,
    holdout_tail,
    load_corpus,
    pack_blocks,
    read_text,
    shakespeare_splits,
)

__all__ = [
    "HELD_OUT_PLAYS",
    "encode_corpus",
    "holdout_tail",
    "load_corpus",
    "pack_blocks",
    "read_text",
    "shakespeare_splits",
]
