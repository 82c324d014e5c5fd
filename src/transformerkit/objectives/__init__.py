"""Pretraining objectives as data: BERT's masked LM and next sentence prediction (Devlin et al. 2019, §3.1).

Documents -> ``build_pretraining_pairs`` -> ``pack_pairs`` -> rows for the trainer;
``MaskedLMBatches`` is the trainer's ``make_batch`` that masks them per batch.
MLM-only data: a token stream -> ``pack_segments`` -> ``MaskedLMBatches(nsp=False)``.

Encoder-decoder denoising: T5's span corruption (Raffel et al. 2020, §3.1.4): raw rows of
``span_corruption_raw_length(512)[0]`` tokens -> ``SpanCorruptionBatches``; BART's noising
(Lewis et al. 2020, §2.2): ``[bos] text [eos]`` rows -> ``DenoisingBatches``.
"""

from transformerkit.models.base import IGNORE_INDEX  # the one ignore label, re-exported for the collators' users
from transformerkit.objectives.denoising import (
    BART_BASE_NOISE,
    DenoisingBatches,
    DenoisingTokens,
    NoisingRecipe,
    add_noise,
    document_rotation,
    infilling_spans,
    sentence_permutation,
    seq2seq_batch,
    split_sentences,
    text_infilling,
    token_deletion,
    token_masking,
)
from transformerkit.objectives.mlm import (
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
from transformerkit.objectives.span_corruption import (
    SentinelIds,
    SpanCorruptionBatches,
    fill_sentinels,
    noise_span_counts,
    random_spans_noise_mask,
    span_corruption,
    span_corruption_lengths,
    span_corruption_raw_length,
)

__all__ = [
    "BART_BASE_NOISE",
    "DenoisingBatches",
    "DenoisingTokens",
    "IGNORE_INDEX",
    "MaskedLMBatches",
    "NoisingRecipe",
    "PretrainingPair",
    "SentinelIds",
    "SpanCorruptionBatches",
    "add_noise",
    "build_pretraining_pairs",
    "check_masking_probabilities",
    "document_rotation",
    "documents_from_texts",
    "fill_sentinels",
    "infilling_spans",
    "mask_tokens",
    "noise_span_counts",
    "pack_pairs",
    "pack_segments",
    "random_spans_noise_mask",
    "sentence_permutation",
    "seq2seq_batch",
    "shakespeare_documents",
    "span_corruption",
    "span_corruption_lengths",
    "span_corruption_raw_length",
    "split_sentences",
    "split_works",
    "text_infilling",
    "token_deletion",
    "token_masking",
    "unpack_pairs",
    "word_start_table",
    "word_starts_from_ids",
    "word_starts_from_tokens",
]
