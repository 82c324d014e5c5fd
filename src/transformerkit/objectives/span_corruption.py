"""T5's span corruption as data: drop random spans, name each by a sentinel, predict what was dropped.

Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", §3.1.4 (unsupervised objective, Figure 2) and §3.3.4
(corrupted spans: 15% of the tokens, mean span length 3). ``Thank you for inviting me
to your party last week`` becomes the input ``Thank you <X> me to your party <Y> week``
and the target ``<X> for inviting <Y> last <Z>``: every dropped span is replaced by one
sentinel in the input, and the target lists each sentinel followed by its span, closed
by one more sentinel. Both end with EOS. Targets are short (about 0.15 + 0.05 of the
row), which makes pretraining cheaper than predicting the whole text.

The spans are laid out as in T5's released code: the number of noise tokens and of
spans are fixed by the row length, the noise and the kept tokens are each split into
that many non-empty runs uniformly at random, and the runs alternate, kept first.
Every row therefore starts with a kept token and ends with a noise span, and its
corrupted lengths depend on its length only (``span_corruption_lengths``).

One difference from that code: it closes the target with a sentinel only when the row
ends with kept text, which under its layout never happens; we always close it, as the
paper's Figure 2 does (``final_sentinel=False`` gives the code's behaviour).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError, DataError
from .denoising import batch_random, rows_without_padding, seq2seq_batch, torch_seeded_random

T5_NUM_SENTINELS = 100       # <extra_id_0> ... <extra_id_99>


@dataclass(frozen=True)
class SentinelIds:
    """The ids of the sentinel tokens: sentinel ``i`` is ``first_id + i * step``, for ``i < count``.

    T5's vocabulary ends with them counting down: ``<extra_id_0>`` is the last id
    (``SentinelIds.t5(len(tokenizer))``). A tokenizer of our own that appends them in
    order uses ``SentinelIds(first_id=base_vocab_size, step=1)``.
    """

    first_id: int
    count: int = T5_NUM_SENTINELS
    step: int = -1

    def __post_init__(self) -> None:
        if self.count < 1 or self.step == 0:
            raise ConfigError(f"SentinelIds(first_id={self.first_id}, count={self.count}, step={self.step}) needs "
                              "count >= 1 and a non-zero step (T5: count 100, step -1).")
        if min(self.first_id, self(self.count - 1)) < 0:
            raise ConfigError(f"SentinelIds(first_id={self.first_id}, count={self.count}, step={self.step}) runs "
                              f"below id 0; T5's sentinels count down from vocab_size - 1.")

    @classmethod
    def t5(cls, vocab_size: int = 32100, count: int = T5_NUM_SENTINELS) -> SentinelIds:
        """T5's layout: ``<extra_id_0>`` = ``vocab_size - 1``, counting down (t5-small's tokenizer: 32100 ids)."""
        return cls(first_id=vocab_size - 1, count=count, step=-1)

    def __call__(self, i: int) -> int:
        """The id of sentinel ``i``."""
        if not 0 <= i < self.count:
            raise ConfigError(f"sentinel {i} does not exist; there are {self.count} (0 .. {self.count - 1}).")
        return self.first_id + i * self.step

    @property
    def ids(self) -> list[int]:
        """All sentinel ids, sentinel 0 first."""
        return [self.first_id + i * self.step for i in range(self.count)]

    def index(self, token_id: int) -> int | None:
        """Which sentinel ``token_id`` is, or None if it is not one."""
        offset, remainder = divmod(token_id - self.first_id, self.step)
        return offset if remainder == 0 and 0 <= offset < self.count else None


def _check_noise_settings(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ConfigError(f"noise_density={noise_density} must be in (0, 1); T5 uses 0.15.")
    if mean_noise_span_length < 1.0:
        raise ConfigError(f"mean_noise_span_length={mean_noise_span_length} must be at least 1 (a span holds at "
                          "least one token); T5 uses 3.")


def noise_span_counts(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
                      ) -> tuple[int, int]:
    """Row length -> (noise tokens, noise spans), as T5 fixes them (§3.3.4).

    ``round(length * noise_density)`` noise tokens, at least 1 and leaving at least one
    kept token; ``round(noise / mean_noise_span_length)`` spans, at least 1 and at most
    the number of kept tokens (each span needs a kept run before it; this bound only
    binds at densities far above T5's). Rounding is Python's, half to even, like T5's.
    """
    _check_noise_settings(noise_density, mean_noise_span_length)
    if length < 2:
        raise DataError(f"span corruption needs rows of at least 2 tokens (one kept, one noise), got {length}; "
                        "drop or merge short rows.")
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = min(max(round(num_noise / mean_noise_span_length), 1), length - num_noise)
    return num_noise, num_spans


def span_corruption_lengths(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0, *,
                            final_sentinel: bool = True) -> tuple[int, int]:
    """Row length -> (input length, target length) after span corruption, EOS included in both.

    input = kept tokens + one sentinel per span + EOS; target = noise tokens + one
    sentinel per span (+ the closing sentinel) + EOS.
    """
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + int(final_sentinel) + 1


def span_corruption_raw_length(inputs_length: int, noise_density: float = 0.15,
                               mean_noise_span_length: float = 3.0, *, final_sentinel: bool = True
                               ) -> tuple[int, int]:
    """The longest raw row whose corrupted input fits ``inputs_length``: returns (raw length, target length).

    T5's ``random_spans_helper`` arithmetic: pack raw rows of this length and every
    input comes out at ``inputs_length`` (or one less, where the input length jumps by
    two, as a span and a noise token are added with one more raw token); every target at
    the returned length. For 512 with T5's settings: 568 raw tokens, targets of 115 (114
    without the closing sentinel, as in T5).
    """
    _check_noise_settings(noise_density, mean_noise_span_length)
    if inputs_length < 3:
        raise ConfigError(f"inputs_length={inputs_length} leaves no room for a kept token, a sentinel and EOS; "
                          "use at least 3 (T5: 512).")
    # The input length grows by 0, 1 or 2 per raw token and is about length * (1 - d + d / m).
    shrink = 1.0 - noise_density + noise_density / mean_noise_span_length
    raw = max(2, int(inputs_length / shrink) - 4)
    while raw > 2 and span_corruption_lengths(raw, noise_density, mean_noise_span_length)[0] > inputs_length:
        raw -= 1
    while span_corruption_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        raw += 1
    return raw, span_corruption_lengths(raw, noise_density, mean_noise_span_length,
                                        final_sentinel=final_sentinel)[1]


def _random_run_lengths(total: int, runs: int, rng: random.Random) -> list[int]:
    """Split ``total`` items into ``runs`` non-empty runs; every such split is equally likely."""
    cuts = sorted(rng.sample(range(1, total), runs - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                            rng: random.Random | None = None) -> list[bool]:
    """Which of ``length`` positions are noise (T5 §3.3.4): kept and noise runs alternate, kept first."""
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    rng = rng or torch_seeded_random()
    kept_runs = _random_run_lengths(length - num_noise, num_spans, rng)
    noise_runs = _random_run_lengths(num_noise, num_spans, rng)
    mask: list[bool] = []
    for kept, noise in zip(kept_runs, noise_runs):
        mask += [False] * kept + [True] * noise
    return mask


def _sentinel_budget_error(length: int, num_spans: int, needed: int, sentinels: SentinelIds, noise_density: float,
                           mean_noise_span_length: float, final_sentinel: bool) -> ConfigError:
    longest = length
    while longest > 2 and (noise_span_counts(longest, noise_density, mean_noise_span_length)[1]
                           + int(final_sentinel)) > sentinels.count:
        longest -= 1
    return ConfigError(
        f"span corruption of a row of {length} tokens (noise_density={noise_density}, "
        f"mean_noise_span_length={mean_noise_span_length}) makes {num_spans} spans and needs {needed} sentinels, "
        f"but only {sentinels.count} exist. Use rows of at most {longest} tokens, a lower noise_density, "
        "or a longer mean_noise_span_length (or give the tokenizer more sentinels).")


def span_corruption(
    ids: Sequence[int],
    *,
    sentinels: SentinelIds,
    eos_id: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    final_sentinel: bool = True,
    rng: random.Random | None = None,
) -> tuple[list[int], list[int]]:
    """One raw row (no EOS) -> (input ids, target ids) of T5's span corruption (§3.1.4, Figure 2).

    Input: the kept runs, each noise span replaced by its sentinel (0, 1, ... in order),
    then EOS. Target: each sentinel followed by its span's tokens, the closing sentinel
    (``final_sentinel``), then EOS. ``fill_sentinels`` undoes it. The random numbers
    come from ``rng``, else from a seed drawn from the global torch RNG.
    """
    ids = [int(t) for t in ids]
    num_noise, num_spans = noise_span_counts(len(ids), noise_density, mean_noise_span_length)
    needed = num_spans + int(final_sentinel)
    if needed > sentinels.count:
        raise _sentinel_budget_error(len(ids), num_spans, needed, sentinels, noise_density, mean_noise_span_length,
                                     final_sentinel)
    noise = random_spans_noise_mask(len(ids), noise_density, mean_noise_span_length, rng)
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for position, (token, is_noise) in enumerate(zip(ids, noise)):
        if is_noise:
            if position == 0 or not noise[position - 1]:                      # a span begins: one sentinel
                span += 1
                inputs.append(sentinels(span))
                targets.append(sentinels(span))
            targets.append(token)
        else:
            inputs.append(token)
    if final_sentinel:
        targets.append(sentinels(span + 1))
    return inputs + [eos_id], targets + [eos_id]


def fill_sentinels(inputs: Sequence[int], targets: Sequence[int], *, sentinels: SentinelIds, eos_id: int
                   ) -> list[int]:
    """Undo span corruption: put each sentinel's span from ``targets`` back into ``inputs``; EOS dropped.

    Also reads a model's prediction as a target; a sentinel the target lacks is filled with nothing.
    """
    def without_eos(ids: Sequence[int]) -> list[int]:
        ids = [int(t) for t in ids]
        return ids[: ids.index(eos_id)] if eos_id in ids else ids

    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for token in without_eos(targets):
        index = sentinels.index(token)
        if index is not None:
            current = spans.setdefault(index, [])
        elif current is not None:
            current.append(token)
    restored: list[int] = []
    for token in without_eos(inputs):
        index = sentinels.index(token)
        restored.extend(spans.get(index, []) if index is not None else [token])
    return restored


class SpanCorruptionBatches:
    """The trainer's ``make_batch`` for T5 pretraining: raw rows -> corrupted inputs and sentinel targets.

    Rows (B, W) are raw token ids without EOS, e.g. a token stream cut into rows of
    ``span_corruption_raw_length(512)[0]`` = 568; ``pad_id`` (dropped before corruption)
    may pad a short last row. Returns ``input_ids`` (B, S) and ``attention_mask`` (B, S),
    ``labels`` (B, T): the targets, -100 on padding, and ``decoder_input_ids`` (B, T):
    the labels shifted right behind ``decoder_start_id`` (T5 starts from the pad id, the
    default here). Rows of one length give S and T of ``span_corruption_lengths``.

    ``seed=None`` (training) draws from the global torch RNG; a ``seed`` (validation)
    gives the same corruption for the same rows at every call and leaves the global RNG
    alone. A row holding a sentinel id is a DataError (the sentinels would be ambiguous).
    """

    def __init__(
        self,
        sentinels: SentinelIds,
        eos_id: int,
        pad_id: int,
        *,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        decoder_start_id: int | None = None,
        final_sentinel: bool = True,
        seed: int | None = None,
    ) -> None:
        _check_noise_settings(noise_density, mean_noise_span_length)
        for name, value in (("eos_id", eos_id), ("pad_id", pad_id)):
            if sentinels.index(value) is not None:
                raise ConfigError(f"SpanCorruptionBatches: {name}={value} is sentinel {sentinels.index(value)}; "
                                  "sentinel ids must not overlap the special tokens.")
        self.sentinels, self.eos_id, self.pad_id = sentinels, eos_id, pad_id
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length
        self.decoder_start_id = pad_id if decoder_start_id is None else decoder_start_id
        self.final_sentinel, self.seed = final_sentinel, seed
        self._sentinel_ids = torch.tensor(sentinels.ids, dtype=torch.long)

    def __call__(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        raw_rows = rows_without_padding(rows, self.pad_id, "SpanCorruptionBatches")
        has_sentinel = torch.isin(rows.long(), self._sentinel_ids.to(rows.device)).any(dim=1)   # (B,)
        if bool(has_sentinel.any()):
            b = int(has_sentinel.nonzero()[0])
            raise DataError(f"SpanCorruptionBatches: row {b} holds a sentinel id "
                            f"({self.sentinels.first_id} step {self.sentinels.step}, {self.sentinels.count} ids); "
                            "the text's vocabulary must not include the sentinels. Check SentinelIds against "
                            "the tokenizer.")
        rng = batch_random(rows, self.seed)
        inputs, targets = [], []
        for ids in raw_rows:
            source, target = span_corruption(
                ids, sentinels=self.sentinels, eos_id=self.eos_id, noise_density=self.noise_density,
                mean_noise_span_length=self.mean_noise_span_length, final_sentinel=self.final_sentinel, rng=rng)
            inputs.append(source)
            targets.append(target)
        return seq2seq_batch(inputs, targets, pad_id=self.pad_id, decoder_start_id=self.decoder_start_id,
                             device=rows.device)
