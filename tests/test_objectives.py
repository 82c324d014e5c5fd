"""BERT's pretraining data: masked-LM masking, next-sentence pairs, packing, and the trainer's batch makers.

Random behaviour is checked statistically: a rate r measured over n trials must lie
within 4 standard deviations sqrt(r (1 - r) / n) of its target (fails by chance about
once in 16,000 runs; the seeds are fixed, so the tests are deterministic anyway).
"""
from __future__ import annotations

import math
import random

import pytest
import torch

from transformerkit.data import load_corpus
from transformerkit.errors import ConfigError, DataError
from transformerkit.objectives import (
    IGNORE_INDEX,
    MaskedLMBatches,
    PretrainingPair,
    build_pretraining_pairs,
    documents_from_texts,
    mask_tokens,
    pack_pairs,
    pack_segments,
    shakespeare_documents,
    split_works,
    unpack_pairs,
    word_start_table,
    word_starts_from_ids,
    word_starts_from_tokens,
)

VOCAB = 1000
PAD, CLS, SEP, MASK = 0, 1, 2, 3


def within(rate: float, target: float, trials: int, sigmas: float = 4.0) -> bool:
    return abs(rate - target) <= sigmas * math.sqrt(target * (1 - target) / trials)


def special_positions(ids: torch.Tensor) -> torch.Tensor:
    return (ids == PAD) | (ids == CLS) | (ids == SEP)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """1000 rows x 200 tokens of [CLS] text [SEP] padding, text ids in [4, VOCAB)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, VOCAB, (1000, 200), generator=g)                    # (B, T)
    lengths = torch.randint(100, 199, (1000,), generator=g)
    columns = torch.arange(200).expand_as(ids)
    ids[:, 0] = CLS
    ids[columns == lengths[:, None]] = SEP
    ids[columns > lengths[:, None]] = PAD
    return ids


def mask(ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, special_mask=special_positions(ids), **kwargs)


# ----------------------------------------------------------------------------- mask_tokens


def test_masking_rates_are_bert_s_15_percent_and_80_10_10(batch: torch.Tensor) -> None:
    torch.manual_seed(1)
    masked, labels = mask(batch)
    candidates = ~special_positions(batch)
    chosen = labels != IGNORE_INDEX
    n_candidates, n_chosen = int(candidates.sum()), int(chosen.sum())
    assert n_candidates > 140_000
    assert within(n_chosen / n_candidates, 0.15, n_candidates)
    # A random replacement equals [MASK] or the original with chance 1/VOCAB each: 0.1% of the 10%.
    is_mask = masked[chosen] == MASK
    is_kept = masked[chosen] == batch[chosen]
    is_random = ~is_mask & ~is_kept
    assert within(is_mask.float().mean().item(), 0.8 + 0.1 / VOCAB, n_chosen)
    assert within(is_kept.float().mean().item(), 0.1 + 0.1 / VOCAB, n_chosen)
    assert within(is_random.float().mean().item(), 0.1 - 0.2 / VOCAB, n_chosen)
    random_ids = masked[chosen][is_random]
    assert random_ids.min() >= 0 and random_ids.max() < VOCAB
    assert len(random_ids.unique()) > 0.9 * VOCAB                                 # spread over the vocabulary
    assert (masked[~chosen] == batch[~chosen]).all()                             # nothing else changes


def test_special_positions_are_never_chosen_and_labels_hold_the_originals(batch: torch.Tensor) -> None:
    before = batch.clone()
    masked, labels = mask(batch, probability=0.9)
    assert torch.equal(batch, before)                                            # input not modified in place
    special = special_positions(batch)
    assert (labels[special] == IGNORE_INDEX).all() and torch.equal(masked[special], batch[special])
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], batch[chosen])
    assert labels.dtype == torch.long and masked.shape == batch.shape


def test_probability_extremes_and_custom_replacement_shares(batch: torch.Tensor) -> None:
    masked, labels = mask(batch, probability=0.0)
    assert (labels == IGNORE_INDEX).all() and torch.equal(masked, batch)
    masked, labels = mask(batch, probability=1.0, replace_mask=1.0, replace_random=0.0)
    text = ~special_positions(batch)
    assert (masked[text] == MASK).all() and torch.equal(labels[text], batch[text])
    masked, _ = mask(batch, probability=1.0, replace_mask=0.0, replace_random=0.0)
    assert torch.equal(masked, batch)                                            # chosen, all kept


def test_generator_makes_masking_deterministic_and_leaves_the_global_rng_alone(batch: torch.Tensor) -> None:
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = mask(batch, generator=torch.Generator().manual_seed(7))
    second = mask(batch, generator=torch.Generator().manual_seed(7))
    other = mask(batch, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[1], other[1])


def test_global_rng_masking_follows_manual_seed(batch: torch.Tensor) -> None:
    torch.manual_seed(3)
    a = mask(batch)
    b = mask(batch)
    torch.manual_seed(3)
    assert torch.equal(mask(batch)[1], a[1]) and not torch.equal(a[1], b[1])


def test_masking_accepts_any_leading_shape(batch: torch.Tensor) -> None:
    ids = batch[:8]
    flat = mask(ids, generator=torch.Generator().manual_seed(0))
    stacked = mask(ids.view(2, 4, -1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(stacked[1].view(8, -1), flat[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"probability": 1.5}, "probability=1.5"), ({"probability": -0.1}, "probability=-0.1"),
     ({"replace_mask": 0.8, "replace_random": 0.3}, "exceeds 1"), ({"replace_random": -0.5}, "replace_random"),
     ({"mask_token_id": VOCAB}, "mask_token_id"), ({"vocab_size": 0}, "vocab_size")],
)
def test_bad_masking_settings_raise_config_error(batch: torch.Tensor, kwargs: dict, message: str) -> None:
    settings = {"mask_token_id": MASK, "vocab_size": VOCAB, **kwargs}
    with pytest.raises(ConfigError, match=message):
        mask_tokens(batch, special_mask=special_positions(batch), **settings)


def test_mismatched_shapes_are_refused(batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="special_mask"):
        mask_tokens(batch, mask_token_id=MASK, vocab_size=VOCAB, special_mask=special_positions(batch)[:, :-1])


# ----------------------------------------------------------------------------- whole-word masking


@pytest.fixture(scope="module")
def words() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch with words of 1-4 pieces: (ids (B, T), word_starts (B, T), word index (B, T), -1 on specials)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, VOCAB, (500, 256), generator=g)                     # (B, T)
    word_starts = torch.rand(ids.shape, generator=g) < 0.4                      # ~2.5 pieces a word
    ids[:, 0], ids[:, 100], ids[:, -1] = CLS, SEP, SEP
    word_starts[:, 100] = True                                                  # special tokens read as starts
    special = special_positions(ids)
    after_special = torch.nn.functional.pad(special[:, :-1], (1, 0), value=True)
    word = (word_starts | special | after_special).long().cumsum(1)             # (B, T)
    word = torch.where(special, torch.full_like(word, -1), word)
    return ids, word_starts, word


def test_whole_word_masking_chooses_all_pieces_of_a_word_or_none(words) -> None:
    ids, word_starts, word = words
    torch.manual_seed(2)
    masked, labels = mask(ids, word_starts=word_starts)
    chosen = labels != IGNORE_INDEX
    text = word >= 0
    for row in range(len(ids)):
        keys, flags = word[row][text[row]], chosen[row][text[row]]
        # Pieces per word, and chosen pieces per word: equal or zero.
        pieces = torch.bincount(keys)
        chosen_pieces = torch.bincount(keys, weights=flags.double(), minlength=len(pieces)).long()
        assert ((chosen_pieces == 0) | (chosen_pieces == pieces)).all()         # all pieces or none
    n_words = sum(len(word[r][text[r]].unique()) for r in range(len(ids)))
    n_chosen = sum(len(word[r][chosen[r]].unique()) for r in range(len(ids)))
    assert n_words > 40_000 and within(n_chosen / n_words, 0.15, n_words)
    assert not chosen[~text].any()
    assert torch.equal(labels[chosen], ids[chosen])


def test_whole_word_replacement_is_decided_per_word(words) -> None:
    ids, word_starts, word = words
    torch.manual_seed(4)
    # A vocabulary of 10**6 for the random draws, so a random piece is practically never [MASK] or the original.
    masked, labels = mask_tokens(ids, mask_token_id=MASK, vocab_size=10**6, special_mask=special_positions(ids),
                                 word_starts=word_starts)
    chosen = labels != IGNORE_INDEX
    kinds = {"mask": 0, "kept": 0, "random": 0}
    for row in range(len(ids)):
        for w in word[row][chosen[row]].unique():
            pieces = word[row] == w
            if (masked[row][pieces] == MASK).all():
                kinds["mask"] += 1
            elif torch.equal(masked[row][pieces], ids[row][pieces]):
                kinds["kept"] += 1
            else:
                assert not (masked[row][pieces] == MASK).any()                  # never a mix with [MASK]
                kinds["random"] += 1
    n = sum(kinds.values())
    assert within(kinds["mask"] / n, 0.8, n, sigmas=4.5)
    assert within(kinds["kept"] / n, 0.1, n, sigmas=4.5) and within(kinds["random"] / n, 0.1, n, sigmas=4.5)


def test_a_continuation_piece_after_a_special_token_starts_its_own_word() -> None:
    ids = torch.tensor([[CLS, 10, 11, SEP, 12, 13, SEP]])
    starts = torch.tensor([[True, True, False, True, False, False, True]])      # 12 is "##" but follows [SEP]
    seen = set()
    for seed in range(200):
        _, labels = mask(ids, word_starts=starts, generator=torch.Generator().manual_seed(seed))
        chosen = tuple((labels[0] != IGNORE_INDEX).tolist())
        assert chosen[1] == chosen[2] and chosen[4] == chosen[5]
        seen.add(chosen)
    assert len(seen) == 4                                                       # the two words are independent


def test_word_starts_from_tokens_and_ids() -> None:
    assert word_starts_from_tokens(["[CLS]", "un", "##believ", "##able", "!"]).tolist() == [
        True, True, False, False, True]
    assert word_starts_from_tokens([["a", "##b"], ["##c", "d"]]).tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="different lengths"):
        word_starts_from_tokens([["a"], ["b", "c"]])
    vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "un", "##able", "##s"]
    table = word_start_table(vocab)
    assert table.tolist() == [True, True, True, True, True, False, False]
    assert torch.equal(word_start_table(lambda i: vocab[i] if i < len(vocab) else None, 8)[:7], table)
    assert word_start_table(lambda i: None, 2).tolist() == [True, True]
    assert word_starts_from_ids(torch.tensor([[4, 5, 6, 1]]), table).tolist() == [[True, False, False, True]]
    with pytest.raises(ConfigError, match="vocab_size"):
        word_start_table(lambda i: vocab[i])


# ----------------------------------------------------------------------------- next-sentence pairs


def numbered_documents(n_docs: int, n_sentences: int, max_len: int, seed: int = 0) -> list[list[list[int]]]:
    """Documents whose token ids are all different, so a token tells where it came from."""
    rng = random.Random(seed)
    next_id = 0
    documents = []
    for _ in range(n_docs):
        document = []
        for _ in range(n_sentences):
            length = rng.randint(1, max_len)
            document.append(list(range(next_id, next_id + length)))
            next_id += length
        documents.append(document)
    return documents


def locate(documents: list[list[list[int]]]) -> dict[int, tuple[int, int, bool, bool]]:
    """token -> (document, position in the document's stream, starts a sentence, ends a sentence)."""
    where = {}
    for d, document in enumerate(documents):
        position = 0
        for sentence in document:
            for k, token in enumerate(sentence):
                where[token] = (d, position, k == 0, k == len(sentence) - 1)
                position += 1
    return where


@pytest.fixture(scope="module")
def corpus() -> list[list[list[int]]]:
    return numbered_documents(n_docs=40, n_sentences=400, max_len=12)


@pytest.fixture(scope="module")
def pairs(corpus) -> list[PretrainingPair]:
    return build_pretraining_pairs(corpus, 64, seed=1)


def contiguous(positions: list[int]) -> bool:
    return positions == list(range(positions[0], positions[0] + len(positions)))


def test_about_half_of_the_pairs_have_a_random_next_segment(pairs) -> None:
    n = len(pairs)
    assert n > 2000
    # A chunk of one sentence (here only a document's lone last sentence) forces a random B: at most 40 more.
    rate = sum(p.is_random_next for p in pairs) / n
    assert abs(rate - 0.5) <= 4 * math.sqrt(0.25 / n) + 40 / n


def test_pairs_fit_max_length_and_neither_side_is_empty(corpus, pairs) -> None:
    assert all(p.tokens_a and p.tokens_b and len(p.tokens_a) + len(p.tokens_b) <= 64 - 3 for p in pairs)
    short = build_pretraining_pairs(corpus[:3], 7, seed=0)
    assert all(1 <= len(p.tokens_a) and 1 <= len(p.tokens_b) and len(p.tokens_a) + len(p.tokens_b) <= 4
               for p in short)


def test_an_actual_next_segment_continues_a_in_the_same_document(corpus, pairs) -> None:
    where = locate(corpus)
    max_tokens = 64 - 3
    untruncated = 0
    for p in pairs:
        if p.is_random_next:
            continue
        a, b = [where[t] for t in p.tokens_a], [where[t] for t in p.tokens_b]
        assert len({place[0] for place in a + b}) == 1                          # one document
        a_pos, b_pos = [place[1] for place in a], [place[1] for place in b]
        assert contiguous(a_pos) and contiguous(b_pos)
        # A chunk stops at the sentence reaching the target, so it holds < 61 + 12 tokens and truncation
        # removes at most 11: all that may separate A's end from B's start.
        assert 0 <= b_pos[0] - a_pos[-1] - 1 <= 11
        if len(a) + len(b) < max_tokens:                                        # nothing was truncated
            untruncated += 1
            assert b_pos[0] == a_pos[-1] + 1                                    # B is exactly what follows A
            assert a[0][2] and a[-1][3] and b[0][2] and b[-1][3]                # split at sentence boundaries
    assert untruncated > 20


def test_a_random_next_segment_comes_from_another_document(corpus, pairs) -> None:
    where = locate(corpus)
    n_random = 0
    for p in pairs:
        if not p.is_random_next:
            continue
        n_random += 1
        a_docs = {where[t][0] for t in p.tokens_a}
        b_docs = {where[t][0] for t in p.tokens_b}
        assert len(a_docs) == 1 and len(b_docs) == 1 and a_docs != b_docs
        b_positions = [where[t][1] for t in p.tokens_b]
        assert contiguous(b_positions)
    assert n_random > 1000


def test_unused_sentences_are_put_back_after_a_random_next(corpus) -> None:
    """With every B random, A's still cover (almost) every sentence: what A left is not thrown away."""
    short_sentences = numbered_documents(n_docs=10, n_sentences=400, max_len=4, seed=2)
    pairs = build_pretraining_pairs(short_sentences, 64, nsp_probability=1.0, short_seq_probability=0.0)
    covered = {t for p in pairs for t in p.tokens_a}
    total = sum(len(s) for d in short_sentences for s in d)
    assert len(covered) / total > 0.9                                           # ~0.5 without putting back


def test_short_sequence_probability_makes_that_share_of_pairs_short() -> None:
    documents = numbered_documents(n_docs=20, n_sentences=4000, max_len=4, seed=4)
    max_tokens = 128 - 3

    def short_share(probability: float) -> tuple[float, int]:
        pairs = build_pretraining_pairs(documents, 128, short_seq_probability=probability, seed=5)
        # A pair from a full-length target fills max_tokens unless its random B hits a document's end.
        return sum(len(p.tokens_a) + len(p.tokens_b) < max_tokens - 3 for p in pairs) / len(pairs), len(pairs)

    never, _ = short_share(0.0)
    sometimes, n = short_share(0.1)
    always, _ = short_share(1.0)
    assert never < 0.02                                                         # document ends only
    # Each chunk draws its target; ~97% of short targets (uniform in [2, 125]) end below 122 tokens.
    assert within(sometimes - never, 0.1 * 0.97, n, sigmas=4.5)
    assert always > 0.9


def test_pairs_are_deterministic_per_seed(corpus) -> None:
    first = build_pretraining_pairs(corpus[:5], 32, seed=9)
    assert first == build_pretraining_pairs(corpus[:5], 32, seed=9)
    assert first != build_pretraining_pairs(corpus[:5], 32, seed=10)


def test_pair_building_errors(corpus) -> None:
    with pytest.raises(DataError, match="every document is empty"):
        build_pretraining_pairs([], 64)
    with pytest.raises(DataError, match="every document is empty"):
        build_pretraining_pairs([[[], []], []], 64)
    with pytest.raises(DataError, match="at least 2"):
        build_pretraining_pairs([corpus[0], [[]]], 64)
    with pytest.raises(ConfigError, match="max_length"):
        build_pretraining_pairs(corpus, 4)
    with pytest.raises(ConfigError, match="nsp_probability"):
        build_pretraining_pairs(corpus, 64, nsp_probability=1.2)
    with pytest.raises(ConfigError, match="short_seq_probability"):
        build_pretraining_pairs(corpus, 64, short_seq_probability=-1)


def test_documents_from_texts_uses_non_empty_lines_as_sentences() -> None:
    encode = lambda s: [ord(c) for c in s]  # noqa: E731
    documents = documents_from_texts(["ab\n\n  cd \n", "\n \n", "x"], encode)
    assert documents == [[[97, 98], [99, 100]], [[120]]]


def test_split_works_finds_the_shakespeare_works() -> None:
    train_text, valid_text = load_corpus("shakespeare")
    valid = split_works(valid_text)
    assert [w.splitlines()[0] for w in valid] == ["HAMLET, PRINCE OF DENMARK", "JULIUS CAESAR", "MACBETH",
                                                  "THE TEMPEST"]
    assert "".join(valid) == valid_text
    train = split_works(train_text)
    assert len(train) == 38 and "".join(train) == train_text
    assert all(w.splitlines()[2 if w.splitlines()[1] == "" else 1] == "by William Shakespeare" for w in train)
    documents = shakespeare_documents(valid_text, lambda s: [ord(c) for c in s])
    assert len(documents) == 4 and documents[0][0] == [ord(c) for c in "HAMLET, PRINCE OF DENMARK"]


def test_split_works_falls_back_to_chunks_of_lines() -> None:
    text = "".join(f"line {i}\n" for i in range(25))
    chunks = split_works(text, lines_per_document=10)
    assert [len(c.splitlines()) for c in chunks] == [10, 10, 5] and "".join(chunks) == text
    with pytest.raises(ConfigError):
        split_works(text, lines_per_document=0)


# ----------------------------------------------------------------------------- packing and batches


def test_pack_pairs_layout() -> None:
    pairs = [PretrainingPair([10, 11], [12], False), PretrainingPair([13], [14, 15, 16], True)]
    rows = pack_pairs(pairs, 8, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    assert rows.dtype == torch.long and rows.shape == (2, 17)
    assert rows[0].tolist() == [CLS, 10, 11, SEP, 12, SEP, PAD, PAD] + [0, 0, 0, 0, 1, 1, 0, 0] + [0]
    assert rows[1].tolist() == [CLS, 13, SEP, 14, 15, 16, SEP, PAD] + [0, 0, 0, 1, 1, 1, 1, 0] + [1]
    input_ids, token_type_ids, label = unpack_pairs(rows, 8)
    assert torch.equal(input_ids, rows[:, :8]) and label.tolist() == [0, 1]
    with pytest.raises(DataError, match="at most 5"):
        pack_pairs([PretrainingPair([1] * 4, [2] * 2, False)], 8, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    with pytest.raises(DataError, match="no pairs"):
        pack_pairs([], 8, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    with pytest.raises(DataError, match="2 \\* max_length|\\(N, 17\\)"):
        unpack_pairs(rows[:, :-1], 8)


def test_pack_segments_tiles_the_stream() -> None:
    rows = pack_segments(list(range(10, 21)), 6, cls_id=CLS, sep_id=SEP, pad_id=PAD)   # 11 tokens, chunks of 4
    assert rows.tolist() == [[CLS, 10, 11, 12, 13, SEP], [CLS, 14, 15, 16, 17, SEP], [CLS, 18, 19, 20, SEP, PAD]]
    exact = pack_segments(torch.arange(10, 18), 6, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    assert exact.shape == (2, 6) and (exact[:, -1] == SEP).all()
    with pytest.raises(DataError, match="empty"):
        pack_segments([], 6, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    with pytest.raises(ConfigError, match="max_length"):
        pack_segments([5], 2, cls_id=CLS, sep_id=SEP, pad_id=PAD)


@pytest.fixture(scope="module")
def pair_rows(corpus) -> torch.Tensor:
    shifted = [[[4 + t % (VOCAB - 4) for t in s] for s in d] for d in corpus[:10]]   # ids clear of the specials
    return pack_pairs(build_pretraining_pairs(shifted, 64, seed=0), 64, cls_id=CLS, sep_id=SEP, pad_id=PAD)


def batcher(**kwargs) -> MaskedLMBatches:
    return MaskedLMBatches(64, MASK, VOCAB, special_ids=[CLS, SEP], pad_id=PAD, **kwargs)


def test_batches_carry_types_attention_and_labels(pair_rows: torch.Tensor) -> None:
    rows = pair_rows[:64]
    batch = batcher()(rows)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    input_ids, token_type_ids, label = unpack_pairs(rows, 64)
    assert torch.equal(batch["token_type_ids"], token_type_ids) and torch.equal(batch["next_sentence_label"], label)
    assert torch.equal(batch["attention_mask"], (input_ids != PAD).long())
    # Type 1 runs from B's first token to the last [SEP]; the rest of the real tokens are type 0.
    for row, types in zip(input_ids, token_type_ids):
        seps = (row == SEP).nonzero().flatten().tolist()
        assert len(seps) == 2 and types[: seps[0] + 1].eq(0).all() and types[seps[0] + 1 : seps[1] + 1].eq(1).all()
        assert types[seps[1] + 1 :].eq(0).all() and row[seps[1] + 1 :].eq(PAD).all()
    special = special_positions(input_ids)
    assert (batch["labels"][special] == IGNORE_INDEX).all()
    chosen = batch["labels"] != IGNORE_INDEX
    assert torch.equal(batch["labels"][chosen], input_ids[chosen])
    assert within(chosen.sum().item() / (~special).sum().item(), 0.15, (~special).sum().item())


def test_validation_batches_repeat_and_training_batches_follow_the_global_rng(pair_rows: torch.Tensor) -> None:
    rows = pair_rows[:32]
    valid = batcher(seed=0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first, second = valid(rows), valid(rows)
    assert torch.equal(torch.get_rng_state(), state)                            # validation draws nothing global
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(valid(pair_rows[32:64])["labels"] != IGNORE_INDEX, first["labels"] != IGNORE_INDEX)
    assert not torch.equal(batcher(seed=1)(rows)["labels"], first["labels"])

    train = batcher()
    torch.manual_seed(11)
    a, b = train(rows), train(rows)
    assert not torch.equal(a["labels"], b["labels"])                            # a new mask every call
    torch.manual_seed(11)
    again = train(rows)
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_mlm_only_batches_from_segments() -> None:
    stream = torch.randint(4, VOCAB, (5000,), generator=torch.Generator().manual_seed(0))
    rows = pack_segments(stream, 64, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    batch = batcher(nsp=False)(rows)
    assert "next_sentence_label" not in batch
    assert (batch["token_type_ids"] == 0).all() and torch.equal(batch["attention_mask"], (rows != PAD).long())
    assert (batch["labels"][special_positions(rows)] == IGNORE_INDEX).all()
    with pytest.raises(DataError, match="width 64"):
        batcher(nsp=False)(torch.zeros(2, 129, dtype=torch.long))
    with pytest.raises(DataError, match="pack_pairs"):
        batcher()(rows)


def test_whole_word_batches_from_a_vocabulary_table() -> None:
    # Ids 4-499 are word starts, 500-999 "##" pieces.
    table = torch.arange(VOCAB) < 500
    g = torch.Generator().manual_seed(3)
    stream = torch.where(torch.rand(20_000, generator=g) < 0.5, torch.randint(4, 500, (20_000,), generator=g),
                         torch.randint(500, VOCAB, (20_000,), generator=g))
    rows = pack_segments(stream, 64, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    for word_starts in (table, lambda ids: table[ids]):
        batch = batcher(nsp=False, word_starts=word_starts, seed=0)(rows)
        chosen = batch["labels"] != IGNORE_INDEX
        continues = ~table[rows] & ~special_positions(rows)                     # a "##" piece inside a row
        continues[:, 1] = False                                                 # (after [CLS] it starts a word)
        previous = torch.nn.functional.pad(chosen[:, :-1], (1, 0))
        assert torch.equal(chosen[continues], previous[continues])              # a piece goes with its word
        assert chosen.any()
    with pytest.raises(ConfigError, match="word_starts table"):
        batcher(word_starts=torch.ones(10, dtype=torch.bool))


def test_batcher_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="probability"):
        batcher(probability=2.0)
    with pytest.raises(ConfigError, match="mask_token_id"):
        MaskedLMBatches(64, VOCAB + 1, VOCAB, special_ids=[CLS, SEP], pad_id=PAD)
