"""BART's denoising objective as data: corrupt a document, train the decoder to write it back.

Lewis et al. 2020, "BART", §2.2 (pretraining: token masking, token deletion, text
infilling, sentence permutation, document rotation) and §5.1 (the final recipe: text
infilling masking 30% of the tokens with Poisson(λ=3) span lengths, plus permuting all
sentences). The encoder reads the noised document; the decoder is trained to produce the
original one, so the labels are the clean ids and the decoder reads them shifted right.

Every function here works on one sequence of token ids ``[bos] body [eos]`` (bos and eos
are optional at the ends) and only changes the body: bos and eos stay where they are.
Special ids inside the body (bos, eos, pad, mask) are never masked, deleted or covered by
an infilling span. Randomness comes from a ``random.Random`` (as in ``nsp``); without one
it is seeded from the global torch RNG, which the trainer checkpoints, so a resumed run
draws the same noise as an uninterrupted one.

The collators of both encoder-decoder objectives (this one and T5's span corruption) end
in ``seq2seq_batch``, which is defined here.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, DataError
from ..models.base import IGNORE_INDEX
from .mlm import batch_seed

MAX_POISSON_LAMBDA = 200.0   # inversion sampling walks the CDF from e^-λ, which must not underflow


@dataclass(frozen=True)
class DenoisingTokens:
    """The special ids the noising functions must know: ends of a document, [MASK], padding, sentence ends.

    ``sentence_end_ids`` (e.g. the ids of ".", "!", "?") mark where a sentence ends,
    for sentence permutation; BART splits at full stops.
    """

    bos_id: int
    eos_id: int
    mask_id: int
    pad_id: int
    sentence_end_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sentence_end_ids", frozenset(int(i) for i in self.sentence_end_ids))
        ends = {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}
        for name, value in ends.items():
            if value == self.mask_id:
                raise ConfigError(f"DenoisingTokens: mask_id={self.mask_id} equals {name}; the mask token must "
                                  "have its own id (BART: bos 0, pad 1, eos 2, mask 50264).")
        clash = self.sentence_end_ids & self.protected
        if clash:
            raise ConfigError(f"DenoisingTokens: sentence_end_ids {sorted(clash)} are special ids; pass the ids "
                              "of sentence-final punctuation such as '.' instead.")

    @property
    def protected(self) -> frozenset[int]:
        """Ids that noise never touches: bos, eos, pad and mask."""
        return frozenset({self.bos_id, self.eos_id, self.pad_id, self.mask_id})


# ----------------------------------------------------------------------------- randomness and layout


def torch_seeded_random() -> random.Random:
    """A ``random.Random`` seeded by one draw from the global torch RNG (so ``torch.manual_seed`` fixes it)."""
    return random.Random(int(torch.randint(0, 2**62, (1,))))


def batch_random(rows: torch.Tensor, seed: int | None) -> random.Random:
    """The random source of a collator call: from the global torch RNG (training), else from ``seed`` and the rows.

    With a ``seed`` the same rows get the same noise at every call (validation losses
    compare across steps) and the global RNG is left alone, as in ``MaskedLMBatches``.
    """
    if seed is None:
        return torch_seeded_random()
    return random.Random(batch_seed(seed, rows))


def _split_ends(ids: Sequence[int], tokens: DenoisingTokens) -> tuple[list[int], list[int], list[int]]:
    """``[bos] body [eos]`` -> (head, body, tail), head and tail empty where the sequence lacks bos / eos."""
    ids = [int(i) for i in ids]
    start = 1 if ids and ids[0] == tokens.bos_id else 0
    end = len(ids) - 1 if len(ids) > start and ids[-1] == tokens.eos_id else len(ids)
    return ids[:start], ids[start:end], ids[end:]


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={value} is not a probability; use a value in [0, 1] "
                          "(BART's final recipe: text infilling 0.3 + sentence permutation).")


# ----------------------------------------------------------------------------- the five noise functions (§2.2)


def token_masking(ids: Sequence[int], tokens: DenoisingTokens, probability: float,
                  rng: random.Random | None = None) -> list[int]:
    """Token masking (BART §2.2, as BERT): each body token becomes ``mask_id`` with ``probability``."""
    _check_probability("token masking probability", probability)
    rng = rng or torch_seeded_random()
    head, body, tail = _split_ends(ids, tokens)
    protected = tokens.protected
    noised = [t if t in protected or rng.random() >= probability else tokens.mask_id for t in body]
    return head + noised + tail


def token_deletion(ids: Sequence[int], tokens: DenoisingTokens, probability: float,
                   rng: random.Random | None = None) -> list[int]:
    """Token deletion (BART §2.2): each body token is dropped with ``probability``; the model must find where."""
    _check_probability("token deletion probability", probability)
    rng = rng or torch_seeded_random()
    head, body, tail = _split_ends(ids, tokens)
    protected = tokens.protected
    return head + [t for t in body if t in protected or rng.random() >= probability] + tail


def sample_poisson(lam: float, rng: random.Random) -> int:
    """One draw from Poisson(``lam``) by inversion: walk the CDF until it passes a uniform draw."""
    u = rng.random()
    k, probability = 0, math.exp(-lam)
    cumulative = probability
    while u > cumulative and probability > 0.0:
        k += 1
        probability *= lam / k
        cumulative += probability
    return k


def infilling_spans(num_tokens: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                    rng: random.Random | None = None) -> list[tuple[int, int]]:
    """Where text infilling masks (BART §2.2): ``(start, length)`` spans over ``num_tokens`` positions, by start.

    Span lengths are drawn from Poisson(``poisson_lambda``) until they cover
    ``round(num_tokens * mask_ratio)`` tokens; the last one is shortened to hit that
    count exactly (it stays at least 1). A length-0 span is an insertion point: a mask is
    inserted before position ``start`` (``start == num_tokens``: at the end). The spans,
    in random order, are then laid out uniformly among the unmasked tokens: every
    arrangement of the blocks and the kept tokens is equally likely, spans never overlap,
    and two spans may touch (each still gets its own mask).
    """
    _check_probability("text infilling mask_ratio", mask_ratio)
    if not 0.0 < poisson_lambda <= MAX_POISSON_LAMBDA:
        raise ConfigError(f"poisson_lambda={poisson_lambda} must be in (0, {MAX_POISSON_LAMBDA:g}]; "
                          "BART uses 3 (mean span length 3 tokens).")
    rng = rng or torch_seeded_random()
    to_mask = round(num_tokens * mask_ratio)
    lengths: list[int] = []
    covered = 0
    while covered < to_mask:
        length = min(sample_poisson(poisson_lambda, rng), to_mask - covered)
        lengths.append(length)
        covered += length
    rng.shuffle(lengths)
    # Stars and bars: choose which of the (kept tokens + spans) places hold the spans.
    kept = num_tokens - to_mask
    places = sorted(rng.sample(range(kept + len(lengths)), len(lengths)))
    spans, masked_before = [], 0
    for i, (place, length) in enumerate(zip(places, lengths)):
        spans.append((place - i + masked_before, length))                      # kept tokens before + masked before
        masked_before += length
    return spans


def text_infilling(ids: Sequence[int], tokens: DenoisingTokens, mask_ratio: float = 0.3,
                   poisson_lambda: float = 3.0, rng: random.Random | None = None) -> list[int]:
    """Text infilling (BART §2.2, §5.1): Poisson(λ) spans cover ``mask_ratio`` of the body; each becomes ONE mask.

    So the model learns how many tokens are missing, not only which. Zero-length spans
    insert a mask. Spans are placed over the body's non-special tokens
    (``infilling_spans``); a special id inside the body is kept, and a span around it
    becomes a mask on each side.
    """
    rng = rng or torch_seeded_random()
    head, body, tail = _split_ends(ids, tokens)
    protected = tokens.protected
    maskable = [j for j, t in enumerate(body) if t not in protected]           # body positions spans may cover
    spans = infilling_spans(len(maskable), mask_ratio, poisson_lambda, rng)
    span_of = [-1] * len(maskable)                                              # span index covering each, or -1
    inserts_before = [0] * (len(maskable) + 1)
    for s, (start, length) in enumerate(spans):
        if length == 0:
            inserts_before[start] += 1
        span_of[start : start + length] = [s] * length
    out: list[int] = []
    last_span, m = -1, 0                                                        # m: index among maskable tokens
    for t in body:
        if t in protected:
            out.append(t)
            last_span = -1
            continue
        if inserts_before[m]:
            out.extend([tokens.mask_id] * inserts_before[m])
            last_span = -1
        if span_of[m] < 0:
            out.append(t)
        elif span_of[m] != last_span:                                           # first token of a span's run
            out.append(tokens.mask_id)
        last_span = span_of[m]
        m += 1
    out.extend([tokens.mask_id] * inserts_before[len(maskable)])
    return head + out + tail


def split_sentences(body: Sequence[int], sentence_end_ids: Iterable[int]) -> list[list[int]]:
    """Cut a token sequence after every sentence-end id; trailing tokens without one form the last sentence."""
    ends = frozenset(sentence_end_ids)
    sentences, current = [], []
    for t in body:
        current.append(t)
        if t in ends:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def sentence_permutation(ids: Sequence[int], tokens: DenoisingTokens, rng: random.Random | None = None) -> list[int]:
    """Sentence permutation (BART §2.2): split the body at sentence ends (full stops) and shuffle the sentences."""
    if not tokens.sentence_end_ids:
        raise ConfigError("sentence permutation needs DenoisingTokens(sentence_end_ids=...), e.g. the id of '.' "
                          "(and '!', '?'); without them a document is one sentence and nothing moves.")
    rng = rng or torch_seeded_random()
    head, body, tail = _split_ends(ids, tokens)
    sentences = split_sentences(body, tokens.sentence_end_ids)
    rng.shuffle(sentences)
    return head + [t for sentence in sentences for t in sentence] + tail


def document_rotation(ids: Sequence[int], tokens: DenoisingTokens, rng: random.Random | None = None) -> list[int]:
    """Document rotation (BART §2.2): a body token is chosen uniformly and the body rotated to start with it."""
    rng = rng or torch_seeded_random()
    head, body, tail = _split_ends(ids, tokens)
    if not body:
        return head + tail
    start = rng.randrange(len(body))
    return head + body[start:] + body[:start] + tail


# ----------------------------------------------------------------------------- the recipe and the collator


@dataclass(frozen=True)
class NoisingRecipe:
    """Which noise to apply and how much; the defaults are BART's final recipe (§5.1).

    ``text_infilling`` is the mask ratio (0 turns it off), ``token_masking`` and
    ``token_deletion`` per-token probabilities. Order of application: sentence
    permutation, document rotation (document-level, on clean text, since masks could
    hide the sentence ends), text infilling, token masking, token deletion.
    """

    text_infilling: float = 0.3
    poisson_lambda: float = 3.0
    sentence_permutation: bool = True
    document_rotation: bool = False
    token_masking: float = 0.0
    token_deletion: float = 0.0

    def __post_init__(self) -> None:
        for name in ("text_infilling", "token_masking", "token_deletion"):
            _check_probability(f"NoisingRecipe.{name}", getattr(self, name))
        if not 0.0 < self.poisson_lambda <= MAX_POISSON_LAMBDA:
            raise ConfigError(f"NoisingRecipe.poisson_lambda={self.poisson_lambda} must be in "
                              f"(0, {MAX_POISSON_LAMBDA:g}]; BART uses 3.")


BART_BASE_NOISE = NoisingRecipe()


def add_noise(ids: Sequence[int], tokens: DenoisingTokens, recipe: NoisingRecipe = BART_BASE_NOISE,
              rng: random.Random | None = None) -> list[int]:
    """Apply ``recipe``'s noise to one ``[bos] body [eos]`` sequence, in the order ``NoisingRecipe`` gives."""
    rng = rng or torch_seeded_random()
    noised = [int(i) for i in ids]
    if recipe.sentence_permutation:
        noised = sentence_permutation(noised, tokens, rng)
    if recipe.document_rotation:
        noised = document_rotation(noised, tokens, rng)
    if recipe.text_infilling > 0:
        noised = text_infilling(noised, tokens, recipe.text_infilling, recipe.poisson_lambda, rng)
    if recipe.token_masking > 0:
        noised = token_masking(noised, tokens, recipe.token_masking, rng)
    if recipe.token_deletion > 0:
        noised = token_deletion(noised, tokens, recipe.token_deletion, rng)
    return noised


def seq2seq_batch(inputs: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], *, pad_id: int,
                  decoder_start_id: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Encoder inputs and decoder targets -> right-padded tensors of the model's keyword arguments.

    ``input_ids`` (B, S) padded with ``pad_id``, ``attention_mask`` (B, S) 1 on real
    tokens, ``labels`` (B, T) padded with -100, ``decoder_input_ids`` (B, T): the labels
    shifted right behind ``decoder_start_id`` (teacher forcing), ``pad_id`` where the
    labels are padding.
    """
    if len(inputs) != len(labels) or not inputs:
        raise DataError(f"seq2seq_batch got {len(inputs)} inputs and {len(labels)} label rows; "
                        "it needs the same number, at least one.")
    batch, source_len, target_len = len(inputs), max(map(len, inputs)), max(map(len, labels))
    input_ids = torch.full((batch, source_len), pad_id, dtype=torch.long)          # (B, S)
    attention_mask = torch.zeros((batch, source_len), dtype=torch.long)            # (B, S)
    label_ids = torch.full((batch, target_len), IGNORE_INDEX, dtype=torch.long)    # (B, T)
    decoder_input_ids = torch.full((batch, target_len), pad_id, dtype=torch.long)  # (B, T)
    for b, (source, target) in enumerate(zip(inputs, labels)):
        input_ids[b, : len(source)] = torch.tensor(source, dtype=torch.long)
        attention_mask[b, : len(source)] = 1
        label_ids[b, : len(target)] = torch.tensor(target, dtype=torch.long)
        decoder_input_ids[b, : len(target)] = torch.tensor([decoder_start_id, *target[:-1]], dtype=torch.long)
    batch_dict = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids,
                  "decoder_input_ids": decoder_input_ids}
    return {k: v.to(device) for k, v in batch_dict.items()} if device is not None else batch_dict


def rows_without_padding(rows: torch.Tensor, pad_id: int, collator: str) -> list[list[int]]:
    """(B, W) rows -> lists of their non-pad ids; a row of padding only is a DataError."""
    if rows.dim() != 2 or rows.shape[0] == 0 or rows.dtype.is_floating_point or rows.dtype == torch.bool:
        raise DataError(f"{collator} reads an integer tensor of rows (B, W), got {rows.dtype} {tuple(rows.shape)}.")
    out = []
    for b, row in enumerate(rows.tolist()):
        ids = [t for t in row if t != pad_id]
        if not ids:
            raise DataError(f"{collator}: row {b} holds only padding (pad_id={pad_id}); drop empty rows "
                            "when packing the data.")
        out.append(ids)
    return out


class DenoisingBatches:
    """The trainer's ``make_batch`` for BART pretraining: document rows -> noised inputs and clean labels.

    Rows (B, W) are ``[bos] text [eos]`` right-padded with ``tokens.pad_id`` (e.g.
    ``pack_segments(stream, W, cls_id=bos, sep_id=eos, pad_id=pad)``). Returns
    ``input_ids`` (B, S): the noised rows (``add_noise`` with ``recipe``), never longer
    than W (zero-length infilling spans can lengthen a short row; the body is then cut at
    the end, eos kept); ``attention_mask`` (B, S); ``labels`` (B, T): the clean rows,
    -100 on padding; ``decoder_input_ids`` (B, T): labels shifted right behind
    ``decoder_start_id`` (BART: eos, id 2, the default here).

    ``seed=None`` (training) draws from the global torch RNG; a ``seed`` (validation)
    gives the same noise for the same rows at every call, as ``MaskedLMBatches`` does.
    """

    def __init__(self, tokens: DenoisingTokens, recipe: NoisingRecipe = BART_BASE_NOISE, *,
                 decoder_start_id: int | None = None, seed: int | None = None) -> None:
        if recipe.sentence_permutation and not tokens.sentence_end_ids:
            raise ConfigError("DenoisingBatches: the recipe permutes sentences but DenoisingTokens has no "
                              "sentence_end_ids; pass the id of '.' (and '!', '?'), or use "
                              "NoisingRecipe(sentence_permutation=False).")
        self.tokens, self.recipe, self.seed = tokens, recipe, seed
        self.decoder_start_id = tokens.eos_id if decoder_start_id is None else decoder_start_id

    def __call__(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        originals = rows_without_padding(rows, self.tokens.pad_id, "DenoisingBatches")
        rng = batch_random(rows, self.seed)
        width = rows.shape[1]
        inputs = []
        for ids in originals:
            noised = add_noise(ids, self.tokens, self.recipe, rng)
            if len(noised) > width:
                keep_eos = noised[-1] == self.tokens.eos_id
                noised = noised[: width - 1] + [noised[-1]] if keep_eos else noised[:width]
            inputs.append(noised)
        return seq2seq_batch(inputs, originals, pad_id=self.tokens.pad_id, decoder_start_id=self.decoder_start_id,
                             device=rows.device)
