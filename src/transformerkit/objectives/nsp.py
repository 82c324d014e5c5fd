"""BERT's next sentence prediction as data: sentence-pair examples from documents, packed for the trainer.

Devlin et al. 2019, "BERT", §3.1 (Task #2: Next Sentence Prediction) and Appendix A.2:
an example is ``[CLS] A [SEP] B [SEP]`` where B follows A in the same document half
the time (label IsNext = 0) and is text from another document otherwise (NotNext = 1,
the labels of transformers' BertForPreTraining). A and B are "sentences" in the sense
of spans of contiguous text, together at most ``max_length`` tokens; Appendix A.2's
recipe, as in the paper's create_pretraining_data, fills segments from a document's
sentences up to a target length, shorter 10% of the time so the model also sees
short inputs, splits them at a random sentence boundary, and truncates the longer side.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError, DataError

Document = list[list[int]]   # sentences, each a list of token ids

# Each work in the Shakespeare corpus opens with its title line, (blank lines,) then this byline.
_SHAKESPEARE_TITLE = re.compile(r"^[^\n]*\S[^\n]*\n(?:[ \t]*\n)*[ \t]*by William Shakespeare[ \t]*$", re.MULTILINE)


@dataclass
class PretrainingPair:
    """One NSP example before packing: segment A, segment B, and whether B is from another document."""

    tokens_a: list[int]
    tokens_b: list[int]
    is_random_next: bool


def build_pretraining_pairs(
    documents: Sequence[Sequence[Sequence[int]]],
    max_length: int,
    *,
    nsp_probability: float = 0.5,
    short_seq_probability: float = 0.1,
    seed: int = 0,
) -> list[PretrainingPair]:
    """Sentence pairs for MLM + NSP from documents (lists of sentences of token ids), in document order.

    Per document, sentences are gathered into a chunk until it holds a target number of
    tokens: ``max_length - 3`` (room for [CLS], [SEP], [SEP]), or with
    ``short_seq_probability`` a uniform length in ``[2, max_length - 3]``. A takes the
    chunk's first 1 .. n-1 sentences (uniformly); with ``nsp_probability`` B is taken
    from a random other document, from a random sentence on, until A + B reach the
    target, and the chunk's sentences A did not use are put back for the next chunk;
    otherwise B is the rest of the chunk. Then the longer side loses a token, from its
    front or back at random, until the pair fits. A chunk of one sentence (a sentence
    that alone reaches the target, or a document's lone last sentence) always gets a
    random B, as in the original, so the random share is slightly above
    ``nsp_probability``.

    One deviation: the original draws the target once per document; we draw it for
    every chunk, so that about ``short_seq_probability`` of the pairs are short even
    when documents are long (a Shakespeare play would otherwise be all short or all full).
    Empty sentences and documents are dropped; at least two non-empty documents are
    needed (random B comes from another document). Deterministic for a given ``seed``.
    The pairs are not shuffled: the trainer samples rows in random order anyway.
    """
    for name, value in (("nsp_probability", nsp_probability), ("short_seq_probability", short_seq_probability)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value} is not a probability; use a value in [0, 1].")
    if max_length < 5:
        raise ConfigError(f"max_length={max_length} leaves no room for [CLS] A [SEP] B [SEP] with one token "
                          "each in A and B; use max_length >= 5 (BERT uses 128, then 512).")
    docs = [doc for doc in ([list(s) for s in d if len(s)] for d in documents) if doc]
    if not docs:
        raise DataError("build_pretraining_pairs got no sentences: every document is empty. Pass encoded text.")
    if len(docs) < 2:
        raise DataError("build_pretraining_pairs needs at least 2 non-empty documents, because a random next "
                        "segment comes from another document; got 1. Split the text into documents "
                        "(e.g. split_works, or chunks of lines).")
    rng = random.Random(seed)
    pairs: list[PretrainingPair] = []
    for index in range(len(docs)):
        pairs.extend(_pairs_from_document(docs, index, max_length - 3, nsp_probability, short_seq_probability, rng))
    return pairs


def _pairs_from_document(docs: list[Document], index: int, max_tokens: int, nsp_probability: float,
                         short_seq_probability: float, rng: random.Random) -> list[PretrainingPair]:
    document = docs[index]
    pairs: list[PretrainingPair] = []
    target = _target_length(max_tokens, short_seq_probability, rng)
    chunk: list[list[int]] = []
    chunk_tokens = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_tokens += len(document[i])
        if i == len(document) - 1 or chunk_tokens >= target:
            a_sentences = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_sentences] for t in sentence]
            is_random_next = len(chunk) == 1 or rng.random() < nsp_probability
            if is_random_next:
                tokens_b = _random_segment(docs, index, max(1, target - len(tokens_a)), rng)
                i -= len(chunk) - a_sentences   # the sentences A left are the next chunk's start
            else:
                tokens_b = [t for sentence in chunk[a_sentences:] for t in sentence]
            tokens_a, tokens_b = _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
            pairs.append(PretrainingPair(tokens_a, tokens_b, is_random_next))
            chunk, chunk_tokens = [], 0
            target = _target_length(max_tokens, short_seq_probability, rng)
        i += 1
    return pairs


def _target_length(max_tokens: int, short_seq_probability: float, rng: random.Random) -> int:
    return rng.randint(2, max_tokens) if rng.random() < short_seq_probability else max_tokens


def _random_segment(docs: list[Document], index: int, min_tokens: int, rng: random.Random) -> list[int]:
    """Sentences of a random document other than ``index``, from a random one on, until min_tokens are reached."""
    other = rng.randrange(len(docs) - 1)
    other += other >= index
    document = docs[other]
    tokens: list[int] = []
    for sentence in document[rng.randrange(len(document)) :]:
        tokens.extend(sentence)
        if len(tokens) >= min_tokens:
            break
    return tokens


def _truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: random.Random
                   ) -> tuple[list[int], list[int]]:
    """Drop tokens from the longer side (B on ties), each from its front or back at random, until both fit.

    Cutting both ends, not just the back, keeps the model from learning that segments
    always end at a sentence end. Neither side becomes empty since max_tokens >= 2.
    """
    a_start, a_end, b_start, b_end = 0, len(tokens_a), 0, len(tokens_b)
    while (a_end - a_start) + (b_end - b_start) > max_tokens:
        front = rng.random() < 0.5
        if a_end - a_start > b_end - b_start:
            a_start, a_end = (a_start + 1, a_end) if front else (a_start, a_end - 1)
        else:
            b_start, b_end = (b_start + 1, b_end) if front else (b_start, b_end - 1)
    return tokens_a[a_start:a_end], tokens_b[b_start:b_end]


def documents_from_texts(texts: Sequence[str], encode: Callable[[str], list[int]]) -> list[Document]:
    """Each text one document; its sentences are its non-empty lines, stripped and encoded with ``encode``.

    A line is the sentence unit (verse and dialogue lines for Shakespeare; BERT's
    corpora had one sentence per line already), so no sentence splitter is needed.
    ``encode`` must add no special tokens (e.g. ``lambda s: tok.encode(s, add_special_tokens=False)``).
    Lines that encode to nothing and texts without such lines are dropped.
    """
    documents = []
    for text in texts:
        sentences = [ids for ids in (list(encode(line.strip())) for line in text.splitlines() if line.strip()) if ids]
        if sentences:
            documents.append(sentences)
    return documents


def split_works(text: str, *, lines_per_document: int = 500) -> list[str]:
    """Cut a corpus text into documents: the Shakespeare works, else chunks of ``lines_per_document`` lines.

    ``load_corpus("shakespeare")`` joins whole works, each opening with its title line
    and a "by William Shakespeare" byline (38 works in train, 4 in validation); a work
    runs from its title to the next one. A text with fewer than two bylines (any other
    file) is cut every ``lines_per_document`` lines instead.
    """
    if lines_per_document < 1:
        raise ConfigError(f"lines_per_document={lines_per_document} must be at least 1.")
    starts = [match.start() for match in _SHAKESPEARE_TITLE.finditer(text)]
    if len(starts) >= 2:
        bounds = ([0] if text[: starts[0]].strip() else []) + starts + [len(text)]
        return [text[begin:end] for begin, end in zip(bounds, bounds[1:])]
    lines = text.splitlines(keepends=True)
    chunks = ["".join(lines[i : i + lines_per_document]) for i in range(0, len(lines), lines_per_document)]
    return [chunk for chunk in chunks if chunk.strip()]


def shakespeare_documents(text: str, encode: Callable[[str], list[int]], *, lines_per_document: int = 500
                          ) -> list[Document]:
    """A corpus text (e.g. one side of ``load_corpus("shakespeare")``) as documents: ``split_works`` then
    ``documents_from_texts``."""
    return documents_from_texts(split_works(text, lines_per_document=lines_per_document), encode)


def pack_pairs(pairs: Sequence[PretrainingPair], max_length: int, *, cls_id: int, sep_id: int, pad_id: int
               ) -> torch.Tensor:
    """Pairs -> LongTensor (N, 2 * max_length + 1) of rows ``[input_ids | token_type_ids | next_sentence_label]``.

    input_ids (max_length) are ``[CLS] A [SEP] B [SEP]`` right-padded with ``pad_id``;
    token_type_ids are 0 on ``[CLS] A [SEP]`` and padding, 1 on ``B [SEP]``; the last
    column is 1 when B is random. One tensor, so the trainer can sample rows of it;
    ``MaskedLMBatches(nsp=True)`` unpacks them (``unpack_pairs``).
    """
    if not pairs:
        raise DataError("pack_pairs got no pairs; build them with build_pretraining_pairs.")
    rows = []
    for n, pair in enumerate(pairs):
        used = len(pair.tokens_a) + len(pair.tokens_b) + 3
        if used > max_length or not pair.tokens_a or not pair.tokens_b:
            raise DataError(f"pair {n} has {len(pair.tokens_a)} + {len(pair.tokens_b)} tokens; it needs 1 or more "
                            f"on each side and at most {max_length - 3} in all for max_length={max_length}. "
                            "Build the pairs with the same max_length.")
        padding = max_length - used
        ids = [cls_id, *pair.tokens_a, sep_id, *pair.tokens_b, sep_id] + [pad_id] * padding
        types = [0] * (len(pair.tokens_a) + 2) + [1] * (len(pair.tokens_b) + 1) + [0] * padding
        rows.append(ids + types + [int(pair.is_random_next)])
    return torch.tensor(rows, dtype=torch.long)


def unpack_pairs(rows: torch.Tensor, max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``pack_pairs`` (B, 2 * max_length + 1) -> input_ids (B, T), token_type_ids (B, T),
    next_sentence_label (B,)."""
    if rows.dim() != 2 or rows.shape[1] != 2 * max_length + 1:
        raise DataError(f"pair rows for max_length={max_length} are (N, {2 * max_length + 1}), "
                        f"got {tuple(rows.shape)}; pack them with pack_pairs and the same max_length.")
    return rows[:, :max_length], rows[:, max_length : 2 * max_length], rows[:, 2 * max_length]
