"""Pretraining objectives as data: BERT's masked LM and next sentence prediction (Devlin et al. 2019, §3.1).

Documents -> ``build_pretraining_pairs`` -> ``pack_pairs`` -> rows for the trainer;
``MaskedLMBatches`` is the trainer's ``make_batch`` that masks them per batch.
MLM-only data: a token stream -> ``pack_segments`` -> ``MaskedLMBatches(nsp=False)``.
"""

from transformerkit.objectives.mlm import (
    IGNORE_INDEX,
    MaskedLMBatches,
    check_masking_probabilities,
    mask_tokens,
    pack_segments,
    word_start_table,
    word_starts_from_ids,
    word_starts_from_tokens,
)
from transformerkit.objectives.nsp import (
    PretrainingPair,
    build_pretraining_pairs,
    documents_from_texts,
    pack_pairs,
    shakespeare_documents,
    split_works,
    unpack_pairs,
)

__all__ = [
    "IGNORE_INDEX",
    "MaskedLMBatches",
    "PretrainingPair",
    "build_pretraining_pairs",
    "check_masking_probabilities",
    "documents_from_texts",
    "mask_tokens",
    "pack_pairs",
    "pack_segments",
    "shakespeare_documents",
    "split_works",
    "unpack_pairs",
    "word_start_table",
    "word_starts_from_ids",
    "word_starts_from_tokens",
]
