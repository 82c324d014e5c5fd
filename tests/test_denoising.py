"""The encoder-decoder denoising objectives: T5's span corruption and BART's noising, and their batch makers.

Random behaviour is checked statistically, as in test_objectives.py: a rate r measured
over n trials must lie within 4 standard deviations sqrt(r (1 - r) / n) of its target
(the seeds are fixed, so the tests are deterministic; a correct implementation fails a
4-sigma check by chance about once in 16,000 seeds). Distributions are checked with a
chi-square statistic against its 1e-4 critical value.
"""
from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter

import pytest
import torch

from transformerkit.errors import ConfigError, DataError
from transformerkit.objectives import (
    BART_BASE_NOISE,
    IGNORE_INDEX,
    DenoisingBatches,
    DenoisingTokens,
    NoisingRecipe,
    SentinelIds,
    SpanCorruptionBatches,
    add_noise,
    document_rotation,
    fill_sentinels,
    infilling_spans,
    noise_span_counts,
    random_spans_noise_mask,
    sentence_permutation,
    span_corruption,
    span_corruption_lengths,
    span_corruption_raw_length,
    split_sentences,
    text_infilling,
    token_deletion,
    token_masking,
)

BOS, PAD, EOS, MASK, STOP = 0, 1, 2, 3, 4          # BART's order for the first three; STOP is '.'
VOCAB = 1000
TOKENS = DenoisingTokens(bos_id=BOS, eos_id=EOS, mask_id=MASK, pad_id=PAD, sentence_end_ids={STOP})
T5_EOS, T5_PAD = 1, 0
SENTINELS = SentinelIds.t5(VOCAB)                   # 999, 998, ..., 900


def within(rate: float, target: float, trials: int, sigmas: float = 4.0) -> bool:
    return abs(rate - target) <= sigmas * math.sqrt(target * (1 - target) / trials)


def runs(mask: list[bool], value: bool) -> list[int]:
    """Lengths of the maximal runs of ``value`` in ``mask``."""
    lengths, current = [], 0
    for m in mask:
        if m == value:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths + ([current] if current else [])


def text(length: int, rng: random.Random, low: int = 5, high: int = 900) -> list[int]:
    """Ordinary token ids, clear of the special ids and of the T5 sentinels."""
    return [rng.randrange(low, high) for _ in range(length)]


def document(body: list[int]) -> list[int]:
    return [BOS, *body, EOS]


# ============================================================================= T5 span corruption


def test_sentinel_ids_count_down_like_t5_or_up_like_an_appended_vocabulary() -> None:
    t5 = SentinelIds.t5(32100)
    assert (t5(0), t5(1), t5(99)) == (32099, 32098, 32000)
    assert t5.ids == list(range(32099, 31999, -1))
    assert [t5.index(i) for i in (32099, 32000, 31999, 32100, 5)] == [0, 99, None, None, None]
    appended = SentinelIds(first_id=500, count=10, step=1)
    assert appended.ids == list(range(500, 510)) and appended.index(509) == 9 and appended.index(510) is None
    with pytest.raises(ConfigError, match="sentinel 100 does not exist"):
        t5(100)
    with pytest.raises(ConfigError, match="below id 0"):
        SentinelIds(first_id=50, count=100)
    with pytest.raises(ConfigError, match="non-zero step"):
        SentinelIds(first_id=50, count=10, step=0)


def test_noise_and_span_counts_follow_t5_s_rounding() -> None:
    # T5's numbers for its 568-token rows: 85 noise tokens in 28 spans.
    assert noise_span_counts(568) == (85, 28)
    assert noise_span_counts(2) == (1, 1) and noise_span_counts(10) == (2, 1)   # at least one noise token and span
    # At a high density the spans are capped by the kept tokens (each span needs a kept run before it).
    assert noise_span_counts(10, noise_density=0.8, mean_noise_span_length=1.0) == (8, 2)


def test_noise_mask_has_the_counted_tokens_and_spans_kept_first() -> None:
    rng = random.Random(0)
    total_noise = total_tokens = total_spans = 0
    for length in range(2, 600):
        mask = random_spans_noise_mask(length, rng=rng)
        num_noise, num_spans = noise_span_counts(length)
        noise_runs, kept_runs = runs(mask, True), runs(mask, False)
        assert len(mask) == length and sum(mask) == num_noise
        assert len(noise_runs) == len(kept_runs) == num_spans
        assert not mask[0] and mask[-1]                                         # kept first, noise last
        total_noise, total_tokens, total_spans = total_noise + num_noise, total_tokens + length, total_spans + num_spans
    # Over all lengths, rounding errs both ways: each row's count is within 0.5 of 0.15 L,
    # and the spans within 0.5 of noise / 3.
    assert abs(total_noise / total_tokens - 0.15) < 0.002
    assert abs(total_noise / total_spans - 3.0) < 0.1


def test_span_lengths_are_uniform_splits_of_the_noise_and_the_kept_tokens() -> None:
    # For a uniform split of N tokens into k non-empty runs, P(a run has length 1) = (k - 1) / (N - 1).
    # Runs of one row are negatively correlated (their sum is fixed), so the binomial bound is conservative.
    rng = random.Random(1)
    noise_lengths, kept_lengths = [], []
    for _ in range(400):
        mask = random_spans_noise_mask(568, rng=rng)
        noise_lengths += runs(mask, True)
        kept_lengths += runs(mask, False)
    n = len(noise_lengths)
    assert n == 400 * 28
    assert sum(noise_lengths) / n == pytest.approx(85 / 28)
    assert within(noise_lengths.count(1) / n, 27 / 84, n)
    assert within(kept_lengths.count(1) / n, 27 / 482, n)
    assert within(noise_lengths.count(3) / n, math.comb(81, 26) / math.comb(84, 27), n)


def test_span_corruption_layout_and_exact_reconstruction() -> None:
    rng = random.Random(2)
    for length in [2, 3, 10, 31, 100, 568, *range(40, 60)]:
        ids = text(length, rng)
        inputs, targets = span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS, rng=rng)
        _, num_spans = noise_span_counts(length)
        assert (len(inputs), len(targets)) == span_corruption_lengths(length)
        assert inputs[-1] == T5_EOS and targets[-1] == T5_EOS and T5_EOS not in inputs[:-1] + targets[:-1]
        # Sentinels in order: 0 .. k-1 in the input, 0 .. k (the closing one) in the target, which starts with one.
        assert [SENTINELS.index(t) for t in inputs if t >= 900] == list(range(num_spans))
        assert [SENTINELS.index(t) for t in targets if t >= 900] == list(range(num_spans + 1))
        assert targets[0] == SENTINELS(0) and targets[-2] == SENTINELS(num_spans)
        assert fill_sentinels(inputs, targets, sentinels=SENTINELS, eos_id=T5_EOS) == ids
        assert inputs[0] == ids[0] and inputs[-2] == SENTINELS(num_spans - 1)          # kept first, noise last


def test_without_the_final_sentinel_the_target_is_t5_code_s() -> None:
    ids = text(100, random.Random(3))
    with_final = span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS, rng=random.Random(4))
    without = span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS, final_sentinel=False, rng=random.Random(4))
    assert without[0] == with_final[0]
    assert without[1] == with_final[1][:-2] + [T5_EOS]
    assert len(without[1]) == span_corruption_lengths(100, final_sentinel=False)[1]


def test_raw_length_helper_gives_t5_s_568_and_exact_lengths() -> None:
    assert span_corruption_raw_length(512) == (568, 115)
    assert span_corruption_raw_length(512, final_sentinel=False) == (568, 114)          # T5's random_spans_helper
    rng = random.Random(5)
    many = SentinelIds(first_id=VOCAB, count=1000, step=1)                       # dense settings need more
    for density, mean in [(0.15, 3.0), (0.5, 1.0), (0.3, 8.0)]:
        for inputs_length in range(3, 700, 7):
            raw, target_length = span_corruption_raw_length(inputs_length, density, mean)
            assert span_corruption_lengths(raw, density, mean)[0] <= inputs_length
            assert span_corruption_lengths(raw + 1, density, mean)[0] > inputs_length   # the longest that fits
            assert span_corruption_lengths(raw, density, mean)[0] >= inputs_length - 1
            if inputs_length % 5 == 0:
                inputs, targets = span_corruption(text(raw, rng), sentinels=many, eos_id=T5_EOS,
                                                  noise_density=density, mean_noise_span_length=mean, rng=rng)
                assert len(targets) == target_length
                assert len(inputs) == span_corruption_lengths(raw, density, mean)[0]


def test_too_many_spans_for_the_sentinels_is_a_clear_error() -> None:
    sentinels = SentinelIds.t5(32100)
    with pytest.raises(ConfigError, match=r"2100 tokens.*105 spans and needs 106 sentinels, but only 100") as info:
        span_corruption(list(range(2100)), sentinels=sentinels, eos_id=T5_EOS, rng=random.Random(0))
    longest = int(re.search(r"rows of at most (\d+) tokens", str(info.value)).group(1))
    assert longest == 1990
    span_corruption(list(range(longest)), sentinels=sentinels, eos_id=T5_EOS, rng=random.Random(0))
    with pytest.raises(ConfigError, match="sentinels"):
        span_corruption(list(range(longest + 1)), sentinels=sentinels, eos_id=T5_EOS, rng=random.Random(0))
    # Without the closing sentinel one more span fits.
    span_corruption(list(range(longest + 1)), sentinels=sentinels, eos_id=T5_EOS, final_sentinel=False,
                    rng=random.Random(0))


def test_span_corruption_setting_errors() -> None:
    with pytest.raises(DataError, match="at least 2 tokens"):
        span_corruption([7], sentinels=SENTINELS, eos_id=T5_EOS)
    with pytest.raises(ConfigError, match="noise_density"):
        span_corruption([7, 8, 9], sentinels=SENTINELS, eos_id=T5_EOS, noise_density=1.0)
    with pytest.raises(ConfigError, match="mean_noise_span_length"):
        random_spans_noise_mask(10, mean_noise_span_length=0.5)
    with pytest.raises(ConfigError, match="inputs_length=2"):
        span_corruption_raw_length(2)


def test_span_corruption_is_deterministic_per_seed_and_follows_the_global_rng() -> None:
    ids = text(200, random.Random(6))
    first = span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS, rng=random.Random(7))
    assert first == span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS, rng=random.Random(7))
    assert first != span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS, rng=random.Random(8))
    torch.manual_seed(9)
    a = span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS)
    torch.manual_seed(9)
    assert a == span_corruption(ids, sentinels=SENTINELS, eos_id=T5_EOS)


def t5_batcher(**kwargs) -> SpanCorruptionBatches:
    return SpanCorruptionBatches(SENTINELS, eos_id=T5_EOS, pad_id=T5_PAD, **kwargs)


def test_span_corruption_batches_have_t5_s_shapes_and_teacher_forcing() -> None:
    raw, target_length = span_corruption_raw_length(512)
    rows = torch.randint(5, 900, (4, raw), generator=torch.Generator().manual_seed(0))     # (B, 568)
    batch = t5_batcher(seed=0)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    assert batch["input_ids"].shape == (4, 512) and batch["labels"].shape == (4, target_length)
    assert batch["attention_mask"].eq(1).all() and batch["labels"].ne(IGNORE_INDEX).all()
    assert batch["decoder_input_ids"][:, 0].eq(T5_PAD).all()                     # T5 starts from the pad id
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
    for row, inputs, labels in zip(rows, batch["input_ids"], batch["labels"]):
        assert fill_sentinels(inputs.tolist(), labels.tolist(), sentinels=SENTINELS, eos_id=T5_EOS) == row.tolist()


def test_span_corruption_batches_pad_a_short_row() -> None:
    rows = torch.randint(5, 900, (3, 100), generator=torch.Generator().manual_seed(1))
    rows[2, 60:] = T5_PAD
    batch = t5_batcher(seed=0)(rows)
    full, short = span_corruption_lengths(100), span_corruption_lengths(60)
    assert batch["input_ids"].shape == (3, full[0]) and batch["labels"].shape == (3, full[1])
    assert batch["attention_mask"][2].sum() == short[0] and batch["input_ids"][2, short[0] :].eq(T5_PAD).all()
    assert batch["labels"][2, short[1] :].eq(IGNORE_INDEX).all()
    assert batch["decoder_input_ids"][2, short[1] :].eq(T5_PAD).all()
    restored = fill_sentinels(batch["input_ids"][2, : short[0]].tolist(), batch["labels"][2, : short[1]].tolist(),
                              sentinels=SENTINELS, eos_id=T5_EOS)
    assert restored == rows[2, :60].tolist()


def test_span_corruption_validation_batches_repeat_and_training_batches_follow_the_global_rng() -> None:
    rows = torch.randint(5, 900, (8, 120), generator=torch.Generator().manual_seed(2))
    valid = t5_batcher(seed=0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first, second = valid(rows), valid(rows)
    assert torch.equal(torch.get_rng_state(), state)                            # validation draws nothing global
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(t5_batcher(seed=1)(rows)["labels"], first["labels"])
    train = t5_batcher()
    torch.manual_seed(3)
    a, b = train(rows), train(rows)
    assert not torch.equal(a["labels"], b["labels"])
    torch.manual_seed(3)
    assert all(torch.equal(a[k], v) for k, v in train(rows).items())


def test_span_corruption_batches_refuse_bad_rows_and_settings() -> None:
    rows = torch.randint(5, 900, (2, 50), generator=torch.Generator().manual_seed(3))
    rows[1, 10] = SENTINELS(4)
    with pytest.raises(DataError, match="row 1 holds a sentinel id"):
        t5_batcher()(rows)
    with pytest.raises(DataError, match="row 0 holds only padding"):
        t5_batcher()(torch.zeros(2, 50, dtype=torch.long))
    with pytest.raises(DataError, match=r"rows \(B, W\)"):
        t5_batcher()(torch.ones(50, dtype=torch.long) * 7)
    with pytest.raises(ConfigError, match="eos_id=999 is sentinel 0"):
        SpanCorruptionBatches(SENTINELS, eos_id=999, pad_id=0)
    with pytest.raises(ConfigError, match="noise_density"):
        t5_batcher(noise_density=0.0)


# ============================================================================= BART noising


@pytest.fixture(scope="module")
def documents() -> list[list[int]]:
    """200 documents of 500 body tokens: sentences of 5-20 tokens ending in STOP."""
    rng = random.Random(10)
    docs = []
    for _ in range(200):
        body: list[int] = []
        while len(body) < 499:
            body += text(rng.randint(4, 19), rng) + [STOP]
        docs.append(document(body[:499] + [STOP]))
    return docs


def test_token_masking_rate_and_nothing_else_changes(documents) -> None:
    rng = random.Random(11)
    masked = total = 0
    for doc in documents:
        noised = token_masking(doc, TOKENS, 0.3, rng)
        assert len(noised) == len(doc) and noised[0] == BOS and noised[-1] == EOS
        changed = [(a, b) for a, b in zip(doc, noised) if a != b]
        assert all(b == MASK for _, b in changed)
        masked += len(changed)
        total += len(doc) - 2
    assert total == 100_000 and within(masked / total, 0.3, total)


def test_token_deletion_rate_keeps_order_and_the_ends(documents) -> None:
    rng = random.Random(12)
    deleted = total = 0
    for doc in documents[:100]:
        noised = token_deletion(doc, TOKENS, 0.2, rng)
        assert noised[0] == BOS and noised[-1] == EOS
        remaining = iter(doc)
        assert all(any(t == u for u in remaining) for t in noised)              # a subsequence of the document
        deleted += len(doc) - len(noised)
        total += len(doc) - 2
    assert within(deleted / total, 0.2, total)


def test_special_ids_inside_the_body_are_never_noised() -> None:
    body = [7, 8, EOS, 9, BOS, 10, PAD, 11, MASK, 12] * 30
    doc = document(body)
    specials = [t for t in doc if t in (BOS, EOS, PAD)]
    for seed in range(20):
        rng = random.Random(seed)
        assert [t for t in token_deletion(doc, TOKENS, 1.0, rng) if t != MASK] == specials
        assert [t for t in token_masking(doc, TOKENS, 1.0, rng) if t != MASK] == specials
        infilled = text_infilling(doc, TOKENS, 1.0, 3.0, rng)
        assert [t for t in infilled if t not in (MASK,)] == specials            # everything else covered
        assert infilled[0] == BOS and infilled[-1] == EOS


def test_infilling_spans_are_poisson_3_and_cover_the_ratio_exactly() -> None:
    # 40 rows of 2500 tokens, 750 masked each: about 250 spans a row, 10,000 in all. One span
    # a row is shortened to hit 750 exactly (at most 40 of 10,000 values), a bias far below the tolerances.
    rng = random.Random(13)
    lengths: list[int] = []
    for _ in range(40):
        spans = infilling_spans(2500, 0.3, 3.0, rng)
        assert sum(length for _, length in spans) == 750
        ends = [(start, start + length) for start, length in spans]
        assert ends == sorted(ends) and all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))   # disjoint, in order
        assert ends[0][0] >= 0 and ends[-1][1] <= 2500
        lengths += [length for _, length in spans]
    n = len(lengths)
    assert 9000 < n < 11000
    assert abs(sum(lengths) / n - 3.0) <= 4 * math.sqrt(3.0 / n) + 0.02          # Poisson variance = mean = 3
    assert within(lengths.count(0) / n, math.exp(-3), n)                        # zero-length share e^-3 = 0.0498
    # Chi-square over lengths 0..7 and >= 8 (8 degrees of freedom; 31.8 is the 1e-4 critical value).
    probabilities = [math.exp(-3) * 3**k / math.factorial(k) for k in range(8)]
    probabilities.append(1 - sum(probabilities))
    counts = Counter(min(length, 8) for length in lengths)
    chi_square = sum((counts[k] - n * p) ** 2 / (n * p) for k, p in enumerate(probabilities))
    assert chi_square < 31.8


def test_text_infilling_replaces_each_span_by_one_mask(documents) -> None:
    masked_total = total = 0
    for seed, doc in enumerate(documents[:60]):
        body = doc[1:-1]
        noised = text_infilling(doc, TOKENS, 0.3, 3.0, random.Random(seed))
        spans = infilling_spans(len(body), 0.3, 3.0, random.Random(seed))          # the same draws
        expected, position = [], 0
        for start, length in spans:
            expected += body[position:start] + [MASK]
            position = start + length
        assert noised == document(expected + body[position:])
        assert noised.count(MASK) == len(spans)
        masked_total += sum(length for _, length in spans)
        total += len(body)
    assert masked_total == 60 * round(500 * 0.3) and total == 60 * 500


def test_sentence_permutation_shuffles_whole_sentences_uniformly() -> None:
    sentences = [[10, 11, STOP], [20, STOP], [30, 31, 32, STOP], [40, 41]]    # the last lacks a full stop
    doc = document([t for s in sentences for t in s])
    assert split_sentences(doc[1:-1], {STOP}) == sentences
    orders = {tuple(t for i in order for t in sentences[i]): order for order in itertools.permutations(range(4))}
    rng = random.Random(14)
    seen = Counter()
    trials = 4800
    for _ in range(trials):
        noised = sentence_permutation(doc, TOKENS, rng)
        assert noised[0] == BOS and noised[-1] == EOS
        seen[orders[tuple(noised[1:-1])]] += 1                                  # whole sentences, reordered
    # All 24 orders equally likely: chi-square with 23 degrees of freedom, 1e-4 critical value 57.1.
    assert len(seen) == 24
    assert sum((count - trials / 24) ** 2 / (trials / 24) for count in seen.values()) < 57.1
    with pytest.raises(ConfigError, match="sentence_end_ids"):
        sentence_permutation(doc, DenoisingTokens(BOS, EOS, MASK, PAD))


def test_document_rotation_is_a_uniform_rotation_with_the_ends_in_place() -> None:
    body = list(range(10, 20))
    doc = document(body)
    rng = random.Random(15)
    starts = Counter()
    trials = 5000
    for _ in range(trials):
        noised = document_rotation(doc, TOKENS, rng)
        assert noised[0] == BOS and noised[-1] == EOS
        start = body.index(noised[1])
        assert noised[1:-1] == body[start:] + body[:start]
        starts[start] += 1
    assert len(starts) == 10 and all(within(c / trials, 0.1, trials) for c in starts.values())
    assert document_rotation([BOS, EOS], TOKENS, rng) == [BOS, EOS]
    assert document_rotation(body, TOKENS, random.Random(0)) != body              # ends are optional


def test_bart_recipe_permutes_then_infills(documents) -> None:
    assert BART_BASE_NOISE == NoisingRecipe(text_infilling=0.3, poisson_lambda=3.0, sentence_permutation=True,
                                            document_rotation=False, token_masking=0.0, token_deletion=0.0)
    doc = documents[0]
    noised = add_noise(doc, TOKENS, rng=random.Random(16))
    assert noised[0] == BOS and noised[-1] == EOS
    kept = [t for t in noised[1:-1] if t != MASK]
    assert len(kept) == 500 - 150                                               # 30% of the body masked
    assert not (Counter(kept) - Counter(doc))                                   # kept tokens come from the document
    # Infilling alone keeps the order of the kept tokens; with permutation it is (almost surely) not.
    infill_only = NoisingRecipe(sentence_permutation=False)
    ordered = [t for t in add_noise(doc, TOKENS, infill_only, random.Random(16))[1:-1] if t != MASK]
    remaining = iter(doc)
    assert all(any(t == u for u in remaining) for t in ordered)
    remaining = iter(doc)
    assert not all(any(t == u for u in remaining) for t in kept)


def test_every_noise_keeps_the_ends_and_is_deterministic_per_seed(documents) -> None:
    everything = NoisingRecipe(text_infilling=0.3, sentence_permutation=True, document_rotation=True,
                               token_masking=0.1, token_deletion=0.1)
    for seed, doc in enumerate(documents[:20]):
        noised = add_noise(doc, TOKENS, everything, random.Random(seed))
        assert noised[0] == BOS and noised[-1] == EOS and BOS not in noised[1:-1] and EOS not in noised[1:-1]
        assert noised == add_noise(doc, TOKENS, everything, random.Random(seed))
        assert noised != add_noise(doc, TOKENS, everything, random.Random(seed + 100))
    torch.manual_seed(17)
    first = add_noise(documents[0], TOKENS, everything)
    torch.manual_seed(17)
    assert first == add_noise(documents[0], TOKENS, everything)


def test_noising_setting_errors() -> None:
    with pytest.raises(ConfigError, match="mask_ratio=1.5"):
        text_infilling(document([5, 6]), TOKENS, 1.5)
    with pytest.raises(ConfigError, match="poisson_lambda=0"):
        infilling_spans(10, 0.3, 0.0)
    with pytest.raises(ConfigError, match="token_deletion"):
        NoisingRecipe(token_deletion=-0.1)
    with pytest.raises(ConfigError, match="mask_id=1 equals pad_id"):
        DenoisingTokens(bos_id=0, eos_id=2, mask_id=1, pad_id=1)
    with pytest.raises(ConfigError, match=r"sentence_end_ids \[2\]"):
        DenoisingTokens(bos_id=0, eos_id=2, mask_id=3, pad_id=1, sentence_end_ids=[2])


def bart_rows(documents: list[list[int]], width: int) -> torch.Tensor:
    rows = torch.full((len(documents), width), PAD, dtype=torch.long)
    for b, doc in enumerate(documents):
        rows[b, : len(doc)] = torch.tensor(doc[:width])
    return rows


def test_denoising_batches_hold_noised_inputs_and_clean_shifted_labels(documents) -> None:
    docs = [documents[0], documents[1][:200] + [EOS], document([7, 8, STOP])]
    rows = bart_rows(docs, 502)                                                 # (3, 502)
    batch = DenoisingBatches(TOKENS, seed=0)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    assert batch["labels"].shape == (3, 502) and batch["input_ids"].shape[1] <= 502
    assert torch.equal(batch["labels"], rows.masked_fill(rows == PAD, IGNORE_INDEX))
    assert batch["decoder_input_ids"][:, 0].eq(EOS).all()                      # BART starts the decoder with eos
    # Teacher forcing: position t reads label t - 1; where the label is padding the input is too.
    padding = batch["labels"] == IGNORE_INDEX
    shifted = batch["labels"][:, :-1].masked_fill(padding[:, 1:], PAD)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], shifted)
    assert batch["decoder_input_ids"][padding].eq(PAD).all()
    for b, doc in enumerate(docs):
        length = int(batch["attention_mask"][b].sum())
        noised = batch["input_ids"][b].tolist()
        assert batch["attention_mask"][b, :length].eq(1).all() and all(t == PAD for t in noised[length:])
        assert noised[0] == BOS and noised[length - 1] == EOS
        assert len([t for t in noised[1 : length - 1] if t != MASK]) == len(doc) - 2 - round((len(doc) - 2) * 0.3)
    assert DenoisingBatches(TOKENS, decoder_start_id=BOS, seed=0)(rows)["decoder_input_ids"][:, 0].eq(BOS).all()


def test_denoising_batches_never_widen_a_row() -> None:
    # One masked token from a 3-token body can come with zero-length spans that insert masks.
    rows = bart_rows([document([5, 6, 7])] * 200, 5)
    batch = DenoisingBatches(TOKENS, NoisingRecipe(sentence_permutation=False), seed=0)(rows)
    assert batch["input_ids"].shape[1] <= 5
    assert (batch["input_ids"][:, 0] == BOS).all()
    lengths = batch["attention_mask"].sum(dim=1)
    assert (batch["input_ids"][torch.arange(200), lengths - 1] == EOS).all()


def test_denoising_validation_batches_repeat_and_training_batches_follow_the_global_rng(documents) -> None:
    rows = bart_rows(documents[:8], 502)
    valid = DenoisingBatches(TOKENS, seed=0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first, second = valid(rows), valid(rows)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(DenoisingBatches(TOKENS, seed=1)(rows)["input_ids"], first["input_ids"])
    train = DenoisingBatches(TOKENS)
    torch.manual_seed(4)
    a, b = train(rows), train(rows)
    assert not torch.equal(a["input_ids"], b["input_ids"])
    torch.manual_seed(4)
    assert all(torch.equal(a[k], v) for k, v in train(rows).items())


def test_denoising_batches_refuse_bad_settings_and_rows() -> None:
    with pytest.raises(ConfigError, match="sentence_end_ids"):
        DenoisingBatches(DenoisingTokens(BOS, EOS, MASK, PAD))
    DenoisingBatches(DenoisingTokens(BOS, EOS, MASK, PAD), NoisingRecipe(sentence_permutation=False))
    with pytest.raises(DataError, match="row 1 holds only padding"):
        DenoisingBatches(TOKENS)(bart_rows([document([5, 6]), []], 4))
