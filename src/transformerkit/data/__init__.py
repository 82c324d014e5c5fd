"""Data: corpora from files and assets, turned into the tensors the objectives consume."""

from transformerkit.data.ptb import PTB_MD5, load_ptb, ptb_splits, ptb_vocabulary
from transformerkit.data.text import (
    HELD_OUT_PLAYS,
    corpus_split,
    encode_corpus,
    holdout_tail,
    load_corpus,
    pack_blocks,
    read_text,
    shakespeare_splits,
)

__all__ = [
    "HELD_OUT_PLAYS",
    "PTB_MD5",
    "corpus_split",
    "encode_corpus",
    "holdout_tail",
    "load_corpus",
    "load_ptb",
    "pack_blocks",
    "ptb_splits",
    "ptb_vocabulary",
    "read_text",
    "shakespeare_splits",
]
