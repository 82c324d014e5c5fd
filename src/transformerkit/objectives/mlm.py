"""BERT's masked language model as data: choose tokens to predict and corrupt them.

Devlin et al. 2019, "BERT", §3.1 (Task #1: Masked LM) and Appendix A.1: 15% of the
WordPiece tokens are chosen as prediction targets; a chosen token becomes [MASK] 80%
of the time, a random token 10% and stays itself 10%, so the encoder cannot rely on
[MASK] marking the positions it is asked about, and [MASK] (absent at fine-tuning)
is not the only input it learns from. The whole-word variant (released with the
paper's code in 2019) chooses whole words instead of WordPiece pieces.

Masking is dynamic: ``MaskedLMBatches`` draws a new mask every time a row is used
(RoBERTa, Liu et al. 2019, §4.1). BERT's original pipeline masked each sequence
once, offline, and duplicated the data 10 times with different masks; masking per
batch costs microseconds, needs no duplicated data, and RoBERTa found it as good or
slightly better. The draws come from the global torch RNG, which the trainer
checkpoints, so a resumed run masks exactly as the uninterrupted one would.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..models.base import IGNORE_INDEX
from .nsp import unpack_pairs

CONTINUATION_PREFIX = "##"   # WordPiece marks a piece that continues the previous one

WordStarts = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def check_masking_probabilities(probability: float, replace_mask: float, replace_random: float) -> None:
    """Raise ConfigError unless each is in [0, 1] and replace_mask + replace_random <= 1."""
    for name, value in (("probability", probability), ("replace_mask", replace_mask),
                        ("replace_random", replace_random)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"Masked-LM {name}={value} is not a probability; use a value in [0, 1] "
                              "(BERT: probability=0.15, replace_mask=0.8, replace_random=0.1).")
    if replace_mask + replace_random > 1.0:
        raise ConfigError(f"Masked-LM replace_mask={replace_mask} + replace_random={replace_random} exceeds 1; "
                          "the rest (1 - both) is the share of chosen tokens left unchanged.")


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_mask: torch.Tensor,
    probability: float = 0.15,
    replace_mask: float = 0.8,
    replace_random: float = 0.1,
    word_starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose masked-LM targets and corrupt them: returns ``(masked_ids, labels)``, both shaped like ``input_ids``.

    Every position not in ``special_mask`` (True = never chosen: [CLS], [SEP], padding)
    is chosen independently with ``probability``. A chosen token becomes
    ``mask_token_id`` with ``replace_mask``, a token id uniform in ``[0, vocab_size)``
    with ``replace_random`` (special ids included, as in BERT's code), else stays.
    ``labels`` holds the original id where chosen and -100 elsewhere. ``input_ids`` is
    not modified.

    Whole-word masking: with ``word_starts`` (True where a word begins, False on "##"
    continuation pieces) whole words are chosen with ``probability``, and all their
    pieces become targets. The 80/10/10 decision is also made once per word (a word is
    all [MASK], all random pieces, or all unchanged). Google's whole-word release
    decides per piece; we do not, because the point of whole-word masking is that no
    piece of the word stays visible to give the others away, and per-piece decisions
    leave one piece in ten of a chosen word unchanged. A piece right after a special
    token (or at the start of a row) starts a word even if it is a "##" piece, so a
    word never spans [SEP] or a cut between rows.

    The random numbers come from ``generator`` when given (drawn on its device, so a
    CPU generator gives the same masks for CPU and CUDA inputs), else from the global
    RNG on the input's device. Exactly three draws of ``input_ids.numel()`` values are
    made per call, whatever the data, so the RNG advances the same way every call.
    """
    check_masking_probabilities(probability, replace_mask, replace_random)
    if vocab_size < 1:
        raise ConfigError(f"vocab_size={vocab_size} must be at least 1.")
    if not 0 <= mask_token_id < vocab_size:
        raise ConfigError(f"mask_token_id={mask_token_id} is not an id of a vocabulary of {vocab_size} tokens.")
    if input_ids.dim() < 1 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor (B, T), got {input_ids.dtype} {tuple(input_ids.shape)}")
    for name, tensor in (("special_mask", special_mask), ("word_starts", word_starts)):
        if tensor is not None and tensor.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but input_ids has {tuple(input_ids.shape)}")

    shape, length = input_ids.shape, input_ids.shape[-1]
    ids = input_ids.reshape(-1, length)                                          # (B, T)
    special = special_mask.reshape(-1, length).to(ids.device, torch.bool)        # (B, T)
    pick_draw = _uniform(ids.shape, ids.device, generator)                       # (B, T)
    action_draw = _uniform(ids.shape, ids.device, generator)                     # (B, T)
    random_ids = _randint(vocab_size, ids.shape, ids.device, generator)          # (B, T)
    if word_starts is not None:
        # Every piece of a word reads the draws of its word's first position.
        first_piece = _first_piece_of_word(word_starts.reshape(-1, length).to(ids.device, torch.bool), special)
        pick_draw = pick_draw.gather(1, first_piece)
        action_draw = action_draw.gather(1, first_piece)

    chosen = (pick_draw < probability) & ~special                               # (B, T)
    to_mask = chosen & (action_draw < replace_mask)
    to_random = chosen & (action_draw >= replace_mask) & (action_draw < replace_mask + replace_random)
    masked = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked = torch.where(to_random, random_ids.to(ids.dtype), masked)
    labels = torch.where(chosen, ids.long(), torch.full_like(ids, IGNORE_INDEX, dtype=torch.long))
    return masked.reshape(shape), labels.reshape(shape)


def _uniform(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randint(high: int, shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randint(high, shape, device=device)
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)


def _first_piece_of_word(word_starts: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """(B, T) bool, bool -> (B, T) long: the column where each position's word begins.

    A word begins at a word start, at a special token, right after one, and at column 0;
    so special tokens are one-position words and never share a draw with text.
    """
    after_special = F.pad(special[:, :-1], (1, 0), value=True)                  # column 0 counts as "after"
    begins = word_starts | special | after_special                              # (B, T)
    columns = torch.arange(begins.shape[1], device=begins.device).expand_as(begins)
    # The latest beginning at or before each column: a running maximum over begin columns.
    return torch.where(begins, columns, torch.zeros_like(columns)).cummax(dim=1).values


def word_starts_from_tokens(token_strings: Sequence[str] | Sequence[Sequence[str]]) -> torch.Tensor:
    """Token strings (T,) or (B, T) -> bool tensor of the same shape, False on "##" continuation pieces."""
    if len(token_strings) and not isinstance(token_strings[0], str):
        lengths = {len(row) for row in token_strings}
        if len(lengths) > 1:
            raise ValueError(f"rows of token strings have different lengths {sorted(lengths)}; pad them first")
        return torch.tensor([[not t.startswith(CONTINUATION_PREFIX) for t in row] for row in token_strings],
                            dtype=torch.bool)
    return torch.tensor([not t.startswith(CONTINUATION_PREFIX) for t in token_strings], dtype=torch.bool)


def word_start_table(id_to_token: Callable[[int], str | None] | Sequence[str], vocab_size: int | None = None
                     ) -> torch.Tensor:
    """A bool lookup table (V,) over the vocabulary: True for ids whose token does not start with "##".

    ``id_to_token`` is a tokenizer's ``id_to_token`` method (then pass ``vocab_size``)
    or the list of tokens in id order. Ids without a token count as word starts.
    """
    if callable(id_to_token):
        if vocab_size is None:
            raise ConfigError("word_start_table needs vocab_size when id_to_token is a function.")
        tokens = [id_to_token(i) for i in range(vocab_size)]
    else:
        tokens = list(id_to_token)
    return torch.tensor([not (t or "").startswith(CONTINUATION_PREFIX) for t in tokens], dtype=torch.bool)


def word_starts_from_ids(input_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Token ids (any shape) -> bool word starts of the same shape, looked up in ``word_start_table``'s table."""
    return table.to(input_ids.device)[input_ids.long()]


def pack_segments(ids: Sequence[int] | np.ndarray | torch.Tensor, max_length: int, *, cls_id: int, sep_id: int,
                  pad_id: int) -> torch.Tensor:
    """Cut a token stream into MLM-only rows ``[CLS] chunk [SEP]``: a LongTensor (N, max_length).

    The chunks of ``max_length - 2`` tokens tile the stream in order without overlap
    (RoBERTa's FULL-SENTENCES packing, minus the next-sentence objective); the last,
    shorter chunk is kept and right-padded with ``pad_id``, which must not occur in the text.
    """
    if max_length < 3:
        raise ConfigError(f"max_length={max_length} leaves no room for a token between [CLS] and [SEP]; use >= 3.")
    stream = torch.as_tensor(np.asarray(ids).astype(np.int64)).reshape(-1)
    if len(stream) == 0:
        raise DataError("pack_segments got an empty token stream; encode some text first.")
    chunk = max_length - 2
    n_rows = -(-len(stream) // chunk)
    rows = torch.full((n_rows, max_length), pad_id, dtype=torch.long)           # (N, L)
    padded = torch.full((n_rows * chunk,), pad_id, dtype=torch.long)
    padded[: len(stream)] = stream
    rows[:, 0] = cls_id
    rows[:, 1 : 1 + chunk] = padded.view(n_rows, chunk)
    rows[:, 1 + chunk] = sep_id
    tail = len(stream) - (n_rows - 1) * chunk                                   # tokens in the last row
    rows[-1, 1 + tail] = sep_id
    rows[-1, 2 + tail :] = pad_id
    return rows


class MaskedLMBatches:
    """The trainer's ``make_batch`` for BERT pretraining: packed rows -> the model's keyword arguments.

    Rows come from ``nsp.pack_pairs`` (``nsp=True``: width ``2 * max_length + 1``,
    ``[input_ids | token_type_ids | next_sentence_label]``) or from ``pack_segments``
    (``nsp=False``: width ``max_length``, one segment, no next_sentence_label). Calling
    it returns ``input_ids`` (masked), ``token_type_ids``, ``attention_mask`` (0 on
    padding), ``labels`` (-100 where not predicted) and, with nsp, ``next_sentence_label``.

    ``special_ids`` (and ``pad_id``) are never chosen. ``word_starts`` turns on
    whole-word masking: a bool table over the vocabulary (``word_start_table``) or a
    function from input ids (B, T) to word starts (B, T).

    ``seed=None`` (training) masks from the global RNG: a new mask every time, which
    the trainer's RNG checkpoint makes resumable. A ``seed`` (validation) masks from a
    fresh ``torch.Generator`` seeded from ``seed`` and the rows' contents at every
    call: the same rows get the same masks at every evaluation, so validation losses
    compare across steps, and different micro-batches do not all mask the same
    positions. It leaves the global RNG alone.
    """

    def __init__(
        self,
        max_length: int,
        mask_token_id: int,
        vocab_size: int,
        special_ids: Iterable[int],
        pad_id: int,
        word_starts: WordStarts | None = None,
        probability: float = 0.15,
        nsp: bool = True,
        seed: int | None = None,
        *,
        replace_mask: float = 0.8,
        replace_random: float = 0.1,
    ) -> None:
        check_masking_probabilities(probability, replace_mask, replace_random)
        if not 0 <= mask_token_id < vocab_size:
            raise ConfigError(f"mask_token_id={mask_token_id} is not an id of a vocabulary of {vocab_size} tokens.")
        if isinstance(word_starts, torch.Tensor) and (word_starts.dtype != torch.bool or word_starts.dim() != 1
                                                      or len(word_starts) < vocab_size):
            raise ConfigError(f"word_starts table must be a bool tensor (vocab_size={vocab_size},), got "
                              f"{word_starts.dtype} {tuple(word_starts.shape)}; build it with word_start_table.")
        self.max_length, self.mask_token_id, self.vocab_size = max_length, mask_token_id, vocab_size
        self.pad_id, self.probability, self.nsp, self.seed = pad_id, probability, nsp, seed
        self.replace_mask, self.replace_random = replace_mask, replace_random
        self.special_ids = torch.tensor(sorted({*special_ids, pad_id}), dtype=torch.long)
        self.word_starts = word_starts
        self._device_copies: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def row_width(self) -> int:
        """Width of the rows this batcher reads: 2 * max_length + 1 with nsp, else max_length."""
        return 2 * self.max_length + 1 if self.nsp else self.max_length

    def __call__(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        if rows.dim() != 2 or rows.shape[1] != self.row_width:
            raise DataError(f"MaskedLMBatches(max_length={self.max_length}, nsp={self.nsp}) reads rows of width "
                            f"{self.row_width}, got shape {tuple(rows.shape)}; pack them with "
                            f"{'pack_pairs' if self.nsp else 'pack_segments'} and the same max_length.")
        rows = rows.long()
        if self.nsp:
            input_ids, token_type_ids, next_sentence_label = unpack_pairs(rows, self.max_length)  # (B, T) (B, T) (B,)
        else:
            input_ids, token_type_ids = rows, torch.zeros_like(rows)                             # (B, T) (B, T)
        special = torch.isin(input_ids, self._on(rows.device, "special_ids"))      # (B, T)
        masked_ids, labels = mask_tokens(
            input_ids, mask_token_id=self.mask_token_id, vocab_size=self.vocab_size, special_mask=special,
            probability=self.probability, replace_mask=self.replace_mask, replace_random=self.replace_random,
            word_starts=self._word_starts(input_ids), generator=self._generator(rows))
        batch = {"input_ids": masked_ids, "token_type_ids": token_type_ids,
                 "attention_mask": (input_ids != self.pad_id).long(), "labels": labels}
        if self.nsp:
            batch["next_sentence_label"] = next_sentence_label
        return batch

    def _word_starts(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        if self.word_starts is None:
            return None
        if isinstance(self.word_starts, torch.Tensor):
            return word_starts_from_ids(input_ids, self._on(input_ids.device, "word_starts"))
        return self.word_starts(input_ids)

    def _on(self, device: torch.device, name: str) -> torch.Tensor:
        """Attribute ``name`` (a tensor) on ``device``, copied there once rather than every batch."""
        key = (name, device)
        if key not in self._device_copies:
            self._device_copies[key] = getattr(self, name).to(device)
        return self._device_copies[key]

    def _generator(self, rows: torch.Tensor) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(batch_seed(self.seed, rows))


def batch_seed(seed: int, rows: torch.Tensor) -> int:
    """The seed of a seeded collator's call on ``rows``: the same rows draw the same noise at every call
    (validation losses compare across steps), different rows different noise. Shared by every objective."""
    return (seed * 1_000_003 + _digest(rows)) % (1 << 63)


def _digest(rows: torch.Tensor) -> int:
    """(B, W) -> an integer that changes with any entry or its place; exact integer arithmetic on any device.

    Weights stay below 2**16 so the sum cannot overflow int64 for ids below 2**24 and
    fewer than 2**23 entries.
    """
    weights = torch.arange(rows.numel(), device=rows.device).remainder_(65521).add_(1).view(rows.shape)
    return int((rows.long() * weights).sum())
